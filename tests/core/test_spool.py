"""The durable spool: persisted within the interval, deleted once accepted, kept at a stop, leased."""

from __future__ import annotations

import os
import sqlite3
import threading
import time

import pytest

import evmiddleware
from evmiddleware import cli
from evmiddleware.api import record_request_event
from evmiddleware.context import RequestContext
from evmiddleware.events import Event
from evmiddleware.spool import Spool, summarize
from tests.core.builders import an_event
from tests.core.waiting import wait_for
from tests.httpserver import Answer, Received, RecordingServer


def ev(i: int = 0) -> Event:
    return an_event(i)


def rows(path) -> int:
    with sqlite3.connect(path) as connection:
        return connection.execute("SELECT COUNT(*) FROM events").fetchone()[0]


def configure(url, spool, **settings):
    evmiddleware.configure(
        flokit_api_key="k",
        flokit_url=url,
        spool=str(spool),
        flush_interval=0.05,
        retry_base_delay=0.05,
        retry_max_delay=0.2,
        **settings,
    )


def test_queued_events_reach_the_spool_and_leave_it_once_accepted(tmp_path):
    spool = tmp_path / "spool.db"
    release = threading.Event()
    with RecordingServer(lambda s, r: Answer(hold=release)) as server:
        configure(server.url, spool)
        for i in range(20):
            evmiddleware.track("e", {"i": i}, user_id="u")
        assert wait_for(lambda: rows(spool) == 20)  # persisted while the provider has not answered
        release.set()
        assert evmiddleware.flush(10)
        assert rows(spool) == 0
        assert len(server.events()) == 20


def test_a_graceful_stop_keeps_undelivered_events_and_the_next_process_sends_them(tmp_path):
    spool = tmp_path / "spool.db"
    with RecordingServer(lambda s, r: Answer(503, b"down")) as down:
        configure(down.url, spool)
        for i in range(7):
            evmiddleware.track("e", {"i": i}, user_id="u")
        assert wait_for(lambda: evmiddleware.stats()["providers"]["flokit"]["retried"] >= 1)
        evmiddleware.shutdown(0.3)
    counters = evmiddleware.stats()["providers"]["flokit"]
    assert counters["left_in_spool"] == 7
    assert counters["dropped"] == {}
    assert rows(spool) == 7
    with RecordingServer() as up:
        configure(up.url, spool)  # the dispatcher starts at configure() and sends the leftovers
        assert wait_for(lambda: len(up.events()) == 7)
        assert sorted(e["properties"]["i"] for e in up.events()) == list(range(7))
    assert wait_for(lambda: rows(spool) == 0)
    assert evmiddleware.stats()["providers"]["flokit"]["recovered"] == 7


def stop_with_three_unanswered(spool) -> Received:
    """Three events sent in one request whose answer is held past a graceful stop (``shutdown(0.3)``),
    with ``spool``: the request as it was sent. FloKit may have stored it; the spool keeps it."""
    never = threading.Event()
    with RecordingServer(lambda s, r: Answer(hold=never)) as slow:
        configure(slow.url, spool)
        for i in range(3):
            evmiddleware.track("e", {"i": i}, user_id="u")
        assert wait_for(lambda: len(slow.received) == 1)  # the request is out, its answer held
        evmiddleware.shutdown(0.3)
        never.set()
        return slow.received[0]


def test_a_batch_left_unanswered_at_a_stop_is_sent_again_under_the_same_idempotency_key(tmp_path):
    # FloKit stored the batch but its answer never came before the stop: sent again under a new key,
    # FloKit would store those events twice; under the same key it answers with the original result.
    spool = tmp_path / "spool.db"
    first = stop_with_three_unanswered(spool)
    assert evmiddleware.stats()["providers"]["flokit"]["left_in_spool"] == 3
    with RecordingServer() as up:
        configure(up.url, spool)
        assert wait_for(lambda: len(up.events()) == 3)
        again = up.received[0]
    assert again.headers["Idempotency-Key"] == first.headers["Idempotency-Key"]
    assert [e["properties"]["i"] for e in again.json()["events"]] == [0, 1, 2]


def test_batches_of_different_events_never_share_an_idempotency_key(tmp_path):
    with RecordingServer() as up:
        configure(up.url, tmp_path / "spool.db")
        for i in range(3):
            evmiddleware.track("e", {"i": i}, user_id="u")
            assert evmiddleware.flush(10)
        keys = [r.headers["Idempotency-Key"] for r in up.received]
    assert len(keys) == 3 and len(set(keys)) == 3


def test_a_row_leased_by_a_live_process_is_not_taken_until_its_lease_expires(tmp_path):
    path = str(tmp_path / "spool.db")
    now = [1000.0]
    owner = Spool(path, lease_seconds=30, clock=lambda: now[0])
    other = Spool(path, lease_seconds=30, clock=lambda: now[0])
    owner.add("flokit", [ev(1), ev(2)])
    assert other.claim("flokit", 10) == []
    now[0] += 29
    assert other.claim("flokit", 10) == []
    now[0] += 2  # the owner died and stopped renewing
    claimed = other.claim("flokit", 10)
    assert [e.properties["i"] for _, e, _ in claimed] == [1, 2]
    assert owner.claim("flokit", 10) == []  # now leased by the other process


def test_renewing_keeps_a_live_process_s_rows(tmp_path):
    path = str(tmp_path / "spool.db")
    now = [0.0]
    owner = Spool(path, lease_seconds=30, clock=lambda: now[0])
    other = Spool(path, lease_seconds=30, clock=lambda: now[0])
    owner.add("flokit", [ev()])
    for _ in range(10):
        now[0] += 15
        owner.renew()
        assert other.claim("flokit", 10) == []


def test_claim_and_done_are_per_provider(tmp_path):
    path = str(tmp_path / "spool.db")
    spool = Spool(path)
    spool.release(spool.add("a", [ev(1)]) + spool.add("b", [ev(2)]))
    [(rowid, _event, _key)] = spool.claim("a", 10)
    spool.done([rowid])
    assert summarize(path)["b"]["events"] == 1
    assert "a" not in summarize(path)


def test_a_full_disk_degrades_to_memory_only_with_an_error(tmp_path, caplog_evm):
    spool = Spool(str(tmp_path / "spool.db"))
    assert spool._connection is not None
    spool._connection.execute("PRAGMA max_page_count=8")  # a tiny "disk"
    ids = spool.add("flokit", [ev(i) for i in range(2000)])
    assert ids == [None] * 2000
    assert not spool.working
    assert spool.errors == 1
    assert "in memory only" in caplog_evm.text


def test_a_full_disk_never_fails_tracking(tmp_path, monkeypatch):
    from evmiddleware import spool as spool_module

    real_connect = spool_module._open_connection

    def tiny_disk(path):
        connection = real_connect(path)
        connection.execute("PRAGMA max_page_count=8")
        return connection

    monkeypatch.setattr(spool_module, "_open_connection", tiny_disk)
    spool = tmp_path / "spool.db"
    with RecordingServer() as server:
        configure(server.url, spool)
        for i in range(500):
            evmiddleware.track("e", {"i": i, "pad": "x" * 200}, user_id="u")
        assert evmiddleware.flush(10)
        assert len(server.events()) == 500
    assert evmiddleware.runtime.current().lanes[0].spool.errors == 1  # type: ignore[union-attr]


def test_a_corrupt_spool_is_a_clear_error_at_start_up(tmp_path):
    path = tmp_path / "spool.db"
    path.write_bytes(b"this is not a database" * 100)
    with pytest.raises(evmiddleware.ConfigurationError, match="cannot be used as a spool"):
        evmiddleware.configure(spool=str(path))


def test_a_spool_in_a_missing_folder_is_a_clear_error(tmp_path):
    with pytest.raises(evmiddleware.ConfigurationError, match="does not exist"):
        evmiddleware.configure(spool=str(tmp_path / "nope" / "spool.db"))


def test_spool_command_line_inspect_and_purge(tmp_path, capsys):
    path = str(tmp_path / "spool.db")
    Spool(path).add("flokit", [ev(1), ev(2)])
    assert cli.main(["spool", "inspect", path]) == 0
    assert "flokit" in capsys.readouterr().out
    assert cli.main(["spool", "purge", path]) == 0
    assert "deleted 2" in capsys.readouterr().out
    assert summarize(path) == {}


@pytest.mark.parametrize("action", ["inspect", "purge", "retry"])
def test_spool_command_line_on_a_missing_file_says_so_and_creates_nothing(tmp_path, capsys, action):
    path = tmp_path / "typo.db"
    assert cli.main(["spool", action, str(path), "--timeout", "1"]) == 2
    assert f"{path} does not exist" in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []


def test_a_spool_file_the_library_creates_is_readable_by_its_owner_only(tmp_path):
    # It holds user ids and event properties; SQLite alone would follow the umask (often 0644).
    path = tmp_path / "spool.db"
    umask = os.umask(0o022)
    try:
        spool = Spool(str(path))
        spool.add("flokit", [ev(1)])
    finally:
        os.umask(umask)
    made = sorted(tmp_path.iterdir())
    assert [p.name for p in made] == ["spool.db", "spool.db-shm", "spool.db-wal"]
    assert {p.name: p.stat().st_mode & 0o777 for p in made} == dict.fromkeys([p.name for p in made], 0o600)
    spool.close()


def test_check_runs_the_spool_check_configure_runs(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("EVMIDDLEWARE_LOCAL_SINK", "memory")
    monkeypatch.setenv("EVMIDDLEWARE_SPOOL", str(tmp_path / "nope" / "spool.db"))
    with pytest.raises(evmiddleware.ConfigurationError, match="does not exist"):
        evmiddleware.configure()
    assert cli.main(["check"]) == 2
    assert "does not exist" in capsys.readouterr().err
    corrupt = tmp_path / "corrupt.db"
    corrupt.write_bytes(b"this is not a database" * 100)
    monkeypatch.setenv("EVMIDDLEWARE_SPOOL", str(corrupt))
    assert cli.main(["check"]) == 2
    assert "cannot be used as a spool" in capsys.readouterr().err


def test_check_accepts_a_spool_not_yet_created_and_does_not_create_it(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("EVMIDDLEWARE_LOCAL_SINK", "memory")
    monkeypatch.setenv("EVMIDDLEWARE_SPOOL", str(tmp_path / "spool.db"))
    assert cli.main(["check"]) == 0
    assert f"spool: {tmp_path / 'spool.db'}" in capsys.readouterr().out
    assert list(tmp_path.iterdir()) == []


def test_spool_command_line_retry_sends_leased_rows_now(tmp_path, capsys, monkeypatch):
    path = str(tmp_path / "spool.db")
    Spool(path).add("flokit", [ev(1)])  # leased by a "live" process for 30 s
    with RecordingServer() as server:
        monkeypatch.setenv("EVMIDDLEWARE_FLOKIT_API_KEY", "k")
        monkeypatch.setenv("EVMIDDLEWARE_FLOKIT_URL", server.url)
        assert cli.main(["spool", "retry", path, "--timeout", "10"]) == 0
        assert len(server.events()) == 1
    assert "0 still in the spool" in capsys.readouterr().out


def test_an_event_the_spool_cannot_write_is_counted_and_the_rest_of_its_pull_delivered(tmp_path):
    spool = tmp_path / "spool.db"
    with RecordingServer() as server:
        configure(server.url, spool)
        evmiddleware.track("e", {"i": -1}, user_id="u")
        assert evmiddleware.flush(10)  # the name is known now: the next calls take track()'s fast path
        for i in range(5):
            evmiddleware.track("e", {"i": i}, user_id="u")
        # A lone surrogate: track() refuses it, but a request event's properties are built on the
        # dispatcher thread without that check (an app's route hook may give one).
        record_request_event(RequestContext(None, "u"), "e", lambda _: {"bad": "\ud800"}, None)
        for i in range(5, 10):
            evmiddleware.track("e", {"i": i}, user_id="u")
        # Finished promptly. Its answer depends on a race: False when the bad event was still waiting at
        # the call, True when the dispatcher had already counted it (then nothing before it was pending).
        started = time.monotonic()
        evmiddleware.flush(10)
        assert time.monotonic() - started < 5
        assert sorted(e["properties"]["i"] for e in server.events()) == list(range(-1, 10))
    row = evmiddleware.stats()["providers"]["flokit"]
    assert (row["sent"], row["dropped"], row["queued"], row["enqueued"]) == (11, {"encode_error": 1}, 0, 12)
    assert rows(spool) == 0


def test_a_spool_closed_for_a_fork_opens_again_on_its_next_use(tmp_path):
    from evmiddleware.spool import close_for_fork, fork_guard

    path = str(tmp_path / "spool.db")
    spool = Spool(path)
    [first] = spool.add("flokit", [ev(1)])
    with fork_guard:
        close_for_fork()
    assert spool._connection is None and spool.working  # nothing open across the fork
    [second] = spool.add("flokit", [ev(2)])
    assert second is not None and spool._connection is not None
    spool.done([first])
    assert rows(path) == 1
    spool.close()
    with fork_guard:
        close_for_fork()
    assert not spool.working  # a closed spool stays closed


def test_an_unreadable_spool_row_is_counted_as_dropped_and_signalled(tmp_path):
    from evmiddleware.spool import check_spool

    spool = tmp_path / "spool.db"
    check_spool(str(spool))
    with sqlite3.connect(spool) as connection:
        connection.executemany(
            "INSERT INTO events (provider, event_id, payload, created) VALUES ('flokit', ?, ?, 0)",
            [(f"bad{i}", '{"id": "x", "name"') for i in range(3)],
        )
    signalled = []

    def receive(sender, event, provider, reason):
        signalled.append((event, provider, reason))

    with RecordingServer() as server, evmiddleware.signals.event_dropped.connected_to(receive):
        configure(server.url, spool)
        assert wait_for(lambda: rows(spool) == 0)
        assert evmiddleware.flush(5)
    row = evmiddleware.stats()["providers"]["flokit"]
    assert row["dropped"] == {"spool_corrupt": 3}
    assert row["enqueued"] == 3 and row["queued"] == 0
    assert signalled == [(None, "flokit", "spool_corrupt")] * 3
    assert server.events() == []


def test_events_a_failing_spool_cannot_keep_at_a_stop_are_dropped_not_left_in_it(tmp_path):
    from evmiddleware.buffer import ProviderQueue
    from evmiddleware.lane import Lane
    from evmiddleware.providers.sinks import MemorySink

    lane = Lane(MemorySink(), ProviderQueue("memory", 10_000), 1.0)
    lane.spool = Spool(str(tmp_path / "spool.db"))
    assert lane.spool._connection is not None
    lane.spool._connection.execute("PRAGMA max_page_count=8")  # a tiny "disk": the write fails
    events = [ev(i) for i in range(2000)]
    lane.queue.offer_many(events)
    assert lane.stop_everything() == 2000
    row = lane.snapshot()
    assert (row["left_in_spool"], row["dropped"], row["queued"]) == (0, {"shutdown": 2000}, 0)
    assert row["enqueued"] == 2000


def test_an_event_the_spool_cannot_write_as_a_flush_begins_is_reported_by_that_flush_only(tmp_path):
    # Spooled as the flush sets up its watches: that flush hears of it (False); the next must not.
    with RecordingServer() as up:
        configure(up.url, tmp_path / "spool.db", spool_interval=5.0)
        evmiddleware.track("warm", user_id="u")
        assert evmiddleware.flush(5)
        record_request_event(RequestContext("anon-1"), "http_request", lambda s: {"path": "/caf\udce9"}, ())
        evmiddleware.track("ok", user_id="u")
        assert evmiddleware.flush(5) is False
        evmiddleware.track("ok2", user_id="u")
        assert evmiddleware.flush(5) is True
    assert evmiddleware.stats()["providers"]["flokit"]["dropped"] == {"encode_error": 1}
