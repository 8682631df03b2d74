"""The shop's views: plain sync Django views (under ASGI Django runs them in its thread)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

from django.http import HttpRequest, HttpResponse, JsonResponse, StreamingHttpResponse
from django.views.decorators.http import require_GET, require_POST

import evmiddleware

from .auth import USER_COOKIE, USER_SALT


@require_GET
def home(request: HttpRequest) -> HttpResponse:
    return HttpResponse("Welcome to the shop", content_type="text/plain")


@require_GET
def item(request: HttpRequest, item_id: int) -> JsonResponse:
    return JsonResponse({"item_id": item_id, "name": f"Item {item_id}"})


def _json(request: HttpRequest) -> dict[str, Any]:
    if request.content_type == "application/json" and request.body:
        data = json.loads(request.body)
        return data if isinstance(data, dict) else {}
    return {}


@require_POST
def login(request: HttpRequest) -> JsonResponse:
    user_id = str(_json(request).get("user_id") or request.POST.get("user_id") or "")
    if not user_id:
        return JsonResponse({"error": "user_id missing"}, status=400)
    evmiddleware.identify(user_id, plan="free")  # this request, and its event, now carry the user id
    response = JsonResponse({"user_id": user_id})
    response.set_signed_cookie(USER_COOKIE, user_id, salt=USER_SALT, httponly=True, samesite="Lax")
    return response


@require_POST
@evmiddleware.tracked("checkout_completed", source="django")  # one event per call, with its duration
def checkout(request: HttpRequest) -> JsonResponse:
    order = _json(request)
    total = float(order.get("total", 19.9))
    evmiddleware.track("order_paid", {"revenue": total, "currency": "EUR", "items": order.get("items", [])})
    return JsonResponse({"ok": True, "total": total})


@require_GET
def stream(request: HttpRequest) -> StreamingHttpResponse:
    def chunks() -> Iterator[str]:
        for i in range(3):
            yield f"chunk {i}\n"

    return StreamingHttpResponse(chunks(), content_type="text/plain")


@require_GET
def boom(request: HttpRequest) -> HttpResponse:
    raise RuntimeError("boom")


@require_GET
def health(request: HttpRequest) -> HttpResponse:
    return HttpResponse("ok", content_type="text/plain")
