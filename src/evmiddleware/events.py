"""The event record and the one function that builds (and validates) it."""

from __future__ import annotations

import datetime as dt
import itertools
import math
import os
import re
import secrets
import time
from collections.abc import Iterator, Mapping
from typing import Any, NamedTuple

from .errors import EventError
from .normalize import DropCallback, JSONValue, encodes_as_utf8, normalize_properties

__all__ = ["Event", "build_event", "id_pool", "make_event", "new_event_id", "refill_ids", "request_event"]

MAX_NAME_LENGTH = 255
MAX_ID_LENGTH = 255

_UTC = dt.timezone.utc
_EMPTY: Mapping[str, Any] = {}


class Event(NamedTuple):
    """One analytics event. Immutable: change one with ``event._replace(name=...)``.

    ``id`` is a uuid4 string; providers that deduplicate (FloKit, Flywheel, Klaviyo) receive it as
    their idempotency or unique id, so a retried batch is never counted twice. ``timestamp`` is always
    timezone-aware UTC. ``kind`` is ``"track"`` or ``"identify"``. ``context`` holds request facts
    (route, path, method) for events tracked inside a request. ``aliases`` holds other systems' ids
    for the same visitor, read from their browser cookies (``{"klaviyo_exchange_id": "..."}``, sent
    to Klaviyo as ``_kx``).
    """

    id: str
    name: str
    user_id: str | None
    anonymous_id: str | None
    timestamp: dt.datetime
    properties: dict[str, JSONValue]
    context: Mapping[str, JSONValue]
    kind: str = "track"
    aliases: Mapping[str, str] = _EMPTY

    def as_dict(self) -> dict[str, JSONValue]:
        """The provider-neutral JSON form, as the local sinks write it."""
        return {
            "id": self.id,
            "kind": self.kind,
            "name": self.name,
            "user_id": self.user_id,
            "anonymous_id": self.anonymous_id,
            "timestamp": self.timestamp.isoformat(),
            "properties": self.properties,
            "context": dict(self.context),
        }


# The OS's random source, not the ``random`` module: an app that calls ``random.seed(N)`` before
# importing us would otherwise draw the same prefix and counter in every process seeded alike, and
# send the same event ids and batch keys (FloKit answers a repeated Idempotency-Key "replayed" and
# stores nothing). Drawn only in ``_reseed``, so the cost (a system call) is not per id.
_randbits = secrets.randbits
# uuid4's version (4) and variant (10) bits, within the first 80 bits of an id.
_UUID4_CLEAR = ~((0xF << 28) | (0x3 << 14)) & ((1 << 80) - 1)
_UUID4_SET = (0x4 << 28) | (0x2 << 14)
_ids: Iterator[str] = iter(())


#: Ids made ahead of time by the dispatcher thread (``refill_ids``), popped by ``track()``: a
#: ``list.pop`` costs the caller 0.05 µs where making one costs 0.25 (0.6 with cold caches).
id_pool: list[str] = []
_POOL_SIZE = 1024


def refill_ids() -> None:
    """Top up :data:`id_pool` once it is half empty (any thread; ``extend`` and ``pop`` are atomic)."""
    missing = _POOL_SIZE - len(id_pool)
    if missing >= _POOL_SIZE // 2:
        id_pool.extend(itertools.islice(_ids, missing))


def _reseed() -> None:
    """A new random prefix and counter start: at import and in every forked child (whose pool of
    ids, made by the parent, is emptied: a child must never send its parent's ids)."""
    global _ids
    id_pool.clear()
    h = "%020x" % ((_randbits(80) & _UUID4_CLEAR) | _UUID4_SET)
    prefix = f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-"
    # The counter runs from 2**47 up, so it is always written in 12 hex digits (for 2**46 events):
    # the 9 of ``start >> 12``, made once every 4,096 ids, then 3 from a table. One C-level step
    # and one concatenation per id (``next(_ids)``): 0.12 µs, where writing each with ``hex`` cost
    # 0.25 and 128 random bits formatted as a uuid4 0.9.
    start = (1 << 47) | _randbits(46)
    block = start >> 12
    heads = map(f"{prefix}{{:09x}}".format, itertools.count(block + 1))
    _ids = itertools.chain(
        map(f"{prefix}{block:09x}".__add__, _LAST_DIGITS[start & 0xFFF :]),
        itertools.chain.from_iterable(map(_ids_after, heads)),
    )


def _ids_after(head: str) -> Iterator[str]:
    return map(head.__add__, _LAST_DIGITS)


_LAST_DIGITS = tuple(f"{n:03x}" for n in range(4096))
_reseed()
# Registered at import, like the ``random`` module's own reseeding: a child forked before any
# pipeline exists (gunicorn --preload) must not continue its parent's sequence of ids.
if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_reseed)


def new_event_id() -> str:
    """A uuid4-shaped id: 74 random bits drawn per process (from the OS), then a 48-bit counter.

    Event ids need uniqueness, not unpredictability: the random prefix (drawn again in every forked
    child, and never from the seedable ``random`` module) keeps processes apart, the counter keeps
    this process's ids apart. Hot paths write ``next(_ids)`` inline: one Python call less.
    """
    return next(_ids)


_known_names: dict[str, str] = {}


def _clean_name(name: object) -> str:
    # Apps use a few dozen names over and over: remember the clean form of each (bounded).
    known = _known_names.get(name) if type(name) is str else None
    if known is not None:
        return known
    clean = _check_name(name)
    if len(_known_names) < 1024:
        _known_names[name] = clean  # type: ignore[index]
    return clean


def _check_name(name: object) -> str:
    if not isinstance(name, str):
        raise EventError("invalid_name", f"event name must be a string, not {type(name).__name__}")
    name = name.strip()
    if not name:
        raise EventError("invalid_name", "event name is empty")
    if len(name) > MAX_NAME_LENGTH:
        raise EventError("invalid_name", f"event name is {len(name)} characters, over {MAX_NAME_LENGTH}")
    if not (name.isascii() or encodes_as_utf8(name)):  # a lone surrogate: no provider could be sent it
        raise EventError("invalid_name", f"event name {name!r} cannot be written as UTF-8")
    return name


def clean_id(value: object, field: str) -> str | None:
    """User and anonymous ids: strings (ints are accepted and converted), at most 255 characters."""
    if value is None:
        return None
    # The common case, already clean: strip() hands back the very object when it has nothing to
    # strip. ``track()`` and ``request_event`` write this same test inline.
    if type(value) is str and 0 < len(value) <= MAX_ID_LENGTH and value.strip() is value:
        return value
    if isinstance(value, int) and not isinstance(value, bool):
        value = str(value)
    if not isinstance(value, str):
        raise EventError("invalid_id", f"{field} must be a string, not {type(value).__name__}")
    value = value.strip()
    if len(value) > MAX_ID_LENGTH:
        raise EventError("invalid_id", f"{field} is over {MAX_ID_LENGTH} characters")
    return value or None


# ISO 8601 dates and times as Python 3.11's fromisoformat reads them, for 3.10's, which reads only its
# own output (no "Z", no "+0000", no 3-digit fractions): extended or basic form, not mixed.
_ISO_8601 = re.compile(
    r"(?P<y>[0-9]{4})-(?P<mo>[0-9]{2})-(?P<d>[0-9]{2})"
    r"(?:[Tt ](?P<h>[0-9]{2})(?::(?P<mi>[0-9]{2})(?::(?P<s>[0-9]{2})(?:[.,](?P<f>[0-9]+))?)?)?)?"
    r"|(?P<by>[0-9]{4})(?P<bmo>[0-9]{2})(?P<bd>[0-9]{2})"
    r"(?:[Tt](?P<bh>[0-9]{2})(?:(?P<bmi>[0-9]{2})(?:(?P<bs>[0-9]{2})(?:[.,](?P<bf>[0-9]+))?)?)?)?"
)
_ISO_OFFSET = re.compile(
    r"\s*(?:(?P<z>[Zz])|(?P<sign>[+-])(?P<oh>[0-9]{2})(?::?(?P<om>[0-9]{2})(?::?(?P<os>[0-9]{2}))?)?)?"
)


def _parse_iso(text: str) -> dt.datetime:
    """``text`` as a datetime, alike on every Python we support (fromisoformat first: C, and complete
    from 3.11 on)."""
    try:
        return dt.datetime.fromisoformat(text)
    except ValueError:
        pass
    text = text.strip()
    date = _ISO_8601.match(text)
    offset = _ISO_OFFSET.fullmatch(text, date.end()) if date is not None else None
    if date is None or offset is None:
        raise ValueError(f"not an ISO 8601 time: {text!r}")
    basic = "b" if date["by"] else ""
    fields = [date[basic + name] for name in ("y", "mo", "d", "h", "mi", "s")]
    year, month, day, hour, minute, second = (int(field or 0) for field in fields)
    micro = int((date[basic + "f"] or "0")[:6].ljust(6, "0"))
    tz = None
    if offset["z"]:
        tz = _UTC
    elif offset["sign"]:
        delta = dt.timedelta(
            hours=int(offset["oh"]), minutes=int(offset["om"] or 0), seconds=int(offset["os"] or 0)
        )
        tz = dt.timezone(-delta if offset["sign"] == "-" else delta)
    return dt.datetime(year, month, day, hour, minute, second, micro, tz)


def _clean_timestamp(value: object) -> dt.datetime:
    """Naive datetimes are taken as UTC (documented); ISO 8601 strings and epoch seconds are accepted."""
    if value is None:
        return dt.datetime.now(_UTC)
    original = value
    try:
        if isinstance(value, str):
            value = _parse_iso(value)
        elif isinstance(value, (int, float)) and not isinstance(value, bool):
            value = dt.datetime.fromtimestamp(value, _UTC)
        if not isinstance(value, dt.datetime):
            raise EventError("invalid_timestamp", f"timestamp must be a datetime, not {type(value).__name__}")
        if value.tzinfo is None:
            return value.replace(tzinfo=_UTC)
        # Overflows at the ends of datetime's range: 0001-01-01 00:00+01:00 is in year 0 in UTC.
        return value.astimezone(_UTC)
    except (ValueError, OverflowError, OSError) as exc:
        raise EventError("invalid_timestamp", f"timestamp {original!r} is not a valid time") from exc


def make_event(
    name: object,
    properties: Mapping[str, Any] | None,
    *,
    user_id: object,
    anonymous_id: object,
    timestamp: object = None,
    context: Mapping[str, JSONValue] = _EMPTY,
    kind: str = "track",
    aliases: Mapping[str, str] = _EMPTY,
    max_depth: int,
    max_bytes: int,
    on_drop: DropCallback,
) -> Event:
    """Validate and normalise everything once; raises :class:`EventError` for a refused event."""
    return build_event(
        name,
        properties,
        user_id,
        anonymous_id,
        timestamp,
        context,
        kind,
        aliases,
        max_depth,
        max_bytes,
        on_drop,
    )


def build_event(
    name: object,
    properties: Mapping[str, Any] | None,
    user_id: object,
    anonymous_id: object,
    timestamp: object,
    context: Mapping[str, JSONValue],
    kind: str,
    aliases: Mapping[str, str],
    max_depth: int,
    max_bytes: int,
    on_drop: DropCallback,
    /,
) -> Event:
    """:func:`make_event` with positional arguments: matching eleven keyword arguments costs 5 % of
    a call. ``track()`` takes it for anything but its common case (see ``api.track``)."""
    # tuple.__new__ skips the generated ``Event.__new__`` (keyword handling): half the cost.
    return _new_tuple(
        Event,
        (
            next(_ids),
            _clean_name(name),
            clean_id(user_id, "user_id"),
            clean_id(anonymous_id, "anonymous_id"),
            stamp(_time()) if timestamp is None else _clean_timestamp(timestamp),
            normalize_properties(properties, max_depth, max_bytes, on_drop),
            context,
            kind,
            aliases,
        ),
    )


_new_tuple = tuple.__new__


def stamp(at: float) -> dt.datetime:
    """``at``, a ``time.time()``, as the aware UTC datetime of its millisecond: every event stamped
    "now" is, so events tracked within one millisecond share one datetime object.

    Providers store milliseconds at most (every wire form is cut to them), and a burst tracks dozens
    of events a millisecond: building each one's datetime, and formatting it for the wire
    (``iso_utc`` knows the last one it formatted), cost 0.5 µs an event of the dispatcher's ~3.
    """
    global _stamped
    # Rounded to the microsecond first, as ``fromtimestamp`` rounds: a ``time.time()`` meant as .001 s
    # is stored as 0.000999..., which a plain cut would make .000. Floored, not cut toward zero: a
    # time before 1970 (a test's frozen clock) belongs to the millisecond below it.
    ms = _floor(at * 1000.0 + 0.0005)
    last, when = _stamped
    if ms != last:
        when = _EPOCH + ms * _ONE_MS  # exact in every year, where ms / 1000 through a float is not
        _stamped = (ms, when)  # one tuple: a reader on another thread sees the old or the new
    return when


_EPOCH = dt.datetime(1970, 1, 1, tzinfo=_UTC)
_ONE_MS = dt.timedelta(milliseconds=1)
_floor = math.floor
_stamped: tuple[int, dt.datetime] = (0, _EPOCH)
_time = time.time


def request_event(
    name: str,
    properties: dict[str, JSONValue],
    user_id: object,
    anonymous_id: str | None,
    at: float,
    aliases: Mapping[str, str],
    max_depth: int,
    max_bytes: int,
    on_drop: DropCallback,
) -> Event:
    """The capture layer's automatic event, built on the dispatcher thread from what the request
    thread queued (``at`` is its ``time.time()``).

    ``properties`` is the capture layer's own dict of str, int, float and bool values and ``name`` a
    name it validated at start-up, so the common case needs only the user id (an app's resolver set
    it) and a cheap upper bound of the size checked; anything else takes :func:`make_event`.
    """
    timestamp = stamp(at)
    chars = 32 * len(properties)
    for value in properties.values():
        if type(value) is str:
            chars += len(value)
    # At most 6 bytes of JSON a character (a control character is written \u0001).
    if chars * 6 <= max_bytes and (
        user_id is None
        # clean_id's test of a clean id: anything else (padded, too long, not a str) goes through it
        or (type(user_id) is str and 0 < len(user_id) <= MAX_ID_LENGTH and user_id.strip() is user_id)
    ):
        event_id = next(_ids)  # new_event_id(), inline
        event = (event_id, name, user_id, anonymous_id, timestamp, properties, _EMPTY, "track", aliases)
        return _new_tuple(Event, event)
    return make_event(
        name,
        properties,
        user_id=user_id,
        anonymous_id=anonymous_id,
        timestamp=timestamp,
        aliases=aliases,
        max_depth=max_depth,
        max_bytes=max_bytes,
        on_drop=on_drop,
    )


_fromtimestamp = dt.datetime.fromtimestamp
