"""Finished work to save when a stop cannot wait for the sampler.

Ctrl+C and SIGTERM reach Python code only between operations: a run inside one long model call (minutes on a
large video) would not stop until the call returns. run_workflow.py watches for the signal in a thread; when the
main thread has not answered it within a grace period, the thread saves what the samplers registered here and ends
the process. Samplers register a function that saves their finished chunks and returns the file's path.
"""

import threading
from collections.abc import Callable
from contextlib import contextmanager

_keepers: list[Callable[[], str | None]] = []
_lock = threading.Lock()
_kept = threading.Event()


@contextmanager
def kept_on_stop(keep: Callable[[], str | None]):
    """While inside, `keep()` saves this sampler's finished work if the process must end without waiting for it."""
    with _lock:
        _keepers.append(keep)
    try:
        yield
    finally:
        with _lock:
            _keepers.remove(keep)


def keep_all() -> list[str]:
    """Save every registered sampler's finished work (once); the paths written."""
    with _lock:
        keepers = [] if _kept.is_set() else list(_keepers)
        _kept.set()
    return [path for path in (keep() for keep in keepers) if path]


def already_kept() -> bool:
    """Whether the watchdog saved the finished work already (the sampler's own stop then writes no second file)."""
    return _kept.is_set()
