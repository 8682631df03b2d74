"""The sandbox reads the providers' patterns as their specs do (whole value, ASCII digits) and
decodes the Flameup workspace id in the path, as a real HTTP API does."""

from __future__ import annotations

import pytest

import evmiddleware
from evmiddleware.sandbox import Sandbox, SandboxKeys
from evmiddleware.sandbox.klaviyo import _revision_ok
from evmiddleware.sandbox.validation import is_iso_datetime, whole_second_utc

from ._payloads import (
    fu_event,
    fu_headers,
    fu_url,
    fw_event,
    fw_headers,
    fw_url,
    kl_body,
    kl_headers,
    kl_url,
    post,
)

FULL_WIDTH_2024 = "\uff12\uff10\uff12\uff14"


@pytest.mark.parametrize("name", ["signup\n", "\nsignup", "sign up"])
def test_flywheel_refuses_a_name_outside_its_pattern_even_a_final_newline(sb, client, name):
    r = post(client, fw_url(sb), {"event": fw_event(event=name)}, fw_headers())
    assert r.status_code == 400, r.text
    assert sb.accepted("flywheel") == []


@pytest.mark.parametrize(
    "timestamp",
    ["2024-01-15T10:30:00Z\n", "2024-01-15T10:30:00+00:00\n", f"{FULL_WIDTH_2024}-01-15T10:30:00Z"],
)
def test_a_timestamp_with_a_final_newline_or_non_ascii_digits_is_refused(sb, client, timestamp):
    r = post(client, fw_url(sb), {"event": fw_event(timestamp=timestamp)}, fw_headers())
    assert r.status_code == 400, r.text
    r = post(client, fu_url(sb), fu_event(timestamp=timestamp), fu_headers())
    assert r.status_code == 422, r.text
    assert is_iso_datetime(timestamp, require_offset=False) is False


def test_a_valid_timestamp_is_still_accepted_and_keyed(sb, client):
    assert post(client, fw_url(sb), {"event": fw_event()}, fw_headers()).status_code == 200
    assert whole_second_utc("2024-01-15T12:30:00.5+02:00") == "2024-01-15T10:30:00"


@pytest.mark.parametrize(
    "profile",
    [
        {"email": "ada@example.com\n"},
        {"phone_number": "+15555550123\n"},
        {"phone_number": "+1\uff15\uff15\uff15\uff15\uff15\uff15\uff10\uff11\uff12\uff13"},  # full-width
    ],
)
def test_klaviyo_refuses_an_email_or_phone_outside_its_pattern(sb, client, profile):
    r = post(client, kl_url(sb), kl_body(**profile), kl_headers())
    assert r.status_code == 400, r.text
    assert sb.accepted("klaviyo") == []


def test_klaviyo_revision_takes_ascii_digits_only():
    # Not reachable over HTTP (header bytes arrive as Latin-1, which has no other digits): checked here.
    assert _revision_ok("2025-10-15.pre")
    assert not _revision_ok("\uff12\uff10\uff12\uff15-\uff11\uff10-\uff11\uff15")
    assert not _revision_ok("2025-10-15\n")


@pytest.mark.parametrize("workspace", ["team one", "a/b", "w\u00e9rk"])
def test_flameup_finds_a_workspace_whose_id_the_client_must_quote(workspace):
    with Sandbox(keys=SandboxKeys(flameup_workspace_id=workspace)) as box:
        evmiddleware.configure(
            flameup_api_key=box.keys.flameup_api_key,
            flameup_workspace_id=workspace,
            flameup_url=box.base_url("flameup"),
            flush_interval=0.05,
        )
        evmiddleware.track("signup", user_id="u1")
        assert evmiddleware.flush(10)
        assert [r.status for r in box.requests("flameup")] == [200]
        assert [e["userId"] for e in box.accepted("flameup")] == ["u1"]
        stats = evmiddleware.stats()["providers"]["flameup"]
        assert (stats["sent"], stats["rejected"]) == (1, 0)


def test_flameup_still_refuses_another_workspace(sb, client):
    r = post(client, fu_url(sb, "other%20one"), fu_event(), fu_headers())
    assert r.status_code == 404
    assert r.json()["error"]["message"] == "Workspace 'other one' not found"
