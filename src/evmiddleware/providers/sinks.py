"""Local sinks: where events go with no provider configured, and what tests read.

They implement the same interface as the remote providers, so they pass through the same buffer,
batching, counters and flush.
"""

from __future__ import annotations

import logging
import os
import threading
from pathlib import Path
from typing import ClassVar

from ..errors import ConfigurationError
from ..events import Event
from ..http11 import HttpClient
from .base import OK, Batch, Limits, Provider, SendResult, dumps

__all__ = ["JsonlSink", "LogSink", "MemorySink", "build_local_sink"]

_LOCAL_LIMITS = Limits(max_events=1000, max_bytes=50_000_000, max_in_flight=1)

events_logger = logging.getLogger("evmiddleware.events")


class LogSink(Provider):
    """One INFO line per event on the ``evmiddleware.events`` logger (the default with no provider)."""

    name: ClassVar[str] = "log"
    limits = _LOCAL_LIMITS

    def encode(self, event: Event) -> bytes:
        return dumps(event.as_dict())

    async def send(self, batch: Batch, client: HttpClient) -> SendResult:
        for item in batch.items:
            events_logger.info("event %s", item.data.decode())
        return OK

    def describe(self) -> str:
        return "log → the 'evmiddleware.events' logger (no provider configured)"


class JsonlSink(Provider):
    """Appends one JSON object per line to a file."""

    name: ClassVar[str] = "jsonl"
    limits = _LOCAL_LIMITS

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        directory = self.path.parent
        if not directory.is_dir():
            raise ConfigurationError(f"local_sink: folder {directory} does not exist")

    def encode(self, event: Event) -> bytes:
        return dumps(event.as_dict())

    async def send(self, batch: Batch, client: HttpClient) -> SendResult:
        whole = b"".join(item.data + b"\n" for item in batch.items)
        data = memoryview(whole)
        try:
            with self.path.open("ab", buffering=0) as handle:
                start = handle.tell()
                try:
                    while data:
                        data = data[handle.write(data) :]
                except OSError:
                    # A full disk cut the batch short: take back what it wrote (half a line), since the
                    # retry writes the whole batch again; unless another process appended meanwhile,
                    # whose lines would go too.
                    if os.fstat(handle.fileno()).st_size == start + len(whole) - len(data):
                        handle.truncate(start)
                    raise
        except OSError as exc:
            return SendResult("retry", reason=f"cannot write {self.path}: {exc.strerror}")
        return OK

    def describe(self) -> str:
        return f"jsonl → {self.path}"


class MemorySink(Provider):
    """Keeps events in a list, for tests: ``sink.events`` after ``evmiddleware.flush()``."""

    name: ClassVar[str] = "memory"

    def __init__(self, limits: Limits = _LOCAL_LIMITS) -> None:
        self.limits = limits
        self._events: list[Event] = []
        self._lock = threading.Lock()

    def encode(self, event: Event) -> bytes:
        return b""

    async def send(self, batch: Batch, client: HttpClient) -> SendResult:
        with self._lock:
            self._events.extend(item.event for item in batch.items)
        return OK

    @property
    def events(self) -> list[Event]:
        with self._lock:
            return list(self._events)

    def clear(self) -> None:
        with self._lock:
            self._events.clear()

    def describe(self) -> str:
        return "memory (in-process list)"


def build_local_sink(spec: str) -> Provider | None:
    """``log`` (default), ``jsonl:PATH``, ``memory`` or ``off``."""
    kind, _, argument = spec.strip().partition(":")
    kind = kind.lower()
    if kind in ("", "log"):
        return LogSink()
    if kind == "off":
        return None
    if kind == "memory":
        return MemorySink()
    if kind == "jsonl" and argument:
        return JsonlSink(argument)
    raise ConfigurationError(f"local_sink: {spec!r} is not one of log, jsonl:PATH, memory, off")
