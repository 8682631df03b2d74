"""Serve an example app with a real server, visit it, stop it gracefully, and read what the sandbox got.

The flush interval is an hour, so nothing leaves while the server runs: every event in the sandbox
was delivered by the stop path (lifespan shutdown, SIGTERM handling, atexit in gunicorn's workers).
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

from evmiddleware.sandbox import PROVIDERS, Sandbox

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "example_apps"
START_DEADLINE = 30.0
STOP_DEADLINE = 40.0

#: The visit: a sign-in, then pages; ``/health`` is excluded by the apps' configuration.
TRACKED: list[tuple[str, str]] = [
    ("POST", "/login"),
    *[("GET", f"/items/{i}") for i in range(1, 11)],
    ("GET", "/stream"),
]
UNTRACKED: list[tuple[str, str]] = [("GET", "/health")]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def gunicorn(target: str, port: int) -> list[str]:
    """Two forked workers of an app loaded once in the master (``--preload``)."""
    command = [sys.executable, "-m", "gunicorn", "--workers", "2", "--preload", "--bind", f"127.0.0.1:{port}"]
    return [*command, "--graceful-timeout", "20", "--log-level", "warning", target]


def uvicorn(target: str, port: int) -> list[str]:
    command = [sys.executable, "-m", "uvicorn", target, "--host", "127.0.0.1", "--port", str(port)]
    return [*command, "--log-level", "warning"]


def _env(sandbox: Sandbox) -> dict[str, str]:
    env = {key: value for key, value in os.environ.items() if not key.startswith("EVMIDDLEWARE_")}
    env.pop("DJANGO_SETTINGS_MODULE", None)
    env.update(sandbox.env())
    env.update(
        EVMIDDLEWARE_FLUSH_INTERVAL="3600",
        EVMIDDLEWARE_SHUTDOWN_TIMEOUT="20",
        PYTHONPATH=os.pathsep.join(filter(None, [str(EXAMPLES), str(ROOT), env.get("PYTHONPATH")])),
    )
    return env


def _wait_listening(proc: subprocess.Popen[bytes], port: int) -> None:
    deadline = time.monotonic() + START_DEADLINE
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            stderr = proc.stderr.read().decode() if proc.stderr else ""
            pytest.fail(f"server exited early ({proc.returncode}): {stderr}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.05)  # polling the port, bounded by the deadline
    pytest.fail("server did not start listening")


def serve_visit_and_stop(command: list[str], port: int, sandbox: Sandbox) -> list[httpx.Response]:
    """Start the server, make the visit (one visitor, cookies kept), SIGTERM it and wait for its exit."""
    proc = subprocess.Popen(
        command, env=_env(sandbox), cwd=EXAMPLES, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )
    try:
        _wait_listening(proc, port)
        responses = []
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=10) as client:
            for method, path in [*TRACKED[:1], *UNTRACKED, *TRACKED[1:]]:
                body = {"user_id": "shopper"} if path == "/login" else None
                responses.append(client.request(method, path, json=body))
        assert sandbox.stats()["providers"]["userflux"]["accepted_events"] == 0, "sent before the stop"
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=STOP_DEADLINE)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    return responses


def _request_properties(node: Any) -> dict[str, Any] | None:
    """The request event's properties, wherever a provider's wire format puts them."""
    if isinstance(node, dict):
        if "status_code" in node and "path" in node:
            return node
        for value in node.values():
            found = _request_properties(value)
            if found is not None:
                return found
    elif isinstance(node, list):
        for value in node:
            found = _request_properties(value)
            if found is not None:
                return found
    return None


def check_delivered_exactly_once(sandbox: Sandbox, responses: list[httpx.Response]) -> None:
    """Every provider holds each tracked request's event once; nothing else, nothing twice."""
    assert [response.status_code for response in responses] == [200] * len(responses)
    cookies = [response.headers.get_list("set-cookie") for response in responses]
    anonymous = [value for value in cookies[0] if value.startswith("ev_anon_id=")]
    assert len(anonymous) == 1, cookies[0]
    assert not any(value.startswith("ev_anon_id=") for later in cookies[1:] for value in later)
    anonymous_id = anonymous[0].split(";")[0].split("=", 1)[1]
    expected = sorted(path for _, path in TRACKED)
    stats = sandbox.stats()["providers"]
    for provider in PROVIDERS:
        accepted = sandbox.accepted(provider)
        paths = sorted(props["path"] for props in map(_request_properties, accepted) if props is not None)
        assert paths == expected, f"{provider}: {paths}"
        assert stats[provider]["duplicates"] == 0, provider
        assert stats[provider]["rejected_events"] == 0, provider
    userflux = [event for event in sandbox.accepted("userflux") if event["name"] == "http_request"]
    assert {event["anonymousId"] for event in userflux} == {anonymous_id}
    assert {event["userId"] for event in userflux} == {"shopper"}
    dumped = json.dumps(sandbox.accepted("flokit"))
    assert '"/health"' not in dumped
