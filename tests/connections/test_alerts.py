"""Alerts: errors opened and cleared reach a real SMTP server (aiosmtpd, run by the test) and a real HTTP
receiver as digests; a burst is one message; nothing is lost when a destination fails; per-connection
recipients override the node's."""

from __future__ import annotations

import hashlib
import hmac
import http.server
import json
import threading
from datetime import timedelta
from email import message_from_bytes
from typing import Any

import pytest
from aiosmtpd.controller import Controller
from django.utils import timezone

from connections import alerts
from connections.models import AlertCursor
from replicas import pipeline
from replicas.models import SyncError
from tests.e2e.conftest import free_port
from tests.replicas.conftest import local_pair  # noqa: F401  (fixture)

pytestmark = pytest.mark.django_db(transaction=True)

SECRET = "alert-signing-secret"


class Mailbox:
    def __init__(self) -> None:
        self.messages: list[Any] = []

    async def handle_DATA(self, server, session, envelope):  # type: ignore[no-untyped-def]  # noqa: N802
        message = message_from_bytes(envelope.content)
        message.recipients = list(envelope.rcpt_tos)
        self.messages.append(message)
        return "250 OK"


@pytest.fixture
def smtp(settings):  # type: ignore[no-untyped-def]
    box = Mailbox()
    controller = Controller(box, hostname="127.0.0.1", port=free_port())
    controller.start()
    settings.EMAIL_BACKEND = "django.core.mail.backends.smtp.EmailBackend"
    settings.EMAIL_HOST, settings.EMAIL_PORT = "127.0.0.1", controller.port
    settings.EMAIL_HOST_USER = settings.EMAIL_HOST_PASSWORD = ""
    settings.EMAIL_USE_TLS = settings.EMAIL_USE_SSL = False
    yield box
    controller.stop()


class Receiver:
    """An incoming-webhook endpoint: records each POST; answers ``status``."""

    def __init__(self) -> None:
        self.posts: list[tuple[dict[str, str], bytes]] = []
        self.status = 200
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                if outer.status == 200:
                    outer.posts.append((dict(self.headers), body))
                self.send_response(outer.status)
                self.send_header("Content-Length", "2")
                self.end_headers()
                self.wfile.write(b"ok")

            def log_message(self, *args: Any) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_port}/hooks/T0/B0/secret-part"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def payloads(self) -> list[dict[str, Any]]:
        return [json.loads(body) for _, body in self.posts]


@pytest.fixture
def receiver(settings):  # type: ignore[no-untyped-def]
    hook = Receiver()
    settings.ALERT_WEBHOOK_URL, settings.ALERT_WEBHOOK_SECRET = hook.url, SECRET
    yield hook
    hook.server.shutdown()


@pytest.fixture
def alerting(settings, smtp, receiver):  # type: ignore[no-untyped-def]
    settings.ALERT_EMAILS = ["ops@example.com"]
    settings.ALERT_GATHER_SECONDS, settings.ALERT_DIGEST_SECONDS = 10, 300
    start = timezone.now()
    assert alerts.send_due(start) == []  # the destinations start now: history is not sent
    return start


def _errors(connection, n: int) -> None:  # type: ignore[no-untyped-def]
    SyncError.objects.bulk_create(
        SyncError(impact="entity", connection=connection, message=f"Item {i} failed: the script raised")
        for i in range(n)
    )


def test_a_burst_of_a_thousand_errors_is_one_message_per_destination(local_pair, smtp, receiver, alerting):  # noqa: F811
    a, _ = local_pair
    _errors(a.connection, 1000)
    assert alerts.send_due(alerting + timedelta(seconds=1)) == []  # the burst is still being gathered
    sent = alerts.send_due(alerting + timedelta(seconds=12))
    assert sorted(outcome for _, outcome in sent) == ["sent", "sent"]
    [mail] = smtp.messages
    assert mail.recipients == ["ops@example.com"]
    assert "1000 new sync errors" in mail["Subject"]
    body = mail.get_payload(decode=True).decode()
    assert "Support ⇄ Engineering: Item 0 failed" in body and "... and 990 more" in body
    assert "/ui/errors/" in body
    [(headers, raw)] = receiver.posts
    payload = json.loads(raw)
    assert payload["text"].startswith("[exalate-node ") and payload["exalate"]["opened"] == 1000
    assert len(payload["exalate"]["errors"]) == alerts.SHOWN
    # Signed: the receiver can check the sender with the shared secret.
    mac = hmac.new(SECRET.encode(), headers["X-Exalate-Timestamp"].encode() + b"." + raw, hashlib.sha256)
    assert headers["X-Exalate-Signature"] == f"sha256={mac.hexdigest()}"
    # Nothing new: nothing more, however often the sweeper asks.
    for seconds in (20, 400, 800):
        assert alerts.send_due(alerting + timedelta(seconds=seconds)) == []
    assert len(smtp.messages) == 1 and len(receiver.posts) == 1

    # Cleared: one message says so, once the digest interval has passed since the last one.
    SyncError.objects.update(resolved_at=timezone.now())
    assert alerts.send_due(alerting + timedelta(seconds=100)) == []  # throttled: the last was at 12 s
    alerts.send_due(alerting + timedelta(seconds=12 + 301))
    assert (
        "1000 cleared" in smtp.messages[-1]["Subject"]
        and receiver.payloads()[-1]["exalate"]["cleared"] == 1000
    )


def test_a_failed_send_loses_nothing_and_is_tried_again(local_pair, smtp, receiver, alerting):  # noqa: F811
    a, _ = local_pair
    receiver.status = 500
    _errors(a.connection, 3)
    sent = dict(alerts.send_due(alerting + timedelta(seconds=11)))
    assert sent["e-mail to ops@example.com"] == "sent"
    assert sent["the alert webhook"].startswith("failed: BadAnswer: The alert webhook answered 500")
    cursor = AlertCursor.objects.get(destination__startswith="webhook:")
    assert cursor.failures == 1 and "500" in cursor.last_error
    # The webhook's URL is a credential: it is in no cursor, no outcome and no log line.
    assert receiver.url not in json.dumps(list(AlertCursor.objects.values()), default=str) + json.dumps(sent)

    _errors(a.connection, 2)  # more came while it was failing
    receiver.status = 200
    assert alerts.send_due(alerting + timedelta(seconds=100)) == []  # waits for the digest interval
    alerts.send_due(alerting + timedelta(seconds=11 + 301))
    [payload] = receiver.payloads()
    assert payload["exalate"]["opened"] == 5  # the 3 it could not send, and the 2 since
    assert "2 new sync errors" in smtp.messages[-1]["Subject"]  # e-mail had the first 3 already
    assert AlertCursor.objects.get(pk=cursor.pk).failures == 0


def test_connections_can_send_their_alerts_elsewhere(local_pair, smtp, receiver, alerting):  # noqa: F811
    a, b = local_pair
    b.connection.alert_emails = "eng-lead@example.com, eng@example.com"
    b.connection.save()
    _errors(a.connection, 1)
    _errors(b.connection, 2)
    SyncError.objects.create(impact="node", message="The node's clock is off")  # no connection: the node's
    alerts.send_due(alerting + timedelta(seconds=1))  # the new destination starts now
    _errors(b.connection, 1)
    alerts.send_due(alerting + timedelta(seconds=30))
    by_recipients = {tuple(m.recipients): m for m in smtp.messages}
    assert set(by_recipients) == {("ops@example.com",), ("eng-lead@example.com", "eng@example.com")}
    assert "2 new sync errors" in by_recipients[("ops@example.com",)]["Subject"]  # a's and the node's
    assert "1 new sync error" in by_recipients[("eng-lead@example.com", "eng@example.com")]["Subject"]
    # The node's webhook still gets everyone's (b set only e-mail).
    assert sum(p["exalate"]["opened"] for p in receiver.payloads()) == 5


def test_a_real_sync_failure_is_announced_with_its_item(local_pair, smtp, receiver, alerting):  # noqa: F811
    from syncrules.defaults import default_rules
    from syncrules.services import rules_publish

    a, b = local_pair
    rules_publish(connection=b.connection, outgoing=default_rules("builtin")[0], incoming="x = 1 / 0\n")
    issue = a.create("Breaks the script")
    pipeline.exalate(connection=a.connection, key=issue.key)
    error = SyncError.objects.get()
    alerts.send_due(error.created_at + timedelta(seconds=11))
    body = smtp.messages[-1].get_payload(decode=True).decode()
    assert "Support ⇄ Engineering" in body and issue.key in body and "ZeroDivisionError" in body


def test_a_test_alert_reaches_every_destination_and_says_when_one_fails(local_pair, smtp, receiver, alerting):  # noqa: F811
    results = dict(alerts.send_test())
    assert results == {"e-mail to ops@example.com": "sent", "the alert webhook": "sent"}
    assert "Test alert" in smtp.messages[-1]["Subject"] and receiver.payloads()[-1]["exalate"]["test"] is True
    receiver.server.shutdown()
    receiver.server.server_close()
    results = dict(alerts.send_test())
    assert results["the alert webhook"].startswith("failed: ")


def test_recipients_are_checked() -> None:
    assert alerts.parse_emails(" b@example.com; a@example.com,,") == ["a@example.com", "b@example.com"]
    with pytest.raises(ValueError, match="'not-an-address' is not an e-mail address."):
        alerts.parse_emails("a@example.com, not-an-address")
    for bad in ("ftp://hooks.example.com/x", "https://user:pw@hooks.example.com/x", "javascript:alert(1)"):
        with pytest.raises(ValueError):
            alerts.check_webhook_url(bad)
    assert alerts.check_webhook_url(" https://hooks.example.com/T/B ") == "https://hooks.example.com/T/B"


def test_an_admin_sets_a_connections_alerts_and_sends_a_test_through_the_api(
    local_pair,  # noqa: F811
    api,
    smtp,
    receiver,
    settings,
) -> None:  # type: ignore[no-untyped-def]
    a, _ = local_pair
    url = f"/api/v1/connections/{a.connection.pk}/alerts/"
    settings.ALERT_EMAILS, settings.ALERT_WEBHOOK_URL = [], ""
    refused = api.post("/api/v1/alerts/test/")
    assert refused.status_code == 400 and "No alert destination is set" in refused.json()["detail"]

    bad = api.put(url, {"emails": "ops@example.com, nobody"}, format="json")
    assert bad.status_code == 400 and "'nobody' is not an e-mail address." in json.dumps(bad.json())
    bad = api.put(url, {"webhook_url": "file:///etc/passwd"}, format="json")
    assert bad.status_code == 400
    a.connection.refresh_from_db()
    assert (a.connection.alert_emails, a.connection.alert_webhook_url) == ("", "")  # nothing changed

    done = api.put(url, {"emails": "ops@example.com", "webhook_url": receiver.url}, format="json")
    assert done.status_code == 200 and done.json() == {"emails": "ops@example.com", "webhook_set": True}
    assert receiver.url not in api.get(url).content.decode()  # a credential: never shown back
    sent = api.post("/api/v1/alerts/test/")
    assert sent.status_code == 200
    assert {r["destination"]: r["outcome"] for r in sent.json()} == {
        "e-mail to ops@example.com": "sent",
        "the alert webhook": "sent",
    }
    assert smtp.messages and receiver.posts


def test_production_refuses_alert_emails_without_a_mail_server(tmp_path) -> None:  # type: ignore[no-untyped-def]
    from tests.test_settings import _check

    env = {"DEBUG": "false", "SECRET_KEY": "k" * 50, "SECRETS_KEYS": "a-long-passphrase-for-the-at-rest-key"}
    env |= {"NODE_URL": "https://sync.example.com", "ALERT_EMAILS": "ops@example.com"}
    result = _check(env, tmp_path)
    assert result.returncode != 0 and "ALERT_EMAILS is set but EMAIL_URL is not" in result.stderr
    assert _check({**env, "EMAIL_URL": "smtp://mail.example.com:25"}, tmp_path).returncode == 0


def test_an_admin_sends_a_test_alert_from_the_errors_page(client, admin_user, settings) -> None:  # type: ignore[no-untyped-def]
    from django.core import mail

    client.force_login(admin_user)
    settings.ALERT_EMAILS, settings.ALERT_WEBHOOK_URL = [], ""
    page = client.get("/ui/errors/")
    assert "No destination is set" in page.content.decode()
    answer = client.post("/ui/errors/test-alert/", follow=True)
    assert "No alert destination is set" in answer.content.decode()

    settings.ALERT_EMAILS = ["ops@example.com"]
    settings.EMAIL_BACKEND = "django.core.mail.backends.locmem.EmailBackend"
    assert "They go to: e-mail to ops@example.com." in client.get("/ui/errors/").content.decode()
    answer = client.post("/ui/errors/test-alert/", {"next": "/ui/errors/"}, follow=True)
    assert "Test alert sent: e-mail to ops@example.com." in answer.content.decode()
    assert [m.to for m in mail.outbox] == [["ops@example.com"]] and "Test alert" in mail.outbox[0].subject
    assert client.get("/ui/errors/test-alert/").status_code == 405  # a test alert is sent by POST only
