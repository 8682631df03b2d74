"""Exceptions raised to the application: only configuration errors, and event errors in strict mode."""

from __future__ import annotations

__all__ = ["ConfigurationError", "EventError"]


class ConfigurationError(ValueError):
    """The settings cannot work: raised at start-up (configure, middleware init), never per request."""


class EventError(ValueError):
    """An event was refused. Raised only in strict mode; otherwise the event is dropped and counted.

    ``reason`` is the short counter name the drop is recorded under (``invalid_name``, ``too_large``…).
    """

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason
