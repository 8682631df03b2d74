"""``identify()`` validates its id before touching the request; ``@tracked`` on generators, asgiref
coroutine functions, class and static methods, and in strict mode."""

from __future__ import annotations

import asyncio
import inspect
import logging
import time
import uuid

import pytest
from asgiref.sync import markcoroutinefunction, sync_to_async

import evmiddleware
from evmiddleware import api
from evmiddleware.context import request_context
from evmiddleware.providers.sinks import MemorySink
from tests.capture.capture_helpers import Clock  # time.perf_counter moved by the test: exact durations


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> Clock:
    fake = Clock()
    monkeypatch.setattr(time, "perf_counter", fake)
    return fake


def delivered(sink: MemorySink):
    assert evmiddleware.flush(5)
    return list(sink.events)


def dropped() -> dict[str, int]:
    return dict(evmiddleware.stats()["dropped"])


# --- identify(): the id is checked first ------------------------------------------------------------


INVALID_IDS = [
    pytest.param(uuid.UUID("12345678-1234-5678-1234-567812345678"), id="uuid-object"),
    pytest.param("u" * 300, id="over-255-characters"),
    pytest.param("   ", id="blank"),
    pytest.param(None, id="none"),
]


@pytest.mark.parametrize("bad_id", INVALID_IDS)
def test_identify_with_an_invalid_id_is_a_counted_drop_and_leaves_the_request_unchanged(memory_sink, bad_id):
    with request_context(anonymous_id="anon-1", user_id="u-before") as ctx:
        assert evmiddleware.identify(bad_id, plan="pro") is None
        assert (ctx.user_id, ctx.identified) == ("u-before", False)
        evmiddleware.track("after_identify")
    [after] = delivered(memory_sink)
    assert (after.name, after.user_id, after.anonymous_id) == ("after_identify", "u-before", "anon-1")
    assert dropped() == {"invalid_id": 1}


def test_identify_with_a_too_long_id_does_not_break_the_rest_of_the_request(memory_sink):
    with request_context(anonymous_id="anon-1") as ctx:
        evmiddleware.identify("u" * 300)
        assert ctx.user_id is None
        evmiddleware.track("one")
        evmiddleware.track("two")
    assert [(e.name, e.user_id, e.anonymous_id) for e in delivered(memory_sink)] == [
        ("one", None, "anon-1"),
        ("two", None, "anon-1"),
    ]
    assert dropped() == {"invalid_id": 1}


def test_identify_takes_ids_as_track_does(memory_sink):
    # track() accepts an int (as its str) and strips whitespace, and refuses a UUID object.
    assert evmiddleware.track("t", user_id=uuid.uuid4()) is None  # type: ignore[arg-type]
    assert dropped() == {"invalid_id": 1}
    with request_context(anonymous_id="anon-1") as ctx:
        evmiddleware.identify(42)  # type: ignore[arg-type]
        assert ctx.user_id == "42"
        evmiddleware.identify("  u8 ")
        assert (ctx.user_id, ctx.identified) == ("u8", True)
        evmiddleware.track("after")
    events = delivered(memory_sink)
    assert [(e.kind, e.user_id) for e in events] == [("identify", "42"), ("identify", "u8"), ("track", "u8")]
    assert dropped() == {"invalid_id": 1}


def test_identify_with_an_invalid_id_raises_in_strict_mode_and_changes_nothing():
    evmiddleware.configure(providers=[MemorySink()], strict=True)
    with request_context(anonymous_id="anon-1") as ctx:
        with pytest.raises(evmiddleware.EventError) as raised:
            evmiddleware.identify("u" * 300)
        assert raised.value.reason == "invalid_id"
        assert (ctx.user_id, ctx.identified) == (None, False)


def test_identify_when_disabled_refuses_silently(monkeypatch):
    monkeypatch.setenv("EVMIDDLEWARE_DISABLED", "1")
    with request_context(anonymous_id="anon-1") as ctx:
        assert evmiddleware.identify(None) is None  # type: ignore[arg-type]
        assert ctx.user_id is None
    assert evmiddleware.stats()["disabled"] is True


# --- @tracked on generators: recorded when the generator ends -----------------------------------------


def test_tracked_generator_records_when_it_finishes_with_its_duration(memory_sink, clock):
    @evmiddleware.tracked("export", kind="csv")
    def rows(n):
        for i in range(n):
            clock.advance(0.1)
            received = yield i
            assert received in (None, "ack")
        return "done"

    assert inspect.isgeneratorfunction(rows)
    with request_context(anonymous_id="a"):
        gen = rows(3)
        assert delivered(memory_sink) == []  # nothing at creation
        assert next(gen) == 0
        assert gen.send("ack") == 1
        assert next(gen) == 2
        assert delivered(memory_sink) == []  # nor while it runs
        with pytest.raises(StopIteration) as stop:
            next(gen)
        assert stop.value.value == "done"  # the return value comes through
    [event] = delivered(memory_sink)
    assert event.name == "export"
    assert event.properties == {"kind": "csv", "duration_ms": 300.0, "raised": False}


def test_tracked_generator_that_raises_records_the_error_and_propagates_it(memory_sink, clock):
    error = ValueError("boom")

    @evmiddleware.tracked("gen")
    def gen():
        clock.advance(0.2)
        yield 1
        raise error

    with request_context(anonymous_id="a"), pytest.raises(ValueError) as raised:
        list(gen())
    assert raised.value is error
    [event] = delivered(memory_sink)
    assert event.properties == {"duration_ms": 200.0, "raised": True, "error_type": "ValueError"}


def test_tracked_generator_closed_early_records_it_did_not_raise(memory_sink, clock):
    cleaned_up = []

    @evmiddleware.tracked("gen")
    def gen():
        try:
            clock.advance(0.05)
            yield 1
            yield 2
        finally:
            cleaned_up.append(True)

    with request_context(anonymous_id="a"):
        g = gen()
        assert next(g) == 1
        g.close()
    assert cleaned_up == [True]
    [event] = delivered(memory_sink)
    assert event.properties == {"duration_ms": 50.0, "raised": False}


def test_tracked_generator_forwards_throw(memory_sink, clock):
    @evmiddleware.tracked("gen")
    def gen():
        try:
            yield 1
        except KeyError:
            yield "handled"

    with request_context(anonymous_id="a"):
        g = gen()
        next(g)
        assert g.throw(KeyError("k")) == "handled"
        with pytest.raises(StopIteration):
            next(g)
    [event] = delivered(memory_sink)
    assert event.properties["raised"] is False


def test_tracked_async_generator_records_when_it_finishes(memory_sink, clock):
    @evmiddleware.tracked("stream")
    async def stream():
        for i in range(2):
            await asyncio.sleep(0)
            clock.advance(0.25)
            received = yield i
            assert received in (None, "ack")

    assert inspect.isasyncgenfunction(stream)

    async def main():
        with request_context(anonymous_id="a"):
            agen = stream()
            assert await agen.__anext__() == 0
            assert await agen.asend("ack") == 1
            assert delivered(memory_sink) == []  # nothing while it runs
            with pytest.raises(StopAsyncIteration):
                await agen.__anext__()

    asyncio.run(main())
    [event] = delivered(memory_sink)
    assert event.properties == {"duration_ms": 500.0, "raised": False}


def test_tracked_async_generator_that_raises_records_the_error_and_propagates_it(memory_sink, clock):
    error = ValueError("boom")

    @evmiddleware.tracked("stream")
    async def stream():
        clock.advance(0.2)
        yield 1
        raise error

    async def main():
        with request_context(anonymous_id="a"):
            async for _ in stream():
                pass

    with pytest.raises(ValueError) as raised:
        asyncio.run(main())
    assert raised.value is error
    [event] = delivered(memory_sink)
    assert event.properties == {"duration_ms": 200.0, "raised": True, "error_type": "ValueError"}


def test_tracked_async_generator_closed_early_or_thrown_into(memory_sink, clock):
    cleaned_up = []

    @evmiddleware.tracked("stream")
    async def stream():
        try:
            try:
                yield 1
            except KeyError:
                yield "handled"
            yield 2
        finally:
            cleaned_up.append(True)

    async def main():
        with request_context(anonymous_id="a"):
            agen = stream()
            assert await agen.__anext__() == 1
            assert await agen.athrow(KeyError("k")) == "handled"
            clock.advance(0.1)
            await agen.aclose()

    asyncio.run(main())
    assert cleaned_up == [True]
    [event] = delivered(memory_sink)
    assert event.properties == {"duration_ms": 100.0, "raised": False}


# --- @tracked on asgiref's coroutine functions -----------------------------------------------------


def test_tracked_times_a_sync_to_async_call_and_sees_its_exception(memory_sink, clock):
    @evmiddleware.tracked("export")
    @sync_to_async
    def export():
        clock.advance(0.2)
        raise ValueError("boom")

    assert inspect.iscoroutinefunction(export)

    async def main():
        with request_context(anonymous_id="a"):
            await export()

    with pytest.raises(ValueError, match="boom"):
        asyncio.run(main())
    [event] = delivered(memory_sink)
    assert event.properties == {"duration_ms": 200.0, "raised": True, "error_type": "ValueError"}


def test_tracked_times_a_markcoroutinefunction_callable(memory_sink, clock):
    async def work(x):
        await asyncio.sleep(0)
        clock.advance(0.3)
        return x * 2

    @evmiddleware.tracked("work")
    @markcoroutinefunction
    def marked(x):
        return work(x)

    async def main():
        with request_context(anonymous_id="a"):
            return await marked(2)

    assert asyncio.run(main()) == 4
    [event] = delivered(memory_sink)
    assert event.properties == {"duration_ms": 300.0, "raised": False}


# --- @tracked with @classmethod / @staticmethod, in either order ------------------------------------


def test_tracked_above_and_below_classmethod_and_staticmethod(memory_sink):
    class Shop:
        rate = 2

        @evmiddleware.tracked("cm_above")
        @classmethod
        def cm_above(cls, x):
            return cls.rate * x

        @evmiddleware.tracked
        @classmethod
        def cm_bare(cls, x):
            return cls.rate * x

        @classmethod
        @evmiddleware.tracked("cm_below")
        def cm_below(cls, x):
            return cls.rate * x

        @evmiddleware.tracked("sm_above")
        @staticmethod
        def sm_above(x):
            return x

        @evmiddleware.tracked
        @staticmethod
        def sm_bare(x):
            return x

        @staticmethod
        @evmiddleware.tracked("sm_below")
        def sm_below(x):
            return x

    class Sub(Shop):
        rate = 3

    with request_context(anonymous_id="a"):
        assert Shop.cm_above(1) == 2
        assert Sub().cm_above(1) == 3  # cls is still the class it is called on
        assert Shop.cm_bare(1) == 2
        assert Shop.cm_below(1) == 2
        assert Shop.sm_above(5) == 5
        assert Shop().sm_above(5) == 5
        assert Shop().sm_bare(6) == 6
        assert Shop().sm_below(7) == 7
    names = [e.name for e in delivered(memory_sink)]
    assert names[:3] == ["cm_above", "cm_above", names[2]]
    assert names[2].endswith("Shop.cm_bare")
    assert names[3:6] == ["cm_below", "sm_above", "sm_above"]
    assert names[6].endswith("Shop.sm_bare")
    assert names[7] == "sm_below"
    assert isinstance(Shop.__dict__["cm_above"], classmethod)
    assert isinstance(Shop.__dict__["sm_above"], staticmethod)


def test_tracked_above_an_async_classmethod(memory_sink):
    class Shop:
        @evmiddleware.tracked("paid")
        @classmethod
        async def pay(cls, amount):
            await asyncio.sleep(0)
            return amount

    async def main():
        with request_context(anonymous_id="a"):
            return await Shop.pay(3)

    assert asyncio.run(main()) == 3
    assert [e.name for e in delivered(memory_sink)] == ["paid"]


# --- a failure to record never reaches the decorated function's caller -------------------------------


def test_strict_mode_keeps_the_functions_exception_and_return_value(caplog_evm):
    evmiddleware.configure(providers=[MemorySink()], strict=True)
    error = ValueError("the function's own error")

    @evmiddleware.tracked("job")  # outside a request, no ids: the event is refused (no_identity)
    def job(fail):
        if fail:
            raise error
        return 42

    with pytest.raises(ValueError) as raised:
        job(True)
    assert raised.value is error
    assert raised.value.__context__ is None  # nothing raised while handling it
    assert job(False) == 42
    assert dropped() == {"no_identity": 2}
    assert "no_identity" in caplog_evm.text


def test_strict_mode_keeps_the_result_of_async_functions_and_generators():
    evmiddleware.configure(providers=[MemorySink()], strict=True)

    @evmiddleware.tracked("a")
    async def a():
        return "async result"

    @evmiddleware.tracked("g")
    def g():
        yield 1
        return "gen result"

    @evmiddleware.tracked("ag")
    async def ag():
        yield 1

    async def drain():
        return [x async for x in ag()]

    assert asyncio.run(a()) == "async result"
    assert list(g()) == [1]
    assert asyncio.run(drain()) == [1]
    assert dropped() == {"no_identity": 3}


def test_an_unexpected_tracking_failure_is_logged_and_counted_not_raised(
    memory_sink, monkeypatch, caplog_evm
):
    def broken_track(*args, **kwargs):
        raise RuntimeError("tracking bug")

    monkeypatch.setattr(api, "track", broken_track)

    @evmiddleware.tracked("job")
    def job():
        return "result"

    with request_context(anonymous_id="a"):
        assert job() == "result"
    assert dropped() == {"internal_error": 1}
    assert any(
        r.levelno == logging.ERROR and "@tracked could not record" in r.getMessage()
        for r in caplog_evm.records
    )
