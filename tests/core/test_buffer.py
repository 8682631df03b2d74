from __future__ import annotations

from evmiddleware import signals
from evmiddleware.buffer import ProviderQueue
from evmiddleware.events import make_event


def event(i: int):
    return make_event(
        f"e{i}", None, user_id="u", anonymous_id=None, max_depth=10, max_bytes=1000, on_drop=lambda k, w: None
    )


def test_drop_newest_keeps_the_first_events_and_counts_the_rest():
    queue = ProviderQueue("p", 3)
    results = [queue.offer(event(i)) for i in range(5)]
    assert results == [1, 2, 3, 0, 0]
    assert [e.name for e in queue.items] == ["e0", "e1", "e2"]
    assert queue.dropped == {"queue_full": 2}


def test_drop_oldest_keeps_the_latest_events_and_counts_evictions():
    queue = ProviderQueue("p", 3, drop_oldest=True)
    for i in range(5):
        queue.offer(event(i))
    assert [e.name for e in queue.items] == ["e2", "e3", "e4"]
    assert queue.evicted == 2
    assert queue.dropped == {"queue_full": 2}


def test_held_events_count_against_the_bound():
    queue = ProviderQueue("p", 2)
    queue.offer(event(0))
    assert len(queue.take_many(5)) == 1
    assert queue.held == 1
    assert queue.offer(event(1)) == 1
    assert queue.offer(event(2)) == 0


def test_take_many_takes_the_oldest_up_to_the_limit_or_all():
    queue = ProviderQueue("p", 10)
    for i in range(5):
        queue.offer(event(i))
    assert [e.name for e in queue.take_many(2)] == ["e0", "e1"]
    assert [e.name for e in queue.take_many(-1)] == ["e2", "e3", "e4"]
    assert queue.take_many(-1) == []
    assert queue.held == 5


def test_every_drop_is_signalled_with_its_reason():
    seen = []
    queue = ProviderQueue("p", 1)

    def receiver(sender, event, provider, reason):
        seen.append((event.name, provider, reason))

    with signals.event_dropped.connected_to(receiver):
        queue.offer(event(0))
        queue.offer(event(1))
    assert seen == [("e1", "p", "queue_full")]
