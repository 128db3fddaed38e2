"""The connector interface every tracker implements, and the registry of connectors by tracker type.

Items cross this interface in the replica's shape (a *hubIssue* dict): ``id``, ``key``, ``url``,
``summary``, ``description``, ``status {name}``, ``priority {name}``, ``type {name}``, ``labels``,
``assignee {email, displayName}``, ``reporter``, ``dueDate``, ``parentId``, ``created``, ``updated``,
``comments [{id, body, author, created, updated, internal}]``,
``attachments [{id, filename, mimeType, size, sha256, created}]``, ``project {idStr, key, name}``,
``customFields {}``. Writes take the same field names, and only the fields that change.
"""

from __future__ import annotations

import functools
import unicodedata
from abc import ABC, abstractmethod
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import IO, TYPE_CHECKING, Any, ClassVar

from exalate_node.redaction import redact

if TYPE_CHECKING:
    from instances.models import Instance

NODE_ACTOR_PREFIX = "exalate-node"


@dataclass(frozen=True)
class ItemRef:
    """Where an item is: its tracker id, human key, browser URL and last update time (ISO 8601)."""

    id: str
    key: str
    url: str = ""
    updated: str = ""


class ConnectorError(Exception):
    """A tracker call failed. ``retryable`` is true for outages and rate limits (try again later), false
    when the tracker refused the request (fix the data, rules or credentials, then retry). The message may
    quote the tracker, so the secret values the node knows are redacted from it here."""

    def __init__(self, message: str, *, retryable: bool = False, status: int | None = None) -> None:
        message = redact(message)
        super().__init__(message)
        self.message = message
        self.retryable = retryable
        self.status = status


class Connector(ABC):
    """One tracker instance seen through the interface the pipeline uses.

    ``actor`` names who writes: the pipeline passes ``exalate-node:<connection uid>`` so its own writes
    can be recognised and not synced back to the connection that made them.
    """

    tracker_type: ClassVar[str]
    registry: ClassVar[dict[str, type[Connector]]] = {}
    # The shortest time between two polls the tracker tolerates (instances.polling.poll_plan keeps to it).
    min_poll_interval_s: ClassVar[float] = 0.0

    def __init__(self, instance: Instance, *, actor: str = NODE_ACTOR_PREFIX) -> None:
        self.instance = instance
        self.actor = actor

    # --- reads -------------------------------------------------------------------------------------------
    @abstractmethod
    def get_item(self, item_id: str) -> dict[str, Any]:
        """The item with its comments and attachments, in the hubIssue shape."""

    @abstractmethod
    def find_item(self, key: str) -> ItemRef | None:
        """The item with this human key (``DEMO-12``, ``#42``), or None."""

    def search_updated_since(
        self, cursor: str | None, *, limit: int = 100
    ) -> tuple[list[ItemRef], str | None]:
        """Items updated since ``cursor`` (oldest first) and the next cursor. Polling connectors override."""
        return [], cursor

    def metadata(self) -> dict[str, list[Any]]:
        """What the sync rules' node_helper can look up: statuses, priorities, types, users."""
        return {"statuses": [], "priorities": [], "types": [], "users": []}

    def is_own_change(self, item: Mapping[str, Any]) -> bool | None:
        """Whether the item's latest change was made by this node's account, from the tracker's history
        (Redmine journals, the Jira changelog, ...) or from what the node's own writes left; None when the
        connector cannot tell.

        Asked only when an item read back right after an apply shows a written field with a value other
        than the one written: True means the tracker reformatted what the node wrote (it is still in sync),
        anything else that a person edited the field in between (the person's value must be sent).
        """
        return None

    def field_edit_times(self, item: Mapping[str, Any]) -> dict[str, str]:
        """When a person (anyone but this connector's actor) last edited each hubIssue field of ``item``,
        from the tracker's per-field history: an ISO 8601 time, or "" for a field nobody but the node has
        set since the item was created; a field left out is unknown (the item's ``updated`` stands for it).
        {} when the tracker keeps no such history. Conflicts and reconciliation compare these times field by
        field, so a later edit of another field does not make an earlier (or no) edit of this one win."""
        return {}

    def find_created(self, fields: Mapping[str, Any], *, since: datetime) -> list[ItemRef]:
        """Items this node's account created at or after ``since`` with the summary ``create_item(fields)``
        would give, in the project it would create them in, newest first.

        Asked only before repeating a create whose earlier attempt may have succeeded unheard (its answer
        was lost, or the worker died waiting for it), so that the retry adopts that item instead of making
        a second one. A connector that cannot tell returns [] and the create is repeated.
        """
        return []

    # --- writes ------------------------------------------------------------------------------------------
    @abstractmethod
    def create_item(self, fields: Mapping[str, Any]) -> ItemRef: ...

    @abstractmethod
    def update_item(self, item_id: str, changes: Mapping[str, Any]) -> None: ...

    @abstractmethod
    def add_comment(self, item_id: str, *, body: str, internal: bool = False, author: str = "") -> str: ...

    @abstractmethod
    def update_comment(self, item_id: str, comment_id: str, *, body: str) -> None: ...

    @abstractmethod
    def delete_comment(self, item_id: str, comment_id: str) -> None: ...

    @abstractmethod
    def add_attachment(self, item_id: str, *, filename: str, mime_type: str, content: IO[bytes]) -> str: ...

    @abstractmethod
    def delete_attachment(self, item_id: str, attachment_id: str) -> None: ...

    @abstractmethod
    def open_attachment(self, item_id: str, attachment_id: str) -> Iterator[bytes]:
        """The attachment's content as a stream of chunks."""

    # --- queries (triggers, bulk operations) -------------------------------------------------------------
    def query_validate(self, query: str) -> None:
        """Raise ConnectorError with the tracker's own message when ``query`` is not valid."""
        raise ConnectorError(
            f"Triggers are not supported for {self.instance.get_tracker_type_display()} yet.", status=400
        )

    def query_matches(self, query: str, item: dict[str, Any]) -> bool:
        """Whether an item (in the hubIssue shape) matches the query."""
        self.query_validate(query)
        return False

    def query_search(self, query: str, *, after: str | None = None, limit: int = 100) -> list[ItemRef]:
        """Items matching the query in a stable order, the page after the item id ``after``."""
        self.query_validate(query)
        return []

    # --- housekeeping ------------------------------------------------------------------------------------
    def test_credentials(self) -> str:
        """A one-line description of what the credentials reach; raises ConnectorError when they don't."""
        return "ok"


# The writes the pipeline makes through a connector: each one tells polling that the tracker is active.
WRITE_METHODS = (
    "create_item",
    "update_item",
    "add_comment",
    "update_comment",
    "delete_comment",
    "add_attachment",
    "delete_attachment",
)


def _noting_activity(method: Any) -> Any:
    @functools.wraps(method)
    def write(self: Connector, *args: Any, **kwargs: Any) -> Any:
        result = method(self, *args, **kwargs)
        from instances.polling import note_activity

        note_activity(self.instance)  # a person often answers the node's change soon: poll faster a while
        return result

    write.notes_activity = True  # type: ignore[attr-defined]
    return write


def register(cls: type[Connector]) -> type[Connector]:
    Connector.registry[cls.tracker_type] = cls
    for name in WRITE_METHODS:
        method = getattr(cls, name, None)
        if callable(method) and not getattr(method, "notes_activity", False):
            setattr(cls, name, _noting_activity(method))
    return cls


CONNECTOR_MODULES = (
    "builtin",
    "redmine",
    "github",
    "jira",
    "gitlab",
    "zendesk",
    "servicenow",
    "azure",
    "salesforce",
)


def load_connectors() -> None:
    """Import every connector module that exists (each registers itself)."""
    import importlib
    import importlib.util

    for name in CONNECTOR_MODULES:
        module = f"instances.connectors.{name}"
        if importlib.util.find_spec(module) is not None:
            importlib.import_module(module)


def get_connector(instance: Instance, *, actor: str = NODE_ACTOR_PREFIX) -> Connector:
    """The connector for a local instance's tracker type."""
    load_connectors()
    try:
        cls = Connector.registry[instance.tracker_type]
    except KeyError:
        raise ConnectorError(
            f"No connector for tracker type '{instance.tracker_type}' on this node. "
            f"Supported: {', '.join(sorted(Connector.registry))}."
        )
    return cls(instance, actor=actor)


# --- comparing what was written with what is read back ------------------------------------------------------

_IDENTITY_KEYS = ("email", "accountId", "login", "name", "value", "displayName", "id")


def _blank(value: Any) -> bool:
    return value is None or value == "" or value == [] or value == {}


def _text(value: str) -> str:
    """Text as trackers store it, up to their usual reformatting: line ends (Redmine stores CRLF),
    trailing spaces, Unicode normal form."""
    lines = unicodedata.normalize("NFC", value).replace("\r\n", "\n").replace("\r", "\n").split("\n")
    return "\n".join(line.rstrip() for line in lines).strip()


def _token(value: Any) -> str:
    if isinstance(value, Mapping):
        return "|".join(_token(value.get(k)) for k in _IDENTITY_KEYS if not _blank(value.get(k)))
    return _text(str(value)).casefold() if value is not None else ""


def written_value_seen(field: str, written: Any, read: Any) -> bool:
    """Whether ``read`` (a field as read back right after a write) shows ``written``, up to the formatting a
    tracker applies to what it stores: line ends and trailing spaces, the case of names, the order of
    labels, extra keys (ids) a tracker adds to a status or a person, a date written as a datetime.

    When it does not, either the tracker changed the value in a way not modelled here, or a person edited
    the field after the write; ``Connector.is_own_change`` tells the two apart where the tracker keeps a
    history.
    """
    if _blank(written) and _blank(read):
        return True
    if field == "customFields" and isinstance(written, Mapping):
        other = read if isinstance(read, Mapping) else {}
        return all(written_value_seen("", value, other.get(name)) for name, value in written.items())
    if isinstance(written, Mapping) and isinstance(read, Mapping):
        common = [k for k in _IDENTITY_KEYS if not _blank(written.get(k)) and not _blank(read.get(k))]
        # A tracker that hides e-mails, or knows a status by name only: nothing to compare means no evidence.
        return not common or _token(written.get(common[0])) == _token(read.get(common[0]))
    if isinstance(written, list | tuple) and isinstance(read, list | tuple):
        return sorted(map(_token, written)) == sorted(map(_token, read))
    if isinstance(written, bool) or isinstance(read, bool):
        return written == read
    if isinstance(written, int | float) and isinstance(read, int | float):
        return float(written) == float(read)
    if isinstance(written, str) and isinstance(read, str) and field == "dueDate":
        return written[:10] == read[:10]
    if isinstance(written, str | int | float) and isinstance(read, str | int | float):
        return _text(str(written)) == _text(str(read))
    return written == read
