"""A request a process sent but whose answer never came (a stop, a crash) goes again from the spool, in
a later process, as exactly that request under its Idempotency-Key: FloKit deduplicates by the key
only, so a key it knows stores nothing (extra events would be lost) and a new key stores the events
twice. Two ``configure()`` calls on one spool file stand for the two processes."""

from __future__ import annotations

import sqlite3
import threading
import time
from typing import Any

import pytest

import evmiddleware
from evmiddleware.errors import ConfigurationError
from evmiddleware.spool import Spool, encode_event
from tests.core.builders import an_event
from tests.core.test_spool import configure, stop_with_three_unanswered
from tests.core.waiting import wait_for
from tests.httpserver import Answer, Received, RecordingServer, Script


def rows(path: Any) -> int:
    with sqlite3.connect(path) as connection:
        return int(connection.execute("SELECT COUNT(*) FROM events").fetchone()[0])


def numbers(received: Received) -> list[int]:
    return [event["properties"]["i"] for event in received.json()["events"]]


def key(received: Received) -> str:
    return received.headers["Idempotency-Key"]


class DedupingFloKit:
    """FloKit's deduplication: a request under a key it knows stores nothing (and is answered with
    the original result); any other request stores its events when it arrives, answered or not."""

    def __init__(self) -> None:
        self.stored: list[int] = []
        self._keys: set[str] = set()
        self._lock = threading.Lock()

    def script(self, hold: threading.Event | None = None) -> Script:
        def answer(server: RecordingServer, received: Received) -> Answer:
            with self._lock:
                if key(received) not in self._keys:
                    self._keys.add(key(received))
                    self.stored += numbers(received)
            return Answer(hold=hold)

        return answer


@pytest.mark.parametrize("in_flight", [1, 2])
def test_an_unanswered_batch_goes_again_as_it_was_and_a_later_event_in_another_request(tmp_path, in_flight):
    """The review's case: [0, 1, 2] out and unanswered, 3 tracked meanwhile. The next process sent
    [0, 1, 2, 3] under a new key, and FloKit stored 0, 1 and 2 twice."""
    spool = tmp_path / "spool.db"
    flokit = DedupingFloKit()
    never = threading.Event()
    with RecordingServer(flokit.script(hold=never)) as slow:
        configure(slow.url, spool, flokit_max_in_flight=in_flight)
        for i in range(3):
            evmiddleware.track("e", {"i": i}, user_id="u")
        assert wait_for(lambda: len(slow.received) == 1)  # FloKit stored it; its answer is held
        evmiddleware.track("e", {"i": 3}, user_id="u")
        if in_flight == 2:  # 3 leaves in a request of its own, unanswered too
            assert wait_for(lambda: len(slow.received) == 2)
        else:  # 3 waits in an open batch, never sent
            assert wait_for(lambda: rows(spool) == 4)
        evmiddleware.shutdown(0.3)
        first = slow.received[0]
        never.set()
    assert numbers(first) == [0, 1, 2]
    assert evmiddleware.stats()["providers"]["flokit"]["left_in_spool"] == 4
    with RecordingServer(flokit.script()) as up:
        configure(up.url, spool)
        assert wait_for(lambda: rows(spool) == 0)
        again = {key(r): numbers(r) for r in up.received}
    assert again.get(key(first)) == [0, 1, 2], again
    assert sorted(again.values()) == [[0, 1, 2], [3]]
    assert sorted(flokit.stored) == [0, 1, 2, 3]


def test_a_request_larger_than_a_claims_room_is_claimed_whole_once_there_is_room(tmp_path):
    """Two unanswered requests, [0, 1, 2] and [3, 4]; the next process's queue holds 4: its first claim
    takes the first request, the second waits for room rather than being split."""
    spool = tmp_path / "spool.db"
    flokit = DedupingFloKit()
    never = threading.Event()
    with RecordingServer(flokit.script(hold=never)) as slow:
        configure(slow.url, spool)
        for i in range(3):
            evmiddleware.track("e", {"i": i}, user_id="u")
        assert wait_for(lambda: len(slow.received) == 1)
        for i in (3, 4):
            evmiddleware.track("e", {"i": i}, user_id="u")
        assert wait_for(lambda: len(slow.received) == 2)
        evmiddleware.shutdown(0.3)
        sent = {key(r): numbers(r) for r in slow.received}
        never.set()
    assert sorted(sent.values()) == [[0, 1, 2], [3, 4]]
    with RecordingServer(flokit.script()) as up:
        # A lease of 0.3 s: the dispatcher claims again every 0.1 s.
        configure(up.url, spool, max_queue=4, spool_lease=0.3)
        assert wait_for(lambda: rows(spool) == 0)
        again = {key(r): numbers(r) for r in up.received}
    assert again == sent
    assert sorted(flokit.stored) == [0, 1, 2, 3, 4]


def test_a_request_larger_than_the_queue_ever_holds_goes_as_ordinary_events(tmp_path):
    """Never claimable whole, it would stay in the spool for good: it goes under new keys instead
    (FloKit may store its events twice; it loses none)."""
    spool = tmp_path / "spool.db"
    first = stop_with_three_unanswered(spool)
    with RecordingServer() as up:
        configure(up.url, spool, max_queue=2, spool_lease=0.3)
        assert wait_for(lambda: rows(spool) == 0)
        received = list(up.received)
    assert sorted(i for r in received for i in numbers(r)) == [0, 1, 2]
    assert all(len(numbers(r)) <= 2 and key(r) != key(first) for r in received)


def test_a_claim_takes_a_request_whole_in_its_order_or_not_at_all(tmp_path):
    path = str(tmp_path / "spool.db")
    spool = Spool(path)
    a, b, c, d = spool.add("flokit", [an_event(i) for i in range(4)])
    spool.set_key([d, None, b], "k1")  # one request, d then b (None: an event the spool failed to keep)
    spool.release([a, b, c, d])
    assert [rowid for rowid, _, _ in spool.claim("flokit", 2)] == [a]  # k1 does not fit beside a
    claimed = spool.claim("flokit", 10)
    assert [(rowid, k) for rowid, _, k in claimed] == [(d, "k1"), (b, "k1"), (c, None)]


def test_the_first_request_is_claimed_whole_even_past_the_room_a_busy_queue_leaves(tmp_path):
    # Under steady traffic the queue's room rarely reaches a whole request: waiting for it kept the
    # request, and every row after it, in the spool for as long as the traffic lasted.
    spool = Spool(str(tmp_path / "spool.db"))
    rows = spool.add("flokit", [an_event(i) for i in range(5)])
    spool.set_key(rows[:4], "k1")
    spool.release(rows)
    claimed = spool.claim("flokit", 1, largest=4)
    assert [(rowid, key) for rowid, _, key in claimed] == [(rowid, "k1") for rowid in rows[:4]]
    assert [rowid for rowid, _, _ in spool.claim("flokit", 1, largest=4)] == [rows[4]]


def test_a_spool_of_the_previous_schema_is_brought_up_to_date_and_its_rows_sent(tmp_path):
    spool = tmp_path / "spool.db"
    with sqlite3.connect(spool) as connection:  # what version 1 created
        connection.executescript(
            """
            CREATE TABLE events (
                rowid INTEGER PRIMARY KEY,
                provider TEXT NOT NULL,
                event_id TEXT NOT NULL,
                payload TEXT NOT NULL,
                created REAL NOT NULL,
                lease_owner TEXT,
                lease_until REAL NOT NULL DEFAULT 0
            );
            CREATE INDEX events_claim ON events (provider, lease_until);
            PRAGMA user_version=1;
            """
        )
        for i in range(3):
            event = an_event(i)
            connection.execute(
                "INSERT INTO events (provider, event_id, payload, created) VALUES (?, ?, ?, ?)",
                ("flokit", event.id, encode_event(event), time.time()),
            )
    connection.close()
    with RecordingServer() as up:
        configure(up.url, spool)
        assert wait_for(lambda: rows(spool) == 0)
        assert sorted(i for r in up.received for i in numbers(r)) == [0, 1, 2]
    with sqlite3.connect(spool) as connection:
        assert connection.execute("PRAGMA user_version").fetchone()[0] == 2
        columns = {row[1] for row in connection.execute("PRAGMA table_info(events)")}
    connection.close()
    assert {"batch_key", "batch_index"} <= columns


def test_a_spool_of_a_later_schema_is_a_clear_error(tmp_path):
    spool = tmp_path / "spool.db"
    Spool(str(spool)).close()
    with sqlite3.connect(spool) as connection:
        connection.execute("PRAGMA user_version=3")
    connection.close()
    with pytest.raises(ConfigurationError, match="schema version 3, expected 2"):
        configure("http://127.0.0.1:9", spool)


def klaviyo_requests(server: RecordingServer) -> list[tuple[str, list[int]]]:
    """Per request: the profile's external id and the events' numbers."""
    found = []
    for received in server.received:
        data = received.json()["data"]["attributes"]
        profile = data["profile"]["data"]["attributes"]["external_id"]
        found.append((profile, [e["attributes"]["properties"]["i"] for e in data["events"]["data"]]))
    return sorted(found)


def test_klaviyo_sends_each_profile_s_unanswered_request_again_as_it_was(tmp_path):
    """One profile per request still: u1's [0, 2] and u2's [1] went out unanswered, u1's 3 was never
    sent; the next process sends the two requests as they were and 3 in one of its own."""
    spool = tmp_path / "spool.db"
    never = threading.Event()

    def configure_klaviyo(url: str) -> None:
        evmiddleware.configure(
            klaviyo_public_key="AbC123",
            klaviyo_url=url,
            klaviyo_max_in_flight=2,
            spool=str(spool),
            flush_interval=0.05,
        )

    with RecordingServer(lambda s, r: Answer(202, b"", hold=never)) as slow:
        configure_klaviyo(slow.url)
        for i, user in enumerate(["u1", "u2", "u1"]):
            evmiddleware.track("e", {"i": i}, user_id=user)
        assert wait_for(lambda: len(slow.received) == 2)
        evmiddleware.track("e", {"i": 3}, user_id="u1")  # both requests in flight: it waits
        assert wait_for(lambda: rows(spool) == 4)
        evmiddleware.shutdown(0.3)
        never.set()
        assert klaviyo_requests(slow) == [("u1", [0, 2]), ("u2", [1])]
    with RecordingServer(lambda s, r: Answer(202, b"")) as up:
        configure_klaviyo(up.url)
        assert wait_for(lambda: rows(spool) == 0)
        assert klaviyo_requests(up) == [("u1", [0, 2]), ("u1", [3]), ("u2", [1])]
