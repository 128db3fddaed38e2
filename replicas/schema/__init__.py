"""The replica format: its JSON Schema per major version, and validation of every replica received."""

from __future__ import annotations

import json
from functools import cache
from pathlib import Path
from typing import Any

from jsonschema import Draft202012Validator

REPLICA_VERSION = {"major": 1, "minor": 1, "patch": 0}
_DIR = Path(__file__).resolve().parent


class ReplicaInvalid(ValueError):
    """A replica that does not match the schema; the message names the field and the problem."""


@cache
def _validator(major: int) -> Draft202012Validator:
    schema = json.loads((_DIR / f"replica-{major}.json").read_text())
    Draft202012Validator.check_schema(schema)
    return Draft202012Validator(schema)


def wrap(hub_issue: dict[str, Any]) -> dict[str, Any]:
    """The payload that travels: version + hubIssue."""
    return {"version": dict(REPLICA_VERSION), "hubIssue": hub_issue}


def validate_replica(payload: Any) -> dict[str, Any]:
    """Return the payload if it is a valid replica, else raise ReplicaInvalid saying what is wrong."""
    if not isinstance(payload, dict):
        raise ReplicaInvalid("The replica must be a JSON object with 'version' and 'hubIssue'.")
    version = payload.get("version")
    major = version.get("major") if isinstance(version, dict) else None
    if major != REPLICA_VERSION["major"]:
        raise ReplicaInvalid(
            f"Replica format version {major!r} is not supported by this node (it reads major version "
            f"{REPLICA_VERSION['major']}). Upgrade the older node."
        )
    errors = sorted(_validator(1).iter_errors(payload), key=lambda e: list(e.absolute_path))
    if errors:
        err = errors[0]
        where = "/".join(str(p) for p in err.absolute_path) or "(top level)"
        message = err.message[:300]
        if err.validator == "pattern" and isinstance(err.schema, dict) and err.schema.get("description"):
            message = f"{str(err.instance)[:100]!r} is not {err.schema['description']}"  # not the regex
        raise ReplicaInvalid(f"Invalid replica at {where}: {message}")
    return payload
