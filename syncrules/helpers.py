"""Helpers available to sync rule scripts.

Every object a script can reach is either plain JSON-like data (dict, list, str, int, float,
bool, None) or an instance of a :class:`Helper` subclass listed here.  Scripts can only call the
methods named in a helper's ``_exposed`` set (the engine's attribute guard enforces it) and can
never write attributes on helpers.

The helpers hold a reference to the per-run :class:`RunState`; a new set of helper objects is
created for every run, so nothing leaks from one run (or one connection) to the next.

This module must not import Django.
"""

from __future__ import annotations

import marshal
from typing import Any

LOG_LINE_MAX_CHARS = 1000
LOG_MAX_LINES = 200
_AUTHOR_PREFIX_END = "] "


class ScriptAbort(BaseException):  # noqa: N818 - not an error a script may handle
    """Stops a script run: timeout, size limit or forbidden operation.

    It derives from BaseException (not Exception) and the engine rewrites every ``except``
    clause of a script to catch only Exception subclasses, so a script can never swallow it.
    """

    def __init__(self, message: str, kind: str, line: int | None = None):
        super().__init__(message)
        self.message = message
        self.kind = kind
        self.line = line


class ReadOnlyDict(dict):
    """A dict that scripts can read but not change (used for ``connection``)."""

    __slots__ = ()


def read_only(value: Any) -> Any:
    """Deep-convert JSON data into read-only form (ReadOnlyDict / tuple)."""
    if isinstance(value, dict):
        return ReadOnlyDict({str(k): read_only(v) for k, v in value.items()})
    if isinstance(value, list | tuple):
        return tuple(read_only(v) for v in value)
    return value


def clone(value: Any) -> Any:
    """Fast deep copy of JSON-like data (marshal round trip; a slower walk for other dict types)."""
    try:
        return marshal.loads(marshal.dumps(value))  # noqa: S302 - our own bytes, never external
    except ValueError:  # dict subclasses and other non-marshal types
        return _clone_walk(value)


def _clone_walk(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _clone_walk(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_clone_walk(v) for v in value]
    return value


def _name_of(value: Any, key: str = "name") -> Any:
    """``{"name": "Open"}`` -> ``"Open"``; a plain value is returned unchanged."""
    if isinstance(value, dict):
        return value.get(key)
    return value


def _fold(value: Any) -> Any:
    return value.casefold() if isinstance(value, str) else value


class RunState:
    """Mutable state of one script run, shared by the helpers."""

    __slots__ = (
        "direction",
        "context",
        "previous",
        "replica",
        "first_sync",
        "log_lines",
        "log_dropped",
        "unexalate",
        "sync_back",
    )

    def __init__(
        self,
        direction: str,
        context: dict | None,
        *,
        replica: dict | None = None,
        previous: dict | None = None,
        first_sync: bool = False,
    ):
        self.direction = direction
        self.context = context or {}
        self.replica = replica
        self.previous = previous if previous is not None else {}
        self.first_sync = first_sync
        self.log_lines: list[str] = []
        self.log_dropped = 0
        self.unexalate = False
        self.sync_back = False

    def add_log(self, level: str, message: str) -> None:
        if len(self.log_lines) >= LOG_MAX_LINES:
            self.log_dropped += 1
            return
        if len(message) > LOG_LINE_MAX_CHARS:
            message = message[:LOG_LINE_MAX_CHARS] + "… (cut)"
        self.log_lines.append(f"{level}: {message}")

    def final_log(self) -> list[str]:
        if self.log_dropped:
            return [*self.log_lines, f"WARNING: {self.log_dropped} more log lines were dropped"]
        return list(self.log_lines)


class Helper:
    """Base class: scripts may call only the methods listed in ``_exposed``."""

    __slots__ = ("_state",)
    _exposed: frozenset[str] = frozenset()

    def __init__(self, state: RunState):
        self._state = state

    def __repr__(self) -> str:
        return f"<{type(self).__name__}>"


class LogHelper(Helper):
    """``log.info(msg)``, ``log.warn(msg)``, ``log.error(msg)``, ``log.debug(msg)``."""

    __slots__ = ("to_text",)
    _exposed = frozenset({"info", "warn", "warning", "error", "debug"})

    def __init__(self, state: RunState, to_text=str):
        super().__init__(state)
        # the engine passes a size-checked str() so huge nested values can't be rendered
        self.to_text = to_text

    def _add(self, level: str, parts: tuple) -> None:
        self._state.add_log(level, " ".join(p if isinstance(p, str) else self.to_text(p) for p in parts))

    def info(self, *msg: Any) -> None:
        self._add("INFO", msg)

    def warn(self, *msg: Any) -> None:
        self._add("WARNING", msg)

    warning = warn

    def error(self, *msg: Any) -> None:
        self._add("ERROR", msg)

    def debug(self, *msg: Any) -> None:
        self._add("DEBUG", msg)


def _author_prefix(author: Any) -> str:
    if not isinstance(author, dict):
        return ""
    name = author.get("displayName") or ""
    email = author.get("email") or ""
    if name and email:
        return f"[{name} <{email}>] "
    if name or email:
        return f"[{name or email}] "
    return ""


class CommentHelper(Helper):
    """Merges the remote comments into the local item, using the comment id mapping."""

    __slots__ = ()
    _exposed = frozenset({"merge_comments", "add_comment"})

    def merge_comments(
        self, issue: dict, replica: dict, internal: bool = False, author_prefix: bool = False
    ) -> list:
        """Apply remote comment additions, edits and deletions to ``issue["comments"]``.

        * a remote comment without a local twin (``remoteId``) is appended;
        * a remote comment edited since the previous sync updates its local twin;
        * a local comment whose ``remoteId`` the remote side had before (``previous``) and no longer has is
          removed; one the remote side simply has not seen yet (a concurrent sync) is kept;
        * local comments without ``remoteId`` (never synced) are kept untouched.
        """
        remote = [c for c in (replica.get("comments") or []) if isinstance(c, dict)]
        previous = {
            str(c.get("id")): c for c in (self._state.previous.get("comments") or []) if isinstance(c, dict)
        }
        local = list(issue.get("comments") or [])
        remote_ids = {str(rc.get("id")) for rc in remote}
        by_remote: dict[str, dict] = {}
        result = []
        for lc in local:
            rid = lc.get("remoteId") if isinstance(lc, dict) else None
            if rid is not None:
                if str(rid) not in remote_ids and str(rid) in previous:
                    continue  # deleted on the remote side
                by_remote[str(rid)] = lc
            result.append(lc)
        for rc in remote:
            rid = str(rc.get("id"))
            body = rc.get("body") or ""
            if author_prefix:
                body = _author_prefix(rc.get("author")) + body
            twin = by_remote.get(rid)
            if twin is None:
                new = {
                    "id": None,
                    "remoteId": rid,
                    "body": body,
                    "author": clone(rc.get("author")),
                    "internal": bool(internal),
                    "created": rc.get("created"),
                }
                result.append(new)
                by_remote[rid] = new
                continue
            prev = previous.get(rid)
            if prev is not None:
                edited_remotely = (prev.get("body") or "") != (rc.get("body") or "")
            else:
                edited_remotely = (twin.get("body") or "") != body
            if edited_remotely and twin.get("body") != body:
                twin["body"] = body
        if "comments" in issue or result:
            issue["comments"] = result
        return result

    def add_comment(self, issue: dict, body: Any, internal: bool = False) -> dict:
        """Append a new local comment (e.g. a note for the agents) and return it."""
        comment = {"id": None, "body": "" if body is None else str(body), "internal": bool(internal)}
        comments = issue.get("comments")
        if not isinstance(comments, list):
            comments = []
            issue["comments"] = comments
        comments.append(comment)
        return comment


_ATTACHMENT_KEYS = ("filename", "mimeType", "size", "sha256", "created")


class AttachmentHelper(Helper):
    """Merges remote attachments into the local item by id mapping (``remoteId``)."""

    __slots__ = ()
    _exposed = frozenset({"merge_attachments"})

    def merge_attachments(self, issue: dict, replica: dict) -> list:
        """Append new remote attachments; drop local copies of ones the remote side had before
        (``previous``) and removed; keep everything else."""
        remote = [a for a in (replica.get("attachments") or []) if isinstance(a, dict)]
        remote_ids = {str(a.get("id")) for a in remote}
        before = self._state.previous.get("attachments") or []
        had = {str(a.get("id")) for a in before if isinstance(a, dict)}
        known = set()
        result = []
        for la in issue.get("attachments") or []:
            rid = la.get("remoteId") if isinstance(la, dict) else None
            if rid is not None:
                if str(rid) not in remote_ids and str(rid) in had:
                    continue  # removed on the remote side
                known.add(str(rid))
            result.append(la)
        for ra in remote:
            rid = str(ra.get("id"))
            if rid in known:
                continue
            known.add(rid)
            new = {"id": None, "remoteId": rid}
            for key in _ATTACHMENT_KEYS:
                new[key] = ra.get(key)
            result.append(new)
        if "attachments" in issue or result:
            issue["attachments"] = result
        return result


class NodeHelper(Helper):
    """Looks up users, statuses, priorities and issue types known on this (local) side."""

    __slots__ = ()
    _exposed = frozenset({"get_user", "get_status", "get_priority", "get_issue_type"})

    def get_user(self, email: Any, default: Any = None) -> Any:
        """Local user with this e-mail (case-insensitive) as ``{"email", "displayName"}``.

        ``email`` may also be a user object (``replica.assignee``).
        """
        email = _name_of(email, "email")
        if not isinstance(email, str) or not email:
            return default
        wanted = email.casefold()
        for user in self._state.context.get("users") or ():
            if isinstance(user, dict) and str(user.get("email") or "").casefold() == wanted:
                return {"email": user.get("email"), "displayName": user.get("displayName")}
        return default

    def _lookup(self, names_key: str, name: Any, default: Any) -> Any:
        name = _name_of(name)
        known = self._state.context.get(names_key)
        if isinstance(name, str) and name:
            if not known:
                # the node does not know this tracker's list: pass the name through
                return {"name": name}
            wanted = name.casefold()
            for candidate in known:
                if isinstance(candidate, str) and candidate.casefold() == wanted:
                    return {"name": candidate}
        if isinstance(default, str):
            return {"name": default}
        return default

    def get_status(self, name: Any, default: Any = None) -> Any:
        return self._lookup("statuses", name, default)

    def get_priority(self, name: Any, default: Any = None) -> Any:
        return self._lookup("priorities", name, default)

    def get_issue_type(self, name: Any, default: Any = None) -> Any:
        return self._lookup("types", name, default)


class SyncHelper(Helper):
    """Questions about the sync itself, and control flags for the pipeline."""

    __slots__ = ()
    _exposed = frozenset({"is_under_sync", "local_key", "remote_url", "unexalate", "sync_back"})

    def _service(self, name: str):
        services = self._state.context.get("services")
        fn = getattr(services, name, None) if services is not None else None
        if fn is None and isinstance(services, dict):
            fn = services.get(name)
        return fn if callable(fn) else None

    def is_under_sync(self, key: Any) -> bool:
        fn = self._service("is_under_sync")
        return bool(fn(str(key))) if fn else False

    def local_key(self, remote_id: Any) -> str | None:
        fn = self._service("local_key_for_remote")
        result = fn(str(remote_id)) if fn else None
        return None if result is None else str(result)

    def remote_url(self, remote_key: Any) -> str | None:
        fn = self._service("remote_url")
        result = fn(str(remote_key)) if fn else None
        return None if result is None else str(result)

    def unexalate(self) -> None:
        """Stop syncing this item after this event."""
        self._state.unexalate = True

    def sync_back(self) -> None:
        """Ask the pipeline to send the local item back to the other side after this change."""
        self._state.sync_back = True


class MappingHelper(Helper):
    """Value maps: ``mapping.map(value, {"Open": "To Do"}, "To Do")``."""

    __slots__ = ()
    _exposed = frozenset({"map", "map_name", "map_user"})

    def map(self, value: Any, table: Any, default: Any = None) -> Any:
        """Look ``value`` up in ``table``; exact match first, then case-insensitive.

        ``value`` may be a ``{"name": ...}`` object (status, priority, type): its name is used.
        Returns the mapped plain value, or ``default`` when there is no match.
        """
        if not isinstance(table, dict):
            raise TypeError("mapping.map(value, table, default): table must be a dict")
        key = _name_of(value)
        try:
            if key in table:
                return table[key]
        except TypeError:  # unhashable value
            return default
        folded = _fold(key)
        if isinstance(key, str):
            for k, v in table.items():
                if _fold(k) == folded:
                    return v
        return default

    def map_name(self, value: Any, table: Any, default: Any = None) -> Any:
        """Like map() but returns ``{"name": result}`` (or None), ready for status/priority/type."""
        result = self.map(value, table, default)
        if result is None or isinstance(result, dict):
            return result
        return {"name": result}

    def map_user(self, user: Any, table: Any, default: Any = None) -> Any:
        """Map a remote user (object or e-mail) by e-mail to a local user via node_helper.get_user."""
        email = self.map(_name_of(user, "email"), table, None)
        if email is None:
            return default
        return NodeHelper(self._state).get_user(email, default)


def changed_fn(state: RunState):
    """Build ``changed(field)`` for a run.

    Incoming: True on the first sync, or when ``previous[field] != replica[field]``; dotted paths
    such as ``"status.name"`` or ``"customFields.Severity"`` are supported.  Outgoing: always True.
    """

    def _path(data: Any, path: str) -> Any:
        for part in path.split("."):
            if not isinstance(data, dict):
                return None
            data = data.get(part)
        return data

    def changed(field: str) -> bool:
        if not isinstance(field, str):
            raise TypeError("changed(field) expects a field name such as 'summary'")
        if state.direction != "incoming" or state.first_sync:
            return True
        return _path(state.previous, field) != _path(state.replica or {}, field)

    return changed
