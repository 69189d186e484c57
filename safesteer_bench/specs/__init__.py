"""Safety specifications: the written policy a spec-prompted teacher (``teacher=spec``) and the
``prompt-control`` arms put in the system prompt (docs/architecture.md §4).

The checked-in ``safety_spec.md`` is the default; ``spec_file=PATH`` replaces it. A specification
is identified by the sha256 of its text, which goes into the method key and the artifact, so an
edited file retrains the methods that read it.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

from safesteer_bench.errors import UserError

DEFAULT_SPEC = Path(__file__).with_name("safety_spec.md")
#: A system prompt longer than this crowds out the prompt on small models (SmolLM2 has a
#: 2,048-token context; 16 kB is about 4,000 tokens) and is almost certainly the wrong file.
MAX_SPEC_BYTES = 16_000


@dataclass(frozen=True)
class SafetySpec:
    text: str
    sha256: str
    source: str  # "builtin" or the user's path

    def key(self) -> dict[str, str]:
        return {"kind": "spec", "source": self.source, "spec_sha256": self.sha256}


def read_text_file(path: str | Path | None, what: str, option: str, max_bytes: int = MAX_SPEC_BYTES) -> str:
    """The stripped text of a small UTF-8 file, or a UserError naming ``option`` and the fix."""
    file = Path(path).expanduser()
    fix = f"give {option}= a readable UTF-8 text file of 1 to {max_bytes:,} bytes"
    if not file.is_file():
        raise UserError(f"{what} {file} does not exist", fix)
    size = file.stat().st_size
    if size > max_bytes:
        raise UserError(f"{what} {file} is {size:,} bytes, more than {max_bytes:,}", fix)
    try:
        text = file.read_text(encoding="utf-8").strip()
    except UnicodeDecodeError:
        raise UserError(f"{what} {file} is not UTF-8 text", fix) from None
    if not text:
        raise UserError(f"{what} {file} is empty", fix)
    return text


def load_spec(path: str | Path | None = None) -> SafetySpec:
    """The specification at ``path`` (None: the checked-in default), validated."""
    file = DEFAULT_SPEC if path is None else Path(path).expanduser().resolve()
    stat = file.stat() if file.is_file() else None
    # Keyed by size and mtime too, so a file edited during a long process is read again.
    return _read(str(file), "builtin" if path is None else str(file),
                 stat.st_mtime_ns if stat else 0, stat.st_size if stat else 0)


@lru_cache(maxsize=32)
def _read(path: str, source: str, mtime: int, size: int) -> SafetySpec:
    text = read_text_file(path, "the safety specification", "spec_file")
    return SafetySpec(text, hashlib.sha256(text.encode("utf-8")).hexdigest(), source)
