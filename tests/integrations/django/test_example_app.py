"""The Django example app through Django's test clients, sync and async: every route of the contract."""

from __future__ import annotations

from typing import Any

import pytest

from .._contract import ExampleAppContract, request_events

pytest.importorskip("django")
from django.core.signals import got_request_exception
from django.test import AsyncClient, Client

from ._clients import DjangoAsyncShop, DjangoShop


class TestDjangoExampleAppSync(ExampleAppContract):
    @pytest.fixture
    def shop(self) -> DjangoShop:
        return DjangoShop()

    def test_boom_still_reaches_djangos_error_handling(self, events):
        seen: list[Any] = []

        def receive(sender: Any, request: Any = None, **kwargs: Any) -> None:
            seen.append(sender)

        got_request_exception.connect(receive)
        try:
            with pytest.raises(RuntimeError, match="boom"):
                Client().get("/boom")  # the test client re-raises what Django's handler caught
        finally:
            got_request_exception.disconnect(receive)
        assert seen
        [event] = request_events(events)
        assert (event.properties["status_code"], event.properties["error_type"]) == (500, "RuntimeError")


class TestDjangoExampleAppAsync(ExampleAppContract):
    @pytest.fixture
    def shop(self) -> DjangoAsyncShop:
        return DjangoAsyncShop()

    def test_boom_still_reaches_djangos_error_handling(self, events):
        from asgiref.sync import async_to_sync

        with pytest.raises(RuntimeError, match="boom"):
            async_to_sync(AsyncClient().get)("/boom")
        [event] = request_events(events)
        assert (event.properties["status_code"], event.properties["error_type"]) == (500, "RuntimeError")
