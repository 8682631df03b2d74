"""What the sandbox saw: per-provider counters, accepted events and the request log."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from .common import Reply

__all__ = ["ProviderRecord", "RequestRecord"]


@dataclass(frozen=True)
class RequestRecord:
    """One request as logged; never holds credentials (no headers, no query string)."""

    time: float  # arrival on the sandbox clock (monotonic), when processing began
    method: str
    path: str  # full path below the server root, without the query string
    status: int | None  # None when a ``close`` fault answered nothing
    events: int
    fault: str | None  # the fault kind applied, if any
    idempotency_key: str | None = None
    replayed: bool = False  # FloKit answered from its idempotency cache


@dataclass
class ProviderRecord:
    """Counters of one provider; every method is called under the sandbox lock."""

    requests: int = 0
    accepted_events: int = 0
    rejected_requests: int = 0
    rejected_events: int = 0
    rate_limited: int = 0
    duplicates: int = 0
    largest_batch: int = 0
    faults: int = 0
    status_counts: dict[str, int] = field(default_factory=dict)
    accepted: list[dict[str, Any]] = field(default_factory=list)
    log: list[RequestRecord] = field(default_factory=list)
    seen: set[str] = field(default_factory=set)

    def record(self, entry: RequestRecord, reply: Reply | None) -> None:
        self.requests += 1
        self.largest_batch = max(self.largest_batch, entry.events)
        self.log.append(entry)
        if entry.status is not None:
            key = str(entry.status)
            self.status_counts[key] = self.status_counts.get(key, 0) + 1
        if entry.fault is not None:
            self.faults += 1
        if reply is None or (entry.fault is not None and entry.fault != "slow"):
            return  # the emulated API never saw it
        if reply.rate_limited:
            self.rate_limited += 1
            return
        if reply.status >= 400:
            self.rejected_requests += 1
            self.rejected_events += entry.events
            return
        self.rejected_events += reply.rejected_events or 0
        for item in reply.accepted:
            if item.identity in self.seen:
                self.duplicates += 1
            self.seen.add(item.identity)
            self.accepted.append(item.event)
        self.accepted_events += len(reply.accepted)

    def snapshot(self) -> dict[str, Any]:
        return {
            "requests": self.requests,
            "accepted_events": self.accepted_events,
            "rejected_requests": self.rejected_requests,
            "rejected_events": self.rejected_events,
            "rate_limited": self.rate_limited,
            "duplicates": self.duplicates,
            "largest_batch": self.largest_batch,
            "faults": self.faults,
            "status_counts": dict(self.status_counts),
        }
