"""Comment and attachment entries of an apply: added, edited and removed, linked (``EntityLink``), and
attachment content fetched from the sender and checked."""

from __future__ import annotations

import hashlib
import tempfile
from contextlib import ExitStack
from typing import IO, Any

from django.conf import settings
from django.db import transaction

from instances.connectors import ConnectorError
from replicas.models import EntityLink, Twin
from replicas.pipeline.adoption import adopt_entry, same_file, same_text, unlinked_entries
from replicas.pipeline.written import Written


def apply_comments(
    connector: Any,
    twin: Twin,
    before: dict[str, Any],
    after: dict[str, Any],
    wrote: Written,
    *,
    created: bool = False,
    adopt: bool = False,
) -> None:
    """``created``: the item was created in this same transaction, so no earlier run left links to it.
    ``adopt``: an earlier attempt may have added comments without hearing back; a comment to add whose
    text an unlinked comment already has is that one (linked, not added again)."""
    old = {c["id"]: c for c in before.get("comments") or [] if c.get("id")}
    unlinked = unlinked_entries(twin, EntityLink.Kind.COMMENT, old) if adopt else {}
    kept = set()
    for comment in after.get("comments") or []:
        cid = comment.get("id")
        if cid and cid in old:
            kept.add(cid)
            if comment.get("body") != old[cid].get("body"):
                connector.update_comment(twin.local_id, cid, body=comment.get("body") or "")
                wrote.entries["comments"].add(str(cid))
            continue
        remote_id = comment.get("remoteId")
        if (
            remote_id
            and not created
            and twin.links.filter(kind=EntityLink.Kind.COMMENT, remote_id=remote_id).exists()
        ):
            continue  # already created by an earlier (interrupted) run
        same = [k for k, c in unlinked.items() if same_text(c.get("body"), comment.get("body"))]
        if remote_id and same:
            adopt_entry(twin, EntityLink.Kind.COMMENT, same[0], remote_id, unlinked, wrote, kept)
            continue
        new_id = connector.add_comment(
            twin.local_id,
            body=comment.get("body") or "",
            internal=bool(comment.get("internal")),
            author=_author(comment.get("author")),
        )
        wrote.entries["comments"].add(str(new_id))
        if remote_id:
            with transaction.atomic(savepoint=False):  # nothing here catches its failure
                EntityLink.objects.create(
                    twin=twin, kind=EntityLink.Kind.COMMENT, local_id=new_id, remote_id=remote_id
                )
    for cid in set(old) - kept:
        connector.delete_comment(twin.local_id, cid)
        wrote.removed["comments"].add(str(cid))
        twin.links.filter(kind=EntityLink.Kind.COMMENT, local_id=cid).delete()


def _author(person: Any) -> str:
    """Who wrote a comment, for a tracker that stores it: the e-mail, else the name (trackers that hide
    e-mails, such as Redmine's journals, still name the person)."""
    if not isinstance(person, dict):
        return ""
    return str(person.get("email") or person.get("displayName") or "")[:200]


def fetch_attachments(
    twin: Twin,
    before: dict[str, Any],
    after: dict[str, Any],
    transport: Any,
    stack: ExitStack,
    *,
    remote_item_id: str,
    adopt: bool = False,
    wrote: Written | None = None,
) -> dict[str, IO[bytes]]:
    """Download the attachments the apply will add, before its transaction: on SQLite that transaction
    holds the database's write lock, and two nodes downloading from each other inside theirs would wait on
    each other (each peer's attachment endpoint records the request's nonce). Checked against the size
    limit and the replica's SHA-256; the files stay open until ``stack`` closes.

    ``adopt``: an earlier attempt may have attached files without hearing back; an unlinked attachment
    with the same name and size (and SHA-256, where both are known) is that one, linked and not fetched."""
    old = {a["id"]: a for a in before.get("attachments") or [] if a.get("id")}
    unlinked = unlinked_entries(twin, EntityLink.Kind.ATTACHMENT, old) if adopt else {}
    fetched: dict[str, IO[bytes]] = {}
    for att in after.get("attachments") or []:
        remote_id = att.get("remoteId")
        if (att.get("id") and att["id"] in old) or not remote_id or remote_id in fetched:
            continue
        if twin.links.filter(kind=EntityLink.Kind.ATTACHMENT, remote_id=remote_id).exists():
            continue
        same = [k for k, a in unlinked.items() if same_file(a, att)]
        if same:
            adopt_entry(twin, EntityLink.Kind.ATTACHMENT, same[0], remote_id, unlinked, wrote, set())
            continue
        buffer = stack.enter_context(tempfile.SpooledTemporaryFile(max_size=1024 * 1024))
        digest = hashlib.sha256()
        size = 0
        for chunk in _from_the_peer(transport.fetch_attachment(twin.connection, remote_item_id, remote_id)):
            size += len(chunk)
            if size > settings.ATTACHMENT_MAX_BYTES:
                raise ConnectorError(
                    f"Attachment '{att.get('filename')}' is larger than ATTACHMENT_MAX_BYTES "
                    f"({settings.ATTACHMENT_MAX_BYTES} bytes) on this node. Raise the limit or remove "
                    "the file.",
                )
            digest.update(chunk)
            buffer.write(chunk)
        expected = att.get("sha256")
        if expected and digest.hexdigest() != expected:
            raise ConnectorError(
                f"Attachment '{att.get('filename')}' arrived corrupted (SHA-256 mismatch); it will be "
                "fetched again.",
                retryable=True,
            )
        buffer.seek(0)
        fetched[remote_id] = buffer
    return fetched


def _from_the_peer(chunks: Any) -> Any:
    """The other side's attachment content; its failures are marked as the peer's (not our tracker's)."""
    try:
        yield from chunks
    except ConnectorError as exc:
        exc.from_peer = True  # type: ignore[attr-defined]
        raise


def apply_attachments(
    connector: Any,
    twin: Twin,
    before: dict[str, Any],
    after: dict[str, Any],
    fetched: dict[str, IO[bytes]],
    wrote: Written,
) -> None:
    """Add what ``fetch_attachments`` downloaded, delete what the incoming side removed."""
    old = {a["id"]: a for a in before.get("attachments") or [] if a.get("id")}
    kept = set()
    for att in after.get("attachments") or []:
        aid = att.get("id")
        if aid and aid in old:
            kept.add(aid)
            continue
        remote_id = att.get("remoteId")
        buffer = fetched.pop(remote_id, None) if remote_id else None
        if buffer is None:
            continue  # no remote id, or already added by an earlier (interrupted) run
        new_id = connector.add_attachment(
            twin.local_id,
            filename=att.get("filename") or "attachment",
            mime_type=att.get("mimeType") or "",
            content=buffer,
        )
        wrote.entries["attachments"].add(str(new_id))
        with transaction.atomic(savepoint=False):  # nothing here catches its failure
            EntityLink.objects.create(
                twin=twin, kind=EntityLink.Kind.ATTACHMENT, local_id=new_id, remote_id=remote_id
            )
    for aid in set(old) - kept:
        connector.delete_attachment(twin.local_id, aid)
        wrote.removed["attachments"].add(str(aid))
        twin.links.filter(kind=EntityLink.Kind.ATTACHMENT, local_id=aid).delete()
