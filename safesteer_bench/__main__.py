"""``python -m safesteer_bench`` runs the command line."""

from safesteer_bench.cli import entry

entry()
