"""Requests' automatic events: the request thread queues a record, the dispatcher builds the event."""

from __future__ import annotations

import datetime as dt

import pytest

import evmiddleware
from evmiddleware import runtime as rt
from evmiddleware.api import record_request_event
from evmiddleware.context import RequestContext
from evmiddleware.providers.sinks import MemorySink
from tests.core.builders import an_event

UTC = dt.timezone.utc


def request_ctx(user_id: str | None = None) -> RequestContext:
    ctx = RequestContext("anon-1", user_id, {"method": "GET", "path": "/items/1"})
    ctx.aliases["klaviyo_exchange_id"] = "kx-1"
    return ctx


def props() -> dict[str, object]:
    return {"method": "GET", "path": "/items/1", "route": "/items/{item_id}", "status_code": 200}


def test_the_event_is_built_with_the_requests_ids_time_and_properties(memory_sink: MemorySink) -> None:
    before = dt.datetime.now(UTC)
    record_request_event(request_ctx("u1"), "http_request", dict, props())
    after = dt.datetime.now(UTC)
    assert evmiddleware.flush(5)
    [event] = memory_sink.events
    assert (event.name, event.user_id, event.anonymous_id) == ("http_request", "u1", "anon-1")
    assert event.properties == props()
    assert event.aliases == {"klaviyo_exchange_id": "kx-1"}
    assert before - dt.timedelta(milliseconds=1) <= event.timestamp <= after
    assert event.timestamp.tzinfo is UTC


def test_a_user_id_the_resolver_got_wrong_is_a_counted_drop(memory_sink: MemorySink) -> None:
    record_request_event(request_ctx("x" * 300), "http_request", dict, props())
    record_request_event(request_ctx("u2"), "http_request", dict, props())
    assert evmiddleware.flush(5) is False  # it reports the refused one
    assert [event.user_id for event in memory_sink.events] == ["u2"]
    assert evmiddleware.stats()["dropped"] == {"invalid_id": 1}


def test_a_padded_user_id_is_stripped_as_track_strips_it(memory_sink: MemorySink) -> None:
    record_request_event(request_ctx(" u3 "), "http_request", dict, props())
    assert evmiddleware.flush(5)
    assert [event.user_id for event in memory_sink.events] == ["u3"]


def test_an_event_over_the_size_limit_is_a_counted_drop() -> None:
    sink = MemorySink()
    evmiddleware.configure(providers=[sink], max_event_bytes=1024)
    big = props() | {"referrer": "r" * 2000}
    record_request_event(request_ctx(), "http_request", dict, big)
    assert evmiddleware.flush(5) is False
    assert sink.events == []
    assert evmiddleware.stats()["dropped"] == {"too_large": 1}


@pytest.fixture
def parked_dispatcher(monkeypatch: pytest.MonkeyPatch) -> rt.Runtime:
    """A pipeline whose dispatcher never starts: records stay in the intake."""
    evmiddleware.configure(providers=[MemorySink()], max_queue=2)
    runtime = rt.current()
    monkeypatch.setattr(runtime.dispatcher, "start", lambda: None)
    return runtime


def test_records_waiting_show_in_stats_then_count_for_every_provider_once_admitted(
    parked_dispatcher: rt.Runtime,
) -> None:
    record_request_event(request_ctx(), "http_request", dict, props())
    # Not a provider's yet: the dispatcher may still refuse it (counted in "dropped" then), and a
    # provider's "enqueued" never goes down.
    stats = evmiddleware.stats()
    assert (stats["waiting"], stats["providers"]["memory"]["enqueued"]) == (1, 0)
    parked_dispatcher.admit()
    stats = evmiddleware.stats()
    assert stats["waiting"] == 0
    assert (stats["providers"]["memory"]["queued"], stats["providers"]["memory"]["enqueued"]) == (1, 1)


def test_a_full_intake_is_moved_to_the_queues_by_the_caller_in_order(parked_dispatcher: rt.Runtime) -> None:
    for i in range(5):
        record_request_event(request_ctx(f"u{i}"), "http_request", dict, props())
    # The third and the fifth found the intake full: each moved it into the provider's queue (of 2)
    # first, so the queue's overflow policy (drop the newest) decided, in the order of the requests.
    assert [event.user_id for event in parked_dispatcher.queues[0].items] == ["u0", "u1"]
    assert evmiddleware.stats()["providers"]["memory"]["dropped"] == {"queue_full": 2}
    assert len(parked_dispatcher.intake) == 1


def test_track_and_events_built_by_the_caller_keep_their_order_through_the_intake(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    evmiddleware.configure(providers=[MemorySink()])
    runtime = rt.current()
    monkeypatch.setattr(runtime.dispatcher, "start", lambda: None)
    evmiddleware.track("first", user_id="u")  # the common case: a record
    evmiddleware.identify("u", plan="pro")  # built on the caller's thread
    evmiddleware.track("at_a_time", user_id="u", timestamp=dt.datetime(2026, 1, 1))  # built there too
    evmiddleware.track("first", {"n": 1}, user_id="u")
    runtime.admit()
    assert [event.name for event in runtime.queues[0].items] == ["first", "identify", "at_a_time", "first"]


def test_a_burst_is_admitted_in_chunks_whole_and_in_order(monkeypatch: pytest.MonkeyPatch) -> None:
    evmiddleware.configure(providers=[MemorySink()], max_queue=5000)
    runtime = rt.current()
    monkeypatch.setattr(runtime.dispatcher, "start", lambda: None)
    for i in range(2 * rt._ADMIT_CHUNK + 345):
        evmiddleware.track("burst", {"i": i}, user_id="u")
    runtime.admit()
    assert [event.properties["i"] for event in runtime.queues[0].items] == list(
        range(2 * rt._ADMIT_CHUNK + 345)
    )
    assert not runtime.intake


def test_admit_takes_only_the_records_there_when_it_began(monkeypatch: pytest.MonkeyPatch) -> None:
    # A caller appending as fast as the dispatcher admits must not keep it admitting for ever.
    evmiddleware.configure(providers=[MemorySink()], max_queue=5000)
    runtime = rt.current()
    monkeypatch.setattr(runtime.dispatcher, "start", lambda: None)
    for i in range(rt._ADMIT_CHUNK + 1):
        evmiddleware.track("burst", {"i": i}, user_id="u")
    build = runtime._build_events

    def build_while_a_caller_tracks(most: int, later: list) -> list:
        evmiddleware.track("late", user_id="u")
        return build(most, later)

    monkeypatch.setattr(runtime, "_build_events", build_while_a_caller_tracks)
    runtime.admit()
    assert [event.name for event in runtime.queues[0].items] == ["burst"] * (rt._ADMIT_CHUNK + 1)
    assert len(runtime.intake) == 2  # one tracked as each chunk was built: left for the next admit


def test_records_left_at_shutdown_are_counted_never_lost(parked_dispatcher: rt.Runtime) -> None:
    record_request_event(request_ctx(), "http_request", dict, props())
    record_request_event(request_ctx(), "http_request", dict, props())
    evmiddleware.shutdown(1.0)
    assert not parked_dispatcher.intake
    # Admitted as the lanes stop, then counted by each provider.
    stats = evmiddleware.stats()
    assert (stats["dropped"], stats["providers"]["memory"]["dropped"]) == ({}, {"shutdown": 2})


def test_an_admit_after_the_lanes_last_one_counts_its_records_instead_of_queueing_them() -> None:
    # A caller that passed the open test before a shutdown, then found the intake full: its admit
    # comes after the dispatcher's last one (``Runtime.last_admit``), when no lane takes events.
    sink = MemorySink()
    evmiddleware.configure(providers=[sink])
    evmiddleware.track("before", user_id="u")
    runtime = rt.current()
    evmiddleware.shutdown(5.0)
    assert runtime.finished and [e.name for e in sink.events] == ["before"]
    record_request_event(request_ctx(), "http_request", dict, props())  # refused: the runtime is closed
    runtime.intake.append(an_event(7))  # as that caller appended it, before the shutdown began
    runtime.admit()
    assert not runtime.queues[0].items
    stats = evmiddleware.stats()
    assert stats["dropped"] == {"shut_down": 1, "shutdown": 1}
    assert stats["providers"]["memory"]["queued"] == 0
    assert not runtime.flush(1.0)  # the next flush reports the event counted so


def test_a_stop_before_the_dispatcher_ever_started_queues_nothing_after_it() -> None:
    evmiddleware.configure(providers=[MemorySink()])
    runtime = rt.current()
    runtime.intake.append(an_event(1))  # a caller's record; no event started the dispatcher
    evmiddleware.shutdown(1.0)
    assert runtime.dispatcher._thread is None
    runtime.intake.append(an_event(2))  # a caller that passed the open test before, as above
    runtime.admit()
    stats = evmiddleware.stats()
    row = stats["providers"]["memory"]
    assert (row["queued"], row["dropped"], stats["dropped"]) == (0, {"shutdown": 1}, {"shutdown": 1})
    assert not runtime.flush(1.0)


def test_a_late_record_s_drop_reports_the_other_callers_records_it_takes_to_the_next_flush() -> None:
    evmiddleware.configure(providers=[MemorySink()])
    evmiddleware.track("before", user_id="u")
    runtime = rt.current()
    evmiddleware.shutdown(5.0)
    assert evmiddleware.flush(1)
    runtime.intake.append(an_event(1))  # a caller whose track() returned an id just before the end
    runtime.intake.append(an_event(2))  # a caller that then saw ``finished``: it drops the rest
    runtime.drop_late()
    assert evmiddleware.stats()["dropped"] == {"shut_down": 2}
    assert not evmiddleware.flush(1)  # the first caller's event (the second one's track() said None)
    assert evmiddleware.flush(1)


def test_counting_refusals_at_a_stop_never_waits_for_the_admit_lock() -> None:
    # A SIGTERM may interrupt the thread that holds it, and wait for this stop.
    import threading

    evmiddleware.configure(providers=[MemorySink()])
    runtime = rt.current()
    holding, release = threading.Event(), threading.Event()

    def hold() -> None:
        with runtime._admit_lock:
            holding.set()
            release.wait(10)

    holder = threading.Thread(target=hold)
    holder.start()
    assert holding.wait(5)
    counting = threading.Thread(target=runtime._count_refused, args=(1,))
    counting.start()
    counting.join(5)
    stuck = counting.is_alive()
    release.set()
    holder.join(5)
    assert not stuck


def test_records_left_when_the_dispatcher_fails_are_counted(parked_dispatcher: rt.Runtime) -> None:
    record_request_event(request_ctx(), "http_request", dict, props())
    parked_dispatcher._dispatcher_failed()
    record_request_event(request_ctx(), "http_request", dict, props())  # after the failure: refused at once
    assert evmiddleware.stats()["dropped"] == {"dispatcher_error": 2}


def test_a_closed_pipeline_refuses_records_at_once(memory_sink: MemorySink) -> None:
    evmiddleware.shutdown(1.0)
    record_request_event(request_ctx(), "http_request", dict, props())
    assert evmiddleware.stats()["dropped"] == {"shut_down": 1}


def test_a_flush_covers_requests_that_ended_before_it(memory_sink: MemorySink) -> None:
    for i in range(200):
        record_request_event(request_ctx(f"u{i}"), "http_request", dict, props())
    assert evmiddleware.flush(5)
    assert len(memory_sink.events) == 200
    assert len({event.id for event in memory_sink.events}) == 200


def test_a_request_event_of_control_characters_over_the_limit_is_a_counted_drop() -> None:
    sink = MemorySink()
    evmiddleware.configure(providers=[sink], max_event_bytes=1024)
    record_request_event(request_ctx(), "http_request", dict, props() | {"path": "/\x01" * 200})
    assert evmiddleware.flush(5) is False
    assert sink.events == []
    assert evmiddleware.stats()["dropped"] == {"too_large": 1}
