"""Setting values that cannot work are refused at start-up with a ConfigurationError naming the setting."""

from __future__ import annotations

import pytest

import evmiddleware
from evmiddleware._parse import MAX_QUEUE_LIMIT, MAX_SECONDS
from evmiddleware.config import load_settings
from evmiddleware.errors import ConfigurationError

DURATIONS = [
    "flush_interval",
    "spool_interval",
    "spool_lease",
    "shutdown_timeout",
    "retry_deadline",
    "retry_base_delay",
    "retry_max_delay",
    "request_timeout",
]


@pytest.mark.parametrize("name", DURATIONS)
@pytest.mark.parametrize("value", ["nan", "inf", "-inf", "1e300", float("inf"), float("nan")])
def test_a_duration_must_be_finite(name, value):
    # inf made shutdown() raise OverflowError; nan compared false in every timing decision.
    with pytest.raises(ConfigurationError, match=name):
        load_settings({}, {f"EVMIDDLEWARE_{name.upper()}": str(value)})
    with pytest.raises(ConfigurationError, match=name):
        load_settings({name: value}, {})


def test_the_longest_shutdown_timeout_accepted_still_shuts_down():
    # The bound once was threading.TIMEOUT_MAX, which shutdown() overflowed by joining a second longer.
    evmiddleware.configure(local_sink="memory", shutdown_timeout=MAX_SECONDS)
    evmiddleware.track("e", user_id="u")
    evmiddleware.shutdown()
    with pytest.raises(ConfigurationError, match="shutdown_timeout"):
        load_settings({"shutdown_timeout": MAX_SECONDS * 2}, {})


def test_an_infinite_shutdown_timeout_is_refused_by_configure():
    with pytest.raises(evmiddleware.ConfigurationError, match="shutdown_timeout"):
        evmiddleware.configure(local_sink="memory", shutdown_timeout=float("inf"))


@pytest.mark.parametrize("value", [str(10**19), str(MAX_QUEUE_LIMIT + 1), float("inf")])
def test_max_queue_has_an_upper_bound(value):
    # 10**19 overflowed the spool claim's SQLite LIMIT and killed the dispatcher.
    with pytest.raises(ConfigurationError, match="max_queue"):
        load_settings({}, {"EVMIDDLEWARE_MAX_QUEUE": str(value)})
    with pytest.raises(ConfigurationError, match="max_queue"):
        load_settings({"max_queue": value}, {})


def test_max_queue_up_to_the_bound_is_accepted():
    assert load_settings({}, {"EVMIDDLEWARE_MAX_QUEUE": str(MAX_QUEUE_LIMIT)}).max_queue == MAX_QUEUE_LIMIT


@pytest.mark.parametrize("name", ["max_event_bytes", "max_depth", "max_queue"])
@pytest.mark.parametrize("value", [1.9, "1.9", True])
def test_a_count_must_be_a_whole_number(name, value):
    # int() alone took 1.9 as 1 (a 1-byte event limit) and True as 1.
    with pytest.raises(ConfigurationError, match=name):
        load_settings({name: value}, {})


def test_a_whole_float_is_a_count():
    assert load_settings({"max_event_bytes": 4096.0}, {}).max_event_bytes == 4096


@pytest.mark.parametrize("option", ["rate_limit", "max_in_flight"])
def test_provider_counts_must_be_whole_numbers(option):
    value = [(2.5, 1.0)] if option == "rate_limit" else 2.5
    with pytest.raises(ConfigurationError, match=option):
        load_settings({"flokit_api_key": "fk_test_1", f"flokit_{option}": value}, {})


@pytest.mark.parametrize("url", ["http://[::1", "https://[zz]/", "https://x]/", "https://[v1.x]/"])
def test_a_malformed_base_url_is_a_configuration_error(url, capsys, monkeypatch):
    """urlsplit() or .hostname raised ValueError, which escaped configure() and `evmiddleware check`."""
    with pytest.raises(ConfigurationError, match=r"^flokit_url: .* is not a valid URL$"):
        load_settings({"flokit_api_key": "k", "flokit_url": url}, {})
    from evmiddleware import cli

    monkeypatch.setenv("EVMIDDLEWARE_FLOKIT_API_KEY", "k")
    monkeypatch.setenv("EVMIDDLEWARE_FLOKIT_URL", url)
    assert cli.main(["check"]) == 2
    assert capsys.readouterr().err == f"configuration error: flokit_url: {url!r} is not a valid URL\n"


def test_a_malformed_base_url_with_credentials_keeps_them_out_of_the_message():
    with pytest.raises(ConfigurationError) as caught:
        load_settings({"flokit_api_key": "k", "flokit_url": "https://user:s3cret@[zz]/"}, {})
    assert "s3cret" not in str(caught.value)


@pytest.mark.parametrize("spec", ["jsonl", "jsonl:", "jsnl:/tmp/x.jsonl", "memory:x", "stdout"])
def test_local_sink_is_checked_even_when_a_provider_is_configured(spec):
    # It was checked only without a provider: a typo surfaced later, in an environment without keys.
    with pytest.raises(ConfigurationError, match="local_sink"):
        load_settings({"local_sink": spec, "flokit_api_key": "k"}, {})
    with pytest.raises(ConfigurationError, match="LOCAL_SINK"):
        load_settings({}, {"EVMIDDLEWARE_LOCAL_SINK": spec, "EVMIDDLEWARE_FLOKIT_API_KEY": "k"})


@pytest.mark.parametrize("spec", ["log", " LOG ", "memory", "off", "jsonl:events.jsonl", ""])
def test_every_documented_local_sink_is_accepted(spec):
    assert load_settings({"local_sink": spec, "flokit_api_key": "k"}, {}).local_sink == spec.strip()


def test_check_says_a_local_sink_of_off_discards_events_and_counts_nothing(capsys, monkeypatch):
    from evmiddleware import cli

    monkeypatch.setenv("EVMIDDLEWARE_LOCAL_SINK", "off")
    assert cli.main(["check"]) == 0
    out = capsys.readouterr().out
    assert "events are discarded, not counted" in out
    evmiddleware.configure()
    assert evmiddleware.track("e", user_id="u") is None
    assert evmiddleware.stats()["dropped"] == {}  # as check says


def test_check_says_nothing_would_be_sent_while_disabled(capsys, monkeypatch):
    from evmiddleware import cli

    monkeypatch.setenv("EVMIDDLEWARE_DISABLED", "1")
    assert cli.main(["check"]) == 0
    assert "nothing would be sent" in capsys.readouterr().out


def test_the_documented_defaults():
    settings = load_settings({}, {})
    assert settings.max_event_bytes == 32768
    assert settings.max_queue == 10000
    assert settings.flush_interval == 1.0
    assert settings.shutdown_timeout == 5.0
    assert settings.max_depth == 10


@pytest.mark.parametrize(
    ("fits", "one_over"),
    [
        ("x" * 32760, "x" * 32761),  # {"s":"…"} is 8 bytes of JSON around the text
        ("é" * 16380, "é" * 16380 + "x"),  # 2 bytes of UTF-8 each: bytes are counted, not characters
    ],
    ids=["ascii", "non-ascii"],
)
def test_by_default_properties_of_exactly_32768_bytes_of_json_are_accepted_and_one_more_refused(
    memory_sink, fits, one_over
):
    assert len(b'{"s":"' + fits.encode() + b'"}') == 32768
    assert evmiddleware.track("big", {"s": fits}, user_id="u1") is not None
    assert evmiddleware.track("big", {"s": one_over}, user_id="u1") is None
    assert evmiddleware.stats()["dropped"] == {"too_large": 1}
    assert evmiddleware.flush(5)
    assert [event.properties for event in memory_sink.events] == [{"s": fits}]
