"""Inference-time alignment: activation steering (direction search, selection, hooks) and the
ALIGNBEAM decoder (docs/architecture.md §4)."""
