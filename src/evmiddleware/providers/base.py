"""The provider interface: what the dispatcher needs to know to deliver events anywhere.

A provider turns one event into its wire form (``encode``, on the dispatcher thread), says how events
may be grouped into one request (``group_key``, e.g. Klaviyo's one profile per request), how big a
request may be (``limits``) and how fast requests may leave (``limits.rate``); ``send`` delivers one
batch and says what became of each event. HTTP providers implement ``build_request`` and, where the
answer says more than its status, ``interpret``; local sinks implement ``send`` directly.
"""

from __future__ import annotations

import abc
import dataclasses
import datetime as dt
import email.utils
import json
import math
from collections.abc import Mapping, Sequence
from typing import Any, ClassVar, Literal, NamedTuple

import httpx

from .._json import dumps
from .._log import redact
from ..events import Event
from ..http11 import HttpClient
from ..normalize import JSONValue

__all__ = [
    "Batch",
    "Encoded",
    "HttpProvider",
    "HttpRequest",
    "Limits",
    "Provider",
    "SendResult",
    "SkipEvent",
    "dumps",
    "iso_utc",
    "parse_retry_after",
    "payload_properties",
    "put_ids",
]


_UTC = dt.timezone.utc


def iso_utc(timestamp: dt.datetime) -> str:
    """ISO 8601 in UTC with a ``Z`` and milliseconds: accepted by every provider that takes strings."""
    global _second, _last_formatted
    last, text = _last_formatted
    if timestamp is last:  # events stamped within one millisecond share their datetime (``stamp``)
        return text
    given = timestamp
    if timestamp.tzinfo is not _UTC:  # events carry this one already; anything else is converted
        timestamp = timestamp.astimezone(_UTC)
    # Events come in bursts within the same second: format it once, then add the milliseconds from
    # a table. Two comparisons find the second (0.25 µs an event; a tuple of its fields as the key
    # took 0.45, formatting every field 1.1).
    start, end, prefix = _second
    if not start <= timestamp < end:
        start = t = timestamp.replace(microsecond=0)
        prefix = "%04d-%02d-%02dT%02d:%02d:%02d" % (t.year, t.month, t.day, t.hour, t.minute, t.second)  # noqa: UP031
        end = start + _ONE_SECOND if start.year < dt.MAXYEAR else start  # the last year: never cached
        _second = (start, end, prefix)  # one tuple: a reader sees the old or the new
    text = prefix + _MILLISECONDS[timestamp.microsecond // 1000]
    _last_formatted = (given, text)
    return text


_ONE_SECOND = dt.timedelta(seconds=1)
_second: tuple[dt.datetime, dt.datetime, str] = (
    dt.datetime.max.replace(tzinfo=_UTC),
    dt.datetime.min.replace(tzinfo=_UTC),
    "",
)
_last_formatted: tuple[dt.datetime | None, str] = (None, "")
_MILLISECONDS = tuple(f".{ms:03d}Z" for ms in range(1000))


def put_ids(body: dict[str, Any], event: Event, user_key: str, anonymous_key: str) -> None:
    """Add the event's ids under the provider's field names. An absent id is left out, never sent as
    ``null``: the schemas type the ids as strings."""
    if event.user_id:
        body[user_key] = event.user_id
    if event.anonymous_id:
        body[anonymous_key] = event.anonymous_id


def payload_properties(event: Event) -> dict[str, JSONValue]:
    """The properties a provider sends: the event's own, plus request facts under ``context``.

    The automatic request event carries its facts as properties already; an event tracked by hand
    inside a request gets the route it happened on, unless it set ``context`` itself.
    """
    if not event.context or "context" in event.properties:
        return event.properties
    return {**event.properties, "context": dict(event.context)}


class SkipEvent(Exception):
    """Raised by ``encode``: this provider does not take this event (counted under ``reason``)."""

    def __init__(self, reason: str, detail: str = "") -> None:
        super().__init__(detail or reason)
        self.reason = reason


@dataclasses.dataclass(frozen=True)
class Limits:
    """A provider's published limits; the dispatcher never exceeds them.

    ``rate`` is a list of (requests, seconds) windows, each meaning "never more than N requests in
    any W-second window, measured from when requests leave". ``envelope_bytes`` bounds what the
    request body adds around the events, so batches are sized without encoding them twice.
    """

    max_events: int
    max_bytes: int
    rate: tuple[tuple[int, float], ...] = ()
    max_in_flight: int = 2
    envelope_bytes: int = 64


class Encoded(NamedTuple):
    """One event of a batch, with its wire form (encoded once and reused on every retry).

    ``data`` is empty when the lane encoded the event together with others (providers that define
    :meth:`Provider.wire`): then only :attr:`Batch.data` holds it. A named tuple, not a frozen
    dataclass: the dispatcher builds one per event, and a frozen dataclass's ``__init__`` costs 1.0 µs
    where a tuple costs 0.3 µs. ``seq`` is the event's number in its lane, in the order events were
    opened: what ``flush`` uses to tell the events queued before it from later ones.
    """

    event: Event
    data: bytes
    spool_id: int | None = None
    seq: int = -1


@dataclasses.dataclass(frozen=True)
class Batch:
    """Events that leave in one request. ``key`` is the idempotency key, the same on every retry.

    ``data`` is the events' wire forms in order, joined by commas: what a provider puts between the
    brackets of its list (or, for a batch of one, the event's own JSON).
    """

    items: Sequence[Encoded]
    group: str | None
    key: str
    data: bytes = dataclasses.field(repr=False)


@dataclasses.dataclass(frozen=True)
class SendResult:
    """What became of a batch.

    ``ok``: delivered, except the indexes in ``rejected`` (index → reason), which the provider
    refused for good. ``retry``: nothing was stored, try again (after ``retry_after`` seconds when the
    provider said so). ``rejected``: the whole batch was refused for good (``reason``). ``auth``
    marks a credentials problem so it is logged once with a hint.
    """

    outcome: Literal["ok", "retry", "rejected"]
    reason: str = ""
    rejected: Mapping[int, str] = dataclasses.field(default_factory=dict)
    retry_after: float | None = None
    auth: bool = False


OK = SendResult("ok")


@dataclasses.dataclass(frozen=True)
class HttpRequest:
    method: str
    url: str
    # Credentials travel in the headers (and Klaviyo's in the query): never in a repr.
    headers: Mapping[str, str] = dataclasses.field(repr=False)
    content: bytes = dataclasses.field(repr=False)
    params: Mapping[str, str] = dataclasses.field(default_factory=dict, repr=False)


class Provider(abc.ABC):
    """Base class of every destination, remote or local."""

    name: ClassVar[str]
    #: Setting names this provider reads, without its prefix (``api_key`` ↔ ``flokit_api_key``).
    options: ClassVar[tuple[str, ...]] = ()
    limits: Limits

    @classmethod
    def from_options(cls, options: Mapping[str, Any]) -> Provider | None:
        """Build from settings, or ``None`` when the provider is not configured (no key).

        Raises :class:`~evmiddleware.ConfigurationError` for settings that cannot work.
        """
        raise NotImplementedError(f"{cls.__name__} is configured only by passing an instance")

    def encode(self, event: Event) -> bytes:
        """The event's wire form; raise :class:`SkipEvent` when this provider does not take it.

        Providers define either this or :meth:`wire`.
        """
        return dumps(self.wire(event))

    def wire(self, event: Event) -> dict[str, Any]:
        """The event as the JSON object a batch request lists; raise :class:`SkipEvent` as ``encode``.

        A provider that defines it (and no ``group_key``) has each pull of events encoded in one
        orjson call, 0.3 µs an event, where one call per event costs 0.9 µs plus the copy that keeps
        its result small; ``Encoded.data`` is then empty and :attr:`Batch.data` holds the events.
        """
        raise NotImplementedError(f"{type(self).__name__} defines neither encode nor wire")

    def group_key(self, event: Event) -> str | None:
        """Events with different keys never share a request."""
        return None

    @abc.abstractmethod
    async def send(self, batch: Batch, client: HttpClient) -> SendResult:
        """Deliver one batch. Network errors may propagate: the dispatcher retries them."""

    def secrets(self) -> tuple[str, ...]:
        """Values that must never appear in a log line or a reason."""
        return ()

    def describe(self) -> str:
        """One line for ``evmiddleware check``: where events go. Never includes a secret."""
        return self.name

    async def aclose(self) -> None:
        """Release what ``send`` opened (files); called once when the dispatcher stops."""

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.describe()}>"


class HttpProvider(Provider):
    """A provider reached over HTTP: build the request, send it, read the answer."""

    #: Where the provider's own docs say credentials are checked; used in the 401/403 hint.
    key_setting: ClassVar[str] = ""

    @abc.abstractmethod
    def build_request(self, batch: Batch) -> HttpRequest:
        """The request carrying ``batch``; must be the same bytes on every retry."""

    async def send(self, batch: Batch, client: HttpClient) -> SendResult:
        request = self.build_request(batch)
        response = await client.request(
            request.method,
            request.url,
            headers=request.headers,
            content=request.content,
            params=request.params or None,
        )
        return self.interpret(response, batch)

    def interpret(self, response: httpx.Response, batch: Batch) -> SendResult:
        """Default reading of an answer by status; providers with per-event answers extend it."""
        status = response.status_code
        if 200 <= status < 300:
            failure = _error_in_body(response)
            if failure is not None:
                # Nothing says what was stored: refused for good and counted, rather than called sent.
                return SendResult("rejected", reason=f"error_body: {redact(failure, self.secrets())[:300]}")
            return OK
        if status in (408, 429) or status >= 500:
            return SendResult(
                "retry",
                reason=f"http_{status}",
                retry_after=parse_retry_after(response.headers.get("retry-after")),
            )
        detail = self.error_text(response)
        if status in (401, 403):
            hint = f"; check {self.key_setting}" if self.key_setting else ""
            return SendResult("rejected", reason=f"http_{status}: {detail}{hint}", auth=True)
        return SendResult("rejected", reason=f"http_{status}: {detail}")

    def error_text(self, response: httpx.Response, limit: int = 300) -> str:
        """The provider's error message, with every secret removed, then shortened.

        Redacted before the cut: a key that straddles the cut would otherwise leave its prefix.
        """
        return redact(response.text.strip() or response.reason_phrase, self.secrets())[:limit].strip()


def _error_in_body(response: httpx.Response) -> str | None:
    """The error a 2xx answer's JSON body reports (``success: false``, ``error``, ``status: error``),
    or ``None``. Flameup and Flywheel document ``success`` as whether the event was tracked. A list of
    ``errors`` is not one: FloKit's per-event answer has it, and FloKit reads it itself."""
    content = response.content
    if not content or content.lstrip()[:1] != b"{":
        return None
    try:
        doc = json.loads(content)
    except ValueError:  # not JSON (UnicodeDecodeError included): the status is all there is
        return None
    if not isinstance(doc, dict):
        return None
    failed = (
        doc.get("success") is False
        or bool(doc.get("error"))
        or doc.get("status") in ("error", "failed", "failure")
    )
    return response.text.strip() if failed else None


def parse_retry_after(value: str | None, now: dt.datetime | None = None) -> float | None:
    """Seconds to wait from a ``Retry-After`` header: delta seconds or an HTTP date (RFC 9110)."""
    if not value:
        return None
    value = value.strip()
    try:
        seconds = float(value)
    except ValueError:
        pass
    else:
        return max(0.0, seconds) if math.isfinite(seconds) else None
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=dt.timezone.utc)
    current = now or dt.datetime.now(dt.timezone.utc)
    return max(0.0, (when - current).total_seconds())
