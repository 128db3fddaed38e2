"""docs/connect-redmine.md, followed command by command against a real Redmine and a real node (issue #18), so
the walkthrough cannot go stale.

The page's fenced ``sh`` blocks run in order, as one bash script in the repository's root with the node's
Python first on PATH. An HTML comment right before a block says how: ``<!-- test: provided -->`` (the
variables block: the test sets its own Redmine and node instead), ``<!-- test: background -->`` (the node,
started and left running, as a reader would in a second terminal). Then the test checks what the reader was
promised: the issue created in Redmine is in the built-in project, and the edit made there is in Redmine.
"""

from __future__ import annotations

import os
import re
import shlex
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

from exalate_node.supervisor import group_members
from tests.connectors.conftest import (
    RedmineServer,
    redmine,  # noqa: F401  (the session's real Redmine)
)
from tests.e2e.conftest import ROOT, Node

pytestmark = [pytest.mark.e2e, pytest.mark.services]

DOC = ROOT / "docs" / "connect-redmine.md"
BLOCK = re.compile(r"(?:<!-- test: (?P<how>\w+)[^>]*-->\n)?```sh\n(?P<code>.*?)```", re.S)


def blocks(text: str) -> list[tuple[str, str]]:
    """(how, code) of every ``sh`` block, in order; ``how`` is run, provided or background."""
    return [(m.group("how") or "run", m.group("code")) for m in BLOCK.finditer(text)]


def script(doc: str, variables: dict[str, str], background_log: Path) -> str:
    lines = ["set -euo pipefail"]
    lines += [f"{name}={shlex.quote(value)}" for name, value in variables.items()]
    for n, (how, code) in enumerate(blocks(doc), start=1):
        if how == "provided":
            provided = set(re.findall(r"^([A-Z_]+)=", code, re.M))
            assert provided == set(variables), (
                f"block {n} sets {provided}, the test provides {set(variables)}"
            )
            continue
        lines.append(f"echo '### block {n} ({how})' >&2")
        # Its output goes to a file: it outlives the script, and must not hold the script's output open.
        log = shlex.quote(str(background_log))
        lines.append(f"( {code} ) >{log} 2>&1 </dev/null &" if how == "background" else code)
    return "\n".join(lines) + "\n"


def test_the_page_has_the_blocks_the_test_knows_how_to_run() -> None:
    hows = [how for how, _ in blocks(DOC.read_text())]
    assert set(hows) <= {"run", "provided", "background"} and hows.count("background") == 1
    assert hows[0] == "provided" and len(hows) >= 8


def test_following_connect_redmine_syncs_a_redmine_issue_both_ways(
    redmine: RedmineServer,  # noqa: F811
    tmp_path: Path,
) -> None:
    project = f"w-{uuid.uuid4().hex[:10]}"
    redmine.call(
        "POST",
        "projects.json",
        json={"project": {"name": project, "identifier": project, "tracker_ids": [1, 2, 3]}},
    )
    # A person in Redmine (the issue of step 7 is theirs: the node's own changes are not news to it).
    login = f"walk{uuid.uuid4().hex[:6]}"
    person = redmine.call(
        "POST",
        "users.json",
        json={
            "user": {
                "login": login,
                "firstname": "Wal",
                "lastname": "Ker",
                "mail": f"{login}@example.com",
                "password": "a-long-password-1",
            }
        },
    ).json()["user"]
    redmine.call(
        "POST",
        f"projects/{project}/memberships.json",
        json={"membership": {"user_id": person["id"], "role_ids": [3]}},
    )
    person_key = redmine.call("GET", f"users/{person['id']}.json").json()["user"]["api_key"]
    node = Node("walk", tmp_path, index=3)
    node.create_database()
    env = {**node.env, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"}
    for name in ("NODE_URL", "NODE_ADDR", "DEBUG"):  # the page sets these itself
        env.pop(name, None)
    variables = {
        "NODE": node.url,
        "REDMINE": redmine.url,
        "REDMINE_KEY": redmine.api_key,
        "REDMINE_PROJECT": project,
        "MY_REDMINE_KEY": person_key,
    }
    run = subprocess.Popen(
        ["bash", "-c", script(DOC.read_text(), variables, tmp_path / "runnode.log")],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,  # the node it starts stays in this group: stopped below
    )
    try:
        output, _ = run.communicate(timeout=420)
        assert run.returncode == 0, output[-4000:] + (tmp_path / "runnode.log").read_text()[-2000:]
        # What the page promised, checked from outside: the Redmine issue is in the built-in project with the
        # edit made there, and Redmine has that edit too.
        found = re.search(r"Redmine #(\d+) is (SUP-\d+)", output)
        assert found, output[-2000:]
        issue, key = found.groups()
        assert (
            redmine.call("GET", f"issues/{issue}.json").json()["issue"]["subject"]
            == "Printer on fire, tray 2"
        )
        state = node.shell(
            "import json\n"
            "from instances.models import Issue\n"
            "from replicas.models import Twin\n"
            f"i = Issue.objects.get(key='{key}')\n"
            f"t = Twin.objects.get(local_key='{key}')\n"
            "print(json.dumps([i.summary, t.state, t.remote_id]))"
        )
        assert state == ["Printer on fire, tray 2", "synchronized", issue]
        assert "synchronized" in output
        assert not (ROOT / "var-8001").exists()  # the page's commands wrote only under the test's VAR_DIR
    finally:
        try:
            os.killpg(run.pid, signal.SIGTERM)  # runnode stops its web server, worker and sweeper
        except ProcessLookupError:
            pass
        run.wait(timeout=30)
        deadline = time.monotonic() + 30  # runnode (left in the group) stops its processes, then itself
        while group_members(run.pid) and time.monotonic() < deadline:
            time.sleep(0.2)
        for pid in group_members(run.pid):
            os.kill(pid, signal.SIGKILL)
        node.drop_database()
        redmine.call("DELETE", f"projects/{project}.json")
