"""Backup and restore: a node of a two-node connection is backed up while it runs, lost, and restored on a
clean host (new database, new folder) from the archive. Sync carries on: the changes its peer queued while
it was gone arrive, nothing is applied twice, and its own changes go out again. Runs on SQLite and on
PostgreSQL (the CI's second suite), whichever DATABASE_URL says."""

from __future__ import annotations

import hashlib
import shutil
import subprocess
from typing import Any

import pytest

from tests.e2e.conftest import MANAGE, ROOT, wait_for

pytestmark = pytest.mark.e2e

EXALATE = (
    "import json\nfrom connections.models import Connection\nfrom replicas.pipeline import exalate\n"
    "exalate(connection=Connection.objects.get(), key=KEY)\nprint(json.dumps(True))"
)
DONE = (
    "import json\nfrom replicas.models import SyncEvent\n"
    "left = SyncEvent.objects.exclude(status__in=['done', 'skipped'])\n"
    "print(json.dumps(list(left.values_list('status', flat=True))))"
)


def manage_result(node: Any, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*MANAGE, *args], env=node.env, cwd=ROOT, capture_output=True, text=True, timeout=120
    )


def test_a_node_restored_from_its_backup_carries_on_syncing(node_factory, tmp_path) -> None:  # type: ignore[no-untyped-def]
    a = node_factory("bka", instance="Support desk", key="SUP")
    b = node_factory("bkb", instance="Engineering", key="ENG")
    code = a.manage("initiate_connection", "--instance", "Support desk", "--name", "Backed up", "--code-only")
    assert '"status": "active"' in b.manage(
        "accept_invitation", "--instance", "Engineering", "--code", code.strip(), "--json"
    )

    keys = []
    for n in range(3):
        created = a.api("POST", "/tracker/issues/", json={"project": "SUP", "summary": f"item {n}"})
        keys.append(created.json()["key"])
        a.shell(EXALATE.replace("KEY", repr(keys[-1])))
    content = b"core dump\n" * 3000
    assert a.api("POST", f"/tracker/issues/{keys[0]}/attachments/", files={"file": ("dump.txt", content)}).ok

    def b_items() -> dict[str, dict[str, Any]]:
        return {i["summary"]: i for i in b.issues()}

    wait_for(
        "the items and the file on B",
        lambda: (
            len(b_items()) == 3
            and [
                x["sha256"]
                for x in b.api("GET", f"/tracker/issues/{b_items()['item 0']['key']}/").json()["attachments"]
            ]
            == [hashlib.sha256(content).hexdigest()]
        ),
        timeout=60,
    )
    wait_for("B to be done", lambda: b.shell(DONE) == [], timeout=30)

    # The backup, taken while B runs (with its keys: B's are generated, a development node's way).
    archive = tmp_path / "b.tar.gz"
    out = b.manage("backup", "--output", str(archive), "--include-keys")
    assert "Backed up the" in out and archive.stat().st_size > 0
    refused = manage_result(b, "backup", "--output", str(archive))
    assert refused.returncode != 0 and "exists already" in refused.stderr

    # B's host is lost: processes, database and folder. A's users go on working meanwhile.
    b.stop()
    b.drop_database()
    shutil.rmtree(b.var_dir)
    b.var_dir.mkdir()
    assert a.api(
        "PATCH", f"/tracker/issues/{keys[1]}/", json={"summary": "item 1, renamed while B was gone"}
    ).ok
    assert a.api("POST", f"/tracker/issues/{keys[2]}/comments/", json={"body": "Said while B was gone"}).ok

    # A clean host with B's settings: an empty database, the archive, migrate, start.
    b.create_database()
    restored = b.manage("restore", str(archive))
    assert "Restored the backup" in restored
    again = manage_result(b, "restore", str(archive))
    assert again.returncode != 0 and "database is not empty" in again.stderr  # never over a live node
    b.manage("migrate", "--noinput", timeout=120)
    b.start()

    def caught_up() -> bool:
        items = b_items()
        if set(items) != {"item 0", "item 1, renamed while B was gone", "item 2"}:
            return False
        issue = b.api("GET", f"/tracker/issues/{items['item 2']['key']}/").json()
        return [c["body"] for c in issue["comments"]] == ["Said while B was gone"]

    wait_for("A's queued changes on the restored B", caught_up, timeout=90)
    # The file restored with it, read through B's API; B's credentials (encrypted at rest) still decrypt.
    first = b.api("GET", f"/tracker/issues/{b_items()['item 0']['key']}/").json()
    download = b.api(
        "GET", f"/tracker/issues/{first['key']}/attachments/{first['attachments'][0]['id']}/content/"
    )
    assert (
        download.status_code == 200
        and hashlib.sha256(download.content).hexdigest() == hashlib.sha256(content).hexdigest()
    )
    # And B's own changes go out again.
    eng = b_items()["item 2"]["key"]
    assert b.api("PATCH", f"/tracker/issues/{eng}/", json={"priority": "High"}).ok
    wait_for(
        "B's edit on A",
        lambda: a.api("GET", f"/tracker/issues/{keys[2]}/").json()["priority"] == "High",
        timeout=60,
    )
    wait_for("nothing left pending", lambda: a.shell(DONE) == [] and b.shell(DONE) == [], timeout=30)
    assert len(b.issues()) == 3 and len(a.issues()) == 3  # nothing applied twice
