"""A key echoed back JSON-escaped or percent-encoded is redacted like the raw key: from log lines and
the reasons that signals and stats carry."""

from __future__ import annotations

import json
import logging
from typing import Any
from urllib.parse import quote

import pytest

import evmiddleware
from evmiddleware import signals
from evmiddleware._log import redact
from evmiddleware.sandbox import Sandbox, SandboxKeys
from evmiddleware.sandbox.faults import Fault

KEY = "ufKEY/abc+def=="
# PHP's json_encode (and Go's HTML-safe encoder) write "/" as "\/"; a URL echoed back is percent-encoded.
SPELLINGS = {
    "raw": KEY,
    "json": json.dumps(KEY)[1:-1],
    "json_slash": KEY.replace("/", "\\/"),
    "percent": quote(KEY, safe=""),
}


@pytest.mark.parametrize("name", SPELLINGS)
def test_every_spelling_of_a_key_is_redacted(name):
    text = f'{{"error": "invalid key {SPELLINGS[name]}"}}'
    assert redact(text, [KEY]) == '{"error": "invalid key [redacted]"}'


def test_a_key_with_json_escapes_is_redacted_whole():
    key = 'k"ey\\with/quote'
    echoed = json.dumps({"error": key}).replace("/", "\\/")
    assert redact(echoed, [key]) == '{"error": "[redacted]"}'


def test_a_key_echoed_escaped_by_the_provider_reaches_no_log_line_and_no_reason(caplog):
    caplog.set_level(logging.DEBUG)  # every logger
    reasons: list[str] = []

    def on_failed(sender: Any, provider: str, count: int, reason: str, **extra: Any) -> None:
        reasons.append(reason)

    with Sandbox(keys=SandboxKeys(userflux_api_key=KEY)) as sb:
        evmiddleware.configure(
            userflux_api_key=KEY, userflux_url=sb.base_url("userflux"), flush_interval=0.05, retry_deadline=3
        )
        bodies = [
            (401, json.dumps({"error": "invalid key " + SPELLINGS["json_slash"]}).replace("\\\\/", "\\/")),
            (400, json.dumps({"error": "bad key " + SPELLINGS["percent"]})),
        ]
        for status, body in bodies:
            sb.inject("userflux", Fault("status", status=status, body=body, count=1))
        with signals.batch_failed.connected_to(on_failed):
            for n in range(len(bodies)):
                evmiddleware.track("secret_probe", {"n": n}, user_id="u1")
                evmiddleware.flush(10)  # one request per fault
            stats = evmiddleware.stats()["providers"]["userflux"]
        assert [r.status for r in sb.requests("userflux")] == [401, 400]
    assert len(reasons) == 2
    text = caplog.text + "".join(str(r.args or "") for r in caplog.records) + "\n".join(reasons) + repr(stats)
    # No spelling of the key, nor its tail after the "/", is left anywhere ...
    assert [name for name, form in SPELLINGS.items() if form in text] == []
    assert "abc+def" not in text and "abc%2Bdef" not in text
    # ... though the echoes did arrive: the check above is not vacuous.
    assert all("[redacted]" in reason for reason in reasons)
