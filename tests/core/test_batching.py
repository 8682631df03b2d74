"""Batches exactly at and one past each limit, built by the lane from a provider's Limits."""

from __future__ import annotations

import gc
from typing import Any, ClassVar

import httpx
import pytest

import evmiddleware
from evmiddleware.buffer import ProviderQueue
from evmiddleware.events import Event, make_event
from evmiddleware.lane import Lane
from evmiddleware.providers.base import OK, Batch, Limits, Provider, SendResult, SkipEvent


class Fixed(Provider):
    """Each event encodes to exactly ``size`` bytes; grouped by user id when ``grouped``."""

    name: ClassVar[str] = "fixed"

    def __init__(self, limits: Limits, size: int = 10) -> None:
        self.limits = limits
        self.size = size

    def encode(self, event: Event) -> bytes:
        if event.name == "skip":
            raise SkipEvent("not_for_me")
        return b"x" * int(event.properties.get("size", self.size))

    async def send(self, batch: Batch, client: httpx.AsyncClient) -> SendResult:
        return OK


class Grouped(Fixed):
    def group_key(self, event: Event) -> str | None:
        return event.user_id


class Wired(Fixed):
    """As ``Fixed``, through ``wire``: the lane encodes each pull in one call."""

    def wire(self, event: Event) -> dict[str, Any]:
        if event.name == "skip":
            raise SkipEvent("not_for_me")
        if event.name == "broken":
            raise ValueError("cannot encode")
        size = int(event.properties.get("size", self.size))
        value: object = object() if event.name == "unwritable" else "a" * (size - 8)
        return {"n": value}  # {"n":"aa…"}: exactly ``size`` bytes of JSON

    encode = Provider.encode  # dumps(wire(event)), as providers that define only ``wire``


BOTH = pytest.mark.parametrize("kind", [Fixed, Wired], ids=["one by one", "in bulk"])


def ev(name="e", user="u", **props):
    return make_event(
        name,
        props,
        user_id=user,
        anonymous_id=None,
        max_depth=10,
        max_bytes=10_000,
        on_drop=lambda k, w: None,
    )


def lane_with(provider: Provider, events: list[Event], interval: float = 1.0) -> Lane:
    queue = ProviderQueue(provider.name, 100_000)
    for event in events:
        queue.offer(event)
    lane = Lane(provider, queue, interval)
    lane.pull(0.0)
    return lane


def batches(lane: Lane, now: float = 0.0, force: bool = True) -> list[int]:
    sizes = []
    while (key := lane.ready(now, force)) is not False:
        sizes.append(len(lane.take_batch(key, now).items))
        lane.pull(now)
    return sizes


@BOTH
def test_count_limit_exactly_and_one_past(kind):
    limits = Limits(max_events=50, max_bytes=10**6)
    assert batches(lane_with(kind(limits), [ev() for _ in range(50)])) == [50]
    assert batches(lane_with(kind(limits), [ev() for _ in range(51)])) == [50, 1]


@BOTH
def test_byte_limit_exactly_and_one_past(kind):
    # 5 events of 10 bytes + 1 separator each = 55 bytes of room for the events.
    limits = Limits(max_events=1000, max_bytes=55 + 64, envelope_bytes=64)
    assert batches(lane_with(kind(limits), [ev() for _ in range(5)])) == [5]
    assert batches(lane_with(kind(limits), [ev() for _ in range(6)])) == [5, 1]


def bodies(lane: Lane) -> list[tuple[list[str], bytes]]:
    """Each batch's event names and data, forced out."""
    taken = []
    while (key := lane.ready(0.0, True)) is not False:
        batch = lane.take_batch(key, 0.0)
        taken.append(([item.event.name for item in batch.items], batch.data))
        lane.pull(0.0)
    return taken


def test_a_pull_encoded_in_bulk_gives_the_bytes_encoding_one_by_one_gives():
    events = [ev(f"e{i}", size=10 + i) for i in range(4)]
    provider = Wired(Limits(max_events=1000, max_bytes=10**6))
    [(names, data)] = bodies(lane_with(provider, events))
    assert names == ["e0", "e1", "e2", "e3"]
    assert data == b",".join(provider.encode(e) for e in events)


def test_a_bulk_batch_that_later_pulls_overfill_is_split_within_the_byte_limit_in_order():
    # Room for 5 events of 10 bytes: 3 arrive (encoded in bulk), then 3 more that no longer fit.
    provider = Wired(Limits(max_events=1000, max_bytes=55 + 64, envelope_bytes=64))
    first = [ev(f"a{i}") for i in range(3)]
    lane = lane_with(provider, first)
    for i in range(3):
        lane.queue.offer(ev(f"b{i}"))
    lane.pull(0.0)
    taken = bodies(lane)
    assert [names for names, _ in taken] == [["a0", "a1", "a2", "b0", "b1"], ["b2"]]
    for names, data in taken:
        assert data == b",".join(provider.encode(ev(name)) for name in names)
        assert len(data) + 1 <= 55


def test_in_bulk_skipped_unencodable_and_too_large_events_are_counted_and_the_rest_sent():
    events = [ev("skip"), ev("broken"), ev("ok1"), ev("unwritable"), ev("big", size=200), ev("ok2")]
    lane = lane_with(Wired(Limits(max_events=1000, max_bytes=100, envelope_bytes=10)), events)
    assert lane.skipped == {"not_for_me": 1}
    assert lane.dropped == {"encode_error": 2, "too_large": 1}
    [(names, data)] = bodies(lane)
    assert names == ["ok1", "ok2"]
    assert data == b'{"n":"aa"},{"n":"aa"}'
    assert lane.completed() == 4  # the four refused ones are finished, not waiting


def test_a_full_batch_is_ready_before_the_flush_interval():
    lane = lane_with(Fixed(Limits(max_events=3, max_bytes=10**6)), [ev() for _ in range(3)])
    assert lane.ready(0.0, force=False) is None  # the (single) group key
    lane2 = lane_with(Fixed(Limits(max_events=3, max_bytes=10**6)), [ev() for _ in range(2)])
    assert lane2.ready(0.5, force=False) is False
    assert lane2.ready(1.0, force=False) is None
    assert lane2.next_due(0.25) == 0.75


def test_a_single_event_over_the_byte_limit_is_dropped_as_too_large():
    lane = lane_with(Fixed(Limits(max_events=10, max_bytes=100, envelope_bytes=10)), [ev(size=91), ev()])
    assert lane.dropped == {"too_large": 1}
    assert batches(lane) == [1]


def test_skipped_events_are_counted_by_reason_not_as_failures():
    lane = lane_with(Fixed(Limits(max_events=10, max_bytes=1000)), [ev("skip"), ev()])
    assert lane.skipped == {"not_for_me": 1}
    assert lane.failures() == 0
    assert batches(lane) == [1]


def test_grouped_batches_hold_one_group_each_oldest_first():
    events = [ev(user="a"), ev(user="b"), ev(user="a"), ev(user="c"), ev(user="a")]
    lane = lane_with(Grouped(Limits(max_events=1000, max_bytes=10**6)), events)
    keys = []
    while (key := lane.ready(0.0, True)) is not False:
        batch = lane.take_batch(key, 0.0)
        keys.append((batch.group, len(batch.items)))
    assert keys == [("a", 3), ("b", 1), ("c", 1)]


def test_every_batch_has_its_own_idempotency_key():
    lane = lane_with(Fixed(Limits(max_events=1, max_bytes=1000)), [ev(), ev()])
    first = lane.take_batch(lane.ready(0, True), 0)  # type: ignore[arg-type]
    lane.pull(0)
    second = lane.take_batch(lane.ready(0, True), 0)  # type: ignore[arg-type]
    assert first.key != second.key


def test_a_delivered_batch_is_freed_not_held_by_the_idle_dispatcher():
    """Between batches the lane loop waits holding its locals: a sent batch (up to 5 MB) must not.

    A delivery's own task may still be ending when ``flush`` returns; the lane loop has passed the
    batch on before that, so it must hold none."""
    evmiddleware.configure(providers=[Fixed(Limits(max_events=1000, max_bytes=10**6))])
    for _ in range(10):
        evmiddleware.track("e", anonymous_id="a")
    assert evmiddleware.flush(5)
    gc.collect()
    holders = [
        code.co_name
        for batch in [o for o in gc.get_objects() if type(o) is Batch]
        for holder in gc.get_referrers(batch)
        # a suspended coroutine holds its locals itself (3.11+) or through its frame (3.10)
        if (code := getattr(holder, "cr_code", None) or getattr(holder, "f_code", None)) is not None
    ]
    assert "_lane_loop" not in holders


@BOTH
def test_a_one_event_batch_is_filled_past_the_events_its_provider_skips(kind):
    # Flameup takes one event a request and skips anonymous ones: each skipped event used to leave
    # the batch empty until the dispatcher's next tick (20 events a second).
    limits = Limits(max_events=1, max_bytes=10**6)
    lane = lane_with(kind(limits), [ev("skip") for _ in range(5)] + [ev("kept"), ev("next")])
    assert lane.pending == 1
    assert lane.skipped == {"not_for_me": 5}
    assert bodies(lane)[0][0] == ["kept"]


def test_one_pull_takes_a_bounded_number_of_events_while_all_are_skipped():
    # The bound keeps one lane from holding the dispatcher thread for its whole queue at once.
    limits = Limits(max_events=1, max_bytes=10**6)
    lane = lane_with(Fixed(limits), [ev("skip") for _ in range(2500)])
    assert sum(lane.skipped.values()) == 1000
    lane.pull(0.0)
    lane.pull(0.0)
    assert sum(lane.skipped.values()) == 2500 and not lane.queue.items


def test_a_failure_a_waiting_flush_watches_is_its_to_report_and_one_no_flush_watches_the_next_ones():
    lane = lane_with(Fixed(Limits(max_events=10, max_bytes=10**6)), [ev() for _ in range(3)])
    watch = lane.watch()
    key = lane.ready(0.0, True)
    assert key is not False
    lane.finish_rejected(lane.take_batch(key, 0.0), "http_400")
    assert watch.failed and watch.remaining == 0
    assert lane.unreported == 0  # that flush reports them: the next one must not again
    lane.unwatch(watch)
    lane.queue.offer(ev())
    lane.pull(0.0)
    key = lane.ready(0.0, True)
    assert key is not False
    lane.finish_rejected(lane.take_batch(key, 0.0), "http_400")
    assert lane.unreported == 1  # no flush waited: the next one reports it
