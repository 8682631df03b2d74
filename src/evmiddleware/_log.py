"""The ``evmiddleware`` logger, with rate limiting for errors that can repeat per request."""

from __future__ import annotations

import functools
import json
import logging
import threading
import time
from collections.abc import Callable, Iterable
from urllib.parse import quote

from ._fork import new_lock_in_child

logger = logging.getLogger("evmiddleware")

_REDACTED = "[redacted]"


def redact(text: str, secrets: Iterable[str]) -> str:
    """Replace every secret in ``text``, however spelled; providers sometimes echo the key back in an
    error body."""
    for secret in secrets:
        if secret and len(secret) >= 4:
            for spelling in _spellings(secret):
                text = text.replace(spelling, _REDACTED)
    return text


@functools.lru_cache(maxsize=64)
def _spellings(secret: str) -> tuple[str, ...]:
    """The ways an answer can write ``secret``: as is, JSON-escaped (PHP's json_encode also writes
    "/" as "\\/"), percent-encoded (a URL echoed back). Longest first, so a spelling that contains
    another is replaced whole. Cached: only error paths redact, but a key's spellings never change."""
    escaped = json.dumps(secret)[1:-1]
    forms = {secret, escaped, escaped.replace("/", "\\/"), quote(secret, safe="")}
    return tuple(sorted(forms, key=len, reverse=True))


class _RedactingFilter(logging.Filter):
    """Removes our providers' secrets from another library's log records.

    httpx logs every request's URL at INFO, and Klaviyo's client API takes its key in the URL.
    """

    def __init__(self) -> None:
        super().__init__()
        self.secrets: frozenset[str] = frozenset()

    def filter(self, record: logging.LogRecord) -> bool:
        if self.secrets:
            message = record.getMessage()
            cleaned = redact(message, self.secrets)
            if cleaned != message:
                record.msg, record.args = cleaned, None
        return True


_http_filter = _RedactingFilter()


def hide_in_http_logs(secrets: Iterable[str]) -> None:
    """Redact ``secrets`` from the ``httpx`` logger's records from now on (idempotent)."""
    _http_filter.secrets = _http_filter.secrets.union(s for s in secrets if s)
    http_logger = logging.getLogger("httpx")
    if _http_filter not in http_logger.filters:
        http_logger.addFilter(_http_filter)


class RateLimitedLog:
    """Logs a given key at most once per ``interval`` seconds, then says how many were suppressed.

    A broken encoder or a bad cookie can fail on every request; one line per request would flood logs.
    """

    def __init__(self, interval: float = 60.0, clock: Callable[[], float] = time.monotonic) -> None:
        self._interval = interval
        self._clock = clock
        self._last: dict[str, float] = {}
        self._suppressed: dict[str, int] = {}
        self._lock = threading.Lock()

    def log(self, level: int, key: str, msg: str, *args: object, exc_info: bool = False) -> None:
        now = self._clock()
        with self._lock:
            last = self._last.get(key)
            if last is not None and now - last < self._interval:
                self._suppressed[key] = self._suppressed.get(key, 0) + 1
                return
            self._last[key] = now
            suppressed = self._suppressed.pop(key, 0)
        if suppressed:
            msg += " (%d similar messages suppressed)"
            args = (*args, suppressed)
        logger.log(level, msg, *args, exc_info=exc_info)


limited = RateLimitedLog()


new_lock_in_child(limited, "_lock")  # else a child's first limited line could block for good
