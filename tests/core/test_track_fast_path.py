"""track()'s common case queues a record that the dispatcher turns into the event; everything else is
validated on the caller's thread. Both must give the same event."""

from __future__ import annotations

import contextlib
import datetime as dt
import threading
import uuid

from hypothesis import given, settings
from hypothesis import strategies as st

import evmiddleware
from evmiddleware import events
from evmiddleware import runtime as rt
from evmiddleware.context import request_context
from evmiddleware.providers.sinks import MemorySink

UTC = dt.timezone.utc

plain_values = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**63), max_value=2**63),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=40),
)
flat_properties = st.dictionaries(st.text(max_size=12), plain_values, max_size=8)
ids = st.one_of(st.none(), st.text(max_size=8), st.sampled_from(["u1", " u2 ", "x" * 256, ""]))


def track_with(strict: bool, name: str, properties: dict, user_id: str | None, anonymous_id: str | None):
    """The event track() delivers (or the reason it was dropped), on one path or the other."""
    sink = MemorySink()
    evmiddleware.configure(providers=[sink], strict=strict)
    assert rt.current().takes_records is not strict  # strict mode validates on the caller's thread
    try:
        evmiddleware.track(name, properties, user_id=user_id, anonymous_id=anonymous_id)
    except evmiddleware.EventError as exc:
        return exc.reason
    assert evmiddleware.flush(5)
    if not sink.events:
        [reason] = evmiddleware.stats()["dropped"]
        return reason
    [event] = sink.events
    return (event.name, event.user_id, event.anonymous_id, event.properties, event.kind)


@settings(max_examples=150, deadline=None)
@given(
    name=st.sampled_from(["signup", " signup ", "", "x" * 256]),
    properties=flat_properties,
    user_id=ids,
    anonymous_id=ids,
)
def test_the_common_path_and_full_validation_agree(name, properties, user_id, anonymous_id):
    with contextlib.suppress(evmiddleware.EventError):
        events._clean_name(name)  # a name seen before takes the common path
    fast = track_with(False, name, dict(properties), user_id, anonymous_id)
    full = track_with(True, name, dict(properties), user_id, anonymous_id)
    assert fast == full


def test_the_event_has_a_uuid4_id_the_time_of_the_call_and_a_copy_of_the_properties(memory_sink: MemorySink):
    properties = {"plan": "pro", "seats": 3, "ratio": 0.5, "trial": False, "coupon": None}
    before = dt.datetime.now(UTC)
    event_id = evmiddleware.track("signup", properties, user_id="u1")
    after = dt.datetime.now(UTC)
    properties["plan"] = "changed after the call"
    assert evmiddleware.flush(5)
    [event] = memory_sink.events
    assert event.id == event_id and uuid.UUID(event_id).version == 4
    # Stamped to the millisecond (``events.stamp``): what every provider stores.
    assert before.replace(microsecond=before.microsecond // 1000 * 1000) <= event.timestamp <= after
    assert event.timestamp.tzinfo is UTC and event.timestamp.microsecond % 1000 == 0
    assert event.properties == {"plan": "pro", "seats": 3, "ratio": 0.5, "trial": False, "coupon": None}
    assert (event.kind, event.context, dict(event.aliases)) == ("track", {}, {})


def test_inside_a_request_the_event_carries_its_ids_facts_and_aliases(memory_sink: MemorySink):
    with request_context(anonymous_id="anon-1", user_id="u1", route="/items/{item_id}") as ctx:
        ctx.aliases["klaviyo_exchange_id"] = "kx-1"
        evmiddleware.track("viewed", {"item": 7})
    assert evmiddleware.flush(5)
    [event] = memory_sink.events
    assert (event.user_id, event.anonymous_id) == ("u1", "anon-1")
    assert event.context == {"route": "/items/{item_id}"}
    assert dict(event.aliases) == {"klaviyo_exchange_id": "kx-1"}


def test_ids_are_unique_and_distinct_from_a_forked_childs_sequence():
    first = [events.new_event_id() for _ in range(1000)]
    assert len(set(first)) == 1000
    assert all(uuid.UUID(event_id).version == 4 and len(event_id) == 36 for event_id in first)
    events._reseed()  # what a forked child runs
    assert events.new_event_id()[:24] != first[0][:24]


def test_threads_tracking_at_once_through_a_small_intake_lose_nothing_and_keep_each_threads_order():
    sink = MemorySink()
    # An intake of 50 fills up over and over: callers then move it into the queue themselves.
    evmiddleware.configure(providers=[sink], max_queue=50, flush_interval=0.01)
    runtime = rt.current()
    threads, per_thread = 4, 2_000
    start = threading.Barrier(threads)
    evmiddleware.track("n", user_id="warm")
    assert evmiddleware.flush(5)

    def work(t: int) -> None:
        start.wait()
        for i in range(per_thread):
            evmiddleware.track("n", {"t": t, "i": i}, user_id=f"u{t}")

    pool = [threading.Thread(target=work, args=(t,)) for t in range(threads)]
    for thread in pool:
        thread.start()
    for thread in pool:
        thread.join(30)
    evmiddleware.flush(10)
    counters = evmiddleware.stats()["providers"]["memory"]
    delivered = [event.properties for event in sink.events[1:]]
    assert counters["sent"] - 1 + counters["dropped"].get("queue_full", 0) == threads * per_thread
    assert len({event.id for event in sink.events}) == len(sink.events)
    for t in range(threads):
        mine = [p["i"] for p in delivered if p["t"] == t]
        assert mine == sorted(mine)  # drops aside, each thread's events arrive in the order tracked
    assert not runtime.intake


def test_a_drop_receiver_that_tracks_while_the_intake_is_full_does_not_deadlock(monkeypatch):
    from evmiddleware import signals

    sink = MemorySink()
    evmiddleware.configure(providers=[sink], max_queue=2)
    runtime = rt.current()
    monkeypatch.setattr(runtime.dispatcher, "start", lambda: None)  # parked: the intake fills
    seen = []

    def on_drop(sender, event, provider, reason):
        seen.append(reason)
        evmiddleware.track("after_a_drop", user_id="u")  # the intake may be full right now

    def work() -> None:
        for i in range(8):
            evmiddleware.track("n", {"i": i}, user_id="u")

    signals.event_dropped.connect(on_drop)
    try:
        worker = threading.Thread(target=work, daemon=True)  # a deadlock fails the test, not the run
        worker.start()
        worker.join(10)
    finally:
        signals.event_dropped.disconnect(on_drop)
    assert not worker.is_alive()
    assert "queue_full" in seen
