"""Real servers on 127.0.0.1 serving wrapped apps: after N requests and a graceful stop, the JSON-lines
sink holds exactly N request events carrying the cookie's anonymous id.

The flush interval is an hour, so nothing leaves before the stop: every event in the file was
delivered by the stop path under test (lifespan, SIGTERM handler, or atexit in gunicorn's workers).
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

pytestmark = pytest.mark.server

HERE = Path(__file__).parent
N = 12
START_DEADLINE = 20.0
STOP_DEADLINE = 20.0


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def server_env(sink: Path) -> dict[str, str]:
    env = {key: value for key, value in os.environ.items() if not key.startswith("EVMIDDLEWARE_")}
    env["EVMIDDLEWARE_LOCAL_SINK"] = f"jsonl:{sink}"
    env["EVMIDDLEWARE_FLUSH_INTERVAL"] = "3600"
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(HERE), env.get("PYTHONPATH")]))
    return env


def wait_listening(proc: subprocess.Popen[bytes], port: int) -> None:
    deadline = time.monotonic() + START_DEADLINE
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"server exited early: {proc.stderr.read().decode() if proc.stderr else ''}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.05)  # polling the port with a deadline
    proc.kill()
    pytest.fail("server did not start listening")


def run_and_stop(
    command: list[str], port: int, sink: Path, paths: list[str]
) -> tuple[list[httpx.Response], int]:
    proc = subprocess.Popen(
        command, env=server_env(sink), cwd=HERE, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )
    try:
        wait_listening(proc, port)
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=10) as client:
            responses = [client.get(path) for path in paths]
        proc.send_signal(signal.SIGTERM)
        code = proc.wait(timeout=STOP_DEADLINE)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    return responses, code


def delivered(sink: Path) -> list[dict[str, object]]:
    if not sink.exists():
        return []
    return [json.loads(line) for line in sink.read_text().splitlines() if line.strip()]


def check(responses: list[httpx.Response], sink: Path, route: str | None = None) -> None:
    assert all(response.status_code == 200 for response in responses)
    set_cookies = [response.headers.get_list("set-cookie") for response in responses]
    assert len(set_cookies[0]) == 1 and all(not cookies for cookies in set_cookies[1:])
    anonymous_id = set_cookies[0][0].split(";")[0].split("=", 1)[1]
    events = [event for event in delivered(sink) if event["name"] == "http_request"]
    assert len(events) == len(responses)
    assert {event["anonymous_id"] for event in events} == {anonymous_id}
    if route is not None:
        assert {event["properties"]["route"] for event in events} == {route}


def uvicorn_command(factory: str, port: int, lifespan: str) -> list[str]:
    command = [sys.executable, "-m", "uvicorn", factory, "--factory", "--lifespan", lifespan]
    return [*command, "--host", "127.0.0.1", "--port", str(port), "--log-level", "warning"]


def test_uvicorn_lifespan_shutdown_delivers(tmp_path):
    pytest.importorskip("uvicorn")
    sink, port = tmp_path / "events.jsonl", free_port()
    command = uvicorn_command("served_apps:make_starlette", port, "on")
    responses, _ = run_and_stop(command, port, sink, [f"/items/{i}" for i in range(N)])
    check(responses, sink, route="/items/{item_id}")


def test_uvicorn_app_without_lifespan_is_flushed_by_the_middlewares_lifespan(tmp_path):
    pytest.importorskip("uvicorn")
    sink, port = tmp_path / "events.jsonl", free_port()
    command = uvicorn_command("served_apps:make_raw_asgi", port, "auto")
    responses, _ = run_and_stop(command, port, sink, [f"/raw/{i}" for i in range(N)])
    check(responses, sink)


def test_uvicorn_reraised_sigterm_reaches_the_handler_installed_before_it(tmp_path):
    pytest.importorskip("uvicorn")
    sink, port = tmp_path / "events.jsonl", free_port()
    responses, code = run_and_stop([sys.executable, "served_apps.py", str(port)], port, sink, ["/"] * N)
    check(responses, sink)
    assert code == -signal.SIGTERM  # delivered, then the signal took its course


def make_behind_an_async_access_log() -> Any:
    """uvicorn ``--factory``: a Starlette app with the middleware, below an outer middleware whose send
    awaits after handing on each response's last message (an async access log). ``/str-cookie/`` is a
    bare app whose own Set-Cookie value is a str, which h11 serves."""
    import asyncio

    from starlette.applications import Starlette
    from starlette.responses import StreamingResponse
    from starlette.routing import Mount, Route

    from evmiddleware.asgi import EventMiddleware

    async def report(request: Any) -> StreamingResponse:
        return StreamingResponse(iter([b"partial,", b"done"]))

    async def str_cookie(scope: Any, receive: Any, send: Any) -> None:
        headers = [(b"content-type", b"text/plain"), (b"set-cookie", "session=abc; Path=/")]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": b"ok"})

    app = EventMiddleware(Starlette(routes=[Route("/report", report), Mount("/str-cookie", str_cookie)]))

    async def access_log(scope: Any, receive: Any, send: Any) -> None:
        async def logging_send(message: Any) -> None:
            await send(message)
            if message["type"] == "http.response.body" and not message.get("more_body", False):
                await asyncio.sleep(0)  # an async log sink

        await app(scope, receive, logging_send)

    return access_log


def test_uvicorn_responses_behind_an_async_outer_send_are_whole_and_recorded_so(tmp_path):
    # uvicorn answers receive() with http.disconnect once a response is complete; the outer send's
    # await let Starlette's listener read it first, and every streamed response was recorded as
    # disconnected. A str Set-Cookie value raised TypeError in the middleware: a 500 for new visitors.
    pytest.importorskip("uvicorn")
    sink, port = tmp_path / "events.jsonl", free_port()
    command = uvicorn_command("test_servers:make_behind_an_async_access_log", port, "on")
    responses, _ = run_and_stop(command, port, sink, ["/str-cookie/"] + ["/report"] * N)
    assert [response.status_code for response in responses] == [200] * (N + 1)
    assert [response.text for response in responses] == ["ok"] + ["partial,done"] * N
    set_cookies = responses[0].headers.get_list("set-cookie")  # a new visitor: the app's, then ours
    assert [value.split("=")[0] for value in set_cookies] == ["session", "ev_anon_id"]
    events = [event for event in delivered(sink) if event["name"] == "http_request"]
    assert len(events) == N + 1
    assert [event["properties"].get("disconnected") for event in events] == [None] * (N + 1)


def test_gunicorn_workers_deliver_at_exit(tmp_path):
    pytest.importorskip("gunicorn")
    sink, port = tmp_path / "events.jsonl", free_port()
    command = [sys.executable, "-m", "gunicorn", "--workers", "2", "--bind", f"127.0.0.1:{port}"]
    command += ["--graceful-timeout", "10", "--log-level", "warning", "served_apps:make_wsgi()"]
    responses, code = run_and_stop(command, port, sink, [f"/page/{i}" for i in range(N)])
    assert code == 0
    assert responses[3].text == "streamed /page/3"
    check(responses, sink)
