"""Connector for GitHub issues over the REST API (``X-GitHub-Api-Version: 2022-11-28``) with a token.

Instance configuration: ``url`` is the API root (``https://api.github.com``, or ``https://HOST/api/v3`` for
GitHub Enterprise Server; empty means api.github.com), ``credentials`` is ``{"token": "..."}`` (a
fine-grained token with *Issues: read and write* and *Metadata: read* on the repository, or a classic token
with ``repo``), ``settings`` holds ``repo`` (``"owner/name"``) and optionally ``rate_limit_per_s``.

How GitHub maps onto the hubIssue:

* Item id = the issue number (``"42"``); key = ``owner/name#42`` (``find_item`` also takes ``#42``, ``42``
  and the issue's URL). Pull requests are issues to GitHub's API; they are skipped everywhere.
* ``status`` is ``Open`` or ``Closed``; ``resolution`` carries GitHub's ``state_reason`` (``completed``,
  ``not_planned``, ``reopened``, ``duplicate``). Writing ``status`` ``Closed`` with a ``resolution`` closes
  with that reason; any other status name is refused with the list of valid ones.
* ``labels`` are label names (GitHub creates missing labels); ``assignee``/``reporter`` are
  ``{email, displayName, accountId}`` with the login as ``displayName`` and ``accountId`` (GitHub shows a
  user's e-mail only when they made it public, so it is usually None). Writing an assignee uses
  ``accountId`` (a login), else a visible e-mail or a login equal to ``displayName`` among the repository's
  assignable users; when none matches, the assignee is left as it is (logged), since GitHub cannot assign
  someone who has no access to the repository.
* ``customFields.milestone`` is the milestone title (written by title; unknown titles are refused with the
  valid ones). GitHub issues have no priority or due date: those are read as None and ignored on write;
  ``type`` is read from organisation issue types when present and ignored on write.
* Comments are issue comments, written by the token's user (GitHub cannot post as someone else).
* **Attachments.** GitHub's REST API has no attachments (files in issues are uploaded through the web UI
  only). ``add_attachment`` therefore adds a *marker comment* saying which file was attached on the synced
  item (name, size, SHA-256), and returns ``c<comment id>`` as the attachment id; such comments are shown in
  ``attachments`` (not in ``comments``) and ``delete_attachment`` deletes them. The connector interface hands
  over the file's content, not a URL on the sending side, so the marker names the file rather than linking
  to it. ``open_attachment`` raises ``ConnectorError``: there is nothing on GitHub to download.

Changes are found by webhooks (``verify_webhook``/``parse_webhook``, register ``/hooks/github/<instance
uid>/`` for the *Issues* and *Issue comments* events with content type ``application/json`` and a secret)
and by polling ``search_updated_since`` (``since`` with ``sort=updated&direction=asc``, ``Link``
pagination). Polls and reads send ``If-None-Match`` with the last ETag: an unchanged answer is a 304, which
GitHub does not count against the rate limit.

A create whose answer was lost is looked up by ``find_created`` (``creator=<the token's user>``, newest
first). The connector's POSTs all write (an issue, a comment): they are not repeated once GitHub may have
acted on them; its PATCHes set values and its DELETEs remove, so those are repeated.

Triggers hold issue search qualifiers and words (``label:sync state:open``), searched with ``GET
/search/issues``: see ``query_search`` for the order and paging, ``docs/connectors.md`` for the scheme.

Tests swap the HTTP session through ``instances.connectors._common.use_transport`` (see there), or assign
``connector.http`` directly.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import re
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterator, Mapping
from datetime import UTC, datetime, timedelta
from typing import IO, Any
from urllib.parse import quote

import requests

from instances.connectors._common import (
    OwnWrites,
    ReplayGuard,
    SeenWindow,
    account_key,
    build_http,
    credentials,
    header,
    iso,
    obj,
    parse_ts,
    scalar,
)
from instances.connectors.base import Connector, ConnectorError, ItemRef, register
from instances.connectors.http import HttpClient

logger = logging.getLogger(__name__)

API = "https://api.github.com"
API_VERSION = "2022-11-28"
PAGE = 100  # GitHub's maximum per_page
OVERLAP = timedelta(seconds=60)  # re-read this far behind the cursor (GitHub's search index lags)
CACHE_TTL = 300.0
STATUSES = ("Open", "Closed")
STATE_REASONS = ("completed", "not_planned", "reopened", "duplicate")
MARKER = "<!-- exalate-node:attachment"
_MARKER_RE = re.compile(
    r"^<!-- exalate-node:attachment (?P<meta>\{.*?\}) -->", re.DOTALL
)  # the JSON holds filename, size, mimeType, sha256

HINTS = {
    401: "the token was rejected. Check the token in the instance's credentials (it may have expired).",
    403: "the token has no permission for this. A fine-grained token needs 'Issues: read and write' and "
    "'Metadata: read' on the repository; a classic token needs the 'repo' scope.",
    404: "it does not exist or the token cannot see it. Check the 'repo' setting (owner/name) and that the "
    "token has access to that repository.",
    410: "issues are disabled in this repository, or the issue was deleted.",
    422: "GitHub rejected the values. Check the sync rules' mapping (labels, assignees, milestone).",
}

# Issue search qualifiers a trigger may use (GitHub's "Searching issues and pull requests"); GitHub reads an
# unknown qualifier as plain text, so the connector refuses it instead of silently matching nothing.
QUERY_QUALIFIERS = frozenset(
    {
        "is", "type", "in", "author", "assignee", "mentions", "commenter", "involves", "team", "label",
        "milestone", "project", "state", "reason", "no", "has", "language", "comments", "interactions",
        "reactions", "created", "updated", "closed", "archived", "linked", "parent-issue", "sub-issue",
    }
)  # fmt: skip
SCOPE_QUALIFIERS = frozenset({"repo", "org", "user", "sort"})  # set by the connector
_QUALIFIER_RE = re.compile(r'(?:^|(?<=\s))-?(?P<name>[A-Za-z][\w-]*):(?P<value>"[^"]*"|\S*)')

# Per-process memory shared by the connectors of one GitHub account (a connector is built per call).
_seen = SeenWindow()
_own = OwnWrites()
_deliveries = ReplayGuard()
_lock = threading.Lock()
_cache: dict[tuple[str, ...], tuple[float, Any]] = {}
# ETag cache: (account, url) -> (etag, decoded body, Link header); bounded.
_etags: OrderedDict[tuple[str, str], tuple[str, Any, str]] = OrderedDict()
ETAG_CACHE_SIZE = 5000


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


def reset_memory() -> None:
    """Forget every per-process cache (tests)."""
    with _lock:
        _cache.clear()
        _etags.clear()
    _seen.clear()
    _own.clear()
    _deliveries.clear()


def person(user: Mapping[str, Any] | None) -> dict[str, Any] | None:
    """``{email, displayName, accountId}`` for a GitHub user; the e-mail only when GitHub shows it."""
    if not user:
        return None
    login = user.get("login") or ""
    return {"email": user.get("email") or None, "displayName": user.get("name") or login, "accountId": login}


def parse_marker(body: str | None) -> dict[str, Any] | None:
    """The attachment a marker comment stands for, or None when ``body`` is an ordinary comment."""
    match = _MARKER_RE.match(body or "")
    if not match:
        return None
    try:
        meta = json.loads(match.group("meta"))
    except ValueError:
        return None
    return meta if isinstance(meta, dict) and meta.get("filename") else None


def marker_body(*, filename: str, size: int, mime_type: str, sha256: str) -> str:
    meta = {"filename": filename, "size": size, "mimeType": mime_type or None, "sha256": sha256}
    shown = f"{size} bytes" if size < 1024 else f"{size / 1024:.1f} KB"
    safe_name = filename.replace("`", "'")
    return (
        f"{MARKER} {json.dumps(meta, separators=(',', ':'))} -->\n"
        f"📎 `{safe_name}` ({shown}, SHA-256 `{sha256[:12]}…`) was attached on the synced item. "
        f"GitHub issues have no attachment API, so the file stays there."
    )


def to_hub(issue: Mapping[str, Any], comments: list[Mapping[str, Any]], *, repo: str) -> dict[str, Any]:
    """A GitHub issue and its comments in the hubIssue shape (marker comments become attachments)."""
    hub_comments, attachments = [], []
    for c in comments:
        meta = parse_marker(c.get("body"))
        if meta is not None:
            attachments.append(
                {
                    "id": f"c{c['id']}",
                    "filename": meta["filename"],
                    "mimeType": meta.get("mimeType") or "application/octet-stream",
                    "size": meta.get("size"),
                    "sha256": meta.get("sha256"),
                    "created": c.get("created_at"),
                }
            )
            continue
        hub_comments.append(
            {
                "id": str(c["id"]),
                "body": c.get("body") or "",
                "author": person(c.get("user")),
                "created": c.get("created_at"),
                "updated": c.get("updated_at") or c.get("created_at"),
                "internal": False,
            }
        )
    closed = issue.get("state") == "closed"
    milestone = issue.get("milestone")
    custom: dict[str, Any] = {}
    if milestone:
        custom["milestone"] = milestone.get("title")
    return {
        "id": str(issue["number"]),
        "key": f"{repo}#{issue['number']}",
        "url": issue.get("html_url"),
        "summary": issue.get("title") or "",
        "description": issue.get("body") or None,
        "status": {"name": "Closed" if closed else "Open"},
        "resolution": {"name": issue["state_reason"]} if issue.get("state_reason") else None,
        "priority": None,
        "type": {"name": issue["type"]["name"]} if isinstance(issue.get("type"), dict) else None,
        "labels": [lb["name"] if isinstance(lb, dict) else str(lb) for lb in issue.get("labels") or []],
        "assignee": person(issue.get("assignee")),
        "reporter": person(issue.get("user")),
        "dueDate": None,
        "parentId": None,
        "created": issue.get("created_at"),
        "updated": issue.get("updated_at"),
        "project": {"idStr": repo, "key": repo, "name": repo.split("/")[-1]},
        "customFields": custom,
        "comments": hub_comments,
        "attachments": attachments,
    }


# --- webhooks ----------------------------------------------------------------------------------------------


def verify_webhook(headers: Mapping[str, str], body: bytes, secret: str) -> bool:
    """Whether ``X-Hub-Signature-256`` is the HMAC-SHA256 of the raw body with the webhook's secret.

    Compared in constant time; False without a secret or a signature (never accept unsigned deliveries).
    """
    given = header(headers, "X-Hub-Signature-256")
    if not secret or not given.startswith("sha256="):
        return False
    expected = "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()
    return hmac.compare_digest(given.encode(), expected.encode())


def parse_webhook(
    headers: Mapping[str, str],
    body: bytes | str | Mapping[str, Any],
    *,
    seen: Callable[[str], bool] | None = None,
) -> list[ItemRef]:
    """The issues a verified delivery is about (``issues`` and ``issue_comment`` events; pull requests and
    other events give ``[]``).

    A delivery already handled (same ``X-GitHub-Delivery``, as on a redelivery) gives ``[]``. By default the
    ids are remembered in a bounded in-memory window of this process (24 h); with several web processes pass
    ``seen``: a callable that returns True when the id was already handled and records it otherwise
    (e.g. an insert into a table with a unique id).
    """
    delivery = header(headers, "X-GitHub-Delivery")
    already = seen(delivery) if (seen is not None and delivery) else not _deliveries.first_time(delivery)
    if already:
        return []
    event = header(headers, "X-GitHub-Event")
    if event not in ("issues", "issue_comment"):
        return []
    payload = body if isinstance(body, Mapping) else json.loads(body or b"{}")
    if not isinstance(payload, Mapping):
        raise ValueError("the delivery is not a JSON object")
    issue = obj(payload.get("issue"))
    number = scalar(issue.get("number"))
    if not number.isdigit() or issue.get("pull_request"):
        return []
    repo = scalar(obj(payload.get("repository")).get("full_name"))
    return [
        ItemRef(
            id=number,
            key=f"{repo}#{number}",
            url=scalar(issue.get("html_url")),
            updated=scalar(issue.get("updated_at")),
        )
    ]


def parse_key(key: str) -> str | None:
    """The issue number in ``owner/name#42``, ``#42``, ``42`` or an issue URL; None otherwise."""
    match = re.fullmatch(r"\s*(?:.*/issues/|[\w.-]+/[\w.-]+#|#)?(\d+)\s*", str(key))
    return match.group(1) if match else None


@register
class GitHubConnector(Connector):
    """One GitHub repository's issues."""

    tracker_type = "github"

    verify_webhook = staticmethod(verify_webhook)
    parse_webhook = staticmethod(parse_webhook)

    _http: HttpClient | None = None

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._created: dict[str, str] = {}  # issue number -> created_at, from the last query pages

    # --- plumbing ----------------------------------------------------------------------------------------
    @property
    def token(self) -> str:
        example = '{"token": "github_pat_..."}'
        return str(credentials(self.instance, "GitHub", ("token",), example)["token"])

    @property
    def base_url(self) -> str:
        return (self.instance.url or API).rstrip("/")

    @property
    def repo(self) -> str:
        repo = str((self.instance.settings or {}).get("repo") or "").strip().strip("/")
        if not re.fullmatch(r"[\w.-]+/[\w.-]+", repo):
            raise ConnectorError(
                f"{self.instance.name}: set the 'repo' setting to the repository as owner/name "
                f'(e.g. {{"repo": "octo-org/widgets"}}); it is {repo or "empty"}.'
            )
        return repo

    @property
    def http(self) -> HttpClient:
        if self._http is None:
            self._http = build_http(
                self.instance,
                tracker_type="github",
                service="GitHub",
                base_url=self.base_url,
                headers={
                    "Authorization": f"Bearer {self.token}",
                    "Accept": "application/vnd.github+json",
                    "X-GitHub-Api-Version": API_VERSION,
                    "User-Agent": "exalate-node",
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
        return account_key(self.instance, self.token)

    def _path(self, suffix: str = "") -> str:
        owner, name = self.repo.split("/")
        return f"repos/{quote(owner)}/{quote(name)}{suffix}"

    def ref(self, issue: Mapping[str, Any]) -> ItemRef:
        return ItemRef(
            id=str(issue["number"]),
            key=f"{self.repo}#{issue['number']}",
            url=issue.get("html_url") or "",
            updated=issue.get("updated_at") or "",
        )

    def _number(self, item_id: str) -> str:
        number = parse_key(item_id)
        if number is None:
            raise ConnectorError(f"'{item_id}' is not a GitHub issue number.", status=404)
        return number

    def _get(self, path: str, *, params: Mapping[str, Any] | None = None, action: str) -> requests.Response:
        """A GET with ``If-None-Match`` when the same URL was read before: a 304 is answered from the cache
        (and costs nothing against GitHub's rate limit). The response's ``json()`` is always usable."""
        url = requests.Request("GET", self.http.url(path), params=params).prepare().url or path
        key = (self.account, url)
        with _lock:
            cached = _etags.get(key)
        headers = {"If-None-Match": cached[0]} if cached else {}
        response = self.http.request("GET", url, headers=headers, action=action, ok_statuses=(304,))
        if response.status_code == 304 and cached:
            # Serve the cached body (and its Link header: later pages may still have changed).
            response._content = json.dumps(cached[1]).encode()
            if cached[2]:
                response.headers["Link"] = cached[2]
            return response
        etag = response.headers.get("ETag")
        if etag:
            with _lock:
                _etags[key] = (etag, response.json(), response.headers.get("Link", ""))
                _etags.move_to_end(key)
                while len(_etags) > ETAG_CACHE_SIZE:
                    _etags.popitem(last=False)
        return response

    def _pages(self, path: str, *, params: Mapping[str, Any], action: str) -> Iterator[list[dict[str, Any]]]:
        """The pages of a list endpoint, following ``Link: <...>; rel="next"``."""
        response = self._get(path, params=params, action=action)
        while True:
            yield response.json()
            nxt = response.links.get("next", {}).get("url")
            if not nxt:
                return
            response = self._get(nxt, action=action)

    def _remember(self, issue_number: str, updated: Any) -> None:
        _own.remember(self.account, issue_number, updated)

    # --- people ------------------------------------------------------------------------------------------
    def me(self) -> dict[str, Any]:
        """The token's user (cached per process): the node writes as this user."""
        return _cached(
            ("me", self.account),
            lambda: self.http.get_json("user", action="read the token's user"),
            ttl=3600.0,
        )

    def _assignable(self) -> list[dict[str, Any]]:
        def load() -> list[dict[str, Any]]:
            users: list[dict[str, Any]] = []
            for page in self._pages(
                self._path("/assignees"), params={"per_page": PAGE}, action="list the assignable users"
            ):
                users.extend(page)
            return users

        return _cached(("assignees", self.account, self.repo), load)

    def _login_for(self, who: Mapping[str, Any] | None) -> str | None:
        """The login to assign for ``{accountId | email | displayName}``; "" to unassign; None = unknown."""
        if not who:
            return ""
        if who.get("accountId"):
            return str(who["accountId"])
        email = str(who.get("email") or "").casefold()
        name = str(who.get("displayName") or "").casefold()
        for user in self._assignable():
            if email and str(user.get("email") or "").casefold() == email:
                return str(user["login"])
            if name and str(user.get("login") or "").casefold() == name:
                return str(user["login"])
        return None

    def _milestone_number(self, title: str) -> int:
        def load() -> dict[str, int]:
            out: dict[str, int] = {}
            for page in self._pages(
                self._path("/milestones"), params={"state": "all", "per_page": PAGE}, action="list milestones"
            ):
                out.update({m["title"]: int(m["number"]) for m in page})
            return out

        milestones = _cached(("milestones", self.account, self.repo), load)
        for known, number in milestones.items():
            if known.casefold() == str(title).strip().casefold():
                return number
        raise ConnectorError(
            f"GitHub repository {self.repo} has no milestone '{title}'. Valid milestones: "
            f"{', '.join(milestones) or '(none)'}. Create it on GitHub or fix the sync rules' mapping.",
            status=422,
        )

    # --- reads -------------------------------------------------------------------------------------------
    def _raw_issue(self, number: str) -> dict[str, Any]:
        issue = self._get(self._path(f"/issues/{number}"), action=f"read issue #{number}").json()
        if issue.get("pull_request"):
            raise ConnectorError(f"#{number} in {self.repo} is a pull request, not an issue.", status=404)
        return issue

    def _comments(self, number: str) -> list[dict[str, Any]]:
        comments: list[dict[str, Any]] = []
        for page in self._pages(
            self._path(f"/issues/{number}/comments"),
            params={"per_page": PAGE},
            action=f"read the comments of issue #{number}",
        ):
            comments.extend(page)
        return comments

    def get_item(self, item_id: str) -> dict[str, Any]:
        number = self._number(item_id)
        issue = self._raw_issue(number)
        comments = self._comments(number) if issue.get("comments") else []
        return to_hub(issue, comments, repo=self.repo)

    def find_item(self, key: str) -> ItemRef | None:
        number = parse_key(key)
        if number is None:
            return None
        response = self.http.request(
            "GET", self._path(f"/issues/{number}"), action=f"find issue #{number}", ok_statuses=(404, 410)
        )
        if response.status_code != 200:
            return None
        issue = response.json()
        return None if issue.get("pull_request") else self.ref(issue)

    def search_updated_since(
        self, cursor: str | None, *, limit: int = 100
    ) -> tuple[list[ItemRef], str | None]:
        """Issues updated since ``cursor`` minus a 60 s overlap, oldest first, each change once.

        The first page carries ``If-None-Match`` from the previous identical poll: when nothing changed,
        GitHub answers 304 and the poll costs nothing against the rate limit. What the overlap re-reads
        (same number and ``updated_at``) is skipped. The next cursor is the newest ``updated_at`` returned.
        """
        params: dict[str, Any] = {"state": "all", "sort": "updated", "direction": "asc", "per_page": PAGE}
        if cursor:
            params["since"] = iso(parse_ts(cursor) - OVERLAP)
        refs: list[ItemRef] = []
        newest = cursor
        for page in self._pages(
            self._path("/issues"), params=params, action="list the issues updated recently"
        ):
            for issue in page:
                if issue.get("pull_request"):
                    continue
                if not _seen.fresh(self.account, str(issue["number"]), issue["updated_at"], self.http):
                    continue
                refs.append(self.ref(issue))
                newest = max(newest or "", issue["updated_at"])
                if len(refs) >= limit:
                    break
            if len(refs) >= limit:
                break
        if newest:
            _seen.forget_before(self.account, parse_ts(newest) - 2 * OVERLAP)
        return refs, newest

    def find_created(self, fields: Mapping[str, Any], *, since: datetime) -> list[ItemRef]:
        """Issues the token's user opened in the repository at or after ``since`` with the title
        ``create_item(fields)`` would write, newest first (pull requests skipped), from at most two pages.

        GitHub facts relied on (GitHub's REST description, ``GET /repos/{owner}/{repo}/issues``):
        ``creator`` keeps the issues a user created (``user`` is that user); ``since`` keeps issues
        *updated* after a time, which every issue created since then is; ``sort=created&direction=desc``
        lists the newest first; the list holds pull requests too (they carry ``pull_request``); times are
        whole seconds (``YYYY-MM-DDTHH:MM:SSZ``), so ``since`` is cut to its second and the exact cut is
        made here.
        """
        login = str(self.me().get("login") or "")
        if not login:
            return []
        title = str(self._payload({"summary": fields.get("summary")})["title"]).strip()
        start = (since if since.tzinfo else since.replace(tzinfo=UTC)).replace(microsecond=0)
        params = {
            "creator": login,
            "state": "all",
            "sort": "created",
            "direction": "desc",
            "since": iso(start - timedelta(seconds=1)),  # a second wider, whether GitHub's "after" is strict
            "per_page": PAGE,
        }
        found: list[dict[str, Any]] = []
        pages = self._pages(
            self._path("/issues"), params=params, action="look for an issue an earlier attempt created"
        )
        for n, page in enumerate(pages, start=1):
            reached_older = False
            for issue in page:
                if parse_ts(issue["created_at"]) < start:
                    reached_older = True  # newest first: the rest is older still
                    continue
                if issue.get("pull_request") or (issue.get("title") or "").strip() != title:
                    continue
                if str((issue.get("user") or {}).get("login") or "").casefold() != login.casefold():
                    continue
                found.append(issue)
            if reached_older or n >= 2:
                break
        found.sort(key=lambda i: (parse_ts(i["created_at"]), int(i["number"])), reverse=True)
        return [self.ref(i) for i in found]

    def metadata(self) -> dict[str, list[Any]]:
        def labels() -> list[str]:
            names: list[str] = []
            for page in self._pages(self._path("/labels"), params={"per_page": PAGE}, action="list labels"):
                names.extend(lb["name"] for lb in page)
            return names

        users = [
            {
                "email": u.get("email") or None,
                "displayName": u["login"],
                "id": u["login"],
                "accountId": u["login"],
            }
            for u in self._assignable()
        ]
        return {
            "statuses": list(STATUSES),
            "priorities": [],
            "types": [],
            "users": users,
            "labels": _cached(("labels", self.account, self.repo), labels),
        }

    # --- writes ------------------------------------------------------------------------------------------
    def _payload(self, changes: Mapping[str, Any]) -> dict[str, Any]:
        """GitHub's issue body for hubIssue field changes (only the fields given)."""
        out: dict[str, Any] = {}
        for name, value in changes.items():
            if name == "summary":
                out["title"] = str(value or "(no summary)")
            elif name == "description":
                out["body"] = value or ""
            elif name == "status" and value and value.get("name"):
                wanted = str(value["name"]).strip().casefold()
                if wanted not in ("open", "closed"):
                    raise ConnectorError(
                        f"GitHub issues have no status '{value['name']}'. Valid statuses: "
                        f"{', '.join(STATUSES)}. Map the status in the sync rules (e.g. Done → Closed).",
                        status=422,
                    )
                out["state"] = wanted
            elif name == "resolution":
                reason = str((value or {}).get("name") or "").strip().lower().replace(" ", "_")
                if reason and reason not in STATE_REASONS:
                    raise ConnectorError(
                        f"GitHub has no close reason '{(value or {}).get('name')}'. Valid reasons: "
                        f"{', '.join(STATE_REASONS)}.",
                        status=422,
                    )
                if reason:
                    out["state_reason"] = reason
            elif name == "labels":
                out["labels"] = [str(lb) for lb in value or []]
            elif name == "assignee":
                login = self._login_for(value)
                if login is None:
                    logger.warning(
                        "GitHub %s: no assignable user matches %s; the assignee is left as it is.",
                        self.repo,
                        {k: v for k, v in (value or {}).items() if k != "email"},
                    )
                else:
                    out["assignees"] = [login] if login else []
            elif name == "customFields" and value and "milestone" in value:
                title = value.get("milestone")
                out["milestone"] = self._milestone_number(title) if title else None
            # priority, type, dueDate, reporter, parentId: GitHub issues have none to write
        if out.get("state_reason") and "state" not in out:
            out["state"] = "closed" if out["state_reason"] != "reopened" else "open"
        return out

    def create_item(self, fields: Mapping[str, Any]) -> ItemRef:
        body = self._payload({k: v for k, v in fields.items() if k != "project"})
        state = body.pop("state", None)
        reason = body.pop("state_reason", None)
        body.setdefault("title", "(no summary)")
        issue = self.http.send_json(
            "POST", self._path("/issues"), body, action=f"create an issue in {self.repo}"
        )
        self._remember(str(issue["number"]), issue.get("updated_at"))
        if state == "closed":  # GitHub creates issues open: close it in a second request
            try:
                self.update_item(
                    str(issue["number"]), {"status": {"name": "Closed"}, "resolution": {"name": reason}}
                )
            except ConnectorError as exc:
                # The issue exists: failing now would make the pipeline's retry create a second one.
                logger.warning(
                    "GitHub issue #%s was created but not closed: %s", issue["number"], exc.message
                )
        return self.ref(issue)

    def update_item(self, item_id: str, changes: Mapping[str, Any]) -> None:
        number = self._number(item_id)
        body = self._payload(changes)
        if body:
            issue = self.http.send_json(
                "PATCH", self._path(f"/issues/{number}"), body, action=f"update issue #{number}"
            )
            self._remember(number, (issue or {}).get("updated_at"))

    def add_comment(self, item_id: str, *, body: str, internal: bool = False, author: str = "") -> str:
        # GitHub has no internal comments and posts as the token's user; the rules may add "X wrote:".
        number = self._number(item_id)
        comment = self.http.send_json(
            "POST",
            self._path(f"/issues/{number}/comments"),
            {"body": body or " "},
            action=f"comment on issue #{number}",
        )
        self._remember(number, comment.get("updated_at") or comment.get("created_at"))
        return str(comment["id"])

    def update_comment(self, item_id: str, comment_id: str, *, body: str) -> None:
        comment = self.http.send_json(
            "PATCH",
            self._path(f"/issues/comments/{int(comment_id)}"),
            {"body": body or " "},
            action=f"edit comment {comment_id} on issue #{item_id}",
        )
        self._remember(self._number(item_id), (comment or {}).get("updated_at"))

    def delete_comment(self, item_id: str, comment_id: str) -> None:
        self.http.request(
            "DELETE",
            self._path(f"/issues/comments/{int(str(comment_id).lstrip('c'))}"),
            action=f"delete comment {comment_id} on issue #{item_id}",
            ok_statuses=(404,),  # already gone: deleting is idempotent
        )

    def add_attachment(self, item_id: str, *, filename: str, mime_type: str, content: IO[bytes]) -> str:
        """A marker comment naming the file (GitHub has no attachment API; see the module docstring)."""
        digest, size = hashlib.sha256(), 0
        while chunk := content.read(64 * 1024):
            digest.update(chunk)
            size += len(chunk)
        body = marker_body(filename=filename, size=size, mime_type=mime_type, sha256=digest.hexdigest())
        return "c" + self.add_comment(item_id, body=body)

    def delete_attachment(self, item_id: str, attachment_id: str) -> None:
        if str(attachment_id).startswith("c"):
            self.delete_comment(item_id, attachment_id[1:])

    def open_attachment(self, item_id: str, attachment_id: str) -> Iterator[bytes]:
        raise ConnectorError(
            f"GitHub has no attachments: '{attachment_id}' on issue #{item_id} is a note that a file was "
            f"attached on the synced item, and there is no file on GitHub to download. Exclude GitHub's "
            f"attachments in the outgoing sync rules (replica.attachments = []).",
            retryable=False,
        )

    # --- queries: GitHub issue search (triggers, bulk exalate) ----------------------------------------------
    # A trigger holds search qualifiers and words as typed in GitHub's issue search ("label:sync state:open").
    # The connector adds "repo:<owner/name> is:issue" and orders by creation date: GET /search/issues.
    def _query_condition(self, query: str) -> str:
        condition = " ".join(query.split())
        for match in _QUALIFIER_RE.finditer(re.sub(r'(^|\s)"[^"]*"', r"\1", condition)):  # not in phrases
            name, value = match.group("name").lower(), match.group("value").strip('"').lower()
            if name in SCOPE_QUALIFIERS:
                raise ConnectorError(
                    f"Remove '{match.group(0)}' from the trigger: the node limits it to {self.repo} and "
                    "orders by creation date itself.",
                    status=400,
                )
            if name not in QUERY_QUALIFIERS:
                raise ConnectorError(
                    f"GitHub issue search has no qualifier '{name}:' (GitHub would search for the text "
                    f"'{match.group(0)}' instead). Use one of {', '.join(sorted(QUERY_QUALIFIERS))}.",
                    status=400,
                )
            if name in ("is", "type") and value in ("pr", "pull-request"):
                raise ConnectorError(
                    "Triggers on GitHub select issues; pull requests are not synced. Remove "
                    f"'{match.group(0)}'.",
                    status=400,
                )
        return condition

    def _search(self, condition: str, *, created_from: str = "", page: int = 1, per_page: int = PAGE) -> Any:
        q = f"repo:{self.repo} is:issue {condition}".strip()
        if created_from:
            q += f" created:>={created_from}"
        response = self.http.request(
            "GET",
            "search/issues",
            params={"q": q, "sort": "created", "order": "asc", "per_page": per_page, "page": page},
            action="search issues with the trigger's query",
            ok_statuses=(422,),
        )
        data = response.json()
        if response.status_code == 422:
            errors = [
                e.get("message") or e.get("code") for e in data.get("errors") or [] if isinstance(e, dict)
            ]
            raise ConnectorError(
                f"GitHub refused the trigger's search query: {'; '.join(errors) or data.get('message')}. Fix "
                "the query (try it in the repository's issue search first) and save the trigger again.",
                status=400,
            )
        if data.get("incomplete_results"):
            raise ConnectorError(
                "GitHub's search timed out and returned incomplete results for the trigger's query; the node "
                "tries again later. A narrower query (fewer words, more qualifiers) helps.",
                retryable=True,
                status=503,
            )
        return data

    def query_validate(self, query: str) -> None:
        self._search(self._query_condition(query), per_page=1)

    def query_matches(self, query: str, item: dict[str, Any]) -> bool:
        """Search for the query among issues created from the item's creation time on and look for it.

        GitHub's search index lags a few seconds behind writes: a brand-new issue may be found only on its
        next change (or the next poll)."""
        condition = self._query_condition(query)
        number = int(item["id"])
        created = str(item.get("created") or "")
        for page in range(1, 11):  # the search API serves the first 1000 results
            data = self._search(condition, created_from=created, page=page)
            items = data.get("items") or []
            if any(int(hit["number"]) == number for hit in items):
                return True
            if len(items) < PAGE:
                break
        return False

    def query_search(self, query: str, *, after: str | None = None, limit: int = 100) -> list[ItemRef]:
        """Matching issues ordered by (creation time, number), the page after issue ``after``.

        GitHub sorts search results by ``created`` only and serves at most 1000 results per query, so each
        page is a fresh search from the creation time of ``after`` on (``created:>=``), re-sorted by (time,
        number) and cut after ``after``: creation times never change, so the order is stable."""
        condition = self._query_condition(query)
        start: tuple[str, int] = ("", 0)
        if after:
            number = self._number(after)
            created = self._created.get(number) or str(self._raw_issue(number).get("created_at") or "")
            start = (created, int(number))
        refs: list[ItemRef] = []
        for page in range(1, 11):
            data = self._search(condition, created_from=start[0], page=page)
            items = data.get("items") or []
            for hit in sorted(items, key=lambda i: (i["created_at"], int(i["number"]))):
                if (hit["created_at"], int(hit["number"])) <= start or hit.get("pull_request"):
                    continue
                self._created[str(hit["number"])] = hit["created_at"]
                refs.append(self.ref(hit))
            if len(refs) >= limit or len(items) < PAGE:
                break
        return refs[:limit]

    # --- housekeeping ------------------------------------------------------------------------------------
    def test_credentials(self) -> str:
        with _lock:
            _cache.pop(("me", self.account), None)
        user = self.me()
        # Listing one issue proves the token reaches the repository's issues (410: issues are disabled).
        self.http.get_json(
            self._path("/issues"),
            params={"per_page": 1, "state": "all"},
            action=f"list issues in {self.repo}",
        )
        return f"Connected to GitHub as {user.get('login')}; issues of {self.repo} are reachable."

    def is_own_change(self, item: Mapping[str, Any] | ItemRef) -> bool:
        """Whether a change was made by the node's own account.

        ``item`` may be a webhook payload (its ``sender`` is compared with the token's user), an ``ItemRef``,
        a hubIssue or a GitHub issue: then the version (number, ``updated_at``) is compared with the
        versions the node's own writes produced in this process.
        """
        if isinstance(item, ItemRef):
            return _own.knows(self.account, item.id, item.updated)
        sender = item.get("sender")
        if isinstance(sender, Mapping):
            return str(sender.get("login") or "").casefold() == str(self.me().get("login") or "").casefold()
        number = item.get("number") or item.get("id")
        updated = item.get("updated_at") or item.get("updated")
        return _own.knows(self.account, str(number), updated)
