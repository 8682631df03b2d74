"""``EventMiddleware``: one event per request, sync or async as the handler is, without a thread hop."""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from typing import Any, cast

from asgiref.sync import iscoroutinefunction, markcoroutinefunction, sync_to_async
from django.http import HttpRequest, HttpResponseBase, StreamingHttpResponse  # type: ignore[import-untyped]
from django.utils.cache import patch_cache_control, patch_vary_headers  # type: ignore[import-untyped]

from evmiddleware.capture import (
    Capture,
    RequestState,
    _failed,
    add_route_reader,
    checked_user_id,
    resolve_user_id,
)
from evmiddleware.capture_options import _is_async, refuse_async
from evmiddleware.context import _current
from evmiddleware.lifecycle import install_signal_handler

from . import conf

__all__ = ["STATE_KEY", "EventMiddleware", "django_route_template"]

#: ``request.META`` key of the request's state; the same key an evmiddleware WSGI or ASGI middleware
#: around Django sets in the environ or scope, so a doubly installed app tracks once.
STATE_KEY = "evmiddleware.state"
_ERROR_KEY = "evmiddleware.error_type"

_CONVERTER = re.compile(r"<(?:[^<>:]+:)?([A-Za-z_][A-Za-z0-9_]*)>")
_NAMED_GROUP = re.compile(r"\(\?P<([A-Za-z_][A-Za-z0-9_]*)>(?:[^()]|\([^()]*\))*\)")
_templates: dict[str, str] = {}

# The ContextVar's own methods: context.enter/leave would add two Python calls per use.
_enter, _leave = _current.set, _current.reset

SyncGetResponse = Callable[[HttpRequest], HttpResponseBase]
AsyncGetResponse = Callable[[HttpRequest], Awaitable[HttpResponseBase]]


def django_route_template(route: str) -> str:
    """``request.resolver_match.route`` as a route template: parameter names in braces, a leading
    slash; a regex route's named groups become names too::

        django_route_template("items/<int:item_id>")         # "/items/{item_id}"
        django_route_template("^items/(?P<item_id>[0-9]+)$")  # "/items/{item_id}"
    """
    template = _templates.get(route)
    if template is None:
        # Regex groups first: the converter pattern would take ``(?P<name>`` for a converter. Both
        # kinds can meet in one route (a path() included below a re_path(), or the other way).
        template = _CONVERTER.sub(r"{\1}", _NAMED_GROUP.sub(r"{\1}", route) if "(?P<" in route else route)
        if route.startswith("^") or route.endswith("$"):
            template = template.replace("^", "").replace("\\Z", "").rstrip("$")
        template = "/" + template.lstrip("/")
        if len(_templates) < 4096:  # routes are finite; the bound guards against generated ones
            _templates[route] = template
    return template


def _route_while_running(request: Any) -> str | None:
    """The route as URL resolution left it in ``request.resolver_match``: recorded by ``process_view``
    before the view runs, and read by the state (a route reader) for events tracked before that, in
    the ``process_view`` of a middleware listed before this one."""
    match = getattr(request, "resolver_match", None) if isinstance(request, HttpRequest) else None
    return django_route_template(match.route) if match is not None and match.route is not None else None


add_route_reader(_route_while_running)


class EventMiddleware:
    """Track every request of a Django project: add it to ``MIDDLEWARE``, after
    ``AuthenticationMiddleware`` so that it knows the user::

        MIDDLEWARE = [
            ...,
            "django.contrib.auth.middleware.AuthenticationMiddleware",
            "evmiddleware_django.EventMiddleware",
            ...,
        ]

    Sync or async as the handler around it is, so it never adds a thread hop under ASGI. The route
    is ``request.resolver_match.route`` (``items/<int:item_id>`` → ``/items/{item_id}``), the user id
    ``request.user``'s primary key (``await request.auser()`` on the async path), the status the
    response's; a view exception becomes Django's 500 page and is recorded with its type. A
    streaming response is recorded after its last chunk, or when it is closed unfinished or unread
    (also when a middleware listed before this one sends another response in its place).
    Options: ``settings.EVMIDDLEWARE`` (see :mod:`evmiddleware_django.conf`).
    """

    sync_capable = True
    async_capable = True

    def __init__(self, get_response: SyncGetResponse | AsyncGetResponse) -> None:
        self.get_response = get_response
        self._config = conf.config()  # a bad setting fails here, when the server loads the app
        self._capture = conf.capture()
        self._cookie = self._capture.options.cookie_name
        self._resolver = self._config.options.user_id_resolver
        self._resolver_is_async = _is_async(self._resolver)
        self._wants_user = self._resolver is not None or self._config.track_user
        # A consent hook may read the session or the user, that is the database: on the async path
        # it runs in Django's sync thread, never on the event loop (SynchronousOnlyOperation).
        self._consent_off_loop = self._capture.options.consent is not None
        self._async = iscoroutinefunction(get_response)
        # Django calls process_view as the handler runs: an async one under ASGI (a plain one would be
        # run in a thread, a hop per request), a plain one under WSGI (the handler is sync throughout).
        self.process_view: Callable[..., Any] = self._aroute_view if self._async else self._route_view
        if self._async:
            markcoroutinefunction(self)
        else:  # only the async path awaits an async resolver
            refuse_async(
                "USER_ID_RESOLVER", self._resolver, "this middleware runs synchronously and calls it"
            )
        if self._capture.options.install_signal_handler:
            install_signal_handler()

    def __call__(self, request: HttpRequest) -> Any:
        if self._async:
            return self.__acall__(request)
        state, owned = self._start(request)
        if state is None:
            return self.get_response(request)
        if self._wants_user and state.user_id is None:
            self._user(request, state)
        token = _enter(state)
        try:
            response: HttpResponseBase = self.get_response(request)
        except BaseException as exc:  # Django turns view errors into responses; this is anything else
            if owned:
                self._capture.finish(state, error=exc)
            raise
        finally:
            _leave(token)
        return self._respond(request, state, owned, response)

    async def __acall__(self, request: HttpRequest) -> HttpResponseBase:
        if self._consent_off_loop:
            state, owned = await sync_to_async(self._start)(request)
        else:
            state, owned = self._start(request)
        if state is None:
            return await self.get_response(request)
        if self._wants_user and state.user_id is None:
            await self._auser(request, state)
        token = _enter(state)
        try:
            response: HttpResponseBase = await self.get_response(request)
        except asyncio.CancelledError:  # Django's ASGI handler cancels the request when the client leaves
            if owned:
                self._capture.finish(state, disconnected=True)
            raise
        except BaseException as exc:
            if owned:
                self._capture.finish(state, error=exc)
            raise
        finally:
            _leave(token)
        return self._respond(request, state, owned, response)

    def _route_view(self, request: HttpRequest, view: object, args: object, kwargs: object) -> None:
        """``process_view``: the route into the request's state before the view runs, so that events
        tracked there carry it. Also for a request an evmiddleware WSGI/ASGI middleware around Django
        owns: its state's route readers know the environ or scope, never Django's ``resolver_match``."""
        state: RequestState | None = request.META.get(STATE_KEY)
        if state is not None and state.route is None:
            try:
                state.route = _route_while_running(request)
            except Exception as exc:
                _failed("django", exc)

    async def _aroute_view(self, request: HttpRequest, view: object, args: object, kwargs: object) -> None:
        self._route_view(request, view, args, kwargs)

    def process_exception(self, request: HttpRequest, exception: Exception) -> None:
        """Note the view's exception: Django makes it a response before ``__call__`` sees it."""
        request.META[_ERROR_KEY] = type(exception).__name__

    # -- the request --------------------------------------------------------------------------
    def _start(self, request: HttpRequest) -> tuple[RequestState | None, bool]:
        """The request's state and whether this middleware records its event (``False`` when an
        evmiddleware WSGI/ASGI middleware around Django already took the request)."""
        meta = request.META
        if STATE_KEY in meta:
            return meta[STATE_KEY], False
        scope = getattr(request, "scope", None)
        if scope is not None and STATE_KEY in scope:
            state: RequestState | None = scope[STATE_KEY]
            meta[STATE_KEY] = state
            return state, False
        capture = self._capture
        try:
            state = capture.start(
                request.method or "GET",
                request.scheme or "http",
                request.path,
                meta.get("QUERY_STRING", ""),
                capture.environ_headers(meta),
                meta.get("REMOTE_ADDR"),
                request,
            )
        except Exception as exc:  # request.scheme reads settings; never let that cost the response
            _failed("django", exc)
            state = None
        meta[STATE_KEY] = state
        return state, True

    # The user id goes through ``resolve_user_id`` / ``checked_user_id``, as in every middleware: an
    # answer no event could carry, or an awaitable from a plain function, is a failed hook (counted),
    # and the request keeps its anonymous id and its events.
    def _user(self, request: HttpRequest, state: RequestState) -> None:
        user_id = resolve_user_id(
            _request_user_id if self._resolver is None else self._resolver,
            request,
        )
        if user_id is not None:
            state.user_id = user_id

    async def _auser(self, request: HttpRequest, state: RequestState) -> None:
        resolver = self._resolver
        user_id: str | None
        if resolver is not None and self._resolver_is_async:  # this path alone awaits one
            try:
                answer = await cast(Callable[[HttpRequest], Awaitable[object]], resolver)(request)
            except Exception as exc:
                _failed("user_id", exc)
                return
            user_id = checked_user_id(answer)
        elif resolver is not None:
            # A plain resolver reads the user or the session (the database): Django's sync thread.
            user_id = await sync_to_async(resolve_user_id)(resolver, request)
        elif (auser := getattr(request, "auser", None)) is not None:
            try:
                user = await auser()
            except Exception as exc:
                _failed("user_id", exc)
                return
            user_id = resolve_user_id(_user_id, user)
        elif hasattr(request, "user"):  # Django < 5.0: no auser(); request.user only off the loop
            user_id = await sync_to_async(resolve_user_id)(_request_user_id, request)
        else:
            user_id = None
        if user_id is not None:
            state.user_id = user_id

    def _respond(
        self, request: HttpRequest, state: RequestState, owned: bool, response: HttpResponseBase
    ) -> HttpResponseBase:
        try:
            meta = request.META
            match = getattr(request, "resolver_match", None)
            if match is not None and match.route is not None and state.route is None:
                state.route = django_route_template(match.route)
            error_type = meta.pop(_ERROR_KEY, None)
            if error_type is not None and response.status_code >= 500:
                state.error_type = error_type
            if not owned:
                return response
            if state.set_cookie is not None and self._cookie not in response.cookies:
                response.cookies.load(state.set_cookie)
                # A visitor's own id: no cache may keep this response for another visitor (Django's
                # per-site cache did, and handed the first visitor's id to everyone), as Django's CSRF
                # and session cookies do.
                patch_vary_headers(response, ("Cookie",))
                patch_cache_control(response, private=True)
            state.status = response.status_code
            if isinstance(response, StreamingHttpResponse) and not hasattr(response, "file_to_stream"):
                # Recorded after the last chunk or at close; a FileResponse may go out through the
                # server's file wrapper, which never iterates it: it is recorded now, like a plain one.
                stream = _Stream(state, self._capture, request.close)
                if response.is_async:
                    response.streaming_content = stream.achunks(response.streaming_content)
                else:
                    response.streaming_content = stream.chunks(response.streaming_content)
                response._resource_closers.append(stream.close)
                # Django's handler adds request.close to the closers of the response it sends,
                # which an outer middleware may have put in place of this one, unclosed.
                request.close = stream.sent
                return response
        except Exception as exc:
            _failed("django", exc)
        if owned:
            self._capture.finish(state)
        return response


def _user_id(user: Any) -> str | None:
    if user is None or not user.is_authenticated:
        return None
    return str(user.pk)


def _request_user_id(request: HttpRequest) -> str | None:
    return _user_id(getattr(request, "user", None))


class _Stream:
    """A streamed response's event: after the last chunk, at an error, or at close, whether the body
    was read, cut short or never started (a generator closed before its start never runs its
    ``finally``). Cut short as in the WSGI middleware: started, not ended, no error, not HEAD."""

    __slots__ = ("_capture", "_ended", "_request_close", "_started", "_state")

    def __init__(self, state: RequestState, capture: Capture, request_close: Callable[[], None]) -> None:
        self._state = state
        self._capture = capture
        self._request_close: Callable[[], None] | None = request_close
        self._started = False
        self._ended = False

    def _finish(self, status: int | None, error: BaseException | None) -> None:
        state = self._state
        cut_short = self._started and not self._ended and error is None and state.seen[0] != "HEAD"
        self._capture.finish(state, status, error, cut_short)

    def close(self) -> None:
        """The streaming response's closer: the server is done with it."""
        self._finish(None, None)

    def sent(self) -> None:
        """``request.close`` from here on: Django's handler calls it from the ``close()`` of the
        response it sent — ours, or a response an outer middleware sent in its place, such as
        ``ConditionalGetMiddleware``'s 304, which drops ours unclosed. The event then keeps the
        status this middleware saw: the one it can vouch for (list it first to see every reply)."""
        close, self._request_close = self._request_close, None
        try:
            if close is not None:
                close()
        finally:
            self._finish(None, None)  # once: finish does nothing for a request already recorded

    def chunks(self, content: Iterator[bytes]) -> Iterator[bytes]:
        """The streamed body with the request context around each step."""
        state = self._state
        self._started = True
        error: BaseException | None = None
        try:
            while True:
                token = _enter(state)
                try:
                    chunk = next(content)
                except StopIteration:
                    self._ended = True
                    return
                finally:
                    _leave(token)
                yield chunk
        except GeneratorExit:  # closed before the end: the server stopped sending
            raise
        except BaseException as exc:
            error = exc
            raise
        finally:
            self._finish(None, error)

    async def achunks(self, content: AsyncIterator[bytes]) -> AsyncIterator[bytes]:
        state = self._state
        self._started = True
        error: BaseException | None = None
        try:
            while True:
                token = _enter(state)
                try:
                    chunk = await anext(content)
                except StopAsyncIteration:
                    self._ended = True
                    return
                finally:
                    _leave(token)
                yield chunk
        except (GeneratorExit, asyncio.CancelledError):  # ASGI: Django cancels when the client leaves
            raise
        except BaseException as exc:
            error = exc
            raise
        finally:
            self._finish(None, error)
