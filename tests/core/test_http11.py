"""The dispatcher's own HTTP/1.1 client against a scripted server on 127.0.0.1.

The server answers each request with the next scripted reply (raw bytes, so every framing an HTTP/1.1
server may use is covered) and records what it received and on which connection.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field

import httpx
import pytest

from evmiddleware.http11 import Http11Client, proxy_configured

OK = b'HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 11\r\n\r\n{"ok":true}'

#: A reply: raw bytes to write, then whether to close the connection; or a coroutine for odd cases.
Reply = tuple[bytes, bool] | Callable[[asyncio.StreamWriter], Awaitable[None]]


@dataclass
class Received:
    connection: int
    head: str
    body: bytes


@dataclass
class Server:
    replies: list[Reply]
    received: list[Received] = field(default_factory=list)
    connections: int = 0
    port: int = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        connection = self.connections
        try:
            while True:
                try:
                    head = (await reader.readuntil(b"\r\n\r\n")).decode("latin-1")
                except asyncio.IncompleteReadError:
                    return
                length = 0
                for line in head.split("\r\n")[1:]:
                    name, _, value = line.partition(":")
                    if name.lower() == "content-length":
                        length = int(value)
                self.received.append(Received(connection, head, await reader.readexactly(length)))
                reply = self.replies.pop(0) if self.replies else (OK, False)
                if callable(reply):
                    await reply(writer)
                    return
                data, close = reply
                writer.write(data)
                await writer.drain()
                if close:
                    return
        finally:
            writer.close()


@contextlib.asynccontextmanager
async def serving(*replies: Reply) -> AsyncIterator[Server]:
    server = Server(list(replies))
    listener = await asyncio.start_server(server.handle, "127.0.0.1", 0)
    server.port = listener.sockets[0].getsockname()[1]
    async with listener:
        yield server


def run(coro: Awaitable[None]) -> None:
    asyncio.run(asyncio.wait_for(coro, 20))  # type: ignore[arg-type]


async def post(client: Http11Client, url: str, body: bytes = b"{}", **kwargs: object) -> httpx.Response:
    headers = {"Content-Type": "application/json", "Authorization": "Bearer k"}
    return await client.request("POST", url, headers=headers, content=body, **kwargs)  # type: ignore[arg-type]


def test_a_request_carries_host_length_agent_and_the_exact_body_and_the_answer_reads_like_httpx_s():
    async def main() -> None:
        answer = b"HTTP/1.1 429 Too Many Requests\r\nRetry-After: 2\r\nContent-Length: 4\r\n\r\nslow"
        async with serving((answer, False)) as server, Http11Client(timeout=5) as client:
            response = await post(client, f"{server.url}/v1/batch/events", b'{"events":[1]}')
        assert response.status_code == 429
        assert response.reason_phrase == "Too Many Requests"
        assert response.headers["retry-after"] == "2"  # any case, as providers read it
        assert response.text == "slow"
        [received] = server.received
        lines = received.head.split("\r\n")
        assert lines[0] == "POST /v1/batch/events HTTP/1.1"
        assert f"Host: 127.0.0.1:{server.port}" in lines
        assert "Content-Length: 14" in lines
        assert "Authorization: Bearer k" in lines
        assert any(line.startswith("User-Agent: evmiddleware/") for line in lines)
        assert received.body == b'{"events":[1]}'

    run(main())


def test_a_large_body_arrives_whole():
    body = bytes(range(256)) * 4096  # 1 MiB, past the size sent in one write with the head

    async def main() -> None:
        async with serving() as server, Http11Client(timeout=10) as client:
            assert (await post(client, server.url + "/", body)).status_code == 200
        assert server.received[0].body == body

    run(main())


def test_params_are_added_to_the_query():
    async def main() -> None:
        async with serving() as server, Http11Client(timeout=5) as client:
            await post(client, f"{server.url}/client/bulk/", params={"company_id": "Ab 1&"})
            await post(client, f"{server.url}/p?x=1", params={"y": "2"})
        assert server.received[0].head.startswith("POST /client/bulk/?company_id=Ab+1%26 HTTP/1.1")
        assert server.received[1].head.startswith("POST /p?x=1&y=2 HTTP/1.1")

    run(main())


def test_connections_are_kept_alive_and_reused():
    async def main() -> None:
        async with serving() as server, Http11Client(timeout=5) as client:
            for _ in range(3):
                assert (await post(client, server.url + "/")).status_code == 200
        assert server.connections == 1
        assert len(server.received) == 3

    run(main())


def test_concurrent_requests_each_get_a_connection_and_all_are_kept():
    async def main() -> None:
        async with serving() as server, Http11Client(timeout=5) as client:
            await asyncio.gather(*(post(client, server.url + "/") for _ in range(3)))
            await asyncio.gather(*(post(client, server.url + "/") for _ in range(3)))
        assert server.connections == 3

    run(main())


@pytest.mark.parametrize(
    ("answer", "closes"),
    [
        (
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
            b'4;ext=1\r\n{"ok\r\n7\r\n":true}\r\n0\r\nX-Trailer: 1\r\n\r\n',
            False,
        ),
        (b'HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 11\r\n\r\n{"ok":true}', False),
        (b'HTTP/1.1 200 OK\r\ncontent-length: 11\r\n\r\n{"ok":true}', False),
        (b'HTTP/1.1 200 OK\r\nConnection: close\r\n\r\n{"ok":true}', True),  # the body ends at the close
        (b'HTTP/1.0 200 OK\r\nContent-Length: 11\r\n\r\n{"ok":true}', True),  # 1.0 closes unless it says not
    ],
    ids=[
        "chunked with an extension and a trailer",
        "after an interim 100",
        "lower-case header",
        "until close",
        "HTTP/1.0",
    ],
)
def test_answers_framed_any_valid_way_are_read_and_the_connection_reused_unless_it_closes(answer, closes):
    async def main() -> None:
        async with serving((answer, closes)) as server, Http11Client(timeout=5) as client:
            first = await post(client, server.url + "/")
            second = await post(client, server.url + "/")
        assert first.json() == {"ok": True}
        assert second.status_code == 200
        assert server.connections == (2 if closes else 1)

    run(main())


def test_a_204_has_no_body_and_keeps_the_connection():
    async def main() -> None:
        async with (
            serving((b"HTTP/1.1 204 No Content\r\n\r\n", False)) as server,
            Http11Client(timeout=5) as client,
        ):
            assert (await post(client, server.url + "/")).content == b""
            assert (await post(client, server.url + "/")).status_code == 200
        assert server.connections == 1

    run(main())


def test_a_connection_the_server_closed_while_idle_is_not_used_again():
    async def main() -> None:
        # The reply is written, then the server closes the connection as an idle timeout would.
        async with serving((OK, True)) as server, Http11Client(timeout=5) as client:
            await post(client, server.url + "/")
            await asyncio.sleep(0.05)  # the close reaches the client's loop
            assert (await post(client, server.url + "/")).status_code == 200
        assert server.connections == 2

    run(main())


@pytest.mark.parametrize("closes", [True, False], ids=["then-closes", "stays-open"])
def test_an_idle_connection_the_server_spoke_on_is_not_used_again(closes):
    async def main() -> None:
        # After the answer, the server sends a 408 on the idle connection (as at its idle timeout):
        # read by the next request, that stale 408 would be taken for its answer.
        timeout = b"HTTP/1.1 408 Request Timeout\r\nConnection: close\r\nContent-Length: 0\r\n\r\n"
        async with serving((OK + timeout, closes)) as server, Http11Client(timeout=5) as client:
            await post(client, server.url + "/")
            await asyncio.sleep(0.05)  # the 408 (and the close) reach the client's loop
            assert (await post(client, server.url + "/")).status_code == 200
        assert server.connections == 2

    run(main())


def test_no_listener_is_a_connect_error():
    async def main() -> None:
        async with serving() as server:
            url = server.url
        async with Http11Client(timeout=5) as client:
            with pytest.raises(httpx.ConnectError):
                await post(client, url + "/")

    run(main())


def test_a_server_that_never_answers_is_a_read_timeout():
    async def silent(writer: asyncio.StreamWriter) -> None:
        await asyncio.sleep(5)

    async def main() -> None:
        async with serving(silent) as server, Http11Client(timeout=0.2) as client:
            with pytest.raises(httpx.ReadTimeout):
                await post(client, server.url + "/")

    run(main())


async def _hang_up(writer: asyncio.StreamWriter) -> None:
    writer.close()


async def _half_answer(writer: asyncio.StreamWriter) -> None:
    writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nshort")
    await writer.drain()


@pytest.mark.parametrize(
    "reply",
    [
        _hang_up,
        _half_answer,
        (b"SSH-2.0-OpenSSH_9.6\r\n\r\n", True),
        (b"HTTP/1.1 200 OK\r\nno colon here\r\n\r\n", True),
        (b"HTTP/1.1 200 OK\r\nContent-Length: -1\r\n\r\n", True),
        (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n", True),
    ],
    ids=[
        "closed without an answer",
        "body cut short",
        "not HTTP",
        "bad header",
        "negative length",
        "bad chunk",
    ],
)
def test_an_answer_that_cannot_be_read_is_a_transport_error_and_the_connection_is_dropped(reply):
    async def main() -> None:
        async with serving(reply) as server, Http11Client(timeout=5) as client:
            with pytest.raises(httpx.TransportError):
                await post(client, server.url + "/")
            assert (await post(client, server.url + "/")).status_code == 200
        assert server.connections == 2

    run(main())


def test_a_header_value_with_a_line_break_is_refused_before_anything_is_sent():
    async def main() -> None:
        async with serving() as server, Http11Client(timeout=5) as client:
            with pytest.raises(httpx.LocalProtocolError):
                await client.request(
                    "POST", server.url + "/", headers={"X-Key": "a\r\nX-Injected: 1"}, content=b"{}"
                )
        assert server.received == []

    run(main())


def test_proxy_configured_reads_the_variables_httpx_reads(monkeypatch):
    for name in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy", "all_proxy"):
        monkeypatch.delenv(name, raising=False)
    assert not proxy_configured()
    monkeypatch.setenv("NO_PROXY", "localhost")  # on its own it configures no proxy
    assert not proxy_configured()
    for name in ("HTTPS_PROXY", "all_proxy"):
        monkeypatch.setenv(name, "http://proxy.invalid:3128")
        assert proxy_configured()
        monkeypatch.delenv(name)


def test_a_folded_header_line_is_joined_to_the_field_before_it():
    # RFC 9112 5.2: obs-fold is replaced by a space. Refused, it made a stored batch look failed.
    folded = b'HTTP/1.1 200 OK\r\nX-Long: a\r\n  b: c\r\n\tdone\r\nContent-Length: 11\r\n\r\n{"ok":true}'

    async def main() -> None:
        async with serving((folded, False)) as server, Http11Client(timeout=5) as client:
            response = await post(client, server.url + "/")
            assert (response.status_code, response.headers["x-long"], response.text) == (
                200,
                "a b: c done",
                '{"ok":true}',
            )
            assert (await post(client, server.url + "/")).status_code == 200
        assert server.connections == 1  # read whole, so kept

    run(main())


def test_requests_to_one_host_name_share_one_lookup():
    # A lookup holds one of the loop's few executor threads until the resolver answers (a timeout
    # does not free it): requests retrying to a slowly resolving host took them all.
    lookups: list[str] = []

    async def main() -> None:
        loop = asyncio.get_running_loop()
        resolve = loop.getaddrinfo

        async def slow_lookup(host, *args, **kwargs):  # type: ignore[no-untyped-def]
            lookups.append(host)
            await asyncio.sleep(0.2)
            return await resolve(host, *args, **kwargs)

        loop.getaddrinfo = slow_lookup  # type: ignore[method-assign]
        async with serving() as server, Http11Client(timeout=5) as client:
            url = f"http://localhost:{server.port}/"
            answers = await asyncio.gather(*(post(client, url) for _ in range(6)))
        assert [answer.status_code for answer in answers] == [200] * 6
        assert lookups == ["localhost"]

    run(main())


def test_with_httpx_the_request_timeout_bounds_the_whole_request():
    # httpx's timeouts bound each read: a server sending a byte at a time held a batch for good.
    from evmiddleware.dispatcher import _WholeRequestTimeout

    async def trickle(writer: asyncio.StreamWriter) -> None:
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n")
        for _ in range(100):
            writer.write(b"x")
            await writer.drain()
            await asyncio.sleep(0.05)

    async def main() -> None:
        client = _WholeRequestTimeout(httpx.AsyncClient(timeout=0.3), 0.3)
        async with serving(trickle) as server, client:
            with pytest.raises(httpx.ReadTimeout):  # was the whole body, 5 s later
                await client.request("POST", server.url + "/", headers={}, content=b"{}")

    run(main())
