"""The visitor's anonymous id: reading it from the ``Cookie`` header, checking it, adopting a browser
SDK's id, and the ``Set-Cookie`` value that keeps it.

Everything here is pure string work. The lookup of one cookie is a ``str.find`` rather than a full
parse (werkzeug's ``parse_cookie`` builds a dict of every cookie, ~40 times the cost), because it runs
on every request. Adoption and the ``Set-Cookie`` value run only on a visitor's first request.
"""

from __future__ import annotations

import base64
import binascii
import json
import os
import string
from collections.abc import Callable
from urllib.parse import unquote

__all__ = [
    "BROWSER_ID_COOKIES",
    "MAX_ID_LENGTH",
    "CookieWriter",
    "adopt_browser_id",
    "check_cookie_name",
    "cookie_value",
    "is_valid_id",
    "klaviyo_exchange_id",
    "new_anonymous_id",
]

#: An anonymous id is at most this long; anything longer is replaced.
MAX_ID_LENGTH = 128

#: Cookies of browser SDKs whose id is adopted, in this order, when ours is absent:
#: UserFlux's SDK, Klaviyo's (its ``$exchange_id``) and Segment-style ``analytics.js``.
BROWSER_ID_COOKIES: tuple[str, ...] = ("uf-anonymousId", "__kla_id", "ajs_anonymous_id")

# uuids and the browser SDKs' ids (base64 and base64url included) use only these; each is a valid
# cookie-octet (RFC 6265), so an accepted id can be written back into our cookie unquoted.
_ID_CHARS = string.ascii_letters + string.digits + "-_.:+/=~"
_ID_BYTES = _ID_CHARS.encode("ascii")
# RFC 7230 token characters: what a cookie name may hold.
_TOKEN_CHARS = string.ascii_letters + string.digits + "!#$%&'*+-.^_`|~"
_DOMAIN_CHARS = string.ascii_letters + string.digits + "-."
# A browser cookie larger than this is not a plausible id holder; never decode it.
_MAX_ADOPT_INPUT = 4096


def is_valid_id(value: str) -> bool:
    """True when ``value`` is 1 to 128 characters of ``[A-Za-z0-9-_.:+/=~]``.

    Deleting the allowed bytes leaves nothing exactly when every character is allowed: three C calls
    on a 256-entry table, half the cost of ``str.strip`` with the allowed characters (which searches
    them for each character) and cheaper than a regular expression, on the request path::

        is_valid_id("6f1c2a7e-8a5b-4c1e-9d2f-0123456789ab")  # True
        is_valid_id("<script>")                              # False

    ``Capture.start`` repeats this test inline for the cookie of every request (one Python call
    less): change both together.
    """
    return (
        0 < len(value) <= MAX_ID_LENGTH and value.isascii() and not value.encode().translate(None, _ID_BYTES)
    )


def cookie_value(header: str, name: str) -> str | None:
    """The value of the first cookie called ``name`` in a ``Cookie`` header (browsers send the most
    specific path first), without surrounding quotes; ``None`` when absent::

        cookie_value("theme=dark; ev_anon_id=abc", "ev_anon_id")  # "abc"
    """
    needle = name + "="
    at = header.find(needle)
    while at >= 0:
        # A match counts only at the start of a cookie-pair: "xev_anon_id=" is another cookie. Browsers
        # separate pairs with "; ", checked first; other whitespace before the name is tolerated.
        if at == 0 or header[at - 2 : at] == "; " or header[:at].rstrip(" \t")[-1:] in ("", ";"):
            start = at + len(needle)
            end = header.find(";", start)
            value = (header[start:end] if end >= 0 else header[start:]).strip()
            if len(value) >= 2 and value[0] == '"' and value[-1] == '"':
                value = value[1:-1]
            return value
        at = header.find(needle, at + 1)
    return None


_id_pool: list[str] = []
_VARIANT = {digit: "89ab"[int(digit, 16) & 3] for digit in "0123456789abcdef"}


def new_anonymous_id() -> str:
    """A new uuid4 from the OS's random source: the id goes back to the browser, so unlike event ids
    it must not be predictable from others handed out.

    Drawn 64 at a time: ``uuid.uuid4()`` costs a system call and ~3 µs per id on the request path.
    ``list.pop`` is atomic, so two threads never get the same id.
    """
    try:
        return _id_pool.pop()
    except IndexError:
        pass
    hx, variant = os.urandom(16 * 64).hex(), _VARIANT
    # Version nibble forced to 4 and variant bits to 10, as uuid4 does: 122 random bits per id.
    _id_pool.extend(
        f"{hx[o : o + 8]}-{hx[o + 8 : o + 12]}-4{hx[o + 13 : o + 16]}-"
        f"{variant[hx[o + 16]]}{hx[o + 17 : o + 20]}-{hx[o + 20 : o + 32]}"
        for o in range(0, 32 * 64, 32)
    )
    return _id_pool.pop()


# A forked worker must never hand out ids its parent (or a sibling) also holds. Registered at
# import, like the ``random`` module's own reseeding.
if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_id_pool.clear)


def _plain(raw: str) -> str | None:
    # Segment-style scripts store a JSON-quoted string, often percent-encoded ("%22…%22").
    return unquote(raw).strip().strip('"') if "%" in raw or '"' in raw else raw


def _klaviyo(raw: str) -> str | None:
    """``__kla_id`` is base64 of a JSON object; its ``$exchange_id`` is the id Klaviyo knows."""
    text = unquote(raw).strip().strip('"')
    try:
        data = json.loads(base64.b64decode(text + "=" * (-len(text) % 4), altchars=b"-_"))
    except (ValueError, binascii.Error, RecursionError):  # JSON nested too deep: RecursionError
        return None  # UnicodeDecodeError and JSONDecodeError are ValueErrors
    exchange_id = data.get("$exchange_id") if isinstance(data, dict) else None
    return exchange_id if isinstance(exchange_id, str) else None


_DECODERS: dict[str, Callable[[str], str | None]] = {"__kla_id": _klaviyo}


_exchange_ids: dict[str, str | None] = {}


def klaviyo_exchange_id(header: str) -> str | None:
    """The valid ``$exchange_id`` of Klaviyo's ``__kla_id`` cookie in a ``Cookie`` header, if any::

        klaviyo_exchange_id(cookie_header)  # "01HX….abc" → sent to Klaviyo as ``_kx``

    Read on every request that carries the cookie (a visitor gets it when they follow a Klaviyo link,
    often long after ours), so decoded values are cached per cookie value.
    """
    raw = cookie_value(header, "__kla_id")
    if not raw or len(raw) > _MAX_ADOPT_INPUT:
        return None
    try:
        return _exchange_ids[raw]
    except KeyError:
        pass
    found = _klaviyo(raw)
    if found is not None and not is_valid_id(found):
        found = None
    if len(_exchange_ids) >= 4096:  # a bound, not an LRU: clearing costs one decode per visitor
        _exchange_ids.clear()
    _exchange_ids[raw] = found
    return found


def adopt_browser_id(header: str, names: tuple[str, ...]) -> tuple[str, str] | None:
    """``(id, cookie name)`` of the first browser SDK cookie in ``names`` that holds a valid id::

        adopt_browser_id('ajs_anonymous_id=%22a1b2%22', BROWSER_ID_COOKIES)  # ("a1b2", "ajs_anonymous_id")

    Cookies other than ``__kla_id`` are read as a plain, possibly quoted or percent-encoded, string.
    """
    for name in names:
        raw = cookie_value(header, name)
        if not raw or len(raw) > _MAX_ADOPT_INPUT:
            continue
        found = _DECODERS.get(name, _plain)(raw)
        if found is not None and is_valid_id(found):
            return found, name
    return None


def check_cookie_name(name: str) -> str:
    """Raise ``ValueError`` unless ``name`` can be a cookie name (an RFC 7230 token)."""
    if not isinstance(name, str) or not name or name.strip(_TOKEN_CHARS):
        raise ValueError(f"{name!r} is not a valid cookie name")
    return name


class CookieWriter:
    """Builds the ``Set-Cookie`` value for a new anonymous id; every attribute is fixed at init.

    ``Path=/``, ``Max-Age``, ``SameSite=Lax`` and ``HttpOnly`` always; ``Secure`` when the request came
    over https; ``Domain`` when configured::

        CookieWriter("ev_anon_id", 31536000).header("abc", secure=True)
        # 'ev_anon_id=abc; Path=/; Max-Age=31536000; SameSite=Lax; HttpOnly; Secure'

    No ``Expires``: every browser in use honours ``Max-Age``, and a date would have to be formatted per
    response.
    """

    __slots__ = ("_plain", "_prefix", "_secure")

    def __init__(self, name: str, max_age: int, domain: str | None = None) -> None:
        check_cookie_name(name)
        if isinstance(max_age, bool) or not isinstance(max_age, int) or max_age <= 0:
            raise ValueError(f"cookie max age must be a positive number of seconds, not {max_age!r}")
        if domain is not None and (not domain or domain.strip(_DOMAIN_CHARS)):
            raise ValueError(f"{domain!r} is not a valid cookie domain")
        suffix = f"; Path=/; Max-Age={max_age}; SameSite=Lax; HttpOnly"
        domain_part = f"; Domain={domain}" if domain else ""
        self._prefix = name + "="
        self._plain = suffix + domain_part
        self._secure = suffix + "; Secure" + domain_part

    def header(self, value: str, *, secure: bool) -> str:
        """The ``Set-Cookie`` header value; ``value`` must already be valid (:func:`is_valid_id`)."""
        return self._prefix + value + (self._secure if secure else self._plain)
