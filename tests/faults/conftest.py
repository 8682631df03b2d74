"""Fault-injection suite: every fault a provider or the network can throw, against the sandbox.

The sandbox runs in a process of its own (``sandbox_proc.py``), shared by the whole session and
emptied before each test, so client and emulated APIs each get a core. Every wait is bounded.

Long variants are marked ``@pytest.mark.soak`` and skipped in the default run (``pytest``, CI). Run
them with either of::

    pytest -m soak tests/faults                    # only the soak variants
    EVMIDDLEWARE_SOAK=1 pytest tests/faults         # everything, soak included

(``pyproject.toml``'s ``addopts`` is shared by every suite, so the skip is decided here instead.)
"""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

from tests.faults.harness import SandboxProcess


def _soak_requested(config: pytest.Config) -> bool:
    if os.environ.get("EVMIDDLEWARE_SOAK", "") not in ("", "0"):
        return True
    expression = config.getoption("markexpr", "") or ""
    return "soak" in expression and "not soak" not in expression


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if _soak_requested(config):
        return
    skip = pytest.mark.skip(reason="soak variant: run with -m soak or EVMIDDLEWARE_SOAK=1")
    for item in items:
        if item.get_closest_marker("soak") is not None:
            item.add_marker(skip)


@pytest.fixture(scope="session")
def _sandbox_process() -> Iterator[SandboxProcess]:
    process = SandboxProcess()
    try:
        yield process
    finally:
        process.close()


@pytest.fixture
def sandbox(_sandbox_process: SandboxProcess) -> SandboxProcess:
    """The session's sandbox, emptied: scaled limits, no faults, no history."""
    _sandbox_process.reset()
    return _sandbox_process
