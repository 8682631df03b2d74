"""What every provider shares: registry order, settings, base URLs, auth failures, key hygiene."""

from __future__ import annotations

from typing import Any

import pytest

from evmiddleware.config import load_settings
from evmiddleware.errors import ConfigurationError
from evmiddleware.providers import REGISTRY
from evmiddleware.providers.base import HttpProvider

from ._helpers import batch, event, response, send_through

SECRET = "sk-SECRET-0123456789"
#: Settings that turn each provider on, with the secret as its key.
ON: dict[str, dict[str, str]] = {
    "userflux": {"EVMIDDLEWARE_USERFLUX_API_KEY": SECRET},
    "flokit": {"EVMIDDLEWARE_FLOKIT_API_KEY": SECRET},
    "flameup": {"EVMIDDLEWARE_FLAMEUP_API_KEY": SECRET, "EVMIDDLEWARE_FLAMEUP_WORKSPACE_ID": "ws_1"},
    "flywheel": {"EVMIDDLEWARE_FLYWHEEL_API_KEY": SECRET},
    "klaviyo": {"EVMIDDLEWARE_KLAVIYO_PUBLIC_KEY": SECRET},
}
DEFAULT_URLS = {
    "userflux": "https://integration-api.userflux.co/event/ingest/batch",
    "flokit": "https://api.flokit.ai/v1/batch/events",
    "flameup": "https://api.flameup.ai/api/v1/workspaces/ws_1/events",
    "flywheel": "https://api.flywheel.cx/v1/events",
    "klaviyo": "https://a.klaviyo.com/client/event-bulk-create/",
}
OVERRIDDEN_URLS = {
    "userflux": ("http://127.0.0.1:9000/userflux", "http://127.0.0.1:9000/userflux/event/ingest/batch"),
    "flokit": ("http://127.0.0.1:9000/flokit", "http://127.0.0.1:9000/flokit/v1/batch/events"),
    "flameup": (
        "http://127.0.0.1:9000/flameup/api/v1",
        "http://127.0.0.1:9000/flameup/api/v1/workspaces/ws_1/events",
    ),
    "flywheel": ("http://localhost:9000/flywheel/", "http://localhost:9000/flywheel/v1/events"),
    "klaviyo": ("https://proxy.example/klaviyo", "https://proxy.example/klaviyo/client/event-bulk-create/"),
}
SETTINGS = {
    "userflux": {
        "userflux_api_key",
        "userflux_url",
        "userflux_rate_limit",
        "userflux_max_in_flight",
        "userflux_location_enrichment",
    },
    "flokit": {"flokit_api_key", "flokit_url", "flokit_rate_limit", "flokit_max_in_flight"},
    "flameup": {
        "flameup_api_key",
        "flameup_url",
        "flameup_rate_limit",
        "flameup_max_in_flight",
        "flameup_workspace_id",
        "flameup_anonymous_as_user_id",
    },
    "flywheel": {"flywheel_api_key", "flywheel_url", "flywheel_rate_limit", "flywheel_max_in_flight"},
    "klaviyo": {
        "klaviyo_public_key",
        "klaviyo_url",
        "klaviyo_rate_limit",
        "klaviyo_max_in_flight",
        "klaviyo_revision",
    },
}
NAMES = list(ON)


def build(name: str, **extra: str) -> HttpProvider:
    env = {**ON[name], **{f"EVMIDDLEWARE_{name.upper()}_{k.upper()}": v for k, v in extra.items()}}
    [provider] = load_settings({}, env).providers
    assert isinstance(provider, HttpProvider)
    return provider


def test_registry_holds_the_five_in_order():
    assert list(REGISTRY) == ["userflux", "flokit", "flameup", "flywheel", "klaviyo"]
    assert [cls.name for cls in REGISTRY.values()] == list(REGISTRY)


@pytest.mark.parametrize("name", NAMES)
def test_settings_each_provider_reads(name):
    assert {f"{name}_{option}" for option in REGISTRY[name].options} == SETTINGS[name]


def test_all_five_on_together_from_the_environment():
    env: dict[str, str] = {}
    for settings in ON.values():
        env.update(settings)
    assert [p.name for p in load_settings({}, env).providers] == NAMES


@pytest.mark.parametrize("name", NAMES)
def test_no_key_means_off(name):
    assert REGISTRY[name].from_options({}) is None


@pytest.mark.parametrize("name", NAMES)
def test_default_base_url_is_the_real_https_one(name):
    provider = build(name)
    assert provider.build_request(batch(provider, event())).url == DEFAULT_URLS[name]


@pytest.mark.parametrize("name", NAMES)
def test_url_setting_replaces_the_default_base_whole(name):
    base, expected = OVERRIDDEN_URLS[name]
    provider = build(name, url=base)
    assert provider.build_request(batch(provider, event())).url == expected


@pytest.mark.parametrize("name", NAMES)
def test_plain_http_to_a_non_loopback_host_is_a_configuration_error(name):
    with pytest.raises(ConfigurationError, match=f"{name}_url"):
        build(name, url="http://collector.example.com")


@pytest.mark.parametrize("name", NAMES)
def test_rate_limit_and_max_in_flight_can_be_overridden(name):
    provider = build(name, rate_limit="5/1,100/60", max_in_flight="3")
    assert provider.limits.rate == ((5, 1.0), (100, 60.0))
    assert provider.limits.max_in_flight == 3
    with pytest.raises(ConfigurationError):
        build(name, max_in_flight="0")


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("rate", ["100/nan", "100/inf", "100/0", "inf/60", "100/1e300"])
def test_a_rate_limit_window_must_be_positive_and_finite(name, rate):
    # 100/nan turned the limit off; 100/inf stalled the lane for good after 100 requests.
    with pytest.raises(ConfigurationError, match=f"{name}_rate_limit"):
        build(name, rate_limit=rate)


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize(
    "url",
    [
        "https://api.example.com:99999",
        "https://api.example.com:abc",
        "https://api.example.com:0",
        "http://127.0.0.1:65536/base",
        "https://api.example.com/base?token=1",
        "https://api.example.com/base#part",
        "https://api.example.com/base?",
    ],
)
def test_a_base_url_with_a_bad_port_a_query_or_a_fragment_is_a_configuration_error(name, url):
    # Accepted, the port failed every request at send time; a query or fragment is mangled by the path.
    with pytest.raises(ConfigurationError, match=f"{name}_url"):
        build(name, url=url)


@pytest.mark.parametrize("name", NAMES)
def test_a_base_url_with_credentials_is_a_configuration_error_that_never_shows_them(name):
    with pytest.raises(ConfigurationError, match=f"{name}_url") as error:
        build(name, url="https://user:pa55word@api.example.com")
    assert "pa55word" not in str(error.value)


@pytest.mark.parametrize("name", NAMES)
def test_a_base_url_with_a_valid_port_is_kept(name):
    provider = build(name, url="http://127.0.0.1:65535/p")
    assert provider.build_request(batch(provider, event())).url.startswith("http://127.0.0.1:65535/p/")


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("blank", ["   ", "\t", " \n "])
def test_a_blank_key_means_off_like_no_key(name, blank):
    # A key of white space only switched the provider on with an empty key: every batch a 401.
    key_var = next(k for k in ON[name] if k.endswith(("_API_KEY", "_PUBLIC_KEY")))
    settings = load_settings({}, {**ON[name], key_var: blank, "EVMIDDLEWARE_LOCAL_SINK": "off"})
    assert settings.providers == ()


@pytest.mark.parametrize("name", NAMES)
def test_repr_describe_and_settings_never_show_the_key(name):
    provider = build(name)
    assert SECRET not in repr(provider)
    assert SECRET not in provider.describe()
    assert SECRET not in repr(load_settings({}, ON[name]))
    assert SECRET in provider.secrets()


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("status", [401, 403])
def test_auth_failures_are_rejected_with_a_hint_and_never_the_key(name, status):
    provider = build(name)
    # Some services echo the credentials back in their error body.
    answer: dict[str, Any] = {"error": "unauthorized", "message": f"bad key {SECRET}"}
    result, _ = send_through(provider, batch(provider, event()), lambda r: response(status, answer))
    assert result.outcome == "rejected"
    assert result.auth
    assert result.reason.startswith(f"http_{status}")
    assert type(provider).key_setting.split()[0] in result.reason
    assert type(provider).key_setting.startswith(f"EVMIDDLEWARE_{name.upper()}_")
    assert SECRET not in result.reason


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("status", [408, 429, 500, 502, 503, 504])
def test_timeouts_throttling_and_server_errors_are_retried(name, status):
    provider = build(name)
    result = provider.interpret(response(status, text="busy"), batch(provider, event()))
    assert (result.outcome, result.reason) == ("retry", f"http_{status}")


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("status", [400, 404, 422])
def test_client_errors_are_rejected_not_retried(name, status):
    provider = build(name)
    result = provider.interpret(response(status, text="bad request"), batch(provider, event()))
    assert result.outcome == "rejected"
    assert result.reason.startswith(f"http_{status}")
    assert not result.auth


@pytest.mark.parametrize("name", NAMES)
def test_throttling_keeps_the_retry_after_the_provider_asked_for(name):
    provider = build(name)
    b = batch(provider, event())
    throttled = provider.interpret(response(429, text="slow down", headers={"Retry-After": "4"}), b)
    assert (throttled.outcome, throttled.retry_after) == ("retry", 4.0)


@pytest.mark.parametrize("name", NAMES)
def test_key_with_white_space_is_a_configuration_error_without_the_key(name):
    key_var = next(k for k in ON[name] if k.endswith(("_API_KEY", "_PUBLIC_KEY")))
    with pytest.raises(ConfigurationError) as error:
        load_settings({}, {**ON[name], key_var: "abc def"})
    assert "abc def" not in str(error.value)


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("key", ["clé-secrète", "abc\x00def"])
def test_a_key_that_cannot_go_in_a_header_is_a_configuration_error_without_the_key(name, key):
    key_var = next(k for k in ON[name] if k.endswith(("_API_KEY", "_PUBLIC_KEY")))
    with pytest.raises(ConfigurationError) as error:
        load_settings({}, {**ON[name], key_var: key})
    assert key not in str(error.value) and key[:3] not in str(error.value)


@pytest.mark.parametrize("name", NAMES)
def test_a_key_crossing_the_cut_of_the_error_text_never_shows_in_part(name):
    provider = build(name)
    # The key spans characters 290-310 of the answer: the 300-character cut falls inside it.
    text = "x" * 285 + " key " + SECRET + " is not valid"
    result = provider.interpret(response(400, text=text), batch(provider, event()))
    assert result.outcome == "rejected"
    assert SECRET[:8] not in result.reason
    assert len(result.reason) <= 320
