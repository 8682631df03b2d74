"""API keys never leave through logs, reprs, reasons or exceptions; transport is https, verified, and
credentials never follow a redirect.

The sandbox's keys are the secrets here: every provider is configured with them, so the success paths
run too, and faults make each provider echo its key back in every place an answer can carry text.
"""

from __future__ import annotations

import contextlib
import http.server
import io
import json
import logging
import shutil
import ssl
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import evmiddleware
from evmiddleware import cli, signals
from evmiddleware.config import load_settings
from evmiddleware.errors import ConfigurationError
from evmiddleware.events import make_event
from evmiddleware.providers.base import Encoded
from tests.faults import harness
from tests.faults.harness import PROVIDERS, SandboxProcess
from tests.httpserver import Answer, RecordingServer
from tests.providers._helpers import batch_of

KEY_SETTINGS = {
    "userflux": "EVMIDDLEWARE_USERFLUX_API_KEY",
    "flokit": "EVMIDDLEWARE_FLOKIT_API_KEY",
    "flameup": "EVMIDDLEWARE_FLAMEUP_API_KEY",
    "flywheel": "EVMIDDLEWARE_FLYWHEEL_API_KEY",
    "klaviyo": "EVMIDDLEWARE_KLAVIYO_PUBLIC_KEY",
}


def keys_of(sandbox: SandboxProcess) -> dict[str, str]:
    return {provider: sandbox.env[setting] for provider, setting in KEY_SETTINGS.items()}


def leaks(text: str, keys: dict[str, str]) -> list[str]:
    return [provider for provider, key in keys.items() if key in text]


def echoing_faults(provider: str, key: str) -> list[dict[str, Any]]:
    """Answers that carry the key back, in each place an answer can carry text."""
    faults: list[dict[str, Any]] = [
        {"kind": "status", "status": 400, "body": json.dumps({"error": "bad", "message": f"bad key {key}"})},
        {"kind": "status", "status": 401, "body": json.dumps({"error": "unauthorized", "message": key})},
        {"kind": "status", "status": 503, "body": f"<html>upstream refused {key}</html>"},
        {"kind": "status", "status": 200, "body": json.dumps({"success": False, "error": f"key {key}"})},
        {"kind": "truncate"},
        {"kind": "close"},
    ]
    if provider == "flokit":  # per-event reasons in a 200
        answer = {"status": "ok", "accepted": 0, "errors": [{"index": 0, "reason": f"rejected for {key}"}]}
        faults.append({"kind": "status", "status": 200, "body": json.dumps(answer)})
    if provider == "flameup":  # 422 field details
        error = {"message": f"invalid for {key}", "details": {"fields": {"userId": f"{key} is wrong"}}}
        faults.append({"kind": "status", "status": 422, "body": json.dumps({"error": error})})
    if provider == "klaviyo":  # JSON:API errors
        errors = [{"detail": f"Invalid Company ID {key}", "source": {"parameter": "company_id"}}]
        faults.append({"kind": "status", "status": 400, "body": json.dumps({"errors": errors})})
    return faults


def test_keys_never_appear_in_logs_at_any_level_in_signals_or_stats_even_when_echoed_back(sandbox, caplog):
    keys = keys_of(sandbox)
    caplog.set_level(logging.DEBUG)  # every logger, httpx's and httpcore's included
    reasons: list[str] = []

    def on_dropped(sender: Any, event: Any, provider: Any, reason: str, **extra: Any) -> None:
        reasons.append(reason)

    def on_failed(sender: Any, provider: str, count: int, reason: str, **extra: Any) -> None:
        reasons.append(reason)

    harness.configure(sandbox, request_timeout=1.0)
    faults = {provider: echoing_faults(provider, keys[provider]) for provider in PROVIDERS}
    for provider, list_ in faults.items():
        for fault in list_:
            sandbox.inject(provider, **fault)
    with signals.event_dropped.connected_to(on_dropped), signals.batch_failed.connected_to(on_failed):
        for n in range(12):
            evmiddleware.track("secret_probe", {"n": n}, user_id=f"user-{n % 2}")
            evmiddleware.flush(10)  # one request at a time: each meets the next fault
        stats = evmiddleware.stats()
    assert all(sandbox.stats()[p]["faults"] == len(faults[p]) for p in PROVIDERS)
    assert reasons  # the echoing answers were reported
    assert any("[redacted]" in reason for reason in reasons)
    assert "[redacted]" in caplog.text
    assert leaks(caplog.text, keys) == []
    for record in caplog.records:  # also the raw parts a handler with another format would show
        assert leaks(record.getMessage() + str(record.args or ""), keys) == [], record.name
    assert leaks("\n".join(reasons), keys) == []
    assert leaks(repr(stats), keys) == []


@pytest.mark.parametrize("client", ["own", "httpx"])
def test_the_klaviyo_key_in_the_request_url_never_reaches_a_log_line(sandbox, caplog, monkeypatch, client):
    """Our client logs each request at DEBUG without its query; httpx, used when a proxy is set,
    logs the whole URL at INFO and our filter redacts the key from it."""
    if client == "httpx":
        # A proxy makes the dispatcher use httpx; NO_PROXY keeps the sandbox reached directly.
        monkeypatch.setenv("HTTPS_PROXY", "http://127.0.0.1:9")
        monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")
    logger = "httpx" if client == "httpx" else "evmiddleware"
    caplog.set_level(logging.DEBUG, logger=logger)
    harness.configure(sandbox)
    evmiddleware.track("url_probe", user_id="visitor")
    assert evmiddleware.flush(10)
    lines = [r.getMessage() for r in caplog.records if r.name == logger]
    assert any("/klaviyo/client/event-bulk-create/" in line for line in lines)  # each URL is logged
    assert leaks("\n".join(lines), keys_of(sandbox)) == []


def test_reprs_and_strs_of_settings_providers_events_batches_and_requests_never_show_a_key(sandbox):
    keys = keys_of(sandbox)
    settings = load_settings({}, sandbox.env)
    harness.configure(sandbox)
    event_id = evmiddleware.track("repr_probe", {"n": 1}, user_id="visitor")
    assert event_id is not None
    texts = [repr(settings), str(settings), repr(evmiddleware.stats())]
    for provider in settings.providers:
        event = make_event(
            "repr_probe", {}, user_id="u", anonymous_id=None, max_depth=10, max_bytes=1000, on_drop=print
        )
        batch = batch_of([Encoded(event, provider.encode(event))], provider.group_key(event), "batch-key")
        request = provider.build_request(batch)  # type: ignore[attr-defined]
        texts += [repr(provider), str(provider), provider.describe(), repr(event), repr(batch)]
        texts += [repr(request), str(request)]
        assert set(provider.secrets()) & set(keys.values())  # the key is there, just never shown
    assert leaks("\n".join(texts), keys) == []


def test_evmiddleware_check_prints_where_events_go_without_any_key(sandbox, monkeypatch, capsys):
    for name, value in sandbox.env.items():
        monkeypatch.setenv(name, value)
    assert cli.main(["check"]) == 0
    out = capsys.readouterr()
    assert "klaviyo" in out.out
    assert leaks(out.out + out.err, keys_of(sandbox)) == []


@pytest.mark.parametrize("provider", PROVIDERS)
def test_configuration_errors_name_the_setting_never_the_key(provider):
    key = "sk-SECRET-4242 with space"
    options = {f"{provider}_{'public_key' if provider == 'klaviyo' else 'api_key'}": key}
    if provider == "flameup":
        options["flameup_workspace_id"] = "ws_1"
    with pytest.raises(ConfigurationError) as caught:
        evmiddleware.configure(**options)
    assert "SECRET" not in str(caught.value) and "SECRET" not in repr(caught.value)
    with pytest.raises(ConfigurationError) as caught:
        evmiddleware.configure(**{**options, options_key(provider): "sk-SECRET-4242", "bogus_setting": "x"})
    assert "SECRET" not in str(caught.value)


def options_key(provider: str) -> str:
    return f"{provider}_{'public_key' if provider == 'klaviyo' else 'api_key'}"


def test_a_private_klaviyo_key_is_refused_without_being_repeated():
    with pytest.raises(ConfigurationError) as caught:
        evmiddleware.configure(klaviyo_public_key="pk_SECRETprivate0123")
    assert "SECRETprivate0123" not in str(caught.value)


# -- https only, verified, no redirects --------------------------------------------------------------
@pytest.mark.parametrize("provider", PROVIDERS)
@pytest.mark.parametrize(
    "url",
    [
        "http://api.example.com",
        "http://10.0.0.1:8080",
        "http://0.0.0.0:9000",
        "http://localhost.example.com",
        "http://127.0.0.1.nip.io",
        "ftp://127.0.0.1/",
        "https://",
        "//api.example.com",
        "api.example.com",
    ],
)
def test_only_https_or_plain_http_to_loopback_is_accepted(provider, url):
    options = {options_key(provider): "k3y-value", f"{provider}_url": url}
    if provider == "flameup":
        options["flameup_workspace_id"] = "ws_1"
    with pytest.raises(ConfigurationError, match=f"{provider}_url"):
        evmiddleware.configure(**options)


@pytest.mark.parametrize(
    "url", ["https://api.example.com", "http://127.0.0.1:1", "http://localhost:1", "http://[::1]:1"]
)
def test_https_anywhere_and_plain_http_to_loopback_are_accepted(url):
    evmiddleware.configure(flokit_api_key="k3y-value", flokit_url=url)


@pytest.mark.parametrize("status", [301, 302, 307, 308])
def test_a_redirect_is_never_followed_so_credentials_never_reach_another_host(status):
    with RecordingServer() as elsewhere:
        redirect = Answer(status, b"moved", {"Location": f"{elsewhere.url}/steal"})
        with RecordingServer(lambda server, received: redirect) as provider_host:
            evmiddleware.configure(
                userflux_api_key="uf-k3y-value",
                userflux_url=provider_host.url,
                flokit_api_key="fk-k3y-value",
                flokit_url=provider_host.url,
                flameup_api_key="fu-k3y-value",
                flameup_workspace_id="ws_1",
                flameup_url=provider_host.url,
                flywheel_api_key="fw-k3y-value",
                flywheel_url=provider_host.url,
                klaviyo_public_key="KlPub9",
                klaviyo_url=provider_host.url,
                flush_interval=0.05,
            )
            evmiddleware.track("redirect_probe", user_id="visitor")
            assert not evmiddleware.flush(10)
            assert len(provider_host.received) == len(PROVIDERS)
    assert elsewhere.received == []
    for row in evmiddleware.stats()["providers"].values():
        assert row["rejected_reasons"] == {f"http_{status}": 1}
        assert row["retried"] == 0


@contextlib.contextmanager
def tls_server(tmp_path: Path) -> Iterator[tuple[int, Path, list[str]]]:
    """An https server on 127.0.0.1 with a self-signed certificate; yields (port, cert, paths seen)."""
    if shutil.which("openssl") is None:
        pytest.skip("openssl is needed to make a test certificate")
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    request = [
        "openssl",
        "req",
        "-x509",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-days",
        "1",
        "-subj",
        "/CN=127.0.0.1",
    ]
    subprocess.run(
        [*request, "-addext", "subjectAltName=IP:127.0.0.1", "-keyout", str(key), "-out", str(cert)],
        check=True,
        capture_output=True,
        timeout=60,
    )
    seen: list[str] = []

    class Handler(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_POST(self) -> None:
            seen.append(self.path)
            self.rfile.read(int(self.headers.get("Content-Length", "0")))
            body = b'{"status":"ok","errors":[]}'
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    server.socket = context.wrap_socket(server.socket, server_side=True)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield server.server_address[1], cert, seen
    finally:
        server.shutdown()
        server.server_close()


def test_certificates_are_verified_an_untrusted_one_gets_no_request_and_is_counted(tmp_path, caplog):
    with tls_server(tmp_path) as (port, _cert, seen):
        evmiddleware.configure(
            flokit_api_key="fk-k3y-value",
            flokit_url=f"https://127.0.0.1:{port}",
            flush_interval=0.05,
            retry_base_delay=0.05,
            retry_max_delay=0.2,
            retry_deadline=1.0,
        )
        evmiddleware.track("tls_probe", user_id="visitor")
        assert not evmiddleware.flush(10)
    assert seen == []  # the handshake failed: no request, no header, no key went out
    assert evmiddleware.stats()["providers"]["flokit"]["dropped"] == {"retry_deadline": 1}
    assert "ConnectError" in caplog.text


def test_the_same_server_is_reached_once_its_certificate_is_trusted(tmp_path, monkeypatch):
    """The control for the test above: the certificate is valid for 127.0.0.1, only untrusted."""
    with tls_server(tmp_path) as (port, cert, seen):
        monkeypatch.setenv("SSL_CERT_FILE", str(cert))  # httpx's trust_env honours it
        evmiddleware.configure(flokit_api_key="fk-k3y-value", flokit_url=f"https://127.0.0.1:{port}")
        evmiddleware.track("tls_probe", user_id="visitor")
        assert evmiddleware.flush(10)
    assert seen == ["/v1/batch/events"]


def test_keys_stay_out_of_a_log_handler_that_formats_everything(sandbox):
    """A root handler at DEBUG with tracebacks, as an app's ``logging.basicConfig`` would set up."""
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(logging.Formatter("%(levelname)s %(name)s %(message)s"))
    root = logging.getLogger()
    old_level = root.level
    root.addHandler(handler)
    root.setLevel(logging.DEBUG)
    try:
        keys = keys_of(sandbox)
        harness.configure(sandbox)
        for provider in PROVIDERS:
            sandbox.inject(provider, **echoing_faults(provider, keys[provider])[0])
        harness.track_paced(10)
        evmiddleware.flush(10)
    finally:
        root.removeHandler(handler)
        root.setLevel(old_level)
    assert "HTTP Request" in stream.getvalue()
    assert leaks(stream.getvalue(), keys) == []
