"""Locks made anew in a forked child.

A fork while another thread holds a lock leaves the child that lock held by a thread the child does
not have: its first use then blocks for good (gunicorn forking a worker while the dispatcher logs a
retry, say). Registered at import, so that a child forked before any pipeline exists is covered too.
"""

from __future__ import annotations

import os
import threading

__all__ = ["new_lock_in_child"]


def new_lock_in_child(owner: object, name: str) -> None:
    """In a forked child, ``owner.name`` becomes a new ``threading.Lock`` (for a module's global,
    ``owner`` is the module: ``sys.modules[__name__]``)."""
    if hasattr(os, "register_at_fork"):
        os.register_at_fork(after_in_child=lambda: setattr(owner, name, threading.Lock()))
