"""The connector interface every tracker implements, and the registry of connectors by tracker type.

Items cross this interface in the replica's shape (a *hubIssue* dict): ``id``, ``key``, ``url``,
``summary``, ``description``, ``status {name}``, ``priority {name}``, ``type {name}``, ``labels``,
``assignee {email, displayName}``, ``reporter``, ``dueDate``, ``parentId``, ``created``, ``updated``,
``comments [{id, body, author, created, updated, internal}]``,
``attachments [{id, filename, mimeType, size, sha256, created}]``, ``project {idStr, key, name}``,
``customFields {}``. Writes take the same field names, and only the fields that change.
"""

from __future__ import annotations

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


def register(cls: type[Connector]) -> type[Connector]:
    Connector.registry[cls.tracker_type] = cls
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
