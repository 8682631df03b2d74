"""Shared fixtures: every test starts with tracking off and leaves nothing running."""

from __future__ import annotations

import logging
from collections.abc import Iterator

import pytest

import evmiddleware
from evmiddleware import _log, runtime, signals
from evmiddleware.events import Event
from evmiddleware.providers.sinks import MemorySink


@pytest.fixture(autouse=True)
def _isolated_env(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """No EVMIDDLEWARE_* variable from the outside leaks in; the pipeline is shut down after."""
    import os

    for name in list(os.environ):
        if name.startswith("EVMIDDLEWARE_"):
            monkeypatch.delenv(name)
    _log.limited._last.clear()
    _log.limited._suppressed.clear()
    yield
    current = runtime.peek()
    if current is not None:
        current.shutdown(2.0)
    runtime._runtime = None


@pytest.fixture
def tracked_events() -> Iterator[list[Event]]:
    """Every event, synchronously, the moment it is made (before the queue): order and count are exact."""
    seen: list[Event] = []

    def receive(sender: object, event: Event) -> None:
        seen.append(event)

    signals.event_tracked.connect(receive)
    yield seen
    signals.event_tracked.disconnect(receive)


@pytest.fixture
def memory_sink() -> MemorySink:
    """A pipeline that delivers into a list; ``strict`` so a test sees event errors."""
    sink = MemorySink()
    evmiddleware.configure(providers=[sink], flush_interval=0.05)
    return sink


@pytest.fixture
def caplog_evm(caplog: pytest.LogCaptureFixture) -> pytest.LogCaptureFixture:
    caplog.set_level(logging.DEBUG, logger="evmiddleware")
    return caplog
