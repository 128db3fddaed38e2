"""Activity charts: sync events rolled up into buckets once each, and the series the charts draw."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.urls import reverse
from django.utils import timezone

from exalate_node.models import ActivityBucket, ActivityCursor
from exalate_node.ui.activity import activity_rollup, activity_series, percentile
from replicas.models import SyncEvent

pytestmark = pytest.mark.django_db(transaction=True)


def _event(connection, *, status="done", direction="out", age_s=30, latency_ms=300):  # type: ignore[no-untyped-def]
    now = timezone.now()
    event = SyncEvent.objects.create(connection=connection, direction=direction, status=status)
    created = now - timedelta(seconds=age_s)
    processed = created + timedelta(milliseconds=latency_ms) if status in ("done", "failed") else None
    SyncEvent.objects.filter(pk=event.pk).update(created_at=created, processed_at=processed)
    return event


def test_percentiles_are_the_upper_edge_of_the_bucket():
    assert percentile([0] * 12, 0.5) is None
    assert percentile([1, 1, 1, 1] + [0] * 8, 0.5) == 250
    assert percentile([0, 0, 10] + [0] * 9, 0.95) == 500
    assert percentile([0] * 11 + [3], 0.5) == 3_600_000


def test_every_finished_event_is_counted_once(synced):
    a, b, _issue = synced
    done_before = SyncEvent.objects.filter(status="done").count()
    activity_rollup()
    activity_rollup()  # nothing new: nothing counted twice
    series = activity_series(range_name="hour")
    assert series["totals"]["events"] == done_before
    assert sum(series["outgoing"]) == SyncEvent.objects.filter(status="done", direction="out").count()
    assert series["totals"]["p50"] is not None
    names = {c["name"] for c in series["connections"]}
    assert names == {a.name}
    assert {c["id"] for c in series["connections"]} == {a.pk, b.pk}


def test_an_open_event_holds_the_later_ones_until_it_finishes(synced):
    a, _b, _issue = synced
    activity_rollup()
    before = activity_series(range_name="hour", connection_id=a.pk)["totals"]["events"]
    waiting = _event(a, status="sent")
    _event(a, latency_ms=700)
    activity_rollup()
    assert activity_series(range_name="hour", connection_id=a.pk)["totals"]["events"] == before

    SyncEvent.objects.filter(pk=waiting.pk).update(status="done", processed_at=timezone.now())
    activity_rollup()
    assert activity_series(range_name="hour", connection_id=a.pk)["totals"]["events"] == before + 2


def test_an_event_stuck_for_an_hour_does_not_hold_the_charts(synced):
    a, _b, _issue = synced
    _event(a, status="pending", age_s=2 * 3600)
    _event(a, status="failed")
    activity_rollup()
    assert ActivityCursor.objects.get().event_id == SyncEvent.objects.order_by("-id").first().pk
    assert activity_series(range_name="hour", connection_id=a.pk)["totals"]["failed"] == 1


def test_reading_a_week_costs_the_same_few_queries_at_any_volume(synced, django_assert_max_num_queries):
    a, _b, _issue = synced
    for n in range(40):
        _event(a, latency_ms=50 * n, age_s=60 * (n % 50) + 5)
    activity_rollup()
    with django_assert_max_num_queries(2):
        series = activity_series(range_name="week")
    assert len(series["x"]) == 168 and series["totals"]["events"] >= 40
    assert ActivityBucket.objects.filter(size="h").count() <= 2 * 2 * 3  # hours x directions x connections


def test_old_buckets_are_pruned(synced):
    a, _b, _issue = synced
    ActivityBucket.objects.create(
        connection=a, size="m", start=timezone.now() - timedelta(days=3), direction="out", done=5
    )
    activity_rollup()
    assert not ActivityBucket.objects.filter(start__lt=timezone.now() - timedelta(days=2), size="m").exists()


def test_the_page_and_its_data(staff, synced):
    a, _b, _issue = synced
    page = staff.get(reverse("ui:activity") + f"?range=day&connection={a.pk}")
    assert page.status_code == 200
    body = page.content.decode()
    assert "ui/vendor/uPlot.iife.min.js" in body and 'data-range="day"' in body
    data = staff.get(reverse("ui:activity_data") + f"?range=day&connection={a.pk}").json()
    assert len(data["x"]) == 24 and data["totals"]["events"] > 0


@pytest.mark.parametrize("query", ["?range=year", "?connection=abc", "?connection=99999999999999999999", ""])
def test_unknown_filters_are_the_defaults(staff, synced, query):
    response = staff.get(reverse("ui:activity_data") + query)
    assert response.status_code == 200 and len(response.json()["x"]) == 60


def test_the_charts_are_staff_only(plain, client):
    assert plain.get(reverse("ui:activity_data")).status_code == 302
    assert client.get(reverse("ui:activity")).status_code == 302
