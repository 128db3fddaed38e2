"""Issue #7's acceptance: a script that uses only `requests` and the documented API connects two real nodes
and syncs an item (scripts/api_walkthrough.py, run as a user would run it)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.e2e

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "api_walkthrough.py"


def test_a_requests_only_script_connects_two_nodes_and_syncs_an_item(node_factory) -> None:  # type: ignore[no-untyped-def]
    a = node_factory("wa", instance="Unused A", key="UA")
    b = node_factory("wb", instance="Unused B", key="UB")
    run = subprocess.run(
        [sys.executable, str(SCRIPT), "--a", a.url, "--a-token", a.token, "--b", b.url, "--b-token", b.token],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert run.returncode == 0, run.stdout + run.stderr
    assert "POST /api/v1/connections/accept/ -> 201" in run.stdout
    arrived = [i for i in b.issues() if i["summary"].startswith("Synced through the API")]
    assert len(arrived) == 1 and arrived[0]["key"].startswith("WB-")
    connections = b.api("GET", "/connections/").json()["results"]
    assert [c["status"] for c in connections] == ["active"]

    # Hostile: a wrong token is refused with the API's message, and the script says so.
    bad = subprocess.run(
        [sys.executable, str(SCRIPT), "--a", a.url, "--a-token", "nope", "--b", b.url, "--b-token", b.token],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert bad.returncode == 1 and "401" in bad.stderr and "Invalid token" in bad.stderr
