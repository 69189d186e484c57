"""``python -m safesteer_bench.cli`` runs the command line."""

from safesteer_bench.cli import entry

entry()
