"""The outbox: a tracker change becomes outgoing sync events in the same transaction as the change.

Registered as the instances layer's outbox (``instances.outbox``) when the app is ready (``replicas.apps``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from instances.models import Instance


def record_item_change(*, instance_id: int, item_id: str, item_key: str, actor: str) -> None:
    """Record that an item of a local instance changed; the pipeline turns it into outgoing events."""
    from replicas import pipeline  # on first use: registering the outbox at startup must not load it

    pipeline.on_item_changed(instance_id=instance_id, item_id=item_id, item_key=item_key, actor=actor)


def resume_instance(instance: Instance) -> None:
    """A tracker marked unreachable answered again (a poll found it back): its waiting work goes now."""
    from replicas import pipeline

    pipeline.resume_instance(instance)
