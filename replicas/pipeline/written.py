"""What an apply wrote: the fields and entries, and the item as seen through them (no echo)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from instances.connectors.base import written_value_seen
from replicas.pipeline.merge import ITEM_FIELDS, LISTS_BY_ID


class Written:
    """What one apply wrote to the local item: fields (with the values written), and the ids of the comments
    and attachments it created or edited, and of those it deleted."""

    def __init__(self) -> None:
        self.fields: dict[str, Any] = {}
        self.entries: dict[str, set[str]] = {key: set() for key in LISTS_BY_ID}
        self.removed: dict[str, set[str]] = {key: set() for key in LISTS_BY_ID}

    def view(
        self, before: dict[str, Any], applied: dict[str, Any], *, own_change: Callable[[], bool | None]
    ) -> tuple[dict[str, Any], bool]:
        """The item as the apply left it, seen only through what the apply wrote, and whether a person
        edited the item while the apply ran (between its first read and its read-back).

        ``applied`` (read back from the tracker, so its own formatting counts) gives the written fields and
        entries, ``before`` everything else: whatever else differs between the two reads is a person's edit
        made while the apply ran, and stays a change to send. A written field read back with another value
        than the one written (``written_value_seen``) is the tracker's reformatting when ``own_change()``
        (the tracker's history) says the item's latest change is the node's; otherwise a person edited that
        very field after the write, and the view keeps the value written, so the person's value is sent.
        """
        seen = dict(applied)
        person = False
        for field in ITEM_FIELDS:
            if field in self.fields:
                written = self.fields[field]
                if not written_value_seen(field, written, applied.get(field)):
                    if own_change() is not True:
                        seen[field], person = written, True
                continue
            if field in before:
                seen[field] = before[field]
            else:
                seen.pop(field, None)
            person = person or not written_value_seen(field, before.get(field), applied.get(field))
        for key in LISTS_BY_ID:
            old = {str(e.get("id")): e for e in before.get(key) or [] if isinstance(e, dict)}
            written, removed = self.entries[key], self.removed[key]
            entries, listed = [], set()
            for entry in applied.get(key) or []:
                eid = str(entry.get("id")) if isinstance(entry, dict) else None
                if eid in written:
                    entries.append(entry)
                elif eid in old:
                    entries.append(old[eid])  # as it was: a person may have edited it meanwhile
                    person = person or old[eid] != entry
                else:
                    person = True
                    continue  # added by a person meanwhile
                listed.add(eid)
            # Gone from the re-read but not deleted by the apply: a person deleted it meanwhile.
            gone = [e for eid, e in old.items() if eid not in listed and eid not in removed]
            entries += gone
            person = person or bool(gone)
            seen[key] = entries
        return seen, person
