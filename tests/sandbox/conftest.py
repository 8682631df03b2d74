from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest

from evmiddleware.sandbox import Sandbox


class FakeClock:
    def __init__(self, now: float = 1000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@pytest.fixture(scope="session")
def _shared_sandbox() -> Iterator[Sandbox]:
    with Sandbox() as sb:
        yield sb


@pytest.fixture
def sb(_shared_sandbox: Sandbox) -> Sandbox:
    """The session's sandbox, emptied: published limits, no faults, no history."""
    _shared_sandbox.reset()
    return _shared_sandbox


@pytest.fixture(scope="session")
def client() -> Iterator[httpx.Client]:
    # One client for the session: building its TLS context costs ~20 ms, per test adds up.
    with httpx.Client(timeout=5.0) as c:
        yield c


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()
