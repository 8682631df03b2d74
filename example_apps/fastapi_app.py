"""The example shop with FastAPI. The one line that turns tracking on is ``EventTracking(app, ...)``.

Run it under a real server (from this folder), with providers from the environment::

    uvicorn fastapi_app:app --host 127.0.0.1 --port 8000

or point it at the local sandbox first: ``evmiddleware sandbox`` prints the variables to export.
``/health`` is not tracked (``EVMIDDLEWARE_EXCLUDE_PATHS``, default ``/health``); a signed-in user is
kept in a signed cookie, read by the ``user_id_resolver``.
"""

# No ``from __future__ import annotations``: FastAPI reads the endpoints' annotations at runtime, and
# older versions (0.100) resolve those of a decorated endpoint (``@tracked``) in the decorator's module.
import hashlib
import hmac
import json
import os
from collections.abc import AsyncIterator
from typing import Annotated, Any
from urllib.parse import parse_qs

from fastapi import BackgroundTasks, Depends, FastAPI, Request
from fastapi.responses import JSONResponse, PlainTextResponse, StreamingResponse

import evmiddleware
from evmiddleware_fastapi import EventTracking, Tracker

USER_COOKIE = "shop_user"
_SECRET = os.environ.get("EXAMPLE_SECRET_KEY", "example-only-not-a-secret").encode()


def _signature(value: str) -> str:
    return hmac.new(_SECRET, value.encode(), hashlib.sha256).hexdigest()[:32]


def signed_in_user(request: Request) -> str | None:
    """The user id from the signed cookie set at ``/login`` (a real app uses its own authentication)."""
    value, _, signature = request.cookies.get(USER_COOKIE, "").rpartition(".")
    return value if value and hmac.compare_digest(signature, _signature(value)) else None


app = FastAPI(title="evmiddleware example shop")
EventTracking(
    app,
    exclude_paths=os.environ.get("EVMIDDLEWARE_EXCLUDE_PATHS", "/health"),
    user_id_resolver=signed_in_user,
)


@app.get("/", response_class=PlainTextResponse)
async def home() -> str:
    return "Welcome to the shop"


@app.get("/items/{item_id}")
async def item(item_id: int) -> dict[str, Any]:
    return {"item_id": item_id, "name": f"Item {item_id}"}


@app.post("/login")
async def login(request: Request, tracker: Annotated[Tracker, Depends()]) -> JSONResponse:
    body = await request.body()  # JSON or a form, read by hand: no python-multipart needed
    if request.headers.get("content-type", "").startswith("application/json"):
        user_id = str(json.loads(body or b"{}").get("user_id") or "")
    else:
        user_id = parse_qs(body.decode()).get("user_id", [""])[0]
    if not user_id:
        return JSONResponse({"error": "user_id missing"}, status_code=400)
    tracker.identify(user_id, plan="free")  # this request, and its event, now carry the user id
    response = JSONResponse({"user_id": user_id})
    response.set_cookie(USER_COOKIE, f"{user_id}.{_signature(user_id)}", httponly=True, samesite="lax")
    return response


def send_receipt(total: float) -> None:
    evmiddleware.track("receipt_sent", {"revenue": total})  # after the response, with the request's ids


@app.post("/checkout")
@evmiddleware.tracked("checkout_completed", source="fastapi")  # one event per call, with its duration
def checkout(background: BackgroundTasks, order: dict[str, Any] | None = None) -> dict[str, Any]:
    order = order or {}
    total = float(order.get("total", 19.9))
    evmiddleware.track("order_paid", {"revenue": total, "currency": "EUR", "items": order.get("items", [])})
    background.add_task(send_receipt, total)
    return {"ok": True, "total": total}


@app.get("/stream")
async def stream() -> StreamingResponse:
    async def chunks() -> AsyncIterator[str]:
        for i in range(3):
            yield f"chunk {i}\n"

    return StreamingResponse(chunks(), media_type="text/plain")


@app.get("/boom")
async def boom() -> None:
    raise RuntimeError("boom")


@app.get("/health", response_class=PlainTextResponse)
async def health() -> str:
    return "ok"
