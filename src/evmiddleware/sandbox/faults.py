"""Injected faults: what a flaky network or a failing provider does to a request."""

from __future__ import annotations

import random
import threading
from collections.abc import Mapping
from dataclasses import asdict, dataclass, fields
from typing import Any, Literal, cast

__all__ = ["FAULT_KINDS", "MAX_SLOW_SECONDS", "Fault", "FaultBook"]

FaultKind = Literal["status", "retry_after", "slow", "close", "truncate"]
FAULT_KINDS: tuple[str, ...] = ("status", "retry_after", "slow", "close", "truncate")
MAX_SLOW_SECONDS = 30.0


@dataclass(frozen=True)
class Fault:
    """One fault, applied before validation to the requests it covers.

    ``count`` requests are covered (``None``: every request until cleared); each covered request
    is hit with probability ``rate``, drawn from ``random.Random(seed)`` so runs repeat.

    kinds:
      ``status``       answer ``status`` (default 500) with ``body`` (default: the provider's
                       own error shape) — e.g. a non-JSON 502 or a 200 whose body is an error.
      ``retry_after``  answer 429 with ``Retry-After: retry_after`` (an HTTP-date if ``http_date``).
      ``slow``         process normally but answer only after ``seconds`` (at most 30).
      ``close``        close the connection without any answer.
      ``truncate``     announce a Content-Length longer than the body sent, then close; the
                       status is ``status`` (default 200).
    """

    kind: FaultKind
    count: int | None = 1
    rate: float = 1.0
    seed: int = 0
    status: int | None = None
    body: str | None = None
    content_type: str | None = None
    retry_after: int = 1
    http_date: bool = False
    seconds: float = 1.0

    def __post_init__(self) -> None:
        if self.kind not in FAULT_KINDS:
            raise ValueError(f"unknown fault kind {self.kind!r}; one of {', '.join(FAULT_KINDS)}")
        if self.count is not None and self.count < 1:
            raise ValueError("count must be >= 1 or None (until cleared)")
        if not 0.0 < self.rate <= 1.0:
            raise ValueError("rate must be in (0, 1]")
        if self.status is not None and not 100 <= self.status <= 599:
            raise ValueError("status must be an HTTP status code")
        if self.retry_after < 0:
            raise ValueError("retry_after must be >= 0")
        if not 0.0 <= self.seconds <= MAX_SLOW_SECONDS:
            raise ValueError(f"seconds must be between 0 and {MAX_SLOW_SECONDS:g}")

    @property
    def answer_status(self) -> int:
        if self.status is not None:
            return self.status
        return 200 if self.kind == "truncate" else 500

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, doc: Mapping[str, Any]) -> Fault:
        """Build from the ``POST /_faults`` body; unknown fields are an error, not ignored."""
        known = {f.name for f in fields(cls)}
        unknown = set(doc) - known
        if unknown:
            raise ValueError(f"unknown fault fields: {', '.join(sorted(unknown))}")
        if "kind" not in doc:
            raise ValueError("fault needs a 'kind'")
        checks: dict[str, tuple[type, ...]] = {
            "kind": (str,),
            "count": (int, type(None)),
            "rate": (int, float),
            "seed": (int,),
            "status": (int, type(None)),
            "body": (str, type(None)),
            "content_type": (str, type(None)),
            "retry_after": (int,),
            "http_date": (bool,),
            "seconds": (int, float),
        }
        for name, value in doc.items():
            bad_bool = isinstance(value, bool) and name != "http_date"
            if bad_bool or not isinstance(value, checks[name]):
                raise ValueError(f"fault field {name!r} has the wrong type")
        return cls(**cast(dict[str, Any], dict(doc)))


class _Entry:
    def __init__(self, fault: Fault) -> None:
        self.fault = fault
        self.remaining = fault.count
        self.rng = random.Random(fault.seed)


class FaultBook:
    """Pending faults per provider, first in first out; only the first pending one sees a request."""

    def __init__(self) -> None:
        self._entries: dict[str, list[_Entry]] = {}
        self._lock = threading.Lock()

    def add(self, provider: str, fault: Fault) -> None:
        with self._lock:
            self._entries.setdefault(provider, []).append(_Entry(fault))

    def clear(self, provider: str | None = None) -> None:
        with self._lock:
            if provider is None:
                self._entries.clear()
            else:
                self._entries.pop(provider, None)

    def take(self, provider: str) -> Fault | None:
        """The fault to apply to the provider's next request, if any; consumes one covered request."""
        with self._lock:
            entries = self._entries.get(provider)
            if not entries:
                return None
            entry = entries[0]
            if entry.remaining is not None:
                entry.remaining -= 1
                if entry.remaining == 0:
                    entries.pop(0)
            hit = entry.fault.rate >= 1.0 or entry.rng.random() < entry.fault.rate
            return entry.fault if hit else None

    def pending(self) -> dict[str, list[Fault]]:
        with self._lock:
            return {p: [e.fault for e in es] for p, es in self._entries.items() if es}
