"""Fixtures for the framework integrations: the example apps importable, a fresh in-memory pipeline
per test, every event seen the moment it is made, and no capture failure left unnoticed."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

import evmiddleware
from evmiddleware import capture, lifecycle
from evmiddleware.events import Event
from evmiddleware.providers.sinks import MemorySink
from evmiddleware.sandbox import Sandbox

EXAMPLES = Path(__file__).resolve().parents[2] / "example_apps"
if str(EXAMPLES) not in sys.path:
    sys.path.insert(0, str(EXAMPLES))  # flask_app, fastapi_app, django_app, as the servers import them


@pytest.fixture(autouse=True)
def sink() -> Iterator[MemorySink]:
    """A pipeline delivering to memory; checked afterwards for failures inside request capture."""
    memory = MemorySink()
    evmiddleware.configure(providers=[memory], flush_interval=0.05)
    capture.reset_errors()
    yield memory
    lifecycle.uninstall_signal_handler()
    assert capture.errors() == {}, "tracking failed inside a test that did not expect it"


@pytest.fixture
def events(tracked_events: list[Event]) -> list[Event]:
    """Every event as it is made (see ``tracked_events``)."""
    return tracked_events


@pytest.fixture
def sandbox() -> Iterator[Sandbox]:
    """The five emulated APIs, in this process, on an ephemeral loopback port (for real servers)."""
    with Sandbox(port=0) as box:
        yield box
