"""Providers: the five remote APIs and the local sinks, behind one interface (``base.Provider``)."""

from __future__ import annotations

from .base import Provider
from .flameup import Flameup
from .flokit import FloKit
from .flywheel import Flywheel
from .klaviyo import Klaviyo
from .sinks import JsonlSink, LogSink, MemorySink, build_local_sink
from .userflux import UserFlux

__all__ = [
    "REGISTRY",
    "Flameup",
    "FloKit",
    "Flywheel",
    "JsonlSink",
    "Klaviyo",
    "LogSink",
    "MemorySink",
    "Provider",
    "UserFlux",
    "build_local_sink",
]

#: Providers configured from settings, by setting prefix. The order is the order of ``stats()``.
REGISTRY: dict[str, type[Provider]] = {
    "userflux": UserFlux,
    "flokit": FloKit,
    "flameup": Flameup,
    "flywheel": Flywheel,
    "klaviyo": Klaviyo,
}
