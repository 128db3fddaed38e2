"""``/metrics``: off by default, protected when on, and what a scraper reads matches what the node did.

Parsed with prometheus_client's own parser, as Prometheus would read it.
"""

from __future__ import annotations

import os

import pytest
from django.test import Client
from prometheus_client.parser import text_string_to_metric_families

from instances import traffic
from instances.connectors.http import HttpClient
from instances.models import Instance
from replicas import pipeline
from replicas.models import SyncError, Twin
from tests.connectors.conftest import Loopback, Reply, loopback  # noqa: F401  (fixture)
from tests.connectors.test_http import FakeTime
from tests.replicas.conftest import local_pair  # noqa: F401  (fixture)

pytestmark = pytest.mark.django_db(transaction=True)

TOKEN = "scrape-" + os.urandom(8).hex()


def scrape(client: Client | None = None, **headers: str) -> dict[str, list[tuple[dict[str, str], float]]]:
    response = (client or Client()).get("/metrics", headers={"Authorization": f"Bearer {TOKEN}", **headers})
    assert response.status_code == 200, response.content
    assert response["Content-Type"].startswith("text/plain; version=0.0.4")
    samples: dict[str, list[tuple[dict[str, str], float]]] = {}
    for family in text_string_to_metric_families(response.content.decode()):
        for sample in family.samples:
            samples.setdefault(sample.name, []).append((sample.labels, sample.value))
    return samples


def value(samples: dict, name: str, **labels: str) -> float:
    found = [v for have, v in samples.get(name, []) if all(have.get(k) == w for k, w in labels.items())]
    assert len(found) == 1, (name, labels, samples.get(name))
    return found[0]


def test_metrics_are_off_until_a_token_or_a_network_is_set(settings) -> None:  # type: ignore[no-untyped-def]
    settings.METRICS_TOKEN, settings.METRICS_ALLOWED_NETWORKS = "", []
    off = Client().get("/metrics")
    assert off.status_code == 404 and "METRICS_TOKEN" in off.json()["detail"]

    settings.METRICS_TOKEN = TOKEN
    for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": TOKEN}):
        refused = Client().get("/metrics", headers=headers)
        assert refused.status_code == 401, headers
        assert refused["WWW-Authenticate"].startswith("Bearer") and TOKEN not in refused.content.decode()
    assert Client().post("/metrics", headers={"Authorization": f"Bearer {TOKEN}"}).status_code == 405
    assert scrape()  # the token opens it

    settings.METRICS_TOKEN, settings.METRICS_ALLOWED_NETWORKS = "", ["10.0.0.0/8"]
    assert Client().get("/metrics").status_code == 401  # the test client is 127.0.0.1
    settings.METRICS_ALLOWED_NETWORKS = ["127.0.0.1/32"]
    assert Client().get("/metrics").status_code == 200


def test_queue_events_latency_and_blocked_items_per_connection(local_pair, settings) -> None:  # type: ignore[no-untyped-def]  # noqa: F811
    from syncrules.defaults import default_rules
    from syncrules.services import rules_publish

    settings.METRICS_TOKEN = TOKEN
    a, b = local_pair
    conn = {"connection_id": str(a.connection.pk)}
    before = scrape()
    assert "exalate_change_applied_seconds_count" not in before  # nothing synced yet

    for n in range(3):
        pipeline.exalate(connection=a.connection, key=a.create(f"item {n}").key)
    samples = scrape()
    assert value(samples, "exalate_events_total", direction="out", status="done", **conn) == 3
    assert value(samples, "exalate_change_applied_seconds_count", **conn) == 3
    assert value(samples, "exalate_change_applied_seconds_bucket", le="+Inf", **conn) == 3
    assert value(samples, "exalate_change_applied_seconds_bucket", le="3600.0", **conn) == 3
    assert 0 <= value(samples, "exalate_change_applied_seconds_sum", **conn) < 60
    assert not [v for labels, v in samples.get("exalate_queue_depth", []) if v]  # nothing waits
    assert not samples.get("exalate_blocked_twins")

    # A script error blocks one item: it shows as a failed event, a blocked twin and an open entity error.
    broken = 'if "boom" in (replica.summary or ""):\n    x = 1 / 0\nissue.summary = replica.summary\n'
    rules_publish(connection=b.connection, outgoing=default_rules("builtin")[0], incoming=broken)
    bad = a.create("boom")
    pipeline.exalate(connection=a.connection, key=bad.key)
    a.edit(bad.key, summary="boom again")  # waits behind the failed one
    samples = scrape()
    other = {"connection_id": str(b.connection.pk)}
    assert value(samples, "exalate_events_total", direction="in", status="failed", **other) == 1
    assert value(samples, "exalate_blocked_twins", **other) == 1
    assert value(samples, "exalate_open_errors", impact="entity") == 1
    assert SyncError.objects.filter(resolved_at__isnull=True).count() == 1
    assert value(samples, "exalate_queue_depth", direction="in", **other) == 1  # the edit, waiting behind it
    assert value(samples, "exalate_queue_oldest_age_seconds", **other) >= 0
    assert Twin.objects.filter(state=Twin.State.FAILED).count() == 1


def test_tracker_requests_by_status_and_time_waiting_on_rate_limits(settings, loopback: Loopback) -> None:  # type: ignore[no-untyped-def]  # noqa: F811
    settings.METRICS_TOKEN = TOKEN
    redmine = Instance.objects.create(name="Redmine", tracker_type="redmine", url=loopback.url)
    fake = FakeTime()  # sleeping moves this clock: no real waiting
    http = HttpClient(
        loopback.url,
        service="Redmine",
        bucket_key=redmine.uid,
        rate_per_s=1000,
        sleep=fake.sleep,
        clock=fake.clock,
        wall_clock=fake.clock,
        jitter=lambda low, high: high,
    )
    loopback.replies += [
        Reply(429, {"errors": ["slow down"]}, {"Retry-After": "3"}),
        Reply(500, "oops"),
        Reply(200, {"ok": True}),
        Reply(404, {"errors": ["gone"]}),
    ]
    assert http.get_json("issues.json") == {"ok": True}
    with pytest.raises(Exception, match="404|not found|Not Found"):
        http.get_json("issues/9.json")
    traffic.flush()  # as the worker does every few seconds
    samples = scrape()
    mine = {"instance": "Redmine", "uid": redmine.uid}
    assert value(samples, "exalate_tracker_requests_total", code="429", **mine) == 1
    assert value(samples, "exalate_tracker_requests_total", code="500", **mine) == 1
    assert value(samples, "exalate_tracker_requests_total", code="200", **mine) == 1
    assert value(samples, "exalate_tracker_requests_total", code="404", **mine) == 1
    waited = value(samples, "exalate_tracker_rate_limit_wait_seconds_total", **mine)
    assert waited == pytest.approx(3.0, abs=0.1)
    assert fake.sleeps[0] == 3.0 and len(fake.sleeps) == 2  # the 429's wait, then the 500's backoff
    # Counts add up across flushes (several processes and hosts share the rows).
    loopback.replies += [Reply(200, {"ok": True})]
    http.get_json("issues.json")
    traffic.flush()
    assert value(scrape(), "exalate_tracker_requests_total", code="200", **mine) == 2
    assert value(samples, "exalate_instance_unreachable", instance="Redmine") == 0


def test_heartbeat_ages(settings) -> None:  # type: ignore[no-untyped-def]
    from datetime import timedelta

    from django.utils import timezone

    from exalate_node.models import Heartbeat

    settings.METRICS_TOKEN = TOKEN
    Heartbeat.objects.create(role="worker", beat_at=timezone.now() - timedelta(seconds=90), host="w1")
    age = value(scrape(), "exalate_heartbeat_age_seconds", role="worker")
    assert 90 <= age < 120


def test_events_acknowledged_before_the_latency_column_get_it_from_their_times(local_pair) -> None:  # type: ignore[no-untyped-def]  # noqa: F811
    import importlib
    from datetime import timedelta

    from django.apps import apps

    from replicas.models import SyncEvent

    a, _ = local_pair
    pipeline.exalate(connection=a.connection, key=a.create("old").key)
    event = SyncEvent.objects.get(direction="out", status="done")
    assert event.latency is not None and event.latency >= timedelta(0)  # recorded by the ack
    SyncEvent.objects.filter(pk=event.pk).update(
        latency=None, processed_at=event.created_at + timedelta(seconds=3)
    )
    importlib.import_module("replicas.migrations.0008_event_latency").backfill(apps, None)
    assert SyncEvent.objects.get(pk=event.pk).latency == timedelta(seconds=3)
