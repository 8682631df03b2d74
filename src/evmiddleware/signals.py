"""blinker signals: hooks for observing and shaping what the pipeline does.

Example::

    from evmiddleware import signals

    @signals.event_dropped.connect
    def on_drop(sender, event, provider, reason, **extra):
        metrics.increment("analytics.dropped", tags=[provider or "all", reason])

``event_tracked`` is sent on the caller's thread before the event is queued; a receiver may return
``False`` to veto the event or a new :class:`~evmiddleware.Event` (``event._replace(...)``) to change
it. The others are sent from the dispatcher thread (``event_dropped`` also from the caller's thread
when the queue is full); keep receivers quick and never block in them.
"""

from __future__ import annotations

from blinker import Namespace

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
