"""RateLimitedLog: an error that repeats on every request is logged once per interval, with a count."""

from __future__ import annotations

import logging

import pytest

from evmiddleware._log import RateLimitedLog


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


def messages(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == "evmiddleware"]


def test_the_same_key_is_logged_once_per_interval_then_with_the_count_suppressed(caplog_evm, clock):
    log = RateLimitedLog(interval=60.0, clock=clock)
    for i in range(5):
        log.log(logging.WARNING, "encoder", "encoder failed: %s", f"try {i}")
        clock.now += 1.0
    assert messages(caplog_evm) == ["encoder failed: try 0"]
    assert caplog_evm.records[0].levelno == logging.WARNING

    clock.now = 1000.0 + 60.0  # one interval after the first record
    log.log(logging.WARNING, "encoder", "encoder failed: %s", "try 5")
    assert messages(caplog_evm) == [
        "encoder failed: try 0",
        "encoder failed: try 5 (4 similar messages suppressed)",
    ]


def test_the_interval_is_measured_from_the_last_record_written(caplog_evm, clock):
    log = RateLimitedLog(interval=10.0, clock=clock)
    log.log(logging.ERROR, "k", "first")
    clock.now += 9.999
    log.log(logging.ERROR, "k", "suppressed")
    assert messages(caplog_evm) == ["first"]
    clock.now = 1000.0 + 10.0
    log.log(logging.ERROR, "k", "second")
    clock.now += 5.0  # 15 s after the first record, only 5 s after the second: suppressed
    log.log(logging.ERROR, "k", "suppressed")
    assert messages(caplog_evm) == ["first", "second (1 similar messages suppressed)"]


def test_the_count_starts_again_after_it_is_reported(caplog_evm, clock):
    log = RateLimitedLog(interval=10.0, clock=clock)
    log.log(logging.WARNING, "k", "m")
    log.log(logging.WARNING, "k", "m")
    log.log(logging.WARNING, "k", "m")
    clock.now += 10.0
    log.log(logging.WARNING, "k", "m")  # reports the 2 suppressed
    clock.now += 10.0
    log.log(logging.WARNING, "k", "m")  # nothing suppressed since: no count
    assert messages(caplog_evm) == ["m", "m (2 similar messages suppressed)", "m"]


def test_each_key_has_its_own_interval(caplog_evm, clock):
    log = RateLimitedLog(interval=60.0, clock=clock)
    for _ in range(3):
        log.log(logging.WARNING, "property:a", "property %r dropped", "a")
        log.log(logging.WARNING, "property:b", "property %r dropped", "b")
    assert messages(caplog_evm) == ["property 'a' dropped", "property 'b' dropped"]
