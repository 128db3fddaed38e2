"""The hostile-input catalogue: every case is refused with a clear 4xx (JSON ``{"detail", "code"}`` where
the surface speaks JSON), never a 5xx, and the database is exactly as it was.

Surfaces: the integration API (``/api/v1/``), attachment uploads (hostile file names are stored safely),
webhook intake (``/hooks/``) and the node protocol (``/node/v1/``). The existing hostile tests
(``tests/syncrules/test_hostile_scripts.py``, ``tests/connections/*``, ``tests/connectors/test_webhooks.py``,
``tests/api/test_permissions.py``) cover the rest; ``docs/security.md`` counts them all.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import time
import uuid

import pytest
from django.apps import apps
from django.core.files.uploadedfile import SimpleUploadedFile
from rest_framework.test import APIClient

from connections import signing
from connections.models import SeenNonce
from instances.models import Attachment, Instance, Issue

MB = "x" * (1024 * 1024)
NUL = "a\x00b"


def deep(n: int) -> str:
    """JSON text nested ``n`` objects deep (too deep for Python's json module to encode)."""
    return '{"a": ' * n + "1" + "}" * n


def raw(template: str, n: int = 1000) -> bytes:
    """A JSON body with ``DEEP`` replaced by JSON nested ``n`` levels."""
    return template.replace("DEEP", deep(n)).encode()


def _state() -> dict:
    """Row counts of every model, plus a digest of every row of the models a refused request could touch."""
    counts = {m._meta.label: m.objects.count() for m in apps.get_models() if m._meta.app_label != "sessions"}
    rows = {}
    for label in (
        "instances.Instance",
        "instances.Issue",
        "instances.Project",
        "instances.Comment",
        "connections.Connection",
        "replicas.Trigger",
        "syncrules.RulesVersion",
        "replicas.Twin",
    ):
        model = apps.get_model(label)
        values = list(model.objects.order_by("pk").values())
        rows[label] = hashlib.sha256(repr(values).encode()).hexdigest()
    return {"counts": counts, "rows": rows}


@pytest.fixture
def staff_api(world, admin_user):  # type: ignore[no-untyped-def]
    client = APIClient()
    client.force_authenticate(admin_user)
    return client


# --- the integration API ------------------------------------------------------------------------------------

INSTANCES = "/api/v1/instances/"
ISSUES = "/api/v1/tracker/issues/"
CONNS = "/api/v1/connections/"

# (case id, method, path; {inst} {conn} {key} {trigger} are filled in, body (None: no body), expected status)
API_CASES = [
    # instances
    ("instance-name-object", "post", INSTANCES, {"name": {"a": 1}}, 400),
    ("instance-name-list", "post", INSTANCES, {"name": ["x"]}, 400),
    ("instance-name-1mb", "post", INSTANCES, {"name": MB}, 400),
    ("instance-name-nul", "post", INSTANCES, {"name": NUL}, 400),
    ("instance-missing-name", "post", INSTANCES, {"tracker_type": "builtin"}, 400),
    ("instance-tracker-type-unknown", "post", INSTANCES, {"name": "n", "tracker_type": "nope"}, 400),
    ("instance-tracker-type-int", "post", INSTANCES, {"name": "n", "tracker_type": 7}, 400),
    ("instance-kind-int", "post", INSTANCES, {"name": "n", "kind": 5}, 400),
    ("instance-credentials-string", "post", INSTANCES, {"name": "n", "credentials": "token"}, 400),
    ("instance-credentials-list", "post", INSTANCES, {"name": "n", "credentials": ["token"]}, 400),
    ("instance-url-1mb", "post", INSTANCES, {"name": "n", "url": "https://" + MB}, 400),
    ("instance-url-not-url", "post", INSTANCES, {"name": "n", "url": "javascript:alert(1)"}, 400),
    ("instance-settings-deep", "post", INSTANCES, raw('{"name": "n", "settings": DEEP}'), 400),
    ("instance-body-list", "post", INSTANCES, [{"name": "n"}], 400),
    ("instance-body-deep", "post", INSTANCES, raw("DEEP"), 400),
    ("instance-patch-name-nul", "patch", INSTANCES + "{inst}/", {"name": NUL}, 400),
    ("instance-patch-credentials-int", "patch", INSTANCES + "{inst}/", {"credentials": 5}, 400),
    ("instance-patch-kind-bogus", "patch", INSTANCES + "{inst}/", {"kind": "both"}, 400),
    ("instance-negative-id", "get", INSTANCES + "-1/", None, 404),
    ("instance-delete-negative-id", "delete", INSTANCES + "-1/", None, 404),
    ("instance-string-id", "patch", INSTANCES + "abc/", {"name": "n"}, 404),
    # tracker issues
    ("issue-summary-1mb", "post", ISSUES, {"project": "SUP", "summary": MB}, 400),
    ("issue-summary-nul", "post", ISSUES, {"project": "SUP", "summary": NUL}, 400),
    ("issue-summary-missing", "post", ISSUES, {"project": "SUP"}, 400),
    ("issue-summary-object", "post", ISSUES, {"project": "SUP", "summary": {"a": 1}}, 400),
    ("issue-project-int", "post", ISSUES, {"project": 123, "summary": "s"}, 400),
    ("issue-project-unknown", "post", ISSUES, {"project": "NOPE", "summary": "s"}, 400),
    ("issue-labels-string", "post", ISSUES, {"project": "SUP", "summary": "s", "labels": "a,b"}, 400),
    ("issue-labels-ints", "post", ISSUES, {"project": "SUP", "summary": "s", "labels": [1, 2]}, 400),
    ("issue-labels-long", "post", ISSUES, {"project": "SUP", "summary": "s", "labels": ["l" * 101]}, 400),
    (
        "issue-custom-fields-list",
        "post",
        ISSUES,
        {"project": "SUP", "summary": "s", "custom_fields": []},
        400,
    ),
    (
        "issue-custom-fields-deep",
        "post",
        ISSUES,
        raw('{"project": "SUP", "summary": "s", "custom_fields": DEEP}'),
        400,
    ),
    (
        "issue-due-date-words",
        "post",
        ISSUES,
        {"project": "SUP", "summary": "s", "due_date": "yesterday"},
        400,
    ),
    ("issue-status-unknown", "post", ISSUES, {"project": "SUP", "summary": "s", "status": "Bogus"}, 400),
    ("issue-type-1mb", "post", ISSUES, {"project": "SUP", "summary": "s", "type": MB}, 400),
    ("issue-parent-unknown", "post", ISSUES, {"project": "SUP", "summary": "s", "parent": "SUP-999"}, 400),
    ("issue-body-deep", "post", ISSUES, raw("DEEP"), 400),
    ("issue-patch-summary-1mb", "patch", ISSUES + "{key}/", {"summary": MB}, 400),
    ("issue-patch-summary-nul", "patch", ISSUES + "{key}/", {"summary": NUL}, 400),
    ("issue-patch-move-project", "patch", ISSUES + "{key}/", {"project": "ENG"}, 400),
    ("issue-patch-priority-unknown", "patch", ISSUES + "{key}/", {"priority": "Apocalyptic"}, 400),
    ("issue-unknown-key", "patch", ISSUES + "SUP-999/", {"summary": "s"}, 404),
    ("comment-body-nul", "post", ISSUES + "{key}/comments/", {"body": NUL}, 400),
    ("comment-body-missing", "post", ISSUES + "{key}/comments/", {}, 400),
    ("comment-internal-word", "post", ISSUES + "{key}/comments/", {"body": "b", "internal": "maybe"}, 400),
    ("comment-unknown-id", "patch", ISSUES + "{key}/comments/999999/", {"body": "b"}, 404),
    ("attachment-json-not-multipart", "post", ISSUES + "{key}/attachments/", {}, 415),
    ("attachment-unknown-id", "delete", ISSUES + "{key}/attachments/999999/", None, 404),
    # connections: initiate, accept, preview, local, item operations
    ("initiate-name-nul", "post", CONNS, {"name": NUL, "local_instance": "{inst}"}, 400),
    ("initiate-name-1mb", "post", CONNS, {"name": MB, "local_instance": "{inst}"}, 400),
    ("initiate-instance-string", "post", CONNS, {"name": "n", "local_instance": "abc"}, 400),
    ("initiate-instance-negative", "post", CONNS, {"name": "n", "local_instance": -1}, 400),
    ("initiate-type-unknown", "post", CONNS, {"name": "n", "local_instance": "{inst}", "type": "magic"}, 400),
    (
        "accept-code-garbage",
        "post",
        CONNS + "accept/",
        {"code": "EXN1-garbage", "local_instance": "{inst}"},
        400,
    ),
    ("accept-code-1mb", "post", CONNS + "accept/", {"code": MB, "local_instance": "{inst}"}, 400),
    ("accept-code-nul", "post", CONNS + "accept/", {"code": "EXN1-" + NUL, "local_instance": "{inst}"}, 400),
    ("accept-code-object", "post", CONNS + "accept/", {"code": {"a": 1}, "local_instance": "{inst}"}, 400),
    ("accept-instance-negative", "post", CONNS + "accept/", {"code": "EXN1-x", "local_instance": -1}, 400),
    ("accept-body-deep", "post", CONNS + "accept/", raw("DEEP"), 400),
    ("preview-code-garbage", "post", CONNS + "preview/", {"code": "EXN1-AAAA"}, 400),
    ("preview-code-int", "post", CONNS + "preview/", {"code": 12345}, 400),
    ("preview-code-too-long", "post", CONNS + "preview/", {"code": "E" * 20001}, 400),
    ("preview-code-missing", "post", CONNS + "preview/", {}, 400),
    (
        "local-same-instance",
        "post",
        CONNS + "local/",
        {"name": "n", "instance_a": "{inst}", "instance_b": "{inst}"},
        400,
    ),
    (
        "local-instance-string",
        "post",
        CONNS + "local/",
        {"name": "n", "instance_a": "x", "instance_b": "y"},
        400,
    ),
    ("exalate-key-nul", "post", CONNS + "{conn}/exalate/", {"key": NUL}, 400),
    ("exalate-key-1mb", "post", CONNS + "{conn}/exalate/", {"key": MB}, 400),
    ("exalate-key-unknown", "post", CONNS + "{conn}/exalate/", {"key": "NOPE-1"}, 400),
    ("connect-missing-remote", "post", CONNS + "{conn}/connect/", {"local_key": "SUP-1"}, 400),
    ("unexalate-not-synced", "post", CONNS + "{conn}/unexalate/", {"key": "SUP-999"}, 404),
    ("activate-negative-id", "post", CONNS + "-1/activate/", None, 404),
    ("delete-string-id", "delete", CONNS + "abc/", None, 404),
    # rules: publish, validate, dry-run
    (
        "rules-outgoing-too-long",
        "put",
        CONNS + "{conn}/rules/",
        {"outgoing": "x" * 100_001, "incoming": ""},
        400,
    ),
    ("rules-outgoing-list", "put", CONNS + "{conn}/rules/", {"outgoing": ["x"], "incoming": ""}, 400),
    ("rules-outgoing-nul", "put", CONNS + "{conn}/rules/", {"outgoing": NUL, "incoming": ""}, 400),
    ("rules-syntax-error", "put", CONNS + "{conn}/rules/", {"outgoing": "def (", "incoming": ""}, 400),
    (
        "rules-forbidden-import",
        "put",
        CONNS + "{conn}/rules/",
        {"outgoing": "import os", "incoming": ""},
        400,
    ),
    ("rules-missing-incoming", "put", CONNS + "{conn}/rules/", {"outgoing": ""}, 400),
    ("rules-unknown-connection", "put", CONNS + "999999/rules/", {"outgoing": "", "incoming": ""}, 404),
    ("validate-missing", "post", CONNS + "{conn}/rules/validate/", {"outgoing": ""}, 400),
    (
        "validate-deep",
        "post",
        CONNS + "{conn}/rules/validate/",
        raw('{"outgoing": DEEP, "incoming": ""}'),
        400,
    ),
    (
        "validate-too-long",
        "post",
        CONNS + "{conn}/rules/validate/",
        {"outgoing": "x" * 100_001, "incoming": ""},
        400,
    ),
    ("dry-run-direction", "post", CONNS + "{conn}/rules/dry-run/", {"direction": "sideways"}, 400),
    ("dry-run-outgoing-no-key", "post", CONNS + "{conn}/rules/dry-run/", {"direction": "outgoing"}, 400),
    (
        "dry-run-outgoing-unknown-key",
        "post",
        CONNS + "{conn}/rules/dry-run/",
        {"direction": "outgoing", "key": "NOPE-1"},
        400,
    ),
    ("dry-run-key-nul", "post", CONNS + "{conn}/rules/dry-run/", {"direction": "outgoing", "key": NUL}, 400),
    (
        "dry-run-incoming-replica-string",
        "post",
        CONNS + "{conn}/rules/dry-run/",
        {"direction": "incoming", "replica": "hub"},
        400,
    ),
    (
        "dry-run-incoming-replica-deep",
        "post",
        CONNS + "{conn}/rules/dry-run/",
        raw('{"direction": "incoming", "replica": DEEP}'),
        400,
    ),
    (
        "dry-run-script-error",
        "post",
        CONNS + "{conn}/rules/dry-run/",
        {"direction": "outgoing", "key": "{key}", "outgoing": "1/0"},
        422,
    ),
    # triggers
    ("trigger-query-too-long", "post", CONNS + "{conn}/triggers/", {"query": "q" * 2001}, 400),
    ("trigger-query-nul", "post", CONNS + "{conn}/triggers/", {"query": NUL}, 400),
    ("trigger-query-missing", "post", CONNS + "{conn}/triggers/", {}, 400),
    ("trigger-query-bad-syntax", "post", CONNS + "{conn}/triggers/", {"query": "status = = ((("}, 400),
    (
        "trigger-active-word",
        "post",
        CONNS + "{conn}/triggers/",
        {"query": "status = Open", "active": "maybe"},
        400,
    ),
    ("trigger-patch-query-nul", "patch", CONNS + "{conn}/triggers/{trigger}/", {"query": NUL}, 400),
    ("trigger-patch-unknown", "patch", CONNS + "{conn}/triggers/999999/", {"query": "status = Open"}, 404),
    ("trigger-unknown-connection", "post", CONNS + "999999/triggers/", {"query": "status = Open"}, 404),
    # bulk
    ("bulk-kind-unknown", "post", CONNS + "{conn}/bulk/", {"kind": "nuke"}, 400),
    ("bulk-trigger-string", "post", CONNS + "{conn}/bulk/", {"kind": "exalate", "trigger": "abc"}, 400),
    ("bulk-trigger-negative", "post", CONNS + "{conn}/bulk/", {"kind": "exalate", "trigger": -1}, 400),
    ("bulk-keys-string", "post", CONNS + "{conn}/bulk/", {"kind": "exalate", "keys": "SUP-1"}, 400),
    ("bulk-keys-nul", "post", CONNS + "{conn}/bulk/", {"kind": "exalate", "keys": [NUL]}, 400),
    ("bulk-keys-1mb", "post", CONNS + "{conn}/bulk/", {"kind": "exalate", "keys": [MB]}, 400),
    ("bulk-body-deep", "post", CONNS + "{conn}/bulk/", raw("DEEP"), 400),
    ("bulk-unknown-job", "get", CONNS + "{conn}/bulk/999999/", None, 404),
    ("bulk-cancel-unknown-job", "post", CONNS + "{conn}/bulk/999999/cancel/", None, 404),
    # twins, sync status, events, errors
    ("twins-stuck-negative", "get", CONNS + "{conn}/twins/?stuck_minutes=-5", None, 400),
    ("twins-stuck-words", "get", CONNS + "{conn}/twins/?stuck_minutes=ten", None, 400),
    ("twins-state-unknown", "get", CONNS + "{conn}/twins/?state=bogus", None, 400),
    ("sync-status-unknown-instance", "get", "/api/v1/entities/999999/SUP-1/sync-status/", None, 404),
    ("event-negative-id", "get", "/api/v1/events/-1/", None, 404),
    ("error-resolve-unknown", "post", "/api/v1/errors/999999/resolve/", None, 404),
]


def _fill(value: object, world) -> object:  # type: ignore[no-untyped-def]
    subs = {
        "{inst}": str(world.sup.instance_id),
        "{conn}": str(world.a.pk),
        "{key}": world.issue.key,
        "{trigger}": str(world.trigger_id),
    }
    if isinstance(value, str):
        for k, v in subs.items():
            value = value.replace(k, v)
        return int(value) if value.isdigit() and len(value) < 10 and value != "12345" else value
    if isinstance(value, dict) and len(value) < 20 and "a" not in value:
        return {k: _fill(v, world) for k, v in value.items()}
    return value


@pytest.mark.parametrize(
    "method,path,body,expected", [c[1:] for c in API_CASES], ids=[c[0] for c in API_CASES]
)
def test_hostile_api_input_is_a_clear_4xx_that_changes_nothing(
    staff_api, world, method, path, body, expected
):
    path = str(_fill(path, world)) if "{" in path else path
    body = _fill(body, world)
    before = _state()
    if body is None:
        response = getattr(staff_api, method)(path)
    else:
        raw = json.dumps(body) if not isinstance(body, bytes) else body
        response = getattr(staff_api, method)(path, data=raw, content_type="application/json")
    assert response.status_code == expected, (response.status_code, response.content[:500])
    data = response.json()
    assert set(data) >= {"detail", "code"} and data["detail"], data
    assert _state() == before


def test_the_catalogue_names_every_api_write_surface():
    """Instances, tracker issues, connections accept/preview, rules, bulk and triggers all appear."""
    paths = " ".join(c[2] for c in API_CASES)
    for part in (
        "instances",
        "tracker/issues",
        "accept",
        "preview",
        "rules/validate",
        "rules/dry-run",
        "bulk",
        "triggers",
        "/rules/",
    ):
        assert part in paths, part


@pytest.mark.parametrize(
    "method,path,raw,content_type",
    [
        ("post", INSTANCES, b'{"name": ', "application/json"),
        ("post", INSTANCES, b'{"name": NaN}', "application/json"),
        ("post", INSTANCES, b"\xff\xfe\x00", "application/json"),
        ("post", ISSUES, b"<issue><summary>s</summary></issue>", "application/xml"),
        ("post", CONNS + "preview/", b"code=EXN1-x", "text/plain"),
    ],
    ids=["truncated-json", "nan-json", "not-utf8", "xml-body", "text-plain-body"],
)
def test_unreadable_api_bodies_are_4xx(staff_api, world, method, path, raw, content_type):
    before = _state()
    response = getattr(staff_api, method)(path, data=raw, content_type=content_type)
    assert 400 <= response.status_code < 500, (response.status_code, response.content[:300])
    assert set(response.json()) >= {"detail", "code"}
    assert _state() == before


@pytest.mark.parametrize(
    "body",
    [
        {"id": 999, "key": "SUP-77", "version": 99, "created_at": "2000-01-01T00:00:00Z", "is_admin": True},
        {"updated_by": "mallory", "unknown_field": "x" * 1000},
    ],
    ids=["read-only-fields", "unknown-fields"],
)
def test_read_only_and_unknown_fields_are_ignored_not_applied(staff_api, world, body):
    """DRF ignores fields a serializer does not write (documented in docs/security.md): nothing changes."""
    before = Issue.objects.values().get(pk=world.issue.pk)
    response = staff_api.patch(f"{ISSUES}{world.issue.key}/", body, format="json")
    assert response.status_code == 200
    after = Issue.objects.values().get(pk=world.issue.pk)
    assert after == before


# --- uploads with hostile file names ----------------------------------------------------------------------

HOSTILE_NAMES = [
    ("dot-dot-slash", "../../../etc/passwd", "passwd"),
    ("windows-path", "..\\..\\boot.ini", "boot.ini"),
    ("absolute", "/etc/shadow", "shadow"),
    ("nul", "evil\x00.txt", "evil.txt"),
    ("control-chars", "a\r\nb\x07.txt", "ab.txt"),
    ("300-chars", "n" * 300 + ".txt", None),
    ("only-dots", "....", "attachment"),
    ("dot-dot", "..", "attachment"),
    ("hidden", ".htaccess", "htaccess"),
    ("rtl-override", "invoice\u202etxt.exe", "invoicetxt.exe"),
    ("bidi-isolate", "report\u2066gpj.\u2069exe", "reportgpj.exe"),
    ("empty", "", "attachment"),
]


def _assert_safe(attachment: Attachment, expected: str | None, media_root: str) -> None:
    import os
    import unicodedata

    name = attachment.filename
    assert "/" not in name and "\\" not in name and not name.startswith(".")
    assert not any(unicodedata.category(ch) in ("Cc", "Cf") for ch in name), repr(name)
    assert 0 < len(name) <= 200
    if expected is not None:
        assert name == expected
    stored = os.path.realpath(attachment.file.path)
    assert stored.startswith(os.path.realpath(media_root) + os.sep)


@pytest.mark.parametrize("name,expected", [c[1:] for c in HOSTILE_NAMES], ids=[c[0] for c in HOSTILE_NAMES])
def test_api_upload_with_a_hostile_name_is_stored_safely(staff_api, world, settings, name, expected):
    from instances.tracker.services import attachment_add

    # Multipart encoders already strip some of these; the service is what every path goes through, so
    # test it with the raw name as well as through the API.
    direct = attachment_add(issue=world.issue, actor="t", filename=name, content=b"data")
    _assert_safe(direct, expected, settings.MEDIA_ROOT)
    # Through the API, with the name exactly as a hostile client writes it in the multipart header.
    boundary = "hostile-boundary"
    body = (
        f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="{name}"\r\n'
        f"Content-Type: text/plain\r\n\r\npayload\r\n--{boundary}--\r\n"
    ).encode()
    before = Attachment.objects.count()
    response = staff_api.generic(
        "POST",
        f"{ISSUES}{world.issue.key}/attachments/",
        data=body,
        content_type=f"multipart/form-data; boundary={boundary}",
    )
    if response.status_code == 201:
        _assert_safe(Attachment.objects.get(pk=response.json()["id"]), None, settings.MEDIA_ROOT)
    else:  # a name the multipart parser cannot use is a clear 400 and nothing is stored
        assert response.status_code == 400 and set(response.json()) >= {"detail", "code"}
        assert Attachment.objects.count() == before


def test_an_oversized_upload_is_refused_and_stores_nothing(staff_api, world, settings):
    settings.ATTACHMENT_MAX_BYTES = 10
    before = _state()
    upload = SimpleUploadedFile("big.bin", b"x" * 11)
    response = staff_api.post(f"{ISSUES}{world.issue.key}/attachments/", {"file": upload}, format="multipart")
    assert response.status_code == 400 and "ATTACHMENT_MAX_BYTES" in response.json()["detail"]
    assert _state() == before


# --- webhook intake ---------------------------------------------------------------------------------------


@pytest.fixture
def github_instance(db):  # type: ignore[no-untyped-def]
    from tests.security.conftest import WEBHOOK_SECRET

    return Instance.objects.create(
        name="GitHub",
        tracker_type="github",
        url="https://api.github.com",
        settings={"repository": "octo/widgets"},
        credentials=json.dumps({"token": "t", "webhook_secret": WEBHOOK_SECRET}),
    )


def _gh_delivery(secret: str, body: bytes, delivery: str = "d-1", sig: str | None = None) -> dict:
    digest = hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()
    return {
        "X-GitHub-Event": "issues",
        "X-GitHub-Delivery": delivery,
        "X-Hub-Signature-256": sig if sig is not None else f"sha256={digest}",
    }


GH_BODY = json.dumps(
    {"action": "edited", "issue": {"number": 1, "id": 11}, "repository": {"full_name": "octo/widgets"}}
).encode()

WEBHOOK_CASES = [
    ("wrong-secret", lambda: _gh_delivery("wrong", GH_BODY), GH_BODY, 401),
    ("no-signature", lambda: {"X-GitHub-Event": "issues", "X-GitHub-Delivery": "d-2"}, GH_BODY, 401),
    ("empty-signature", lambda: _gh_delivery("x", GH_BODY, sig=""), GH_BODY, 401),
    ("sha1-signature", lambda: _gh_delivery("x", GH_BODY, sig="sha1=" + "0" * 40), GH_BODY, 401),
    ("truncated-signature", lambda: _gh_delivery("x", GH_BODY, sig="sha256=abc"), GH_BODY, 401),
    ("signature-of-another-body", lambda: _gh_delivery(_secret(), b"{}"), GH_BODY, 401),
]


def _secret() -> str:
    from tests.security.conftest import WEBHOOK_SECRET

    return WEBHOOK_SECRET


@pytest.mark.parametrize(
    "make_headers,body,expected", [c[1:] for c in WEBHOOK_CASES], ids=[c[0] for c in WEBHOOK_CASES]
)
def test_badly_signed_webhooks_are_refused(client, github_instance, make_headers, body, expected):
    before = _state()
    response = client.post(
        f"/hooks/github/{github_instance.uid}/",
        data=body,
        content_type="application/json",
        headers=make_headers(),
    )
    assert response.status_code == expected
    assert set(response.json()) >= {"detail", "code"}
    assert _state() == before


@pytest.mark.parametrize(
    "url",
    ["/hooks/github/no-such-uid/", "/hooks/jira/{uid}/", "/hooks/nosuchtracker/{uid}/"],
    ids=["unknown-uid", "wrong-tracker-type", "unknown-tracker"],
)
def test_webhooks_for_unknown_instances_are_404(client, github_instance, url):
    before = _state()
    response = client.post(
        url.format(uid=github_instance.uid),
        data=GH_BODY,
        content_type="application/json",
        headers=_gh_delivery(_secret(), GH_BODY),
    )
    assert response.status_code == 404 and set(response.json()) >= {"detail", "code"}
    assert _state() == before


def test_a_replayed_webhook_delivery_is_accepted_once(client, github_instance):
    """Signed and well formed, delivered twice with the same delivery id: the second has no effect."""
    from instances.connectors import github as github_module

    github_module.reset_memory()
    url = f"/hooks/github/{github_instance.uid}/"
    headers = _gh_delivery(_secret(), GH_BODY, delivery=str(uuid.uuid4()))
    first = client.post(url, data=GH_BODY, content_type="application/json", headers=headers)
    assert first.status_code == 202
    before = _state()
    again = client.post(url, data=GH_BODY, content_type="application/json", headers=headers)
    assert (again.status_code, again.json()) == (202, {"accepted": 0})
    assert _state() == before


def test_webhook_get_is_405(client, github_instance):
    assert client.get(f"/hooks/github/{github_instance.uid}/").status_code == 405


# --- the node protocol ------------------------------------------------------------------------------------

MESSAGES = "/node/v1/messages/"
KEY = bytes(range(32))


@pytest.fixture
def node_conn(world):  # type: ignore[no-untyped-def]
    """An active node-to-node connection with a known key."""
    from connections.models import Connection

    conn = world.pending
    conn.key = KEY.hex()
    conn.status = Connection.Status.ACTIVE
    conn.remote_node_url = "https://far.example.com"
    conn.save()
    return conn


def _signed(conn, body: bytes, *, method="POST", path=MESSAGES, **kw) -> dict:  # type: ignore[no-untyped-def]
    headers = signing.sign_request(
        key=kw.pop("key", KEY),
        connection_id=kw.pop("cid", str(conn.uid)),
        method=method,
        path=path,
        body=body,
        **kw,
    )
    return {"HTTP_" + k.upper().replace("-", "_"): v for k, v in headers.items()}


def _batch() -> bytes:
    return json.dumps({"messages": []}).encode()


def _node_post(client, body: bytes, headers: dict, content_type="application/json"):  # type: ignore[no-untyped-def]
    return client.generic("POST", MESSAGES, data=body, content_type=content_type, **headers)


NODE_CASES = [
    ("content-type-text", lambda c: (_batch(), _signed(c, _batch()), "text/plain"), 415),
    (
        "content-type-form",
        lambda c: (_batch(), _signed(c, _batch()), "application/x-www-form-urlencoded"),
        415,
    ),
    (
        "content-type-multipart",
        lambda c: (_batch(), _signed(c, _batch()), "multipart/form-data; boundary=x"),
        415,
    ),
    ("content-type-xml", lambda c: (_batch(), _signed(c, _batch()), "application/xml"), 415),
    (
        "stale-signature",
        lambda c: (_batch(), _signed(c, _batch(), now=time.time() - 900), "application/json"),
        401,
    ),
    (
        "future-signature",
        lambda c: (_batch(), _signed(c, _batch(), now=time.time() + 900), "application/json"),
        401,
    ),
    ("wrong-key", lambda c: (_batch(), _signed(c, _batch(), key=b"k" * 32), "application/json"), 401),
    (
        "unknown-connection",
        lambda c: (_batch(), _signed(c, _batch(), cid=str(uuid.uuid4())), "application/json"),
        401,
    ),
    (
        "signed-for-another-path",
        lambda c: (_batch(), _signed(c, _batch(), path="/node/v1/status/"), "application/json"),
        401,
    ),
    ("signed-as-get", lambda c: (_batch(), _signed(c, _batch(), method="GET"), "application/json"), 401),
    ("tampered-body", lambda c: (b'{"messages": [1]}', _signed(c, _batch()), "application/json"), 401),
    ("no-headers", lambda c: (_batch(), {}, "application/json"), 401),
    (
        "garbage-signature",
        lambda c: (
            _batch(),
            {**_signed(c, _batch()), "HTTP_X_EXALATE_SIGNATURE": "v1=zz"},
            "application/json",
        ),
        401,
    ),
    (
        "signature-v0",
        lambda c: (
            _batch(),
            {**_signed(c, _batch()), "HTTP_X_EXALATE_SIGNATURE": "v0=" + "0" * 64},
            "application/json",
        ),
        401,
    ),
    (
        "timestamp-words",
        lambda c: (
            _batch(),
            {**_signed(c, _batch()), "HTTP_X_EXALATE_TIMESTAMP": "soon"},
            "application/json",
        ),
        401,
    ),
    (
        "nonce-too-short",
        lambda c: (_batch(), {**_signed(c, _batch()), "HTTP_X_EXALATE_NONCE": "ab"}, "application/json"),
        401,
    ),
    (
        "connection-id-injection",
        lambda c: (
            _batch(),
            {**_signed(c, _batch()), "HTTP_X_EXALATE_CONNECTION": "' OR 1=1 --"},
            "application/json",
        ),
        401,
    ),
    ("deep-json", lambda c: ((b := deep(200).encode()), _signed(c, b), "application/json"), 400),
    ("nan-json", lambda c: ((b := b'{"messages": NaN}'), _signed(c, b), "application/json"), 400),
    ("not-utf8", lambda c: ((b := b"\xff\xfe{}"), _signed(c, b), "application/json"), 400),
    ("batch-not-object", lambda c: ((b := b"[]"), _signed(c, b), "application/json"), 400),
    ("messages-not-list", lambda c: ((b := b'{"messages": "all"}'), _signed(c, b), "application/json"), 400),
    (
        "batch-too-big",
        lambda c: (
            (b := json.dumps({"messages": [{"type": "status", "status": "active"}] * 1001}).encode()),
            _signed(c, b),
            "application/json",
        ),
        400,
    ),
]


@pytest.mark.parametrize("build,expected", [c[1:] for c in NODE_CASES], ids=[c[0] for c in NODE_CASES])
def test_hostile_node_requests_are_refused_and_change_nothing(client, node_conn, build, expected):
    body, headers, content_type = build(node_conn)
    before = _state()
    nonces = SeenNonce.objects.count()
    response = _node_post(client, body, headers, content_type)
    assert response.status_code == expected, response.content[:300]
    assert set(response.json()) >= {"detail", "code"}
    after = _state()
    # An authenticated request's nonce is spent even when its body is then refused (so it cannot be
    # replayed); that row is the only change allowed.
    allowed = nonces + (1 if expected == 400 else 0)
    assert SeenNonce.objects.count() == allowed
    after["counts"]["connections.SeenNonce"] = before["counts"]["connections.SeenNonce"]
    assert after == before


def test_an_oversized_node_body_is_413_by_content_length_and_by_bytes(client, node_conn, settings):
    settings.NODE_MAX_BODY_BYTES = 100
    body = json.dumps({"messages": [], "pad": "x" * 200}).encode()
    before = _state()
    response = _node_post(client, body, _signed(node_conn, body))
    assert response.status_code == 413 and response.json()["code"] == "too_large"
    assert _state() == before


def test_a_replayed_node_request_is_401_and_changes_nothing(client, node_conn):
    body = _batch()
    headers = _signed(node_conn, body)
    assert _node_post(client, body, headers).status_code == 202
    before = _state()
    again = _node_post(client, body, headers)
    assert again.status_code == 401 and set(again.json()) >= {"detail", "code"}
    assert _state() == before


@pytest.mark.parametrize(
    "body",
    [b"", b"{}", b'{"invitation_id": 5}', deep(200).encode(), b'{"invitation_id": "' + b"x" * 500 + b'"}'],
    ids=["empty", "empty-object", "id-int", "deep", "id-long"],
)
def test_hostile_handshakes_are_4xx_and_change_nothing(client, world, body):
    before = _state()
    response = client.generic("POST", "/node/v1/handshake/", data=body, content_type="application/json")
    assert 400 <= response.status_code < 500, response.content[:300]
    assert set(response.json()) >= {"detail", "code"}
    assert _state() == before
