"""The public face of the sandbox: start it, point clients at it, inject faults, read what it saw."""

from __future__ import annotations

import shlex
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from types import TracebackType
from typing import Any

from .core import PROVIDERS, SandboxCore
from .faults import Fault
from .keys import DEFAULT_KLAVIYO_REVISION, SandboxKeys
from .ratelimit import Rule
from .server import SandboxHTTPServer
from .stats import RequestRecord

__all__ = ["Sandbox", "serve"]

# Flameup's published base URL already ends in /api/v1, so clients append only the endpoint.
_BASE_SUFFIX = {"flameup": "/api/v1"}


class Sandbox:
    """A strict local emulator of the five provider APIs on one ephemeral port.

    ``rate_limits`` replaces a provider's published limits, e.g. ``{"flameup": [(2000, 1.0)]}``
    (an empty list turns limiting off); ``None`` keeps them all. ``clock`` feeds the limiters.
    """

    def __init__(
        self,
        port: int = 0,
        keys: SandboxKeys | None = None,
        rate_limits: Mapping[str, Sequence[Rule]] | None = None,
        *,
        host: str = "127.0.0.1",
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.keys = keys if keys is not None else SandboxKeys()
        self._host = host
        self._port = port
        self._core = SandboxCore(self.keys, rate_limits, clock)
        self._httpd: SandboxHTTPServer | None = None
        self._thread: threading.Thread | None = None
        self._stopping = threading.Event()

    def start(self) -> Sandbox:
        if self._httpd is not None:
            return self
        self._stopping.clear()
        httpd = SandboxHTTPServer((self._host, self._port), self._core, self._stopping)
        self._httpd = httpd
        self._thread = threading.Thread(
            target=httpd.serve_forever,
            kwargs={"poll_interval": 0.05},
            name=f"evmiddleware-sandbox:{httpd.server_address[1]}",
            daemon=True,
        )
        self._thread.start()
        return self

    def stop(self, timeout: float = 5.0) -> None:
        """Stop serving, drop open connections and abort slow answers; bounded by ``timeout``."""
        httpd, thread = self._httpd, self._thread
        if httpd is None or thread is None:
            return
        self._stopping.set()
        if thread.is_alive():  # shutdown() would wait forever for a loop that is not running
            httpd.shutdown()
        httpd.close_connections()
        httpd.server_close()
        thread.join(timeout)
        self._httpd = self._thread = None

    def __enter__(self) -> Sandbox:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    @property
    def port(self) -> int:
        if self._httpd is None:
            raise RuntimeError("the sandbox is not running")
        return int(self._httpd.server_address[1])

    @property
    def url(self) -> str:
        """The server root, where the control endpoints (/_stats, /_faults, /_reset) live."""
        return f"http://{self._host}:{self.port}"

    def base_url(self, provider: str) -> str:
        """What a client uses in place of the provider's published base URL."""
        if provider not in PROVIDERS:
            raise ValueError(f"unknown provider {provider!r}")
        return f"{self.url}/{provider}{_BASE_SUFFIX.get(provider, '')}"

    def env(self) -> dict[str, str]:
        """``EVMIDDLEWARE_*`` variables pointing every provider at this sandbox with its keys."""
        k = self.keys
        return {
            "EVMIDDLEWARE_USERFLUX_API_KEY": k.userflux_api_key,
            "EVMIDDLEWARE_USERFLUX_URL": self.base_url("userflux"),
            "EVMIDDLEWARE_FLOKIT_API_KEY": k.flokit_api_key,
            "EVMIDDLEWARE_FLOKIT_URL": self.base_url("flokit"),
            "EVMIDDLEWARE_FLAMEUP_API_KEY": k.flameup_api_key,
            "EVMIDDLEWARE_FLAMEUP_WORKSPACE_ID": k.flameup_workspace_id,
            "EVMIDDLEWARE_FLAMEUP_URL": self.base_url("flameup"),
            "EVMIDDLEWARE_FLYWHEEL_API_KEY": k.flywheel_api_key,
            "EVMIDDLEWARE_FLYWHEEL_URL": self.base_url("flywheel"),
            "EVMIDDLEWARE_KLAVIYO_PUBLIC_KEY": k.klaviyo_company_id,
            "EVMIDDLEWARE_KLAVIYO_REVISION": DEFAULT_KLAVIYO_REVISION,
            "EVMIDDLEWARE_KLAVIYO_URL": self.base_url("klaviyo"),
        }

    def inject(self, provider: str, fault: Fault) -> None:
        self._core.inject(provider, fault)

    def clear_faults(self, provider: str | None = None) -> None:
        self._core.clear_faults(provider)

    def accepted(self, provider: str) -> list[dict[str, Any]]:
        """Accepted events in arrival order, as decoded from the wire (see the report for shapes)."""
        return self._core.accepted(provider)

    def requests(self, provider: str) -> list[RequestRecord]:
        return self._core.requests(provider)

    def stats(self) -> dict[str, Any]:
        return self._core.stats()

    def wait_for(self, predicate: Callable[[dict[str, Any]], bool], timeout: float = 5.0) -> bool:
        """Block until ``predicate(stats)`` is true (True) or ``timeout`` seconds pass (False)."""
        return self._core.wait_for(predicate, timeout)

    def reset(self) -> None:
        self._core.reset()


def serve(port: int, host: str = "127.0.0.1") -> None:
    """Run a sandbox in the foreground until Ctrl-C, printing its URLs and environment."""
    with Sandbox(port=port, host=host) as sandbox:
        # Ctrl-C may come as soon as the last line is out: everything after start is inside the try.
        try:
            print(f"evmiddleware sandbox listening on {sandbox.url}")
            for name in PROVIDERS:
                print(f"  {name:<9} {sandbox.base_url(name)}")
            print(f"  control   {sandbox.url}/_stats  /_faults  /_reset")
            print("\nPoint evmiddleware at it with:\n")
            for key, value in sandbox.env().items():
                print(f"export {key}={shlex.quote(value)}")
            print("\nCtrl-C to stop.", flush=True)
            while True:
                time.sleep(3600)
        except KeyboardInterrupt:
            print("\nstopping")
