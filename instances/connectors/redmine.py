"""Connector for Redmine (tested against 5.0) over its REST API with an API key.

Instance configuration: ``url`` is Redmine's base URL, ``credentials`` is ``{"api_key": "..."}``, and
``settings`` may hold ``project`` (the identifier new issues go to and polling is limited to), ``tracker_id``
(the default tracker for new issues) and ``rate_limit_per_s``.

How Redmine maps onto the hubIssue: ``#<id>`` is the key; the tracker is the type; journals with notes are
comments (private notes are internal); custom fields are keyed by name; Redmine has no labels (read as ``[]``,
ignored on write) and its reporter (the author) cannot be changed. Redmine 5.0 sends no webhooks: changes are
found by polling ``updated_on`` (``search_updated_since``). Comments cannot be deleted through the REST API:
deleting one blanks its notes, which makes Redmine drop the journal when it records no field change.

Every write is made by the API key's Redmine user; ``is_own_change`` tells the node's writes from people's
by the author of the newest journal, so the node should have a Redmine user of its own.
"""

from __future__ import annotations

import hashlib
import json
import re
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from datetime import UTC, datetime, timedelta
from typing import IO, Any
from urllib.parse import quote

from instances.connectors._common import SeenWindow
from instances.connectors.base import Connector, ConnectorError, ItemRef, register
from instances.connectors.http import HttpClient

PAGE = 100  # Redmine's maximum page size
OVERLAP = timedelta(seconds=5)  # re-read this far behind the cursor: commits land late, clocks differ
CACHE_TTL = 300.0  # seconds that statuses, priorities, trackers and users are remembered
SHA256_MAX_BYTES = 16 * 1024 * 1024  # hash attachments up to this size by reading them (setting overrides)

HINTS = {
    401: "the API key was rejected. Check the key in the instance's credentials (Redmine: My account → "
    "API access key) and that the REST API is on (Administration → Settings → API).",
    403: "the API key's user has no permission for this. Check the user's role in the project.",
    404: "it does not exist or the API key's user cannot see it. Check the project and the user's role.",
    422: "Redmine rejected the values. Check the sync rules' mapping for this project.",
}

_SHA256_RE = re.compile(r"^[0-9a-f]{64}$")

# Per-process memory shared by the connectors of one Redmine account (instances are created per call).
_cache: dict[tuple[str, ...], tuple[float, Any]] = {}
_seen = SeenWindow()  # per account: the (issue id, updated_on) pairs polls returned
_lock = threading.Lock()


def _cached(key: tuple[str, ...], load: Callable[[], Any], *, ttl: float = CACHE_TTL) -> Any:
    now = time.monotonic()
    with _lock:
        hit = _cache.get(key)
    if hit and hit[0] > now:
        return hit[1]
    value = load()
    with _lock:
        _cache[key] = (now + ttl, value)
    return value


def _forget(prefix: tuple[str, ...]) -> None:
    with _lock:
        for key in [k for k in _cache if k[: len(prefix)] == prefix]:
            del _cache[key]


def _ts(value: str) -> datetime:
    return datetime.fromisoformat(value.replace("Z", "+00:00"))


def _fmt(value: datetime) -> str:
    return value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def sha256_of(digest: str | None) -> str | None:
    """Redmine's attachment digest when it is a SHA-256 (Redmine 4+); older MD5 digests give None."""
    value = (digest or "").lower()
    return value if _SHA256_RE.match(value) else None


def issue_key(item_id: Any) -> str:
    return f"#{item_id}"


def parse_key(key: str) -> str | None:
    """The issue id in ``#42``, ``42`` or a Redmine issue URL; None when ``key`` is not one."""
    match = re.fullmatch(r"\s*(?:.*/issues/|#)?(\d+)\s*", str(key))
    return match.group(1) if match else None


def to_hub(
    issue: Mapping[str, Any],
    *,
    base_url: str,
    person: Callable[[Mapping[str, Any] | None], dict[str, Any] | None],
    project: Mapping[str, Any] | None = None,
    sha256: Callable[[Mapping[str, Any]], str | None] = lambda att: sha256_of(att.get("digest")),
) -> dict[str, Any]:
    """A Redmine issue (with ``journals`` and ``attachments``) in the hubIssue shape.

    ``person`` turns Redmine's ``{"id", "name"}`` user reference into ``{email, displayName}``;
    ``project`` is the project's full record (the issue carries only its id and name); ``sha256`` gives an
    attachment's SHA-256 (Redmine 5.0's API does not show its digest).
    """
    proj = project or issue.get("project") or {}
    comments = [
        {
            "id": str(j["id"]),
            "body": j["notes"],
            "author": person(j.get("user")),
            "created": j.get("created_on"),
            "updated": j.get("updated_on") or j.get("created_on"),  # Redmine 5.1+ has updated_on
            "internal": bool(j.get("private_notes")),
        }
        for j in sorted(issue.get("journals") or [], key=lambda j: (j.get("created_on") or "", j["id"]))
        if (j.get("notes") or "").strip()
    ]
    attachments = [
        {
            "id": str(a["id"]),
            "filename": a.get("filename"),
            "mimeType": a.get("content_type") or "application/octet-stream",
            "size": a.get("filesize"),
            "sha256": sha256(a),
            "created": a.get("created_on"),
        }
        for a in sorted(issue.get("attachments") or [], key=lambda a: (a.get("created_on") or "", a["id"]))
    ]
    custom: dict[str, Any] = {}
    for field in issue.get("custom_fields") or []:
        custom[field["name"]] = field.get("value")
    return {
        "id": str(issue["id"]),
        "key": issue_key(issue["id"]),
        "url": f"{base_url.rstrip('/')}/issues/{issue['id']}",
        "summary": issue.get("subject") or "",
        "description": issue.get("description") or None,
        "status": {"name": (issue.get("status") or {}).get("name")},
        "priority": {"name": (issue.get("priority") or {}).get("name")},
        "type": {"name": (issue.get("tracker") or {}).get("name")},
        "labels": [],
        "assignee": person(issue.get("assigned_to")),
        "reporter": person(issue.get("author")),
        "dueDate": issue.get("due_date"),
        "parentId": str(issue["parent"]["id"]) if issue.get("parent") else None,
        "created": issue.get("created_on"),
        "updated": issue.get("updated_on"),
        "project": {
            "idStr": str(proj.get("id", "")),
            "key": proj.get("identifier") or "",
            "name": proj.get("name") or "",
        },
        "customFields": custom,
        "comments": comments,
        "attachments": attachments,
    }


# Redmine journal detail names (property "attr") of the hubIssue fields; custom fields are property "cf".
JOURNAL_FIELDS = {
    "subject": "summary",
    "description": "description",
    "status_id": "status",
    "priority_id": "priority",
    "tracker_id": "type",
    "assigned_to_id": "assignee",
    "due_date": "dueDate",
    "parent_id": "parentId",
    "cf": "customFields",
}


def last_change_author(issue: Mapping[str, Any]) -> int | None:
    """The Redmine user id who made the issue's latest change: the newest journal's user, else the author."""
    journals = issue.get("journals") or []
    if journals:
        newest = max(journals, key=lambda j: (j.get("created_on") or "", j["id"]))
        return (newest.get("user") or {}).get("id")
    return (issue.get("author") or {}).get("id")


@register
class RedmineConnector(Connector):
    """A Redmine instance. Item ids are issue ids; comment ids are journal ids; attachment ids likewise."""

    tracker_type = "redmine"

    _http: HttpClient | None = None

    # --- plumbing ----------------------------------------------------------------------------------------
    @property
    def api_key(self) -> str:
        try:
            creds = json.loads(self.instance.credentials or "{}")
        except ValueError:
            creds = {}
        key = creds.get("api_key") if isinstance(creds, dict) else None
        if not key:
            raise ConnectorError(
                f"{self.instance.name} has no Redmine API key. Set credentials to "
                '{"api_key": "..."} (Redmine: My account → API access key).'
            )
        return str(key)

    @property
    def base_url(self) -> str:
        if not self.instance.url:
            raise ConnectorError(f"{self.instance.name} has no URL. Set it to Redmine's base URL.")
        return self.instance.url.rstrip("/")

    @property
    def http(self) -> HttpClient:
        if self._http is None:
            self._http = HttpClient(
                self.base_url,
                service="Redmine",
                headers={"X-Redmine-API-Key": self.api_key, "Accept": "application/json"},
                bucket_key=self.instance.uid,
                rate_per_s=float((self.instance.settings or {}).get("rate_limit_per_s", 10)),
                hints=HINTS,
            )
        return self._http

    @http.setter
    def http(self, client: HttpClient) -> None:
        self._http = client

    @property
    def account(self) -> str:
        """Identifies the Redmine account (URL and key) for the per-process caches, without the key."""
        digest = hashlib.sha256(f"{self.base_url}\n{self.api_key}".encode()).hexdigest()[:16]
        return f"{self.instance.uid}:{digest}"

    def _settings(self) -> dict[str, Any]:
        return dict(self.instance.settings or {})

    def ref(self, issue: Mapping[str, Any]) -> ItemRef:
        return ItemRef(
            id=str(issue["id"]),
            key=issue_key(issue["id"]),
            url=f"{self.base_url}/issues/{issue['id']}",
            updated=issue.get("updated_on") or "",
        )

    def _raw_issue(self, item_id: str, include: str = "journals,attachments") -> dict[str, Any]:
        if not str(item_id).isdigit():
            raise ConnectorError(f"'{item_id}' is not a Redmine issue id.", status=404)
        data = self.http.get_json(
            f"issues/{item_id}.json", params={"include": include}, action=f"read issue #{item_id}"
        )
        return data["issue"]

    # --- people ------------------------------------------------------------------------------------------
    def me(self) -> dict[str, Any]:
        """The API key's Redmine user (cached per process): the node writes as this user."""
        return _cached(
            ("me", self.account),
            lambda: self.http.get_json("users/current.json", action="read the API key's user")["user"],
            ttl=3600.0,
        )

    def _user(self, user_id: int) -> dict[str, Any] | None:
        def load() -> dict[str, Any] | None:
            response = self.http.request(
                "GET", f"users/{user_id}.json", action=f"read user {user_id}", ok_statuses=(403, 404)
            )
            return response.json().get("user") if response.status_code == 200 else None

        return _cached(("user", self.account, str(user_id)), load)

    def person(self, ref: Mapping[str, Any] | None) -> dict[str, Any] | None:
        """``{email, displayName}`` for a user reference; the e-mail is None when Redmine hides it."""
        if not ref or ref.get("id") is None:
            return None
        user = self._user(int(ref["id"]))
        return {"email": (user or {}).get("mail") or None, "displayName": ref.get("name") or ""}

    def _user_id_for(self, who: Mapping[str, Any] | None) -> int | str:
        """The Redmine user id for ``{email}`` (or ``{id}``); "" for nobody."""
        if not who:
            return ""
        if who.get("id") and str(who["id"]).isdigit():
            return int(who["id"])
        email = (who.get("email") or "").strip().lower()
        if not email:
            return ""
        if not self.me().get("admin"):
            raise ConnectorError(
                f"Cannot assign to {email}: finding Redmine users by e-mail needs an administrator's API "
                f"key. Map assignees to Redmine user ids in the sync rules, or use an admin key."
            )
        found = self.http.get_json("users.json", params={"name": email}, action=f"find the user {email}")
        for user in found.get("users", []):
            if (user.get("mail") or "").lower() == email:
                return int(user["id"])
        raise ConnectorError(f"Redmine has no user with the e-mail {email}. Create it or change the mapping.")

    # --- names ↔ ids -------------------------------------------------------------------------------------
    def _catalog(self, kind: str) -> dict[str, int]:
        """Name → id of ``statuses``, ``priorities`` or ``trackers`` (cached per process)."""
        path, root = {
            "statuses": ("issue_statuses.json", "issue_statuses"),
            "priorities": ("enumerations/issue_priorities.json", "issue_priorities"),
            "trackers": ("trackers.json", "trackers"),
        }[kind]

        def load() -> dict[str, int]:
            rows = self.http.get_json(path, action=f"list the {kind}")[root]
            return {r["name"]: int(r["id"]) for r in rows if r.get("active", True)}

        return _cached(("catalog", self.account, kind), load)

    def _id_for(self, kind: str, name: str) -> int:
        singular = {"statuses": "status", "priorities": "priority", "trackers": "tracker (type)"}[kind]
        for attempt in range(2):
            catalog = self._catalog(kind)
            for known, ident in catalog.items():
                if known.casefold() == str(name).strip().casefold():
                    return ident
            if attempt == 0:
                _forget(("catalog", self.account, kind))  # maybe added since we looked: look again
        raise ConnectorError(
            f"Redmine has no {singular} '{name}'. Valid {kind}: {', '.join(catalog)}. "
            f"Fix the sync rules' mapping or add it in Redmine.",
            status=422,
        )

    def _project(self, project_id: Any) -> dict[str, Any]:
        return _cached(
            ("project", self.account, str(project_id)),
            lambda: self.http.get_json(f"projects/{project_id}.json", action=f"read project {project_id}")[
                "project"
            ],
            ttl=3600.0,
        )

    def _custom_fields(self, issue: Mapping[str, Any] | None) -> dict[str, int]:
        if issue is not None and issue.get("custom_fields"):
            return {f["name"]: int(f["id"]) for f in issue["custom_fields"]}
        if not self.me().get("admin"):
            return {}
        rows = _cached(
            ("customfields", self.account),
            lambda: self.http.get_json("custom_fields.json", action="list the custom fields")[
                "custom_fields"
            ],
        )
        return {f["name"]: int(f["id"]) for f in rows if f.get("customized_type") == "issue"}

    def _payload(
        self, changes: Mapping[str, Any], *, issue: Mapping[str, Any] | None = None
    ) -> dict[str, Any]:
        """Redmine's ``issue`` body for hubIssue field changes (only the fields given)."""
        out: dict[str, Any] = {}
        for name, value in changes.items():
            if name == "summary":
                out["subject"] = str(value or "(no summary)")
            elif name == "description":
                out["description"] = value or ""
            elif name in ("status", "priority", "type"):
                if value and value.get("name"):
                    kind = {"status": "statuses", "priority": "priorities", "type": "trackers"}[name]
                    field = {"status": "status_id", "priority": "priority_id", "type": "tracker_id"}[name]
                    out[field] = self._id_for(kind, value["name"])
            elif name == "assignee":
                out["assigned_to_id"] = self._user_id_for(value)
            elif name == "dueDate":
                out["due_date"] = value or None
            elif name == "parentId":
                out["parent_issue_id"] = int(value) if str(value or "").isdigit() else None
            elif name == "customFields" and value:
                ids = self._custom_fields(issue)
                unknown = [k for k in value if k not in ids]
                if unknown:
                    raise ConnectorError(
                        f"Redmine has no custom field {', '.join(map(repr, unknown))} on this issue. "
                        f"Valid custom fields: {', '.join(ids) or '(none)'}.",
                        status=422,
                    )
                out["custom_fields"] = [{"id": ids[k], "value": v} for k, v in value.items()]
            # labels (Redmine has none), reporter (fixed), comments and attachments (own calls): ignored
        return out

    # --- reads -------------------------------------------------------------------------------------------
    def get_item(self, item_id: str) -> dict[str, Any]:
        issue = self._raw_issue(item_id)
        self._last_read = issue  # its journals answer field_edit_times without another request
        project = self._project(issue["project"]["id"])
        return to_hub(
            issue,
            base_url=self.base_url,
            person=self.person,
            project=project,
            sha256=lambda att: self._sha256(str(issue["id"]), att),
        )

    def _sha256(self, item_id: str, att: Mapping[str, Any]) -> str | None:
        """An attachment's SHA-256: Redmine's digest when the API shows it (not 5.0), else the one
        remembered from the node's own upload, else computed by reading the file once (an attachment's
        content never changes) when it is at most ``sha256_max_bytes`` (setting; 0 turns this off)."""
        known = sha256_of(att.get("digest"))
        if known:
            return known
        limit = int(self._settings().get("sha256_max_bytes", SHA256_MAX_BYTES))
        if (att.get("filesize") or 0) > limit:
            return None

        def compute() -> str:
            digest = hashlib.sha256()
            for chunk in self.open_attachment(item_id, str(att["id"])):
                digest.update(chunk)
            return digest.hexdigest()

        return _cached(("sha256", self.account, str(att["id"])), compute, ttl=7 * 86400.0)

    # --- queries: Redmine's own issue filters, as a query string ----------------------------------------
    # e.g. "tracker_id=1&status_id=open&priority_id=4" or "subject=~printer" (GET /issues.json filters).
    QUERY_FILTERS = frozenset(
        {
            "project_id", "subproject_id", "tracker_id", "status_id", "assigned_to_id", "parent_id",
            "priority_id", "author_id", "category_id", "fixed_version_id", "created_on", "updated_on",
            "closed_on", "start_date", "due_date", "subject", "description", "is_private", "watcher_id",
        }
    )  # fmt: skip

    def _query_params(self, query: str) -> dict[str, str]:
        from urllib.parse import parse_qsl

        try:
            pairs = parse_qsl(query.strip().lstrip("?"), keep_blank_values=True, strict_parsing=True)
        except ValueError:
            raise ConnectorError(
                "A Redmine trigger is a filter query string such as 'tracker_id=1&status_id=open'.",
                status=400,
            )
        params: dict[str, str] = {}
        for name, value in pairs:
            if name not in self.QUERY_FILTERS and not re.fullmatch(r"cf_\d+", name):
                raise ConnectorError(
                    f"Redmine has no issue filter {name!r}. Use {', '.join(sorted(self.QUERY_FILTERS))} or "
                    "cf_<custom field id>.",
                    status=400,
                )
            params[name] = value
        params.setdefault("status_id", "*")  # Redmine lists only open issues unless told otherwise
        if self._settings().get("project"):
            params.setdefault("project_id", self._settings()["project"])
        return params

    def _query(self, params: dict[str, Any]) -> dict[str, Any]:
        try:
            return self.http.get_json(
                "issues.json", params=params, action="search issues with the trigger's filter"
            )
        except ConnectorError as exc:
            if exc.status in (404, 422):
                raise ConnectorError(f"Redmine refused the filter: {exc.message}", status=400)
            raise

    def query_validate(self, query: str) -> None:
        self._query({**self._query_params(query), "limit": 1})

    def query_matches(self, query: str, item: dict[str, Any]) -> bool:
        found = self._query({**self._query_params(query), "issue_id": str(item["id"]), "limit": 1})
        return bool(found.get("issues"))

    def query_search(self, query: str, *, after: str | None = None, limit: int = 100) -> list[ItemRef]:
        params = {**self._query_params(query), "sort": "id:asc", "limit": min(PAGE, limit)}
        if after and str(after).isdigit():
            params["issue_id"] = f">={int(after) + 1}"
        return [self.ref(issue) for issue in self._query(params).get("issues", [])]

    def find_item(self, key: str) -> ItemRef | None:
        item_id = parse_key(key)
        if item_id is None:
            return None
        response = self.http.request(
            "GET", f"issues/{item_id}.json", action=f"find issue #{item_id}", ok_statuses=(403, 404)
        )
        if response.status_code != 200:
            return None
        return self.ref(response.json()["issue"])

    def search_updated_since(
        self, cursor: str | None, *, limit: int = 100
    ) -> tuple[list[ItemRef], str | None]:
        """Issues updated at or after ``cursor`` minus an overlap window, oldest first, each change once.

        The window catches changes committed late; what was already returned in it (same id and
        ``updated_on``) is skipped, unless the poll that returned it ran before that ``updated_on``'s
        second had ended (``updated_on`` has whole seconds: a second edit in the same second keeps it):
        then a later poll returns it again (``SeenWindow``). The next cursor is the newest ``updated_on``
        returned.
        """
        params: dict[str, Any] = {
            "status_id": "*",
            "sort": "updated_on:asc,id:asc",
            "limit": min(PAGE, limit),
        }
        if self._settings().get("project"):
            params["project_id"] = self._settings()["project"]
        if cursor:
            params["updated_on"] = ">=" + _fmt(_ts(cursor) - OVERLAP)
        refs: list[ItemRef] = []
        newest = cursor
        offset = 0
        while len(refs) < limit:
            page = self.http.get_json(
                "issues.json", params={**params, "offset": offset}, action="list the issues updated recently"
            )
            issues = page.get("issues", [])
            for issue in issues:
                if not _seen.fresh(self.account, str(issue["id"]), issue["updated_on"], self.http):
                    continue  # already returned by an earlier poll (the overlap window), and settled
                refs.append(self.ref(issue))
                newest = max(newest or "", issue["updated_on"])
                if len(refs) >= limit:
                    break
            offset += len(issues)
            if not issues or offset >= page.get("total_count", 0):
                break
        if newest:
            # Forget what fell out of the window: it can't come back.
            _seen.forget_before(self.account, _ts(newest) - 2 * OVERLAP)
        return refs, newest

    def metadata(self) -> dict[str, list[Any]]:
        users: list[dict[str, Any]] = []
        if self.me().get("admin"):
            offset = 0
            while True:
                page = self.http.get_json(
                    "users.json", params={"limit": PAGE, "offset": offset}, action="list the users"
                )
                for u in page.get("users", []):
                    name = f"{u.get('firstname', '')} {u.get('lastname', '')}".strip() or u.get("login")
                    users.append({"email": u.get("mail") or None, "displayName": name, "id": str(u["id"])})
                offset += len(page.get("users", []))
                if not page.get("users") or offset >= page.get("total_count", 0):
                    break
        return {
            "statuses": list(self._catalog("statuses")),
            "priorities": list(self._catalog("priorities")),
            "types": list(self._catalog("trackers")),
            "users": users,
        }

    def find_created(self, fields: Mapping[str, Any], *, since: datetime) -> list[ItemRef]:
        params: dict[str, Any] = {
            "status_id": "*",
            "author_id": "me",
            "created_on": ">=" + _fmt(since),
            "sort": "id:desc",
            "limit": PAGE,
        }
        project = (fields.get("project") or {}).get("key") or self._settings().get("project")
        if project:
            params["project_id"] = project
        found = self.http.get_json(
            "issues.json", params=params, action="look for an issue an earlier attempt created"
        )
        subject = (self._payload({"summary": fields.get("summary")}).get("subject") or "(no summary)").strip()
        return [self.ref(i) for i in found.get("issues", []) if (i.get("subject") or "").strip() == subject]

    # --- writes ------------------------------------------------------------------------------------------
    def create_item(self, fields: Mapping[str, Any]) -> ItemRef:
        project = (fields.get("project") or {}).get("key") or self._settings().get("project")
        if not project:
            raise ConnectorError(
                f"{self.instance.name} has no project to create the issue in: set the instance's "
                f'"project" setting to a Redmine project identifier.'
            )
        body = {
            "subject": "(no summary)",
            **self._payload({k: v for k, v in fields.items() if k != "project"}),
        }
        body["project_id"] = project
        if "tracker_id" not in body and self._settings().get("tracker_id"):
            body["tracker_id"] = int(self._settings()["tracker_id"])
        wanted_status = body.pop("status_id", None)  # Redmine ignores it on create: set it afterwards
        issue = self.http.send_json(
            "POST", "issues.json", {"issue": body}, action=f"create an issue in project {project}"
        )["issue"]
        if wanted_status and issue["status"]["id"] != wanted_status:
            self.update_item(str(issue["id"]), {"status": fields["status"]})
            return self.find_item(str(issue["id"])) or self.ref(issue)
        return self.ref(issue)

    def update_item(self, item_id: str, changes: Mapping[str, Any]) -> None:
        needs_issue = bool(changes.get("customFields"))
        issue = self._raw_issue(item_id, include="") if needs_issue else None
        body = self._payload(changes, issue=issue)
        if body:
            self.http.send_json(
                "PUT", f"issues/{item_id}.json", {"issue": body}, action=f"update issue #{item_id}"
            )

    def add_comment(self, item_id: str, *, body: str, internal: bool = False, author: str = "") -> str:
        self.http.send_json(
            "PUT",
            f"issues/{item_id}.json",
            {"issue": {"notes": body, "private_notes": bool(internal)}},
            action=f"comment on issue #{item_id}",
            idempotent=False,  # each PUT adds a note
        )
        # Redmine does not return the journal: find the newest one by the API user with these notes.
        me = self.me()["id"]
        journals = self._raw_issue(item_id, include="journals").get("journals") or []

        def norm(text: str) -> str:
            return (text or "").replace("\r\n", "\n").strip()

        mine = [
            j
            for j in journals
            if (j.get("user") or {}).get("id") == me and norm(j.get("notes")) == norm(body)
        ]
        if not mine:
            raise ConnectorError(
                f"Redmine accepted the comment on issue #{item_id} but it cannot be found in the issue's "
                f"history. Check that the API key's user can view notes.",
                retryable=False,
            )
        return str(max(mine, key=lambda j: j["id"])["id"])

    def update_comment(self, item_id: str, comment_id: str, *, body: str) -> None:
        self.http.send_json(
            "PUT",
            f"journals/{comment_id}.json",
            {"journal": {"notes": body}},
            action=f"edit comment {comment_id} on issue #{item_id}",
        )

    def delete_comment(self, item_id: str, comment_id: str) -> None:
        # The REST API cannot delete a journal; blanking its notes makes Redmine drop it when it has no
        # field changes (else the field changes stay and the comment text is gone).
        self.http.request(
            "PUT",
            f"journals/{comment_id}.json",
            json={"journal": {"notes": ""}},
            action=f"delete comment {comment_id} on issue #{item_id}",
            ok_statuses=(404,),  # already gone: deleting is idempotent
        )

    def add_attachment(self, item_id: str, *, filename: str, mime_type: str, content: IO[bytes]) -> str:
        upload = self.http.upload(
            "uploads.json", content, params={"filename": filename}, action=f"upload {filename}"
        ).json()["upload"]
        self.http.send_json(
            "PUT",
            f"issues/{item_id}.json",
            {
                "issue": {
                    "uploads": [
                        {
                            "token": upload["token"],
                            "filename": filename,
                            "content_type": mime_type or "application/octet-stream",
                        }
                    ]
                }
            },
            action=f"attach {filename} to issue #{item_id}",
            idempotent=False,
        )
        # The upload becomes the attachment: same id. The token is "<id>.<digest>", the digest being Redmine's
        # SHA-256 of what it stored: remembered, so reading the item need not download the file to hash it.
        att_id, _, digest = upload["token"].partition(".")
        att_id = str(upload.get("id") or att_id)
        if sha256_of(digest):
            with _lock:
                _cache[("sha256", self.account, att_id)] = (time.monotonic() + 7 * 86400.0, digest.lower())
        return att_id

    def delete_attachment(self, item_id: str, attachment_id: str) -> None:
        self.http.request(
            "DELETE",
            f"attachments/{attachment_id}.json",
            action=f"delete attachment {attachment_id} on issue #{item_id}",
            ok_statuses=(404,),  # already gone
        )

    def open_attachment(self, item_id: str, attachment_id: str) -> Iterator[bytes]:
        # The download route on our own base URL: Redmine's content_url uses its configured host name,
        # which may differ from how the node reaches it (and credentials only go to the base URL).
        return self.http.download(
            f"attachments/download/{quote(str(attachment_id))}",
            action=f"download attachment {attachment_id} of issue #{item_id}",
        )

    # --- housekeeping ------------------------------------------------------------------------------------
    def test_credentials(self) -> str:
        _forget(("me", self.account))
        user = self.me()
        admin = " (administrator)" if user.get("admin") else ""
        return f"Connected to Redmine as {user.get('login')}{admin}."

    def field_edit_times(self, item: Mapping[str, Any]) -> dict[str, str]:
        """From the issue's journals (complete history): the newest journal of a user other than the node's
        that changed the field, else the creation when a person created the issue, else "" (never)."""
        raw = getattr(self, "_last_read", None)
        if not raw or str(raw.get("id")) != str(item["id"]) or "journals" not in raw:
            raw = self._raw_issue(str(item["id"]), include="journals")
        me = self.me()["id"]
        created = "" if (raw.get("author") or {}).get("id") == me else str(raw.get("created_on") or "")
        times = {field: created for field in set(JOURNAL_FIELDS.values())}
        for journal in sorted(raw.get("journals") or [], key=lambda j: (j.get("created_on") or "", j["id"])):
            if (journal.get("user") or {}).get("id") == me:
                continue
            for detail in journal.get("details") or []:
                if detail.get("property") == "cf":
                    field = "customFields"
                elif detail.get("property") == "attr":
                    field = JOURNAL_FIELDS.get(str(detail.get("name")), "")
                else:
                    continue
                if field:
                    times[field] = str(journal.get("created_on") or "")
        return times

    def is_own_change(self, item: Mapping[str, Any]) -> bool:
        """Whether the item's latest change was made by the node (the API key's Redmine user).

        ``item`` is a Redmine issue as the API returns it with ``journals``, or any dict with the issue's
        ``id`` (a hubIssue): then the issue's journals are read (one request).
        """
        raw = item if "journals" in item and "subject" in item else None
        if raw is None:
            raw = self._raw_issue(str(item["id"]), include="journals")
        return last_change_author(raw) == self.me()["id"]
