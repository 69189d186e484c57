"""Alignment methods, one module each; importable as ``safesteer_bench.methods``.

Importing this package registers every method in ``safesteer_bench.methods.api.METHODS``.
A new method is one new module plus one import line here.
"""

from . import base_model  # noqa: F401
from . import steering  # noqa: F401
from . import safesteer  # noqa: F401
from . import global_kl  # noqa: F401
from . import sft  # noqa: F401
from . import alignbeam  # noqa: F401
from . import spec_distill  # noqa: F401
from . import prompt_control  # noqa: F401
