"""The connection wizard: initiate shows the code once with a Copy button; accept previews the code first
and explains a bad, expired or used code."""

from __future__ import annotations

import time

import pytest
from django.urls import reverse

from connections.invitation import Invitation, new_secret, seal_invitation
from connections.models import Connection

pytestmark = pytest.mark.django_db


def _code(**overrides):  # type: ignore[no-untyped-def]
    fields = dict(
        secret=new_secret(),
        connection_type="script",
        connection_name="Support ⇄ Dev",
        invitation_id="0b7f3c1e-2a4d-4c55-9a1c-111111111111",
        initiator_node="Acme node",
        initiator_user="carol",
        app_version="0.1.0",
        features=("replica-1",),
        tracker_type="jira",
        tracker_version="cloud",
        tracker_url="https://acme.atlassian.net",
        node_url="https://sync.acme.example",
        instance_uid="f" * 32,
        instance_name="Acme Jira",
        expires_at=int(time.time()) + 3600,
    )
    fields.update(overrides)
    return seal_invitation(Invitation(**fields))


def test_initiate_ends_on_the_code_with_a_copy_button(staff, builtin):
    response = staff.post(
        reverse("ui:initiate"), {"name": "To Acme", "local_instance": builtin.instance_id, "type": "script"}
    )
    body = response.content.decode()
    assert response.status_code == 200
    connection = Connection.objects.get()
    assert connection.status == "pending"
    assert 'id="invitation-code"' in body and "EXN1-" in body and 'data-copy="#invitation-code"' in body
    assert "What next" in body


def test_accept_previews_the_code_before_connecting(staff, builtin):
    response = staff.post(reverse("ui:accept"), {"code": _code(), "local_instance": builtin.instance_id})
    body = response.content.decode()
    assert response.status_code == 200
    assert "You are about to connect to" in body
    for text in ("Acme node", "https://sync.acme.example", "Acme Jira", "Support ⇄ Dev", 'name="confirm"'):
        assert text in body, text
    assert not Connection.objects.exists()  # a preview changes nothing


def test_a_garbled_code_says_what_to_do(staff, builtin):
    code = _code()
    other = "y" if code[40] == "x" else "x"  # a character that differs (with "x" always, 1 code in 64 passed)
    response = staff.post(
        reverse("ui:accept"), {"code": code[:40] + other + code[41:], "local_instance": builtin.instance_id}
    )
    body = response.content.decode()
    assert response.status_code == 400
    assert "Copy the whole code again" in body or "copy" in body.lower()
    assert "You are about to connect to" not in body


def test_an_expired_code_says_when_and_what_to_do(staff, builtin):
    response = staff.post(
        reverse("ui:accept"),
        {"code": _code(expires_at=int(time.time()) - 60), "local_instance": builtin.instance_id},
    )
    body = response.content.decode()
    assert response.status_code == 400
    assert "expired" in body and "Ask the other node" in body


def test_a_used_code_is_refused_with_a_clear_message(staff, builtin, monkeypatch):
    from connections import handshake

    def used(**kwargs):  # type: ignore[no-untyped-def]
        raise handshake.HandshakeError("used", "This invitation code was already used. Ask for a new one.")

    monkeypatch.setattr(handshake, "connection_accept", used)
    response = staff.post(
        reverse("ui:accept"), {"code": _code(), "local_instance": builtin.instance_id, "confirm": "1"}
    )
    assert response.status_code == 400
    assert "already used" in response.content.decode()


def test_a_code_of_this_node_warns_of_a_loop_back(staff, two_trackers):
    from connections.handshake import connection_initiate

    sup, eng = two_trackers
    _connection, code = connection_initiate(name="Loop", local_instance=sup.instance)
    response = staff.post(reverse("ui:accept"), {"code": code, "local_instance": eng.instance_id})
    body = response.content.decode()
    assert "This code was made by this node." in body and "loop-back" in body
    assert Connection.objects.count() == 1  # nothing accepted


def test_a_used_code_of_this_node_is_refused_at_check_code(staff, two_trackers):
    from django.utils import timezone

    from connections.handshake import connection_initiate

    sup, eng = two_trackers
    connection, code = connection_initiate(name="Loop", local_instance=sup.instance)
    connection.invitations.update(used_at=timezone.now())
    response = staff.post(reverse("ui:accept"), {"code": code, "local_instance": eng.instance_id})
    body = response.content.decode()
    assert response.status_code == 400
    assert "This code was already used" in body and "You are about to connect to" not in body


def test_a_pending_connection_whose_code_expired_says_so(staff, two_trackers):
    from datetime import timedelta

    from django.utils import timezone

    from connections.handshake import connection_initiate

    sup, _eng = two_trackers
    connection, _code = connection_initiate(name="Waiting", local_instance=sup.instance)
    listing = staff.get(reverse("ui:connections")).content.decode()
    assert "waiting for acceptance" in listing and "invitation code expired" not in listing

    connection.invitations.update(expires_at=timezone.now() - timedelta(minutes=1))
    listing = staff.get(reverse("ui:connections")).content.decode()
    assert "invitation code expired" in listing and "waiting for acceptance" not in listing
    detail = staff.get(reverse("ui:connection", args=[connection.pk])).content.decode()
    assert "without being accepted" in detail and "New invitation code" in detail
    assert "is waiting for the other admin" not in detail
