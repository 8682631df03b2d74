"""The pipeline's stop and locks where a review found them wrong: module locks in a forked child,
SIGTERM while configure() retires a pipeline, shutdown() and configure() from a signal receiver on the
dispatcher thread, an event_dropped receiver on a caller that admits a full intake.

Held answers (``Held``: a provider that waits for a ``threading.Event``) fix the interleaving; the few
bounded waits for something that must *not* happen only decide how fast the old behaviour shows.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

import evmiddleware
from evmiddleware import capture, lifecycle, signals
from evmiddleware import runtime as rt
from evmiddleware.http11 import HttpClient
from evmiddleware.providers.base import Batch, Limits, SendResult
from evmiddleware.providers.sinks import MemorySink
from evmiddleware.signals import batch_sent, event_dropped
from tests.core.test_concurrency import NOT_YET, ROOT, Held, accounted, in_thread
from tests.core.test_fork import _read_bounded, _reap
from tests.core.waiting import wait_for

ONE_PER_BATCH = Limits(max_events=1, max_bytes=10_000_000, max_in_flight=1)


# -- 1. module-level locks in a forked child -----------------------------------------------------------


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
@pytest.mark.parametrize(
    ("module", "name"),
    [(signals, "_errors_lock"), (capture, "_errors_lock"), (lifecycle, "_install_lock")],
    ids=["signals", "capture", "lifecycle"],
)
def test_a_child_forked_while_another_thread_holds_a_module_lock_can_take_it(
    module: ModuleType, name: str
) -> None:
    # The thread holding the lock does not exist in the child: the child's copy stayed held for good,
    # and its first receiver error (or capture error, or handler install) hung.
    held, release = threading.Event(), threading.Event()

    def hold() -> None:
        with getattr(module, name):
            held.set()
            release.wait(20)

    holder = threading.Thread(target=hold, daemon=True)
    holder.start()
    try:
        assert held.wait(10)
        read_end, write_end = os.pipe()
        pid = os.fork()
        if pid == 0:
            try:
                took = getattr(module, name).acquire(timeout=2)
                os.write(write_end, b"took" if took else b"blocked")
            finally:
                os._exit(0)
        os.close(write_end)
        answer = _read_bounded(read_end)
        os.close(read_end)
        status = _reap(pid)
    finally:
        release.set()
        holder.join(10)
    assert answer == b"took", f"the child could not take {module.__name__}.{name}: {answer!r}"
    assert status == 0


# -- 2. SIGTERM while configure() retires the previous pipeline ----------------------------------------

_SIGTERM_SCRIPT = """
import asyncio, os, signal, threading, time
import evmiddleware
from evmiddleware import runtime
from evmiddleware.lifecycle import install_signal_handler
from evmiddleware.providers.base import OK, Limits, Provider
from evmiddleware.providers.sinks import MemorySink

entered, gate = threading.Event(), threading.Event()

class Gated(Provider):
    name = "gated"
    limits = Limits(max_events=100, max_bytes=1_000_000, max_in_flight=1)

    def encode(self, event):
        return b"{}"

    async def send(self, batch, client):
        entered.set()
        await asyncio.to_thread(gate.wait, 20)
        with open(PATH, "a") as f:
            f.write("".join(item.event.name + "\\n" for item in batch.items))
        return OK

evmiddleware.configure(providers=[Gated()], flush_interval=0.01, shutdown_timeout=10)
assert install_signal_handler()
for _ in range(10):
    evmiddleware.track("old_pipeline", user_id="u")
old = runtime.peek()
assert entered.wait(10)
real_shutdown = old.shutdown

def shutdown(timeout, *, wait=None):
    # The SIGTERM path has come to wait for this retiring pipeline: its batch may go now.
    if threading.current_thread().name == "evmiddleware-sigterm":
        gate.set()
    return real_shutdown(timeout, wait=wait)

old.shutdown = shutdown
threading.Thread(target=evmiddleware.configure, kwargs={"providers": [MemorySink()]}, daemon=True).start()
deadline = time.monotonic() + 10
while old.shutdown_left() == 0 and time.monotonic() < deadline:  # configure() is retiring it
    time.sleep(0.01)
assert old in runtime._retiring
os.kill(os.getpid(), signal.SIGTERM)
raise SystemExit("the signal did not end the process")
"""


def test_sigterm_while_configure_retires_a_pipeline_delivers_that_pipeline_s_events(tmp_path: Path) -> None:
    delivered = tmp_path / "delivered.txt"
    script = f"PATH = {str(delivered)!r}\n" + _SIGTERM_SCRIPT
    done = subprocess.run(
        [sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == -signal.SIGTERM, done.stderr
    lines = delivered.read_text().splitlines() if delivered.exists() else []
    assert lines == ["old_pipeline"] * 10, f"{len(lines)} of 10 delivered; stderr: {done.stderr}"


_SIGTERM_ON_MAIN = (
    _SIGTERM_SCRIPT.replace("shutdown_timeout=10", "shutdown_timeout=30").split("old.shutdown = shutdown\n")[
        0
    ]
    + """old.shutdown = shutdown

def term():
    deadline = time.monotonic() + 10
    while old.shutdown_left() == 0 and time.monotonic() < deadline:  # configure() is retiring it
        time.sleep(0.01)
    os.kill(os.getpid(), signal.SIGTERM)

threading.Thread(target=term, daemon=True).start()
evmiddleware.configure(providers=[MemorySink()])  # on the main thread, which the signal interrupts
time.sleep(60)
raise SystemExit("the signal did not end the process")
"""
)


def test_sigterm_while_the_main_thread_retires_a_pipeline_ends_once_that_pipeline_is_done(
    tmp_path: Path,
) -> None:
    # The handler interrupts the retiring shutdown on the main thread and waits for the SIGTERM
    # thread, which waited for that shutdown to be over: it cannot be before the handler returns, so
    # the process lived its whole bound (shutdown_timeout + 1.5 s, here past the run's timeout).
    delivered = tmp_path / "delivered.txt"
    script = f"PATH = {str(delivered)!r}\n" + _SIGTERM_ON_MAIN
    done = subprocess.run(
        [sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=20, check=False
    )
    assert done.returncode == -signal.SIGTERM, done.stderr
    assert delivered.read_text().splitlines() == ["old_pipeline"] * 10
    assert "exiting before a shutdown under way finished" not in done.stderr


# -- 3. shutdown() and configure() in a receiver on the dispatcher thread ------------------------------


class HeldAfterFirst(Held):
    """Answers its first batch at once (its batch_sent receiver runs), holds the others."""

    async def send(self, batch: Batch, client: HttpClient) -> SendResult:
        if not self.events:
            return await MemorySink.send(self, batch, client)
        return await super().send(batch, client)


def exit_with_five_held(sink: Held, runtime: rt.Runtime, called: threading.Event) -> list[object]:
    """Track five events, wait for the receiver to have run, then run the exit while ``sink`` holds its
    answers and release them: what the exit left accounted for in ``runtime`` the moment it returned
    (the process ends right after)."""
    for number in range(5):
        evmiddleware.track("e", {"n": number}, user_id="u")
    assert called.wait(10)
    exiting, seen = in_thread(lambda: (rt._at_exit(), accounted(runtime, "held"))[1])
    exiting.join(NOT_YET)  # the exit is waiting before the answers come
    sink.release.set()
    exiting.join(10)
    return seen


def test_shutdown_in_a_receiver_begins_the_stop_and_the_exit_waits_for_it_and_counts() -> None:
    sink = HeldAfterFirst(limits=ONE_PER_BATCH)
    evmiddleware.configure(providers=[sink], flush_interval=0.01, shutdown_timeout=10)
    runtime = rt.current()
    over: list[bool] = []
    called = threading.Event()
    errors_before = signals.receiver_errors_snapshot()  # counted per process, by earlier tests too

    def receiver(sender: object, **kwargs: Any) -> None:
        if not called.is_set():
            try:
                evmiddleware.shutdown()  # e.g. "stop tracking once the quota is used"
                over.append(runtime.wait_shut_down(0))
            finally:
                called.set()

    with batch_sent.connected_to(receiver):
        seen = exit_with_five_held(sink, runtime, called)
    assert seen == [5], "the exit returned with events neither delivered nor counted"
    assert evmiddleware.stats()["receiver_errors"] == errors_before
    assert over == [False]  # begun, not over: the exit's shutdown was the one to wait
    assert len(sink.events) == 5


def test_configure_in_a_receiver_retires_the_old_pipeline_on_a_helper_and_the_exit_waits_for_it() -> None:
    sink = HeldAfterFirst(limits=ONE_PER_BATCH)
    evmiddleware.configure(providers=[sink], flush_interval=0.01, shutdown_timeout=10)
    old = rt.current()
    outcome: list[object] = []
    called = threading.Event()

    def receiver(sender: object, **kwargs: Any) -> None:
        if threading.current_thread() is old.dispatcher._thread and not called.is_set():
            try:
                evmiddleware.configure(providers=[MemorySink()])
                outcome.append(old in rt._retiring)
            except Exception as exc:
                outcome.append(exc)
            finally:
                called.set()

    with batch_sent.connected_to(receiver):
        seen = exit_with_five_held(sink, old, called)
    assert outcome == [True], outcome
    assert seen == [5], "the exit returned with the old pipeline's events neither delivered nor counted"
    assert len(sink.events) == 5


# -- 4. an event_dropped receiver on a caller that admits a full intake ---------------------------------


def test_an_event_dropped_receiver_that_flushes_runs_once_the_admit_lock_is_released() -> None:
    # track() finds the intake full and admits on the caller's thread; the queue is full (queue_full).
    # The receiver ran under the admit lock, and the dispatcher, which admits on every turn (the
    # flush's first step too), waited for it: flush() timed out (flush(None) never returned).
    sink = Held(limits=ONE_PER_BATCH)
    evmiddleware.configure(providers=[sink], max_queue=2, flush_interval=0.01, shutdown_timeout=2)
    caller = threading.current_thread()
    flushed: list[tuple[bool, list[str]]] = []

    def receiver(sender: object, reason: str, **kwargs: Any) -> None:
        if reason == "queue_full" and threading.current_thread() is caller and not flushed:
            sink.release.set()
            flushed.append((evmiddleware.flush(5), [event.name for event in sink.events]))

    with event_dropped.connected_to(receiver):
        evmiddleware.track("first", user_id="u")
        assert wait_for(sink.sending.is_set)
        for _ in range(1000):  # until a track() admits the full intake itself
            if flushed:
                break
            evmiddleware.track("e", user_id="u")
    [(delivered_all, names)] = flushed
    # Delivered when flush() returned: the dispatcher was not waiting for the receiver's lock.
    assert names[:1] == ["first"], "flush() in the receiver waited for the dispatcher, which waited for it"
    assert delivered_all is False  # it reports the event the full queue refused
