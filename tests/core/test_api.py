from __future__ import annotations

import asyncio
import datetime as dt
import logging
import math
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from decimal import Decimal

import pytest

import evmiddleware
from evmiddleware import signals
from evmiddleware.context import request_context
from evmiddleware.providers.sinks import MemorySink


def delivered(sink: MemorySink):
    assert evmiddleware.flush(5)
    return sink.events


def test_track_outside_a_request_uses_the_ids_given(memory_sink):
    event_id = evmiddleware.track("signup", {"plan": "pro"}, user_id="u1")
    [event] = delivered(memory_sink)
    assert event.id == event_id
    assert (event.name, event.user_id, event.properties) == ("signup", "u1", {"plan": "pro"})


def test_track_inside_a_request_takes_ids_and_route_from_the_context(memory_sink):
    with request_context(anonymous_id="anon-1", user_id=None, route="/items/{item_id}"):
        evmiddleware.track("viewed")
    [event] = delivered(memory_sink)
    assert event.anonymous_id == "anon-1"
    assert event.context == {"route": "/items/{item_id}"}


def test_track_without_any_id_is_a_counted_drop_with_a_warning(memory_sink, caplog_evm):
    assert evmiddleware.track("orphan") is None
    assert evmiddleware.stats()["dropped"] == {"no_identity": 1}
    assert "no_identity" in caplog_evm.text
    assert delivered(memory_sink) == []


@pytest.mark.parametrize("blank", ["", "   "])
def test_a_blank_id_is_no_id(memory_sink, blank):
    assert evmiddleware.track("signup", user_id=blank) is None
    assert evmiddleware.track("signup", user_id=blank, anonymous_id=blank) is None
    assert evmiddleware.stats()["dropped"] == {"no_identity": 2}
    # Inside a request, a blank id given by hand leaves the request's own in place.
    with request_context(anonymous_id="anon-1", user_id="u1"):
        evmiddleware.track("viewed", user_id=blank)
    [event] = delivered(memory_sink)
    assert (event.user_id, event.anonymous_id) == ("u1", "anon-1")


def test_a_blank_id_raises_no_identity_in_strict_mode():
    evmiddleware.configure(providers=[MemorySink()], strict=True)
    with pytest.raises(evmiddleware.EventError) as info:
        evmiddleware.track("signup", user_id=" ")
    assert info.value.reason == "no_identity"


class _Unreadable(Mapping):
    """A mapping backed by something that is down (a cache, a lazy loader)."""

    def __getitem__(self, key):
        raise ConnectionError("cache unavailable")

    def __iter__(self):
        return iter(["a"])

    def __len__(self):
        return 1


def test_properties_that_raise_as_they_are_read_are_a_counted_drop(memory_sink, caplog_evm):
    assert evmiddleware.track("viewed", _Unreadable(), user_id="u") is None
    assert evmiddleware.stats()["dropped"] == {"internal_error": 1}
    assert "cache unavailable" in caplog_evm.text
    assert delivered(memory_sink) == []


def dropped_property_warnings(caplog) -> list[str]:
    return [
        r.getMessage()
        for r in caplog.records
        if r.name == "evmiddleware" and r.levelno == logging.WARNING and "dropped" in r.getMessage()
    ]


def test_a_property_that_cannot_be_json_is_dropped_with_a_warning_naming_its_key(memory_sink, caplog_evm):
    evmiddleware.track("paid", {"total": math.nan, "raw": b"\x00", "plan": "pro"}, user_id="u1")
    [event] = delivered(memory_sink)
    assert event.properties == {"plan": "pro"}  # the event goes; only the two values are dropped
    warnings = dropped_property_warnings(caplog_evm)
    assert len(warnings) == 2
    [nan_warning] = [w for w in warnings if "'total'" in w]
    assert "not a finite number" in nan_warning
    [bytes_warning] = [w for w in warnings if "'raw'" in w]
    assert "bytes" in bytes_warning


def test_a_nested_dropped_property_is_named_by_its_dotted_key(memory_sink, caplog_evm):
    evmiddleware.track("paid", {"cart": {"items": [{"price": math.inf}]}}, user_id="u1")
    [event] = delivered(memory_sink)
    assert event.properties == {"cart": {"items": [{}]}}
    [warning] = dropped_property_warnings(caplog_evm)
    assert "'cart.items[0].price'" in warning


def test_request_context_facts_are_made_json_safe_once(memory_sink):
    with request_context(anonymous_id="anon-1", total=Decimal("19.90"), at=dt.date(2026, 1, 2), raw=b"x"):
        evmiddleware.track("paid")
    [event] = delivered(memory_sink)
    assert event.context == {"total": 19.9, "at": "2026-01-02"}
    assert evmiddleware.stats()["providers"]["memory"]["dropped"] == {}


def test_invalid_event_never_raises_into_the_caller(memory_sink):
    assert evmiddleware.track("", user_id="u") is None
    assert evmiddleware.track("x", {"deep": {"a": {"b": {"c": 1}}}}, user_id="u") is not None
    assert evmiddleware.stats()["dropped"] == {"invalid_name": 1}


def test_strict_mode_raises_event_errors():
    evmiddleware.configure(providers=[MemorySink()], strict=True)
    with pytest.raises(evmiddleware.EventError):
        evmiddleware.track("", user_id="u")


def test_identify_sets_the_user_for_the_rest_of_the_request(memory_sink):
    with request_context(anonymous_id="anon-1") as ctx:
        evmiddleware.identify("u7", email="a@example.com")
        evmiddleware.track("after_login")
    assert ctx.user_id == "u7" and ctx.identified
    identify, after = delivered(memory_sink)
    assert (identify.kind, identify.user_id, identify.anonymous_id) == ("identify", "u7", "anon-1")
    assert identify.properties == {"email": "a@example.com"}
    assert (after.user_id, after.anonymous_id) == ("u7", "anon-1")


def test_context_follows_into_thread_pools_that_copy_it(memory_sink):
    import contextvars

    with request_context(anonymous_id="anon-2"), ThreadPoolExecutor(1) as pool:
        ctx = contextvars.copy_context()
        pool.submit(ctx.run, evmiddleware.track, "in_thread").result()
    [event] = delivered(memory_sink)
    assert event.anonymous_id == "anon-2"


def test_tracked_decorator_records_duration_and_success(memory_sink):
    @evmiddleware.tracked("checkout_completed", flow="web")
    def checkout(total):
        return total * 2

    with request_context(anonymous_id="a"):
        assert checkout(2) == 4
    [event] = delivered(memory_sink)
    assert event.name == "checkout_completed"
    assert event.properties["flow"] == "web"
    assert event.properties["raised"] is False
    assert event.properties["duration_ms"] >= 0


def test_tracked_decorator_keeps_the_exception_and_records_it(memory_sink):
    @evmiddleware.tracked
    def boom():
        raise KeyError("x")

    with request_context(anonymous_id="a"), pytest.raises(KeyError):
        boom()
    [event] = delivered(memory_sink)
    assert event.name.endswith("boom")
    assert event.properties["raised"] is True
    assert event.properties["error_type"] == "KeyError"


def test_tracked_decorator_on_async_functions_and_methods(memory_sink):
    class Shop:
        @evmiddleware.tracked("paid")
        async def pay(self, amount):
            await asyncio.sleep(0)
            return amount

    async def main():
        with request_context(anonymous_id="a"):
            return await Shop().pay(3)

    assert asyncio.run(main()) == 3
    [event] = delivered(memory_sink)
    assert event.name == "paid"
    assert asyncio.iscoroutinefunction(Shop.pay)


def test_disabled_makes_every_call_a_no_op(monkeypatch):
    monkeypatch.setenv("EVMIDDLEWARE_DISABLED", "1")
    assert evmiddleware.track("x", user_id="u") is None
    assert evmiddleware.flush(1)
    assert evmiddleware.stats()["disabled"] is True


def test_event_tracked_receiver_can_veto_and_change_events(memory_sink):
    def receiver(sender, event):
        if event.name == "secret":
            return False
        return event._replace(properties={**event.properties, "tag": 1})

    with signals.event_tracked.connected_to(receiver):
        evmiddleware.track("secret", user_id="u")
        evmiddleware.track("public", user_id="u")
    [event] = delivered(memory_sink)
    assert event.name == "public" and event.properties == {"tag": 1}
    assert evmiddleware.stats()["dropped"] == {"vetoed": 1}


def test_each_event_tracked_receiver_sees_the_event_as_the_one_before_left_it(memory_sink):
    def scrub(sender, event):
        return event._replace(properties={k: v for k, v in event.properties.items() if k != "email"})

    def tag(sender, event):
        return event._replace(properties={**event.properties, "app": "web", "paid": Decimal("2.50")})

    with signals.event_tracked.connected_to(scrub), signals.event_tracked.connected_to(tag):
        evmiddleware.track("signup", {"email": "alice@example.com"}, user_id="u")
    [event] = delivered(memory_sink)
    # Both had their way (the email stays out), and what the last one added was made JSON-safe.
    assert event.properties == {"app": "web", "paid": 2.5}


def test_a_raising_event_dropped_receiver_never_reaches_the_caller_and_is_counted(memory_sink, caplog_evm):
    def broken(sender, **kwargs):
        raise RuntimeError("metrics backend down")

    seen = []
    before = evmiddleware.stats()["receiver_errors"].get("evmiddleware.event_dropped", 0)
    with (
        signals.event_dropped.connected_to(broken),
        signals.event_dropped.connected_to(lambda sender, **kwargs: seen.append(kwargs["reason"])),
    ):
        assert evmiddleware.track("orphan") is None  # dropped, and the receiver raised: still no raise
    assert seen == ["no_identity"]  # the other receiver still ran
    stats = evmiddleware.stats()
    assert stats["dropped"] == {"no_identity": 1}
    assert stats["receiver_errors"]["evmiddleware.event_dropped"] == before + 1
    assert "metrics backend down" in caplog_evm.text


def test_a_raising_event_tracked_receiver_drops_its_event_and_the_veto_still_works(memory_sink):
    def receiver(sender, event):
        if event.name == "broken":
            raise RuntimeError("scrubber failed")
        return event.name != "secret"

    with signals.event_tracked.connected_to(receiver):
        assert evmiddleware.track("broken", user_id="u") is None
        assert evmiddleware.track("secret", user_id="u") is None
        assert evmiddleware.track("public", user_id="u") is not None
    assert [event.name for event in delivered(memory_sink)] == ["public"]
    assert evmiddleware.stats()["dropped"] == {"receiver_error": 1, "vetoed": 1}


def test_stats_count_per_provider(memory_sink):
    for i in range(3):
        evmiddleware.track("e", {"i": i}, user_id="u")
    delivered(memory_sink)
    counters = evmiddleware.stats()["providers"]["memory"]
    assert counters["enqueued"] == 3
    assert counters["sent"] == 3
    assert counters["queued"] == 0


def test_configure_again_replaces_the_configuration():
    first, second = MemorySink(), MemorySink()
    evmiddleware.configure(providers=[first])
    evmiddleware.track("one", user_id="u")
    evmiddleware.configure(providers=[second])
    evmiddleware.track("two", user_id="u")
    assert evmiddleware.flush(5)
    assert [e.name for e in first.events] == ["one"]  # flushed when replaced
    assert [e.name for e in second.events] == ["two"]


def test_configure_with_a_bad_setting_fails_loudly_and_keeps_the_old_pipeline(memory_sink):
    with pytest.raises(evmiddleware.ConfigurationError, match="unknown setting"):
        evmiddleware.configure(flush_intervl=1)
    with pytest.raises(evmiddleware.ConfigurationError, match="flush_interval"):
        evmiddleware.configure(flush_interval="soon")
    evmiddleware.track("still", user_id="u")
    assert [e.name for e in delivered(memory_sink)] == ["still"]


def test_no_provider_falls_back_to_the_log_sink(caplog):
    caplog.set_level(logging.INFO, logger="evmiddleware.events")
    evmiddleware.track("logged", user_id="u")
    assert evmiddleware.flush(5)
    assert '"name":"logged"' in caplog.text


def test_jsonl_sink_writes_one_line_per_event(tmp_path, monkeypatch):
    path = tmp_path / "events.jsonl"
    monkeypatch.setenv("EVMIDDLEWARE_LOCAL_SINK", f"jsonl:{path}")
    evmiddleware.track("a", user_id="u")
    evmiddleware.track("b", user_id="u")
    assert evmiddleware.flush(5)
    import json

    assert [json.loads(line)["name"] for line in path.read_text().splitlines()] == ["a", "b"]


def test_local_sink_off_drops_nothing_silently(monkeypatch):
    monkeypatch.setenv("EVMIDDLEWARE_LOCAL_SINK", "off")
    assert evmiddleware.track("x", user_id="u") is None
    assert evmiddleware.stats()["disabled"] is True


def test_shutdown_delivers_queued_events_and_later_events_are_counted():
    sink = MemorySink()
    evmiddleware.configure(providers=[sink], flush_interval=60)
    evmiddleware.track("queued", user_id="u")
    evmiddleware.shutdown(5)
    assert [e.name for e in sink.events] == ["queued"]
    evmiddleware.track("late", user_id="u")
    assert evmiddleware.stats()["dropped"] == {"shut_down": 1}


@pytest.mark.parametrize("forever", [math.inf, 1e300])
def test_flush_and_shutdown_wait_without_a_limit_for_an_infinite_timeout(forever):
    sink = MemorySink()
    evmiddleware.configure(providers=[sink], flush_interval=60)
    evmiddleware.track("one", user_id="u")
    assert evmiddleware.flush(forever)
    evmiddleware.track("two", user_id="u")
    evmiddleware.shutdown(forever)
    assert [e.name for e in sink.events] == ["one", "two"]


@pytest.mark.parametrize("call", [evmiddleware.flush, evmiddleware.shutdown])
def test_a_timeout_that_is_not_a_number_of_seconds_is_refused_before_anything_stops(call, memory_sink):
    evmiddleware.track("kept", user_id="u")
    with pytest.raises(ValueError, match="nan"):
        call(math.nan)
    with pytest.raises(TypeError, match="str"):
        call("5")
    assert [e.name for e in delivered(memory_sink)] == ["kept"]  # still running


def test_request_events_over_the_size_limit_are_dropped_not_sent(memory_sink):
    from evmiddleware.api import record_request_event
    from evmiddleware.context import RequestContext

    evmiddleware.configure(providers=[memory_sink], max_event_bytes=1024)
    ctx = RequestContext("anon-1")
    record_request_event(ctx, "http_request", dict, {"method": "GET", "path": "/", "user_agent": "x" * 2000})
    record_request_event(ctx, "http_request", dict, {"method": "GET", "path": "/ok"})
    assert evmiddleware.flush(5) is False  # it reports the refused one
    [event] = memory_sink.events
    assert event.properties == {"method": "GET", "path": "/ok"}
    assert (event.anonymous_id, event.user_id) == ("anon-1", None)
    assert evmiddleware.stats()["dropped"] == {"too_large": 1}
