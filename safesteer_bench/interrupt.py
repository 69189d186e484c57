"""Ctrl-C that stops a run at once, even inside inspect-ai's event loop.

asyncio (which inspect-ai runs on) replaces Python's default SIGINT handler with one that only
cancels its main task; a torch ``generate`` running on the loop's thread then keeps the process
busy until the whole batch is decoded (~90 s seen) and inspect returns no log at all. The CLI
installs :func:`handler` instead: asyncio leaves a custom handler alone, so the KeyboardInterrupt
is raised where the main thread is (between decoding steps), and :data:`INTERRUPTED` stays set
for code that sees the interrupt only as a failed or cancelled inspect run.
"""

from __future__ import annotations

import signal
import threading
from contextlib import contextmanager
from typing import Any, Iterator

INTERRUPTED = threading.Event()


def handler(signum: int, frame: Any) -> None:
    INTERRUPTED.set()
    raise KeyboardInterrupt


def raise_if_interrupted() -> None:
    """Re-raise a Ctrl-C that a library swallowed (an inspect run returning cancelled/no logs)."""
    if INTERRUPTED.is_set():
        raise KeyboardInterrupt


@contextmanager
def sigint_raises() -> Iterator[None]:
    """Install :func:`handler` for SIGINT for the block (main thread only; elsewhere a no-op)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    INTERRUPTED.clear()
    previous = signal.signal(signal.SIGINT, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)
