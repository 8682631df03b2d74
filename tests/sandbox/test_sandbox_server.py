from __future__ import annotations

import http.client
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from evmiddleware.sandbox import PROVIDERS, Fault, Sandbox, SandboxKeys

from ._payloads import KEYS, fk_event, fk_headers, fk_url, post, uf_event, uf_headers, uf_url

_STAT_KEYS = {
    "requests",
    "accepted_events",
    "rejected_requests",
    "rejected_events",
    "rate_limited",
    "duplicates",
    "largest_batch",
    "faults",
    "status_counts",
}


def test_stats_shape_over_http(sb, client):
    post(client, uf_url(sb), uf_event(), uf_headers())
    stats = client.get(sb.url + "/_stats").json()
    assert set(stats) == {"providers"}
    assert set(stats["providers"]) == set(PROVIDERS)
    for counters in stats["providers"].values():
        assert set(counters) == _STAT_KEYS
    assert stats["providers"]["userflux"]["status_counts"] == {"204": 1}
    assert stats == sb.stats()


def test_faults_over_http(sb, client):
    r = client.post(sb.url + "/_faults", json={"provider": "flokit", "kind": "status", "status": 503})
    assert r.status_code == 200
    assert client.get(sb.url + "/_faults").json()["flokit"][0]["status"] == 503
    assert post(client, fk_url(sb), fk_event(), fk_headers()).status_code == 503
    client.post(sb.url + "/_faults", json={"provider": "flokit", "kind": "close", "count": None})
    assert client.delete(sb.url + "/_faults").status_code == 200
    assert post(client, fk_url(sb), fk_event(), fk_headers()).status_code == 200


@pytest.mark.parametrize(
    "body",
    [
        {"kind": "status"},
        {"provider": "segment", "kind": "status"},
        {"provider": "flokit", "kind": "melt"},
        {"provider": "flokit", "kind": "status", "colour": "red"},
        {"provider": "flokit", "kind": "slow", "seconds": "1"},
        {"provider": "flokit", "kind": "status", "count": True},
        ["flokit"],
    ],
)
def test_bad_fault_over_http(sb, client, body):
    r = client.post(sb.url + "/_faults", json=body)
    assert r.status_code == 400
    assert "message" in r.json()


def test_reset_over_http(sb, client):
    post(client, uf_url(sb), uf_event(), uf_headers())
    sb.inject("flokit", Fault("close", count=None))
    assert client.post(sb.url + "/_reset").status_code == 200
    stats = sb.stats()["providers"]
    assert all(s["requests"] == 0 and s["status_counts"] == {} for s in stats.values())
    assert sb.accepted("userflux") == []
    assert sb.requests("userflux") == []
    assert post(client, fk_url(sb), fk_event(), fk_headers()).status_code == 200


def test_unknown_paths(sb, client):
    assert client.get(sb.url + "/segment/v1/track").status_code == 404
    r = post(client, sb.base_url("flokit") + "/v2/events", fk_event(), fk_headers())
    assert r.status_code == 404
    assert set(r.json()) == {"error", "message"}
    assert client.get(fk_url(sb), headers=fk_headers()).status_code == 405
    assert client.get(sb.url + "/_nothing").status_code == 404


def test_keep_alive_and_content_length(sb):
    conn = http.client.HTTPConnection("127.0.0.1", sb.port, timeout=5)
    try:
        for _ in range(3):
            conn.request("POST", "/userflux/event/ingest", body=b'{"name":"x"}', headers=uf_headers())
            r = conn.getresponse()
            assert r.status == 204
            assert r.read() == b""
            conn.request("GET", "/_stats")
            r = conn.getresponse()
            body = r.read()
            assert int(r.getheader("Content-Length")) == len(body)
            assert r.getheader("Connection") != "close"
    finally:
        conn.close()
    assert sb.stats()["providers"]["userflux"]["requests"] == 3


def test_chunked_request_body(sb, client):
    chunks = iter([b'{"name":', b'"chunked"}'])
    r = client.post(uf_url(sb), content=chunks, headers=uf_headers())
    assert r.status_code == 204
    assert sb.accepted("userflux") == [{"name": "chunked"}]


def test_binds_loopback_and_env(sb):
    assert sb.url.startswith("http://127.0.0.1:")
    env = sb.env()
    assert env["EVMIDDLEWARE_FLOKIT_URL"] == f"{sb.url}/flokit"
    assert env["EVMIDDLEWARE_FLAMEUP_URL"] == f"{sb.url}/flameup/api/v1"
    assert env["EVMIDDLEWARE_KLAVIYO_PUBLIC_KEY"] == "AbC123"
    assert env["EVMIDDLEWARE_FLYWHEEL_API_KEY"] == sb.keys.flywheel_api_key
    assert set(env) == {
        f"EVMIDDLEWARE_{name}"
        for name in (
            "USERFLUX_API_KEY",
            "USERFLUX_URL",
            "FLOKIT_API_KEY",
            "FLOKIT_URL",
            "FLAMEUP_API_KEY",
            "FLAMEUP_WORKSPACE_ID",
            "FLAMEUP_URL",
            "FLYWHEEL_API_KEY",
            "FLYWHEEL_URL",
            "KLAVIYO_PUBLIC_KEY",
            "KLAVIYO_REVISION",
            "KLAVIYO_URL",
        )
    }


def test_custom_keys_and_repr_hides_secrets(client):
    keys = SandboxKeys(flokit_api_key="fk_custom_secret")
    assert "fk_custom_secret" not in repr(keys)
    with Sandbox(keys=keys) as sb:
        assert post(client, fk_url(sb), fk_event(), fk_headers("fk_custom_secret")).status_code == 200
        assert post(client, fk_url(sb), fk_event(), fk_headers()).status_code == 401
    with pytest.raises(ValueError):
        SandboxKeys(klaviyo_company_id="pk_secret")


def test_wait_for_is_bounded(sb, client):
    start = time.monotonic()
    assert not sb.wait_for(lambda s: s["providers"]["flokit"]["requests"] > 0, timeout=0.2)
    assert 0.2 <= time.monotonic() - start < 1.0
    post(client, fk_url(sb), fk_event(), fk_headers())
    assert sb.wait_for(lambda s: s["providers"]["flokit"]["accepted_events"] == 1, timeout=1.0)


def test_stops_promptly_with_idle_keep_alive_connection():
    sb = Sandbox().start()
    port = sb.port
    idle = httpx.Client(timeout=5.0)
    assert post(idle, uf_url(sb), uf_event(), uf_headers()).status_code == 204  # leaves it pooled
    start = time.monotonic()
    sb.stop()
    assert time.monotonic() - start < 1.0
    with pytest.raises(httpx.TransportError):
        idle.get(f"http://127.0.0.1:{port}/_stats")
    idle.close()
    sb.stop()  # idempotent
    with pytest.raises(RuntimeError):
        _ = sb.port


def test_serve_prints_env_and_stops_on_ctrl_c():
    src = Path(__file__).resolve().parents[2] / "src"
    env = {**os.environ, "PYTHONPATH": str(src)}
    # A test run started in the background (``&``, nohup) hands SIGINT down ignored, and Python then
    # installs no KeyboardInterrupt handler: give the child the handler a terminal's Ctrl-C meets.
    code = (
        "import signal; signal.signal(signal.SIGINT, signal.default_int_handler)\n"
        "from evmiddleware.sandbox import serve; serve(0)"
    )
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True, env=env)
    try:
        lines = []
        assert proc.stdout is not None
        for line in proc.stdout:
            lines.append(line)
            if "Ctrl-C" in line:
                break
        text = "".join(lines)
        assert "export EVMIDDLEWARE_FLOKIT_URL=http://127.0.0.1:" in text
        assert "/flameup/api/v1" in text
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=5) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def _raw_answer(sb: Sandbox, request: bytes) -> tuple[bytes, bytes]:
    """The status line of the answer to ``request`` sent over a raw socket, and what follows it to EOF
    (the sandbox closes the connection after a malformed request). The socket stays open for writing,
    as a client waiting for an answer would keep it."""
    with socket.create_connection(("127.0.0.1", sb.port), timeout=5) as sock:
        sock.sendall(request)
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
    status, _, rest = data.partition(b"\r\n")
    return status, rest


_CHUNKED_HEAD = (
    b"POST /flokit/v1/batch/events HTTP/1.1\r\nHost: x\r\n"
    b"Authorization: Bearer " + KEYS.flokit_api_key.encode() + b"\r\n"
    b"Content-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n"
)


@pytest.mark.parametrize("size", [b"-1", b"+5", b"0x5", b" ", b"5 5", b"1" * 17, b"\xff"])
def test_a_chunk_size_that_is_not_hex_digits_is_answered_400(sb, size):
    """int(size, 16) took "-1", and rfile.read(-1) then read to EOF: unbounded, and blocked meanwhile."""
    status, _ = _raw_answer(sb, _CHUNKED_HEAD + size + b"\r\nabc")
    assert status == b"HTTP/1.1 400 Bad Request"
    assert sb.stats()["providers"]["flokit"]["requests"] == 0


def test_chunk_extensions_are_allowed_and_a_huge_chunk_is_413(sb):
    body = json.dumps({"events": [fk_event()]}).encode()
    chunk = b"%x;name=value\r\n" % len(body) + body + b"\r\n0\r\n\r\n"
    closing = _CHUNKED_HEAD.replace(b"Host: x\r\n", b"Host: x\r\nConnection: close\r\n")
    assert _raw_answer(sb, closing + chunk)[0] == b"HTTP/1.1 200 OK"
    assert sb.accepted("flokit") == [fk_event()]
    status, _ = _raw_answer(sb, _CHUNKED_HEAD + b"F" * 16 + b"\r\nabc")
    assert status.startswith(b"HTTP/1.1 413 ")  # the phrase is "Content Too Large" from Python 3.13


@pytest.mark.parametrize("target", [b"http://[::1/flokit/v1/events", b"http://x]/_stats"])
def test_a_request_target_urlsplit_rejects_is_answered_400(sb, target, caplog):
    """urlsplit() raised ValueError: the handler died with a logged traceback and sent nothing."""
    status, rest = _raw_answer(sb, b"POST " + target + b" HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n")
    assert status == b"HTTP/1.1 400 Bad Request"
    assert b"Connection: close" in rest
    assert not [r for r in caplog.records if r.name == "evmiddleware.sandbox"]
