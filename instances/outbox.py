"""The outbox port: how a change to a local item leaves the instances layer.

The built-in tracker's services, polling and webhooks record every change of a local item here, inside the
transaction that made the change. The sync pipeline (``replicas``, a higher layer) turns it into outgoing
events: it registers itself as the outbox when its app is ready (``replicas.apps``), so nothing in this app
imports the pipeline.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from instances.models import Instance


class Outbox(Protocol):
    def record_item_change(self, *, instance_id: int, item_id: str, item_key: str, actor: str) -> None: ...

    def resume_instance(self, instance: Instance) -> None: ...


_outbox: Outbox | None = None


def register_outbox(outbox: Outbox) -> None:
    """Install the outbox (``replicas.outbox``); the last registration wins."""
    global _outbox
    _outbox = outbox


def _registered() -> Outbox:
    if _outbox is None:
        # A change nobody records would never sync: refuse it rather than drop it.
        raise RuntimeError(
            "No outbox is registered: add 'replicas' to INSTALLED_APPS (its AppConfig.ready registers it)."
        )
    return _outbox


def record_item_change(*, instance_id: int, item_id: str, item_key: str, actor: str) -> None:
    """Record that an item of a local instance changed (call inside the transaction of the change)."""
    _registered().record_item_change(instance_id=instance_id, item_id=item_id, item_key=item_key, actor=actor)


def resume_instance(instance: Instance) -> None:
    """A tracker marked unreachable answered again: the work that waited for it goes now."""
    _registered().resume_instance(instance)
