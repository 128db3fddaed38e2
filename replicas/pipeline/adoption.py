"""Adoption: a retried apply adopts what an earlier attempt wrote without hearing back, instead of
writing it again."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from replicas.models import EntityLink, Twin
from replicas.pipeline.base import logger
from replicas.pipeline.written import Written

# How far the tracker's clock may lag ours when looking for an item an earlier attempt created.
CREATE_CLOCK_SKEW = timedelta(minutes=5)


def created_earlier(connector: Any, twin: Twin, fields: dict[str, Any], *, since: datetime) -> Any:
    """The item an earlier attempt of this create made without hearing back, or None: the newest item
    the tracker says this node created since then with the same summary that no twin of the instance has."""
    for ref in connector.find_created(fields, since=since):
        taken = Twin.objects.filter(
            connection__local_instance_id=twin.connection.local_instance_id, local_id=ref.id
        ).exists()
        if not taken:
            return ref
    return None


def unlinked_entries(twin: Twin, kind: str, entries: dict[Any, dict[str, Any]]) -> dict[Any, dict[str, Any]]:
    """The entries (comments or attachments, by local id) that copy nothing on the other side."""
    linked = set(twin.links.filter(kind=kind).values_list("local_id", flat=True))
    return {k: e for k, e in entries.items() if str(k) not in linked}


def same_text(a: Any, b: Any) -> bool:
    """The same comment text, line ends and surrounding white space apart."""
    return str(a or "").replace("\r\n", "\n").strip() == str(b or "").replace("\r\n", "\n").strip()


def same_file(local: dict[str, Any], incoming: dict[str, Any]) -> bool:
    """Same name, and the same size and SHA-256 where both sides know them (a tracker that reports
    neither for its attachments, like GitLab, is matched by name)."""
    if (local.get("filename") or "") != (incoming.get("filename") or ""):
        return False
    for field in ("size", "sha256"):
        if local.get(field) is not None and incoming.get(field) is not None:
            if str(local[field]).lower() != str(incoming[field]).lower():
                return False
    return True


def adopt_entry(
    twin: Twin,
    kind: str,
    local_id: Any,
    remote_id: Any,
    unlinked: dict[Any, Any],
    wrote: Written | None,
    kept: set[Any],
) -> None:
    """Link an entry an earlier attempt wrote unheard to the remote one it copies."""
    del unlinked[local_id]
    kept.add(local_id)
    EntityLink.objects.create(twin=twin, kind=kind, local_id=str(local_id), remote_id=str(remote_id))
    if wrote is not None:
        wrote.entries["comments" if kind == EntityLink.Kind.COMMENT else "attachments"].add(str(local_id))
    logger.warning("Adopted %s %s, written by an earlier attempt, copying %s", kind, local_id, remote_id)
