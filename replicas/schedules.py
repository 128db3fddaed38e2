"""Periodic work registered with django-q2's scheduler."""

from __future__ import annotations

SCHEDULES = [
    # Re-nudge work whose task was lost (crash, restart) and events whose backoff is over.
    {"name": "pipeline sweeper", "func": "replicas.tasks.sweep", "minutes": 1},
    # Deliveries to peers that are due (backoff over, lost task) and polling of private-mode peers.
    {"name": "node delivery sweeper", "func": "connections.tasks.sweep", "minutes": 1},
    # Bulk jobs whose worker died resume after their last finished item.
    {"name": "bulk job resumer", "func": "replicas.tasks.resume_bulk_jobs", "minutes": 1},
    # Trackers without webhooks (and the backstop for those with them).
    {"name": "tracker polling", "func": "instances.tasks.poll_due", "minutes": 1},
    # Drift that no webhook or poll delivered.
    {"name": "reconciliation", "func": "replicas.tasks.reconcile_all", "minutes": 15},
]


def ensure_schedules() -> None:
    """Create or update the node's schedules (idempotent)."""
    from django_q.models import Schedule

    for entry in SCHEDULES:
        Schedule.objects.update_or_create(
            name=entry["name"],
            defaults={
                "func": entry["func"],
                "schedule_type": Schedule.MINUTES,
                "minutes": entry["minutes"],
                "repeats": -1,
            },
        )
