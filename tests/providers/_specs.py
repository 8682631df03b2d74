"""The published API pages in shared/providers, parsed for the contract tests.

The shared folder is found beside the repository (``../shared``) or through
``EVMIDDLEWARE_SHARED_DIR``; a test that needs it is skipped with a clear message when it is absent.
"""

from __future__ import annotations

import copy
import json
import os
import re
from pathlib import Path
from typing import Any

import pytest
import yaml

# Read at import: the suite's autouse fixture clears EVMIDDLEWARE_* variables before each test.
SHARED_DIR = Path(
    os.environ.get("EVMIDDLEWARE_SHARED_DIR") or Path(__file__).resolve().parents[2] / ".." / "shared"
)


def spec_text(prefix: str) -> str:
    """The text of ``shared/providers/{prefix}_*.txt`` (000 UserFlux … 004 Klaviyo)."""
    folder = SHARED_DIR / "providers"
    files = sorted(folder.glob(f"{prefix}_*.txt"))
    if not files:
        pytest.skip(
            f"provider spec {prefix}_*.txt not found in {folder}: "
            "check out shared/ beside the repository or set EVMIDDLEWARE_SHARED_DIR"
        )
    return files[0].read_text(encoding="utf-8")


def json_blocks(text: str) -> list[Any]:
    """Every fenced ```json block."""
    return [json.loads(block) for block in re.findall(r"```json\n(.*?)\n```", text, re.S)]


def yaml_block(text: str) -> Any:
    """The (four-backtick) fenced ````yaml block."""
    match = re.search(r"````yaml[^\n]*\n(.*?)\n````", text, re.S)
    assert match, "no yaml block in the spec"
    return yaml.safe_load(match.group(1))


def curl_bodies(text: str) -> list[tuple[str, Any]]:
    """(url, decoded body) of each ``curl -X POST URL ... -d '{...}'`` example, in order."""
    pattern = r"curl -X POST \"?(\S+?)\"? \\\n.*?-d '(\{.*?\})'"
    return [(url, json.loads(data)) for url, data in re.findall(pattern, text, re.S)]


def resolve_refs(node: Any, root: Any) -> Any:
    """``node`` with every local ``{"$ref": "#/a/b"}`` replaced by what it points at (no cycles here)."""
    if isinstance(node, dict):
        ref = node.get("$ref")
        if isinstance(ref, str) and ref.startswith("#/"):
            target = root
            for part in ref[2:].split("/"):
                target = target[part]
            return resolve_refs(target, root)
        return {key: resolve_refs(value, root) for key, value in node.items()}
    if isinstance(node, list):
        return [resolve_refs(value, root) for value in node]
    return node


def closed(schema: Any) -> Any:
    """A copy where every object schema that names its properties allows no others.

    The published schemas leave ``additionalProperties`` open; closing them makes the contract test
    also catch a field the provider does not document (a misspelt ``user_id``, say).
    """
    schema = copy.deepcopy(schema)

    def walk(node: Any) -> None:
        if isinstance(node, dict):
            if "properties" in node and isinstance(node["properties"], dict):
                node.setdefault("additionalProperties", False)
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    walk(schema)
    return schema


def request_schema(openapi: dict[str, Any], path: str) -> Any:
    """The JSON request-body schema of ``POST path``, with its references resolved."""
    content = openapi["paths"][path]["post"]["requestBody"]["content"]["application/json"]
    return resolve_refs(content["schema"], openapi)
