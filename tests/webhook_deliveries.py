"""Correctly signed webhook deliveries for every tracker that takes webhooks, as each tracker signs them.

``webhook_instance(tracker)`` makes a local instance with a webhook secret; ``deliver(client, instance,
body)`` posts ``body`` (bytes) to ``/hooks/<tracker>/<uid>/`` signed the way that tracker does it, so what a
test sends gets past the signature check and reaches the body's parsing. Used by the hostile-webhook tests and
the fuzz tests (``tests/security/``).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import uuid
from datetime import UTC, datetime
from typing import Any

from instances.models import Instance

SECRET = "whsec-correct-horse-battery"

# tracker type -> (credentials without the webhook secret, settings): enough for the connector to verify and
# read a delivery (no request to the tracker is made).
WEBHOOK_TRACKERS: dict[str, tuple[dict[str, Any], dict[str, Any]]] = {
    "github": ({"token": "ghp_x"}, {"repo": "octo/widgets"}),
    "jira": ({"email": "a@example.com", "api_token": "t"}, {"project": "SUP"}),
    "gitlab": ({"token": "glpat-x"}, {"project": "group/proj"}),
    "azure": ({"pat": "p"}, {"project": "Demo"}),
    "zendesk": ({"email": "a@example.com", "api_token": "t"}, {}),
    "servicenow": ({"username": "u", "password": "p"}, {}),
    "salesforce": ({"client_id": "c", "client_secret": "s"}, {}),
}

# A delivery each tracker sends about one item (each names exactly one item).
GOOD_BODIES: dict[str, Any] = {
    "github": {"action": "edited", "issue": {"number": 7}, "repository": {"full_name": "octo/widgets"}},
    "jira": {
        "webhookEvent": "jira:issue_updated",
        "issue": {"id": "10007", "key": "SUP-7", "self": "https://x.atlassian.net/rest/api/3/issue/10007"},
    },
    "gitlab": {"object_kind": "issue", "object_attributes": {"iid": 7, "updated_at": "2026-03-01T09:00:00Z"}},
    "azure": {"id": "e-1", "eventType": "workitem.updated", "resource": {"workItemId": 7}},
    "zendesk": {"ticket_id": 7},
    "servicenow": {"sys_id": "0" * 31 + "7", "number": "INC0010007", "table": "incident"},
    "salesforce": {"Id": "5003000000D8cuIAAR", "CaseNumber": "00001007"},
}


def webhook_instance(tracker: str) -> Instance:
    creds, settings = WEBHOOK_TRACKERS[tracker]
    return Instance.objects.create(
        name=f"{tracker} with webhooks",
        tracker_type=tracker,
        url=f"https://{tracker}.tracker.example",
        credentials=json.dumps({**creds, "webhook_secret": SECRET}),
        settings=settings,
    )


def signed_headers(tracker: str, body: bytes) -> dict[str, str]:
    """The headers ``tracker`` sends with ``body``: its signature (or secret) and a fresh delivery id."""
    delivery = str(uuid.uuid4())
    if tracker == "github":
        digest = hmac.new(SECRET.encode(), body, hashlib.sha256).hexdigest()
        return {
            "X-GitHub-Event": "issues",
            "X-GitHub-Delivery": delivery,
            "X-Hub-Signature-256": f"sha256={digest}",
        }
    if tracker == "jira":
        digest = hmac.new(SECRET.encode(), body, hashlib.sha256).hexdigest()
        return {"X-Atlassian-Webhook-Identifier": delivery, "X-Hub-Signature": f"sha256={digest}"}
    if tracker == "gitlab":
        return {"X-Gitlab-Token": SECRET, "X-Gitlab-Event-UUID": delivery}
    if tracker == "zendesk":
        stamp = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        mac = hmac.new(SECRET.encode(), stamp.encode() + body, hashlib.sha256).digest()
        return {
            "X-Zendesk-Webhook-Signature-Timestamp": stamp,
            "X-Zendesk-Webhook-Signature": base64.b64encode(mac).decode(),
        }
    return {"X-Exalate-Token": SECRET}  # Azure DevOps service hooks, ServiceNow and Salesforce callouts


def deliver(client, instance: Instance, body: bytes):  # type: ignore[no-untyped-def]
    """POST ``body`` to the instance's webhook URL, correctly signed."""
    return client.post(
        f"/hooks/{instance.tracker_type}/{instance.uid}/",
        data=body,
        content_type="application/json",
        headers=signed_headers(instance.tracker_type, body),
    )
