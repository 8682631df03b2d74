"""A runtime shut down before it started (``configure()`` from two threads) never starts later."""

from __future__ import annotations

import threading
import time

import evmiddleware
from evmiddleware import runtime
from evmiddleware.buffer import ProviderQueue
from evmiddleware.config import load_settings
from evmiddleware.dispatcher import Dispatcher
from evmiddleware.lane import Lane
from evmiddleware.providers.sinks import MemorySink


def test_a_dispatcher_stopped_before_it_started_never_starts():
    lane = Lane(MemorySink(), ProviderQueue("memory", 100), 0.05)
    dispatcher = Dispatcher([lane], request_timeout=1.0, retry_deadline=1.0)
    assert dispatcher.stop(1.0) == 0
    dispatcher.start()
    assert not dispatcher.started
    started = time.monotonic()
    assert dispatcher.flush(5.0)  # nothing to wait for, and no start-up to wait for either
    assert time.monotonic() - started < 1.0


def test_a_runtime_shut_down_before_its_start_never_starts_its_dispatcher(tmp_path):
    replaced = runtime.Runtime(load_settings({"providers": [MemorySink()], "spool": str(tmp_path / "s.db")}))
    replaced.shutdown(1.0)  # another thread's configure() replaced it first
    replaced.start()  # what the thread that made it does next
    assert not replaced.dispatcher.started


def _dispatchers() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == "evmiddleware-dispatcher" and t.is_alive()]


def test_configure_with_a_spool_from_two_threads_leaves_no_dispatcher_after_shutdown(tmp_path):
    spool = str(tmp_path / "spool.db")
    for _ in range(20):
        barrier = threading.Barrier(2)

        def configure() -> None:
            barrier.wait()
            evmiddleware.configure(providers=[MemorySink()], spool=spool, flush_interval=0.05)

        threads = [threading.Thread(target=configure) for _ in range(2)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(10)
    evmiddleware.shutdown(2.0)
    deadline = time.monotonic() + 5.0
    while _dispatchers() and time.monotonic() < deadline:
        time.sleep(0.01)
    assert _dispatchers() == []
