"""A second URLconf and helper middleware for the integration's own tests (not the example app)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from typing import Any

from asgiref.sync import iscoroutinefunction, markcoroutinefunction
from django.contrib.auth.signals import user_logged_in
from django.http import Http404, HttpResponse, StreamingHttpResponse
from django.urls import include, path, re_path

import evmiddleware

SITE = "tests.integrations.django.site"


class User:
    def __init__(self, pk: Any) -> None:
        self.pk = pk
        self.is_authenticated = pk is not None


def order(request: Any, order: str) -> HttpResponse:
    return HttpResponse("order")


def legacy(request: Any, code: str) -> HttpResponse:
    return HttpResponse("legacy")


def any_parameters(request: Any, **parameters: Any) -> HttpResponse:
    return HttpResponse("found")


def missing(request: Any) -> HttpResponse:
    raise Http404("no such thing")


def fail(request: Any) -> HttpResponse:
    raise ValueError("bad")


def signin(request: Any, pk: str) -> HttpResponse:
    user_logged_in.send(sender=User, request=request, user=User(pk))
    return HttpResponse("signed in")


def me(request: Any) -> HttpResponse:
    evmiddleware.track("profile_viewed")
    return HttpResponse("me")


def stream(request: Any) -> StreamingHttpResponse:
    def chunks() -> Iterator[bytes]:
        for _ in range(3):
            yield b"chunk\n"

    return StreamingHttpResponse(chunks())


def dated(request: Any) -> StreamingHttpResponse:
    """A stream with ``Last-Modified``: ``ConditionalGetMiddleware`` may send a 304 in its place."""
    response = stream(request)
    response["Last-Modified"] = "Mon, 01 Jan 2024 00:00:00 GMT"
    return response


async def astream(request: Any) -> StreamingHttpResponse:
    async def chunks() -> AsyncIterator[bytes]:
        for i in range(3):
            evmiddleware.track("chunk_sent", {"i": i})
            yield b"chunk\n"

    return StreamingHttpResponse(chunks())


urlpatterns = [
    path("api/", include([path("orders/<slug:order>/", order)])),
    re_path(r"^legacy/(?P<code>[0-9]{4})/$", legacy),
    path("missing", missing),
    path("fail", fail),
    path("signin/<str:pk>", signin),
    path("me", me),
    path("stream", stream),
    path("dated", dated),
    path("astream", astream),
    re_path(r"^shop/(?P<shop>[a-z]+)/", include([path("items/<int:iid>/", any_parameters)])),
    path("blog/<slug:blog>/", include([re_path(r"^posts/(?P<pk>[0-9]+)/$", any_parameters)])),
]


class _Hybrid:
    sync_capable = True
    async_capable = True

    def __init__(self, get_response: Any) -> None:
        self.get_response = get_response
        if iscoroutinefunction(get_response):
            markcoroutinefunction(self)

    def __call__(self, request: Any) -> Any:
        self.attach(request)
        return self.get_response(request)

    def attach(self, request: Any) -> None:
        raise NotImplementedError


class Untouchable:
    def __getattr__(self, name: str) -> Any:
        raise AssertionError(f"request.user.{name} read on the async path")


class UserThroughAuser(_Hybrid):
    """As Django 5's AuthenticationMiddleware under ASGI, where ``request.user`` must not be read:
    here reading it fails; ``await request.auser()`` gives the user."""

    def attach(self, request: Any) -> None:
        user = User(request.headers.get("x-user"))

        async def auser() -> User:
            return user

        request.user = Untouchable()
        request.auser = auser


class UserOnly(_Hybrid):
    """As Django 4.2's AuthenticationMiddleware: ``request.user`` only."""

    def attach(self, request: Any) -> None:
        request.user = User(request.headers.get("x-user"))


class SyncOnly:
    """A middleware Django must adapt under ASGI: proves the adaptation is seen by the test."""

    sync_capable = True
    async_capable = False

    def __init__(self, get_response: Any) -> None:
        self.get_response = get_response

    def __call__(self, request: Any) -> Any:
        return self.get_response(request)
