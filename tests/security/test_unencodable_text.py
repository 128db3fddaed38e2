"""Text that cannot be encoded as UTF-8 (a lone surrogate such as ``"\\ud800"``, which JSON can spell).

Refused where it comes in, with a 400 that says where it is, and nothing stored: the API (JSON bodies and
JSON fields sent as form values), the Django admin's JSON fields, the rules editor's pasted replica and the
node protocol (webhooks: ``test_hostile_webhooks.py``). Before, the value was stored and every page and API
answer that showed it was a 500 from then on. A value already stored (by an older version) reads back with
U+FFFD in its place, so every page that shows it stays readable.
"""

from __future__ import annotations

import json

import pytest
from django.db import DataError, connection, transaction
from django.urls import reverse

from connections.models import Connection, OutboundMessage
from instances.models import Instance, Issue, IssueChange, Project
from replicas.models import BulkJob, ReconciliationReport, SyncEvent, Twin
from tests.security.test_hostile_catalogue import _signed, _state, node_conn  # noqa: F401
from tests.security.test_hostile_catalogue import staff_api as staff_api_fixture

staff_api = staff_api_fixture

REPLACED = "\ufffd"


# --- the API refuses it, whatever the endpoint --------------------------------------------------------------

# (case, method, path ({key} {inst} {project} {conn} are filled in), raw JSON body, where it is)
API_CASES = [
    ("issue-label", "patch", "/api/v1/tracker/issues/{key}/", r'{"labels": ["a\ud800"]}', "$.labels[0]"),
    (
        "issue-create-summary",
        "post",
        "/api/v1/tracker/issues/",
        r'{"project": "SUP", "summary": "x\udfff"}',
        "$.summary",
    ),
    (
        "issue-custom-field-name",
        "patch",
        "/api/v1/tracker/issues/{key}/",
        r'{"custom_fields": {"\ud800": "x"}}',
        "$.custom_fields.?",
    ),
    ("comment-body", "post", "/api/v1/tracker/issues/{key}/comments/", r'{"body": "\ud83d"}', "$.body"),
    (
        "instance-settings",
        "patch",
        "/api/v1/instances/{inst}/",
        r'{"settings": {"k": "\udc00"}}',
        "$.settings.k",
    ),
    (
        "project-statuses",
        "post",
        "/api/v1/tracker/projects/",
        r'{"instance": INST, "key": "NEW", "name": "New", "statuses": ["Open", "\ud800"]}',
        "$.statuses[1]",
    ),
    (
        "dry-run-replica",
        "post",
        "/api/v1/connections/{conn}/rules/dry-run/",
        r'{"direction": "incoming", "replica": {"hubIssue": {"id": "1", "summary": "\ud800"}}}',
        "$.replica.hubIssue.summary",
    ),
    (
        "trigger-query",
        "post",
        "/api/v1/connections/{conn}/triggers/",
        r'{"entity_type": "issue", "query": "status = \ud800"}',
        "$.query",
    ),
]


def _fill(path: str, world) -> str:  # type: ignore[no-untyped-def]
    return path.format(key=world.issue.key, inst=world.sup.instance_id, conn=world.a.pk)


@pytest.mark.parametrize("method,path,body,where", [c[1:] for c in API_CASES], ids=[c[0] for c in API_CASES])
def test_api_text_that_is_not_valid_unicode_is_a_400_naming_where_and_stores_nothing(
    staff_api, world, method, path, body, where
):
    before = _state()
    body = body.replace("INST", str(world.sup.instance_id))
    response = getattr(staff_api, method)(_fill(path, world), data=body, content_type="application/json")
    assert response.status_code == 400, response.content[:300]
    answer = response.json()
    assert answer["code"] == "unencodable_text"
    assert f"not valid Unicode at {where}" in answer["detail"] and "valid UTF-8" in answer["detail"]
    assert _state() == before
    assert staff_api.get("/api/v1/tracker/issues/").status_code == 200


def test_a_json_field_sent_as_a_form_value_is_refused_too(staff_api, world):
    """Form bodies are UTF-8 text, but the API's JSON fields decode a form value as JSON."""
    before = _state()
    response = staff_api.patch(
        f"/api/v1/instances/{world.sup.instance_id}/",
        data={"settings": '{"k": "\\ud800"}'},
        format="multipart",
    )
    assert response.status_code == 400 and response.json()["code"] == "unencodable_text"
    assert "form field 'settings'" in response.json()["detail"]
    assert _state() == before
    # An escaped pair (an emoji) is valid text and is stored as such.
    ok = staff_api.patch(
        f"/api/v1/instances/{world.sup.instance_id}/",
        data={"settings": '{"k": "\\ud83d\\ude00"}'},
        format="multipart",
    )
    assert ok.status_code == 200 and Instance.objects.get(pk=world.sup.instance_id).settings == {"k": "😀"}


def test_the_django_admin_refuses_it_in_a_json_field_and_shows_the_form_again(client, admin_user, world):
    client.force_login(admin_user)
    url = reverse("admin:instances_project_change", args=[world.sup.pk])
    data = {
        "instance": world.sup.instance_id,
        "key": "SUP",
        "name": "Support",
        "statuses": '["Open", "\\ud800"]',
        "priorities": json.dumps(world.sup.priorities),
        "issue_types": json.dumps(world.sup.issue_types),
    }
    response = client.post(url, data)
    assert response.status_code == 200  # the form again, with the error (not a 500, not saved)
    assert "not valid Unicode at $[1]" in response.content.decode()
    assert Project.objects.get(pk=world.sup.pk).statuses == world.sup.statuses


def test_a_pasted_replica_in_the_rules_editor_is_a_form_error(client, admin_user, world):
    from syncrules.services import rules_current

    client.force_login(admin_user)
    rules = rules_current(world.b)
    response = client.post(
        reverse("ui:rules", args=[world.b.pk]),
        {
            "action": "dryrun",
            "outgoing": rules.outgoing,
            "incoming": rules.incoming,
            "dry_direction": "incoming",
            "dry_key": "",
            "dry_replica": '{"summary": "\\ud800"}',
            "note": "",
        },
    )
    assert response.status_code in (200, 400)
    assert "not valid Unicode at $.summary" in response.content.decode()


# --- the node protocol refuses it ---------------------------------------------------------------------------


def test_a_peer_message_with_it_is_a_400_naming_the_field_and_stores_nothing(client, node_conn):  # noqa: F811
    body = (
        b'{"messages": [{"type": "event", "trace_id": "6f1c0b7e-8a5e-4d67-9b1e-3f2a1c0d9e8f", '
        b'"kind": "update", "seq": 1, "remote_item_id": "77", '
        b'"replica": {"version": {"major": 1, "minor": 0, "patch": 0}, '
        b'"hubIssue": {"id": "77", "summary": "From afar", "labels": ["l\\ud800"]}}}]}'
    )
    before = _state()
    events = SyncEvent.objects.count()
    response = client.generic(
        "POST", "/node/v1/messages/", data=body, content_type="application/json", **_signed(node_conn, body)
    )
    assert response.status_code == 400, response.content
    assert response.json()["code"] == "unencodable_text"
    assert "$.messages[0].replica.hubIssue.labels[0]" in response.json()["detail"]
    assert SyncEvent.objects.count() == events
    after = _state()
    after["counts"]["connections.SeenNonce"] = before["counts"]["connections.SeenNonce"]  # the nonce is spent
    assert after == before


# --- a value already stored reads back with U+FFFD, and every page that shows it renders --------------------

BAD = "\\ud800"  # as JSON text spells it: a lone high surrogate


def _store_raw(model, pk: int, column: str, json_text: str) -> None:  # type: ignore[no-untyped-def]
    """Write JSON text straight into a column, past every door (as an older version of the node could)."""
    table = model._meta.db_table
    with connection.cursor() as cursor:
        cursor.execute(f'UPDATE "{table}" SET "{column}" = %s WHERE id = %s', [json_text, pk])  # noqa: S608


@pytest.fixture
def stored(world, node_conn):  # type: ignore[no-untyped-def]  # noqa: F811
    """A lone surrogate in every JSON column of the models (SQLite; PostgreSQL refuses to store one)."""
    twin = Twin.objects.get(connection=world.a)
    event = SyncEvent.objects.filter(twin=twin).first()
    assert event is not None
    message = OutboundMessage.objects.create(connection=node_conn, kind="event", payload={"a": 1})
    job = BulkJob.objects.create(connection=world.a, kind="exalate", items=["SUP-1"])
    report = ReconciliationReport.objects.create(connection=world.a)
    hub = (
        '{"version": {"major": 1, "minor": 0, "patch": 0}, "hubIssue": {"id": "1", "summary": "R'
        + BAD
        + '"}}'
    )
    writes = [
        (Issue, world.issue.pk, "labels", f'["L{BAD}"]'),
        (Issue, world.issue.pk, "custom_fields", f'{{"Region": "C{BAD}"}}'),
        (Instance, world.sup.instance_id, "settings", f'{{"note": "S{BAD}"}}'),
        (Project, world.sup.pk, "statuses", f'["Open", "In Progress", "Done", "P{BAD}"]'),
        (Project, world.sup.pk, "priorities", f'["Medium", "P{BAD}"]'),
        (Project, world.sup.pk, "issue_types", f'["Task", "T{BAD}"]'),
        (IssueChange, IssueChange.objects.filter(issue=world.issue).first().pk, "fields", f'["F{BAD}"]'),
        (Twin, twin.pk, "local_replica", f'{{"id": "1", "summary": "L{BAD}"}}'),
        (Twin, twin.pk, "remote_replica", f'{{"id": "9", "summary": "R{BAD}"}}'),
        (Twin, twin.pk, "prev_remote_replica", f'{{"id": "9", "summary": "P{BAD}"}}'),
        (SyncEvent, event.pk, "replica", hub),
        (Connection, world.a.pk, "peer_features", f'["replica-1", "X{BAD}"]'),
        (OutboundMessage, message.pk, "payload", hub),
        (BulkJob, job.pk, "items", f'["SUP-1{BAD}"]'),
        (BulkJob, job.pk, "errors", f'["E{BAD}"]'),
        (ReconciliationReport, report.pk, "findings", f'[{{"key": "K{BAD}"}}]'),
    ]
    if connection.vendor != "sqlite":
        # PostgreSQL's jsonb refuses a lone surrogate: such a value cannot be in the database at all.
        with pytest.raises(DataError), transaction.atomic():
            _store_raw(Issue, world.issue.pk, "labels", f'["L{BAD}"]')
        return None
    for model, pk, column, text in writes:
        _store_raw(model, pk, column, text)
    return {"twin": twin, "event": event, "message": message, "job": job, "report": report}


def test_every_value_already_stored_reads_back_with_a_replacement_character(world, stored):
    if stored is None:
        return  # PostgreSQL: nothing of the kind can be stored (checked by the fixture)
    issue = Issue.objects.get(pk=world.issue.pk)
    assert issue.labels == [f"L{REPLACED}"] and issue.custom_fields == {"Region": f"C{REPLACED}"}
    assert Twin.objects.get(pk=stored["twin"].pk).remote_replica["summary"] == f"R{REPLACED}"
    assert SyncEvent.objects.get(pk=stored["event"].pk).replica["hubIssue"]["summary"] == f"R{REPLACED}"
    values = list(Issue.objects.filter(pk=world.issue.pk).values_list("labels", flat=True))
    assert values == [[f"L{REPLACED}"]]


def test_every_page_and_api_answer_that_shows_a_stored_value_renders(client, admin_user, world, stored):
    if stored is None:
        return  # PostgreSQL: nothing of the kind can be stored (checked by the fixture)
    client.force_login(admin_user)
    a, inst, key = world.a, world.sup.instance_id, world.issue.key
    status_page = reverse("ui:status") + f"?instance={inst}&key={key}"
    pages = [
        # the API: lists and details
        "/api/v1/tracker/issues/",
        f"/api/v1/tracker/issues/{key}/",
        "/api/v1/tracker/projects/",
        f"/api/v1/tracker/projects/{world.sup.key}/",
        "/api/v1/instances/",
        f"/api/v1/instances/{inst}/",
        "/api/v1/connections/",
        f"/api/v1/connections/{a.pk}/",
        f"/api/v1/connections/{a.pk}/twins/",
        f"/api/v1/connections/{a.pk}/bulk/",
        f"/api/v1/connections/{a.pk}/reconcile/",
        "/api/v1/events/",
        f"/api/v1/events/{stored['event'].pk}/",
        f"/api/v1/entities/{inst}/{key}/sync-status/",
        # the UI
        reverse("ui:dashboard"),
        reverse("ui:tracker"),
        reverse("ui:tracker") + "?project=SUP",
        reverse("ui:issue", args=[key]),
        status_page,
        reverse("ui:connections"),
        reverse("ui:connection", args=[a.pk]),
        reverse("ui:items", args=[a.pk]),
        reverse("ui:queue"),
        reverse("ui:bulk", args=[a.pk]),
        reverse("ui:reconcile", args=[a.pk]),
        reverse("ui:rules", args=[a.pk]),
        # the Django admin: lists and change pages
        reverse("admin:instances_issue_changelist"),
        reverse("admin:instances_issue_change", args=[world.issue.pk]),
        reverse("admin:instances_instance_changelist"),
        reverse("admin:instances_instance_change", args=[inst]),
        reverse("admin:instances_project_change", args=[world.sup.pk]),
        reverse("admin:replicas_twin_change", args=[stored["twin"].pk]),
        reverse("admin:replicas_syncevent_changelist"),
        reverse("admin:replicas_syncevent_change", args=[stored["event"].pk]),
        reverse("admin:connections_connection_change", args=[a.pk]),
        reverse("admin:replicas_bulkjob_change", args=[stored["job"].pk]),
        reverse("admin:replicas_reconciliationreport_change", args=[stored["report"].pk]),
    ]
    shown = []
    for url in pages:
        response = client.get(url, HTTP_ACCEPT="text/html,application/json")
        assert response.status_code == 200, (url, response.status_code)
        if REPLACED in response.content.decode():
            shown.append(url)
    # The stored values are on these pages, each with U+FFFD where the surrogate was.
    for url in (
        f"/api/v1/tracker/issues/{key}/",
        "/api/v1/instances/",
        f"/api/v1/events/{stored['event'].pk}/",
        f"/api/v1/entities/{inst}/{key}/sync-status/",
        reverse("ui:issue", args=[key]),
        status_page,
        reverse("admin:instances_issue_change", args=[world.issue.pk]),
        reverse("admin:replicas_syncevent_change", args=[stored["event"].pk]),
    ):
        assert url in shown, url


def test_every_json_column_reads_with_the_scrubbing_decoder():
    """A JSON column added later without it would break pages again: each must use exalate_node's field."""
    from django.apps import apps
    from django.db import models

    from exalate_node.fields import JSONField

    plain = [
        f"{model._meta.label}.{field.name}"
        for model in apps.get_models()
        if model._meta.app_label in ("exalate_node", "instances", "connections", "syncrules", "replicas")
        for field in model._meta.get_fields()
        if isinstance(field, models.JSONField) and not isinstance(field, JSONField)
    ]
    assert plain == []


@pytest.mark.parametrize(
    "stored,read",
    [
        ('["a\\ud800"]', ["a\ufffd"]),
        ('["\\udc00"]', ["\ufffd"]),
        ('["\\ud83d\\ude00"]', ["\U0001f600"]),  # a pair: one valid character (how SQLite stores emoji)
        ('["\\ud83d\\ude00\\udc00"]', ["\U0001f600\ufffd"]),
        ('["\\ud800\\ud800\\udc00"]', ["\ufffd\U00010000"]),
        ('["\\ud83d", "\\ude00"]', ["\ufffd", "\ufffd"]),  # halves in two strings are not a pair
        ('{"\\ud800": 1}', {"\ufffd": 1}),
        ('["\\\\ud800"]', ["\\ud800"]),  # an escaped backslash, then the letters: plain text
    ],
)
def test_the_decoder_replaces_lone_surrogates_and_keeps_pairs(stored, read):
    from exalate_node.text import ScrubbingJSONDecoder

    assert json.loads(stored, cls=ScrubbingJSONDecoder) == read
