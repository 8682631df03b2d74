"""The public functions. Each is safe to call anywhere: errors become counted drops, never raises
into the caller (strict mode, for tests, raises :class:`EventError` instead)."""

from __future__ import annotations

import functools
import inspect
import logging
import math
import time
from collections.abc import AsyncGenerator, Callable, Generator, Mapping
from types import MappingProxyType
from typing import Any, TypeVar, cast, overload

from asgiref.sync import iscoroutinefunction as _iscoroutinefunction

from . import events as _ev
from . import runtime as _rt
from ._log import limited
from ._parse import MAX_SECONDS
from .context import RequestContext, _current, _looked_up, _lookups
from .errors import ConfigurationError, EventError
from .events import MAX_ID_LENGTH, Event, _known_names, build_event, clean_id
from .events import id_pool as _id_pool
from .lane import ProviderStats
from .normalize import flat_copy, normalize_properties, warn_dropped_property
from .runtime import Stats
from .signals import FAILED, call_receiver, event_tracked

__all__ = [
    "ProviderStats",
    "Stats",
    "configure",
    "flush",
    "identify",
    "shutdown",
    "stats",
    "track",
    "tracked",
]

F = TypeVar("F", bound=Callable[..., Any])
_S = TypeVar("_S")

#: Shared by every event without request facts or aliases (two new empty dicts per event: 128 bytes).
_NONE: Mapping[str, Any] = MappingProxyType({})


def configure(**settings: Any) -> None:
    """Configure the process's pipeline; settings not given come from ``EVMIDDLEWARE_*`` variables.

    Calling it again replaces the whole configuration (events already queued are flushed first).
    Raises :class:`~evmiddleware.ConfigurationError` at once for anything that cannot work::

        evmiddleware.configure(flokit_api_key="fk_live_…", flush_interval=2.0)
    """
    _rt.replace(settings)


def _active_runtime() -> _rt.Runtime | None:
    """The runtime events go to; ``None`` when tracking is off or the configuration is invalid
    (logged: only reachable without configure() or a middleware, which raise at start-up instead)."""
    try:
        runtime = _rt._runtime or _rt.current()  # the module global first: no call per event
    except ConfigurationError as exc:
        limited.log(
            logging.ERROR, "config", "evmiddleware: not tracking, the configuration is invalid: %s", exc
        )
        return None
    return None if runtime.disabled else runtime


def _refuse(runtime: _rt.Runtime, exc: EventError) -> None:
    """An event refused for ``exc``: raised in strict mode, otherwise counted and logged (rate-limited)."""
    if runtime.settings.strict:
        raise exc
    runtime.drop(None, exc.reason, str(exc))


def _emit(
    name: object,
    properties: Mapping[str, Any] | None,
    user_id: object,
    anonymous_id: object,
    timestamp: object,
    kind: str,
    *,
    request: bool = True,
    aliases: Mapping[str, str] | None = None,
) -> str | None:
    runtime = _active_runtime()
    if runtime is None:
        return None
    try:
        ctx = _current.get() if request else None
        if ctx is None and request and _lookups:  # integrations' own lookups (Django's request)
            ctx = _looked_up()
        context: Mapping[str, Any] = _NONE
        if aliases is None:
            aliases = _NONE
        # Cleaned first: a blank id is no id, so it neither passes the test below nor hides the
        # request's own id.
        user_id = clean_id(user_id, "user_id")
        anonymous_id = clean_id(anonymous_id, "anonymous_id")
        if ctx is not None:
            aliases = ctx.aliases
            if user_id is None:
                user_id = ctx.user_id
            if anonymous_id is None:
                anonymous_id = ctx.anonymous_id
            context = ctx.facts
        if user_id is None and anonymous_id is None:
            # Also inside a request that is not tracked (consent, an excluded path): it has no ids.
            raise EventError(
                "no_identity",
                f"event {name!r} has no user_id or anonymous_id (outside a tracked request, pass one)",
            )
        settings = runtime.settings
        # Positional: matching eleven keywords cost 5 % of the call.
        event = build_event(
            name,
            properties,
            user_id,
            anonymous_id,
            timestamp,
            context,
            kind,
            aliases,
            settings.max_depth,
            settings.max_event_bytes,
            warn_dropped_property,
        )
        if event_tracked.receivers:
            vetted = _run_event_tracked(event, settings.max_depth, settings.max_event_bytes)
            if not isinstance(vetted, Event):
                runtime.drop(event, vetted)
                return None
            event = vetted
        # None when the runtime dropped it (shut down meanwhile): counted and logged there.
        return event.id if runtime.submit(event) else None
    except EventError as exc:
        _refuse(runtime, exc)
    except Exception as exc:
        if runtime.settings.strict:
            raise
        limited.log(logging.ERROR, "track", "evmiddleware: tracking failed", exc_info=True)
        runtime.drop(None, "internal_error", type(exc).__name__)
    return None


def _run_event_tracked(event: Event, max_depth: int, max_bytes: int) -> Event | str:
    """The event as the receivers left it, or why it is dropped: ``vetoed``, or ``receiver_error``
    when a receiver raised (it may have been there to remove what must not leave the process).

    Each receiver gets the event as the one before it left it: one that removes private data and
    one that adds a tag must both have their way. Properties a receiver replaced are made JSON-safe
    again, as ``track()`` made the caller's.
    """
    if event_tracked.is_muted:  # blinker's muted(): as notify() does
        return event
    for receiver in event_tracked.receivers_for(None):
        result = call_receiver(event_tracked, receiver, {"event": event})
        if result is False:
            return "vetoed"
        if result is FAILED:
            return "receiver_error"
        if isinstance(result, Event):
            if result.properties is not event.properties:
                properties = normalize_properties(
                    result.properties, max_depth, max_bytes, warn_dropped_property
                )
                result = result._replace(properties=properties)
            event = result
    return event


def track(
    name: str,
    properties: Mapping[str, Any] | None = None,
    *,
    user_id: str | None = None,
    anonymous_id: str | None = None,
    timestamp: Any = None,
) -> str | None:
    """Record an event; returns its id, or ``None`` when it was dropped (counted and logged).

    Inside a request the ids come from the request; outside one, pass at least one::

        evmiddleware.track("checkout_completed", {"total": Decimal("19.90"), "currency": "EUR"})
        evmiddleware.track("nightly_export", user_id="42")

    ``timestamp`` defaults to now; a naive datetime is taken as UTC.
    """
    # The common call runs in this one frame: a name seen before, clean ids and a flat dict of plain
    # values become a record that the dispatcher thread turns into the Event (Runtime.admit). Each
    # Python call costs 0.2-0.3 µs here, and this path had six. Anything else (strict mode, signal
    # receivers, a timestamp, a full intake, input to convert or refuse) takes _emit, which
    # validates in full.
    runtime = _rt._runtime  # what peek() returns, without its call
    if runtime is not None and runtime.takes_records and timestamp is None and not event_tracked.receivers:
        ctx = _current.get()
        if ctx is None and _lookups:
            ctx = _looked_up()
        context = aliases = _NONE
        if ctx is not None:
            if user_id is None:
                user_id = ctx.user_id
            if anonymous_id is None:
                anonymous_id = ctx.anonymous_id
            context = ctx.facts
            aliases = ctx.aliases or _NONE
        clean_name = _known_names.get(name) if type(name) is str else None
        try:  # a Mapping of the app's may raise as it is read: _emit counts that as a drop
            copied = flat_copy(properties, runtime.max_event_bytes)
        except Exception:
            copied = None
        if (
            clean_name is not None
            and copied is not None
            and (user_id is not None or anonymous_id is not None)
            # A clean id, for each: clean_id's own test of its common case, inline.
            and (
                user_id is None
                or (type(user_id) is str and 0 < len(user_id) <= MAX_ID_LENGTH and user_id.strip() is user_id)
            )
            and (
                anonymous_id is None
                or (
                    type(anonymous_id) is str
                    and 0 < len(anonymous_id) <= MAX_ID_LENGTH
                    and anonymous_id.strip() is anonymous_id
                )
            )
            and len(intake := runtime.intake) < runtime.max_queue
        ):
            # Made ahead by the dispatcher; when a burst used them up, made here (an IndexError
            # would cost more than making one: test first, catch only another thread's race).
            try:
                event_id = _id_pool.pop() if _id_pool else next(_ev._ids)  # next(): new_event_id()
            except IndexError:  # another thread took the last one since the test
                event_id = next(_ev._ids)
            intake.append((event_id, clean_name, user_id, anonymous_id, _time(), copied, context, aliases))
            if runtime.finished:  # shut down since the test above: nothing would take the record
                runtime.drop_late()
                return None
            dispatcher = runtime.dispatcher
            if dispatcher._thread is None:  # ``not dispatcher.started``, without the property's call
                dispatcher.start()
            elif len(intake) == runtime._nudge_at:  # a batch's worth waits: wake the dispatcher now
                dispatcher.nudge()
            return event_id
    return _emit(name, properties, user_id, anonymous_id, timestamp, "track")


def identify(user_id: str, **traits: Any) -> str | None:
    """Tie the current visitor's anonymous id to ``user_id``.

    The rest of the request carries the user id, and an ``identify`` event records the link (with
    ``traits`` as its properties; Flywheel and Klaviyo update the profile from them)::

        evmiddleware.identify(str(user.pk), email=user.email)

    ``user_id`` follows :func:`track`'s rules for ids: a string (an int is taken as its ``str``) of at
    most 255 characters, surrounding whitespace removed. Any other id (``None``, empty, too long, a
    UUID object: pass ``str(uuid)``) is refused before anything changes: counted as an
    ``invalid_id`` drop, nothing raised (strict mode raises :class:`EventError`), and the request
    keeps the ids it had.
    """
    try:
        clean = clean_id(user_id, "user_id")
        if clean is None:
            raise EventError("invalid_id", "identify() needs a user_id, not None or an empty string")
    except EventError as exc:
        runtime = _active_runtime()
        if runtime is not None:
            _refuse(runtime, exc)
        return None
    ctx = _current.get() or _looked_up()
    if ctx is not None:
        ctx.user_id = clean
        ctx.identified = True
    return _emit("identify", traits, clean, None, None, "identify")


def _tracking_failed(exc: Exception) -> None:
    """``@tracked`` could not record its event (strict mode's :class:`EventError`, or a bug): count and
    log it (rate-limited), never raise it into the decorated function's caller. Call it in ``except``."""
    if isinstance(exc, EventError):
        reason, detail = exc.reason, str(exc)
    else:
        limited.log(
            logging.ERROR, "tracked", "evmiddleware: @tracked could not record its event", exc_info=True
        )
        reason, detail = "internal_error", type(exc).__name__
    runtime = _rt.peek()
    if runtime is not None:
        runtime.drop(None, reason, detail)  # counted, logged rate-limited, signalled


@overload
def tracked(name: F) -> F: ...
@overload
def tracked(name: str | None = None, **static_properties: Any) -> Callable[[F], F]: ...


def tracked(name: Any = None, **static_properties: Any) -> Any:
    """Record one event per call of the decorated function.

    Works on sync and async functions (asgiref's ``sync_to_async`` and ``markcoroutinefunction``
    callables included), methods, and above or below ``@classmethod`` / ``@staticmethod``. On a
    generator or async generator function the event is recorded when the generator finishes, raises
    or is closed early (a generator never started records nothing).

    The event's properties are ``static_properties`` plus ``duration_ms`` and ``raised``
    (``error_type`` when it raised; a generator closed early did not raise). The function's
    exception always propagates unchanged and its return value is never lost: a failure to record
    the event is counted and logged, never raised, even in strict mode::

        @evmiddleware.tracked("checkout_completed", flow="web")
        def checkout(request): ...
    """
    if callable(name) or isinstance(name, (classmethod, staticmethod)):
        return tracked()(name)

    def decorate(func: F) -> F:
        if isinstance(func, (classmethod, staticmethod)):
            # @tracked above @classmethod / @staticmethod: wrap the function, then wrap it again.
            return cast(F, type(func)(decorate(func.__func__)))
        event_name = name or func.__qualname__

        def record(started: float, error: BaseException | None) -> None:
            try:
                properties = dict(static_properties)
                properties["duration_ms"] = round((time.perf_counter() - started) * 1000, 3)
                properties["raised"] = error is not None
                if error is not None:
                    properties["error_type"] = type(error).__name__
                track(event_name, properties)
            except Exception as exc:
                _tracking_failed(exc)

        if inspect.isasyncgenfunction(func):
            return cast(F, _tracked_async_generator(func, record))
        if inspect.isgeneratorfunction(func):
            return cast(F, _tracked_generator(func, record))
        # asgiref's test, not inspect's: on Python 3.10 and 3.11 only it sees sync_to_async objects
        # and callables marked with markcoroutinefunction.
        if _iscoroutinefunction(func):
            return cast(F, _tracked_coroutine(func, record))
        return cast(F, _tracked_function(func, record))

    return decorate


_Record = Callable[[float, BaseException | None], None]


def _tracked_function(func: Callable[..., Any], record: _Record) -> Callable[..., Any]:
    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        started = time.perf_counter()
        try:
            result = func(*args, **kwargs)
        except BaseException as exc:
            record(started, exc)
            raise
        record(started, None)
        return result

    return wrapper


def _tracked_coroutine(func: Callable[..., Any], record: _Record) -> Callable[..., Any]:
    @functools.wraps(func)
    async def async_wrapper(*args: Any, **kwargs: Any) -> Any:
        started = time.perf_counter()
        try:
            result = await func(*args, **kwargs)
        except BaseException as exc:
            record(started, exc)
            raise
        record(started, None)
        return result

    return async_wrapper


def _tracked_generator(func: Callable[..., Any], record: _Record) -> Callable[..., Any]:
    @functools.wraps(func)
    def gen_wrapper(*args: Any, **kwargs: Any) -> Generator[Any, Any, Any]:
        started = time.perf_counter()
        try:
            result = yield from func(*args, **kwargs)  # forwards send(), throw() and close()
        except GeneratorExit:
            record(started, None)  # closed early: the caller stopped, nothing went wrong
            raise
        except BaseException as exc:
            record(started, exc)
            raise
        record(started, None)
        return result

    return gen_wrapper


def _tracked_async_generator(func: Callable[..., Any], record: _Record) -> Callable[..., Any]:
    @functools.wraps(func)
    async def async_gen_wrapper(*args: Any, **kwargs: Any) -> AsyncGenerator[Any, Any]:
        started = time.perf_counter()
        try:
            # ``yield from`` for an async generator: forward asend(), athrow() and aclose().
            agen = func(*args, **kwargs)
            try:
                value = await agen.__anext__()
                while True:
                    try:
                        sent = yield value
                    except GeneratorExit:
                        await agen.aclose()
                        raise
                    except BaseException as thrown:
                        value = await agen.athrow(thrown)
                    else:
                        value = await agen.asend(sent)
            except StopAsyncIteration:
                pass
        except GeneratorExit:
            record(started, None)  # closed early: the caller stopped, nothing went wrong
            raise
        except BaseException as exc:
            record(started, exc)
            raise
        record(started, None)

    return async_gen_wrapper


def flush(timeout: float | None = None) -> bool:
    """Wait until every event tracked before the call is delivered or has failed.

    Returns ``True`` when all were delivered (``False`` on timeout or any failure). Each failure is
    reported once: by the flush waiting for the event, or, when none was (an event a full queue
    refused, a request event too large, a batch given up before the call), by the next ``flush()``.
    Never call it on the request path in production; it is for scripts, jobs and tests.
    """
    seconds = _wait_seconds(timeout, "flush")
    return _rt.flush(seconds)  # with the runtimes a configure() is still shutting down


def shutdown(timeout: float | None = None) -> None:
    """Send what can be sent within ``timeout`` (default ``shutdown_timeout``, 5 s) and stop.

    Runs by itself at interpreter exit; what could not be sent is logged and counted. Called while
    another thread's shutdown is under way, it waits for that one (at most ``timeout``). In a signal
    receiver on the dispatcher thread it only begins the stop; the exit waits for it.
    """
    seconds = _wait_seconds(timeout, "shutdown")
    runtime = _rt.peek()
    if runtime is not None:
        runtime.shutdown(seconds)


def _wait_seconds(timeout: float | None, what: str) -> float | None:
    """``timeout`` as the dispatcher takes it; raises ``ValueError``/``TypeError`` for one that is not
    a number of seconds (a programming error, refused before anything is stopped or waited for)."""
    if timeout is None:
        return None
    if isinstance(timeout, bool) or not isinstance(timeout, (int, float)):
        raise TypeError(f"{what}() timeout must be a number of seconds or None, not {type(timeout).__name__}")
    if math.isnan(timeout):
        raise ValueError(f"{what}() timeout must be a number of seconds or None, not nan")
    # Negative: no wait at all, as threading takes it; inf (which overflows a lock's wait): a year.
    return min(max(0.0, float(timeout)), MAX_SECONDS)


def stats() -> Stats:
    """Counters per provider under ``"providers"`` (enqueued, sent, retried, rejected with
    ``rejected_reasons``, dropped and skipped by reason, queued: see :class:`ProviderStats`), events
    dropped before reaching any provider, by reason, events not handed to the providers yet
    (``waiting``), and exceptions raised by signal receivers, by signal (``receiver_errors``).

    Safe to call on any thread at any time: in every sample, per provider, ``sent + rejected +
    dropped + skipped + left_in_spool + queued == enqueued``, and ``enqueued`` never goes down."""
    return _rt.current().stats()


def record_request_event(
    ctx: RequestContext, name: str, properties: Callable[[_S], dict[str, Any]], source: _S
) -> None:
    """The capture layer's automatic event: ids from ``ctx``, properties ``properties(source)``.

    ``properties(source)`` runs on the dispatcher thread, where the event is built; it must return a
    new dict of str, int, float and bool values, and ``source`` must not change meanwhile (the capture
    layer passes a tuple of what the request saw, not the request's state). ``name`` must be a name
    the capture layer validated at start-up. Never raises (except in strict mode)::

        record_request_event(state, "http_request", capture.properties, snapshot)
    """
    runtime = _rt._runtime  # what peek() returns, without its call
    if (
        runtime is None
        or not runtime.takes_records
        or event_tracked.receivers
        or len(intake := runtime.intake) >= runtime.max_queue
    ):
        # Validated here, on the request thread: strict mode raises in the handler, receivers see
        # the event where it happened, and a full intake counts its drops like track() does.
        _emit(
            name,
            properties(source),
            ctx.user_id,
            ctx.anonymous_id,
            None,
            "track",
            request=False,
            aliases=ctx.aliases,
        )
        return
    # The fast path: a record of what is known now; the dispatcher thread builds the properties and
    # the event (Runtime.admit). That takes the id, the timestamp and the queueing off the request.
    # Here rather than in a method of the runtime: one Python call less on every request.
    # The shared empty mapping rather than the request's own empty dict: every object the record
    # holds is touched, and freed, by the dispatcher thread on another core.
    aliases = ctx.aliases or _NONE
    intake.append((name, ctx.user_id, ctx.anonymous_id, _time(), properties, source, aliases))
    if runtime.finished:  # shut down since the test above: nothing would take the record
        runtime.drop_late()
        return
    dispatcher = runtime.dispatcher
    if dispatcher._thread is None:  # ``not dispatcher.started``, without the property's call
        dispatcher.start()
    elif len(intake) == runtime._nudge_at:  # a batch's worth waits: wake the dispatcher now
        dispatcher.nudge()


_time = time.time
