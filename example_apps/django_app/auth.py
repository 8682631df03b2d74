"""A stand-in for ``AuthenticationMiddleware`` without a database: the user signed in at ``/login``
lives in a signed cookie. It sets ``request.user`` and ``request.auser()`` as Django's does, so
``EventMiddleware`` reads the user the way it does in any project."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from asgiref.sync import iscoroutinefunction, markcoroutinefunction
from django.http import HttpRequest, HttpResponse

USER_COOKIE = "shop_user"
USER_SALT = "example-shop"


class ShopUser:
    """What Django's user objects offer to middleware: ``pk`` and ``is_authenticated``."""

    def __init__(self, pk: str | None) -> None:
        self.pk = pk
        self.is_authenticated = pk is not None


class SignedCookieUserMiddleware:
    sync_capable = True
    async_capable = True

    def __init__(self, get_response: Callable[[HttpRequest], Any]) -> None:
        self.get_response = get_response
        self._async = iscoroutinefunction(get_response)
        if self._async:
            markcoroutinefunction(self)

    def __call__(self, request: HttpRequest) -> HttpResponse | Awaitable[HttpResponse]:
        user = ShopUser(request.get_signed_cookie(USER_COOKIE, default=None, salt=USER_SALT))

        async def auser() -> ShopUser:
            return user

        request.user = user
        request.auser = auser
        return self.get_response(request)
