"""inspect-ai's entry point (group ``inspect_ai``): registers the ``safesteer`` model provider, so
``inspect eval <task> --model safesteer/<model or runs/<run-id>/<method>>`` runs any inspect task
(inspect_evals' included) on a policy of this package (see :mod:`.inspect_provider`)."""

from safesteer_bench.evaluation.inspect_provider import _ensure_registered

_ensure_registered()
