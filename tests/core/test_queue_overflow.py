"""A full queue under ``overflow="drop_oldest"``: the dispatcher's take against a caller's eviction, and
which events an eviction picks when the oldest are already in the lane (open batches, backlog)."""

from __future__ import annotations

import json
import sqlite3
import threading
from collections import deque
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import evmiddleware
from evmiddleware import runtime, signals
from evmiddleware.buffer import ProviderQueue
from evmiddleware.events import Event
from evmiddleware.lane import Lane
from evmiddleware.providers.base import Limits
from evmiddleware.spool import Spool
from tests.core.builders import an_event
from tests.core.test_batching import Fixed, Grouped, Wired, ev
from tests.core.waiting import wait_for
from tests.httpserver import Answer, RecordingServer


def adds_up(row: Any) -> bool:
    finished = row["sent"] + row["rejected"] + sum(row["dropped"].values()) + sum(row["skipped"].values())
    return bool(finished + row["left_in_spool"] + row["queued"] == row["enqueued"])


@pytest.fixture
def dropped() -> Iterator[list[tuple[int, str]]]:
    """``(properties["i"], reason)`` of every ``event_dropped``, in order."""
    seen: list[tuple[int, str]] = []

    def receive(sender: object, event: Event, provider: str, reason: str) -> None:
        seen.append((event.properties["i"], reason))

    with signals.event_dropped.connected_to(receive):
        yield seen


# -- 1. take_many against an eviction ------------------------------------------------------------------


class Preempted(deque[Event]):
    """A queue's ``items`` where, at the dispatcher's first ``popleft``, a caller thread offers
    ``newcomer`` to the full queue, if the queue's lock lets it in, and is preempted between its
    eviction's pop and its append (the append lands once the take is over). Without the lock, the
    take has counted one event more than is left."""

    def __init__(self, queue: ProviderQueue, newcomer: Event) -> None:
        super().__init__(queue.items)
        self.queue = queue
        self.newcomer = newcomer
        self.armed = True
        self.in_caller = False
        self.caller_waited = False
        self.late: list[Event] = []

    def popleft(self) -> Event:
        if self.armed:
            self.armed = False
            if self.queue._lock.acquire(blocking=False):
                self.queue._lock.release()
                self.in_caller = True
                try:
                    self.queue.offer(self.newcomer)
                finally:
                    self.in_caller = False
            else:  # the caller waits for the lock: it offers once the take is over
                self.caller_waited = True
        return super().popleft()

    def append(self, event: Event) -> None:
        if self.in_caller:
            self.late.append(event)
        else:
            super().append(event)


def test_take_many_takes_what_it_counted_while_a_caller_evicts_from_the_full_queue() -> None:
    queue = ProviderQueue("p", 3, drop_oldest=True)
    for i in range(3):
        queue.offer(an_event(i))
    first = queue.take_many(1)
    queue.offer(an_event(3))  # full: all the eviction it may owe the lane (cap // 10, at least 1)
    items = queue.items = Preempted(queue, an_event(4))

    taken = queue.take_many(-1)  # raised IndexError: the caller's eviction popped one it had counted

    if items.caller_waited:
        queue.offer(items.newcomer)
    items.extend(items.late)
    assert queue.held == len(first) + len(taken)
    # Every event offered is taken, still queued, or counted as dropped (evicted or refused).
    assert len(first) + len(taken) + len(queue.items) + queue.dropped["queue_full"] == 5
    assert len({e.id for e in [*first, *taken, *queue.items]}) == len(first) + len(taken) + len(queue.items)


# -- 2. drop_oldest drops the oldest event not in a request ------------------------------------------


def offer_all(queue: ProviderQueue, numbers: range, users: int = 2) -> None:
    for i in numbers:
        queue.offer(ev(user=f"u{i % users}", i=i))


def open_numbers(lane: Lane) -> list[int]:
    return sorted(item.event.properties["i"] for group in lane._groups.values() for item in group.items)


def test_a_grouped_lane_that_took_the_whole_queue_evicts_its_oldest_open_events_not_those_in_flight(
    dropped: list[tuple[int, str]],
) -> None:
    queue = ProviderQueue("grouped", 100, drop_oldest=True)
    lane = Lane(Grouped(Limits(max_events=1000, max_bytes=10**6)), queue, 1.0)
    offer_all(queue, range(100))
    lane.pull(0.0)  # a grouped lane takes all: the queue's deque is empty, its cap reached
    in_flight = lane.take_batch("u0", 0.0)  # 0, 2, …, 98: in a request, not to be evicted
    offer_all(queue, range(100, 110))  # as many as it may owe (cap // 10)

    assert dropped == []  # owed, not dropped yet: the lane drops the oldest at its next pull
    lane.pull(0.0)

    assert dropped == [(i, "queue_full") for i in range(1, 20, 2)]
    assert open_numbers(lane) == list(range(21, 100, 2)) + list(range(100, 110))
    assert [item.event.properties["i"] for item in in_flight.items] == list(range(0, 100, 2))
    assert (queue.held, len(queue.items), queue.owed) == (100, 0, 0)
    row = lane.snapshot()
    assert adds_up(row), row
    assert (row["dropped"], row["queued"], row["enqueued"]) == ({"queue_full": 10}, 100, 110)


@pytest.mark.parametrize("kind", [Fixed, Wired], ids=["one by one", "in bulk"])
def test_an_open_batch_that_covers_the_queue_loses_its_oldest_events_and_keeps_its_bytes_right(
    kind: type[Fixed], dropped: list[tuple[int, str]]
) -> None:
    provider = kind(Limits(max_events=1000, max_bytes=10**6))
    queue = ProviderQueue(provider.name, 50, drop_oldest=True)
    lane = Lane(provider, queue, 1.0)
    offer_all(queue, range(50), users=1)
    lane.pull(0.0)
    offer_all(queue, range(50, 55), users=1)
    lane.pull(0.0)

    assert dropped == [(i, "queue_full") for i in range(5)]
    batch = lane.take_batch(None, 0.0)
    kept = [item.event for item in batch.items]
    assert [e.properties["i"] for e in kept] == list(range(5, 55))
    assert batch.data == b",".join(provider.encode(e) for e in kept)  # the evicted run unbundled
    assert (lane.pending, lane._groups) == (0, {})
    assert adds_up(lane.snapshot())


def one_in_flight_one_open(spool: Spool | None = None) -> tuple[ProviderQueue, Lane]:
    """A drop_oldest lane of one event a batch, 40 events offered: event 0 in flight, event 1 open."""
    provider = Fixed(Limits(max_events=1, max_bytes=10**6))
    queue = ProviderQueue(provider.name, 40, drop_oldest=True)
    lane = Lane(provider, queue, 1.0)
    lane.spool = spool
    offer_all(queue, range(40), users=1)
    lane.pull(0.0)
    lane.take_batch(None, 0.0)
    lane.pull(0.0)
    return queue, lane


@pytest.mark.parametrize("spooled", [True, False], ids=["spool: the backlog", "no spool: Lane.moved"])
def test_evictions_past_the_open_batch_take_what_a_flush_moved_next_and_the_flush_hears_of_them(
    tmp_path: Path, dropped: list[tuple[int, str]], spooled: bool
) -> None:
    """One event a batch, one in flight, one open; a flush moved the rest out of the queue: into the
    backlog (spooled), or into ``Lane.moved``."""
    path = str(tmp_path / "spool.db")
    queue, lane = one_in_flight_one_open(Spool(path) if spooled else None)
    watch = lane.watch()
    assert (watch.target, watch.remaining, watch.failed, len(queue.items)) == (40, 40, False, 0)
    offer_all(queue, range(40, 44), users=1)  # 4 owed
    lane.pull(0.0)

    assert dropped == [(i, "queue_full") for i in (1, 2, 3, 4)]
    assert (watch.remaining, watch.failed) == (36, True)
    # The next event opens with the number the flush counted it under.
    [open_item] = [item for group in lane._groups.values() for item in group.items]
    assert (open_item.event.properties["i"], open_item.seq) == (5, 5)
    # Then the rest, in order (a spooled lane moves what callers queue to its backlog at each pull).
    waiting = [event for _, event, _ in lane.backlog] if spooled else list(lane.moved)
    assert [event.properties["i"] for event in [*waiting, *queue.items]] == list(range(6, 44))
    if spooled:
        with sqlite3.connect(path) as db:
            rows = db.execute("SELECT payload FROM events")
            spool_rows = sorted(json.loads(payload)["properties"]["i"] for (payload,) in rows)
        assert spool_rows == [0, *range(5, 44)]  # the evicted ones' rows deleted
    assert adds_up(lane.snapshot())


def test_a_stop_counts_the_events_a_flush_moved_and_no_batch_opened(dropped: list[tuple[int, str]]) -> None:
    provider = Fixed(Limits(max_events=1, max_bytes=10**6))
    queue = ProviderQueue(provider.name, 100)
    lane = Lane(provider, queue, 1.0)
    offer_all(queue, range(10), users=1)
    lane.pull(0.0)
    lane.take_batch(None, 0.0)  # event 0 in flight: its delivery task ends it
    lane.pull(0.0)  # event 1 open
    lane.watch()  # 2..9 moved
    offer_all(queue, range(10, 12), users=1)

    assert lane.stop_everything() == 11
    assert sorted(i for i, _ in dropped) == list(range(1, 12))
    assert not lane.moved
    row = lane.snapshot()
    assert adds_up(row), row
    assert (row["dropped"], row["queued"]) == ({"shutdown": 11}, 1)


def test_with_nothing_taken_the_queue_evicts_its_own_oldest_at_once(dropped: list[tuple[int, str]]) -> None:
    queue = ProviderQueue("p", 3, drop_oldest=True)
    for i in range(5):
        queue.offer(an_event(i))
    assert [e.properties["i"] for e in queue.items] == [2, 3, 4]
    assert dropped == [(0, "queue_full"), (1, "queue_full")]


def test_what_it_may_owe_is_bounded_then_the_queue_evicts_its_own_oldest(
    dropped: list[tuple[int, str]],
) -> None:
    queue = ProviderQueue("grouped", 100, drop_oldest=True)
    lane = Lane(Grouped(Limits(max_events=1000, max_bytes=10**6)), queue, 1.0)
    offer_all(queue, range(100))
    lane.pull(0.0)
    offer_all(queue, range(100, 115))  # 10 owed, then 5 evicted from the deque
    assert (queue.owed, len(queue.items)) == (10, 10)
    assert dropped == [(i, "queue_full") for i in range(100, 105)]
    lane.pull(0.0)
    assert dropped[5:] == [(i, "queue_full") for i in range(10)]
    assert queue.held == 100
    assert adds_up(lane.snapshot())


# -- 3. end to end: Klaviyo down, a real server --------------------------------------------------------


def klaviyo_numbers(server: RecordingServer, user: str) -> list[int]:
    numbers = []
    for request in server.received:
        body = request.json()["data"]["attributes"]
        if body["profile"]["data"]["attributes"].get("external_id") == user:
            numbers += [e["attributes"]["properties"]["i"] for e in body["events"]["data"]]
    return sorted(numbers)


@pytest.mark.parametrize("policy", ["drop_oldest", "drop_newest"])
def test_klaviyo_stuck_drops_the_oldest_queued_events_under_drop_oldest_and_the_newest_else(
    policy: str, dropped: list[tuple[int, str]]
) -> None:
    """Its four requests in flight and held; 250 events for one profile then come in steps of 10
    (what a queue of 100 may owe), each admitted and pulled into the open batch before the next."""
    release = threading.Event()
    with RecordingServer(lambda server, received: Answer(202, b"", hold=release)) as server:
        try:
            evmiddleware.configure(
                klaviyo_public_key="AbC123",
                klaviyo_url=server.url,
                max_queue=100,
                overflow=policy,
                flush_interval=0.05,
            )
            current = runtime.peek()
            assert current is not None
            [queue] = current.queues
            for user in "abcd":
                evmiddleware.track("held", {"i": -1}, user_id=user)
            assert wait_for(lambda: len(server.received) == 4, 10)
            for step in range(25):
                for i in range(step * 10, step * 10 + 10):
                    evmiddleware.track("e", {"i": i}, user_id="u")
                # The lane's pull pays what the queue owes before it takes the queue's events.
                assert wait_for(lambda: not (current.intake or queue.items), 10)
                row = evmiddleware.stats()["providers"]["klaviyo"]
                assert adds_up(row), row
        finally:
            release.set()
        # Waits until what is left is delivered; False: events tracked before it were dropped.
        assert not evmiddleware.flush(10)
        kept = klaviyo_numbers(server, "u")
    expected = list(range(154, 250)) if policy == "drop_oldest" else list(range(96))
    assert kept == expected
    assert dropped == [(i, "queue_full") for i in sorted(set(range(250)) - set(expected))]
    row = evmiddleware.stats()["providers"]["klaviyo"]
    assert adds_up(row), row
    assert (row["sent"], row["dropped"], row["queued"], row["enqueued"]) == (100, {"queue_full": 154}, 0, 254)
