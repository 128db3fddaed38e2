"""A poll that finds nothing costs the tracker exactly one request, for every polled tracker (issue #18).

Polling runs every few seconds, so its idle cost is what a node costs a tracker most of the day. Each
tracker's test double counts the requests it receives; the poll is the real one (``poll_instance``: the
connector's ``search_updated_since``, the outbox, the cursor). Redmine, which has no double, is held to the
same against a real Redmine in ``tests/connectors/test_redmine_real.py``.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import pytest

from instances import polling
from instances.connectors import get_connector
from instances.models import Instance

pytestmark = pytest.mark.django_db


@dataclass
class Tracker:
    instance: Instance
    requests: Callable[[], int]  # requests the tracker has received so far
    person_edit: Callable[[Any], None]  # a person changes the item (an ItemRef) in the tracker
    later: Callable[[float], None]  # the tracker's clock moves on


def _instance(tracker_type: str, url: str, credentials: dict[str, Any], settings: dict[str, Any]) -> Instance:
    return Instance.objects.create(
        name=f"Polled {tracker_type}",
        tracker_type=tracker_type,
        url=url,
        credentials=json.dumps(credentials),
        settings={"rate_limit_per_s": 1000, **settings},
    )


@contextmanager
def github() -> Iterator[Tracker]:
    from instances.connectors.github import reset_memory
    from tests.connectors.fakes.github import API, TOKEN, FakeGitHub
    from tests.connectors.fakes.support import FakeClock, wired

    reset_memory()
    fake, clock = FakeGitHub(), FakeClock()
    with wired(fake, clock):
        yield Tracker(
            _instance("github", API, {"token": TOKEN}, {"repo": "octo/widgets"}),
            lambda: len(fake.calls),
            lambda ref: fake.edit_issue(int(ref.id), title="changed by a person"),
            lambda s: setattr(clock, "now", clock.now + s),
        )


@contextmanager
def jira() -> Iterator[Tracker]:
    from instances.connectors.jira import reset_memory
    from tests.connectors.fakes.jira import API_TOKEN, EMAIL, SITE, FakeJira
    from tests.connectors.fakes.support import FakeClock, wired

    reset_memory()
    fake, clock = FakeJira(), FakeClock()
    with wired(fake, clock):
        yield Tracker(
            _instance("jira", SITE, {"email": EMAIL, "api_token": API_TOKEN}, {"project": "SUP"}),
            lambda: len(fake.calls),
            lambda ref: fake.edit(ref.key, summary="changed by a person"),
            lambda s: setattr(clock, "now", clock.now + s),
        )


def _server(
    cls: type,
    tracker_type: str,
    url: Callable[[Any], str],
    creds: Callable[[Any], dict],
    settings: Callable[[Any], dict],
    edit: Callable[[Any, Any], None],
):  # type: ignore[no-untyped-def]
    @contextmanager
    def make() -> Iterator[Tracker]:
        from tests.connectors2.conftest import wire
        from tests.connectors2.fakes.base import FakeClock

        server = cls(FakeClock())
        with wire(server):
            yield Tracker(
                _instance(tracker_type, url(server), creds(server), settings(server)),
                lambda: len(server.calls),
                lambda ref: edit(server, ref),
                server.clock.advance,
            )

    return make


def _azure():  # type: ignore[no-untyped-def]
    from tests.connectors2.fakes.azure import FakeAzureDevOps

    return _server(
        FakeAzureDevOps,
        "azure",
        lambda s: s.base_url,
        lambda s: {"pat": s.pat},
        lambda s: {"project": s.project},
        lambda s, ref: s.human_edit(int(ref.id), **{"System.Title": "changed by a person"}),
    )()


def _gitlab():  # type: ignore[no-untyped-def]
    from tests.connectors2.fakes.gitlab import FakeGitLab

    return _server(
        FakeGitLab,
        "gitlab",
        lambda s: s.host,
        lambda s: {"token": s.token},
        lambda s: {"project": s.project_path},
        lambda s, ref: s.human_edit(int(ref.id), title="changed by a person"),
    )()


def _salesforce():  # type: ignore[no-untyped-def]
    from instances.connectors import salesforce as sf
    from tests.connectors2.fakes.salesforce import FakeSalesforce

    sf._tokens.clear()
    return _server(
        FakeSalesforce,
        "salesforce",
        lambda s: s.host,
        lambda s: {"client_id": s.client_id, "client_secret": s.client_secret},
        lambda s: {},
        lambda s, ref: s.human_update(ref.id, Subject="changed by a person"),
    )()


def _servicenow():  # type: ignore[no-untyped-def]
    from tests.connectors2.fakes.servicenow import FakeServiceNow

    return _server(
        FakeServiceNow,
        "servicenow",
        lambda s: s.host,
        lambda s: {"username": s.username, "password": s.password},
        lambda s: {},
        lambda s, ref: s.human_update(ref.id, short_description="changed by a person"),
    )()


def _zendesk():  # type: ignore[no-untyped-def]
    from tests.connectors2.fakes.zendesk import FakeZendesk

    return _server(
        FakeZendesk,
        "zendesk",
        lambda s: s.host,
        lambda s: {"email": s.email, "api_token": s.api_token},
        lambda s: {},
        lambda s, ref: s.human_update(int(ref.id), subject="changed by a person"),
    )()


TRACKERS = {
    "github": github,
    "jira": jira,
    "azure": _azure,
    "gitlab": _gitlab,
    "salesforce": _salesforce,
    "servicenow": _servicenow,
    "zendesk": _zendesk,
}


def poll_cost(tracker: Tracker) -> tuple[int, int]:
    """(items recorded, requests the tracker received) for one poll."""
    before = tracker.requests()
    found = polling.poll_instance(tracker.instance.pk)
    return found, tracker.requests() - before


@pytest.mark.parametrize("name", sorted(TRACKERS))
def test_a_poll_that_finds_nothing_costs_one_request(name: str) -> None:
    with TRACKERS[name]() as tracker:
        ref = get_connector(tracker.instance).create_item({"summary": "Printer on fire"})
        tracker.later(70)  # Zendesk's export only serves times more than a minute old
        assert poll_cost(tracker)[0] == 1  # the new item
        # Nothing changed since: the poll's overlap window still holds the item, and it is not returned
        # again. Each of these polls is one request, however long the tracker stays idle.
        tracker.later(1)
        poll_cost(tracker)  # per-process caches warm up here (Jira: the API user's time zone)
        for seconds in (1, 10, 120):
            tracker.later(seconds)
            assert poll_cost(tracker) == (0, 1)
        # A person's edit is found; then polls are one request again.
        tracker.person_edit(ref)
        tracker.later(70)
        assert poll_cost(tracker)[0] == 1
        tracker.later(2)
        for _ in range(3):
            tracker.later(2)
            assert poll_cost(tracker) == (0, 1)
