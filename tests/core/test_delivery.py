"""Delivery through the real dispatcher to a real HTTP server on 127.0.0.1 (no mocks)."""

from __future__ import annotations

import threading
import time

import pytest
from werkzeug.test import Client

import evmiddleware
from evmiddleware.providers.sinks import MemorySink
from evmiddleware.wsgi import EventMiddleware as WSGIEventMiddleware
from tests.core.waiting import wait_for
from tests.httpserver import Answer, RecordingServer


def configure_flokit(url: str, **settings):
    settings.setdefault("flush_interval", 0.05)
    settings.setdefault("retry_base_delay", 0.05)
    settings.setdefault("retry_max_delay", 0.2)
    evmiddleware.configure(flokit_api_key="test-key", flokit_url=url, **settings)


def test_ten_thousand_events_are_delivered_exactly_once_in_batches_of_at_most_1000():
    with RecordingServer() as server:
        configure_flokit(server.url)
        ids = [evmiddleware.track("e", {"i": i}, user_id=f"u{i % 10}") for i in range(10_000)]
        assert evmiddleware.flush(30)
        received = server.events()
        assert len(received) == 10_000
        assert sorted(e["properties"]["i"] for e in received) == list(range(10_000))
        assert all(len(r.json()["events"]) <= 1000 for r in server.received)
        assert all(r.headers["Authorization"] == "Bearer test-key" for r in server.received)
        assert None not in ids
        counters = evmiddleware.stats()["providers"]["flokit"]
        assert (counters["sent"], counters["queued"], counters["dropped"]) == (10_000, 0, {})


def test_a_500_then_200_loses_nothing_and_keeps_the_idempotency_key():
    calls = []

    def script(server, received):
        calls.append(received)
        return Answer(500, b"oops") if len(calls) == 1 else Answer()

    with RecordingServer(script) as server:
        configure_flokit(server.url)
        for i in range(5):
            evmiddleware.track("e", {"i": i}, user_id="u")
        assert evmiddleware.flush(10)
    assert len(calls) == 2
    assert calls[0].body == calls[1].body
    assert calls[0].headers["Idempotency-Key"] == calls[1].headers["Idempotency-Key"]
    counters = evmiddleware.stats()["providers"]["flokit"]
    assert (counters["sent"], counters["retried"]) == (5, 1)


def test_429_with_retry_after_delays_the_next_attempt_at_least_that_long():
    def script(server, received):
        if len(server.received) == 1:
            return Answer(429, b'{"error":"rate_limited"}', {"Retry-After": "2"})
        return Answer()

    with RecordingServer(script) as server:
        configure_flokit(server.url)
        evmiddleware.track("e", user_id="u")
        assert evmiddleware.flush(10)
        first, second = server.received
    assert second.at - first.at >= 2.0
    assert evmiddleware.stats()["providers"]["flokit"]["rate_limited"] == 1


def test_a_partial_rejection_reports_only_the_refused_events_and_resends_nothing():
    answer = b'{"status":"ok","accepted":2,"rejected":1,"errors":[{"index":1,"reason":"bad timestamp"}]}'
    dropped = []
    with RecordingServer(lambda s, r: Answer(200, answer)) as server:
        configure_flokit(server.url)
        with evmiddleware.signals.event_dropped.connected_to(
            lambda sender, event, provider, reason: dropped.append((event.properties["i"], reason))
        ):
            for i in range(3):
                evmiddleware.track("e", {"i": i}, user_id="u")
            assert not evmiddleware.flush(10)  # not everything was delivered
        assert len(server.received) == 1
    counters = evmiddleware.stats()["providers"]["flokit"]
    assert (counters["sent"], counters["rejected"]) == (2, 1)
    [(index, reason)] = dropped
    assert index == 1
    assert reason.startswith("rejected: ")
    assert "bad timestamp" in reason


def test_a_400_is_rejected_without_retry_and_the_key_never_shows(caplog_evm):
    body = b'{"error":"invalid","message":"bad key test-key"}'
    with RecordingServer(lambda s, r: Answer(400, body)) as server:
        configure_flokit(server.url)
        evmiddleware.track("e", user_id="u")
        assert not evmiddleware.flush(10)
        assert len(server.received) == 1
    assert evmiddleware.stats()["providers"]["flokit"]["rejected_reasons"] == {"http_400": 1}
    assert "test-key" not in caplog_evm.text
    assert "[redacted]" in caplog_evm.text


def test_a_server_down_for_a_while_gets_every_event_that_fitted_in_the_queue():
    with RecordingServer() as probe:
        port = probe.port  # a free port, closed again: connections are refused until restart
    configure_flokit(f"http://127.0.0.1:{port}", max_queue=100)
    for i in range(150):
        evmiddleware.track("e", {"i": i}, user_id="u")
    deadline = time.monotonic() + 5
    while evmiddleware.stats()["providers"]["flokit"]["retried"] < 2 and time.monotonic() < deadline:
        time.sleep(0.02)
    with RecordingServer(port=port) as server:
        # Every event queued was delivered; the 50 the full queue refused are reported, once.
        assert evmiddleware.flush(20) is False
        assert evmiddleware.flush(5) is True
        received = server.events()
    assert sorted(e["properties"]["i"] for e in received) == list(range(100))
    counters = evmiddleware.stats()["providers"]["flokit"]
    assert counters["dropped"] == {"queue_full": 50}
    assert counters["sent"] == 100


def test_a_slow_provider_does_not_delay_a_fast_one():
    release = threading.Event()
    fast = MemorySink()

    with RecordingServer(lambda s, r: Answer(hold=release)) as server:
        from evmiddleware.providers.flokit import FloKit

        slow = FloKit("test-key", base_url=server.url)
        evmiddleware.configure(providers=[slow, fast], flush_interval=0.05)
        evmiddleware.track("first", user_id="u")
        assert wait_for(lambda: len(server.received) == 1)  # the slow provider's request is held
        evmiddleware.track("second", user_id="u")
        assert wait_for(lambda: len(fast.events) == 2)
        assert not release.is_set()
        release.set()
        assert evmiddleware.flush(10)


def test_events_still_queued_at_shutdown_are_sent():
    with RecordingServer() as server:
        configure_flokit(server.url, flush_interval=60)
        for i in range(10):
            evmiddleware.track("e", {"i": i}, user_id="u")
        evmiddleware.shutdown(5)
        assert len(server.events()) == 10


def test_shutdown_past_its_timeout_counts_what_it_could_not_send():
    release = threading.Event()
    with RecordingServer(lambda s, r: Answer(hold=release)) as server:
        configure_flokit(server.url)
        for _ in range(3):
            evmiddleware.track("e", user_id="u")
        evmiddleware.shutdown(0.5)
        release.set()
    assert evmiddleware.stats()["providers"]["flokit"]["dropped"] == {"shutdown": 3}


def test_a_dispatcher_that_dies_counts_every_event_it_held_and_every_later_one(monkeypatch, caplog_evm):
    import asyncio

    from evmiddleware.dispatcher import Dispatcher

    async def broken(self, tasks):
        await asyncio.sleep(0.2)
        raise RuntimeError("bug in the dispatcher")

    monkeypatch.setattr(Dispatcher, "_until_stopped", broken)
    sink = MemorySink()
    evmiddleware.configure(providers=[sink], flush_interval=60)
    for _ in range(3):
        evmiddleware.track("e", user_id="u")
    runtime = evmiddleware.runtime.current()
    thread = runtime.dispatcher._thread
    assert thread is not None
    thread.join(5)
    assert not thread.is_alive()
    evmiddleware.track("after", user_id="u")
    stats = evmiddleware.stats()
    assert stats["providers"]["memory"]["dropped"] == {"dispatcher_error": 3}
    assert stats["dropped"] == {"dispatcher_error": 1}
    assert "bug in the dispatcher" in caplog_evm.text


def test_a_dispatcher_that_dies_while_a_caller_admits_counts_what_that_caller_queues(monkeypatch):
    """A caller that found the intake full admits it on its own thread; the dispatcher dies meanwhile.
    Its lanes must count what that admit queues: they stop only once it is over."""
    import asyncio
    import threading

    from evmiddleware.api import record_request_event
    from evmiddleware.context import RequestContext
    from evmiddleware.dispatcher import Dispatcher

    inside, go, failing_waits = threading.Event(), threading.Event(), threading.Event()

    async def broken(self, tasks):
        for task in tasks:  # no lane loop: only the failure path may ask for the admit lock
            task.cancel()
        while not inside.is_set():
            await asyncio.sleep(0.001)
        raise RuntimeError("bug in the dispatcher")

    def properties(source):  # built by whichever thread admits the record: hold the caller's admit
        if threading.current_thread().name == "caller":
            inside.set()
            go.wait(5)
        return {"path": "/"}

    monkeypatch.setattr(Dispatcher, "_until_stopped", broken)
    sink = MemorySink()
    evmiddleware.configure(providers=[sink], max_queue=3, flush_interval=60)
    runtime = evmiddleware.runtime.current()
    lock = runtime._admit_lock

    class Watched:  # the admit lock, telling when the dispatcher thread asks for it
        def acquire(self, blocking=True, timeout=-1):
            if threading.current_thread() is runtime.dispatcher._thread:
                failing_waits.set()
            return lock.acquire(blocking, timeout)

        def release(self):
            lock.release()

        def __enter__(self):
            return self.acquire()

        def __exit__(self, *exc):
            self.release()

    runtime._admit_lock = Watched()
    runtime.start()

    def caller():
        record_request_event(RequestContext("a1", "u1", {}), "http_request", properties, None)
        for name in ("t1", "t2", "t3"):  # the third finds the intake full: this thread admits
            evmiddleware.track(name, user_id="u")

    thread = threading.Thread(target=caller, name="caller")
    thread.start()
    dispatcher = runtime.dispatcher._thread
    assert dispatcher is not None
    # The dispatcher fails within a millisecond: then it waits for the caller's admit (without that,
    # it ends at once, and the caller's event is queued for no one).
    assert wait_for(lambda: failing_waits.is_set() or not dispatcher.is_alive())
    go.set()
    thread.join(5)
    dispatcher.join(5)
    stats = evmiddleware.stats()
    row = stats["providers"]["memory"]
    assert row["queued"] == 0, row
    assert row["sent"] + sum(row["dropped"].values()) + sum(stats["dropped"].values()) == 4


@pytest.mark.parametrize("flushing", [False, True], ids=["lanes alone", "a flush waiting too"])
def test_the_loop_delivers_what_is_queued_while_a_caller_holds_the_admit_lock(flushing):
    # A caller admitting a full intake holds the lock; a SIGTERM handler on its thread then waits for
    # the dispatcher to stop. Nothing on the loop may wait for that lock (the lanes' admit, a flush's
    # admit): it would never get it.
    import threading

    sink = MemorySink()
    evmiddleware.configure(providers=[sink], flush_interval=0.01)
    evmiddleware.track("first", user_id="u")
    assert evmiddleware.flush(5)
    runtime = evmiddleware.runtime.current()
    for _ in range(3):
        evmiddleware.track("queued", user_id="u")
    runtime.admit()  # in the provider's queue now, as that caller's earlier admits left them
    answers: list[bool] = []
    flush = threading.Thread(target=lambda: answers.append(evmiddleware.flush(10)))
    with runtime._admit_lock:
        if flushing:
            flush.start()
        assert wait_for(lambda: len(sink.events) == 4)
    if flushing:
        flush.join(10)
        assert answers == [True]
    assert evmiddleware.flush(5)


def test_a_flush_after_a_shutdown_that_gave_up_events_says_so():
    import asyncio

    class Stuck(MemorySink):
        async def send(self, batch, client):
            await asyncio.sleep(60)  # cancelled by the shutdown
            return await super().send(batch, client)

    evmiddleware.configure(providers=[Stuck()], flush_interval=0.01)
    for _ in range(5):
        evmiddleware.track("e", user_id="u")
    evmiddleware.shutdown(0.1)
    assert evmiddleware.stats()["providers"]["memory"]["dropped"] == {"shutdown": 5}
    assert not evmiddleware.flush(1)


def test_events_a_stop_gives_up_are_reported_once_by_the_flush_that_waited_for_them():
    import asyncio
    import threading

    from evmiddleware.providers.base import Limits

    class Stuck(MemorySink):
        async def send(self, batch, client):
            await asyncio.sleep(60)  # cancelled by the shutdown
            return await super().send(batch, client)

    sink = Stuck(Limits(max_events=2, max_bytes=10**6, max_in_flight=1))
    evmiddleware.configure(providers=[sink], flush_interval=0.01)
    for i in range(6):
        evmiddleware.track("e", {"i": i}, user_id="u")
    runtime = evmiddleware.runtime.current()
    answers: list[bool] = []
    waiting = threading.Thread(target=lambda: answers.append(evmiddleware.flush(10)))
    waiting.start()
    # The flush watches all six: two in flight, four behind them (open, moved or queued).
    assert wait_for(lambda: runtime.lanes[0]._watches and runtime.lanes[0].in_flight == 1)
    evmiddleware.shutdown(0.2)
    waiting.join(10)
    assert answers == [False]  # it watched them
    assert evmiddleware.stats()["providers"]["memory"]["dropped"] == {"shutdown": 6}
    assert evmiddleware.flush(1)  # reported once already
    assert runtime.lanes[0].unreported == 0


@pytest.mark.parametrize("retry_after", ["0", "Wed, 21 Oct 2015 07:28:00 GMT"])
def test_a_retry_after_of_zero_or_in_the_past_still_backs_off(retry_after):
    with RecordingServer(lambda s, r: Answer(503, b"busy", {"Retry-After": retry_after})) as server:
        configure_flokit(server.url, retry_deadline=0.5)
        evmiddleware.track("e", user_id="u")
        assert not evmiddleware.flush(10)
        requests = len(server.received)
    # Backoff from 0.05 s doubling to 0.2 s, full jitter: about ten requests in half a second, where
    # taking the header's 0 as the delay sent thousands.
    assert 2 <= requests < 40, requests
    assert evmiddleware.stats()["providers"]["flokit"]["dropped"] == {"retry_deadline": 1}


def test_a_huge_retry_after_pauses_the_provider_no_longer_than_the_retry_deadline():
    def script(server, received):
        if len(server.received) == 1:
            return Answer(429, b"slow down", {"Retry-After": "1000000000"})
        return Answer()

    with RecordingServer(script) as server:
        configure_flokit(server.url, retry_deadline=0.5)
        evmiddleware.track("first", user_id="u")
        assert not evmiddleware.flush(10)  # past the retry deadline: failed at once
        evmiddleware.track("second", user_id="u")
        started = time.monotonic()
        assert evmiddleware.flush(10)
        assert time.monotonic() - started < 3.0
        assert [e["event"] for e in server.events()] == ["first", "second"]
    assert evmiddleware.stats()["providers"]["flokit"]["dropped"] == {"retry_deadline": 1}


@pytest.mark.parametrize("policy", ["drop_newest", "drop_oldest"])
def test_every_event_of_an_overflowing_queue_is_enqueued_and_finished_once_under_either_policy(policy):
    release = threading.Event()
    with RecordingServer(lambda s, r: Answer(hold=release)) as server:
        configure_flokit(server.url, max_queue=10, overflow=policy)
        for i in range(30):
            evmiddleware.track("e", {"i": i}, user_id="u")
        release.set()
        evmiddleware.flush(10)
        row = evmiddleware.stats()["providers"]["flokit"]
    finished = row["sent"] + row["rejected"] + sum(row["dropped"].values()) + sum(row["skipped"].values())
    assert (row["enqueued"], row["queued"], finished) == (30, 0, 30), row
    assert row["dropped"]["queue_full"] == 30 - row["sent"]


def test_a_raising_receiver_on_the_dispatcher_thread_leaves_every_event_counted_and_flush_prompt():
    def broken(sender, **kwargs):
        raise RuntimeError("metrics backend down")

    with RecordingServer(lambda s, r: Answer(400, b'{"error":"bad"}')) as server:
        configure_flokit(server.url)
        signals = evmiddleware.signals
        with signals.event_dropped.connected_to(broken), signals.batch_failed.connected_to(broken):
            for i in range(3):
                evmiddleware.track("e", {"i": i}, user_id="u")
            started = time.monotonic()
            assert not evmiddleware.flush(10)
            assert time.monotonic() - started < 5.0
        assert len(server.received) == 1
    row = evmiddleware.stats()["providers"]["flokit"]
    assert (row["rejected"], row["queued"], row["enqueued"]) == (3, 0, 3)


def test_a_dispatcher_that_dies_releases_a_waiting_flush_and_counts_the_batch_in_flight(monkeypatch):
    import asyncio

    from evmiddleware.dispatcher import Dispatcher
    from evmiddleware.providers.base import Limits

    sending = asyncio.Event()

    async def broken(self, tasks):
        await sending.wait()  # dies once the first batch is in flight
        for _ in range(500):  # and the flush below waits (else it finds the dispatcher dead at once)
            if self._waiters:
                break
            await asyncio.sleep(0.01)
        raise RuntimeError("bug in the dispatcher")

    class SlowSink(MemorySink):  # the first batch is still in flight when the thread dies
        async def send(self, batch, client):
            sending.set()
            await asyncio.sleep(30)
            return await super().send(batch, client)

    monkeypatch.setattr(Dispatcher, "_until_stopped", broken)
    # One event per request, one request at a time: the second event waits in an open batch.
    sink = SlowSink(Limits(max_events=1, max_bytes=10**6, max_in_flight=1))
    evmiddleware.configure(providers=[sink], flush_interval=0.01)
    evmiddleware.track("e", user_id="u")
    evmiddleware.track("e", user_id="u")
    result: list[bool] = []
    waiting = threading.Thread(target=lambda: result.append(evmiddleware.flush(None)), daemon=True)
    waiting.start()
    waiting.join(5)
    assert result == [False]
    assert evmiddleware.stats()["providers"]["memory"]["dropped"] == {"dispatcher_error": 2}


@pytest.mark.parametrize("first_delivered", [False, True], ids=["earlier fails", "later fails"])
def test_flush_answers_for_the_events_queued_before_it_not_for_later_ones(first_delivered):
    release = threading.Event()
    good, bad = Answer(200, b'{"success":true}'), Answer(400, b'{"error":"bad event"}')

    def script(server, received):
        if received.json()["event"]["event"] == "earlier":
            release.wait(10)
            return good if first_delivered else bad
        return bad if first_delivered else good

    with RecordingServer(script) as server:
        evmiddleware.configure(
            flywheel_api_key="fw_test_123456", flywheel_url=server.url, flush_interval=0.05
        )
        evmiddleware.track("earlier", user_id="u")
        assert wait_for(lambda: len(server.received) == 1)  # in flight, its answer held
        result: list[bool] = []
        waiting = threading.Thread(target=lambda: result.append(evmiddleware.flush(10)), daemon=True)
        waiting.start()
        dispatcher = evmiddleware.runtime.current().dispatcher
        assert wait_for(lambda: bool(dispatcher._waiters))  # the flush has begun
        evmiddleware.track("later", user_id="u")
        [lane] = dispatcher.lanes

        def later_answered() -> bool:
            counts = evmiddleware.stats()["providers"]["flywheel"]
            # Counted, and its delivery ended (in_flight falls just before the waiters are checked).
            return counts["sent"] + counts["rejected"] == 1 and lane.in_flight == 1

        assert wait_for(later_answered)
        # The later event's answer must not end the flush: it still waits for the earlier one.
        assert len(dispatcher._waiters) == 1
        assert result == []
        release.set()
        waiting.join(10)
    assert result == [first_delivered]


def test_a_delivery_just_begun_when_the_stop_runs_out_of_time_counts_its_batch():
    """The stop cancels every delivery still running, counted as ``shutdown``; none is left in flight.
    (The stop also lets a delivery created that very instant take its first step before cancelling
    it: a task cancelled earlier never runs its body. That interleaving is not reproduced here.)"""
    import asyncio

    from evmiddleware.buffer import ProviderQueue
    from evmiddleware.dispatcher import Dispatcher
    from evmiddleware.events import make_event
    from evmiddleware.lane import Lane

    class Never(MemorySink):
        async def send(self, batch, client):
            await asyncio.sleep(60)
            raise AssertionError("never sent: the stop cancels it")

    sink = Never()
    queue = ProviderQueue(sink.name, 100)
    for _ in range(3):
        queue.offer(
            make_event(
                "e",
                {},
                user_id="u",
                anonymous_id=None,
                max_depth=5,
                max_bytes=1000,
                on_drop=lambda k, w: None,
            )
        )
    lane = Lane(sink, queue, 1.0)
    clock = [100.0]
    dispatcher = Dispatcher([lane], request_timeout=1.0, retry_deadline=10.0, clock=lambda: clock[0])

    async def stop_as_a_delivery_begins() -> None:
        # What the dispatcher's own start-up sets (its loop is this one): a wake-up event, a client.
        dispatcher._wakes[lane.name] = asyncio.Event()
        dispatcher._client = object()  # type: ignore[assignment]  # Never.send does not use it
        lane.pull(clock[0])
        dispatcher._start_delivery(lane, lane.take_batch(None, clock[0]), lane.limiter.record(clock[0]))
        dispatcher._stopping, dispatcher._stop_deadline = True, clock[0]  # no time left
        await dispatcher._until_stopped([asyncio.create_task(asyncio.sleep(60))])  # a lane loop

    asyncio.run(stop_as_a_delivery_begins())
    assert (lane.in_flight, dict(lane.dropped), lane.queue.held) == (0, {"shutdown": 3}, 0)


def overfill(url: str, max_queue: int, tracked: int) -> list[str | None]:
    """FloKit at ``url`` holding its answers: ``tracked`` events, of which the full queue refuses all
    past ``max_queue`` when they are admitted (the held request keeps the first ones counted in it).
    Returns what track() returned."""
    configure_flokit(url, max_queue=max_queue)
    ids = [evmiddleware.track("e", {"i": i}, user_id="u") for i in range(tracked)]
    refused = {"queue_full": tracked - max_queue}
    assert wait_for(lambda: evmiddleware.stats()["providers"]["flokit"]["dropped"] == refused)
    return ids


def test_flush_reports_events_a_full_queue_refused_once_then_answers_afresh():
    # track() returned ids for the last five; the full queue refused them when they were admitted,
    # before any flush could watch them. The next flush reports them; the one after that, nothing new.
    release = threading.Event()
    with RecordingServer(lambda s, r: Answer(hold=release)) as server:
        assert None not in overfill(server.url, max_queue=10, tracked=15)
        release.set()
        assert evmiddleware.flush(10) is False
        assert evmiddleware.flush(10) is True
        assert len(server.events()) == 10


def test_flush_reports_a_request_event_refused_when_it_was_built():
    sink = MemorySink()
    evmiddleware.configure(providers=[sink], max_event_bytes=400)

    def app(environ, start_response):
        start_response("200 OK", [])
        return [b""]

    client = Client(WSGIEventMiddleware(app))
    client.get("/" + "x" * 1000).close()  # its event is built on the dispatcher thread: too large
    client.get("/short").close()
    assert evmiddleware.flush(10) is False
    assert [e.properties["path"] for e in sink.events] == ["/short"]
    assert evmiddleware.stats()["dropped"] == {"too_large": 1}


def test_a_batch_given_up_while_no_flush_waited_is_reported_by_the_next_flush_once():
    answers = iter([Answer(400, b'{"error":"bad"}')])
    with RecordingServer(lambda s, r: next(answers, Answer())) as server:
        configure_flokit(server.url)
        evmiddleware.track("refused", user_id="u")
        assert wait_for(lambda: evmiddleware.stats()["providers"]["flokit"]["rejected"] == 1)
        evmiddleware.track("sent", user_id="u")
        assert evmiddleware.flush(10) is False
        assert evmiddleware.flush(10) is True
        assert [e["event"] for e in server.events()] == ["refused", "sent"]


def test_failures_no_flush_reported_before_a_configure_are_reported_by_the_next_flush():
    release = threading.Event()
    with RecordingServer(lambda s, r: Answer(hold=release)) as server:
        overfill(server.url, max_queue=3, tracked=8)
        release.set()
        evmiddleware.configure(providers=[MemorySink()])  # retires the old pipeline, which sends its 3
        assert evmiddleware.flush(10) is False
        assert evmiddleware.flush(10) is True
        assert len(server.events()) == 3


def test_an_event_the_replaced_pipeline_gives_up_at_its_shutdown_is_reported_by_the_next_flush():
    with RecordingServer(lambda s, r: Answer(503, b"{}")) as down:
        configure_flokit(down.url, shutdown_timeout=0.3)
        evmiddleware.track("e", user_id="u")
        assert wait_for(lambda: len(down.received) >= 1)
        configure_flokit(down.url)  # retires the old pipeline: its shutdown gives the event up
        assert evmiddleware.flush(2) is False
        assert evmiddleware.flush(2) is True
