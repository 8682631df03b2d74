"""A lean HTTP/1.1 client for the dispatcher's requests: keep-alive connections on asyncio streams.

httpx spends about 1 ms of CPU on every request on this path (some 2,500 Python calls through
httpx, httpcore, h11 and anyio), whatever the body's size; this client spends about 0.06 ms. The
dispatcher shares the GIL with the application's threads, so that millisecond is taken from the
application: a microsecond per event at FloKit's 1,000 events a request, and a whole millisecond per
event for the providers that take one event a request (Flameup, Flywheel).

It does what the providers need and no more: one request at a time per connection, a body given as
bytes, no redirects, no cookies, no compression asked for. TLS trusts what httpx trusts
(``httpx.create_ssl_context``: certifi's bundle, ``SSL_CERT_FILE`` and ``SSL_CERT_DIR``). Answers come
back as ``httpx.Response`` and failures as httpx's exceptions (``ConnectError``, ``ReadTimeout``, ...),
so providers and the dispatcher read both as they read httpx's. When the environment configures a
proxy, the dispatcher uses httpx instead (:func:`proxy_configured`), which knows how to go through one.
"""

from __future__ import annotations

import asyncio
import functools
import ipaddress
import logging
import socket
import urllib.parse
import urllib.request
from collections.abc import Mapping
from types import TracebackType
from typing import Any, NamedTuple, Protocol

import httpx

from ._log import logger

__all__ = ["Http11Client", "HttpClient", "proxy_configured"]

#: Bodies up to this size leave in one write with their head; larger ones in a second write, which
#: saves copying them (TCP_NODELAY, asyncio's default, sends the head at once rather than waiting).
_JOIN_LIMIT = 64 * 1024
#: An answer's body is read up to this size; providers answer a few KiB at most.
MAX_ANSWER_BYTES = 16 * 1024 * 1024
#: Idle keep-alive connections kept per origin (scheme, host, port); more are closed.
MAX_IDLE_PER_ORIGIN = 8


class HttpClient(Protocol):
    """What a provider's ``send`` needs from a client; ``httpx.AsyncClient`` has it too."""

    async def request(
        self,
        method: str,
        url: str,
        *,
        headers: Mapping[str, str],
        content: bytes,
        params: Mapping[str, str] | None = None,
    ) -> httpx.Response: ...


def proxy_configured() -> bool:
    """Whether ``HTTP_PROXY``, ``HTTPS_PROXY`` or ``ALL_PROXY`` is set (any case), as httpx reads them."""
    return any(scheme in ("http", "https", "all") for scheme in urllib.request.getproxies_environment())


class _Target(NamedTuple):
    origin: tuple[str, str, int]  # scheme, host, port: connections are shared within one
    host_header: str
    path: str  # with the URL's query, if any


@functools.lru_cache(maxsize=256)
def _target(url: str) -> _Target:
    # Providers post to a handful of fixed URLs: parse each once.
    parts = urllib.parse.urlsplit(url)
    scheme = parts.scheme.lower()
    host = parts.hostname
    if scheme not in ("http", "https") or not host:
        raise httpx.UnsupportedProtocol(f"only http and https URLs are supported, not {scheme!r}")
    default_port = 443 if scheme == "https" else 80
    port = parts.port or default_port
    shown = f"[{host}]" if ":" in host else host
    path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    return _Target((scheme, host, port), shown if port == default_port else f"{shown}:{port}", path)


def _head(method: str, path: str, host: str, headers: Mapping[str, str], length: int, agent: str) -> bytes:
    lines = [f"{method} {path} HTTP/1.1\r\nHost: {host}\r\nUser-Agent: {agent}\r\n"]
    for name, value in headers.items():
        if "\n" in value or "\r" in value or "\n" in name or "\r" in name:
            # A header split across lines would let a value write headers of its own.
            raise httpx.LocalProtocolError(f"header {name!r} contains a line break")
        lines.append(f"{name}: {value}\r\n")
    lines.append(f"Content-Length: {length}\r\n\r\n")
    return "".join(lines).encode("ascii")


class _Stage:
    """How far a request got, to name a timeout or an error as httpx would."""

    __slots__ = ("name",)

    def __init__(self) -> None:
        self.name = "connect"


_TIMEOUTS: dict[str, type[httpx.TimeoutException]] = {
    "connect": httpx.ConnectTimeout,
    "write": httpx.WriteTimeout,
    "read": httpx.ReadTimeout,
}
_ERRORS: dict[str, type[httpx.TransportError]] = {
    "connect": httpx.ConnectError,
    "write": httpx.WriteError,
    "read": httpx.ReadError,
}

_Connection = tuple[asyncio.StreamReader, asyncio.StreamWriter]


class _Answer(NamedTuple):
    status: int
    reason: str
    headers: list[tuple[str, str]]
    body: bytes
    keep_alive: bool


class Http11Client:
    """Sends requests over kept-alive HTTP/1.1 connections; ``timeout`` bounds each request whole.

    Use it as an async context manager, or call :meth:`aclose`, to close the idle connections.
    """

    def __init__(self, *, timeout: float) -> None:
        from . import __version__  # here: the package imports this module before it defines it

        self._agent = f"evmiddleware/{__version__}"
        self._timeout = timeout
        # Created now, not on the first https connection: the dispatcher tells a process about to fork
        # that it is ready only after this (a fork while OpenSSL loads certificates can leave the child
        # with one of its locks held for good).
        self._ssl = httpx.create_ssl_context(verify=True, trust_env=True)
        self._idle: dict[tuple[str, str, int], list[_Connection]] = {}
        self._lookups: dict[str, asyncio.Task[Any]] = {}
        self._closed = False

    async def __aenter__(self) -> Http11Client:
        return self

    async def __aexit__(
        self, kind: type[BaseException] | None, error: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        self._closed = True
        idle, self._idle = self._idle, {}
        for connections in idle.values():
            for _, writer in connections:
                writer.close()

    async def request(
        self,
        method: str,
        url: str,
        *,
        headers: Mapping[str, str],
        content: bytes,
        params: Mapping[str, str] | None = None,
    ) -> httpx.Response:
        target = _target(url)
        path = target.path
        if params:
            path += ("&" if "?" in path else "?") + urllib.parse.urlencode(params)
        head = _head(method, path, target.host_header, headers, len(content), self._agent)
        stage = _Stage()
        try:
            exchange = self._exchange(target.origin, head, content, stage)
            answer = await asyncio.wait_for(exchange, self._timeout)
        except asyncio.TimeoutError:  # before OSError: from 3.11 it is the builtin, an OSError
            raise _TIMEOUTS[stage.name](f"no answer within {self._timeout:g} s") from None
        except OSError as exc:  # refused, reset, unreachable, TLS failures (ssl.SSLError)
            raise _ERRORS[stage.name](str(exc) or type(exc).__name__) from exc
        except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, ValueError) as exc:
            raise httpx.RemoteProtocolError(f"unreadable answer: {type(exc).__name__}") from exc
        if logger.isEnabledFor(logging.DEBUG):
            # The path without its query: Klaviyo's key travels in the query.
            scheme = target.origin[0]
            logger.debug(
                'HTTP Request: %s %s://%s%s "HTTP/1.1 %d %s"',
                method,
                scheme,
                target.host_header,
                target.path.partition("?")[0],
                answer.status,
                answer.reason,
            )
        return httpx.Response(
            answer.status,
            headers=answer.headers,
            content=answer.body,
            extensions={"http_version": b"HTTP/1.1", "reason_phrase": answer.reason.encode("latin-1")},
        )

    async def _exchange(
        self, origin: tuple[str, str, int], head: bytes, content: bytes, stage: _Stage
    ) -> _Answer:
        connection = self._reuse(origin) or await self._connect(origin)
        reader, writer = connection
        keep = False
        try:
            stage.name = "write"
            if len(content) <= _JOIN_LIMIT:
                writer.write(head + content)
            else:
                writer.write(head)
                writer.write(content)
            await writer.drain()
            stage.name = "read"
            answer = await _read_answer(reader)
            keep = answer.keep_alive
            return answer
        finally:
            # A connection is reused only after a whole answer: anything else leaves it mid-message.
            idle = self._idle.setdefault(origin, [])
            if keep and not self._closed and len(idle) < MAX_IDLE_PER_ORIGIN:
                idle.append(connection)
            else:
                writer.close()

    def _reuse(self, origin: tuple[str, str, int]) -> _Connection | None:
        idle = self._idle.get(origin)
        while idle:
            reader, writer = idle.pop()
            if not _has_spoken(reader) and not writer.is_closing():
                return reader, writer
            writer.close()  # the server closed it, or said something, while it was idle
        return None

    async def _connect(self, origin: tuple[str, str, int]) -> _Connection:
        scheme, host, port = origin
        tls = {"ssl": self._ssl, "server_hostname": host} if scheme == "https" else {}
        if _is_ip(host):
            return await asyncio.open_connection(host, port, **tls)  # type: ignore[arg-type]
        error: OSError = OSError(f"{host} has no address")
        for address in await self._addresses(host, port):
            try:
                return await asyncio.open_connection(address, port, **tls)  # type: ignore[arg-type]
            except OSError as exc:  # the next address, as asyncio itself would
                error = exc
        raise error

    async def _addresses(self, host: str, port: int) -> list[str]:
        """``host``'s addresses, looked up once at a time however many requests want them.

        asyncio looks names up on the loop's default executor (a handful of threads), and a lookup
        abandoned on a timeout keeps its thread until the resolver answers: a provider whose name
        resolves slowly, retrying with several requests in flight, took every thread, and the other
        providers' new connections waited behind it. Now it holds one.
        """
        lookup = self._lookups.get(host)
        if lookup is None:
            loop = asyncio.get_running_loop()
            lookup = loop.create_task(loop.getaddrinfo(host, port, type=socket.SOCK_STREAM))
            self._lookups[host] = lookup
            lookup.add_done_callback(functools.partial(self._looked_up, host))
        infos = await asyncio.shield(lookup)  # a request's timeout ends its wait, not the lookup
        return list(dict.fromkeys(str(info[4][0]) for info in infos))

    def _looked_up(self, host: str, lookup: asyncio.Task[Any]) -> None:
        self._lookups.pop(host, None)
        if not lookup.cancelled():
            lookup.exception()  # retrieved: no "never retrieved" warning when every waiter left


@functools.lru_cache(maxsize=64)
def _is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


def _has_spoken(reader: asyncio.StreamReader) -> bool:
    """Whether an idle connection's server sent anything, its end included, since the last answer.

    An idle connection has nothing to say: bytes there (a ``408 Request Timeout`` sent before closing)
    would be read as the answer to the next request. ``at_eof()`` is false while such bytes wait, and
    asyncio has no public way to see them: ``_buffer`` is the StreamReader's bytearray of unread data.
    """
    buffered: bytearray = reader._buffer  # type: ignore[attr-defined]
    return bool(buffered) or reader.at_eof() or reader.exception() is not None


async def _read_answer(reader: asyncio.StreamReader) -> _Answer:
    """One answer: interim (1xx) answers skipped; body by length, by chunks, or up to the close."""
    while True:
        lines = (await reader.readuntil(b"\r\n\r\n")).decode("latin-1").split("\r\n")
        version, _, rest = lines[0].partition(" ")
        code, _, reason = rest.partition(" ")
        status = int(code)
        if not version.startswith("HTTP/1.") or not 100 <= status <= 999:
            raise ValueError("not an HTTP/1.x status line")
        if status >= 200:
            break
    headers: list[tuple[str, str]] = []
    for line in lines[1:]:
        if not line:
            continue
        if line[0] in " \t" and headers:
            # obs-fold: the previous field's value goes on, joined with a space (RFC 9112 5.2). Refused,
            # it made a stored batch look failed, so it was sent again until its deadline.
            name, value = headers[-1]
            headers[-1] = (name, f"{value} {line.strip()}")
            continue
        name, colon, value = line.partition(":")
        if not colon:
            raise ValueError("a header line without a colon")
        headers.append((name.strip(), value.strip()))
    length: int | None = None
    chunked = False
    keep_alive = version != "HTTP/1.0"
    for name, value in headers:
        lower = name.lower()
        if lower == "content-length":
            length = int(value)
            if length < 0:
                raise ValueError("a negative Content-Length")
        elif lower == "transfer-encoding":
            chunked = "chunked" in value.lower()
        elif lower == "connection":
            tokens = value.lower()
            if "close" in tokens:
                keep_alive = False
            elif "keep-alive" in tokens:
                keep_alive = True
    if status in (204, 304):
        body = b""
    elif chunked:
        body = await _read_chunked(reader)
    elif length is not None:
        if length > MAX_ANSWER_BYTES:
            raise ValueError("an answer larger than we read")
        body = await reader.readexactly(length)
    else:  # the body ends where the server closes the connection
        body = await _read_to_close(reader)
        keep_alive = False
    return _Answer(status, reason.strip(), headers, body, keep_alive)


async def _read_chunked(reader: asyncio.StreamReader) -> bytes:
    parts: list[bytes] = []
    total = 0
    while True:
        size = int((await reader.readuntil(b"\r\n")).split(b";", 1)[0], 16)
        if size < 0:
            raise ValueError("a negative chunk size")
        if size == 0:
            while await reader.readuntil(b"\r\n") != b"\r\n":  # trailer fields, ignored
                pass
            return b"".join(parts)
        total += size
        if total > MAX_ANSWER_BYTES:
            raise ValueError("an answer larger than we read")
        parts.append(await reader.readexactly(size))
        if await reader.readexactly(2) != b"\r\n":
            raise ValueError("a chunk without its line end")


async def _read_to_close(reader: asyncio.StreamReader) -> bytes:
    parts: list[bytes] = []
    total = 0
    while chunk := await reader.read(65536):
        total += len(chunk)
        if total > MAX_ANSWER_BYTES:
            raise ValueError("an answer larger than we read")
        parts.append(chunk)
    return b"".join(parts)
