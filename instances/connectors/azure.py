"""Connector for Azure DevOps Boards work items (Azure DevOps Services, REST API 7.2) with a PAT.

Instance configuration: ``url`` is the organization URL (``https://dev.azure.com/<organization>``);
``credentials`` is ``{"pat": "..."}`` (a personal access token with *Work Items: Read & write*; it is sent
as HTTP basic auth with an empty user name); ``settings`` holds ``project`` (required: the project name),
and may hold ``type`` (the work item type new items get, default ``Task``), ``team`` (for WIQL, default
``<project> Team``), ``area_path``, ``node_user`` (the PAT owner's unique name: the node's writes are
recognised by it as well as by the revisions the node made), ``internal_comments`` (``"refuse"``, the
default, or ``"public"``) and ``rate_limit_per_s``.

How Azure DevOps maps onto the hubIssue: ``#<id>`` is the key; ``System.Title`` the summary,
``System.Description`` the description (HTML, passed through as is), ``System.State`` the status,
``Microsoft.VSTS.Common.Priority`` (1-4) the priority by number, ``System.WorkItemType`` the type,
``System.Tags`` (``a; b``) the labels, ``System.AssignedTo``/``System.CreatedBy`` assignee and reporter,
``Microsoft.VSTS.Scheduling.DueDate`` the due date, the ``System.LinkTypes.Hierarchy-Reverse`` relation the
parent, and every ``Custom.*`` field a custom field (by its name without ``Custom.``).

* Writes are JSON Patch documents (``application/json-patch+json``) that start with ``test /rev``: a
  concurrent edit makes Azure DevOps refuse the patch (412, or 409), the node re-reads the item and tries
  once more, then gives up with a retryable ConnectorError. Only the fields that change are sent.
* Comments use the comments API (``api-version 7.2-preview.4``, markdown format). Azure DevOps has no
  private comments: an internal comment is refused (``internal_comments: "refuse"``) rather than published,
  unless the instance says ``"public"``.
* Attachments are uploaded to ``_apis/wit/attachments?fileName=`` and linked with an ``AttachedFile``
  relation (one patch); deleting one removes the relation (the blob stays, as in the web UI). Their id in
  the hubIssue is the attachment's GUID; Azure DevOps records no content hash (``sha256`` is None).
* Retries: WIQL queries are POSTs that only read, flagged ``idempotent`` so the HTTP seam repeats them like
  any read. Creating a work item, adding a comment and uploading a file are POSTs it does not repeat once
  Azure DevOps may have carried them out (lost answer, timeout, 5xx): the pipeline looks for what the
  earlier attempt wrote (``find_created``; unlinked comments with the same text, attachments with the same
  name and size). Patches are repeated: each starts with ``test /rev``, so a repeat of one that was carried
  out fails with 412 and changes nothing; ``_patch`` then reads the item again and builds the patch anew
  (linking an attachment adds nothing when its relation is there already).
* Polling (``search_updated_since``) runs WIQL on ``System.ChangedDate`` with ``timePrecision=true`` (without
  it WIQL compares dates only), then reads the changed dates of the ids it got.
* Triggers hold a WIQL condition (what follows ``WHERE`` in a work item query, e.g. ``[System.Tags]
  CONTAINS 'sync' AND [System.State] = 'Active'``); a full ``SELECT … FROM WorkItems WHERE …`` is cut down to
  its condition. Azure DevOps evaluates it: ``POST {project}/{team}/_apis/wit/wiql`` limited to the project
  (``[System.TeamProject] = @project``), ``[System.Id] = <id>`` for one item, ``[System.Id] > <after> ORDER
  BY [System.Id]`` with ``$top`` for pages.
* Service hooks (``workitem.created/updated/commented/deleted``, "Web Hooks" consumer) are verified by
  either basic authentication (secret ``user:password``, set as the subscription's basic auth) or a shared
  secret header ``X-Exalate-Token: <secret>`` (the subscription's "HTTP headers" field); redeliveries
  (same notification ``id``) are parsed once.
* No user listing: Azure DevOps users live in the Graph API (another scope), so ``metadata()["users"]`` is
  empty; assignment works by e-mail (``System.AssignedTo`` accepts one).
"""

from __future__ import annotations

import json
import mimetypes
import re
import threading
from collections.abc import Iterator, Mapping
from datetime import UTC, datetime, timedelta
from typing import IO, Any
from urllib.parse import quote, urlencode

from instances.connectors import _common as common
from instances.connectors.base import Connector, ConnectorError, ItemRef, register
from instances.connectors.http import HttpClient

# The api-version of each resource, as the 7.2 description says (its ``api-version`` parameters).
V_WORKITEMS = "7.2-preview.3"
V_COMMENTS = "7.2-preview.4"
V_ATTACHMENTS = "7.2-preview.4"
V_WIQL = "7.2-preview.2"
V_TYPES = "7.2-preview.2"
V_STATES = "7.2-preview.1"

OVERLAP = timedelta(seconds=10)
FIND_CREATED_TOP = 200  # the batch read takes at most 200 ids
CONFLICTS = (409, 412)
PRIORITIES = ["1", "2", "3", "4"]
FIELD = {
    "summary": "System.Title",
    "description": "System.Description",
    "status": "System.State",
    "priority": "Microsoft.VSTS.Common.Priority",
    "type": "System.WorkItemType",
    "labels": "System.Tags",
    "assignee": "System.AssignedTo",
    "dueDate": "Microsoft.VSTS.Scheduling.DueDate",
}
HINTS = {
    401: "the personal access token was rejected. Check the PAT in the instance's credentials and that it "
    "has not expired (User settings → Personal access tokens).",
    403: "the PAT has no permission for this. Give it the Work Items (Read & write) scope.",
    404: "it does not exist or the PAT's user cannot see it. Check the organization URL and project.",
    400: "Azure DevOps rejected the values. Check the sync rules' mapping (field, state and type names).",
}

_seen = common.SeenWindow()
_own = common.OwnWrites()


class _Returned:
    """The work items polls returned, per account: id -> (revision, changed date). The next poll's WIQL
    leaves out those still at that revision; forgotten once behind the overlap window. At most ``cap`` are
    left out (the newest), so the query stays far below WIQL's 32,000 characters; the others are read and
    de-duplicated as before."""

    def __init__(self, cap: int = 200) -> None:
        self._items: dict[str, dict[int, tuple[int, datetime]]] = {}
        self._lock = threading.Lock()
        self.cap = cap

    def remember(self, account: str, raw: Mapping[str, Any], changed: datetime) -> None:
        rev = raw.get("rev")
        if not isinstance(rev, int) or isinstance(rev, bool):
            return  # no revision to match on: the item is simply read again next time
        with self._lock:
            self._items.setdefault(account, {})[int(raw["id"])] = (rev, changed)

    def known(self, account: str) -> list[tuple[int, int]]:
        with self._lock:
            items = sorted(self._items.get(account, {}).items(), key=lambda kv: kv[1][1], reverse=True)
        return sorted((wid, rev) for wid, (rev, _) in items[: self.cap])

    def forget_before(self, account: str, floor: datetime) -> None:
        with self._lock:
            items = self._items.get(account, {})
            for wid in [w for w, (_, changed) in items.items() if changed < floor]:
                del items[wid]


_returned = _Returned()
_deliveries = common.ReplayGuard()
_GUID_RE = re.compile(r"/attachments/([0-9a-fA-F-]{36})")


def parse_key(key: str) -> str | None:
    """The work item id in ``#42``, ``42`` or a work item URL (``.../_workitems/edit/42``)."""
    match = re.fullmatch(r"\s*(?:.*/_workitems/edit/|.*/workitems/|#)?(\d+)/?\s*", str(key), re.IGNORECASE)
    return match.group(1) if match else None


def _person(identity: Any) -> dict[str, Any] | None:
    if not identity:
        return None
    if isinstance(identity, str):  # "Name <email>" in older payloads
        match = re.match(r"\s*(.*?)\s*<([^>]+)>\s*$", identity)
        return {"email": match.group(2), "displayName": match.group(1)} if match else None
    email = identity.get("uniqueName") or None
    return {"email": email if email and "@" in email else None, "displayName": identity.get("displayName")}


def _tags(value: str | None) -> list[str]:
    return [t.strip() for t in (value or "").split(";") if t.strip()]


@register
class AzureDevOpsConnector(Connector):
    """An Azure DevOps project. Item ids are work item ids; comment ids are comment ids; attachment ids are
    attachment GUIDs."""

    tracker_type = "azure"

    _http: HttpClient | None = None

    # --- plumbing ----------------------------------------------------------------------------------------
    @property
    def pat(self) -> str:
        creds = common.credentials(
            self.instance, "Azure DevOps", ("pat",), '{"pat": "<personal access token>"}'
        )
        return str(creds["pat"])

    @property
    def base_url(self) -> str:
        return common.base_url(self.instance, "Azure DevOps organization", "https://dev.azure.com/<org>")

    @property
    def http(self) -> HttpClient:
        if self._http is None:
            self._http = common.build_http(
                self.instance,
                tracker_type=self.tracker_type,
                service="Azure DevOps",
                base_url=self.base_url,
                headers={"Authorization": common.basic_auth("", self.pat), "Accept": "application/json"},
                hints=HINTS,
            )
        return self._http

    @http.setter
    def http(self, client: HttpClient) -> None:
        self._http = client

    @property
    def account(self) -> str:
        return common.account_key(self.instance, self.pat)

    def _settings(self) -> dict[str, Any]:
        return dict(self.instance.settings or {})

    @property
    def project(self) -> str:
        project = self._settings().get("project")
        if not project:
            raise ConnectorError(
                f'{self.instance.name} has no Azure DevOps project: set the instance\'s "project" setting.'
            )
        return str(project)

    def _p(self, path: str, **query: Any) -> str:
        """``<project>/_apis/wit/<path>?<query>`` (relative to the organization URL)."""
        qs = urlencode({k: v for k, v in query.items() if v is not None})
        return f"{quote(self.project)}/_apis/wit/{path}" + (f"?{qs}" if qs else "")

    def item_url(self, item_id: Any) -> str:
        return f"{self.base_url}/{quote(self.project)}/_workitems/edit/{item_id}"

    def ref(self, raw: Mapping[str, Any]) -> ItemRef:
        fields = raw.get("fields") or {}
        return ItemRef(
            id=str(raw["id"]),
            key=f"#{raw['id']}",
            url=self.item_url(raw["id"]),
            updated=fields.get("System.ChangedDate") or "",
        )

    def _raw(self, item_id: str) -> dict[str, Any]:
        if not str(item_id).isdigit():
            raise ConnectorError(f"'{item_id}' is not an Azure DevOps work item id.", status=404)
        return self.http.get_json(
            self._p(f"workitems/{item_id}", **{"$expand": "relations", "api-version": V_WORKITEMS}),
            action=f"read work item {item_id}",
        )

    def _comments(self, item_id: str) -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = []
        token: str | None = None
        while True:
            page = self.http.get_json(
                self._p(
                    f"workItems/{item_id}/comments",
                    **{"$top": 200, "continuationToken": token, "api-version": V_COMMENTS},
                ),
                action=f"read the comments of work item {item_id}",
            )
            out += [c for c in page.get("comments") or [] if not c.get("isDeleted")]
            token = page.get("continuationToken")
            if not token:
                return out

    # --- reads -------------------------------------------------------------------------------------------
    def get_item(self, item_id: str) -> dict[str, Any]:
        raw = self._raw(item_id)
        return self.to_hub(raw, self._comments(str(raw["id"])))

    def to_hub(self, raw: Mapping[str, Any], comments: list[dict[str, Any]]) -> dict[str, Any]:
        f = raw.get("fields") or {}
        relations = raw.get("relations") or []
        parent = next((r for r in relations if r.get("rel") == "System.LinkTypes.Hierarchy-Reverse"), None)
        attachments = []
        for rel in relations:
            if rel.get("rel") != "AttachedFile":
                continue
            match = _GUID_RE.search(rel.get("url") or "")
            attrs = rel.get("attributes") or {}
            name = attrs.get("name") or "attachment"
            attachments.append(
                {
                    "id": match.group(1) if match else rel.get("url"),
                    "filename": name,
                    "mimeType": mimetypes.guess_type(name)[0] or "application/octet-stream",
                    "size": attrs.get("resourceSize"),
                    "sha256": None,
                    "created": attrs.get("resourceCreatedDate") or attrs.get("authorizedDate"),
                }
            )
        priority = f.get(FIELD["priority"])
        return {
            "id": str(raw["id"]),
            "key": f"#{raw['id']}",
            "url": self.item_url(raw["id"]),
            "summary": f.get("System.Title") or "",
            "description": f.get("System.Description") or None,
            "status": {"name": f.get("System.State")},
            "priority": {"name": str(priority) if priority is not None else None},
            "type": {"name": f.get("System.WorkItemType")},
            "labels": _tags(f.get("System.Tags")),
            "assignee": _person(f.get("System.AssignedTo")),
            "reporter": _person(f.get("System.CreatedBy")),
            "dueDate": (f.get(FIELD["dueDate"]) or "")[:10] or None,
            "parentId": (parent["url"].rstrip("/").rsplit("/", 1)[-1] if parent else None),
            "created": f.get("System.CreatedDate"),
            "updated": f.get("System.ChangedDate"),
            "project": {
                "idStr": str(f.get("System.TeamProject") or self.project),
                "key": str(f.get("System.TeamProject") or self.project),
                "name": str(f.get("System.TeamProject") or self.project),
            },
            "customFields": {k[len("Custom.") :]: v for k, v in f.items() if k.startswith("Custom.")},
            "comments": [
                {
                    "id": str(c["id"]),
                    "body": c.get("text") or "",
                    "author": _person(c.get("createdBy")),
                    "created": c.get("createdDate"),
                    "updated": c.get("modifiedDate") or c.get("createdDate"),
                    "internal": False,
                }
                for c in sorted(comments, key=lambda c: (c.get("createdDate") or "", c["id"]))
            ],
            "attachments": sorted(attachments, key=lambda a: (a["created"] or "", a["id"])),
        }

    def find_item(self, key: str) -> ItemRef | None:
        item_id = parse_key(key)
        if item_id is None:
            return None
        response = self.http.request(
            "GET",
            self._p(f"workitems/{item_id}", **{"api-version": V_WORKITEMS}),
            action=f"find work item {item_id}",
            ok_statuses=(404,),
        )
        return self.ref(response.json()) if response.status_code == 200 else None

    def _wiql_url(self, **params: Any) -> str:
        """The team's WIQL endpoint (``POST {project}/{team}/_apis/wit/wiql``) with these parameters."""
        team = self._settings().get("team") or f"{self.project} Team"
        query = urlencode({**params, "api-version": V_WIQL})
        return f"{quote(self.project)}/{quote(team)}/_apis/wit/wiql?{query}"

    def _read_fields(self, ids: list[str], fields: str, *, action: str) -> list[dict[str, Any]]:
        """One batch read (at most 200 ids) of some fields; ids that no longer exist are left out."""
        rows = self.http.get_json(
            self._p(
                "workitems",
                ids=",".join(ids),
                fields=fields,
                errorPolicy="omit",
                **{"api-version": V_WORKITEMS},
            ),
            action=action,
        )
        return [r for r in (rows.get("value") if isinstance(rows, dict) else rows) or [] if r]

    def search_updated_since(
        self, cursor: str | None, *, limit: int = 100
    ) -> tuple[list[ItemRef], str | None]:
        """Work items changed at or after ``cursor`` minus an overlap window, oldest first, each change once.

        WIQL gives ids in ``System.ChangedDate`` order; their changed dates come from one batch read. WIQL
        returns ids only, so the query itself leaves out the work items a poll already returned at their
        current revision (``[System.Id] = N AND [System.Rev] = R``, ``_returned``): a poll that finds nothing
        is the WIQL request alone, though the window behind the cursor always holds the latest items (it
        used to batch-read their dates on every poll: two requests). The next cursor is the newest changed
        date returned.
        """
        since = common.iso(common.parse_ts(cursor) - OVERLAP) if cursor else "1970-01-01T00:00:00Z"
        # ``since`` is a timestamp this code formatted and the ids and revisions are integers (never user
        # text), so building WIQL from them is safe.
        where = f"[System.TeamProject] = @project AND [System.ChangedDate] >= '{since}'"
        known = _returned.known(self.account)
        if known:
            where += (
                " AND NOT ("
                + " OR ".join(f"([System.Id] = {wid} AND [System.Rev] = {rev})" for wid, rev in known)
                + ")"
            )
        wiql = f"SELECT [System.Id] FROM WorkItems WHERE {where} ORDER BY [System.ChangedDate], [System.Id]"  # noqa: S608
        # Ask for more than ``limit``: what the overlap window already returned is skipped below.
        result = self.http.send_json(
            "POST",
            self._wiql_url(timePrecision="true", **{"$top": min(20000, limit * 5 + 100)}),
            {"query": wiql},
            action="query the work items changed recently",
            idempotent=True,  # a query: changes nothing
        )
        ids = [str(w["id"]) for w in result.get("workItems") or []]
        refs: list[ItemRef] = []
        newest = cursor
        for start in range(0, len(ids), 200):  # the batch read takes at most 200 ids
            chunk = ids[start : start + 200]
            rows = self._read_fields(
                chunk, "System.Id,System.ChangedDate", action="read the changed dates of work items"
            )
            for raw in sorted(rows, key=lambda r: (r["fields"]["System.ChangedDate"], r["id"])):
                changed = raw["fields"]["System.ChangedDate"]
                if not _seen.fresh(self.account, str(raw["id"]), changed, self.http):
                    continue
                refs.append(self.ref(raw))
                _returned.remember(self.account, raw, common.parse_ts(changed))
                if not newest or common.parse_ts(changed) > common.parse_ts(newest):
                    newest = changed
                if len(refs) >= limit:
                    break
            if len(refs) >= limit:
                break
        if newest:
            _seen.forget_before(self.account, common.parse_ts(newest) - 2 * OVERLAP)
            _returned.forget_before(self.account, common.parse_ts(newest) - 2 * OVERLAP)
        return refs, newest

    def find_created(self, fields: Mapping[str, Any], *, since: datetime) -> list[ItemRef]:
        """Work items the PAT's user created in the project at or after ``since`` with the title
        ``create_item`` would give, newest first: one WIQL query and one batch read.

        WIQL (``POST {project}/{team}/_apis/wit/wiql``) filters on ``[System.TeamProject] = @project``,
        ``[System.CreatedBy] = @Me`` (the identity the PAT belongs to: exact), ``[System.Title]`` (``=`` is
        case-insensitive) and ``[System.CreatedDate]``. Without ``timePrecision=true`` WIQL compares dates
        only and refuses a date with a time ("You cannot supply a time with the date when running a query
        using date precision"), and a date may be read in the user's time zone: the query asks from the day
        before ``since``'s (UTC) date, which covers every zone, and the exact time, the exact title and the
        project are checked here on ``System.CreatedDate``/``System.Title`` from the batch read.
        """
        title = str(fields.get("summary") or "(no summary)")  # as _ops writes System.Title
        day = (since.astimezone(UTC) - timedelta(days=1)).date().isoformat()
        # Quotes in the title are doubled (WIQL's escape); the date is formatted here.
        titles = " OR ".join(
            "[System.Title] = '" + t.replace("'", "''") + "'" for t in dict.fromkeys([title, title.strip()])
        )
        where = (
            "[System.TeamProject] = @project AND [System.CreatedBy] = @Me "
            f"AND [System.CreatedDate] >= '{day}' AND ({titles})"
        )
        wiql = (
            f"SELECT [System.Id] FROM WorkItems WHERE {where} "  # noqa: S608
            "ORDER BY [System.CreatedDate] DESC, [System.Id] DESC"
        )
        result = self.http.send_json(
            "POST",
            self._wiql_url(**{"$top": FIND_CREATED_TOP}),
            {"query": wiql},
            action="look for a work item an earlier attempt created",
            idempotent=True,  # a query: changes nothing
        )
        ids = [str(w["id"]) for w in result.get("workItems") or []][:FIND_CREATED_TOP]
        if not ids:
            return []
        rows = self._read_fields(
            ids,
            "System.Id,System.Title,System.CreatedDate,System.ChangedDate,System.TeamProject",
            action="read the work items an earlier attempt may have created",
        )

        def wanted(raw: Mapping[str, Any]) -> bool:
            f = raw.get("fields") or {}
            return (
                bool(f.get("System.CreatedDate"))
                and common.parse_ts(f["System.CreatedDate"]) >= since
                and str(f.get("System.Title") or "").strip() == title.strip()
                and str(f.get("System.TeamProject") or self.project).casefold() == self.project.casefold()
            )

        mine = [raw for raw in rows if wanted(raw)]
        mine.sort(
            key=lambda r: (common.parse_ts(r["fields"]["System.CreatedDate"]), int(r["id"])), reverse=True
        )
        return [self.ref(raw) for raw in mine]

    def metadata(self) -> dict[str, list[Any]]:
        types = self.http.get_json(
            self._p("workitemtypes", **{"api-version": V_TYPES}), action="list the work item types"
        )
        types = types.get("value", []) if isinstance(types, dict) else types
        names = [t["name"] for t in types if not t.get("isDisabled")]
        statuses: list[str] = []
        for name in names:
            states = self.http.get_json(
                self._p(f"workitemtypes/{quote(name)}/states", **{"api-version": V_STATES}),
                action=f"list the states of {name}",
            )
            for s in states.get("value", []) if isinstance(states, dict) else states:
                if s["name"] not in statuses:
                    statuses.append(s["name"])
        return {"statuses": statuses, "priorities": list(PRIORITIES), "types": names, "users": []}

    # --- writes ------------------------------------------------------------------------------------------
    def _ops(self, changes: Mapping[str, Any]) -> list[dict[str, Any]]:
        """JSON Patch operations for hubIssue field changes (only the fields given)."""
        ops: list[dict[str, Any]] = []

        def put(field: str, value: Any) -> None:
            ops.append({"op": "add", "path": f"/fields/{field}", "value": value})

        for name, value in changes.items():
            if name == "summary":
                put(FIELD[name], str(value or "(no summary)"))
            elif name == "description":
                put(FIELD[name], value or "")
            elif name in ("status", "type"):
                if value and value.get("name"):
                    put(FIELD[name], value["name"])
            elif name == "priority":
                if value and value.get("name"):
                    if str(value["name"]) not in PRIORITIES:
                        raise ConnectorError(
                            f"Azure DevOps has no priority '{value['name']}'. Valid priorities: "
                            f"{', '.join(PRIORITIES)}. Map priorities to 1-4 in the sync rules.",
                            status=400,
                        )
                    put(FIELD[name], int(value["name"]))
            elif name == "labels":
                put(FIELD[name], "; ".join(value or []))
            elif name == "assignee":
                put(FIELD[name], (value or {}).get("email") or "")
            elif name == "dueDate":
                put(FIELD[name], value or "")
            elif name == "customFields" and value:
                for key, val in value.items():
                    put(key if "." in key else f"Custom.{key}", val)
            # reporter (System.CreatedBy is read-only), comments, attachments (own calls): not written here
        return ops

    def _patch(self, item_id: str, build: Any, *, action: str, raw: Mapping[str, Any] | None = None) -> dict:
        """PATCH the work item with ``[test /rev] + build(raw)``; on a conflict re-read and retry once."""
        for attempt in range(2):
            if raw is None:
                raw = self._raw(item_id)
            ops = build(raw)
            if not ops:
                return dict(raw)
            body = [{"op": "test", "path": "/rev", "value": raw["rev"]}, *ops]
            try:
                response = self.http.request(
                    "PATCH",
                    self._p(f"workitems/{item_id}", **{"api-version": V_WORKITEMS}),
                    data=json.dumps(body),
                    headers={"Content-Type": "application/json-patch+json"},
                    action=action,
                )
            except ConnectorError as exc:
                if exc.status not in CONFLICTS:
                    raise
                if attempt == 1:
                    raise ConnectorError(
                        f"Azure DevOps: work item {item_id} changed twice while the node tried to {action} "
                        f"(revision conflict). The node will read it again and retry later.",
                        retryable=True,
                        status=exc.status,
                    )
                raw = None  # someone else wrote in between: read the new revision and apply again
                continue
            updated = response.json()
            _own.remember(self.account, item_id, updated.get("rev"))
            return updated
        raise AssertionError("unreachable")

    def create_item(self, fields: Mapping[str, Any]) -> ItemRef:
        wanted = {k: v for k, v in fields.items() if k not in ("project", "type")}
        work_type = ((fields.get("type") or {}).get("name")) or self._settings().get("type") or "Task"
        ops = self._ops({"summary": "(no summary)", **wanted})
        if self._settings().get("area_path"):
            ops.append(
                {"op": "add", "path": "/fields/System.AreaPath", "value": self._settings()["area_path"]}
            )
        if str(fields.get("parentId") or "").isdigit():
            ops.append(self._parent_op(str(fields["parentId"])))
        raw = self.http.request(
            "POST",
            self._p(f"workitems/${quote(work_type)}", **{"api-version": V_WORKITEMS}),
            data=json.dumps(ops),
            headers={"Content-Type": "application/json-patch+json"},
            action=f"create a {work_type} in {self.project}",
        ).json()
        _own.remember(self.account, str(raw["id"]), raw.get("rev"))
        return self.ref(raw)

    def _parent_op(self, parent_id: str) -> dict[str, Any]:
        return {
            "op": "add",
            "path": "/relations/-",
            "value": {
                "rel": "System.LinkTypes.Hierarchy-Reverse",
                "url": f"{self.base_url}/_apis/wit/workItems/{parent_id}",
            },
        }

    def update_item(self, item_id: str, changes: Mapping[str, Any]) -> None:
        ops = self._ops(changes)
        if ops:
            self._patch(item_id, lambda raw: ops, action=f"update work item {item_id}")

    def add_comment(self, item_id: str, *, body: str, internal: bool = False, author: str = "") -> str:
        if internal and self._settings().get("internal_comments", "refuse") != "public":
            raise ConnectorError(
                f"Azure DevOps has no private comments, so the internal comment for work item {item_id} was "
                f"not published. Filter internal comments out in the sync rules, or set the instance's "
                f'"internal_comments" setting to "public" to publish them.',
                status=400,
            )
        comment = self.http.send_json(
            "POST",
            self._p(f"workItems/{item_id}/comments", format="markdown", **{"api-version": V_COMMENTS}),
            {"text": body},
            action=f"comment on work item {item_id}",
        )
        self._remember_rev(item_id)
        return str(comment["id"])

    def _remember_rev(self, item_id: str) -> None:
        """A comment write makes a new revision that the response does not show: note it as the node's."""
        raw = self.http.get_json(
            self._p(f"workitems/{item_id}", fields="System.Rev", **{"api-version": V_WORKITEMS}),
            action=f"read the revision of work item {item_id}",
        )
        _own.remember(self.account, item_id, raw.get("rev"))

    def update_comment(self, item_id: str, comment_id: str, *, body: str) -> None:
        self.http.send_json(
            "PATCH",
            self._p(
                f"workItems/{item_id}/comments/{comment_id}", format="markdown", **{"api-version": V_COMMENTS}
            ),
            {"text": body},
            action=f"edit comment {comment_id} on work item {item_id}",
        )
        self._remember_rev(item_id)

    def delete_comment(self, item_id: str, comment_id: str) -> None:
        response = self.http.request(
            "DELETE",
            self._p(f"workItems/{item_id}/comments/{comment_id}", **{"api-version": V_COMMENTS}),
            action=f"delete comment {comment_id} on work item {item_id}",
            ok_statuses=(404,),  # already gone: deleting is idempotent
        )
        if response.status_code != 404:
            self._remember_rev(item_id)

    def add_attachment(self, item_id: str, *, filename: str, mime_type: str, content: IO[bytes]) -> str:
        ref = self.http.upload(
            self._p("attachments", fileName=filename, **{"api-version": V_ATTACHMENTS}),
            content,
            action=f"upload {filename}",
        ).json()
        relation = {
            "op": "add",
            "path": "/relations/-",
            "value": {"rel": "AttachedFile", "url": ref["url"], "attributes": {"comment": ""}},
        }

        def build(raw: Mapping[str, Any]) -> list[dict[str, Any]]:
            # After a 412 the item is read again: an earlier patch whose answer was lost may have linked it.
            linked = any(
                rel.get("rel") == "AttachedFile" and str(ref["id"]).lower() in (rel.get("url") or "").lower()
                for rel in raw.get("relations") or []
            )
            return [] if linked else [relation]

        self._patch(item_id, build, action=f"attach {filename} to work item {item_id}")
        return str(ref["id"])

    def delete_attachment(self, item_id: str, attachment_id: str) -> None:
        def build(raw: Mapping[str, Any]) -> list[dict[str, Any]]:
            for index, rel in enumerate(raw.get("relations") or []):
                if (
                    rel.get("rel") == "AttachedFile"
                    and str(attachment_id).lower() in (rel.get("url") or "").lower()
                ):
                    return [{"op": "remove", "path": f"/relations/{index}"}]
            return []  # already gone

        self._patch(item_id, build, action=f"remove attachment {attachment_id} from work item {item_id}")

    def open_attachment(self, item_id: str, attachment_id: str) -> Iterator[bytes]:
        return self.http.download(
            self._p(
                f"attachments/{quote(str(attachment_id))}", download="true", **{"api-version": V_ATTACHMENTS}
            ),
            action=f"download attachment {attachment_id} of work item {item_id}",
        )

    # --- queries: WIQL conditions (triggers, bulk exalate) -------------------------------------------------
    def _wiql_condition(self, query: str) -> str:
        condition = query.strip()
        full = re.match(r"(?is)^select\s.+?\sfrom\s+(\w+)\s*(?:where\s+(.*))?$", condition)
        if full:
            if full.group(1).lower() != "workitems":
                raise ConnectorError(
                    f"A trigger selects work items: use FROM WorkItems, not FROM {full.group(1)} (or write "
                    "only the condition, e.g. [System.Tags] CONTAINS 'sync').",
                    status=400,
                )
            condition = (full.group(2) or "").strip()
        # The node orders and pages by id itself: drop a trailing ORDER BY (and ASOF) outside quotes.
        return re.sub(r"(?is)\s*\b(?:order\s+by|asof)\b[^']*$", "", condition).strip()

    def _wiql(self, query: str, extra: str = "", *, top: int, action: str) -> list[str]:
        condition = self._wiql_condition(query)
        where = "[System.TeamProject] = @project" + (f" AND ({condition})" if condition else "") + extra
        # The condition is the trigger's own WIQL: Azure DevOps parses and checks it (no string building
        # beyond the node's own id bounds, which are digits).
        wiql = f"SELECT [System.Id] FROM WorkItems WHERE {where} ORDER BY [System.Id]"  # noqa: S608
        response = self.http.request(
            "POST",
            self._wiql_url(**{"$top": top}),
            json={"query": wiql},
            action=action,
            ok_statuses=(400,),
            idempotent=True,  # a query: changes nothing
        )
        data = response.json() if response.content else {}
        if response.status_code == 400:
            raise ConnectorError(
                f"Azure DevOps refused the trigger's WIQL condition: {data.get('message') or data}. A "
                "trigger holds what follows WHERE in a work item query (e.g. [System.Tags] CONTAINS 'sync' "
                "AND [System.State] = 'Active'); try it in Boards → Queries, then save the trigger again.",
                status=400,
            )
        return [str(w["id"]) for w in data.get("workItems") or []]

    def query_validate(self, query: str) -> None:
        self._wiql(query, top=1, action="check the trigger's WIQL condition")

    def query_matches(self, query: str, item: dict[str, Any]) -> bool:
        item_id = str(item["id"])
        if not item_id.isdigit():
            return False
        found = self._wiql(
            query, f" AND [System.Id] = {int(item_id)}", top=1, action=f"match #{item_id} against the trigger"
        )
        return item_id in found

    def query_search(self, query: str, *, after: str | None = None, limit: int = 100) -> list[ItemRef]:
        extra = f" AND [System.Id] > {int(after)}" if after and str(after).isdigit() else ""
        ids = self._wiql(
            query, extra, top=max(1, min(limit, 20000)), action="search work items with the trigger's WIQL"
        )
        return [ItemRef(id=i, key=f"#{i}", url=self.item_url(i)) for i in ids[:limit]]

    # --- housekeeping ------------------------------------------------------------------------------------
    def test_credentials(self) -> str:
        types = self.http.get_json(
            self._p("workitemtypes", **{"api-version": V_TYPES}), action="list the work item types"
        )
        count = len(types.get("value", []) if isinstance(types, dict) else types)
        return f"Connected to Azure DevOps project {self.project} ({count} work item types)."

    def is_own_change(self, item: Mapping[str, Any]) -> bool:
        """Whether the work item's latest revision was written by the node.

        ``item`` is a work item as the API returns it (``id``, ``rev``, ``fields``) or a hubIssue (then the
        work item is read). True when the node made that revision, or when ``System.ChangedBy`` is the
        ``node_user`` setting (the PAT's owner).
        """
        raw = item if "rev" in item and "fields" in item else self._raw(str(item["id"]))
        if _own.knows(self.account, str(raw["id"]), raw.get("rev")):
            return True
        node_user = str(self._settings().get("node_user") or "").lower()
        changed_by = (raw.get("fields") or {}).get("System.ChangedBy")
        who = ((_person(changed_by) or {}).get("email") or "").lower()
        return bool(node_user) and who == node_user

    # --- service hooks -----------------------------------------------------------------------------------
    def verify_webhook(self, headers: Mapping[str, str], body: bytes, secret: str) -> bool:
        """A service hook is authentic when it carries the subscription's basic auth (``secret`` is
        ``user:password``) or the shared-secret header ``X-Exalate-Token`` equal to ``secret``."""
        if not secret:
            return False
        if common.same_secret(common.header(headers, "X-Exalate-Token"), secret):
            return True
        if ":" in secret:
            user, _, password = secret.partition(":")
            return common.same_secret(
                common.header(headers, "Authorization"), common.basic_auth(user, password)
            )
        return False

    def parse_webhook(self, headers: Mapping[str, str], body: bytes) -> list[ItemRef]:
        """The work item a ``workitem.*`` event is about; [] for other events and for redeliveries."""
        try:
            event = json.loads(body or b"{}")
        except ValueError:
            return []
        if not isinstance(event, dict) or not common.scalar(event.get("eventType")).startswith("workitem."):
            return []
        delivery = common.scalar(event.get("id"))
        if not _deliveries.first_time(f"{self.account}:{delivery}" if delivery else ""):
            return []
        resource = common.obj(event.get("resource"))
        item_id = common.scalar(resource.get("workItemId")) or common.scalar(resource.get("id"))
        if not item_id.isdigit():
            return []
        fields = common.obj(common.obj(resource.get("revision")).get("fields")) or common.obj(
            resource.get("fields")
        )
        changed = fields.get("System.ChangedDate")
        if isinstance(changed, dict):  # workitem.updated lists changes as {oldValue, newValue}
            changed = changed.get("newValue")
        return [
            ItemRef(id=item_id, key=f"#{item_id}", url=self.item_url(item_id), updated=common.scalar(changed))
        ]
