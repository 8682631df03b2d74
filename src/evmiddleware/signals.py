"""blinker signals: hooks for observing and shaping what the pipeline does.

Example::

    from evmiddleware import signals

    @signals.event_dropped.connect
    def on_drop(sender, event, provider, reason, **extra):
        metrics.increment("analytics.dropped", tags=[provider or "all", reason])

``event_tracked`` is sent on the caller's thread before the event is queued; a receiver may return
``False`` to veto the event or a new :class:`~evmiddleware.Event` (``event._replace(...)``) to change
it. The others are sent from the dispatcher thread (``event_dropped`` also from the caller's thread
when the queue is full); keep receivers quick and never block in them. On the dispatcher thread
``shutdown()`` and ``configure()`` only begin the stop of the pipeline that thread serves (the exit,
or a later ``shutdown()``, waits for it), and ``flush()`` answers ``False`` at once: that thread
cannot wait for itself.

A receiver that raises never breaks the pipeline nor the caller: the exception is logged
(rate-limited) and counted in ``stats()["receiver_errors"]``, and the other receivers still run. An
``event_tracked`` receiver that raises vetoes its event (counted as dropped, ``receiver_error``):
it may have been there to remove something that must not leave the process.
"""

from __future__ import annotations

import inspect
import logging
import sys
import threading
from collections import Counter
from collections.abc import Callable
from typing import Any

from blinker import NamedSignal, Namespace

from ._fork import new_lock_in_child
from ._log import limited

__all__ = ["event_tracked", "batch_sent", "batch_failed", "event_dropped"]

_signals = Namespace()

#: kwargs: ``event``. Return ``False`` to veto, or a replacement ``Event``.
event_tracked = _signals.signal("evmiddleware.event_tracked")
#: kwargs: ``provider``, ``count`` (events delivered), ``rejected`` (events the provider refused).
batch_sent = _signals.signal("evmiddleware.batch_sent")
#: kwargs: ``provider``, ``count``, ``reason``.
batch_failed = _signals.signal("evmiddleware.batch_failed")
#: kwargs: ``event`` (may be ``None``), ``provider`` (``None`` before any provider saw it), ``reason``.
event_dropped = _signals.signal("evmiddleware.event_dropped")


#: Exceptions raised by receivers, by signal name: see ``stats()["receiver_errors"]``.
receiver_errors: Counter[str] = Counter()
_errors_lock = threading.Lock()


new_lock_in_child(sys.modules[__name__], "_errors_lock")


def receiver_errors_snapshot() -> dict[str, int]:
    with _errors_lock:
        return dict(receiver_errors)


#: What :func:`notify` gives for a receiver that raised.
FAILED = object()


def notify(signal: NamedSignal, **kwargs: Any) -> list[object]:
    """Send ``signal`` (sender ``None``) to each receiver; their return values, in order.

    Every send of ours goes through here rather than ``signal.send``: a receiver's exception is
    logged and counted, and gives :data:`FAILED`, instead of reaching ``track()``'s caller or
    leaving the dispatcher's counters half updated. Callers test ``signal.receivers`` first, so
    nothing is spent here without receivers.
    """
    if signal.is_muted:
        return []
    return [call_receiver(signal, receiver, kwargs) for receiver in signal.receivers_for(None)]


def call_receiver(signal: NamedSignal, receiver: Callable[..., Any], kwargs: dict[str, Any]) -> object:
    """One receiver of ``signal``: its return value, or :data:`FAILED` when it raised (logged, counted)."""
    try:
        if inspect.iscoroutinefunction(receiver):  # as blinker's send: it would never run
            raise TypeError("cannot send to a coroutine function")
        return receiver(None, **kwargs)
    except Exception:
        with _errors_lock:
            receiver_errors[signal.name] += 1
        limited.log(
            logging.ERROR,
            f"receiver:{signal.name}",
            "evmiddleware: a receiver of %s raised; ignored",
            signal.name,
            exc_info=True,
        )
        return FAILED
