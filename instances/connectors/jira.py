"""Connector for Jira Cloud over the platform REST API v3, with an Atlassian account e-mail and API token.

Instance configuration: ``url`` is the site (``https://your-domain.atlassian.net``), ``credentials`` is
``{"email": "...", "api_token": "..."}`` (an API token from id.atlassian.com → Security → API tokens, of a
user with *Browse projects*, *Create/Edit issues*, *Transition issues*, *Add/Edit/Delete comments* and
*Create/Delete attachments* in the project), ``settings`` holds ``project`` (the key new issues go to and
polling is limited to), optionally ``issue_type`` (default ``Task``) and ``rate_limit_per_s``.

How Jira maps onto the hubIssue:

* Item id = the issue id (``"10042"``), key = ``PROJ-12``, URL = ``<site>/browse/PROJ-12``.
* ``description`` and comment bodies are ADF in Jira and markdown-ish text in the replica
  (``instances.connectors.adf``: paragraphs, headings, lists, code, links; mentions become ``@Name``).
* ``status`` is written through a workflow transition (``GET …/transitions``, the one leading to a status
  of that name); when none does, the error lists the transitions available from the current status.
  ``priority`` and ``type`` are written by name, checked against the site's priorities and the project's
  issue types (an unknown name is refused with the valid ones).
* ``assignee``/``reporter`` are ``{email, displayName, accountId}``; Jira hides e-mails unless the user
  allows them, so writes use ``accountId``, else look the e-mail up (``/rest/api/3/user/search``).
* ``labels`` cannot hold spaces in Jira: spaces become ``_``. ``customFields`` with ``customfield_NNNNN``
  keys are passed through as Jira values.
* ``internal`` comments are Jira Service Management internal notes (``jsdPublic: false``, written with the
  ``sd.public.comment`` property) or comments restricted to a role or group (``visibility``).
* Attachments are uploaded as a streamed ``multipart/form-data`` body (``X-Atlassian-Token: no-check``) and
  downloaded with ``redirect=false`` so the content comes from the site (credentials never go elsewhere).
  Jira shows no checksum: the SHA-256 of the node's own uploads is remembered in this process, others are
  None.

Changes are found by webhooks (``verify_webhook``/``parse_webhook``; register ``/hooks/jira/<instance
uid>/`` in Jira → System → WebHooks for *issue created/updated* and *comment created/updated/deleted*, with a
secret; see ``verify_webhook``) and by polling ``search_updated_since`` (``POST /rest/api/3/search/jql``
with ``nextPageToken``). JQL dates have minute precision and are read in the API user's time zone, which the
connector reads from ``/rest/api/3/myself``. Searches and JQL checks are POSTs that only read: they are
flagged idempotent, so the HTTP client repeats them after a failure; creates, comments, uploads and
transitions are not. A create whose answer was lost is looked up by ``find_created`` (``creator =
currentUser()``, newest first).

Triggers hold JQL, limited to the project: ``jql/parse?validation=strict`` checks it, ``jql/match`` tells
whether one issue matches, ``search/jql`` with ``id > <after> ORDER BY id ASC`` pages through the matches.

Tests swap the HTTP session through ``instances.connectors._common.use_transport``.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import os
import re
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Mapping
from datetime import UTC, datetime, timedelta
from typing import IO, Any
from urllib.parse import quote, urlsplit
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from instances.connectors._common import (
    ReplayGuard,
    SeenWindow,
    account_key,
    base_url,
    basic_auth,
    build_http,
    credentials,
    header,
    iso_ms,
    obj,
    parse_ts,
    same_secret,
    scalar,
)
from instances.connectors.adf import adf_to_text, text_to_adf
from instances.connectors.base import Connector, ConnectorError, ItemRef, register
from instances.connectors.http import HttpClient

logger = logging.getLogger(__name__)

API = "rest/api/3"
PAGE = 100
OVERLAP = timedelta(minutes=2)  # JQL has minute precision; re-read a little more than that
CACHE_TTL = 300.0
FIELDS = [
    "summary",
    "description",
    "status",
    "priority",
    "issuetype",
    "labels",
    "assignee",
    "reporter",
    "duedate",
    "parent",
    "created",
    "updated",
    "project",
    "attachment",
    "comment",
]
EMPTY_DOC: dict[str, Any] = {"type": "doc", "version": 1, "content": []}

HINTS = {
    401: "the e-mail and API token were rejected. Check both in the instance's credentials "
    '({"email": ..., "api_token": ...}); the token may have been revoked.',
    403: "the Jira user has no permission for this. Check the user's project role (browse, create, edit, "
    "transition, comment, attach).",
    404: "it does not exist or the Jira user cannot see it. Check the site URL, the project key and the "
    "user's permissions.",
    400: "Jira rejected the values. Check the sync rules' mapping (required fields, field screens).",
}

_seen = SeenWindow()
_deliveries = ReplayGuard()
_lock = threading.Lock()
_cache: dict[tuple[str, ...], tuple[float, Any]] = {}


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


def _forget(key: tuple[str, ...]) -> None:
    with _lock:
        _cache.pop(key, None)


def reset_memory() -> None:
    """Forget every per-process cache (tests)."""
    with _lock:
        _cache.clear()
    _seen.clear()
    _deliveries.clear()


def ts(value: str | None) -> str | None:
    """Jira's ``2026-03-01T09:00:00.000+0100`` as ISO 8601 UTC with milliseconds (``…Z``)."""
    return iso_ms(parse_ts(value)) if value else None


def person(user: Mapping[str, Any] | None) -> dict[str, Any] | None:
    if not user:
        return None
    return {
        "email": user.get("emailAddress") or None,
        "displayName": user.get("displayName") or "",
        "accountId": user.get("accountId"),
    }


def is_internal(comment: Mapping[str, Any]) -> bool:
    return comment.get("jsdPublic") is False or bool(comment.get("visibility"))


class MultipartStream:
    """A ``multipart/form-data`` body with one file part, read from ``content`` as it is sent.

    ``requests`` sends a file-like body without reading it whole (it has ``read`` and a length); ``seek(0)``
    rewinds it for a retry when the content is seekable. The SHA-256 of the file is computed on the way.
    """

    def __init__(self, content: IO[bytes], *, filename: str, mime_type: str, field: str = "file") -> None:
        self.boundary = uuid.uuid4().hex
        safe = filename.replace('"', "%22").replace("\r", " ").replace("\n", " ")
        self.head = (
            f'--{self.boundary}\r\nContent-Disposition: form-data; name="{field}"; filename="{safe}"\r\n'
            f"Content-Type: {mime_type or 'application/octet-stream'}\r\n\r\n"
        ).encode()
        self.tail = f"\r\n--{self.boundary}--\r\n".encode()
        self.content = content
        self.start = content.tell() if content.seekable() else 0
        if content.seekable():
            content.seek(0, os.SEEK_END)
            self.size = content.tell() - self.start
            content.seek(self.start)
        else:
            raise ConnectorError(f"Cannot upload {filename}: the content is not seekable (size unknown).")
        self._pos = 0
        self.digest = hashlib.sha256()

    @property
    def content_type(self) -> str:
        return f"multipart/form-data; boundary={self.boundary}"

    def __len__(self) -> int:
        return len(self.head) + self.size + len(self.tail)

    def tell(self) -> int:
        return self._pos

    def seek(self, offset: int, whence: int = 0) -> int:
        if (offset, whence) not in ((0, 0), (0, 2)):
            raise OSError("MultipartStream only rewinds to the start or seeks to the end")
        if whence == 2:
            self._pos = len(self)
            return self._pos
        self.content.seek(self.start)
        self._pos = 0
        self.digest = hashlib.sha256()
        return 0

    def read(self, size: int = -1) -> bytes:
        size = len(self) - self._pos if size is None or size < 0 else size
        out = bytearray()
        while len(out) < size and self._pos < len(self):
            want = size - len(out)
            if self._pos < len(self.head):
                piece = self.head[self._pos : self._pos + want]
            elif self._pos < len(self.head) + self.size:
                piece = self.content.read(min(want, len(self.head) + self.size - self._pos))
                if not piece:
                    raise OSError("the attachment's content ended before its size")
                self.digest.update(piece)
            else:
                offset = self._pos - len(self.head) - self.size
                piece = self.tail[offset : offset + want]
            out += piece
            self._pos += len(piece)
        return bytes(out)


# --- webhooks --------------------------------------------------------------------------------------------


def jql_condition(query: str) -> str:
    """The trigger's JQL without a trailing ``ORDER BY`` (outside quotes): the connector sets the order."""
    quote_char = ""
    escaped = False
    for i, ch in enumerate(query):
        if quote_char:
            if escaped:
                escaped = False
            elif ch == "\\":
                escaped = True
            elif ch == quote_char:
                quote_char = ""
        elif ch in "\"'":
            quote_char = ch
        elif (i == 0 or not query[i - 1].isalnum()) and re.match(r"order\s+by\b", query[i:], re.IGNORECASE):
            return query[:i].strip()
    return query.strip()


def verify_webhook(
    headers: Mapping[str, str], body: bytes, secret: str, *, query: Mapping[str, Any] | None = None
) -> bool:
    """Whether a Jira webhook delivery carries the webhook's secret.

    Jira Cloud signs deliveries of webhooks registered with a secret (System → WebHooks → Secret) with
    ``X-Hub-Signature: sha256=<HMAC-SHA256 of the raw body>``; that is checked when present. Webhooks
    without that feature can only carry a shared secret in their URL: ``…/hooks/jira/<uid>/?secret=…``,
    compared from ``query``. Both comparisons are constant-time; with neither, the delivery is refused.
    """
    if not secret:
        return False
    signature = header(headers, "X-Hub-Signature")
    if signature:
        method, _, given = signature.partition("=")
        if method.lower() != "sha256" or not given:
            return False
        expected = hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()
        return hmac.compare_digest(given.lower().encode(), expected.encode())
    value = (query or {}).get("secret")
    if isinstance(value, list):
        value = value[0] if value else ""
    return same_secret(str(value or ""), secret)


ISSUE_EVENTS = ("jira:issue_created", "jira:issue_updated", "comment_created", "comment_updated")


def parse_webhook(
    headers: Mapping[str, str],
    body: bytes | str | Mapping[str, Any],
    *,
    seen: Callable[[str], bool] | None = None,
) -> list[ItemRef]:
    """The issue a verified delivery is about (issue created/updated and comment events), or ``[]``.

    Deliveries are de-duplicated on ``X-Atlassian-Webhook-Identifier`` (the same on Jira's retries): by
    default in a bounded in-memory window of this process; with several web processes pass ``seen``, a
    callable returning True when the id was already handled (and recording it otherwise). Deleted issues
    and comment deletions give ``[]`` for the issue deletion and the issue's ref for the comment.
    """
    delivery = header(headers, "X-Atlassian-Webhook-Identifier")
    already = seen(delivery) if (seen is not None and delivery) else not _deliveries.first_time(delivery)
    if already:
        return []
    payload = body if isinstance(body, Mapping) else json.loads(body or b"{}")
    if not isinstance(payload, Mapping):
        raise ValueError("the delivery is not a JSON object")
    event = scalar(payload.get("webhookEvent"))
    if event not in (*ISSUE_EVENTS, "comment_deleted"):
        return []
    issue = obj(payload.get("issue"))
    issue_id = scalar(issue.get("id"))
    if not issue_id:
        return []
    site = "{0.scheme}://{0.netloc}".format(urlsplit(scalar(issue.get("self"))))
    key = scalar(issue.get("key"))
    return [
        ItemRef(
            id=issue_id,
            key=key,
            url=f"{site}/browse/{key}" if key and site != "://" else "",
            updated=ts(scalar(obj(issue.get("fields")).get("updated"))) or "",
        )
    ]


@register
class JiraConnector(Connector):
    """One Jira Cloud project."""

    tracker_type = "jira"

    verify_webhook = staticmethod(verify_webhook)
    parse_webhook = staticmethod(parse_webhook)

    _http: HttpClient | None = None

    # --- plumbing ----------------------------------------------------------------------------------------
    @property
    def creds(self) -> dict[str, Any]:
        example = '{"email": "you@example.com", "api_token": "..."}'
        return credentials(self.instance, "Jira", ("email", "api_token"), example)

    @property
    def base_url(self) -> str:
        return base_url(self.instance, "Jira Cloud", "https://your-domain.atlassian.net")

    @property
    def http(self) -> HttpClient:
        if self._http is None:
            creds = self.creds
            self._http = build_http(
                self.instance,
                tracker_type="jira",
                service="Jira",
                base_url=self.base_url,
                headers={
                    "Authorization": basic_auth(creds["email"], creds["api_token"]),
                    "Accept": "application/json",
                },
                hints=HINTS,
                default_rate=10.0,
            )
        return self._http

    @http.setter
    def http(self, client: HttpClient) -> None:
        self._http = client

    @property
    def account(self) -> str:
        creds = self.creds
        return account_key(self.instance, f"{creds['email']}:{creds['api_token']}")

    def _settings(self) -> dict[str, Any]:
        return dict(self.instance.settings or {})

    @property
    def project_key(self) -> str:
        key = str(self._settings().get("project") or "").strip()
        if not key:
            raise ConnectorError(
                f'{self.instance.name}: set the "project" setting to the Jira project key (e.g. {{"project": '
                f'"SUP"}}).'
            )
        return key

    def ref(self, issue: Mapping[str, Any]) -> ItemRef:
        return ItemRef(
            id=str(issue["id"]),
            key=issue.get("key") or "",
            url=f"{self.base_url}/browse/{issue.get('key')}",
            updated=ts((issue.get("fields") or {}).get("updated")) or "",
        )

    def _issue_path(self, item_id: str, suffix: str = "") -> str:
        return f"{API}/issue/{quote(str(item_id), safe='')}{suffix}"

    # --- catalogues ---------------------------------------------------------------------------------------
    def me(self) -> dict[str, Any]:
        """The API token's Jira user (cached): the node writes as this user."""
        return _cached(
            ("me", self.account), lambda: self.http.get_json(f"{API}/myself", action="read the user")
        )

    def _project(self, key: str | None = None) -> dict[str, Any]:
        key = key or self.project_key
        return _cached(
            ("project", self.account, key),
            lambda: self.http.get_json(
                f"{API}/project/{quote(key, safe='')}", action=f"read the Jira project {key}"
            ),
        )

    def _priorities(self) -> dict[str, str]:
        return _cached(
            ("priorities", self.account),
            lambda: {
                p["name"]: p["id"] for p in self.http.get_json(f"{API}/priority", action="list priorities")
            },
        )

    def _types(self, project: str | None = None) -> dict[str, str]:
        return {t["name"]: t["id"] for t in self._project(project).get("issueTypes") or []}

    def _statuses(self) -> list[str]:
        def load() -> list[str]:
            names: list[str] = []
            rows = self.http.get_json(
                f"{API}/project/{quote(self.project_key, safe='')}/statuses",
                action="list the project's statuses",
            )
            for issue_type in rows:
                names += [s["name"] for s in issue_type.get("statuses") or [] if s["name"] not in names]
            return names

        return _cached(("statuses", self.account, self.project_key), load)

    def _named(self, kind: str, catalog: Mapping[str, str], name: str, *, reload: Callable[[], None]) -> str:
        wanted = str(name).strip().casefold()
        for known, ident in catalog.items():
            if known.casefold() == wanted:
                return ident
        reload()
        raise ConnectorError(
            f"Jira has no {kind} '{name}'. Valid {kind} names: {', '.join(catalog) or '(none)'}. "
            f"Fix the sync rules' mapping or add it in Jira.",
            status=422,
        )

    def _account_id(self, who: Mapping[str, Any] | None) -> str | None:
        """The accountId for ``{accountId | email}``; None for nobody."""
        if not who:
            return None
        if who.get("accountId"):
            return str(who["accountId"])
        email = str(who.get("email") or "").strip()
        if not email:
            return None

        def load() -> list[dict[str, Any]]:
            return self.http.get_json(
                f"{API}/user/search", params={"query": email}, action=f"find the Jira user {email}"
            )

        found = [u for u in _cached(("user", self.account, email.casefold()), load) if u.get("active", True)]
        exact = [u for u in found if str(u.get("emailAddress") or "").casefold() == email.casefold()]
        match = exact or (found if len(found) == 1 else [])
        if not match:
            raise ConnectorError(
                f"Jira has no (visible) user with the e-mail {email}. Invite the user, or map the person "
                f"to an accountId in the sync rules.",
                status=422,
            )
        return str(match[0]["accountId"])

    # --- reads -------------------------------------------------------------------------------------------
    def _raw_issue(
        self, item_id: str, *, fields: list[str] | None = None, expand: str = ""
    ) -> dict[str, Any]:
        params: dict[str, Any] = {"fields": ",".join(fields or FIELDS)}
        if expand:
            params["expand"] = expand
        return self.http.get_json(self._issue_path(item_id), params=params, action=f"read issue {item_id}")

    def _all_comments(self, item_id: str, first: Mapping[str, Any] | None) -> list[dict[str, Any]]:
        comments = list((first or {}).get("comments") or [])
        total = int((first or {}).get("total") or len(comments))
        while len(comments) < total:
            page = self.http.get_json(
                self._issue_path(item_id, "/comment"),
                params={"startAt": len(comments), "maxResults": PAGE},
                action=f"read the comments of issue {item_id}",
            )
            if not page.get("comments"):
                break
            comments += page["comments"]
            total = int(page.get("total") or total)
        return comments

    def to_hub(self, issue: Mapping[str, Any], comments: list[Mapping[str, Any]]) -> dict[str, Any]:
        f = issue.get("fields") or {}
        project = f.get("project") or {}
        return {
            "id": str(issue["id"]),
            "key": issue.get("key"),
            "url": f"{self.base_url}/browse/{issue.get('key')}",
            "summary": f.get("summary") or "",
            "description": adf_to_text(f.get("description")),
            "status": {"name": (f.get("status") or {}).get("name")},
            "priority": {"name": f["priority"]["name"]} if f.get("priority") else None,
            "type": {"name": (f.get("issuetype") or {}).get("name")},
            "labels": list(f.get("labels") or []),
            "assignee": person(f.get("assignee")),
            "reporter": person(f.get("reporter")),
            "dueDate": f.get("duedate"),
            "parentId": str(f["parent"]["id"]) if f.get("parent") else None,
            "created": ts(f.get("created")),
            "updated": ts(f.get("updated")),
            "project": {
                "idStr": str(project.get("id") or ""),
                "key": project.get("key"),
                "name": project.get("name"),
            },
            "customFields": {},
            "comments": [
                {
                    "id": str(c["id"]),
                    "body": adf_to_text(c.get("body")) or "",
                    "author": person(c.get("author")),
                    "created": ts(c.get("created")),
                    "updated": ts(c.get("updated") or c.get("created")),
                    "internal": is_internal(c),
                }
                for c in comments
            ],
            "attachments": [
                {
                    "id": str(a["id"]),
                    "filename": a.get("filename") or "attachment",
                    "mimeType": a.get("mimeType") or "application/octet-stream",
                    "size": a.get("size"),
                    "sha256": self._known_sha256(str(a["id"])),
                    "created": ts(a.get("created")),
                }
                for a in sorted(f.get("attachment") or [], key=lambda a: (a.get("created") or "", a["id"]))
            ],
        }

    def _known_sha256(self, attachment_id: str) -> str | None:
        with _lock:
            hit = _cache.get(("sha256", self.account, attachment_id))
        return hit[1] if hit and hit[0] > time.monotonic() else None

    def get_item(self, item_id: str) -> dict[str, Any]:
        issue = self._raw_issue(item_id)
        return self.to_hub(issue, self._all_comments(item_id, issue.get("fields", {}).get("comment")))

    def find_item(self, key: str) -> ItemRef | None:
        key = str(key).strip().rsplit("/browse/", 1)[-1]
        if not key:
            return None
        response = self.http.request(
            "GET",
            self._issue_path(key),
            params={"fields": "updated"},
            action=f"find issue {key}",
            ok_statuses=(404,),
        )
        return self.ref(response.json()) if response.status_code == 200 else None

    def _jql_date(self, when: datetime) -> str:
        """``when`` as JQL's ``yyyy-MM-dd HH:mm`` (cut to the minute) in the API user's time zone."""
        zone_name = self.me().get("timeZone") or "UTC"
        try:
            zone = ZoneInfo(zone_name)
        except (ZoneInfoNotFoundError, ValueError):
            zone = ZoneInfo("UTC")
        return when.astimezone(zone).strftime("%Y-%m-%d %H:%M")

    def _jql_time(self, cursor: str) -> str:
        """``cursor`` minus the overlap, as JQL's ``yyyy-MM-dd HH:mm`` in the API user's time zone."""
        return self._jql_date(parse_ts(cursor) - OVERLAP)

    def _search_page(self, jql: str, fields: list[str], token: str | None, *, action: str) -> dict[str, Any]:
        """One page of ``POST /rest/api/3/search/jql`` (``nextPageToken`` paging)."""
        body: dict[str, Any] = {"jql": jql, "fields": fields, "maxResults": PAGE}
        if token:
            body["nextPageToken"] = token
        # A search changes nothing: repeated after a failure like a GET.
        return self.http.send_json("POST", f"{API}/search/jql", body, action=action, idempotent=True)

    def search_updated_since(
        self, cursor: str | None, *, limit: int = 100
    ) -> tuple[list[ItemRef], str | None]:
        """Issues of the project updated since ``cursor`` minus a 2-minute overlap, oldest first, each
        change once (de-duplicated on id and ``updated``); the next cursor is the newest ``updated``."""
        jql = f'project = "{self.project_key}"'
        if cursor:
            jql += f' AND updated >= "{self._jql_time(cursor)}"'
        jql += " ORDER BY updated ASC"
        refs: list[ItemRef] = []
        newest = cursor
        token: str | None = None
        while len(refs) < limit:
            page = self._search_page(jql, ["updated"], token, action="search issues updated recently")
            for issue in page.get("issues") or []:
                ref = self.ref(issue)
                if not _seen.fresh(self.account, ref.id, ref.updated, self.http):
                    continue
                refs.append(ref)
                newest = max(newest or "", ref.updated)
                if len(refs) >= limit:
                    break
            token = page.get("nextPageToken")
            if page.get("isLast", True) or not token:
                break
        if newest:
            _seen.forget_before(self.account, parse_ts(newest) - 2 * OVERLAP)
        return refs, newest

    def metadata(self) -> dict[str, list[Any]]:
        def users() -> list[dict[str, Any]]:
            rows = self.http.get_json(
                f"{API}/user/assignable/search",
                params={"project": self.project_key, "maxResults": 1000},
                action="list the assignable users",
            )
            return [
                {
                    "email": u.get("emailAddress") or None,
                    "displayName": u.get("displayName") or "",
                    "id": u["accountId"],
                    "accountId": u["accountId"],
                }
                for u in rows
                if u.get("active", True)
            ]

        return {
            "statuses": self._statuses(),
            "priorities": list(self._priorities()),
            "types": list(self._types()),
            "users": _cached(("users", self.account, self.project_key), users),
        }

    def find_created(self, fields: Mapping[str, Any], *, since: datetime) -> list[ItemRef]:
        """Issues the API token's user created in the project ``create_item(fields)`` would use, at or after
        ``since``, with the summary it would write; newest first, from at most two pages of results.

        Jira facts relied on (Atlassian's JQL field reference; ``currentUser()`` as in the v3 description's
        JQL examples; ``POST /rest/api/3/search/jql`` as in the description): ``creator`` is the user who
        created the issue (unlike ``reporter``, which the sync rules may set to someone else) and
        ``currentUser()`` is the caller; ``created >= "yyyy-MM-dd HH:mm"`` has minute precision and is read
        in the caller's time zone (``timeZone`` of ``/myself``); ``fields.created`` has milliseconds and an
        offset. So the JQL starts a day early (a wrong or unknown time zone cannot hide the issue) and sorts
        newest first; the exact cut (``created >= since``), the creator and the summary are checked here.
        """
        project = (fields.get("project") or {}).get("key") or self.project_key
        summary = self._fields({"summary": fields.get("summary")})["summary"].strip()
        since = since if since.tzinfo else since.replace(tzinfo=UTC)
        me = self.me().get("accountId")
        jql = (
            f'project = "{project}" AND creator = currentUser() AND created >= '
            f'"{self._jql_date(since - timedelta(days=1))}" ORDER BY created DESC'
        )
        found: list[tuple[datetime, int, ItemRef]] = []
        token: str | None = None
        for _ in range(2):
            page = self._search_page(
                jql,
                ["summary", "creator", "created", "updated"],
                token,
                action="look for an issue an earlier attempt created",
            )
            reached_older = False
            for issue in page.get("issues") or []:
                f = issue.get("fields") or {}
                if not f.get("created"):
                    continue
                created = parse_ts(f["created"])
                if created < since:
                    reached_older = True  # newest first: the rest is older still
                    continue
                creator = (f.get("creator") or {}).get("accountId")
                if (me and creator and creator != me) or str(f.get("summary") or "").strip() != summary:
                    continue
                found.append((created, int(issue["id"]), self.ref(issue)))
            token = page.get("nextPageToken")
            if reached_older or page.get("isLast", True) or not token:
                break
        return [ref for _created, _id, ref in sorted(found, key=lambda f: (f[0], f[1]), reverse=True)]

    # --- writes ------------------------------------------------------------------------------------------
    def _fields(self, changes: Mapping[str, Any], *, project: str | None = None) -> dict[str, Any]:
        """Jira ``fields`` for hubIssue changes (only the fields given; status apart: a transition)."""
        out: dict[str, Any] = {}
        for name, value in changes.items():
            if name == "summary":
                out["summary"] = str(value or "(no summary)").replace("\n", " ")[:255]
            elif name == "description":
                out["description"] = text_to_adf(value)
            elif name == "priority" and value and value.get("name"):
                ident = self._named(
                    "priority",
                    self._priorities(),
                    value["name"],
                    reload=lambda: _forget(("priorities", self.account)),
                )
                out["priority"] = {"id": ident}
            elif name == "type" and value and value.get("name"):
                key = project or self.project_key
                ident = self._named(
                    "issue type",
                    self._types(key),
                    value["name"],
                    reload=lambda key=key: _forget(("project", self.account, key)),
                )
                out["issuetype"] = {"id": ident}
            elif name == "labels":
                out["labels"] = [str(lb).strip().replace(" ", "_") for lb in value or [] if str(lb).strip()]
            elif name in ("assignee", "reporter"):
                account = self._account_id(value)
                out[name] = {"accountId": account} if account else None
            elif name == "dueDate":
                out["duedate"] = str(value)[:10] if value else None
            elif name == "parentId":
                out["parent"] = {"id": str(value)} if value else None
            elif name == "customFields" and value:
                out.update({k: v for k, v in value.items() if str(k).startswith("customfield_")})
        return out

    def _transition(self, item_id: str, status: str) -> None:
        """Move the issue to the status named ``status`` through the workflow transition that leads there."""
        available = (
            self.http.get_json(
                self._issue_path(item_id, "/transitions"), action=f"list the transitions of issue {item_id}"
            ).get("transitions")
            or []
        )
        wanted = status.strip().casefold()
        for t in available:
            if str((t.get("to") or {}).get("name") or "").casefold() == wanted:
                self.http.send_json(
                    "POST",
                    self._issue_path(item_id, "/transitions"),
                    {"transition": {"id": str(t["id"])}},
                    action=f"move issue {item_id} to {status}",
                )
                return
        current = ((self._raw_issue(item_id, fields=["status"]).get("fields") or {}).get("status") or {}).get(
            "name"
        )
        if str(current or "").casefold() == wanted:
            return  # already there
        offered = ", ".join(f"'{t.get('name')}' → {(t.get('to') or {}).get('name')}" for t in available)
        known = self._statuses()
        unknown = (
            f" The project has no status '{status}' at all; valid statuses: {', '.join(known)}."
            if wanted not in {k.casefold() for k in known}
            else ""
        )
        raise ConnectorError(
            f"Jira issue {item_id} is in '{current}' and no transition leads to '{status}'. Transitions "
            f"available from '{current}': {offered or '(none)'}.{unknown} Map the status in the sync rules "
            f"or change the workflow.",
            status=422,
        )

    def create_item(self, fields: Mapping[str, Any]) -> ItemRef:
        project = (fields.get("project") or {}).get("key") or self.project_key
        data = self._fields(
            {k: v for k, v in fields.items() if k not in ("project", "status")}, project=project
        )
        data.setdefault("summary", "(no summary)")
        if "issuetype" not in data:
            default = self._settings().get("issue_type") or "Task"
            data.update(self._fields({"type": {"name": default}}, project=project))
        data["project"] = {"key": project}
        status = (fields.get("status") or {}).get("name")
        known = self._statuses() if status else []
        if status and str(status).casefold() not in {k.casefold() for k in known}:
            # Refuse before creating: failing after the POST would make the pipeline's retry create another.
            raise ConnectorError(
                f"Jira project {project} has no status '{status}'. Valid statuses: {', '.join(known)}. "
                f"Map the status in the sync rules.",
                status=422,
            )
        created = self.http.send_json(
            "POST", f"{API}/issue", {"fields": data}, action=f"create an issue in {project}"
        )
        ref = ItemRef(
            id=str(created["id"]), key=created["key"], url=f"{self.base_url}/browse/{created['key']}"
        )
        # From here on the issue exists: a failure must not lose its id (a retry would create a duplicate).
        try:
            if status:
                self._transition(ref.id, status)  # no-op when the workflow starts there
            issue = self._raw_issue(ref.id, fields=["updated"])
        except ConnectorError as exc:
            logger.warning("Jira issue %s was created, but setting it up failed: %s", ref.key, exc.message)
            return ref
        return self.ref({**issue, "key": created["key"]})

    def update_item(self, item_id: str, changes: Mapping[str, Any]) -> None:
        data = self._fields({k: v for k, v in changes.items() if k != "status"})
        if data:
            self.http.send_json(
                "PUT", self._issue_path(item_id), {"fields": data}, action=f"update issue {item_id}"
            )
        status = (changes.get("status") or {}).get("name") if changes.get("status") else None
        if status:
            self._transition(item_id, status)

    def _comment_body(self, body: str, internal: bool) -> dict[str, Any]:
        out: dict[str, Any] = {"body": text_to_adf(body) or EMPTY_DOC}
        if internal:
            # Jira Service Management's internal note; plain Jira keeps it as an entity property.
            out["properties"] = [{"key": "sd.public.comment", "value": {"internal": True}}]
        return out

    def add_comment(self, item_id: str, *, body: str, internal: bool = False, author: str = "") -> str:
        comment = self.http.send_json(
            "POST",
            self._issue_path(item_id, "/comment"),
            self._comment_body(body, internal),
            action=f"comment on issue {item_id}",
        )
        return str(comment["id"])

    def update_comment(self, item_id: str, comment_id: str, *, body: str) -> None:
        self.http.send_json(
            "PUT",
            self._issue_path(item_id, f"/comment/{quote(str(comment_id), safe='')}"),
            {"body": text_to_adf(body) or EMPTY_DOC},
            action=f"edit comment {comment_id} on issue {item_id}",
        )

    def delete_comment(self, item_id: str, comment_id: str) -> None:
        self.http.request(
            "DELETE",
            self._issue_path(item_id, f"/comment/{quote(str(comment_id), safe='')}"),
            action=f"delete comment {comment_id} on issue {item_id}",
            ok_statuses=(404,),  # already gone: deleting is idempotent
        )

    def add_attachment(self, item_id: str, *, filename: str, mime_type: str, content: IO[bytes]) -> str:
        stream = MultipartStream(content, filename=filename, mime_type=mime_type)
        response = self.http.request(
            "POST",
            self._issue_path(item_id, "/attachments"),
            data=stream,
            headers={"Content-Type": stream.content_type, "X-Atlassian-Token": "no-check"},
            action=f"attach {filename} to issue {item_id}",
        )
        created = response.json()
        if not created:
            raise ConnectorError(f"Jira accepted {filename} for issue {item_id} but returned no attachment.")
        att_id = str(created[0]["id"])
        digest = stream.digest.hexdigest()
        with _lock:  # Jira shows no checksum: remember the one of our own upload
            _cache[("sha256", self.account, att_id)] = (time.monotonic() + 7 * 86400.0, digest)
        return att_id

    def delete_attachment(self, item_id: str, attachment_id: str) -> None:
        self.http.request(
            "DELETE",
            f"{API}/attachment/{quote(str(attachment_id), safe='')}",
            action=f"delete attachment {attachment_id} of issue {item_id}",
            ok_statuses=(404,),
        )

    def open_attachment(self, item_id: str, attachment_id: str) -> Iterator[bytes]:
        # redirect=false: Jira streams the content itself instead of redirecting to its media host.
        return self.http.download(
            f"{API}/attachment/content/{quote(str(attachment_id), safe='')}?redirect=false",
            action=f"download attachment {attachment_id} of issue {item_id}",
        )

    # --- queries: JQL (triggers, bulk exalate) ----------------------------------------------------------
    # A trigger holds JQL as typed in Jira's issue search ("labels = sync AND priority = High"). It is
    # always limited to the instance's project; a trailing ORDER BY is dropped (the connector pages by id).
    def _scoped_jql(self, query: str) -> str:
        condition = jql_condition(query)
        scope = f'project = "{self.project_key}"'
        return f"{scope} AND ({condition})" if condition else scope

    def _jql_refused(self, errors: list[str] | str) -> ConnectorError:
        text = "; ".join(errors) if isinstance(errors, list) else errors
        return ConnectorError(
            f"Jira refused the trigger's JQL: {text} Fix the query (try it in Jira's issue search first) "
            "and save the trigger again.",
            status=400,
        )

    def _jql_call(self, path: str, body: dict[str, Any], action: str) -> dict[str, Any]:
        # jql/parse, jql/match and search/jql only read: repeated after a failure like a GET.
        response = self.http.request(
            "POST", path, json=body, action=action, ok_statuses=(400,), idempotent=True
        )
        data = response.json() if response.content else {}
        if response.status_code == 400:
            errors = list(data.get("errorMessages") or []) + [
                f"{k}: {v}" for k, v in (data.get("errors") or {}).items()
            ]
            raise self._jql_refused(errors or "the query is not valid JQL.")
        return data

    def query_validate(self, query: str) -> None:
        """``POST /rest/api/3/jql/parse?validation=strict``: syntax, fields, values and permissions."""
        condition = jql_condition(query)
        if not condition:
            return  # every issue of the project
        data = self._jql_call(
            f"{API}/jql/parse?validation=strict", {"queries": [condition]}, "check the trigger's JQL"
        )
        for parsed in data.get("queries") or []:
            if parsed.get("errors"):
                raise self._jql_refused(list(parsed["errors"]))

    def query_matches(self, query: str, item: dict[str, Any]) -> bool:
        """``POST /rest/api/3/jql/match``: Jira evaluates the JQL against the one issue."""
        data = self._jql_call(
            f"{API}/jql/match",
            {"issueIds": [int(item["id"])], "jqls": [self._scoped_jql(query)]},
            f"match issue {item.get('key') or item['id']} against the trigger's JQL",
        )
        [result] = data.get("matches") or [{"errors": [], "matchedIssues": []}]
        if result.get("errors"):
            raise self._jql_refused(list(result["errors"]))
        return int(item["id"]) in {int(i) for i in result.get("matchedIssues") or []}

    def query_search(self, query: str, *, after: str | None = None, limit: int = 100) -> list[ItemRef]:
        """``(JQL) AND id > <after> ORDER BY id ASC`` through ``POST /rest/api/3/search/jql``: ids only grow,
        so the order is stable and a page never repeats or skips an issue that still matches."""
        jql = self._scoped_jql(query)
        if after and str(after).isdigit():
            jql += f" AND id > {int(after)}"
        jql += " ORDER BY id ASC"
        refs: list[ItemRef] = []
        token: str | None = None
        while len(refs) < limit:
            body: dict[str, Any] = {
                "jql": jql,
                "fields": ["updated"],
                "maxResults": min(PAGE, limit - len(refs)),
            }
            if token:
                body["nextPageToken"] = token
            page = self._jql_call(f"{API}/search/jql", body, "search issues with the trigger's JQL")
            refs += [self.ref(issue) for issue in page.get("issues") or []]
            token = page.get("nextPageToken")
            if page.get("isLast", True) or not token:
                break
        return refs[:limit]

    # --- housekeeping ------------------------------------------------------------------------------------
    def test_credentials(self) -> str:
        _forget(("me", self.account))
        _forget(("project", self.account, self.project_key))
        user = self.me()
        project = self._project()
        return (
            f"Connected to Jira as {user.get('displayName')} ({user.get('accountId')}); project "
            f"{project.get('key')} ({project.get('name')})."
        )

    def is_own_change(self, item: Mapping[str, Any] | ItemRef) -> bool:
        """Whether the latest change was made by the node's Jira user (the API token's account).

        ``item`` may be a webhook payload (``user``, or for comment events the comment's ``updateAuthor``),
        or an ``ItemRef``/hubIssue: then the issue's newest change is read (one request, ``expand=changelog``,
        comments included) and its author compared.
        """
        me = self.me().get("accountId")
        if isinstance(item, Mapping) and "webhookEvent" in item:
            comment = item.get("comment") or {}
            actor = (comment.get("updateAuthor") or comment.get("author") or item.get("user") or {}).get(
                "accountId"
            )
            return bool(me) and actor == me
        item_id = item.id if isinstance(item, ItemRef) else str(item["id"])
        issue = self._raw_issue(item_id, fields=["comment", "updated"], expand="changelog")
        changes = [
            (parse_ts(h["created"]), (h.get("author") or {}).get("accountId"))
            for h in (issue.get("changelog") or {}).get("histories") or []
        ]
        changes += [
            (
                parse_ts(c.get("updated") or c["created"]),
                (c.get("updateAuthor") or c.get("author") or {}).get("accountId"),
            )
            for c in ((issue.get("fields") or {}).get("comment") or {}).get("comments") or []
        ]
        if not changes:
            return False
        return max(changes, key=lambda c: c[0])[1] == me
