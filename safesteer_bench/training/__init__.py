"""Training: the shared compute Budget, the on-policy distillation trainer, students (LoRA or full)
and the safety-token set (docs/architecture.md §4)."""
