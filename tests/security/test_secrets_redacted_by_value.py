"""Secrets are redacted by value, wherever the text came from (issue #17, part 5).

Instances of Redmine (a real HTTP server), GitHub and GitLab (the project's fakes) hold sentinel
credentials the trackers refuse; every 401 and 404 answer echoes the request's headers back, in the body
and in the headers. A node-to-node connection's peer quotes the connection key in its error. The node then
polls, syncs, dry-runs and exalates, and the sentinels are searched for in every log record (all levels),
every row of every table, the API's answers and the UI's pages: none may appear.
"""

from __future__ import annotations

import io
import json
import logging
import uuid
from dataclasses import dataclass, field
from typing import Any

import pytest
import requests
from django.db import connection as db
from requests.adapters import BaseAdapter
from rest_framework.test import APIClient

from connections.models import Connection, OutboundMessage
from connections.services import connection_create_local
from instances.connectors._common import use_transport
from instances.models import Instance
from instances.tracker import services
from replicas import pipeline
from replicas.models import SyncError, SyncEvent
from tests.connectors.fakes.github import API, FakeGitHub
from tests.connectors.fakes.support import FakeClock
from tests.connectors2.fakes.base import FakeAdapter
from tests.connectors2.fakes.gitlab import FakeGitLab
from tests.hostile_http import HostileServer, Request

REDMINE_KEY = "rm-SENTINEL-4c1d9a7e55"
GITHUB_TOKEN = "ghp-SENTINEL-8b2f6e0a77"
GITLAB_TOKEN = "glpat-SENTINEL-3e9c7b1d99"
CONNECTION_KEY = "5e" * 32  # hex, as connection keys are
SENTINELS = [REDMINE_KEY, GITHUB_TOKEN, GITLAB_TOKEN, CONNECTION_KEY]


def _echo_body(headers: dict[str, str], status: int) -> bytes:
    return json.dumps(
        {
            "message": f"{status}: request headers were {headers}",
            "error": f"{status} with {headers}",
            "errors": [f"{name}: {value}" for name, value in headers.items()],
        }
    ).encode()


class Echo(BaseAdapter):
    """Wraps a fake tracker: its 401 and 404 answers echo the request's headers, in the body and in the
    headers (the worst case for logs and stored errors). ``echoed`` counts them."""

    def __init__(self, inner: BaseAdapter) -> None:
        super().__init__()
        self.inner, self.echoed = inner, 0

    def send(self, request: requests.PreparedRequest, **kwargs: Any) -> requests.Response:  # type: ignore[override]
        response = self.inner.send(request, **kwargs)
        if response.status_code in (401, 404):
            headers = {name: str(value) for name, value in request.headers.items()}
            body = _echo_body(headers, response.status_code)
            response.raw, response._content, response._content_consumed = io.BytesIO(body), body, True
            response.headers["Content-Length"] = str(len(body))
            response.headers.update({f"X-Echo-{name}": value for name, value in headers.items()})
            self.echoed += 1
        return response

    def close(self) -> None:
        self.inner.close()


def redmine_echo(server: HostileServer, conn: Any, request: Request) -> None:
    """Redmine refusing the key (401) or not finding the issue (404), echoing the request's headers."""
    headers = {}
    for line in request.head.split(b"\r\n")[1:]:
        name, _, value = line.decode("latin-1").partition(":")
        headers[name.strip()] = value.strip()
    status = 401 if "issues.json" in request.line or "users" in request.line else 404
    body = _echo_body(headers, status)
    echo = "".join(f"X-Echo-{name}: {value}\r\n" for name, value in headers.items())
    head = (
        f"HTTP/1.1 {status} Refused\r\nContent-Type: application/json\r\nContent-Length: {len(body)}\r\n"
        f'WWW-Authenticate: Key realm="{headers.get("X-Redmine-API-Key", "")}"\r\n{echo}\r\n'
    ).encode()
    server.send(conn, head + body)


def peer_quoting_the_key(server: HostileServer, conn: Any, request: Request) -> None:
    """A peer node (it knows the key: both sides derive it) that quotes it in its error detail."""
    body = json.dumps({"detail": f"batch refused: connection key {CONNECTION_KEY} is not valid"}).encode()
    server.send(
        conn,
        b"HTTP/1.1 400 Bad Request\r\nContent-Type: application/json\r\nContent-Length: "
        + str(len(body)).encode()
        + f"\r\nX-Echo-Key: {CONNECTION_KEY}\r\n\r\n".encode()
        + body,
    )


@dataclass
class Leaky:
    builtin: Instance
    trackers: dict[str, Instance]
    sides: dict[str, tuple[Connection, Connection]]
    peer: Connection
    answers: dict[str, bytes] = field(default_factory=dict)  # what the API and the UI answered while driving
    echoed: int = 0


@pytest.fixture
def leaky(db, settings, admin_user, caplog, django_capture_on_commit_callbacks):  # type: ignore[no-untyped-def]
    """Everything driven once, with the logs captured at DEBUG: see the module docstring."""
    settings.TASKS_INLINE = True
    caplog.set_level(logging.DEBUG)
    redmine_server = HostileServer(redmine_echo)
    peer_server = HostileServer(peer_quoting_the_key)
    github, gitlab = FakeGitHub(), FakeGitLab()
    github_echo, gitlab_echo = Echo(github), Echo(FakeAdapter(gitlab))

    def session_for(tracker_type: str) -> requests.Session:
        session = requests.Session()
        if tracker_type == "github":
            session.mount(API, github_echo)
        elif tracker_type == "gitlab":
            session.mount(FakeGitLab.host, gitlab_echo)
        return session

    clock = FakeClock()
    try:
        with use_transport(session_for, sleep=clock.sleep, clock=clock.monotonic, wall_clock=clock.time):
            yield _drive(
                admin_user,
                redmine_server,
                peer_server,
                github_echo,
                gitlab_echo,
                django_capture_on_commit_callbacks,
            )
    finally:
        redmine_server.close()
        peer_server.close()


def _drive(admin_user, redmine_server, peer_server, github_echo, gitlab_echo, commits) -> Leaky:  # type: ignore[no-untyped-def]
    """``commits``: pytest-django's ``django_capture_on_commit_callbacks``; a step's tasks run at its end."""
    from connections import tasks
    from instances.polling import poll_instance

    builtin = Instance.objects.create(name="Support desk", tracker_type="builtin")
    project = services.project_create(instance=builtin, key="SUP", name="Support")
    trackers = {
        "redmine": Instance.objects.create(
            name="Redmine",
            tracker_type="redmine",
            url=redmine_server.url,
            credentials=json.dumps({"api_key": REDMINE_KEY}),
            settings={"project": "sup", "rate_limit_per_s": 1000},
        ),
        "github": Instance.objects.create(
            name="GitHub",
            tracker_type="github",
            url=API,
            credentials=json.dumps({"token": GITHUB_TOKEN}),
            settings={"repo": "octo/widgets", "rate_limit_per_s": 1000},
        ),
        "gitlab": Instance.objects.create(
            name="GitLab",
            tracker_type="gitlab",
            url=FakeGitLab.host,
            credentials=json.dumps({"token": GITLAB_TOKEN}),
            settings={"project": FakeGitLab.project_path, "rate_limit_per_s": 1000},
        ),
    }
    sides = {
        kind: connection_create_local(name=f"Support ⇄ {kind}", instance_a=builtin, instance_b=instance)
        for kind, instance in trackers.items()
    }
    pipeline.META_CACHE.clear()
    issue = services.issue_create(project=project, actor="anna@example.com", summary="Printer on fire")
    peer = Connection.objects.create(
        name="To the far node",
        status=Connection.Status.ACTIVE,
        local_instance=builtin,
        remote_node_url=peer_server.url,
        peer_uid=uuid.uuid4(),
        key=CONNECTION_KEY,
    )
    leaky = Leaky(builtin, trackers, sides, peer)
    api = APIClient(raise_request_exception=False)
    api.force_authenticate(admin_user)
    ui = APIClient(raise_request_exception=False)
    ui.force_login(admin_user)

    for instance in trackers.values():  # polling
        with commits(execute=True):
            poll_instance(instance.pk)
    for kind, (to_tracker, from_tracker) in sides.items():
        with commits(execute=True):
            pipeline.exalate(connection=to_tracker, key=issue.key)  # a sync: the create is refused (401)
        for path, body in (
            (f"/api/v1/connections/{from_tracker.pk}/rules/dry-run/", {"direction": "outgoing", "key": "#1"}),
            (f"/api/v1/connections/{from_tracker.pk}/exalate/", {"key": "#7"}),
        ):
            leaky.answers[f"POST {path}"] = api.post(path, body, format="json").content
        page = ui.post(f"/ui/connections/{from_tracker.pk}/exalate/", {"key": "#7"}, follow=True)
        leaky.answers[f"UI exalate on {kind}"] = page.content
        status = f"/ui/status/?instance={trackers[kind].pk}&key=%237"
        leaky.answers[status] = ui.get(status).content
    OutboundMessage.objects.create(connection=peer, kind="event", payload={"type": "event"}, size=15)
    tasks.deliver(peer.pk)
    leaky.echoed = (
        github_echo.echoed + gitlab_echo.echoed + len(redmine_server.requests) + len(peer_server.requests)
    )
    return leaky


def _assert_clean(text: str, where: str) -> None:
    for secret in SENTINELS:
        assert secret not in text, f"a secret ({secret[:8]}…) appears in {where}"


def test_the_trackers_and_the_peer_really_echoed_the_secrets(leaky):
    """The other tests are meaningful: every tracker was called and refused, errors were recorded."""
    assert leaky.echoed >= 10
    assert SyncError.objects.filter(connection__in=[s[1] for s in leaky.sides.values()]).count() >= 3
    leaky.peer.refresh_from_db()
    assert "batch refused: connection key *** is not valid" in leaky.peer.status_message


def test_no_log_record_holds_a_secret(leaky, caplog):
    records = caplog.get_records("setup") + caplog.get_records("call")  # the fixture drove the node
    assert len(records) > 20
    formatter = logging.Formatter("%(message)s")
    for record in records:
        _assert_clean(formatter.format(record), f"the log record {record.name}:{record.lineno}")
        _assert_clean(str(record.exc_text or ""), f"the traceback of {record.name}:{record.lineno}")


def test_no_stored_text_holds_a_secret(leaky):
    tables = db.introspection.table_names()
    stored = 0
    with db.cursor() as cursor:
        for table in tables:
            cursor.execute(f'SELECT * FROM "{table}"')  # noqa: S608 - table names from the schema
            rows = cursor.fetchall()
            stored += len(rows)
            _assert_clean(repr(rows), f"the table {table}")
    assert stored > 30
    messages = " ".join(SyncError.objects.values_list("message", flat=True))
    assert "***" in messages  # the echoed values were there, and were redacted


def test_no_api_answer_holds_a_secret(leaky, admin_user):
    api = APIClient(raise_request_exception=False)  # a 500 (issue #17 part 6) is searched like the rest
    api.force_authenticate(admin_user)
    paths = ["/api/v1/errors/", "/api/v1/events/", "/api/v1/instances/", "/api/v1/connections/"]
    paths += [f"/api/v1/events/{pk}/" for pk in SyncEvent.objects.values_list("pk", flat=True)]
    paths += [f"/api/v1/instances/{i.pk}/" for i in Instance.objects.all()]
    paths += [f"/api/v1/connections/{c.pk}/" for c in Connection.objects.all()]
    paths += [f"/api/v1/entities/{leaky.builtin.pk}/SUP-1/sync-status/"]
    paths += [f"/api/v1/entities/{i.pk}/%231/sync-status/" for i in leaky.trackers.values()]
    answered = 0
    for path in paths:
        response = api.get(path)
        answered += response.status_code == 200
        _assert_clean(response.content.decode("utf-8", "replace"), path)
    assert answered >= 12
    for where, content in leaky.answers.items():
        _assert_clean(content.decode("utf-8", "replace"), where)


def test_no_page_holds_a_secret(leaky, admin_user, client):
    client.force_login(admin_user)
    pages = ["/ui/", "/ui/errors/", "/ui/errors/?show=all", "/ui/queue/", "/ui/connections/"]
    pages += [f"/ui/connections/{c.pk}/" for c in Connection.objects.all()]
    pages += [f"/ui/connections/{c.pk}/items/" for c in Connection.objects.all()]
    pages += [f"/ui/status/?instance={leaky.builtin.pk}&key=SUP-1"]
    pages += [
        f"/admin/replicas/syncerror/{pk}/change/" for pk in SyncError.objects.values_list("pk", flat=True)
    ]
    pages += [
        f"/admin/replicas/syncevent/{pk}/change/" for pk in SyncEvent.objects.values_list("pk", flat=True)
    ]
    rendered = 0
    for url in pages:
        response = client.get(url)
        assert response.status_code < 500, url
        rendered += response.status_code == 200
        _assert_clean(response.content.decode("utf-8", "replace"), url)
    assert rendered >= 10


# --- the registry ------------------------------------------------------------------------------------------


def test_credentials_are_redacted_with_their_basic_auth_forms_but_not_account_names(db):
    import base64

    from exalate_node.redaction import redact

    instance = Instance.objects.create(
        name="Zendesk",
        tracker_type="zendesk",
        credentials=json.dumps({"email": "bot@example.com", "api_token": "zd-SENTINEL-77aa"}),
    )
    basic = base64.b64encode(b"bot@example.com/token:zd-SENTINEL-77aa").decode()
    text = f"401 for bot@example.com: Authorization: Basic {basic}; token zd-SENTINEL-77aa"
    assert instance.pk and redact(text) == "401 for bot@example.com: Authorization: Basic ***; token ***"


def test_a_secret_is_known_once_read_from_the_database_by_any_process(db):
    from exalate_node.redaction import redact, registry

    instance = Instance.objects.create(
        name="R", tracker_type="redmine", credentials='{"api_key": "abc-SENTINEL-1"}'
    )
    registry.clear()  # as in another process that has not seen it yet
    assert redact("key abc-SENTINEL-1") == "key abc-SENTINEL-1"
    Instance.objects.get(pk=instance.pk)  # loading decrypts it: the registry learns it
    assert redact("key abc-SENTINEL-1") == "key ***"


def test_values_too_short_to_be_secrets_are_not_redacted(db):
    from exalate_node.redaction import redact

    Instance.objects.create(
        name="R", tracker_type="redmine", credentials='{"pin": "12", "api_key": "abcdefgh"}'
    )
    assert redact("pin 12, key abcdefgh, ab12 1212") == "pin 12, key ***, ab12 1212"
