"""UserFlux Integration API: batches of up to 50 to ``/event/ingest/batch``, 204 on success.

Spec: shared/providers/000 (UserFlux — Events API). Events carry ``timestamp`` as integer epoch
milliseconds and camelCase ids; the body is ``{"events": [...]}``. UserFlux publishes no rate limit
and no body-size limit (see ``LIMITS``).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from typing import Any, ClassVar

from .._parse import parse_bool
from ..errors import ConfigurationError
from ..events import Event
from ._http import COMMON_OPTIONS, read_http_options
from .base import Batch, HttpProvider, HttpRequest, Limits, payload_properties, put_ids

DEFAULT_URL = "https://integration-api.userflux.co"
# 50 events per request is published; a body limit is not, so batches also stay under 1 MB (the
# usual default of HTTP front ends, e.g. nginx's client_max_body_size). No published rate limit.
LIMITS = Limits(max_events=50, max_bytes=1_000_000, max_in_flight=4, envelope_bytes=16)

_EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.timezone.utc)
_MILLISECOND = dt.timedelta(milliseconds=1)


def epoch_millis(timestamp: dt.datetime) -> int:
    """Whole milliseconds since the Unix epoch, computed exactly (no float rounding)."""
    return (timestamp - _EPOCH) // _MILLISECOND


class UserFlux(HttpProvider):
    """Sends to UserFlux with its **write-only** Integration API key (``Authorization: Bearer``).

    Use the write-only key, never the read + write one: this process only ingests events::

        evmiddleware.configure(userflux_api_key="…write-only key…")

    ``location_enrichment`` (setting ``userflux_location_enrichment``) is sent as the
    ``locationEnrichment`` query parameter only when set. UserFlux locates the request's sender, which
    for server-side events is this server, not the visitor, so ``false`` is usually what you want.
    """

    name: ClassVar[str] = "userflux"
    options: ClassVar[tuple[str, ...]] = (*COMMON_OPTIONS, "location_enrichment")
    key_setting: ClassVar[str] = "EVMIDDLEWARE_USERFLUX_API_KEY (the write-only key)"

    def __init__(
        self,
        api_key: str,
        *,
        base_url: str = DEFAULT_URL,
        limits: Limits = LIMITS,
        location_enrichment: bool | None = None,
    ) -> None:
        self._api_key = api_key
        self.base_url = base_url.rstrip("/")
        self.limits = limits
        self.location_enrichment = location_enrichment

    @classmethod
    def from_options(cls, options: Mapping[str, Any]) -> UserFlux | None:
        common = read_http_options("userflux", options, default_url=DEFAULT_URL, limits=LIMITS)
        if common is None:
            return None
        enrichment: bool | None = None
        if "location_enrichment" in options:
            try:
                enrichment = parse_bool(options["location_enrichment"])
            except ValueError as exc:
                raise ConfigurationError(f"userflux_location_enrichment: {exc}") from None
        return cls(
            common.api_key,
            base_url=common.base_url,
            limits=common.limits,
            location_enrichment=enrichment,
        )

    def wire(self, event: Event) -> dict[str, Any]:
        body: dict[str, Any] = {"name": event.name, "timestamp": epoch_millis(event.timestamp)}
        put_ids(body, event, "userId", "anonymousId")
        body["properties"] = payload_properties(event)
        return body

    def build_request(self, batch: Batch) -> HttpRequest:
        params = {}
        if self.location_enrichment is not None:
            params["locationEnrichment"] = "true" if self.location_enrichment else "false"
        return HttpRequest(
            "POST",
            f"{self.base_url}/event/ingest/batch",
            {"Authorization": f"Bearer {self._api_key}", "Content-Type": "application/json"},
            b"".join((b'{"events":[', batch.data, b"]}")),  # one copy of the body, where + makes two
            params,
        )

    def secrets(self) -> tuple[str, ...]:
        return (self._api_key,)

    def describe(self) -> str:
        return f"userflux → {self.base_url}/event/ingest/batch"
