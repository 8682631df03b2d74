"""A real os.fork(): the child starts with an empty buffer; the parent's events are sent once."""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Callable

import pytest

import evmiddleware
from evmiddleware import runtime

pytestmark = pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")


def test_child_gets_an_empty_buffer_and_parent_events_are_sent_once_by_the_parent(tmp_path):
    path = tmp_path / "events.jsonl"
    evmiddleware.configure(local_sink=f"jsonl:{path}", flush_interval=60)
    evmiddleware.track("from_parent", user_id="p")  # queued, dispatcher thread started
    parent_runtime = runtime.peek()
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # child: report what it sees, send its own event, exit without atexit noise
        try:
            child = runtime.current()
            queued = sum(len(q.items) for q in child.queues)
            fresh = child is not parent_runtime and not child.dispatcher.started
            evmiddleware.track("from_child", user_id="c")
            delivered = evmiddleware.flush(5)
            os.write(write_end, json.dumps([queued, fresh, delivered]).encode())
        finally:
            os._exit(0)
    os.close(write_end)
    _, status = os.waitpid(pid, 0)
    report = json.loads(os.read(read_end, 1000))
    os.close(read_end)
    assert status == 0
    assert report == [0, True, True]
    assert evmiddleware.flush(5)
    names = [json.loads(line)["name"] for line in path.read_text().splitlines()]
    assert sorted(names) == ["from_child", "from_parent"]
    assert sys.platform != "win32"


def in_child(work: Callable[[], object]) -> str:
    """Run ``work`` in a real forked child; what it returned, as text."""
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:
        try:
            os.write(write_end, str(work()).encode())
        finally:
            os._exit(0)
    os.close(write_end)
    os.waitpid(pid, 0)
    answer = os.read(read_end, 1000).decode()
    os.close(read_end)
    return answer


def test_a_child_forked_before_any_pipeline_draws_its_own_ids():
    from evmiddleware.events import new_event_id

    child_id = in_child(new_event_id)
    parent_id = new_event_id()
    assert child_id[:24] != parent_id[:24]  # a different random prefix, not the parent's sequence


def test_a_child_never_sends_ids_its_parent_made_ahead(memory_sink):
    from evmiddleware.events import id_pool, refill_ids

    evmiddleware.track("warm_up", user_id="p")  # the name, known; the dispatcher, started
    assert evmiddleware.flush(5)
    id_pool.clear()
    refill_ids()
    parents = set(id_pool)
    assert parents
    child_id = in_child(lambda: evmiddleware.track("warm_up", user_id="c"))
    assert len(child_id) == 36 and child_id not in parents
    assert child_id[:24] != next(iter(parents))[:24]
