"""How often a tracker is polled (issue #18): every 10 s by default when it has no webhooks, every 2 s for a
minute after activity, every minute as a backstop when webhooks report its changes; an instance's settings
override the defaults, and Zendesk's export limit is never exceeded. ``poll_plan`` is the one decision."""

from __future__ import annotations

import json
from datetime import datetime, timedelta
from typing import Any

import pytest
from django.utils import timezone

from instances import polling
from instances.connectors.base import ItemRef
from instances.models import Instance
from instances.polling import poll_plan

pytestmark = pytest.mark.django_db


def redmine(**settings: Any) -> Instance:
    return Instance.objects.create(
        name="Redmine",
        tracker_type="redmine",
        url="http://127.0.0.1:9/",
        credentials=json.dumps({"api_key": "k" * 40}),
        settings={"project": "sup", **settings},
    )


def polled(instance: Instance, seconds_ago: float, now: datetime) -> Instance:
    instance.polled_at = now - timedelta(seconds=seconds_ago)
    return instance


def test_a_tracker_without_webhooks_is_polled_every_ten_seconds_by_default() -> None:
    now = timezone.now()
    instance = redmine()
    assert poll_plan(instance, now).due  # never polled: now
    plan = poll_plan(polled(instance, 5, now), now)
    assert (plan.due, plan.interval_s, plan.mode) == (False, 10.0, "idle")
    assert plan.next_at == instance.polled_at + timedelta(seconds=10)
    assert poll_plan(polled(instance, 10, now), now).due


def test_the_node_wide_default_comes_from_the_settings(settings) -> None:  # type: ignore[no-untyped-def]
    settings.POLL_INTERVAL_S = 4
    now = timezone.now()
    assert poll_plan(polled(redmine(), 4, now), now).due


def test_an_instance_setting_overrides_the_default_interval() -> None:
    now = timezone.now()
    instance = redmine(poll_interval_s=30)
    assert not poll_plan(polled(instance, 20, now), now).due
    assert poll_plan(polled(instance, 30, now), now).interval_s == 30.0


def test_after_a_poll_finds_changes_the_instance_is_polled_every_two_seconds_for_a_minute(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    instance = redmine()

    class Changed:
        def search_updated_since(self, cursor: str | None, *, limit: int = 100) -> tuple[list, str]:
            return [ItemRef(id="7", key="#7")], "2026-03-01T09:00:00Z"

    monkeypatch.setattr(polling, "get_connector", lambda inst: Changed())
    start = timezone.now()
    assert polling.poll_instance(instance.pk, now=start) == 1
    instance.refresh_from_db()
    assert instance.poll_active_at == start and instance.polled_at == start
    assert not poll_plan(instance, start + timedelta(seconds=1)).due
    busy = poll_plan(instance, start + timedelta(seconds=2))
    assert (busy.due, busy.interval_s, busy.mode) == (True, 2.0, "busy")
    # Nothing new for a minute: back to the idle cadence.
    instance.polled_at = start + timedelta(seconds=59)
    late = start + timedelta(seconds=61)
    assert (poll_plan(instance, late).mode, poll_plan(instance, late).due) == ("idle", False)
    assert poll_plan(instance, start + timedelta(seconds=69)).due


def test_a_poll_that_finds_nothing_does_not_speed_polling_up(monkeypatch: pytest.MonkeyPatch) -> None:
    instance = redmine()

    class Quiet:
        def search_updated_since(self, cursor: str | None, *, limit: int = 100) -> tuple[list, None]:
            return [], None

    monkeypatch.setattr(polling, "get_connector", lambda inst: Quiet())
    start = timezone.now()
    polling.poll_instance(instance.pk, now=start)
    instance.refresh_from_db()
    assert instance.poll_active_at is None
    assert poll_plan(instance, start + timedelta(seconds=3)).mode == "idle"


def test_a_write_by_the_node_speeds_polling_up(django_capture_on_commit_callbacks) -> None:  # type: ignore[no-untyped-def]
    from instances.connectors import get_connector
    from tests.connectors.fakes.github import API, TOKEN, FakeGitHub
    from tests.connectors.fakes.support import FakeClock, wired

    instance = Instance.objects.create(
        name="GitHub", tracker_type="github", url=API, credentials=json.dumps({"token": TOKEN}),
        settings={"repo": "octo/widgets"},
    )  # fmt: skip
    fake = FakeGitHub()
    fake.add_issue("Printer on fire")
    polling._noted.clear()
    with wired(fake, FakeClock()), django_capture_on_commit_callbacks(execute=True):
        get_connector(instance, actor="exalate-node:conn").update_item("1", {"summary": "Printer fixed"})
    instance.refresh_from_db()
    assert instance.poll_active_at is not None
    assert poll_plan(instance, instance.poll_active_at).mode == "busy"


def test_a_tracker_whose_webhooks_are_set_up_is_polled_every_minute_as_a_backstop() -> None:
    now = timezone.now()
    hooked = Instance.objects.create(
        name="GitHub",
        tracker_type="github",
        url="https://api.github.com",
        credentials=json.dumps({"token": "t", "webhook_secret": "s"}),
        settings={"repo": "octo/widgets"},
    )
    plan = poll_plan(polled(hooked, 30, now), now)
    assert (plan.due, plan.interval_s, plan.mode) == (False, 60.0, "backstop")
    hooked.poll_active_at = now  # activity does not matter: the webhooks report the changes
    assert poll_plan(hooked, now).interval_s == 60.0
    # The same tracker without a webhook secret gets no deliveries: it is polled like Redmine.
    hooked.credentials = json.dumps({"token": "t"})
    assert poll_plan(hooked, now).interval_s == 2.0


def test_zendesk_is_never_polled_faster_than_its_export_allows() -> None:
    now = timezone.now()
    zendesk = Instance.objects.create(
        name="Zendesk",
        tracker_type="zendesk",
        url="https://acme.zendesk.com",
        credentials=json.dumps({"email": "a@b.c", "api_token": "t"}),
        poll_active_at=now,
    )
    assert poll_plan(zendesk, now).interval_s == 6.0  # busy, but 10 requests a minute at most
    zendesk.settings = {"poll_interval_s": 1}
    assert poll_plan(zendesk, now).interval_s == 6.0


def test_a_two_second_cadence_is_kept_by_a_two_second_sweep() -> None:
    """The claim sets polled_at a moment before the poll starts and sets it again: the sweep that comes 2 s
    after the claim must still find the instance due, or busy polling would run every 4 s."""
    now = timezone.now()
    instance = redmine()
    instance.poll_active_at = now
    assert poll_plan(polled(instance, 1.95, now), now).due
    assert not poll_plan(polled(instance, 1.5, now), now).due


def test_poll_due_queues_a_due_instance_once_and_not_while_a_poll_runs(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from connections.services import connection_create_local

    queued: list[tuple] = []
    monkeypatch.setattr("exalate_node.tasks.enqueue", lambda *args, **kw: queued.append(args))
    instance = redmine()
    builtin = Instance.objects.create(name="Built-in", tracker_type="builtin")
    connection_create_local(name="R-B", instance_a=instance, instance_b=builtin)
    now = timezone.now()
    assert polling.poll_due(now=now) == 1 and queued == [("instances.tasks.poll_instance", instance.pk)]
    assert polling.poll_due(now=now + timedelta(seconds=1)) == 0  # claimed: not queued twice
    Instance.objects.filter(pk=instance.pk).update(poll_lease_until=now + timedelta(seconds=30))
    assert polling.poll_due(now=now + timedelta(seconds=20)) == 0  # a poll holds it
    Instance.objects.filter(pk=instance.pk).update(poll_lease_until=None)
    assert polling.poll_due(now=now + timedelta(seconds=20)) == 1


@pytest.mark.parametrize(
    ("value", "message"),
    [
        (0, "between 1 and 86400 seconds"),
        (-5, "between 1 and 86400 seconds"),
        ("10", "must be a number of seconds"),
        (True, "must be a number of seconds"),
        (1e9, "between 1 and 86400 seconds"),
    ],
)
def test_an_unusable_poll_interval_is_refused_by_the_api_and_ignored_by_the_poller(
    api, value: Any, message: str
) -> None:  # type: ignore[no-untyped-def]
    instance = redmine()
    response = api.patch(
        f"/api/v1/instances/{instance.pk}/",
        {"settings": {"project": "sup", "poll_interval_s": value}},
        format="json",
    )
    assert response.status_code == 400 and message in json.dumps(response.json())
    instance.refresh_from_db()
    assert "poll_interval_s" not in instance.settings  # nothing changed
    # Set some other way (the admin, a shell): the node's default is used, polling neither stops nor floods.
    instance.settings = {"project": "sup", "poll_interval_s": value}
    now = timezone.now()
    assert poll_plan(polled(instance, 10, now), now).interval_s == 10.0


def test_a_usable_poll_interval_is_accepted_by_the_api(api) -> None:  # type: ignore[no-untyped-def]
    instance = redmine()
    response = api.patch(
        f"/api/v1/instances/{instance.pk}/",
        {"settings": {"project": "sup", "poll_interval_s": 5, "poll_busy_interval_s": 1.5}},
        format="json",
    )
    assert response.status_code == 200, response.json()
    instance.refresh_from_db()
    assert poll_plan(instance, timezone.now()).interval_s == 5.0
