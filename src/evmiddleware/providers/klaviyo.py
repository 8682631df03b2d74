"""Klaviyo client API: one request per profile, up to 1,000 of its events, to
``POST {base}/client/event-bulk-create/?company_id=PUBLIC_KEY``; 202 on success.

Spec: shared/providers/004 (Klaviyo — Bulk create client events). Beyond the file, from Klaviyo's
documentation: media type ``application/vnd.api+json``; ``metric`` and ``properties`` required on
every event; at most 5 MB per body, 400 properties, nesting depth 10, 100 kB per string, metric names
under 128 characters; ``time`` after the year 2000 and at most a year ahead; a private key (``pk_…``)
must never be used here (it gets ``400 Invalid Company ID``). ``unique_id`` is our event id, so a
retried request never counts an event twice and two same-named events in one second never collide.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Mapping
from typing import Any, ClassVar

import httpx

from .._log import redact
from ..errors import ConfigurationError
from ..events import MAX_ID_LENGTH, Event
from ._http import read_http_options
from ._klaviyo_fit import MAX_METRIC_NAME, fit_properties, profile_traits
from .base import Batch, HttpProvider, HttpRequest, Limits, SendResult, SkipEvent, dumps, iso_utc

DEFAULT_URL = "https://a.klaviyo.com"
DEFAULT_REVISION = "2025-10-15"
MEDIA_TYPE = "application/vnd.api+json"
PATH = "/client/event-bulk-create/"
#: The profile wrapper around the events: a fixed skeleton plus at most nine profile strings, each at
#: most ``MAX_ID_LENGTH`` characters of up to 6 bytes once JSON-escaped (see ``_klaviyo_fit``).
ENVELOPE_BYTES = 256 + 9 * (6 * MAX_ID_LENGTH + 32)
# 5 MB per body, whether Klaviyo counts in decimal or binary units.
LIMITS = Limits(
    max_events=1000,
    max_bytes=5_000_000,
    rate=((10, 1.0), (150, 60.0)),
    max_in_flight=4,
    envelope_bytes=ENVELOPE_BYTES,
)

# [0-9], not \d (which takes any Unicode digit, full-width ones too), and fullmatch, not "$" (which also
# matches before a final "\n"): the revision goes into a header, where only ASCII can be written.
_REVISION = re.compile(r"([0-9]{4})-([0-9]{2})-([0-9]{2})(\.[A-Za-z0-9_-]+)?")
_EARLIEST = dt.datetime(2000, 1, 1, tzinfo=dt.timezone.utc)
_HEAD = b'{"data":{"type":"event-bulk-create","attributes":{"profile":{"data":{"type":"profile","attributes":'


def check_revision(value: str) -> str:
    """``YYYY-MM-DD[.suffix]`` naming a real date; raises :class:`ConfigurationError` otherwise."""
    value = value.strip()
    match = _REVISION.fullmatch(value)
    try:
        if match is None:
            raise ValueError
        dt.date(int(match[1]), int(match[2]), int(match[3]))
    except ValueError:
        raise ConfigurationError(
            f"klaviyo_revision: {value!r} is not a Klaviyo API revision (YYYY-MM-DD, e.g. {DEFAULT_REVISION})"
        ) from None
    return value


class Klaviyo(HttpProvider):
    """Sends to Klaviyo's client API with the **public** API key (site ID, six characters)::

    evmiddleware.configure(klaviyo_public_key="AbC123")

    A private key (``pk_…``) is refused: this endpoint puts the key in the URL, where it must never go.
    """

    name: ClassVar[str] = "klaviyo"
    options: ClassVar[tuple[str, ...]] = ("public_key", "url", "rate_limit", "max_in_flight", "revision")
    key_setting: ClassVar[str] = "EVMIDDLEWARE_KLAVIYO_PUBLIC_KEY (the public key / site ID)"

    def __init__(
        self,
        public_key: str,
        *,
        base_url: str = DEFAULT_URL,
        limits: Limits = LIMITS,
        revision: str = DEFAULT_REVISION,
    ) -> None:
        if public_key.lower().startswith("pk_"):
            raise ConfigurationError(
                "klaviyo_public_key (EVMIDDLEWARE_KLAVIYO_PUBLIC_KEY) looks like a private API key "
                "(it starts with 'pk_'). The client API takes the public key (site ID) and sends it "
                "in the URL; never use a private key here."
            )
        self._public_key = public_key
        self.base_url = base_url.rstrip("/")
        self.limits = limits
        self.revision = check_revision(revision)

    @classmethod
    def from_options(cls, options: Mapping[str, Any]) -> Klaviyo | None:
        common = read_http_options(
            "klaviyo", options, default_url=DEFAULT_URL, limits=LIMITS, key_option="public_key"
        )
        if common is None:
            return None
        revision = str(options.get("revision") or DEFAULT_REVISION)
        return cls(common.api_key, base_url=common.base_url, limits=common.limits, revision=revision)

    def group_key(self, event: Event) -> str | None:
        if event.user_id:
            return f"external_id:{event.user_id}"
        if event.anonymous_id:
            return f"anonymous_id:{event.anonymous_id}"
        return f"_kx:{event.aliases.get('klaviyo_exchange_id', '')}"

    def encode(self, event: Event) -> bytes:
        if not (event.user_id or event.anonymous_id or event.aliases.get("klaviyo_exchange_id")):
            raise SkipEvent("no_identity", "a Klaviyo profile needs an external id, anonymous id or _kx")
        now = dt.datetime.now(dt.timezone.utc)
        if not _EARLIEST <= event.timestamp <= now + dt.timedelta(days=365):
            raise SkipEvent("invalid_timestamp", "Klaviyo takes event times from 2000 to a year ahead")
        attributes: dict[str, Any] = {
            "metric": {"data": {"type": "metric", "attributes": {"name": event.name[:MAX_METRIC_NAME]}}},
            "properties": fit_properties(event),
            "time": iso_utc(event.timestamp),
            "unique_id": event.id,
        }
        value = _amount(event.properties.get("value"))
        if value is None:
            value = _amount(event.properties.get("revenue"))
        if value is not None:
            attributes["value"] = value
            currency = event.properties.get("currency")
            if isinstance(currency, str) and currency.strip():
                attributes["value_currency"] = currency.strip()
        return dumps({"type": "event", "attributes": attributes})

    def profile(self, batch: Batch) -> dict[str, str]:
        """The profile of a batch: ids from its first event, traits from its identify events."""
        first = batch.items[0].event
        attributes: dict[str, str] = {}
        if first.user_id:
            attributes["external_id"] = first.user_id
        elif first.anonymous_id:
            attributes["anonymous_id"] = first.anonymous_id
        exchange_id = first.aliases.get("klaviyo_exchange_id")
        if exchange_id and len(exchange_id) <= MAX_ID_LENGTH:
            attributes["_kx"] = exchange_id
        for item in batch.items:
            if item.event.kind == "identify":
                attributes.update(profile_traits(item.event))
        return attributes

    def build_request(self, batch: Batch) -> HttpRequest:
        body = b"".join(
            (
                _HEAD,
                dumps(self.profile(batch)),
                b'}},"events":{"data":[',
                batch.data,
                b"]}}}}",
            )
        )
        headers = {"revision": self.revision, "Content-Type": MEDIA_TYPE, "Accept": MEDIA_TYPE}
        return HttpRequest("POST", self.base_url + PATH, headers, body, {"company_id": self._public_key})

    def interpret(self, response: httpx.Response, batch: Batch) -> SendResult:
        result = super().interpret(response, batch)
        if result.outcome != "rejected" or response.status_code != 400:
            return result
        detail, company = _error_details(response)
        if not detail:
            return result
        detail = redact(detail, self.secrets())[:300]
        if company:  # Klaviyo's answer to a wrong or private key: a credentials problem
            return SendResult("rejected", reason=f"http_400: {detail}; check {self.key_setting}", auth=True)
        return SendResult("rejected", reason=f"http_400: {detail}")

    def secrets(self) -> tuple[str, ...]:
        return (self._public_key,)

    def describe(self) -> str:
        return f"klaviyo → {self.base_url}{PATH} (revision {self.revision})"


def _amount(value: Any) -> int | float | None:
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return value
    return None


def _error_details(response: httpx.Response) -> tuple[str, bool]:
    """JSON:API ``errors`` as ``detail (where); …``, and whether one is about ``company_id``."""
    try:
        errors = response.json().get("errors")
    except (ValueError, AttributeError):  # not JSON, not an object
        return "", False
    parts: list[str] = []
    company = False
    for error in errors[:5] if isinstance(errors, list) else ():
        if not isinstance(error, dict):
            continue
        detail = str(error.get("detail") or error.get("title") or "")
        source = error.get("source")
        source = source if isinstance(source, dict) else {}
        where = source.get("pointer") or source.get("parameter") or source.get("header")
        company = company or source.get("parameter") == "company_id" or "company id" in detail.lower()
        parts.append(f"{detail} ({where})" if where else detail)
    return "; ".join(parts), company
