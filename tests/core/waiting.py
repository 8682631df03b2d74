"""Waiting, bounded, for another thread's or process's work to show (a dispatcher's request, a spool row)."""

from __future__ import annotations

import time
from collections.abc import Callable


def wait_for(predicate: Callable[[], bool], timeout: float = 5.0) -> bool:
    """Whether ``predicate`` became true within ``timeout`` seconds, checked every 10 ms."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.01)
    return predicate()
