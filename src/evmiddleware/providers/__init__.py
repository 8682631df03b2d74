"""Providers: the five remote APIs and the local sinks, behind one interface (``base.Provider``)."""

from __future__ import annotations

from .base import Provider
from .flokit import FloKit
from .sinks import JsonlSink, LogSink, MemorySink, build_local_sink

__all__ = ["REGISTRY", "FloKit", "JsonlSink", "LogSink", "MemorySink", "Provider", "build_local_sink"]

#: Providers configured from settings, by setting prefix. The order is the order of ``stats()``.
REGISTRY: dict[str, type[Provider]] = {
    "flokit": FloKit,
}
