"""The official API descriptions the connector test doubles are checked against, loaded once per process.

The files in ``tests/contracts/specs/`` are verbatim copies of the shared API descriptions (checksums in
``SHA256SUMS``), so the project tests on a fresh clone. They are never edited; what a strict validator
rejects is patched in memory at load time, and every patch is listed in ``PATCHES``:

* Jira Cloud platform v3: four query parameters declare ``items: {enum: [...], default: ""}`` where the
  empty default is not one of the enum values, which ``openapi-spec-validator`` rejects
  (``GET /rest/api/3/classification-levels`` ``status``, ``GET /rest/api/3/field/search`` ``type``,
  ``GET /rest/api/3/screens`` ``scope``, ``GET /rest/api/3/workflow/rule/config`` ``types``). The
  offending ``default`` is removed; nothing else changes, and none of these endpoints is used by the node.

* Jira Cloud platform v3: every ``format: date-time`` string. Jira sends timestamps as
  ``2026-03-01T10:00:07.000+0100`` (Java's ``yyyy-MM-dd'T'HH:mm:ss.SSSZ``: the offset has no colon), which
  is not RFC 3339 and fails a strict ``date-time`` check although it is what every Jira Cloud site returns.
  The format is replaced by a pattern accepting RFC 3339 and that form (still a full timestamp with an
  offset). Values inside ``fields`` of an issue are untyped in the description and not affected.
* GitHub REST: schemas marked ``nullable: true`` with an ``enum`` that lacks ``null`` (e.g. the issue's
  ``state_reason``, ``active_lock_reason``). GitHub sends ``null`` there (``state_reason`` of every open
  issue), which OpenAPI 3.0.3 allows only when the enum lists it and openapi-schema-validator therefore
  rejects; ``null`` is added to those enums.

Loading the Jira description (2.4 MB) with validation takes a few seconds: ``openapi(name)`` caches the
loaded description for the whole test session.
"""

from __future__ import annotations

import functools
import hashlib
import json
import threading
from pathlib import Path
from typing import Any

from openapi_core import OpenAPI

SPECS = Path(__file__).resolve().parent / "specs"
GITHUB_REST = "github-api.github.com.issues-subset.json"
GITHUB_WEBHOOKS = "github-webhooks.issues-subset.json"
JIRA = "jira-cloud-platform-swagger-v3.v3.json"

# What was patched at load time, per file: (JSON pointer, what was done). Filled by the loader.
PATCHES: dict[str, list[tuple[str, str]]] = {}

_lock = threading.Lock()


def raw(name: str) -> dict[str, Any]:
    """The description as stored (parsed JSON, not patched)."""
    return json.loads((SPECS / name).read_text(encoding="utf-8"))


def checksums() -> dict[str, tuple[str, str]]:
    """name -> (expected SHA-256 from SHA256SUMS, actual SHA-256 of the copy)."""
    out = {}
    for line in (SPECS / "SHA256SUMS").read_text().splitlines():
        if line.strip():
            digest, name = line.split(maxsplit=1)
            name = name.strip().lstrip("*")
            out[name] = (digest, hashlib.sha256((SPECS / name).read_bytes()).hexdigest())
    return out


def _null_in_nullable_enums(node: Any, pointer: str, patches: list[tuple[str, str]]) -> None:
    if isinstance(node, dict):
        if node.get("nullable") is True and isinstance(node.get("enum"), list) and None not in node["enum"]:
            node["enum"] = [*node["enum"], None]
            patches.append((pointer, "added null to the enum of a nullable schema"))
        for key, value in node.items():
            _null_in_nullable_enums(value, f"{pointer}/{key.replace('~', '~0').replace('/', '~1')}", patches)
    elif isinstance(node, list):
        for index, value in enumerate(node):
            _null_in_nullable_enums(value, f"{pointer}/{index}", patches)


JIRA_TIME = r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?(Z|[+-]\d\d:?\d\d)$"


def _jira_timestamps(node: Any, pointer: str, patches: list[tuple[str, str]]) -> None:
    if isinstance(node, dict):
        if node.get("type") == "string" and node.get("format") == "date-time":
            del node["format"]
            node["pattern"] = JIRA_TIME
            patches.append(
                (pointer, "date-time format replaced by a pattern that allows Jira's +hhmm offsets")
            )
        for key, value in node.items():
            _jira_timestamps(value, f"{pointer}/{key.replace('~', '~0').replace('/', '~1')}", patches)
    elif isinstance(node, list):
        for index, value in enumerate(node):
            _jira_timestamps(value, f"{pointer}/{index}", patches)


def _drop_defaults_outside_enum(node: Any, pointer: str, patches: list[tuple[str, str]]) -> None:
    if isinstance(node, dict):
        if "enum" in node and "default" in node and node["default"] not in node["enum"]:
            patches.append((pointer, f"removed default {node['default']!r} (not in enum {node['enum']})"))
            del node["default"]
        for key, value in node.items():
            _drop_defaults_outside_enum(
                value, f"{pointer}/{key.replace('~', '~0').replace('/', '~1')}", patches
            )
    elif isinstance(node, list):
        for index, value in enumerate(node):
            _drop_defaults_outside_enum(value, f"{pointer}/{index}", patches)


@functools.cache
def _load(name: str) -> OpenAPI:
    spec = raw(name)
    patches: list[tuple[str, str]] = []
    if name == JIRA:
        _drop_defaults_outside_enum(spec, "", patches)
        _jira_timestamps(spec, "", patches)
    if name == GITHUB_REST:
        _null_in_nullable_enums(spec, "", patches)
    PATCHES[name] = patches
    return OpenAPI.from_dict(spec)  # validates the (patched) description itself


def openapi(name: str) -> OpenAPI:
    """The loaded, validated description ``name`` (cached for the process)."""
    with _lock:
        return _load(name)
