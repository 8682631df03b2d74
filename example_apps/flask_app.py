"""The example shop with Flask. The one line that turns tracking on is ``EventTracking(app)``.

Run it under a real server (from this folder), with providers from the environment::

    gunicorn --workers 2 --preload --bind 127.0.0.1:8000 flask_app:app

or point it at the local sandbox first: ``evmiddleware sandbox`` prints the variables to export.
``/health`` is not tracked (``EVMIDDLEWARE_EXCLUDE_PATHS`` in ``app.config``); a signed-in user is kept
in Flask's session cookie.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Any

from flask import Flask, Response, jsonify, request, session

import evmiddleware
from evmiddleware_flask import EventTracking

app = Flask(__name__)
app.config["SECRET_KEY"] = os.environ.get("EXAMPLE_SECRET_KEY", "example-only-not-a-secret")
app.config["EVMIDDLEWARE_EXCLUDE_PATHS"] = os.environ.get("EVMIDDLEWARE_EXCLUDE_PATHS", "/health")
EventTracking(app, user_id_resolver=lambda request: session.get("user_id"))


@app.get("/")
def home() -> str:
    return "Welcome to the shop"


@app.get("/items/<int:item_id>")
def item(item_id: int) -> Response:
    return jsonify(item_id=item_id, name=f"Item {item_id}")


@app.post("/login")
def login() -> tuple[Response, int]:
    data: dict[str, Any] = request.get_json(silent=True) or request.form
    user_id = str(data.get("user_id") or "")
    if not user_id:
        return jsonify(error="user_id missing"), 400
    session["user_id"] = user_id  # later requests carry it through the resolver above
    evmiddleware.identify(user_id, plan="free")
    return jsonify(user_id=user_id), 200


@app.post("/checkout")
@evmiddleware.tracked("checkout_completed", source="flask")  # one event per call, with its duration
def checkout() -> Response:
    order = request.get_json(silent=True) or {}
    total = float(order.get("total", 19.9))
    evmiddleware.track("order_paid", {"revenue": total, "currency": "EUR", "items": order.get("items", [])})
    return jsonify(ok=True, total=total)


@app.get("/stream")
def stream() -> Response:
    def chunks() -> Iterator[str]:
        for i in range(3):
            yield f"chunk {i}\n"

    return Response(chunks(), mimetype="text/plain")


@app.get("/boom")
def boom() -> str:
    raise RuntimeError("boom")


@app.get("/health")
def health() -> str:
    return "ok"
