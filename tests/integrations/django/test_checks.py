"""The system checks: each misconfiguration has its own id, reported by ``manage.py check``."""

from __future__ import annotations

from typing import Any

import pytest

pytest.importorskip("django")
from django.core import checks
from django.test import override_settings

AUTH = "django.contrib.auth.middleware.AuthenticationMiddleware"
OURS = "evmiddleware_django.EventMiddleware"


def ids(**settings: Any) -> list[str]:
    with override_settings(**settings):
        return [message.id for message in checks.run_checks() if message.id.startswith("evmiddleware.")]


def test_the_example_settings_pass():
    assert ids() == []


def test_a_setting_that_is_not_a_dict_is_e001():
    assert ids(EVMIDDLEWARE=["FLOKIT_API_KEY"]) == ["evmiddleware.E001"]


def test_unknown_keys_are_e002_and_named():
    with override_settings(EVMIDDLEWARE={"FLOKIT_APIKEY": "x", "EXCLUDE_PATHS": "/health"}):
        [message] = [m for m in checks.run_checks() if m.id == "evmiddleware.E002"]
    assert "FLOKIT_APIKEY" in message.msg and "FLOKIT_API_KEY" in message.hint


def test_flameup_without_a_workspace_id_is_e003_from_settings_or_the_environment(monkeypatch):
    assert ids(EVMIDDLEWARE={"FLAMEUP_API_KEY": "fu_key"}) == ["evmiddleware.E003"]
    monkeypatch.setenv("EVMIDDLEWARE_FLAMEUP_API_KEY", "fu_key")
    assert ids() == ["evmiddleware.E003"]
    assert ids(EVMIDDLEWARE={"FLAMEUP_WORKSPACE_ID": "ws_1"}) == []


def test_a_klaviyo_private_key_is_e004():
    assert ids(EVMIDDLEWARE={"KLAVIYO_PUBLIC_KEY": "pk_0123456789abcdef"}) == ["evmiddleware.E004"]


def test_any_other_invalid_value_is_e005(monkeypatch):
    assert ids(EVMIDDLEWARE={"SAMPLE_RATE": 2}) == ["evmiddleware.E005"]
    assert ids(EVMIDDLEWARE={"FLUSH_INTERVAL": -1}) == ["evmiddleware.E005"]
    monkeypatch.setenv("EVMIDDLEWARE_MAX_QUEUE", "many")
    assert ids() == ["evmiddleware.E005"]


def test_the_middleware_before_authentication_is_e006_when_the_user_id_is_wanted():
    assert ids(MIDDLEWARE=[OURS, AUTH]) == ["evmiddleware.E006"]
    assert ids(MIDDLEWARE=[AUTH, OURS]) == []
    assert ids(MIDDLEWARE=[OURS, AUTH], EVMIDDLEWARE={"TRACK_USER": False}) == []


@pytest.mark.parametrize(
    "setting",
    [
        {"EXCLUDE_REGEXES": ["(unclosed"]},
        {"TRUSTED_PROXIES": ["not-an-ip"]},
        {"COOKIE_NAME": "bad name;"},
        {"COOKIE_MAX_AGE": "a year"},
    ],
)
def test_capture_values_the_middleware_would_refuse_are_e005(setting):
    assert ids(EVMIDDLEWARE=setting) == ["evmiddleware.E005"]


def test_the_middleware_after_fetch_from_cache_is_w001():
    update = "django.middleware.cache.UpdateCacheMiddleware"
    fetch = "django.middleware.cache.FetchFromCacheMiddleware"
    assert ids(MIDDLEWARE=[update, AUTH, fetch, OURS]) == ["evmiddleware.W001"]
    assert ids(MIDDLEWARE=[update, AUTH, OURS, fetch]) == []
