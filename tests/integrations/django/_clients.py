"""Django's test clients, sync (the WSGI-like handler) and async (the ASGI handler), as contract shops."""

from __future__ import annotations

import json as jsonlib
from collections.abc import Callable
from typing import Any
from urllib.parse import urlencode

from asgiref.sync import async_to_sync
from django.test import AsyncClient, Client

from .._contract import COOKIE, Reply


def _payload(json: Any, form: dict[str, str] | None) -> tuple[str, str]:
    if json is not None:
        return jsonlib.dumps(json), "application/json"
    if form is not None:
        return urlencode(form), "application/x-www-form-urlencoded"
    return "", "application/octet-stream"


def _cookies(response: Any) -> list[str]:
    return [morsel.OutputString() for name, morsel in response.cookies.items() if name == COOKIE]


async def _body(response: Any) -> str:
    if not response.streaming:
        return str(response.content.decode())
    if response.is_async:
        parts = [part async for part in response.streaming_content]
    else:
        parts = list(response.streaming_content)
    response.close()
    return b"".join(parts).decode()


class DjangoShop:
    """The sync handler: Django's test ``Client``."""

    defers_body = True

    def __init__(self, **kwargs: Any) -> None:
        self.client = Client(raise_request_exception=False, **kwargs)

    def request(
        self, method: str, path: str, *, json: Any = None, form: dict[str, str] | None = None
    ) -> Reply:
        data, content_type = _payload(json, form)
        response = self.client.generic(method, path, data, content_type=content_type)
        return Reply(response.status_code, async_to_sync(_body)(response), _cookies(response))

    def open(self, path: str) -> Callable[[], str]:
        response = self.client.get(path)
        return lambda: async_to_sync(_body)(response)


class DjangoAsyncShop:
    """The async handler: Django's ``AsyncClient``, as under an ASGI server."""

    defers_body = True

    def __init__(self, **kwargs: Any) -> None:
        self.client = AsyncClient(raise_request_exception=False, **kwargs)

    def request(
        self, method: str, path: str, *, json: Any = None, form: dict[str, str] | None = None
    ) -> Reply:
        data, content_type = _payload(json, form)

        async def go() -> Reply:
            response = await self.client.generic(method, path, data, content_type=content_type)
            return Reply(response.status_code, await _body(response), _cookies(response))

        return async_to_sync(go)()

    def open(self, path: str) -> Callable[[], str]:
        response = async_to_sync(self.client.get)(path)
        return lambda: async_to_sync(_body)(response)
