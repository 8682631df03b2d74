"""Graceful stop: deliver what is queued before the process goes, however the server stops it.

Three paths, because servers differ (each is proved with a real server in ``tests/capture``):

- ASGI lifespan: :func:`run_lifespan` flushes on ``lifespan.shutdown`` before the app's shutdown
  completes, and speaks lifespan itself for apps that do not (Django's ASGI handler, bare apps), so
  the flush also happens there.
- SIGTERM: :func:`install_signal_handler` installs a handler only where none is set (``SIG_DFL``).
  It delivers, then restores the default and re-raises, so the process still dies of SIGTERM.
  uvicorn re-raises SIGTERM after its own shutdown through the handler that was set before it
  started, so an app built before ``uvicorn.run(app)`` is covered even without lifespan.
- ``atexit``: registered by the runtime; gunicorn workers leave through ``sys.exit``.
"""

from __future__ import annotations

import asyncio
import os
import signal
import sys
import threading
from collections.abc import Awaitable, Callable, MutableMapping
from types import FrameType
from typing import Any, TypeVar

from . import api
from ._fork import new_lock_in_child
from ._log import logger

__all__ = ["flush_off_loop", "install_signal_handler", "run_lifespan", "uninstall_signal_handler"]

#: The middlewares' own side of ASGI, as Starlette types it (``starlette.types``): what they accept as
#: ``scope``, ``receive`` and ``send``, so that they are themselves a Starlette ``ASGIApp``.
Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
#: What the middlewares wrap: any ASGI app, typed as loosely as Starlette types the app its middleware
#: get. Apps type their side of ASGI in many ways (a ``dict`` scope, ``asgiref.typing``'s TypedDicts,
#: ``Mapping`` messages, Django's handler), and no one precise type accepts them all.
ASGIApp = Callable[[Any, Any, Any], Awaitable[None]]

_SHUTDOWN_DONE = ("lifespan.shutdown.complete", "lifespan.shutdown.failed")
_install_lock = threading.Lock()


new_lock_in_child(sys.modules[__name__], "_install_lock")


def _on_sigterm(signum: int, frame: FrameType | None) -> None:
    try:
        _deliver_bounded()
    finally:
        # Let the signal take its course: the default action, as if we had never been here.
        signal.signal(signum, signal.SIG_DFL)
        os.kill(os.getpid(), signum)


def _deliver_bounded() -> None:
    """What the exit does (``runtime._at_exit``): shut the runtime down, then wait for those
    ``configure()`` is still retiring, whose events the default action would end with the process too.
    On a helper thread: the signal may have interrupted the main thread inside the pipeline (holding
    one of its locks), and waiting there could deadlock. Bounded by the latest of their deadlines."""
    from . import runtime as _rt

    runtimes = _rt._shutting_down()
    if not runtimes:
        return
    # Not skipped when a shutdown is under way on another thread: _at_exit waits for that one, and
    # the default action that follows ends the process, and that shutdown with it. The retiring ones
    # shut down meanwhile on their own threads, so the longest wait bounds the whole.
    worker = threading.Thread(target=_rt._at_exit, name="evmiddleware-sigterm", daemon=True)
    worker.start()
    worker.join(max(_rt._exit_wait(each) for each in runtimes))


def install_signal_handler() -> bool:
    """Deliver queued events on SIGTERM, where nothing else handles the signal.

    Installs only from the main thread (``signal.signal`` fails elsewhere) and only over ``SIG_DFL``:
    a server's or the application's own handler is never replaced. Returns whether the handler is in
    place. The middlewares call it when they are created; never at import time::

        from evmiddleware.lifecycle import install_signal_handler
        install_signal_handler()
    """
    if threading.current_thread() is not threading.main_thread():
        return False
    with _install_lock:
        try:
            current = signal.getsignal(signal.SIGTERM)
            if current is _on_sigterm:
                return True
            if current is not signal.SIG_DFL:
                return False
            signal.signal(signal.SIGTERM, _on_sigterm)
        except (ValueError, OSError):  # an embedded interpreter without signals
            return False
    return True


def uninstall_signal_handler() -> None:
    """Put ``SIG_DFL`` back if our handler is the current one (tests, embedding)."""
    if threading.current_thread() is threading.main_thread():
        with _install_lock:
            if signal.getsignal(signal.SIGTERM) is _on_sigterm:
                signal.signal(signal.SIGTERM, signal.SIG_DFL)


async def flush_off_loop(timeout: float) -> None:
    """``evmiddleware.flush(timeout)`` without blocking the event loop; never raises."""
    try:
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:  # not asyncio (trio): block; this runs once, at shutdown
            api.flush(timeout)
            return
        await loop.run_in_executor(None, api.flush, timeout)
    except Exception:
        logger.exception("evmiddleware: flush at shutdown failed")


async def run_lifespan(app: ASGIApp, scope: Scope, receive: Receive, send: Send, timeout: float) -> None:
    """Run ``app``'s lifespan, flushing before its shutdown completes.

    An app that does not speak lifespan (it returns or raises before reading the first message) gets
    it spoken for it, so that a graceful stop still flushes.
    """
    received = False

    async def receive_first() -> Message:
        nonlocal received
        received = True
        return await receive()

    async def send_flushing(message: Message) -> None:
        if message["type"] in _SHUTDOWN_DONE:
            await flush_off_loop(timeout)
        await send(message)

    try:
        await app(scope, receive_first, send_flushing)
    except Exception:
        if received:
            raise
        logger.debug("evmiddleware: the app does not speak lifespan; the middleware does", exc_info=True)
    if received:
        return
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            await flush_off_loop(timeout)
            await send({"type": "lifespan.shutdown.complete"})
            return


_App = TypeVar("_App")


def wrapped_app(app: _App | None, overrides: dict[str, Any]) -> _App:
    """The app a middleware wraps: given first, or as ``app=``, which Starlette before 0.35 (FastAPI's
    oldest supported release) passes, building middleware as ``cls(app=app, **options)``. The signature
    makes it positional-only, with a default, so that type checkers match the middleware against
    Starlette's current protocol (``app, /, ...``) while that keyword still lands in ``overrides``."""
    if app is None:
        app = overrides.pop("app", None)
    if app is None:
        raise TypeError("the middleware needs the app it wraps, as its first argument")
    return app
