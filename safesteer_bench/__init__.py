"""safesteer-bench: compare LLM safety-alignment methods side by side."""
__version__ = "0.1.0"
