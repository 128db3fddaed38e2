"""Connector for Zendesk Support tickets (REST API v2) with an API token.

Instance configuration: ``url`` is the account URL (``https://<subdomain>.zendesk.com``); ``credentials``
is ``{"email": "agent@example.com", "api_token": "..."}`` (sent as basic auth ``<email>/token:<api_token>``);
``settings`` may hold ``custom_fields`` (name → ticket field id), ``public_comments`` (whether comments the
node adds are public when the replica does not say internal; default true), ``max_limit_wait_s`` (how long
a write may wait for the per-ticket update budget before it is handed back to the pipeline to retry later;
default 30) and ``rate_limit_per_s``.

How Zendesk maps onto the hubIssue: ``#<id>`` is the key; ``subject`` the summary; ``description`` (the
first comment: read-only after creation, so a description change is **not** written); ``status``,
``priority`` and ``type`` by capitalised name (``Open``, ``High``, ``Task``); ``tags`` the labels; assignee
and requester (the reporter) by e-mail; ``due_at`` (task tickets); custom fields by the names in
``settings.custom_fields`` (else by field id).

* Comments: added by updating the ticket with ``comment: {body, public}`` (private = internal). Zendesk
  comments **cannot be edited**: ``update_comment`` refuses with a ConnectorError that says so;
  ``delete_comment`` redacts the comment's whole text (``PUT /tickets/{id}/comments/{cid}/redact``), which
  is permanent and leaves a comment of ▇ characters (it is then treated as deleted).
* Attachments: ``POST /api/v2/uploads?filename=`` (the raw file, streamed) gives a token; a private comment
  naming the file carries it (``comment.uploads``). Deleting one redacts it
  (``.../comments/{cid}/attachments/{aid}/redact``): Zendesk replaces it by an empty ``redacted.txt``.
* The per-ticket update limit (30 updates per ticket per 10 minutes) is respected two ways. *Coalescing*:
  ``update_item`` does not write at once; its field changes wait in a per-ticket buffer (process-wide) and
  go out with the next comment or attachment on that ticket — Zendesk applies fields and one comment in a
  single update — or on ``flush()``, which every read of the ticket calls first (the pipeline's apply ends
  by reading the item back, so one apply of fields + a comment costs one PUT). *Budget*: every ticket
  update is counted in a sliding 10-minute window; the 31st waits (``max_limit_wait_s``) or is refused with
  a retryable ConnectorError, so the pipeline retries it later instead of being rate-limited by Zendesk.
* Polling uses the cursor-based incremental ticket export (``/api/v2/incremental/tickets/cursor.json``,
  ``start_time`` once, then ``cursor``); the node's cursor is ``<newest updated_at>|<export cursor>``. The
  export may repeat a ticket; changes are de-duplicated on (id, updated_at).
* Triggers hold Zendesk search terms, as typed in the agent search (``tags:sync status<solved``,
  ``priority:high printer``). The connector adds ``type:ticket`` and asks ``GET /api/v2/search.json``
  (``sort_by=created_at``, ``sort_order=asc``). Zendesk reads an unknown keyword as text, so keywords are
  checked against Zendesk's ticket search keywords first. Pages restart from the creation time of the last
  ticket (``created>=``, then cut after it by (time, id)); the search index lags writes (up to a few
  minutes), so a brand-new ticket may only match on a later change.
* Retries: a ticket update that carries a comment (or an upload token) adds something each time it is
  sent, and so does a create: neither is repeated by the HTTP seam once Zendesk may have carried it out (lost
  answer, timeout, 5xx); nor is a redaction, which may be refused once the text is gone (the retry reads the
  comments first and finds it done). The pipeline then looks for what the earlier attempt wrote:
  ``find_created`` for a ticket, an unlinked comment with the same text. Field-only updates (the coalescing
  ``flush``) set values and are repeated as usual.
* Webhooks: Zendesk signs each request with ``X-Zendesk-Webhook-Signature`` = base64(HMAC-SHA256(signing
  secret, ``X-Zendesk-Webhook-Signature-Timestamp`` + body)); older than 5 minutes is refused (replay).
  Bodies: a trigger's JSON with ``ticket_id`` (recommended: ``{"ticket_id": "{{ticket.id}}"}``) or an event
  subscription's ``{"type": "zen:event-type:ticket...", "detail": {"id": ...}}``.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import re
import threading
from collections import deque
from collections.abc import Iterator, Mapping
from datetime import datetime, timedelta
from typing import IO, Any

from instances.connectors import _common as common
from instances.connectors.base import Connector, ConnectorError, ItemRef, register
from instances.connectors.http import HttpClient

OVERLAP = timedelta(seconds=10)
STATUSES = ["new", "open", "pending", "hold", "solved", "closed"]
PRIORITIES = ["low", "normal", "high", "urgent"]
TYPES = ["problem", "incident", "question", "task"]
TICKET_UPDATES = 30  # Zendesk: at most 30 updates to one ticket per 10 minutes (per user)
TICKET_WINDOW = 600.0
WEBHOOK_MAX_AGE = 300.0
HINTS = {
    401: "the credentials were rejected. Check the agent's e-mail and API token in the instance's "
    "credentials, and that token access is enabled (Admin Center → Apps and integrations → Zendesk API).",
    403: "the agent has no permission for this. Check the agent's role and the ticket's group.",
    404: "it does not exist or the agent cannot see it. Check the URL and the agent's access.",
    422: "Zendesk rejected the values (a closed ticket cannot be changed). Check the sync rules' mapping.",
}

# Ticket search keywords (Zendesk's "Searching tickets" reference); ``custom_field_<id>`` too.
SEARCH_KEYWORDS = frozenset(
    {
        "status", "priority", "ticket_type", "tags", "assignee", "requester", "submitter", "commenter", "cc",
        "group", "organization", "brand", "form", "via", "subject", "description", "comment", "created",
        "updated", "solved", "due_date", "fieldvalue", "has_attachment", "satisfaction", "recipient",
        "ticket_id", "external_id", "assigned", "custom_status_id",
    }
)  # fmt: skip
SEARCH_SET = frozenset({"type", "order_by", "sort"})  # set by the connector
SEARCH_PAGE = 100
_KEYWORD_RE = re.compile(r'(?:^|(?<=\s))-?(?P<name>[a-z_]+\w*)(?P<op>:|<=|>=|<|>)(?P<value>"[^"]*"|\S*)')

_seen = common.SeenWindow()
_own = common.OwnWrites()
_deliveries = common.ReplayGuard()
_lock = threading.Lock()
_pending: dict[tuple[str, str], dict[str, Any]] = {}  # (account, ticket id) → ticket fields not yet sent
_updates: dict[tuple[str, str], deque[float]] = {}  # (account, ticket id) → times of recent ticket updates
_me: dict[tuple[str, str], dict[str, Any]] = {}  # (account, e-mail) → the API user (users/me)
LIST_PAGE = 100  # the most tickets per page of an offset-paginated list


def parse_key(key: str) -> str | None:
    import re

    match = re.fullmatch(r"\s*(?:.*/tickets/|#)?(\d+)(?:\.json)?/?\s*", str(key))
    return match.group(1) if match else None


def _title(value: str | None) -> str | None:
    return value.capitalize() if value else None


@register
class ZendeskConnector(Connector):
    """A Zendesk Support account's tickets. Item ids are ticket ids; comment and attachment ids likewise."""

    tracker_type = "zendesk"
    # The incremental export (the poll) takes 10 requests a minute per account (Zendesk's rate limits for
    # the Incremental Exports API): never poll faster than every 6 s, busy or not.
    min_poll_interval_s = 6.0

    _http: HttpClient | None = None

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._created: dict[str, str] = {}  # ticket id -> created_at, from the last query pages

    # --- plumbing ----------------------------------------------------------------------------------------
    @property
    def creds(self) -> dict[str, Any]:
        return common.credentials(
            self.instance,
            "Zendesk",
            ("email", "api_token"),
            '{"email": "<agent e-mail>", "api_token": "..."}',
        )

    @property
    def base_url(self) -> str:
        return common.base_url(self.instance, "Zendesk", "https://<subdomain>.zendesk.com")

    @property
    def http(self) -> HttpClient:
        if self._http is None:
            creds = self.creds
            self._http = common.build_http(
                self.instance,
                tracker_type=self.tracker_type,
                service="Zendesk",
                base_url=self.base_url + "/api/v2",
                headers={
                    "Authorization": common.basic_auth(f"{creds['email']}/token", str(creds["api_token"])),
                    "Accept": "application/json",
                },
                hints=HINTS,
            )
        return self._http

    @http.setter
    def http(self, client: HttpClient) -> None:
        self._http = client

    @property
    def account(self) -> str:
        return common.account_key(self.instance, str(self.creds["api_token"]))

    def _settings(self) -> dict[str, Any]:
        return dict(self.instance.settings or {})

    def item_url(self, ticket_id: Any) -> str:
        return f"{self.base_url}/agent/tickets/{ticket_id}"

    def ref(self, ticket: Mapping[str, Any]) -> ItemRef:
        return ItemRef(
            id=str(ticket["id"]),
            key=f"#{ticket['id']}",
            url=self.item_url(ticket["id"]),
            updated=ticket.get("updated_at") or "",
        )

    def _raw(self, item_id: str) -> dict[str, Any]:
        if not str(item_id).isdigit():
            raise ConnectorError(f"'{item_id}' is not a Zendesk ticket id.", status=404)
        return self.http.get_json(f"tickets/{item_id}.json", action=f"read ticket #{item_id}")["ticket"]

    def _users(self, ids: set[Any]) -> dict[int, dict[str, Any]]:
        ids = {int(i) for i in ids if i}
        if not ids:
            return {}
        out: dict[int, dict[str, Any]] = {}
        ordered = sorted(ids)
        for start in range(0, len(ordered), 100):  # show_many takes up to 100 ids
            chunk = ",".join(str(i) for i in ordered[start : start + 100])
            for user in self.http.get_json(
                "users/show_many.json", params={"ids": chunk}, action="read users"
            ).get("users", []):
                out[int(user["id"])] = user
        return out

    def _comments(self, item_id: str) -> list[dict[str, Any]]:
        rows: list[dict[str, Any]] = []
        path: str | None = f"tickets/{item_id}/comments.json"
        params: dict[str, Any] | None = {"page[size]": 100}
        while path:
            page = self.http.get_json(path, params=params, action=f"read the comments of ticket #{item_id}")
            rows += page.get("comments", [])
            path = (page.get("links") or {}).get("next") if (page.get("meta") or {}).get("has_more") else None
            params = None
        return rows

    # --- the per-ticket budget and write buffer ----------------------------------------------------------
    def _spend_update(self, item_id: str) -> None:
        """Count one update of the ticket; wait for, or refuse past, Zendesk's 30 per 10 minutes."""
        key = (self.account, str(item_id))
        max_wait = float(self._settings().get("max_limit_wait_s", 30))
        while True:
            now = self.http.clock()
            with _lock:
                times = _updates.setdefault(key, deque())
                while times and times[0] <= now - TICKET_WINDOW:
                    times.popleft()
                if len(times) < TICKET_UPDATES:
                    times.append(now)
                    return
                wait = times[0] + TICKET_WINDOW - now
            if wait > max_wait:
                raise ConnectorError(
                    f"Zendesk allows {TICKET_UPDATES} updates to a ticket per 10 minutes and ticket "
                    f"#{item_id} has had them; the node will retry in about {wait:.0f} s.",
                    retryable=True,
                    status=429,
                )
            self.http.sleep(wait)

    def _put_ticket(
        self, item_id: str, ticket: Mapping[str, Any], *, action: str, idempotent: bool | None = None
    ) -> dict[str, Any]:
        self._spend_update(item_id)
        result = self._send(
            "PUT", f"tickets/{item_id}.json", {"ticket": dict(ticket)}, action=action, idempotent=idempotent
        )
        updated = result["ticket"]
        _own.remember(self.account, item_id, updated.get("updated_at"))
        return result

    def _send(
        self, method: str, path: str, body: Any, *, action: str, idempotent: bool | None = None
    ) -> dict[str, Any]:
        """Send JSON; a 422 becomes a ConnectorError quoting Zendesk's field ``details`` (the shared client
        shows only the error code, ``RecordInvalid``). ``idempotent``: as for ``HttpClient.request`` (False
        for an update that adds a comment)."""
        response = self.http.request(
            method, path, json=body, action=action, ok_statuses=(422,), idempotent=idempotent
        )
        data = response.json() if response.content else {}
        if response.status_code == 422:
            details = data.get("details") or {}
            reasons = [
                str(d.get("description") or d)
                for rows in details.values()
                for d in (rows if isinstance(rows, list) else [rows])
            ] or [str(data.get("description") or data.get("error") or "invalid")]
            raise ConnectorError(
                f"Zendesk refused the request to {action} (422): {'; '.join(reasons)}. Check the sync rules' "
                f"mapping; a closed ticket cannot be changed at all.",
                status=422,
            )
        return data

    def _take_pending(self, item_id: str) -> dict[str, Any]:
        with _lock:
            return _pending.pop((self.account, str(item_id)), {})

    def flush(self, item_id: str | None = None) -> None:
        """Send the buffered field changes of ``item_id`` (or of every ticket of this account)."""
        with _lock:
            ids = [t for (a, t) in _pending if a == self.account and (item_id is None or t == str(item_id))]
        for ticket_id in ids:
            fields = self._take_pending(ticket_id)
            if fields:
                try:
                    self._put_ticket(ticket_id, fields, action=f"update ticket #{ticket_id}")
                except ConnectorError as exc:
                    self._restore(ticket_id, fields, exc)
                    raise

    # --- reads -------------------------------------------------------------------------------------------
    def get_item(self, item_id: str) -> dict[str, Any]:
        self.flush(item_id)
        raw = self._raw(item_id)
        comments = self._comments(str(raw["id"]))
        people = self._users(
            {raw.get("assignee_id"), raw.get("requester_id")} | {c.get("author_id") for c in comments}
        )
        return self.to_hub(raw, comments, people)

    def _person(self, people: Mapping[int, Mapping[str, Any]], user_id: Any) -> dict[str, Any] | None:
        if not user_id:
            return None
        user = people.get(int(user_id)) or {}
        return {"email": user.get("email") or None, "displayName": user.get("name") or str(user_id)}

    def to_hub(
        self, raw: Mapping[str, Any], comments: list[dict[str, Any]], people: Mapping[int, Mapping[str, Any]]
    ) -> dict[str, Any]:
        names = {str(v): k for k, v in (self._settings().get("custom_fields") or {}).items()}
        hub_comments, attachments = [], []
        for index, c in enumerate(sorted(comments, key=lambda c: (c.get("created_at") or "", c["id"]))):
            for att in c.get("attachments") or []:
                if att.get("file_name") == "redacted.txt":
                    continue
                attachments.append(
                    {
                        "id": str(att["id"]),
                        "filename": att.get("file_name"),
                        "mimeType": att.get("content_type") or "application/octet-stream",
                        "size": att.get("size"),
                        "sha256": None,
                        "created": c.get("created_at"),
                    }
                )
            body = c.get("plain_body") if c.get("plain_body") is not None else c.get("body")
            if index == 0 or not (body or "").strip() or set((body or "").strip()) <= {"▇", " ", "\n"}:
                continue  # the first comment is the description; redacted ones count as deleted
            if body.startswith("📎 ") and c.get("attachments") and not c.get("public"):
                continue  # the node's own carrier comment for an attachment
            hub_comments.append(
                {
                    "id": str(c["id"]),
                    "body": body,
                    "author": self._person(people, c.get("author_id")),
                    "created": c.get("created_at"),
                    "updated": c.get("created_at"),
                    "internal": not c.get("public", True),
                }
            )
        return {
            "id": str(raw["id"]),
            "key": f"#{raw['id']}",
            "url": self.item_url(raw["id"]),
            "summary": raw.get("subject") or "",
            "description": raw.get("description") or None,
            "status": {"name": _title(raw.get("status"))},
            "priority": {"name": _title(raw.get("priority"))},
            "type": {"name": _title(raw.get("type"))},
            "labels": list(raw.get("tags") or []),
            "assignee": self._person(people, raw.get("assignee_id")),
            "reporter": self._person(people, raw.get("requester_id")),
            "dueDate": (raw.get("due_at") or "")[:10] or None,
            "parentId": None,
            "created": raw.get("created_at"),
            "updated": raw.get("updated_at"),
            "project": {"idStr": str(raw.get("group_id") or ""), "key": "tickets", "name": "Tickets"},
            "customFields": {
                names.get(str(f["id"]), str(f["id"])): f.get("value")
                for f in raw.get("custom_fields") or []
                if f.get("value") is not None
            },
            "comments": hub_comments,
            "attachments": attachments,
        }

    def find_item(self, key: str) -> ItemRef | None:
        item_id = parse_key(key)
        if item_id is None:
            return None
        self.flush(item_id)
        response = self.http.request(
            "GET", f"tickets/{item_id}.json", action=f"find ticket #{item_id}", ok_statuses=(404,)
        )
        return self.ref(response.json()["ticket"]) if response.status_code == 200 else None

    def search_updated_since(
        self, cursor: str | None, *, limit: int = 100
    ) -> tuple[list[ItemRef], str | None]:
        """Tickets changed since ``cursor`` from the incremental export, oldest first, each change once."""
        self.flush()
        newest, _, export_cursor = (cursor or "").partition("|")
        if export_cursor:
            params: dict[str, Any] = {"cursor": export_cursor}
        else:
            start = common.parse_ts(newest).timestamp() - OVERLAP.total_seconds() if newest else 0
            # The export refuses a start_time less than a minute old.
            params = {"start_time": int(min(start, self.http.wall_clock() - 61))}
        refs: list[ItemRef] = []
        stopped_early = False
        while True:
            page = self.http.get_json(
                "incremental/tickets/cursor.json", params=params, action="export the tickets changed recently"
            )
            for ticket in page.get("tickets", []):
                if ticket.get("status") == "deleted" or not _seen.fresh(
                    self.account, str(ticket["id"]), ticket["updated_at"], self.http
                ):
                    continue
                refs.append(self.ref(ticket))
                if not newest or common.parse_ts(ticket["updated_at"]) > common.parse_ts(newest):
                    newest = ticket["updated_at"]
            if len(refs) >= limit and not page.get("end_of_stream"):
                stopped_early = True
            after = page.get("after_cursor")
            if page.get("end_of_stream") or not after or stopped_early:
                break
            params = {"cursor": after}
        if newest:
            _seen.forget_before(self.account, common.parse_ts(newest) - 2 * OVERLAP)
        # Resume from the export's own cursor when the page was read to its end.
        next_cursor = f"{newest}|{after}" if newest and after and not stopped_early else newest
        return refs, next_cursor

    def me(self) -> dict[str, Any]:
        """The API user (``GET /users/me.json``), cached per process and account."""
        key = (self.account, str(self.creds["email"]).lower())
        with _lock:
            user = _me.get(key)
        if user is None:
            user = self.http.get_json("users/me.json", action="read the API user")["user"]
            with _lock:
                _me[key] = user
        return user

    def find_created(self, fields: Mapping[str, Any], *, since: datetime) -> list[ItemRef]:
        """Tickets the API user created at or after ``since`` with the subject ``create_item`` would give,
        newest first (at most two pages of the ticket list).

        Zendesk's List Tickets (``GET /api/v2/tickets.json``, Support API reference) sorts with
        ``sort_by=created_at&sort_order=desc`` and offset pagination (``page``, ``per_page`` up to 100,
        ``next_page``); it reads the database, unlike the Search API whose index lags writes by minutes. It
        has no filter by creator or time, so the newest tickets are read until one is older than ``since``
        and the rest is checked here. ``created_at`` has whole seconds, so ``since`` is cut to its second.
        The creator is the ticket's submitter ("the user who created a ticket") — the API user; Zendesk's
        older documentation says an API create naming a requester makes the requester the submitter by
        default, so a ticket created through the API (``via.channel`` ``api``) for the requester
        ``create_item`` names counts too. Subjects are compared without surrounding whitespace.
        """
        subject = str(self._fields({"summary": fields.get("summary")})["subject"]).strip()
        requester = str((fields.get("reporter") or {}).get("email") or "").strip().lower()
        me = int(self.me()["id"])
        cut = since.replace(microsecond=0)
        found: list[dict[str, Any]] = []
        for page in (1, 2):
            data = self.http.get_json(
                "tickets.json",
                params={"sort_by": "created_at", "sort_order": "desc", "per_page": LIST_PAGE, "page": page},
                action="look for a ticket an earlier attempt created",
            )
            tickets = data.get("tickets") or []
            found += tickets
            if not data.get("next_page") or not tickets or common.parse_ts(tickets[-1]["created_at"]) < cut:
                break
        candidates = [
            t
            for t in found
            if t.get("created_at")
            and common.parse_ts(t["created_at"]) >= cut
            and (t.get("subject") or "").strip() == subject
        ]

        def for_requester(ticket: Mapping[str, Any]) -> bool:
            return bool(requester) and ((ticket.get("via") or {}).get("channel") == "api")

        people = self._users(
            {t.get("requester_id") for t in candidates if t.get("submitter_id") != me and for_requester(t)}
        )
        mine = [
            t
            for t in candidates
            if t.get("submitter_id") == me
            or (
                for_requester(t)
                and str((people.get(int(t.get("requester_id") or 0)) or {}).get("email") or "").lower()
                == requester
            )
        ]
        mine.sort(key=lambda t: (common.parse_ts(t["created_at"]), int(t["id"])), reverse=True)
        return [self.ref(t) for t in mine]

    def metadata(self) -> dict[str, list[Any]]:
        users: list[dict[str, Any]] = []
        path: str | None = "users.json"
        params: dict[str, Any] | None = {"role[]": ["agent", "admin"], "page[size]": 100}
        while path:
            page = self.http.get_json(path, params=params, action="list the agents")
            users += [
                {"email": u.get("email"), "displayName": u.get("name"), "id": str(u["id"])}
                for u in page.get("users", [])
            ]
            path = (page.get("links") or {}).get("next") if (page.get("meta") or {}).get("has_more") else None
            params = None
        return {
            "statuses": [s.capitalize() for s in STATUSES],
            "priorities": [p.capitalize() for p in PRIORITIES],
            "types": [t.capitalize() for t in TYPES],
            "users": users,
        }

    # --- writes ------------------------------------------------------------------------------------------
    def _fields(self, changes: Mapping[str, Any]) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for name, value in changes.items():
            if name == "summary":
                out["subject"] = str(value or "(no summary)")
            elif name in ("status", "priority", "type"):
                allowed = {"status": STATUSES, "priority": PRIORITIES, "type": TYPES}[name]
                wanted = ((value or {}).get("name") or "").strip().lower()
                if not wanted:
                    if name != "status":
                        out[name] = None
                    continue
                if wanted not in allowed:
                    raise ConnectorError(
                        f"Zendesk has no ticket {name} '{value['name']}'. Valid: {', '.join(allowed)}. "
                        f"Map it in the sync rules.",
                        status=422,
                    )
                out[name] = wanted
            elif name == "labels":
                out["tags"] = list(value or [])
            elif name == "assignee":
                email = (value or {}).get("email")
                if email:
                    out["assignee_email"] = email
                else:
                    out["assignee_id"] = None
            elif name == "dueDate":
                out["due_at"] = f"{value}T12:00:00Z" if value else None
            elif name == "customFields" and value:
                ids = self._settings().get("custom_fields") or {}
                fields = []
                for key, val in value.items():
                    field_id = ids.get(key) or (key if str(key).isdigit() else None)
                    if field_id is None:
                        raise ConnectorError(
                            f"Zendesk: no ticket field id for custom field '{key}'. Add it to the instance's "
                            f'"custom_fields" setting ({{"{key}": <field id>}}).',
                            status=422,
                        )
                    fields.append({"id": int(field_id), "value": val})
                out["custom_fields"] = fields
            # description (the first comment, read-only), reporter: not written
        return out

    def create_item(self, fields: Mapping[str, Any]) -> ItemRef:
        ticket = {
            "subject": "(no summary)",
            **self._fields({k: v for k, v in fields.items() if k != "project"}),
        }
        ticket["comment"] = {"body": fields.get("description") or fields.get("summary") or "(no description)"}
        if "reporter" in fields and (fields["reporter"] or {}).get("email"):
            ticket["requester"] = {"email": fields["reporter"]["email"]}
        created = self._send("POST", "tickets.json", {"ticket": ticket}, action="create a ticket")
        ref = self.ref(created["ticket"])
        _own.remember(self.account, ref.id, created["ticket"].get("updated_at"))
        with _lock:
            _updates.setdefault((self.account, ref.id), deque()).append(self.http.clock())
        return ref

    def update_item(self, item_id: str, changes: Mapping[str, Any]) -> None:
        """Buffer the field changes; they are sent with the next comment or on the next read (``flush``)."""
        fields = self._fields(changes)
        if fields:
            with _lock:
                key = (self.account, str(item_id))
                _pending[key] = {**_pending.get(key, {}), **fields}

    def _comment_write(self, item_id: str, comment: dict[str, Any], *, action: str) -> dict[str, Any]:
        fields = self._take_pending(item_id)
        try:
            # Each such update adds a comment: not repeated once Zendesk may have done it (see the docstring).
            return self._put_ticket(item_id, {**fields, "comment": comment}, action=action, idempotent=False)
        except ConnectorError as exc:
            self._restore(item_id, fields, exc)
            raise

    def _restore(self, item_id: str, fields: dict[str, Any], exc: ConnectorError) -> None:
        """After a failed update: keep the fields for the next try when it may succeed later (outage, rate
        limit), under what came in meanwhile; drop them when Zendesk refused them (else every later read of
        the ticket would fail on them again). The error reaches the caller either way."""
        if fields and exc.retryable:
            with _lock:
                key = (self.account, str(item_id))
                _pending[key] = {**fields, **_pending.get(key, {})}

    def _new_comment_id(self, result: Mapping[str, Any]) -> str:
        for event in (result.get("audit") or {}).get("events") or []:
            if event.get("type") == "Comment":
                return str(event["id"])
        raise ConnectorError("Zendesk accepted the comment but its audit names no comment id.")

    def add_comment(self, item_id: str, *, body: str, internal: bool = False, author: str = "") -> str:
        public = not internal and bool(self._settings().get("public_comments", True))
        result = self._comment_write(
            item_id, {"body": body, "public": public}, action=f"comment on ticket #{item_id}"
        )
        return self._new_comment_id(result)

    def update_comment(self, item_id: str, comment_id: str, *, body: str) -> None:
        raise ConnectorError(
            f"Zendesk comments cannot be edited, so comment {comment_id} on ticket #{item_id} was not "
            f"changed. Stop syncing comment edits to Zendesk in the sync rules (keep the comment's body), "
            f"or delete and re-add it.",
            status=422,
        )

    def delete_comment(self, item_id: str, comment_id: str) -> None:
        """Redact the comment's whole text (permanent; Zendesk has no comment deletion)."""
        self.flush(item_id)
        for c in self._comments(item_id):
            if str(c["id"]) == str(comment_id):
                text = c.get("body") or ""
                if text.strip() and set(text.strip()) - {"▇", " ", "\n"}:
                    self.http.send_json(
                        "PUT",
                        f"tickets/{item_id}/comments/{comment_id}/redact.json",
                        {"text": text},
                        action=f"redact comment {comment_id} on ticket #{item_id}",
                        idempotent=False,  # may be refused once done: a retry reads the comment first
                    )
                return

    def add_attachment(self, item_id: str, *, filename: str, mime_type: str, content: IO[bytes]) -> str:
        upload = self.http.upload(
            "uploads.json",
            content,
            params={"filename": filename},
            content_type=mime_type or "application/octet-stream",
            action=f"upload {filename}",
        ).json()["upload"]
        self._comment_write(
            item_id,
            {"body": f"📎 {filename}", "public": False, "uploads": [upload["token"]]},
            action=f"attach {filename} to ticket #{item_id}",
        )
        return str(upload["attachment"]["id"])

    def delete_attachment(self, item_id: str, attachment_id: str) -> None:
        self.flush(item_id)
        for c in self._comments(item_id):
            for att in c.get("attachments") or []:
                if str(att["id"]) == str(attachment_id) and att.get("file_name") != "redacted.txt":
                    self.http.send_json(
                        "PUT",
                        f"tickets/{item_id}/comments/{c['id']}/attachments/{attachment_id}/redact.json",
                        {},
                        action=f"redact attachment {attachment_id} on ticket #{item_id}",
                        idempotent=False,  # a retry reads the comments again first
                    )
                    return

    def open_attachment(self, item_id: str, attachment_id: str) -> Iterator[bytes]:
        att = self.http.get_json(
            f"attachments/{attachment_id}.json", action=f"read attachment {attachment_id}"
        )
        return self.http.download(
            att["attachment"]["content_url"],
            action=f"download attachment {attachment_id} of ticket #{item_id}",
        )

    # --- queries: Zendesk search (triggers, bulk exalate) --------------------------------------------------
    def _search_terms(self, query: str) -> str:
        terms = " ".join(query.split())
        for match in _KEYWORD_RE.finditer(re.sub(r'(^|\s)"[^"]*"', r"\1", terms)):  # not in phrases
            name, value = match.group("name"), match.group("value").strip('"').lower()
            if name in SEARCH_SET:
                raise ConnectorError(
                    f"Remove '{match.group(0)}' from the trigger: the node searches tickets and orders them "
                    "itself.",
                    status=400,
                )
            if name not in SEARCH_KEYWORDS and not re.fullmatch(r"custom_field_\d+", name):
                raise ConnectorError(
                    f"Zendesk search has no ticket keyword '{name}' (it would search for the text "
                    f"'{match.group(0)}' instead). Use one of {', '.join(sorted(SEARCH_KEYWORDS))} or "
                    "custom_field_<id>.",
                    status=400,
                )
            allowed = {"status": STATUSES, "priority": PRIORITIES, "ticket_type": TYPES}.get(name)
            if allowed and value and value not in (*allowed, "none"):
                raise ConnectorError(
                    f"'{value}' is not a Zendesk ticket {name.replace('_', ' ')}; use one of "
                    f"{', '.join(allowed)}.",
                    status=400,
                )
        return terms

    def _search(
        self, terms: str, *, created_from: str = "", page: int = 1, per_page: int = SEARCH_PAGE
    ) -> Any:
        query = f"type:ticket {terms}".strip()
        if created_from:
            query += f" created>={created_from}"
        response = self.http.request(
            "GET",
            "search.json",
            params={
                "query": query,
                "sort_by": "created_at",
                "sort_order": "asc",
                "page": page,
                "per_page": per_page,
            },
            action="search tickets with the trigger's query",
            ok_statuses=(400, 422),
        )
        data = response.json()
        if response.status_code in (400, 422):
            detail = data.get("description") or data.get("details") or data.get("error")
            raise ConnectorError(
                f"Zendesk refused the trigger's search: {detail}. Fix the query (try it in Zendesk's "
                "search first) and save the trigger again.",
                status=400,
            )
        return data

    def query_validate(self, query: str) -> None:
        self._search(self._search_terms(query), per_page=1)

    def query_matches(self, query: str, item: dict[str, Any]) -> bool:
        terms = self._search_terms(query)
        ticket_id = int(item["id"])
        for page in range(1, 11):  # Zendesk serves the first 1000 results of a search
            data = self._search(terms, created_from=str(item.get("created") or ""), page=page)
            results = data.get("results") or []
            if any(int(r["id"]) == ticket_id for r in results):
                return True
            if not data.get("next_page"):
                break
        return False

    def query_search(self, query: str, *, after: str | None = None, limit: int = 100) -> list[ItemRef]:
        """Matching tickets ordered by (created_at, id), the page after ticket ``after``: each page is a
        fresh search from the creation time of ``after`` on (creation times never change)."""
        terms = self._search_terms(query)
        start: tuple[str, int] = ("", 0)
        if after:
            created = self._created.get(str(after)) or str(self._raw(str(after)).get("created_at") or "")
            start = (created, int(after))
        refs: list[ItemRef] = []
        for page in range(1, 11):
            data = self._search(terms, created_from=start[0], page=page)
            results = data.get("results") or []
            for ticket in sorted(results, key=lambda t: (t["created_at"], int(t["id"]))):
                if (ticket["created_at"], int(ticket["id"])) <= start:
                    continue
                self._created[str(ticket["id"])] = ticket["created_at"]
                refs.append(self.ref(ticket))
            if len(refs) >= limit or not data.get("next_page"):
                break
        return refs[:limit]

    # --- housekeeping ------------------------------------------------------------------------------------
    def test_credentials(self) -> str:
        user = self.http.get_json("users/me.json", action="read the API user")["user"]
        if not user.get("id") or user.get("role") == "end-user":
            raise ConnectorError(
                "Zendesk answered as an anonymous or end user: the node needs an agent. Check the e-mail and "
                "API token in the instance's credentials.",
                status=401,
            )
        return f"Connected to Zendesk as {user.get('email')} ({user.get('role')})."

    def is_own_change(self, item: Mapping[str, Any]) -> bool:
        """Whether the ticket's current ``updated_at`` is one a node write left."""
        raw = item if "updated_at" in item and "subject" in item else None
        if raw is None:
            self.flush(str(item["id"]))
            raw = self._raw(str(item["id"]))
        return _own.knows(self.account, str(raw["id"]), raw.get("updated_at"))

    # --- webhooks ----------------------------------------------------------------------------------------
    def verify_webhook(self, headers: Mapping[str, str], body: bytes, secret: str) -> bool:
        """Authentic when the signature is base64(HMAC-SHA256(secret, timestamp + body)) and the timestamp
        is at most 5 minutes old (a replayed request is refused)."""
        signature = common.header(headers, "X-Zendesk-Webhook-Signature")
        stamp = common.header(headers, "X-Zendesk-Webhook-Signature-Timestamp")
        if not (signature and stamp and secret):
            return False
        expected = base64.b64encode(
            hmac.new(secret.encode(), stamp.encode() + (body or b""), hashlib.sha256).digest()
        ).decode()
        if not common.same_secret(signature, expected):
            return False
        try:
            age = self.http.wall_clock() - common.parse_ts(stamp).timestamp()
        except ValueError:
            return False
        return -60 <= age <= WEBHOOK_MAX_AGE

    def parse_webhook(self, headers: Mapping[str, str], body: bytes) -> list[ItemRef]:
        try:
            event = json.loads(body or b"{}")
        except ValueError:
            return []
        if not isinstance(event, dict):
            return []
        ticket_id = common.scalar(event.get("ticket_id")) or common.scalar(
            common.obj(event.get("ticket")).get("id")
        )
        if not ticket_id and common.scalar(event.get("type")).startswith("zen:event-type:ticket"):
            ticket_id = common.scalar(common.obj(event.get("detail")).get("id"))
        if not ticket_id.isdigit():
            return []
        signature = common.header(headers, "X-Zendesk-Webhook-Signature")
        if not _deliveries.first_time(f"{self.account}:{signature}" if signature else ""):
            return []  # the same signed request again
        return [ItemRef(id=str(ticket_id), key=f"#{ticket_id}", url=self.item_url(ticket_id))]
