"""The credentials the sandbox accepts; defaults are fixed so tests and the demo need no set-up."""

from __future__ import annotations

from dataclasses import dataclass, field

__all__ = ["DEFAULT_KLAVIYO_REVISION", "SandboxKeys"]

# Any YYYY-MM-DD[.suffix] value passes the sandbox; this one is what `Sandbox.env()` hands out.
DEFAULT_KLAVIYO_REVISION = "2025-01-15"


@dataclass(frozen=True)
class SandboxKeys:
    """Accepted credentials per provider.

    Secrets are kept out of the repr so a logged ``SandboxKeys`` never shows a key, even a fake one;
    the Flameup workspace id and the Klaviyo company id are public identifiers and stay visible.
    """

    userflux_api_key: str = field(default="uf_sandbox_write_key", repr=False)
    flokit_api_key: str = field(default="fk_sandbox_key", repr=False)
    flokit_read_only_key: str = field(default="fk_sandbox_read_only_key", repr=False)
    flameup_api_key: str = field(default="fu_sandbox_key", repr=False)
    flameup_workspace_id: str = "ws_sandbox"
    flywheel_api_key: str = field(default="fw_sandbox_key", repr=False)
    klaviyo_company_id: str = "AbC123"

    def __post_init__(self) -> None:
        if self.klaviyo_company_id.startswith("pk_"):
            raise ValueError("klaviyo_company_id must be a public key (site id), not a pk_ key")
        if self.flokit_api_key == self.flokit_read_only_key:
            raise ValueError("the FloKit read-only key must differ from the write key")
