"""What every provider emulator shares: the request and reply types and the base class."""

from __future__ import annotations

import json
import secrets
from abc import ABC, abstractmethod
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar

from .keys import SandboxKeys
from .ratelimit import Decision, SlidingWindowLimiter
from .validation import parse_json

__all__ = ["Accepted", "ProviderAPI", "Reply", "Request", "new_id"]


@dataclass(frozen=True)
class Request:
    """One HTTP request as a provider emulator sees it: the path is below the provider prefix."""

    method: str
    path: str
    query: Mapping[str, list[str]]
    headers: Mapping[str, str]  # names lower-cased
    body: bytes
    arrival: float

    def header(self, name: str) -> str | None:
        return self.headers.get(name.lower())


@dataclass(frozen=True)
class Accepted:
    """An accepted event and the identity duplicates are counted by."""

    event: dict[str, Any]
    identity: str


@dataclass
class Reply:
    status: int
    body: bytes = b""
    content_type: str | None = None
    headers: dict[str, str] = field(default_factory=dict)
    accepted: list[Accepted] = field(default_factory=list)
    # Set only by providers that accept part of a request; whole-request rejections are counted
    # by the recorder from the request's event count.
    rejected_events: int | None = None
    rate_limited: bool = False
    idempotent_replay: bool = False


def json_reply(status: int, doc: Any, content_type: str = "application/json", **kw: Any) -> Reply:
    body = json.dumps(doc, separators=(",", ":")).encode("utf-8")
    return Reply(status, body, content_type, **kw)


def new_id(prefix: str = "") -> str:
    return prefix + secrets.token_hex(10)


def bearer_token(req: Request) -> str | None:
    """The token of ``Authorization: Bearer <token>``; the scheme is case-insensitive (RFC 7235)."""
    value = req.header("authorization")
    if value is None:
        return None
    scheme, _, token = value.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        return None
    return token.strip()


def media_type(req: Request) -> str:
    return (req.header("content-type") or "").split(";", 1)[0].strip().lower()


class ProviderAPI(ABC):
    """One emulated provider. Methods run under the sandbox lock, so state needs no locking."""

    name: ClassVar[str]
    #: The path of a ``{"events": [...]}`` batch endpoint, where the provider has one.
    batch_path: ClassVar[str | None] = None
    #: The message of this provider's 429 answer.
    throttle_message: ClassVar[str] = "Too many requests"

    def __init__(self, keys: SandboxKeys, limiter: SlidingWindowLimiter) -> None:
        self.keys = keys
        self.limiter = limiter

    @abstractmethod
    def handle(self, req: Request) -> Reply:
        """Answer a request exactly as the real service would."""

    @abstractmethod
    def error(self, status: int, message: str) -> Reply:
        """An error answer in this provider's own shape."""

    def throttled(self, retry_after: str, decision: Decision | None = None) -> Reply:
        """This provider's 429 answer; ``retry_after`` is the Retry-After header value."""
        reply = self.error(429, self.throttle_message)
        reply.headers["Retry-After"] = retry_after
        return reply

    def events_in(self, doc: Any, path: str) -> int:
        """How many events a decoded body carries (best effort, for stats and the request log)."""
        if path == self.batch_path:
            events = doc.get("events") if isinstance(doc, dict) else None
            return len(events) if isinstance(events, list) else 0
        return 1 if isinstance(doc, dict) else 0

    def count_events(self, req: Request) -> int:
        try:
            return self.events_in(parse_json(req.body), req.path)
        except ValueError:
            return 0

    def reset(self) -> None:
        """Forget per-run state (idempotency keys); the limiter is reset by the sandbox."""

    def limited(self, key: str, req: Request) -> tuple[Reply | None, Decision]:
        """Count the request against ``key``'s window; a 429 reply if over the limit."""
        decision = self.limiter.acquire(key, req.arrival)
        if decision.allowed:
            return None, decision
        reply = self.throttled(decision.retry_after_header, decision)
        reply.rate_limited = True
        return reply, decision
