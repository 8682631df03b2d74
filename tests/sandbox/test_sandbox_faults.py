from __future__ import annotations

import email.utils
import random
import threading
import time

import httpx
import pytest

from evmiddleware.sandbox import Fault, Sandbox

from ._payloads import (
    fk_event,
    fk_headers,
    fk_url,
    fw_event,
    fw_headers,
    fw_url,
    kl_body,
    kl_headers,
    kl_url,
    post,
    uf_event,
    uf_headers,
    uf_url,
)


def _flokit(sb, client):
    return post(client, fk_url(sb), fk_event(), fk_headers())


def test_status_fault_for_count_requests(sb, client):
    sb.inject("flokit", Fault("status", status=503, count=2))
    statuses = [_flokit(sb, client).status_code for _ in range(3)]
    assert statuses == [503, 503, 200]
    stats = sb.stats()["providers"]["flokit"]
    assert stats["faults"] == 2
    assert stats["status_counts"] == {"503": 2, "200": 1}
    assert stats["accepted_events"] == 1
    assert stats["rejected_requests"] == 0
    assert [e.fault for e in sb.requests("flokit")] == ["status", "status", None]


def test_status_fault_default_body_in_provider_shape(sb, client):
    sb.inject("flywheel", Fault("status"))
    r = post(client, fw_url(sb), {"event": fw_event()}, fw_headers())
    assert r.status_code == 500
    assert set(r.json()) == {"error", "code"}


def test_status_fault_non_json_body(sb, client):
    sb.inject("userflux", Fault("status", status=502, body="<html>Bad Gateway</html>"))
    r = post(client, uf_url(sb), uf_event(), uf_headers())
    assert r.status_code == 502
    assert r.headers["Content-Type"].startswith("text/plain")
    assert r.text == "<html>Bad Gateway</html>"


def test_status_fault_200_with_error_body(sb, client):
    sb.inject("flokit", Fault("status", status=200, body='{"status":"error","message":"db down"}'))
    r = _flokit(sb, client)
    assert r.status_code == 200
    assert r.json()["status"] == "error"
    assert sb.accepted("flokit") == []


def test_retry_after_seconds(sb, client):
    sb.inject("userflux", Fault("retry_after", retry_after=7))
    r = post(client, uf_url(sb), uf_event(), uf_headers())
    assert r.status_code == 429
    assert r.headers["Retry-After"] == "7"
    assert sb.stats()["providers"]["userflux"]["rate_limited"] == 0  # a fault, not the limiter


def test_retry_after_http_date(sb, client):
    sb.inject("klaviyo", Fault("retry_after", retry_after=30, http_date=True))
    r = post(client, kl_url(sb), kl_body(), kl_headers())
    assert r.status_code == 429
    when = email.utils.parsedate_to_datetime(r.headers["Retry-After"])
    assert 25 <= when.timestamp() - time.time() <= 31
    assert r.json()["errors"][0]["code"] == "throttled"


def test_slow_answers_late_but_normally(sb, client):
    sb.inject("flokit", Fault("slow", seconds=0.3))
    start = time.monotonic()
    r = _flokit(sb, client)
    assert time.monotonic() - start >= 0.3
    assert r.status_code == 200
    assert len(sb.accepted("flokit")) == 1
    assert sb.requests("flokit")[0].fault == "slow"


def test_close_without_answer(sb, client):
    sb.inject("flokit", Fault("close"))
    with pytest.raises(httpx.RemoteProtocolError):
        _flokit(sb, client)
    (entry,) = sb.requests("flokit")
    assert (entry.status, entry.fault, entry.events) == (None, "close", 1)
    assert _flokit(sb, client).status_code == 200  # the next request is fine


def test_truncate_short_body(sb, client):
    sb.inject("flokit", Fault("truncate"))
    with pytest.raises(httpx.RemoteProtocolError):
        _flokit(sb, client)
    assert sb.stats()["providers"]["flokit"]["faults"] == 1
    assert _flokit(sb, client).status_code == 200


def test_rate_fault_is_seeded_and_lasts_until_cleared(sb, client):
    sb.inject("flokit", Fault("status", status=500, count=None, rate=0.5, seed=3))
    statuses = [_flokit(sb, client).status_code for _ in range(20)]
    rng = random.Random(3)
    assert statuses == [500 if rng.random() < 0.5 else 200 for _ in range(20)]
    sb.clear_faults()
    assert all(_flokit(sb, client).status_code == 200 for _ in range(5))


def test_faults_apply_in_order(sb, client):
    sb.inject("flokit", Fault("status", status=502))
    sb.inject("flokit", Fault("retry_after", retry_after=2))
    assert [_flokit(sb, client).status_code for _ in range(3)] == [502, 429, 200]


def test_faults_are_per_provider(sb, client):
    sb.inject("userflux", Fault("status", count=None))
    assert _flokit(sb, client).status_code == 200


@pytest.mark.parametrize(
    "kwargs",
    [
        {"kind": "explode"},
        {"kind": "slow", "seconds": 31},
        {"kind": "status", "count": 0},
        {"kind": "status", "rate": 0},
        {"kind": "status", "status": 1000},
    ],
)
def test_invalid_faults(kwargs):
    with pytest.raises(ValueError):
        Fault(**kwargs)


def test_slow_is_aborted_when_server_stops():
    sb = Sandbox().start()
    sb.inject("flokit", Fault("slow", seconds=30))
    errors: list[BaseException] = []

    def call():
        try:
            with httpx.Client(timeout=10.0) as c:
                _flokit(sb, c)
        except httpx.HTTPError as exc:
            errors.append(exc)

    thread = threading.Thread(target=call)
    thread.start()
    assert sb.wait_for(lambda s: s["providers"]["flokit"]["requests"] == 1, timeout=5.0)
    start = time.monotonic()
    sb.stop()
    thread.join(5.0)
    assert time.monotonic() - start < 2.0
    assert not thread.is_alive()
    assert len(errors) == 1
