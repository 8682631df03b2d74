"""Starlette and FastAPI users adding the ASGI middleware their way: must pass mypy --strict.

Checked by ``test_typing.py`` (never imported by pytest).
"""

from __future__ import annotations

from fastapi import FastAPI
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import PlainTextResponse
from starlette.routing import Route
from starlette.types import ASGIApp

from evmiddleware.asgi import EventMiddleware
from evmiddleware.capture import CaptureOptions


async def home(request: Request) -> PlainTextResponse:
    return PlainTextResponse("hi")


star = Starlette(
    routes=[Route("/", home)],
    middleware=[
        Middleware(EventMiddleware, exclude_paths=["/health"]),
        Middleware(EventMiddleware, CaptureOptions(sample_rate=0.5)),
    ],
)
star.add_middleware(EventMiddleware, exclude_paths=["/health"], sample_rate=0.5)
star.add_middleware(EventMiddleware, CaptureOptions(exclude_paths=("/health",)))

api = FastAPI()
api.add_middleware(EventMiddleware, exclude_paths=["/health"])

# The middleware is itself a Starlette ASGIApp (uvicorn, other middleware, Mount).
wrapped: ASGIApp = EventMiddleware(star)
wrapped_api: ASGIApp = EventMiddleware(api)
