"""``/metrics``: the node's state in Prometheus text format, for a scraper.

Every figure is read from the database at scrape time (one query per family), so it is the same whichever
web process or host answers and covers every worker: queue depth and age, events done and failed, blocked
twins and open errors per connection; change-to-applied latency (an outgoing change's queueing until the
peer acknowledged it applied, per connection); per instance, tracker requests by status code, time spent
waiting on rate limits (``instances/traffic.py``), poll lag and reachability; leases held by workers and the
age of the sweeper's and the workers' heartbeats.

Counters come from rows the node keeps (events are not deleted), so they only go down when a connection is
deleted. Off unless ``METRICS_TOKEN`` or ``METRICS_ALLOWED_NETWORKS`` is set.
"""

from __future__ import annotations

import hmac
import ipaddress
from collections.abc import Iterator
from datetime import timedelta

from django.conf import settings
from django.db.models import Count, Min, Q, Sum
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.utils import timezone
from django.views.decorators.http import require_GET
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily
from prometheus_client.exposition import CONTENT_TYPE_PLAIN_0_0_4

from connections.models import Connection
from exalate_node.models import Heartbeat
from instances import traffic
from instances.models import Instance, TrackerTraffic
from replicas.models import SyncError, SyncEvent, Twin

# Change-to-applied latency buckets, in seconds: sub-second sync up to a tracker outage's backoff.
LATENCY_BUCKETS = (0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 3600.0)

Status = SyncEvent.Status
QUEUED = [Status.PENDING, Status.PROCESSING]


def _connections() -> dict[int, tuple[str, str]]:
    return {pk: (str(pk), name) for pk, name in Connection.objects.values_list("pk", "name")}


class NodeCollector:
    """Builds the metric families from the database on every ``collect``."""

    def collect(self) -> Iterator[object]:
        now = timezone.now()
        conns = _connections()
        labels = ["connection_id", "connection"]

        depth = GaugeMetricFamily(
            "exalate_queue_depth", "Sync events waiting or in progress.", labels=[*labels, "direction"]
        )
        oldest = GaugeMetricFamily(
            "exalate_queue_oldest_age_seconds",
            "Age of the oldest event waiting or in progress.",
            labels=labels,
        )
        rows = (
            SyncEvent.objects.filter(status__in=QUEUED)
            .values("connection_id", "direction")
            .annotate(n=Count("id"), first=Min("created_at"))
        )
        first: dict[int, object] = {}
        for row in rows:
            if row["connection_id"] not in conns:
                continue
            depth.add_metric([*conns[row["connection_id"]], row["direction"]], row["n"])
            seen = first.get(row["connection_id"])
            first[row["connection_id"]] = min(seen, row["first"]) if seen else row["first"]
        for pk, when in first.items():
            oldest.add_metric(list(conns[pk]), max(0.0, (now - when).total_seconds()))  # type: ignore[operator]
        yield depth
        yield oldest

        events = CounterMetricFamily(
            "exalate_events", "Sync events finished, by outcome.", labels=[*labels, "direction", "status"]
        )
        finished = [Status.DONE, Status.SKIPPED, Status.FAILED]
        rows = (
            SyncEvent.objects.filter(status__in=finished)
            .values("connection_id", "direction", "status")
            .annotate(n=Count("id"))
        )
        for row in rows:
            if row["connection_id"] in conns:
                events.add_metric([*conns[row["connection_id"]], row["direction"], row["status"]], row["n"])
        yield events

        blocked = GaugeMetricFamily(
            "exalate_blocked_twins",
            "Items whose sync stopped on an error an admin must resolve.",
            labels=labels,
        )
        for pk, n in (
            Twin.objects.filter(state=Twin.State.FAILED)
            .values("connection_id")
            .annotate(n=Count("id"))
            .values_list("connection_id", "n")
        ):
            if pk in conns:
                blocked.add_metric(list(conns[pk]), n)
        yield blocked

        errors = GaugeMetricFamily("exalate_open_errors", "Unresolved errors, by impact.", labels=["impact"])
        for impact, n in (
            SyncError.objects.filter(resolved_at__isnull=True)
            .values("impact")
            .annotate(n=Count("id"))
            .values_list("impact", "n")
        ):
            errors.add_metric([impact], n)
        yield errors

        yield self._latency(conns)
        yield from self._instances(now)

        leases = GaugeMetricFamily("exalate_worker_leases_held", "Items a worker holds right now (leases).")
        leases.add_metric([], Twin.objects.filter(lease_until__gt=now).count())
        yield leases

        beats = GaugeMetricFamily(
            "exalate_heartbeat_age_seconds",
            "Since the sweeper, or a worker (through a task the sweeper queues), last showed it works.",
            labels=["role"],
        )
        for role, beat_at in Heartbeat.objects.values_list("role", "beat_at"):
            beats.add_metric([role], max(0.0, (now - beat_at).total_seconds()))
        yield beats

    def _latency(self, conns: dict[int, tuple[str, str]]) -> HistogramMetricFamily:
        """Outgoing changes the peer acknowledged: from the change being queued to the peer's ack (the
        ``latency`` the ack recorded on the row: compared as a stored duration, no arithmetic per row)."""
        buckets = {
            f"le{i}": Count("id", filter=Q(latency__lte=timedelta(seconds=bound)))
            for i, bound in enumerate(LATENCY_BUCKETS)
        }
        rows = (
            SyncEvent.objects.filter(
                direction=SyncEvent.Direction.OUTGOING, status=Status.DONE, latency__isnull=False
            )
            .values("connection_id")
            .annotate(n=Count("id"), total=Sum("latency"), **buckets)
        )
        family = HistogramMetricFamily(
            "exalate_change_applied_seconds",
            "From a change queued here to the other side's acknowledgement that it was applied.",
            labels=["connection_id", "connection"],
        )
        for row in rows:
            if row["connection_id"] not in conns:
                continue
            counts = [(str(bound), row[f"le{i}"]) for i, bound in enumerate(LATENCY_BUCKETS)]
            total = row["total"]
            seconds = total.total_seconds() if isinstance(total, timedelta) else float(total or 0) / 1e6
            family.add_metric(
                list(conns[row["connection_id"]]), [*counts, ("+Inf", row["n"])], sum_value=max(0.0, seconds)
            )
        return family

    def _instances(self, now: object) -> Iterator[object]:
        instances = list(Instance.objects.filter(kind=Instance.Kind.LOCAL))
        names = {i.uid: i.name for i in instances}
        requests = CounterMetricFamily(
            "exalate_tracker_requests",
            "Requests sent to a tracker, by HTTP status code ('error': no answer).",
            labels=["instance", "uid", "code"],
        )
        waited = CounterMetricFamily(
            "exalate_tracker_rate_limit_wait_seconds",
            "Time spent waiting on a tracker's rate limit or the node's request budget for it.",
            labels=["instance", "uid"],
        )
        waits: dict[str, float] = {}
        for row in TrackerTraffic.objects.all():
            name = names.get(row.instance_uid, "")
            if row.requests:
                requests.add_metric([name, row.instance_uid, row.outcome], row.requests)
            waits[row.instance_uid] = waits.get(row.instance_uid, 0.0) + row.waited_seconds
        for uid, seconds in waits.items():
            waited.add_metric([names.get(uid, ""), uid], seconds)
        yield requests
        yield waited

        lag = GaugeMetricFamily(
            "exalate_instance_poll_lag_seconds",
            "Time since the tracker was last polled.",
            labels=["instance"],
        )
        down = GaugeMetricFamily(
            "exalate_instance_unreachable", "1 while the tracker is marked unreachable.", labels=["instance"]
        )
        for instance in instances:
            if instance.polled_at:
                lag.add_metric([instance.name], max(0.0, (now - instance.polled_at).total_seconds()))  # type: ignore[operator]
            down.add_metric([instance.name], 1 if instance.unreachable_since else 0)
        yield lag
        yield down


def _allowed(request: HttpRequest) -> bool | None:
    """None: metrics are off. Else whether this request may read them."""
    token, networks = settings.METRICS_TOKEN, settings.METRICS_ALLOWED_NETWORKS
    if not token and not networks:
        return None
    sent = request.headers.get("Authorization", "")
    if (
        token
        and sent.startswith("Bearer ")
        and hmac.compare_digest(sent[7:].strip().encode(), token.encode())
    ):
        return True
    try:
        address = ipaddress.ip_address(request.META.get("REMOTE_ADDR", ""))
    except ValueError:
        return False
    return any(address in ipaddress.ip_network(n, strict=False) for n in networks)


@require_GET
def metrics(request: HttpRequest) -> HttpResponse:
    allowed = _allowed(request)
    if allowed is None:
        return JsonResponse(
            {
                "error": "not_found",
                "detail": "Metrics are off. Set METRICS_TOKEN (scrapers send it as a bearer token) or "
                "METRICS_ALLOWED_NETWORKS to turn them on.",
            },
            status=404,
        )
    if not allowed:
        response = JsonResponse(
            {
                "error": "not_authenticated",
                "detail": "Send the node's METRICS_TOKEN as 'Authorization: Bearer <token>', or scrape from "
                "a network listed in METRICS_ALLOWED_NETWORKS.",
            },
            status=401,
        )
        response["WWW-Authenticate"] = 'Bearer realm="metrics"'
        return response
    traffic.flush()  # this process's own counts
    registry = CollectorRegistry(auto_describe=False)
    registry.register(NodeCollector())  # type: ignore[arg-type]
    # The classic text format (0.0.4): every Prometheus version reads it.
    return HttpResponse(generate_latest(registry), content_type=CONTENT_TYPE_PLAIN_0_0_4)
