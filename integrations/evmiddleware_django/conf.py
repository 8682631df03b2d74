"""``settings.EVMIDDLEWARE``: read once (at app ready, again only when the setting changes) into a
frozen :class:`DjangoConfig`, over the environment. Its pipeline settings are applied with
``evmiddleware.configure()`` at app ready too (:func:`apply_pipeline`), so that management commands,
workers and scripts that never serve a request deliver where the settings say.

Keys are the upper-case names of :func:`evmiddleware.configure`'s settings (``FLOKIT_API_KEY``,
``FLUSH_INTERVAL``, …), of :class:`~evmiddleware.capture.CaptureOptions` (``EXCLUDE_PATHS``,
``COOKIE_NAME``, …; hooks may be dotted paths) and this integration's own ``TRACK_USER`` (default
true: the user id is ``request.user``'s primary key) and ``IDENTIFY_ON_LOGIN`` (default false).
"""

from __future__ import annotations

import dataclasses
import threading
from collections.abc import Callable, Mapping
from typing import Any

from django.conf import settings  # type: ignore[import-untyped]
from django.utils.module_loading import import_string  # type: ignore[import-untyped]

import evmiddleware
from evmiddleware.capture import Capture, CaptureOptions
from evmiddleware.config import CORE_PARSERS, Settings, parse_bool
from evmiddleware.errors import ConfigurationError
from evmiddleware.providers import REGISTRY

__all__ = [
    "SETTING",
    "DjangoConfig",
    "apply_pipeline",
    "capture",
    "config",
    "known_keys",
    "pipeline_of",
    "read",
    "reset",
]

SETTING = "EVMIDDLEWARE"

_CAPTURE = frozenset(field.name for field in dataclasses.fields(CaptureOptions))
_HOOKS = ("consent", "user_id_resolver", "route_resolver")
# A capture option is never a pipeline key, though ``exclude_paths`` is also a ``configure()`` setting:
# read() takes it as the middleware's option, and it must not make ready() call configure(), which
# replaces whatever pipeline the process configured.
_PIPELINE = (
    frozenset(
        [field.name for field in dataclasses.fields(Settings)]
        + [f"{name}_{option}" for name, provider in REGISTRY.items() for option in provider.options]
    )
    - _CAPTURE
)
_OWN: dict[str, Callable[[Any], Any]] = {"track_user": parse_bool, "identify_on_login": parse_bool}


def known_keys() -> list[str]:
    """Every key ``EVMIDDLEWARE`` may hold."""
    return sorted(name.upper() for name in (*_PIPELINE, *_CAPTURE, *_OWN))


@dataclasses.dataclass(frozen=True)
class DjangoConfig:
    """The parsed setting: capture options, pipeline settings (applied with ``configure()`` when any)
    and the integration's own switches."""

    options: CaptureOptions
    pipeline: Mapping[str, Any]
    track_user: bool = True
    identify_on_login: bool = False


def read(raw: object) -> DjangoConfig:
    """Parse a value of ``settings.EVMIDDLEWARE``; raises :class:`ConfigurationError` naming the key.

    Of the pipeline settings, the core ones' values are checked here (:func:`_pipeline_value`); the
    providers' when they are applied.
    """
    if raw is None:
        raw = {}
    if not isinstance(raw, Mapping):
        raise ConfigurationError(f"{SETTING} must be a dict, not {type(raw).__name__}")
    capture: dict[str, Any] = {}
    pipeline: dict[str, Any] = {}
    own: dict[str, Any] = {}
    unknown: list[str] = []
    for key, value in raw.items():
        name = key.lower() if isinstance(key, str) else ""
        if name in _OWN:
            try:
                own[name] = _OWN[name](value)
            except ValueError as exc:
                raise ConfigurationError(f"{SETTING}[{key!r}]: {exc}") from None
        elif name in _CAPTURE:
            capture[name] = _imported(key, value) if name in _HOOKS and isinstance(value, str) else value
        elif name in _PIPELINE:
            pipeline[name] = _pipeline_value(key, name, value)
        else:
            unknown.append(repr(key))
    if unknown:
        raise ConfigurationError(f"{SETTING}: unknown key(s) {', '.join(unknown)}")
    try:
        options = CaptureOptions(**capture)
    except TypeError as exc:
        raise ConfigurationError(f"{SETTING}: {exc}") from None
    return DjangoConfig(options, pipeline, **own)


def _pipeline_value(key: str, name: str, value: Any) -> Any:
    """``value`` of the pipeline setting ``name``, checked with the parser ``configure()`` uses, so that
    an error names the key in ``EVMIDDLEWARE`` (``configure()`` names the environment variable)."""
    parse = CORE_PARSERS.get(name)
    if parse is not None and value is not None:  # None: not set, as configure() takes it
        try:
            parse(value)
        except (TypeError, ValueError, OverflowError) as exc:  # OverflowError: int(float("inf"))
            raise ConfigurationError(f"{name} ({SETTING}[{key!r}]): {exc}") from None
    return value


def _imported(key: str, path: str) -> Any:
    try:
        return import_string(path)
    except ImportError as exc:
        raise ConfigurationError(f"{SETTING}[{key!r}]: {exc}") from None


_lock = threading.Lock()
_config: DjangoConfig | None = None
_capture: Capture | None = None
#: Whether the pipeline settings of ``_config``'s reading went to ``configure()`` (or it has none).
_applied = False


def config() -> DjangoConfig:
    """The configuration from the current settings, parsed once."""
    with _lock:
        return _read_once()


def _read_once() -> DjangoConfig:
    """``config()``, the lock held."""
    global _config
    if _config is None:
        _config = read(getattr(settings, SETTING, None))
    return _config


def apply_pipeline() -> None:
    """Apply the setting's pipeline settings with ``evmiddleware.configure()``, once per reading of the
    setting: at app ready (``EvMiddlewareConfig.ready``), else at the first middleware's creation;
    again only after the setting changed (``override_settings``). Never twice for one reading: a second
    ``configure()`` would replace the pipeline (the runtime, its queues), and with it whatever the
    process configured since. Only the pipeline keys are read here: the middleware's own options and
    unknown keys are the system checks' to report (and raised when the middleware is created).
    Raises :class:`ConfigurationError` for a pipeline value ``configure()`` refuses."""
    with _lock:
        _apply(pipeline_of(getattr(settings, SETTING, None)))


def pipeline_of(raw: object) -> dict[str, Any]:
    """The pipeline settings (``configure()``'s) in a value of ``settings.EVMIDDLEWARE``, by their
    lower-case names, as :func:`read` takes them; nothing else of it is read or checked."""
    if not isinstance(raw, Mapping):
        return {}
    names = {key: key.lower() for key in raw if isinstance(key, str)}
    return {name: _pipeline_value(key, name, raw[key]) for key, name in names.items() if name in _PIPELINE}


def _apply(pipeline: Mapping[str, Any]) -> None:
    """``configure(**pipeline)`` unless done for this reading of the setting; the lock held."""
    global _applied
    if not _applied:
        if pipeline:
            evmiddleware.configure(**pipeline)
        _applied = True


def capture() -> Capture:
    """The process's one :class:`Capture` for Django, built at the first middleware's creation, after
    the pipeline settings from ``EVMIDDLEWARE`` were applied (:func:`apply_pipeline`)."""
    global _capture
    with _lock:
        current = _read_once()
        _apply(current.pipeline)
        if _capture is None:
            # The middleware runs the user id resolver itself (once, and off the event loop on the
            # async path), so the Capture never calls it.
            _capture = Capture(dataclasses.replace(current.options, user_id_resolver=None))
        return _capture


def reset(**kwargs: Any) -> None:
    """Forget the parsed setting (connected to ``setting_changed``: ``override_settings`` in tests);
    its pipeline settings are applied again at the next middleware's creation."""
    global _config, _capture, _applied
    if kwargs.get("setting", SETTING) == SETTING:
        with _lock:
            _config = _capture = None
            _applied = False
