"""Pure WSGI middleware: one event per request, recorded when the server closes the response.

    from evmiddleware.wsgi import EventMiddleware
    app.wsgi_app = EventMiddleware(app.wsgi_app)

It wraps ``start_response`` (to read the status and add the one ``Set-Cookie`` header) and the
response iterable, so a streamed body is timed to its end and an error raised while it is being
iterated is recorded. The app call, each step of the iteration (a generator body runs then) and
``close()`` run in a copy of the server's context where the request is current, so context variables
the app sets stay in the request, whichever thread serves the body. The wrapper keeps what servers
look at: ``close()`` is always forwarded; a list or tuple keeps its ``len()`` (servers derive
``Content-Length`` from it); a ``wsgi.file_wrapper`` object is returned as itself, only its ``close``
hooked, so ``sendfile`` stays.

WSGI exposes no route: the route is ``route_resolver(environ)`` after the app ran, else the raw path.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from contextvars import copy_context
from types import TracebackType
from typing import Any, Optional

from .capture import Capture, CaptureOptions, RequestState, sets_cookie
from .capture_options import refuse_async
from .context import _current
from .lifecycle import install_signal_handler, wrapped_app

# The ContextVar's own method: context.enter would add a Python call.
_enter = _current.set

__all__ = ["STATE_KEY", "EventMiddleware"]

#: Environ key holding the request's :class:`~evmiddleware.capture.RequestState` (or ``None``); it
#: also tells an inner copy of the middleware that the request is taken.
STATE_KEY = "evmiddleware.state"

_END: Any = object()

ExcInfo = tuple[type[BaseException], BaseException, Optional[TracebackType]]  # noqa: UP045
StartResponse = Callable[..., Callable[[bytes], object]]
#: The environ is a ``dict`` (PEP 3333), as typeshed's ``WSGIEnvironment`` has it: what Flask's
#: ``app.wsgi_app``, Django's ``WSGIHandler`` and other typed WSGI apps take.
Environ = dict[str, Any]
WSGIApp = Callable[[Environ, StartResponse], Iterable[bytes]]


class EventMiddleware:
    """Wrap a WSGI app so that each request records one event; options as
    :class:`~evmiddleware.capture.CaptureOptions`::

        app.wsgi_app = EventMiddleware(app.wsgi_app, exclude_paths=("/health",))
    """

    def __init__(
        self, app: WSGIApp | None = None, /, options: CaptureOptions | None = None, **overrides: Any
    ) -> None:
        self.app = wrapped_app(app, overrides)  # app=...: old Starlette's add_middleware passes it so
        self.capture = Capture(options, **overrides)
        refuse_async("user_id_resolver", self.capture.options.user_id_resolver)
        if self.capture.options.install_signal_handler:
            install_signal_handler()

    def __call__(self, environ: Environ, start_response: StartResponse) -> Iterable[bytes]:
        if STATE_KEY in environ:
            return self.app(environ, start_response)
        capture = self.capture
        state = environ[STATE_KEY] = capture.start_environ(environ)
        if state is None:
            return self.app(environ, start_response)
        # The request runs in a copy of the server's context where the state is current. Entering that
        # copy (the app call, each step of the body, its close) swaps a pointer, where ContextVar.set
        # and reset build a new mapping each time (eight per request, for the garbage collector to
        # chase), and the server's own context never holds the request, whoever calls close().
        run = copy_context().run
        run(_enter, state)
        body = _Body(state, capture, start_response, run)
        try:
            result = run(self.app, environ, body.start_response)
        except BaseException as exc:
            capture.finish(state, error=exc)
            raise
        file_wrapper = environ.get("wsgi.file_wrapper")
        if (
            file_wrapper is not None
            and type(result) is file_wrapper
            and _finish_on_close(result, state, capture)
        ):
            return result
        if type(result) is list or type(result) is tuple:
            return _SizedBody(state, capture, start_response, run, result)
        body.result = result
        return body


class _Body:
    """The app's ``start_response`` and response iterable, with the request's context around each step
    of the body and the event on close."""

    __slots__ = ("_capture", "_ended", "_error", "_run", "_start_response", "_started", "_state", "result")

    def __init__(
        self,
        state: RequestState,
        capture: Capture,
        start_response: StartResponse,
        run: Callable[..., Any],
        result: Iterable[bytes] = (),
    ) -> None:
        self._state = state
        self._capture = capture
        self._start_response = start_response
        self._run = run
        self.result = result
        self._started = False
        self._ended = False
        self._error: BaseException | None = None

    def start_response(
        self, status: str, headers: list[tuple[str, str]], exc_info: ExcInfo | None = None
    ) -> Callable[[bytes], object]:
        """What the app gets as ``start_response``: reads the status, adds the cookie."""
        state = self._state
        try:
            state.status = int(status[:3])
        except (TypeError, ValueError):  # the server will refuse it; not ours to judge
            state.status = None
        cookie = state.set_cookie
        # Called again (with exc_info), the headers are replaced: add it again. The app's own cookie of
        # that name wins, as it would without the middleware (an app restoring a known id at sign-in).
        if cookie is not None and not sets_cookie(headers, "set-cookie", self._capture.cookie_prefix):
            headers = [*headers, ("Set-Cookie", cookie)]
        if exc_info is None:
            return self._start_response(status, headers)
        if exc_info[0] is not None and state.error_type is None:  # the app's error page: name its cause
            state.error_type = exc_info[0].__name__
        return self._start_response(status, headers, exc_info)

    def __iter__(self) -> Iterator[bytes]:
        self._started = True
        return self._chunks()

    def _chunks(self) -> Iterator[bytes]:
        # A generator rather than ``__next__``: resuming it costs less than a method call, and the end
        # arrives as ``next``'s default, not as a StopIteration raised through two Python frames.
        run = self._run
        try:
            iterator = run(iter, self.result)  # a class's __iter__ may run the app's code too
        except BaseException as exc:
            self._error = exc
            raise
        while True:
            try:
                chunk = run(next, iterator, _END)
            except BaseException as exc:
                self._error = exc
                raise
            if chunk is _END:
                self._ended = True
                return
            yield chunk

    def close(self) -> None:
        state = self._state
        error = self._error
        try:
            close = getattr(self.result, "close", None)
            if close is not None:
                self._run(close)
        except BaseException as exc:
            error = error or exc
            raise
        finally:
            # Closed before the end without an error: the server stopped sending (client gone).
            # HEAD responses may legitimately be closed unread.
            cut_short = self._started and not self._ended and error is None and state.seen[0] != "HEAD"
            self._capture.finish(state, None, error, cut_short)  # positional: cheaper than keywords


class _SizedBody(_Body):
    """A list or tuple: already computed, so iterated directly; ``len()`` stays for the server."""

    __slots__ = ()

    def __iter__(self) -> Iterator[bytes]:
        return iter(self.result)

    def __len__(self) -> int:
        return len(self.result)  # type: ignore[arg-type]  # only built for lists and tuples


def _finish_on_close(result: Any, state: RequestState, capture: Capture) -> bool:
    """Hook the event onto a file wrapper's ``close`` (set per instance by gunicorn and wsgiref)."""
    inner_close = getattr(result, "close", None)

    def close() -> None:
        error = None
        try:
            if inner_close is not None:
                inner_close()
        except BaseException as exc:
            error = exc
            raise
        finally:
            capture.finish(state, error=error)

    try:
        result.close = close
    except AttributeError:  # __slots__ or a read-only attribute: wrap it like any iterable
        return False
    return True
