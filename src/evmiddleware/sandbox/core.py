"""The sandbox's state and request processing, independent of HTTP: faults, emulators, stats."""

from __future__ import annotations

import dataclasses
import email.utils
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from .common import ProviderAPI, Reply, Request
from .faults import Fault, FaultBook
from .flameup import FlameupAPI
from .flokit import FloKitAPI
from .flywheel import FlywheelAPI
from .keys import SandboxKeys
from .klaviyo import KlaviyoAPI
from .ratelimit import Decision, Rule, SlidingWindowLimiter, resolve_limits
from .stats import ProviderRecord, RequestRecord
from .userflux import UserFluxAPI
from .validation import parse_json

__all__ = ["PROVIDERS", "Outcome", "SandboxCore"]

PROVIDERS: tuple[str, ...] = ("userflux", "flokit", "flameup", "flywheel", "klaviyo")
_APIS: dict[str, type[ProviderAPI]] = {
    "userflux": UserFluxAPI,
    "flokit": FloKitAPI,
    "flameup": FlameupAPI,
    "flywheel": FlywheelAPI,
    "klaviyo": KlaviyoAPI,
}
# Enough bytes to look like the start of a real answer, so a client fails on the short read.
_TRUNCATED_BODY = b'{"status":"ok","accepted":'


@dataclass(frozen=True)
class Outcome:
    """What to send: ``reply`` None means close the connection without an answer."""

    reply: Reply | None
    fault: Fault | None


def _check_provider(name: str) -> str:
    if name not in _APIS:
        raise ValueError(f"unknown provider {name!r}; one of {', '.join(PROVIDERS)}")
    return name


class SandboxCore:
    """Everything the HTTP layer and the Python API share; one lock orders all of it."""

    def __init__(
        self,
        keys: SandboxKeys,
        rate_limits: Mapping[str, Sequence[Rule]] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.keys = keys
        self.clock = clock
        limits = resolve_limits(rate_limits)
        self.apis: dict[str, ProviderAPI] = {
            name: cls(keys, SlidingWindowLimiter(limits[name], clock)) for name, cls in _APIS.items()
        }
        self.faults = FaultBook()
        self._records = {name: ProviderRecord() for name in PROVIDERS}
        self._changed = threading.Condition()

    def process(self, provider: str, req: Request, full_path: str) -> Outcome:
        api = self.apis[provider]
        with self._changed:
            # Stamped under the lock so the request log and the rate limiter see arrivals in
            # one order; a stamp taken earlier, per thread, could interleave out of order.
            req = dataclasses.replace(req, arrival=self.clock())
            fault = self.faults.take(provider)
            if fault is None or fault.kind == "slow":
                reply: Reply | None = api.handle(req)
            else:
                reply = self._fault_reply(api, fault)
            entry = RequestRecord(
                time=req.arrival,
                method=req.method,
                path=full_path,
                status=reply.status if reply is not None else None,
                events=api.count_events(req),
                fault=fault.kind if fault is not None else None,
                idempotency_key=req.header("idempotency-key"),
                replayed=reply is not None and reply.idempotent_replay,
            )
            self._records[provider].record(entry, reply)
            self._changed.notify_all()
        return Outcome(reply, fault)

    @staticmethod
    def _fault_reply(api: ProviderAPI, fault: Fault) -> Reply | None:
        if fault.kind == "close":
            return None
        if fault.kind == "truncate":
            return Reply(fault.answer_status, _TRUNCATED_BODY, "application/json")
        if fault.kind == "retry_after":
            if fault.http_date:
                value = email.utils.formatdate(time.time() + fault.retry_after, usegmt=True)
            else:
                value = str(fault.retry_after)
            # Described like the limiter's own 429 (a full window, nothing left), so providers that
            # always send X-RateLimit-* headers (Flameup) send them on an injected 429 too.
            rules = api.limiter.rules
            limit = rules[0][0] if rules else None
            decision = Decision(False, float(fault.retry_after), limit, 0, float(fault.retry_after))
            return api.throttled(value, decision)
        if fault.body is None:
            return api.error(fault.answer_status, "Injected fault")
        content_type = fault.content_type
        if content_type is None:
            try:
                parse_json(fault.body.encode("utf-8"))
                content_type = "application/json"
            except ValueError:
                content_type = "text/plain; charset=utf-8"
        return Reply(fault.answer_status, fault.body.encode("utf-8"), content_type)

    def inject(self, provider: str, fault: Fault) -> None:
        self.faults.add(_check_provider(provider), fault)

    def clear_faults(self, provider: str | None = None) -> None:
        self.faults.clear(None if provider is None else _check_provider(provider))

    def stats(self) -> dict[str, Any]:
        with self._changed:
            return {"providers": {n: r.snapshot() for n, r in self._records.items()}}

    def accepted(self, provider: str) -> list[dict[str, Any]]:
        with self._changed:
            return list(self._records[_check_provider(provider)].accepted)

    def requests(self, provider: str) -> list[RequestRecord]:
        with self._changed:
            return list(self._records[_check_provider(provider)].log)

    def wait_for(self, predicate: Callable[[dict[str, Any]], bool], timeout: float) -> bool:
        """Wake on every recorded request until ``predicate(stats)`` holds or ``timeout`` passes."""
        deadline = time.monotonic() + max(0.0, timeout)
        with self._changed:
            while True:
                if predicate({"providers": {n: r.snapshot() for n, r in self._records.items()}}):
                    return True
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return False
                self._changed.wait(remaining)

    def reset(self) -> None:
        """Forget everything: counters, events, logs, idempotency keys, rate windows, faults."""
        with self._changed:
            self.faults.clear()
            for name in PROVIDERS:
                self._records[name] = ProviderRecord()
                self.apis[name].reset()
                self.apis[name].limiter.reset()
            self._changed.notify_all()
