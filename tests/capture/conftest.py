"""Fixtures for the capture tests: a fresh in-memory pipeline per test, events seen as they are made."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest
from capture_helpers import Clock

import evmiddleware
from evmiddleware import capture, lifecycle
from evmiddleware import runtime as _rt
from evmiddleware.events import Event
from evmiddleware.providers.sinks import MemorySink


@pytest.fixture(autouse=True)
def sink(monkeypatch: pytest.MonkeyPatch) -> Iterator[MemorySink]:
    """A configured pipeline delivering to memory; reset (and checked for capture errors) afterwards."""
    for key in list(os.environ):
        if key.startswith("EVMIDDLEWARE_"):
            monkeypatch.delenv(key)
    memory = MemorySink()
    evmiddleware.configure(providers=[memory])
    capture.reset_errors()
    yield memory
    lifecycle.uninstall_signal_handler()
    evmiddleware.shutdown(2)
    _rt._runtime = None  # the next user builds its pipeline from the environment again
    assert capture.errors() == {}, "tracking failed inside a test that did not expect it"


@pytest.fixture
def tracked(tracked_events: list[Event]) -> list[Event]:
    """Every event as it is made (see ``tracked_events``)."""
    return tracked_events


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> Clock:
    fake = Clock()
    monkeypatch.setattr(capture, "_perf", fake)
    return fake
