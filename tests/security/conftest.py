"""A small world for the security tests: two built-in instances with credentials, a local connection with
SUP-1 under sync, a pending node-to-node connection with an invitation, and a trigger. Every secret the
node holds is a distinctive string, so a test can look for it in anything the node emits."""

from __future__ import annotations

import json
from dataclasses import dataclass

import pytest

from connections.models import Connection, Invitation
from instances.models import Instance, Issue, Project

TOKEN = "tok-SECRET-3f9a1c7e5b"
WEBHOOK_SECRET = "whs-SECRET-8d2e6b4a0c"
PASSWORD = "pw-SECRET-1b7d9e3f"


@dataclass
class World:
    sup: Project
    eng: Project
    issue: Issue
    a: Connection
    b: Connection
    pending: Connection
    invitation_code: str
    trigger_id: int

    def secrets(self) -> list[str]:
        """Every secret value the node holds (plain text), each long enough to be unmistakable."""
        found = [TOKEN, WEBHOOK_SECRET, PASSWORD, self.invitation_code]
        for conn in Connection.objects.all():
            if conn.key:
                found.append(conn.key)
        for inv in Invitation.objects.all():
            found.append(inv.secret if isinstance(inv.secret, str) else inv.secret.hex())
        return [s for s in found if s and len(s) >= 8]


def credentials() -> str:
    return json.dumps({"token": TOKEN, "webhook_secret": WEBHOOK_SECRET, "password": PASSWORD})


@pytest.fixture
def world(db, settings):  # type: ignore[no-untyped-def]
    from connections.handshake import connection_initiate
    from connections.services import connection_create_local
    from instances.tracker import services
    from replicas import pipeline
    from replicas.models import Trigger

    settings.TASKS_INLINE = True
    support = Instance.objects.create(name="Support desk", tracker_type="builtin", credentials=credentials())
    engineering = Instance.objects.create(
        name="Engineering", tracker_type="builtin", credentials=credentials()
    )
    sup = services.project_create(instance=support, key="SUP", name="Support")
    eng = services.project_create(instance=engineering, key="ENG", name="Engineering")
    a, b = connection_create_local(name="Support ⇄ Engineering", instance_a=support, instance_b=engineering)
    pipeline.META_CACHE.clear()
    issue = services.issue_create(project=sup, actor="anna@example.com", summary="Printer on fire")
    pipeline.exalate(connection=a, key=issue.key)
    pending, code = connection_initiate(name="To the far node", local_instance=support, user="alice")
    trigger = Trigger.objects.create(connection=a, entity_type="issue", query="status = Open")
    return World(sup, eng, issue, a, b, pending, code, trigger.pk)
