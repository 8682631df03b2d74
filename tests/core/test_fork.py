"""A real os.fork(): the child starts with an empty buffer; the parent's events are sent once."""

from __future__ import annotations

import json
import os
import select
import signal
import sqlite3
import sys
import threading
import time
from collections.abc import Callable

import pytest

import evmiddleware
from evmiddleware import runtime
from evmiddleware.events import Event
from evmiddleware.http11 import HttpClient
from evmiddleware.providers.base import Batch, Limits, Provider, SendResult
from tests.core.waiting import wait_for

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


class _Down(Provider):
    """A provider that never takes anything, retried far apart: every event stays in the spool."""

    name = "down"
    limits = Limits(max_events=100, max_bytes=1_000_000, max_in_flight=1)

    def encode(self, event: Event) -> bytes:
        return b"{}"

    async def send(self, batch: Batch, client: HttpClient) -> SendResult:
        return SendResult("retry", reason="down")


def _read_bounded(fd: int, timeout: float = 20.0) -> bytes:
    ready, _, _ = select.select([fd], [], [], timeout)
    return os.read(fd, 1000) if ready else b""


def _reap(pid: int, timeout: float = 20.0) -> int:
    """``waitpid``, bounded: a child stuck past ``timeout`` is killed (and the test fails)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            return status
        time.sleep(0.02)
    os.kill(pid, signal.SIGKILL)
    os.waitpid(pid, 0)
    return -1


def test_a_child_s_spooled_events_survive_its_parent_closing_the_spool(tmp_path):
    # Before the fix the child inherited the parent's open SQLite connection, hence no OS locks of its
    # own: the parent, closing its connection (at exit), deleted the -wal file under the child.
    spool = tmp_path / "spool.db"
    evmiddleware.configure(
        providers=[_Down()], spool=str(spool), retry_deadline=3600, retry_base_delay=30, retry_max_delay=60
    )
    evmiddleware.track("parent_before", user_id="p")
    lane = runtime.current().lanes[0]
    assert wait_for(lambda: lane.requests >= 1, 10.0)  # spooled: the parent's connection is open at the fork
    go_read, go_write = os.pipe()
    report_read, report_write = os.pipe()
    pid = os.fork()
    if pid == 0:
        try:
            os.close(go_write)
            evmiddleware.track("child_before", user_id="c")
            child_lane = runtime.current().lanes[0]
            wait_for(lambda: child_lane.requests >= 1, 10.0)  # the child's own connection is open
            os.write(report_write, b"ready")
            _read_bounded(go_read)  # the parent has closed its spool
            for _ in range(5):
                evmiddleware.track("child_after", user_id="c")
            evmiddleware.shutdown(1.0)  # a graceful stop leaves every event in the spool
            os.write(report_write, str(child_lane.left_in_spool).encode())
        finally:
            os._exit(0)
    os.close(go_read)
    os.close(report_write)
    try:
        assert _read_bounded(report_read) == b"ready"
        evmiddleware.track("parent_after", user_id="p")  # the parent's spool works after the fork
        assert wait_for(lambda: lane.pending == 1, 10.0)  # spooled, then opened (the first batch waits)
        evmiddleware.shutdown(0.5)  # closes the parent's connection, as its exit would
        os.write(go_write, b"go")
        assert _read_bounded(report_read) == b"6"
    finally:
        status = _reap(pid)
        os.close(go_write)
        os.close(report_read)
    assert status == 0
    with sqlite3.connect(spool) as connection:
        names = dict(
            connection.execute(
                "SELECT json_extract(payload, '$.name'), COUNT(*) FROM events GROUP BY 1"
            ).fetchall()
        )
    assert names == {"parent_before": 1, "parent_after": 1, "child_before": 1, "child_after": 5}
    assert evmiddleware.stats()["providers"]["down"]["left_in_spool"] == 2


def test_a_fork_while_another_thread_holds_the_rate_limited_log_lock_leaves_the_child_a_free_one():
    # The dispatcher logs its retries while gunicorn forks workers: a child that inherited the lock
    # held blocked for good at its first limited line (a refused event on a request thread).
    from evmiddleware._log import limited

    holding, release = threading.Event(), threading.Event()

    def hold() -> None:
        with limited._lock:
            holding.set()
            release.wait(10)

    holder = threading.Thread(target=hold)
    holder.start()
    assert holding.wait(10)
    try:
        pid = os.fork()
        if pid == 0:  # the child: exit code 0 only if the lock can be taken
            os._exit(0 if limited._lock.acquire(timeout=5) else 1)
    finally:
        release.set()
        holder.join(10)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
