"""Evaluation: benchmark specs and registry, judges (keywords, rules, clf, model judges), the
inspect-ai provider, generation-and-judging of a policy, capability through lm-eval, metrics,
second-judge disagreement and benign drift (docs/architecture.md §5)."""
