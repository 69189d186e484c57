"""The run pipeline: plan, stages (train, generate, judge, aggregate, report), seeds and the
resumable store under runs/<run-id>/ (docs/architecture.md §7)."""
