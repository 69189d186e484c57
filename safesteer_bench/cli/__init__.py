"""The command line: ``safesteer-bench <command>`` (``main``), with one module per command group."""

from .main import entry, main

__all__ = ["entry", "main"]
