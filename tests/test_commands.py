"""Management commands a shell user relies on."""

from __future__ import annotations

from io import StringIO

import pytest
from django.core.management import CommandError, call_command
from django.db import connection

from instances.models import Instance

pytestmark = pytest.mark.django_db


def _raw_credentials(pk: int) -> str:
    with connection.cursor() as cur:
        cur.execute("SELECT credentials FROM instances_instance WHERE id = %s", [pk])
        return cur.fetchone()[0]


def test_rotate_secrets_re_encrypts_under_the_new_key(settings):
    from exalate_node.secrets_at_rest import get_box

    settings.SECRETS_KEYS = ["old-passphrase-0123456789"]
    inst = Instance.objects.create(name="GH", tracker_type="github", credentials='{"token": "t0k"}')
    old_token = _raw_credentials(inst.pk)
    settings.SECRETS_KEYS = ["new-passphrase-0123456789", "old-passphrase-0123456789"]
    out = StringIO()
    call_command("rotate_secrets", stdout=out)
    assert "1 row(s) re-encrypted" in out.getvalue()
    new_token = _raw_credentials(inst.pk)
    assert new_token != old_token and get_box().is_current(new_token)
    # The old key can now go: the value still reads back.
    settings.SECRETS_KEYS = ["new-passphrase-0123456789"]
    assert Instance.objects.get(pk=inst.pk).credentials == '{"token": "t0k"}'


def test_create_api_token_only_for_staff(admin_user, plain_user):
    out = StringIO()
    call_command("create_api_token", "alice", stdout=out, stderr=StringIO())
    assert out.getvalue().strip().startswith("exn_") and len(out.getvalue().strip()) == 47
    with pytest.raises(CommandError, match="not staff"):
        call_command("create_api_token", "bob")


def test_sync_status_of_an_unsynced_item_says_so(builtin):
    with pytest.raises(CommandError, match="not synced on any connection"):
        call_command("sync_status", "SUP-1")


def test_bootstrap_demo_creates_a_synced_demo_and_an_admin(settings, tmp_path, transactional_db):
    settings.VAR_DIR = tmp_path
    out = StringIO()
    call_command("bootstrap_demo", stdout=out)
    call_command("bootstrap_demo", stdout=StringIO())  # idempotent
    password = (tmp_path / "admin-password").read_text().strip()
    assert f"with password '{password}'" in out.getvalue()
    from django.contrib.auth import authenticate

    assert authenticate(username="admin", password=password).is_superuser
    from instances.models import Issue

    assert sorted(Issue.objects.values_list("key", flat=True)) == ["ENG-1", "SUP-1"]
    status = StringIO()
    call_command("sync_status", "SUP-1", stdout=status)
    assert "synchronized; remote ENG-1" in status.getvalue()
