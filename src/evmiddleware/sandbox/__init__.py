"""A strict local emulator of the UserFlux, FloKit, Flameup, Flywheel and Klaviyo APIs.

Used by the tests, ``evmiddleware demo`` and ``evmiddleware sandbox``; standard library only.
"""

from __future__ import annotations

from .core import PROVIDERS
from .faults import FAULT_KINDS, Fault
from .keys import DEFAULT_KLAVIYO_REVISION, SandboxKeys
from .ratelimit import PUBLISHED_RATE_LIMITS, Decision, Rule, SlidingWindowLimiter
from .sandbox import Sandbox, serve
from .stats import RequestRecord

__all__ = [
    "DEFAULT_KLAVIYO_REVISION",
    "FAULT_KINDS",
    "PROVIDERS",
    "PUBLISHED_RATE_LIMITS",
    "Decision",
    "Fault",
    "RequestRecord",
    "Rule",
    "Sandbox",
    "SandboxKeys",
    "SlidingWindowLimiter",
    "serve",
]
