"""The outbox: a tracker change becomes outgoing sync events in the same transaction as the change."""

from __future__ import annotations


def record_item_change(*, instance_id: int, item_id: str, item_key: str, actor: str) -> None:
    """Record that an item of a local instance changed; the pipeline turns it into outgoing events."""
    from replicas import pipeline

    pipeline.on_item_changed(instance_id=instance_id, item_id=item_id, item_key=item_key, actor=actor)


def resume_instance(instance: object) -> None:
    """A tracker marked unreachable answered again (a poll found it back): its waiting work goes now."""
    from replicas import pipeline

    pipeline.resume_instance(instance)
