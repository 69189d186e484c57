"""Choosing options on dev prompts: declarative search spaces and the Optuna studies behind
``safesteer-bench tune`` (docs/architecture.md §6)."""
