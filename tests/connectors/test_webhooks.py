"""The webhook intake view (``instances.webhooks``) with the GitHub and Jira connectors and their fakes.

Facts relied on: see the docstrings of ``test_github.py`` and ``test_jira.py`` (delivery headers, signatures).
"""

from __future__ import annotations

import json

import pytest
from django.test import Client

from instances.connectors import github as github_module
from instances.connectors import jira as jira_module
from instances.models import Instance
from tests.connectors import test_github, test_jira
from tests.connectors.fakes.github import FakeGitHub
from tests.connectors.fakes.jira import FakeJira
from tests.connectors.fakes.support import FakeClock, wired

SECRET = "s3cret"

pytestmark = [pytest.mark.urls("instances.webhook_urls"), pytest.mark.django_db(transaction=True)]


def post(client: Client, url: str, headers: dict[str, str], body: bytes):  # type: ignore[no-untyped-def]
    extra = {k: v for k, v in headers.items() if k.lower() != "content-type"}
    return client.post(url, data=body, content_type="application/json", headers=extra)


def with_secret(instance: Instance, **extra: str) -> Instance:
    creds = json.loads(instance.credentials)
    instance.credentials = json.dumps({**creds, "webhook_secret": SECRET, **extra})
    instance.save()
    return instance


@pytest.fixture
def synced_github():  # type: ignore[no-untyped-def]
    """A GitHub instance (on the fake) synced with a built-in project; one issue exalated from GitHub."""
    from connections.services import connection_create_local
    from instances.tracker import services
    from replicas import pipeline

    github_module.reset_memory()
    fake = FakeGitHub()
    with wired(fake, FakeClock()):
        desk = Instance.objects.create(name="Support desk", tracker_type="builtin")
        project = services.project_create(instance=desk, key="SUP", name="Support")
        gh = with_secret(test_github.make_instance())
        _a, from_gh = connection_create_local(name="Desk ⇄ GitHub", instance_a=desk, instance_b=gh)
        pipeline.META_CACHE.clear()
        fake.add_issue("Keyboard missing")
        pipeline.exalate(connection=from_gh, key="octo/widgets#1")
        yield fake, gh, project


def test_a_signed_github_delivery_syncs_the_change(synced_github) -> None:  # type: ignore[no-untyped-def]
    fake, gh, project = synced_github
    client = Client()
    fake.edit_issue(1, title="Keyboard found")
    headers, body = fake.webhook("issues", "edited", 1, secret=SECRET, delivery="d-1")
    response = post(client, f"/github/{gh.uid}/", headers, body)
    assert (response.status_code, response.json()) == (202, {"accepted": 1})
    assert project.issues.get().summary == "Keyboard found"
    again = post(client, f"/github/{gh.uid}/", headers, body)  # redelivery
    assert (again.status_code, again.json()) == (202, {"accepted": 0})


def test_github_refusals(synced_github) -> None:  # type: ignore[no-untyped-def]
    fake, gh, _project = synced_github
    client = Client()
    headers, body = fake.webhook("issues", "edited", 1, secret="wrong")
    assert post(client, f"/github/{gh.uid}/", headers, body).status_code == 401
    assert post(client, "/github/no-such-uid/", headers, body).status_code == 404
    assert post(client, f"/jira/{gh.uid}/", headers, body).status_code == 404  # wrong tracker type
    assert client.get(f"/github/{gh.uid}/").status_code == 405
    gh.credentials = json.dumps({"token": "x"})
    gh.save()
    headers, body = fake.webhook("issues", "edited", 1, secret=SECRET)
    response = post(client, f"/github/{gh.uid}/", headers, body)
    assert response.status_code == 409 and "webhook_secret" in response.json()["detail"]


def test_jira_delivery_signed_or_with_the_secret_in_the_url() -> None:
    from connections.services import connection_create_local
    from instances.tracker import services
    from replicas import pipeline

    jira_module.reset_memory()
    fake = FakeJira()
    with wired(fake, FakeClock()):
        desk = Instance.objects.create(name="Support desk", tracker_type="builtin")
        project = services.project_create(instance=desk, key="DESK", name="Desk")
        jira = with_secret(test_jira.make_instance())
        _a, from_jira = connection_create_local(name="Desk ⇄ Jira", instance_a=desk, instance_b=jira)
        pipeline.META_CACHE.clear()
        fake.add_issue("Keyboard missing")
        pipeline.exalate(connection=from_jira, key="SUP-1")
        client = Client()

        fake.edit("SUP-1", summary="Keyboard found")
        headers, body = fake.webhook("jira:issue_updated", "SUP-1", secret=SECRET)
        assert post(client, f"/jira/{jira.uid}/", headers, body).status_code == 202
        assert project.issues.get().summary == "Keyboard found"

        fake.edit("SUP-1", summary="Keyboard found again")
        headers, body = fake.webhook("jira:issue_updated", "SUP-1")  # unsigned
        assert post(client, f"/jira/{jira.uid}/", headers, body).status_code == 401
        headers, body = fake.webhook("jira:issue_updated", "SUP-1")
        assert post(client, f"/jira/{jira.uid}/?secret={SECRET}", headers, body).status_code == 202
        assert project.issues.get().summary == "Keyboard found again"
