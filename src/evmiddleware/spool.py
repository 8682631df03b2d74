"""The durable spool: events not yet delivered, kept in SQLite so a crash or a restart loses none.

One row per (event, provider). The dispatcher thread inserts what the caller queued (at least every
``spool_interval``), deletes a row once its provider accepted or refused the event for good, and at a
graceful stop releases what it could not send. Rows sent in a request keep its idempotency key and
their place in it (``set_key``): a later process sends a request whose answer never came again as
it was, under that key (``claim``, ``Lane._open_replay``). Several processes (gunicorn workers) may
share one file: a process claims rows with a lease it renews while alive, so rows left by a worker
that died are sent by a live one once the lease expires, and never by two processes at once.

Only the dispatcher thread uses a ``Spool``, but for one step: the runtime closes its connection
before the process forks (``close_for_fork``), on the forking thread, and the dispatcher opens it again
on its next use. ``check_spool`` runs at start-up to fail loudly on a file that cannot be opened or is
corrupt.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import logging
import os
import socket
import sqlite3
import threading
import time
import weakref
from collections.abc import Callable, Iterable, Sequence
from typing import Any

from ._json import dumps
from ._log import limited, logger
from .errors import ConfigurationError
from .events import Event

__all__ = ["Spool", "check_spool", "close_for_fork", "decode_event", "encode_event"]

#: 2 added ``batch_key`` and ``batch_index``: the idempotency key of the request a row was sent in, and
#: its place there (``Spool.set_key``). A file of version 1 is brought up to date when opened.
_SCHEMA_VERSION = 2
_SCHEMA = (
    """CREATE TABLE IF NOT EXISTS events (
    rowid INTEGER PRIMARY KEY,
    provider TEXT NOT NULL,
    event_id TEXT NOT NULL,
    payload TEXT NOT NULL,
    created REAL NOT NULL,
    lease_owner TEXT,
    lease_until REAL NOT NULL DEFAULT 0,
    batch_key TEXT,
    batch_index INTEGER
)""",
    "CREATE INDEX IF NOT EXISTS events_claim ON events (provider, lease_until)",
    # Partial: the rows of a pull, inserted unkeyed, cost it nothing.
    "CREATE INDEX IF NOT EXISTS events_batch ON events (batch_key) WHERE batch_key IS NOT NULL",
)
#: Keys a claim looks up in one statement (SQLite allowed 999 parameters before 3.32).
_CHUNK = 500


#: Held around every SQLite transaction of this process, and by the runtime while the process forks:
#: a child forked in the middle of one inherits SQLite's in-process lock state and finds the file
#: locked for good (its spool check then failed after 5 s and the worker sent nothing).
fork_guard = threading.Lock()


def encode_event(event: Event) -> str:
    data = event.as_dict()
    data["aliases"] = dict(event.aliases)
    return dumps(data).decode()


def decode_event(payload: str) -> Event:
    data = json.loads(payload)
    return Event(
        data["id"],
        data["name"],
        data["user_id"],
        data["anonymous_id"],
        dt.datetime.fromisoformat(data["timestamp"]),
        data["properties"],
        data.get("context") or {},
        data.get("kind", "track"),
        data.get("aliases") or {},
    )


def _create_private(path: str) -> None:
    """Create the spool file readable by its owner only: it holds user ids and event properties.

    SQLite would create it with the umask's mode (often 0644); it gives its ``-wal`` and ``-shm``
    files the database file's mode, so those are private too.
    """
    # FileExistsError: it exists, or another process just made it. Any other failure (a folder not
    # writable) is left to sqlite3.connect, whose error check_spool reports as a ConfigurationError.
    with contextlib.suppress(OSError):
        os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))


def _connect(path: str) -> sqlite3.Connection:
    with fork_guard:
        return _open_connection(path)


def _open_connection(path: str) -> sqlite3.Connection:
    """Open and set up a connection; the caller holds ``fork_guard``.

    ``check_same_thread=False``: a ``Spool``'s connection is closed before a fork on the forking
    thread; every use is serialised by ``fork_guard``.
    """
    _create_private(path)
    connection = sqlite3.connect(path, timeout=5.0, isolation_level=None, check_same_thread=False)
    try:
        connection.execute("PRAGMA journal_mode=WAL")
        # NORMAL in WAL mode: a power cut may lose the last transactions, a process crash loses none.
        connection.execute("PRAGMA synchronous=NORMAL")
        # One write transaction: processes opening a file at once bring it up to date once. Closing
        # the connection on an error rolls it back.
        connection.execute("BEGIN IMMEDIATE")
        _migrate(connection)
        connection.execute("COMMIT")
    except BaseException:
        connection.close()
        raise
    return connection


def _migrate(connection: sqlite3.Connection) -> None:
    """Create the schema, or bring a file of an earlier version up to date (in a transaction).

    A file of a later version is refused, as version 1 refuses one of this version ("schema version 2,
    expected 1"): it may keep what this code would not read back.
    """
    version = connection.execute("PRAGMA user_version").fetchone()[0]
    if version not in (0, 1, _SCHEMA_VERSION):
        raise sqlite3.DatabaseError(f"schema version {version}, expected {_SCHEMA_VERSION}")
    columns = {row[1] for row in connection.execute("PRAGMA table_info(events)")}
    if columns and "batch_key" not in columns:  # version 1, which kept no keys: its rows go under new ones
        connection.execute("ALTER TABLE events ADD COLUMN batch_key TEXT")
        connection.execute("ALTER TABLE events ADD COLUMN batch_index INTEGER")
    for statement in _SCHEMA:
        connection.execute(statement)
    if version != _SCHEMA_VERSION:
        connection.execute(f"PRAGMA user_version={_SCHEMA_VERSION}")


#: Every open ``Spool`` of this process, for ``close_for_fork`` (changed under ``fork_guard``).
_spools: weakref.WeakSet[Spool] = weakref.WeakSet()


def close_for_fork() -> None:
    """Close every spool connection before the process forks; the caller holds ``fork_guard``.

    A child that inherits an open SQLite connection inherits SQLite's in-process lock bookkeeping
    too, but not the POSIX locks behind it: its own connection then takes no OS lock, and the parent,
    on closing its connection at exit, believes it is the file's last user and checkpoints and
    deletes the ``-wal`` file under the child, losing all the child spools afterwards. Closed here,
    each process opens a connection of its own after the fork (the parent on its next use). Closing
    commits nothing new: every transaction ended, since ``fork_guard`` is held.
    """
    for spool in list(_spools):
        spool._suspend()


def check_spool(path: str, *, create: bool = True) -> None:
    """Open the spool once at start-up: a clear :class:`ConfigurationError` if it cannot work.

    With ``create=False`` (``evmiddleware check``) a file not there yet is not created: its folder
    must only be writable, as ``configure()`` would create it there.
    """
    folder = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(folder):
        raise ConfigurationError(f"spool: folder {folder} does not exist")
    if not create and not os.path.lexists(path):
        if not os.access(folder, os.W_OK | os.X_OK):
            raise ConfigurationError(f"spool: folder {folder} is not writable")
        return
    try:
        connection = _connect(path)
        try:
            result = connection.execute("PRAGMA quick_check").fetchone()[0]
        finally:
            connection.close()
    except sqlite3.Error as exc:
        raise ConfigurationError(f"spool: {path} cannot be used as a spool: {exc}") from None
    if result != "ok":
        raise ConfigurationError(f"spool: {path} is corrupt ({result}); move it away or purge it")


class Spool:
    """The dispatcher thread's handle on the spool file. Degrades to memory-only on write errors."""

    def __init__(
        self, path: str, *, lease_seconds: float = 30.0, clock: Callable[[], float] = time.time
    ) -> None:
        self.path = path
        self.owner = f"{socket.gethostname()}:{os.getpid()}:{id(self):x}"
        self.lease_seconds = lease_seconds
        self._clock = clock
        self.errors = 0
        self._last_renewal = 0.0
        #: Closed before a fork (``close_for_fork``): open it again on the next use.
        self._reopen = False
        with fork_guard:
            self._connection: sqlite3.Connection | None = _open_connection(path)
            _spools.add(self)

    @property
    def working(self) -> bool:
        return self._connection is not None or self._reopen

    def _suspend(self) -> None:
        """``close_for_fork``, for this spool (``fork_guard`` held)."""
        if self._connection is not None:
            with contextlib.suppress(sqlite3.Error):
                self._connection.close()
            self._connection = None
            self._reopen = True

    def _open(self) -> sqlite3.Connection | None:
        """The connection, opened again if a fork closed it; ``None`` once failed (``fork_guard`` held)."""
        if self._connection is None and self._reopen:
            self._reopen = False
            try:
                self._connection = _open_connection(self.path)
            except sqlite3.Error as exc:
                self._fail("open again", exc)
        return self._connection

    def _fail(self, action: str, exc: sqlite3.Error) -> None:
        """A full disk or a lost file: keep going in memory, loudly."""
        self.errors += 1
        logger.error(
            "evmiddleware: the spool %s failed to %s (%s); continuing without it, in memory only",
            self.path,
            action,
            exc,
        )
        if self._connection is not None:
            with contextlib.suppress(sqlite3.Error):
                self._connection.close()
        self._connection = None

    def add(self, provider: str, events: Sequence[Event]) -> list[int | None]:
        """Persist ``events`` leased to this process; their row ids (``None`` when not spooled).

        Raises (``ValueError``, ``TypeError``) when an event cannot be written, e.g. a lone surrogate
        in a string: then nothing is stored, and the caller finds and counts the event at fault.
        """
        if not self.working or not events:
            return [None] * len(events)
        now = self._clock()
        lease = now + self.lease_seconds
        payloads = [encode_event(event) for event in events]
        with fork_guard:
            connection = self._open()
            if connection is None:
                return [None] * len(events)
            try:
                connection.execute("BEGIN IMMEDIATE")
                ids: list[int | None] = []
                for event, payload in zip(events, payloads, strict=True):
                    cursor = connection.execute(
                        "INSERT INTO events (provider, event_id, payload, created, lease_owner, lease_until)"
                        " VALUES (?, ?, ?, ?, ?, ?)",
                        (provider, event.id, payload, now, self.owner, lease),
                    )
                    ids.append(cursor.lastrowid)
                connection.execute("COMMIT")
            except sqlite3.Error as exc:
                self._rollback()
                self._fail("store events", exc)
                return [None] * len(events)
        return ids

    def claim(
        self,
        provider: str,
        limit: int,
        on_unreadable: Callable[[int], None] | None = None,
        *,
        largest: int | None = None,
    ) -> list[tuple[int, Event, str | None]]:
        """Take over up to ``limit`` rows of ``provider`` that no live process holds, oldest first:
        row id, event, and the idempotency key of the request it was sent in (``set_key``) or ``None``.

        The rows of a request sent before come together and whole, or not at all (see ``_claimable``).
        A row that cannot be read back (corrupt JSON) is deleted and reported to ``on_unreadable``
        (how many), so that the caller counts it as dropped rather than losing it silently.
        """
        if not self.working or limit <= 0:
            return []
        now = self._clock()
        with fork_guard:
            connection = self._open()
            if connection is None:
                return []
            try:
                connection.execute("BEGIN IMMEDIATE")
                rows = _claimable(connection, provider, now, limit, largest)
                connection.executemany(
                    "UPDATE events SET lease_owner = ?, lease_until = ? WHERE rowid = ?",
                    [(self.owner, now + self.lease_seconds, rowid) for rowid, _, _ in rows],
                )
                connection.execute("COMMIT")
            except sqlite3.Error as exc:
                self._rollback()
                limited.log(logging.ERROR, "spool:claim", "evmiddleware: reading the spool failed: %s", exc)
                return []
        claimed = []
        unreadable = []
        for rowid, payload, key in rows:
            try:
                claimed.append((rowid, decode_event(payload), key))
            except (ValueError, KeyError, TypeError):
                limited.log(
                    logging.ERROR, "spool:decode", "evmiddleware: unreadable spool row %d removed", rowid
                )
                unreadable.append(rowid)
        if unreadable:
            self.done(unreadable)
            if on_unreadable is not None:
                on_unreadable(len(unreadable))
        return claimed

    def set_key(self, rowids: Iterable[int | None], key: str) -> None:
        """These rows leave in one request, in this order, under idempotency key ``key``: kept with them,
        so that a later process sends that request again as it was if its answer never came."""
        # One statement per run of consecutive rows, and a batch's rows mostly are: 1,000 rows take
        # 1.1 ms so, 2.8 ms one by one.
        runs: list[list[Any]] = []  # key, place less row id, first and last row id
        for index, rowid in enumerate(rowids):
            if rowid is None:
                continue
            if runs and runs[-1][3] == rowid - 1 and runs[-1][1] == index - rowid:
                runs[-1][3] = rowid
            else:
                runs.append([key, index - rowid, rowid, rowid])
        self._write(
            "UPDATE events SET batch_key = ?, batch_index = rowid + ? WHERE rowid BETWEEN ? AND ?",
            [tuple(run) for run in runs],
            "keep a batch's key",
        )

    def done(self, rowids: Iterable[int | None]) -> None:
        """The provider accepted or refused these for good."""
        self._write("DELETE FROM events WHERE rowid = ?", [(r,) for r in rowids if r is not None], "delete")

    def release(self, rowids: Iterable[int | None]) -> None:
        """Not sent at a graceful stop: free for the next process at once."""
        self._write(
            "UPDATE events SET lease_owner = NULL, lease_until = 0 WHERE rowid = ?",
            [(r,) for r in rowids if r is not None],
            "release",
        )

    def renew(self) -> None:
        """Extend this process's leases; called often enough that they never lapse while alive."""
        now = self._clock()
        if now - self._last_renewal < self.lease_seconds / 3:
            return
        self._last_renewal = now
        self._write(
            "UPDATE events SET lease_until = ? WHERE lease_owner = ?",
            [(now + self.lease_seconds, self.owner)],
            "renew leases",
        )

    def _write(self, sql: str, rows: list[tuple[object, ...]], action: str) -> None:
        if not self.working or not rows:
            return
        with fork_guard:
            connection = self._open()
            if connection is None:
                return
            try:
                connection.execute("BEGIN IMMEDIATE")
                connection.executemany(sql, rows)
                connection.execute("COMMIT")
            except sqlite3.Error as exc:
                self._rollback()
                self.errors += 1
                limited.log(
                    logging.ERROR, f"spool:{action}", "evmiddleware: the spool failed to %s: %s", action, exc
                )

    def _rollback(self) -> None:
        if self._connection is not None:
            with contextlib.suppress(sqlite3.Error):
                self._connection.execute("ROLLBACK")

    def close(self) -> None:
        with fork_guard:
            self._reopen = False
            _spools.discard(self)
            if self._connection is not None:
                self._connection.close()
                self._connection = None


_Row = tuple[int, str, str | None]  # row id, payload, batch key


def _claimable(
    connection: sqlite3.Connection, provider: str, now: float, limit: int, largest: int | None
) -> list[_Row]:
    """The rows ``Spool.claim`` takes (inside its transaction), in the order they are to be sent.

    The rows of a request sent before (one key) come whole, one after the other in its order, or not
    at all, even where other rows lie between them: the next process sends them again as exactly that
    request, under its key. FloKit answers a key it knows with the original result and stores
    nothing: part of the request sent under it, then the rest, would lose the rest; other events
    added to it would be lost. A request of more than ``largest`` events, which the caller can never
    take at once, loses its key for good: its rows go as ordinary ones, under new keys (FloKit may
    store those of them it stored before twice, but loses none). The first request is taken whole
    even where it passes ``limit``.
    """
    window: list[_Row] = connection.execute(
        "SELECT rowid, payload, batch_key FROM events WHERE provider = ? AND lease_until < ?"
        " ORDER BY rowid LIMIT ?",
        (provider, now, limit),
    ).fetchall()
    keys = list({key for _, _, key in window if key is not None})
    if not keys:
        return window
    requests: dict[str, list[_Row]] = {key: [] for key in keys}
    held: set[str] = set()
    for start in range(0, len(keys), _CHUNK):
        chunk = keys[start : start + _CHUNK]
        for rowid, payload, key, lease_until in connection.execute(
            f"SELECT rowid, payload, batch_key, lease_until FROM events WHERE batch_key IN"
            f" ({','.join('?' * len(chunk))}) ORDER BY batch_index",
            chunk,
        ):
            requests[key].append((rowid, payload, key))
            # A live process holds part of it (not seen so far: a request's rows are leased together).
            if lease_until >= now:
                held.add(key)
    too_large = {key for key, rows in requests.items() if largest is not None and len(rows) > largest}
    # Those rows go as ordinary ones from now on, whoever takes them.
    connection.executemany(
        "UPDATE events SET batch_key = NULL, batch_index = NULL WHERE batch_key = ?",
        [(key,) for key in too_large],
    )
    taken: list[_Row] = []
    unit: list[_Row]
    passed = held  # requests taken already, or held
    for rowid, payload, key in window:
        if key is None or key in too_large:
            unit = [(rowid, payload, None)]
        elif key in passed:
            continue
        else:
            passed.add(key)
            unit = requests[key]
        if taken and len(taken) + len(unit) > limit:
            break  # a request that does not fit yet waits for room, and what came after it with it
        # The first one is taken even past ``limit`` (by less than one request, at most ``largest``):
        # under steady traffic the room rarely reaches a whole request, and it, and every row after
        # it, would wait in the spool for as long as the traffic lasts.
        taken.extend(unit)
    return taken


def _check_existing(path: str) -> None:
    """For the ``spool`` commands: a mistyped path is an error, never a new empty spool."""
    if not os.path.exists(path):
        raise ConfigurationError(f"spool: {path} does not exist")
    check_spool(path)


def summarize(path: str) -> dict[str, dict[str, float | int]]:
    """Per provider: rows, rows leased by a live process now, age of the oldest row in seconds."""
    _check_existing(path)
    connection = _connect(path)
    try:
        now = time.time()
        rows = connection.execute(
            "SELECT provider, COUNT(*), SUM(lease_until >= ?), MIN(created) FROM events GROUP BY provider",
            (now,),
        ).fetchall()
    finally:
        connection.close()
    return {
        provider: {"events": count, "leased": int(leased or 0), "oldest_seconds": round(now - oldest, 1)}
        for provider, count, leased, oldest in rows
    }


def purge(path: str, provider: str | None = None) -> int:
    """Delete spooled events (of one provider, or all); returns how many."""
    _check_existing(path)
    connection = _connect(path)
    try:
        if provider is None:
            cursor = connection.execute("DELETE FROM events")
        else:
            cursor = connection.execute("DELETE FROM events WHERE provider = ?", (provider,))
        return cursor.rowcount
    finally:
        connection.close()


def release_all(path: str) -> int:
    """Free every lease, so the next process sends the rows at once (``spool retry``)."""
    _check_existing(path)
    connection = _connect(path)
    try:
        return connection.execute("UPDATE events SET lease_owner = NULL, lease_until = 0").rowcount
    finally:
        connection.close()
