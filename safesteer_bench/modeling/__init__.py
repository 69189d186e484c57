"""Models: loading (aliases, GGUF, safetensors), batched generation, residual-stream hooks and
the Policy that bundles a model with its hooks, adapter or decoder (docs/architecture.md §3)."""
