"""Shutdown, flush, configure and stats() racing each other and the dispatcher, on real threads.

Every event is delivered, or counted with a reason and logged, whatever the timing: a shutdown with
no time left, one that finds another under way, the exit while either runs, a flush while configure()
replaces the pipeline, stats() sampled while events move. Held answers (a provider that waits for a
``threading.Event``) fix the interleaving; the few bounded waits for something that must *not* happen
(``join(0.2)``) only decide how fast the old behaviour shows, never whether the new one passes.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import subprocess
import sys
import textwrap
import threading
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any, ClassVar

import pytest

import evmiddleware
from evmiddleware import dispatcher as dispatcher_module
from evmiddleware import runtime as rt
from evmiddleware.api import record_request_event
from evmiddleware.buffer import ProviderQueue
from evmiddleware.context import RequestContext
from evmiddleware.dispatcher import Dispatcher
from evmiddleware.events import Event, make_event
from evmiddleware.http11 import HttpClient
from evmiddleware.lane import Lane
from evmiddleware.providers.base import OK, Batch, Limits, SendResult
from evmiddleware.providers.sinks import MemorySink
from evmiddleware.signals import batch_sent, event_dropped
from tests.core.builders import an_event
from tests.core.waiting import wait_for

ROOT = Path(__file__).resolve().parents[2]

#: Long enough for a call that wrongly returns at once to have returned; the new code passes however
#: long this is (it only waits for something that must not happen).
NOT_YET = 0.2


class Held(MemorySink):
    """Holds each batch's answer until ``release`` is set, then answers ``answer``."""

    name: ClassVar[str] = "held"

    def __init__(self, answer: SendResult = OK, limits: Limits | None = None) -> None:
        super().__init__(limits or Limits(max_events=10, max_bytes=10_000_000, max_in_flight=1))
        self.answer = answer
        self.release = threading.Event()
        self.sending = threading.Event()  # a batch is in flight

    async def send(self, batch: Batch, client: HttpClient) -> SendResult:
        self.sending.set()
        while not self.release.is_set():  # polled: a cancelled delivery must end at once
            await asyncio.sleep(0.002)
        if self.answer.outcome == "ok":
            await super().send(batch, client)  # kept, the refused ones too: only the counters matter
        return self.answer


def event(number: int = 0) -> Event:
    return an_event(number, "n")


def accounted(runtime: rt.Runtime, provider: str) -> int:
    """Events delivered or counted as dropped or rejected, for ``provider`` and before any provider."""
    stats = runtime.stats()
    row = stats["providers"][provider]
    return row["sent"] + row["rejected"] + sum(row["dropped"].values()) + sum(stats["dropped"].values())


def in_thread(call: Callable[[], object]) -> tuple[threading.Thread, list[object]]:
    """``call()`` on a daemon thread, started; its result lands in the list."""
    result: list[object] = []
    thread = threading.Thread(target=lambda: result.append(call()), daemon=True)
    thread.start()
    return thread, result


# -- 1. a stop asked for before the dispatcher is ready ------------------------------------------------


@pytest.fixture
def gated_start(monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[Dispatcher, Lane, threading.Event]]:
    """A dispatcher with five queued events for a provider that never answers, whose start-up (the
    client it opens, about 30 ms for real) lasts until the event is set."""
    sink = Held()
    queue = ProviderQueue(sink.name, 100)
    queue.offer_many([event(i) for i in range(5)])
    lane = Lane(sink, queue, 0.01)
    dispatcher = Dispatcher([lane], request_timeout=1.0, retry_deadline=10.0)
    started = threading.Event()
    real_open = dispatcher._open_client

    @contextlib.asynccontextmanager
    async def slow_open() -> AsyncIterator[HttpClient]:
        while not started.is_set():
            await asyncio.sleep(0.001)
        async with real_open() as client:
            yield client

    monkeypatch.setattr(dispatcher, "_open_client", slow_open)
    dispatcher.start()
    yield dispatcher, lane, started
    started.set()
    sink.release.set()
    thread = dispatcher._thread
    if thread is not None:
        thread.join(5)


def test_a_stop_asked_before_the_dispatcher_is_ready_is_begun_once_it_is(
    gated_start: tuple[Dispatcher, Lane, threading.Event],
) -> None:
    dispatcher, lane, started = gated_start
    stopping, given_up = in_thread(lambda: dispatcher.stop(0.0))
    assert wait_for(lambda: dispatcher._stopped)  # stop() has begun: now let the start-up end
    started.set()
    stopping.join(5)
    thread = dispatcher._thread
    assert thread is not None
    thread.join(5)
    # Nothing was delivered (the provider never answers): every event counted, the thread gone.
    assert given_up == [5]
    assert dict(lane.dropped) == {"shutdown": 5}
    assert not thread.is_alive()


def test_a_dispatcher_still_starting_past_the_stop_margin_is_logged_then_counts_what_it_held(
    gated_start: tuple[Dispatcher, Lane, threading.Event],
    monkeypatch: pytest.MonkeyPatch,
    caplog_evm: pytest.LogCaptureFixture,
) -> None:
    dispatcher, lane, started = gated_start
    monkeypatch.setattr(dispatcher_module, "STOP_MARGIN", 0.05, raising=False)
    # Stuck in its start-up past the stop's margin: stop() returns, saying what may be lost.
    assert dispatcher.stop(0.0) == 5
    assert "did not stop" in caplog_evm.text
    started.set()  # it gets going after all: the stop asked for is begun, the events counted
    thread = dispatcher._thread
    assert thread is not None
    thread.join(5)
    assert not thread.is_alive()
    assert dict(lane.dropped) == {"shutdown": 5}


# A script that tracks and exits, with an atexit report registered before evmiddleware's (so it runs
# after it): every event delivered or counted, the dispatcher gone.
_EXIT_SCRIPT = """
import atexit, asyncio, json, sys, threading, time
import evmiddleware, evmiddleware.runtime as rt
from evmiddleware.providers.base import Limits
from evmiddleware.providers.sinks import MemorySink

class Slow(MemorySink):
    name = "slow"
    async def send(self, batch, client):
        await asyncio.sleep(0.3)
        return await super().send(batch, client)

sink = Slow(Limits(max_events=10, max_bytes=10**7, max_in_flight=1))
calls = [0]

def report():
    runtime = rt.peek()
    stats = runtime.stats()
    row = stats["providers"]["slow"]
    counted = sum(row["dropped"].values()) + sum(stats["dropped"].values())
    print(json.dumps({"tracked": calls[0], "delivered": len(sink.events), "counted": counted,
                      "alive": runtime.dispatcher._thread.is_alive()}))

atexit.register(report)
evmiddleware.configure(providers=[sink], shutdown_timeout=SHUTDOWN_TIMEOUT, flush_interval=0.01)
{body}
"""


def run_exit_script(body: str, shutdown_timeout: float) -> dict[str, Any]:
    script = _EXIT_SCRIPT.replace("SHUTDOWN_TIMEOUT", repr(shutdown_timeout))
    script = script.replace("{body}", textwrap.dedent(body))
    done = subprocess.run(
        [sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 0, done.stderr
    report: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return report


def test_an_exit_with_a_shutdown_timeout_shorter_than_the_start_up_counts_every_event() -> None:
    report = run_exit_script(
        """
        for k in range(100):
            evmiddleware.track("e", {"k": k}, user_id="u")
            calls[0] += 1
        """,
        shutdown_timeout=0.001,  # the smallest allowed: far shorter than the start-up (30 ms)
    )
    assert report["delivered"] + report["counted"] == report["tracked"] == 100, report
    assert not report["alive"]


# -- 2. a shutdown that finds another under way --------------------------------------------------------


@pytest.fixture
def held_pipeline() -> Held:
    """A pipeline with five events tracked, the first batch in flight, its answer held."""
    sink = Held()
    evmiddleware.configure(providers=[sink], flush_interval=0.01)
    for number in range(5):
        evmiddleware.track("e", {"n": number}, user_id="u")
    assert wait_for(sink.sending.is_set)
    return sink


@pytest.mark.parametrize("second", ["shutdown", "exit"])
def test_a_second_shutdown_returns_only_once_the_first_is_over(held_pipeline: Held, second: str) -> None:
    runtime = rt.current()
    first, _ = in_thread(lambda: evmiddleware.shutdown(10.0))
    assert wait_for(lambda: runtime.closed)  # the first is under way
    # What the second caller sees the moment it returns: it may end the process right after.
    call = (lambda: evmiddleware.shutdown(10.0)) if second == "shutdown" else rt._at_exit
    waiting, seen = in_thread(lambda: (call(), accounted(runtime, "held"))[1])
    waiting.join(NOT_YET)
    held_pipeline.release.set()
    waiting.join(10)
    first.join(10)
    assert seen == [5]
    assert len(held_pipeline.events) == 5


def test_a_second_shutdown_waits_no_longer_than_its_own_timeout(held_pipeline: Held) -> None:
    runtime = rt.current()
    first, _ = in_thread(lambda: evmiddleware.shutdown(10.0))
    assert wait_for(lambda: runtime.closed)
    assert not runtime.shutdown(0.01)  # not over yet, and it says so
    held_pipeline.release.set()
    first.join(10)
    assert runtime.shutdown(0.01)


def test_the_exit_waits_for_the_pipeline_configure_is_replacing(held_pipeline: Held) -> None:
    old = rt.current()
    replacing, _ = in_thread(lambda: evmiddleware.configure(providers=[MemorySink()]))
    assert wait_for(lambda: rt.peek() is not old)  # swapped: the old one delivers its events now
    exiting, seen = in_thread(lambda: (rt._at_exit(), accounted(old, "held"))[1])
    exiting.join(NOT_YET)
    held_pipeline.release.set()
    exiting.join(10)
    replacing.join(10)
    assert seen == [5]


def test_an_exit_while_a_shutdown_runs_on_another_thread_counts_every_event() -> None:
    report = run_exit_script(
        """
        stop = threading.Event()
        def tracker():
            while not stop.is_set():
                evmiddleware.track("e", user_id="u")
                calls[0] += 1
                time.sleep(0.0005)
        threading.Thread(target=tracker, daemon=True).start()
        time.sleep(0.2)
        threading.Thread(target=lambda: evmiddleware.shutdown(0.5), daemon=True).start()
        while not rt.peek().closed:
            time.sleep(0.001)
        stop.set()
        time.sleep(0.01)
        """,
        shutdown_timeout=1.0,
    )
    assert report["delivered"] + report["counted"] == report["tracked"] > 0, report
    assert not report["alive"]


# -- 3. flush() while configure() replaces the pipeline ------------------------------------------------


@pytest.mark.parametrize("answer", [OK, SendResult("rejected", reason="http_400: bad")], ids=["ok", "400"])
def test_flush_while_configure_replaces_the_pipeline_answers_for_the_old_ones_events(
    answer: SendResult,
) -> None:
    sink = Held(answer)
    evmiddleware.configure(providers=[sink], flush_interval=0.01)
    old = rt.current()
    evmiddleware.track("order", user_id="u")  # returned before the flush below: the flush covers it
    assert wait_for(sink.sending.is_set)
    replacing, _ = in_thread(lambda: evmiddleware.configure(providers=[MemorySink()]))
    assert wait_for(lambda: rt.peek() is not old)
    flushing, result = in_thread(lambda: evmiddleware.flush(10))
    flushing.join(NOT_YET)
    assert result == []  # still waiting for the old pipeline's event
    sink.release.set()
    flushing.join(10)
    replacing.join(10)
    assert result == [answer.outcome == "ok"]


def test_flush_out_of_time_for_the_pipeline_being_replaced_is_false() -> None:
    sink = Held()
    evmiddleware.configure(providers=[sink], flush_interval=0.01)
    old = rt.current()
    evmiddleware.track("order", user_id="u")
    assert wait_for(sink.sending.is_set)
    replacing, _ = in_thread(lambda: evmiddleware.configure(providers=[MemorySink()]))
    assert wait_for(lambda: rt.peek() is not old)
    assert evmiddleware.flush(0.05) is False
    sink.release.set()
    replacing.join(10)
    assert evmiddleware.flush(5) is True  # over: nothing of the old one is waited for any longer


# -- 4. stats() adds up in every sample ------------------------------------------------------------


def _identity_holds(row: Any) -> bool:
    parts = row["sent"] + row["rejected"] + sum(row["dropped"].values()) + sum(row["skipped"].values())
    return bool(parts + row["left_in_spool"] + row["queued"] == row["enqueued"] and row["queued"] >= 0)


@pytest.mark.parametrize(
    "answer",
    [SendResult("ok", rejected={1: "bad"}), SendResult("rejected", reason="http_400: bad")],
    ids=["partly rejected", "rejected"],
)
def test_stats_add_up_while_the_dispatcher_finishes_a_batch(answer: SendResult) -> None:
    """A receiver of ``event_dropped`` runs on the dispatcher thread in the middle of finishing a
    batch (counted as rejected, not yet moved out of the queue's held events): a sample there too."""
    sink = Held(answer)
    sink.release.set()
    evmiddleware.configure(providers=[sink], flush_interval=0.01)
    samples: list[Any] = []

    def sample(sender: object, **kwargs: object) -> None:
        samples.append(evmiddleware.stats()["providers"]["held"])

    event_dropped.connect(sample)
    try:
        for number in range(3):
            evmiddleware.track("e", {"n": number}, user_id="u")
        assert evmiddleware.flush(5) is False
    finally:
        event_dropped.disconnect(sample)
    assert samples
    assert [row for row in samples if not _identity_holds(row)] == []


def test_enqueued_never_goes_down_while_the_intake_is_admitted(monkeypatch: pytest.MonkeyPatch) -> None:
    """A request's record refused as the intake is admitted (its id is too long): sampled before, in
    the middle (its ``event_dropped``) and after."""
    evmiddleware.configure(providers=[MemorySink()])
    runtime = rt.current()
    monkeypatch.setattr(runtime.dispatcher, "start", lambda: None)  # admitted below, by hand
    ok, refused = RequestContext("a1", "u1", {}), RequestContext("a2", "x" * 300, {})
    for ctx in (ok, ok, refused):
        record_request_event(ctx, "http_request", dict, {"path": "/"})
    samples = [evmiddleware.stats()["providers"]["memory"]["enqueued"]]

    def sample(sender: object, **kwargs: object) -> None:
        samples.append(evmiddleware.stats()["providers"]["memory"]["enqueued"])

    event_dropped.connect(sample)
    try:
        runtime.admit()
    finally:
        event_dropped.disconnect(sample)
    samples.append(evmiddleware.stats()["providers"]["memory"]["enqueued"])
    assert samples == sorted(samples)
    assert samples[-1] == 2
    assert evmiddleware.stats()["dropped"] == {"invalid_id": 1}


@pytest.mark.parametrize("policy", ["drop_newest", "drop_oldest"])
def test_stats_sampled_on_another_thread_add_up_and_enqueued_never_goes_down(policy: str) -> None:
    """Trackers overflow a small queue while the dispatcher drains it and a thread samples stats().
    Thread switches every microsecond, so the threads interleave between any two bytecodes."""
    interval = sys.getswitchinterval()
    sink = MemorySink(Limits(max_events=50, max_bytes=10_000_000, max_in_flight=4))
    evmiddleware.configure(providers=[sink], max_queue=300, overflow=policy, flush_interval=0.002)
    done = threading.Event()
    bad: list[tuple[int, Any]] = []
    count = [0]

    def tracker(number: int) -> None:
        for k in range(3_000):
            evmiddleware.track("e", {"k": k}, user_id=f"u{number}")

    def sampler() -> None:
        last = 0
        while not done.is_set() or count[0] == 0:
            row = evmiddleware.stats()["providers"]["memory"]
            count[0] += 1
            if not _identity_holds(row) or row["enqueued"] < last:
                bad.append((last, row))
            last = row["enqueued"]

    sys.setswitchinterval(1e-6)
    try:
        watcher = threading.Thread(target=sampler)
        trackers = [threading.Thread(target=tracker, args=(number,)) for number in range(4)]
        watcher.start()
        for thread in trackers:
            thread.start()
        for thread in trackers:
            thread.join(60)
        done.set()
        watcher.join(10)
    finally:
        sys.setswitchinterval(interval)
    assert count[0] > 100
    assert not bad, f"{len(bad)} of {count[0]} samples wrong, e.g. (last enqueued, sample): {bad[:2]}"
    evmiddleware.flush(10)
    row = evmiddleware.stats()["providers"]["memory"]
    assert (row["enqueued"], row["queued"]) == (12_000, 0)


# -- 5. track() after the shutdown ---------------------------------------------------------------------


def test_track_after_shutdown_returns_none_for_the_event_it_dropped(memory_sink: MemorySink) -> None:
    evmiddleware.shutdown(1.0)
    assert evmiddleware.track("after", user_id="u") is None
    assert evmiddleware.identify("u1") is None
    assert evmiddleware.stats()["dropped"] == {"shut_down": 2}


# -- 6. stats()'s type -----------------------------------------------------------------------------------


def test_stats_is_typed_with_the_keys_it_has(memory_sink: MemorySink) -> None:
    import typing

    from evmiddleware import api

    hints = typing.get_type_hints(api.stats)
    stats_type = hints["return"]
    assert stats_type is api.Stats
    provider_type = typing.get_type_hints(stats_type)["providers"]
    assert typing.get_args(provider_type) == (str, api.ProviderStats)
    evmiddleware.track("e", user_id="u")
    stats = evmiddleware.stats()
    assert set(stats) == set(api.Stats.__required_keys__)
    assert set(stats["providers"]["memory"]) == set(api.ProviderStats.__required_keys__)


# -- a record appended after the last time the intake was emptied ----------------------------------
def _append_after_the_shutdown(runtime: rt.Runtime, append: Callable[[], object]) -> object:
    """``append`` as a caller that passed the ``takes_records`` test just before ``shutdown()`` began
    and was paused until it had ended: the test is made to pass again, nothing else is changed."""
    runtime.takes_records = True
    try:
        return append()
    finally:
        runtime.takes_records = False


@pytest.mark.parametrize("path", ["track", "request event", "built event"])
def test_a_record_appended_after_the_shutdown_ended_is_counted_not_left_behind(path: str) -> None:
    sink = MemorySink()
    evmiddleware.configure(providers=[sink])
    runtime = rt.peek()
    assert runtime is not None
    evmiddleware.track("warm", user_id="u")  # the name is known: track() takes its fast path
    evmiddleware.shutdown(5)
    assert runtime.finished and not runtime.intake

    if path == "track":
        result = _append_after_the_shutdown(runtime, lambda: evmiddleware.track("warm", user_id="u"))
        assert result is None  # dropped, as its docstring says
    elif path == "request event":
        ctx = RequestContext("anon-1")
        _append_after_the_shutdown(
            runtime, lambda: record_request_event(ctx, "http_request", lambda _: {"path": "/"}, None)
        )
    else:
        event = make_event(
            "built", None, user_id="u", anonymous_id=None, max_depth=10, max_bytes=32768, on_drop=print
        )
        runtime.closed = False  # submit()'s own test passed too
        assert runtime.submit(event) is False
        runtime.closed = True

    # Before: the record stayed in the intake of a runtime nothing would ever drain again.
    assert not runtime.intake
    assert evmiddleware.stats()["dropped"] == {"shut_down": 1}
    assert [e.name for e in sink.events] == ["warm"]


def test_flush_in_a_receiver_on_a_retiring_dispatcher_does_not_wait_for_its_own_shutdown(
    caplog_evm: pytest.LogCaptureFixture,
) -> None:
    # A batch_sent receiver runs on the dispatcher thread. configure() makes the old runtime deliver its
    # queue as it shuts down; a flush() in the receiver then must not wait for that very shutdown (it
    # stalled configure() until the stop margin ran out, and logged events as maybe lost).
    answers: list[bool] = []
    sink = MemorySink()
    evmiddleware.configure(providers=[sink], flush_interval=60, shutdown_timeout=2)
    old = rt.peek()

    def receiver(sender: object, **kwargs: Any) -> None:
        if threading.current_thread() is old.dispatcher._thread:  # type: ignore[union-attr]
            answers.append(evmiddleware.flush(5))

    with batch_sent.connected_to(receiver):
        for number in range(5):
            evmiddleware.track("e", {"n": number}, user_id="u")
        evmiddleware.configure(providers=[MemorySink()])
    assert len(sink.events) == 5  # delivered by the old runtime's shutdown
    assert answers == [False]  # as Dispatcher.flush answers on its own thread, without waiting
    assert "did not stop" not in caplog_evm.text
