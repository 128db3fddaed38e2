"""Connector for GitLab issues (REST API v4) with a personal, project or group access token.

Instance configuration: ``url`` is GitLab's base URL (``https://gitlab.com``); ``credentials`` is
``{"token": "..."}`` (scope ``api``; sent as ``PRIVATE-TOKEN``); ``settings`` holds ``project`` (required:
the numeric id or the ``group/project`` path), and may hold ``closed_statuses`` (status names that close
the issue, default Closed, Done, Resolved), ``status_label_prefix`` (default ``status::``),
``priority_label_prefix`` (default ``priority::``) and ``rate_limit_per_s``.

How GitLab maps onto the hubIssue: item ids are issue **iids** (the number in the project), the key is
``#<iid>``; ``title``/``description``; GitLab issues are only open or closed, so the status is ``Closed``
for a closed issue, else the value of a ``status::<name>`` scoped label, else ``Open``; the priority is the
value of a ``priority::<name>`` scoped label (GitLab has no priority field); ``issue_type`` is the type; the
other labels are the labels; the first assignee is the assignee, the author the reporter; ``due_date``.

* Writes: one ``PUT /projects/:id/issues/:iid`` carrying only what changes (``state_event`` close/reopen,
  ``add_labels``/``remove_labels`` for the scoped status and priority labels, ``labels`` for the rest).
* Comments are notes (system notes are skipped, and so are the node's notes that only carry an attachment);
  ``internal`` notes are GitLab's internal notes.
* Attachments: GitLab has no attachment list on issues. A file is uploaded with ``POST
  /projects/:id/uploads`` (multipart) and attached by a note holding its markdown link, written by the node
  as ``📎 [name](/uploads/<secret>/<name>)``. The hubIssue's attachments are the upload links found in the
  description and the notes; an attachment's id is ``<secret>/<filename>``; it is downloaded with ``GET
  /projects/:id/uploads/:secret/:filename`` (GitLab 17.4+). Deleting one deletes the upload (``DELETE``,
  17.2+, maintainer role) and the node's note that carried it. Sizes and hashes are unknown (None).
* Polling: ``GET /projects/:id/issues?updated_after=&order_by=updated_at&sort=asc``, pages by
  ``X-Next-Page``. Webhooks (issue and note events) are checked with ``X-Gitlab-Token`` (constant-time) and
  de-duplicated on ``Idempotency-Key`` (GitLab 17.4+) or ``X-Gitlab-Event-UUID``.
* Triggers hold issue list filters as a query string, the parameters of ``GET /projects/:id/issues``
  (``labels=sync&state=opened``, ``assignee_username=ed&search=printer``, ``not[labels]=wontfix``). GitLab
  checks the values (400) but ignores unknown parameters, so names are checked against the documented
  filters first. One item: ``iids[]=<iid>``; pages: ``order_by=created_at&sort=asc`` from the creation
  time of the last issue (``created_after``, inclusive), cut after it by (time, iid).
* Retries: every read is a GET. Creating an issue, adding a note and uploading a file are POSTs, which the
  HTTP seam does not repeat once GitLab may have carried them out (lost answer, timeout, 5xx); the pipeline
  then looks for what the earlier attempt wrote: ``find_created`` for an issue (the token's user's issues
  created since then with the same title), unlinked notes with the same text. Edits (``PUT``) set values and
  are repeated as usual.
* ``is_own_change``: the node remembers the ``updated_at`` its writes left; a webhook body's ``user`` (who
  made the change) is compared with the token's user.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator, Mapping
from datetime import datetime, timedelta
from typing import IO, Any
from urllib.parse import quote, unquote

from instances.connectors import _common as common
from instances.connectors._multipart import MultipartFile
from instances.connectors.base import Connector, ConnectorError, ItemRef, register
from instances.connectors.http import HttpClient

OVERLAP = timedelta(seconds=10)
PER_PAGE = 100
TYPES = ["issue", "incident", "test_case", "task"]
DEFAULT_CLOSED = ("Closed", "Done", "Resolved")
HINTS = {
    401: "the access token was rejected. Check the token in the instance's credentials and that it has the "
    "api scope and has not expired.",
    403: "the token's user has no permission for this. Give it the Reporter role (Developer to edit, "
    "Maintainer to delete uploads) in the project.",
    404: "it does not exist or the token's user cannot see it. Check the project setting and the user's "
    "role.",
    400: "GitLab rejected the values. Check the sync rules' mapping.",
    422: "GitLab rejected the values. Check the sync rules' mapping.",
}
# A project upload's markdown link: [name](/uploads/<32 hex secret>/<filename>)
_UPLOAD_RE = re.compile(r"\[([^\]]*)\]\((?:[^)\s]*?)/uploads/([0-9a-f]{10,64})/([^)\s]+)\)")


def _is_carrier(body: str | None) -> bool:
    """Whether a note is one ``add_attachment`` wrote: "📎 " and one upload link, nothing else. It is the
    attachment, not a comment (as Zendesk's and GitHub's carriers are)."""
    text = (body or "").strip()
    if not text.startswith("📎 "):
        return False
    links = list(_UPLOAD_RE.finditer(text))
    return len(links) == 1 and text[2:].strip() == links[0].group(0)


# The filters of GET /projects/:id/issues a trigger may use (GitLab's Issues API reference); ``not[<filter>]``
# negates one of those marked negatable.
QUERY_FILTERS = frozenset(
    {
        "assignee_id", "assignee_username", "author_id", "author_username", "confidential", "created_after",
        "created_before", "due_date", "epic_id", "health_status", "in", "issue_type", "iteration_id",
        "iteration_title", "labels", "milestone", "milestone_id", "my_reaction_emoji", "search", "state",
        "updated_after", "updated_before", "weight",
    }
)  # fmt: skip
NEGATABLE = frozenset(
    {
        "assignee_id", "assignee_username", "author_id", "author_username", "iids", "iteration_id",
        "iteration_title", "labels", "milestone", "milestone_id", "my_reaction_emoji", "weight",
    }
)  # fmt: skip

_seen = common.SeenWindow()
_own = common.OwnWrites()
_deliveries = common.ReplayGuard()
_me: dict[str, dict[str, Any]] = {}


def parse_key(key: str) -> str | None:
    """The iid in ``#42``, ``group/project#42``, ``42`` or an issue URL (``.../-/issues/42``)."""
    match = re.fullmatch(r"\s*(?:.*/-/issues/|.*/issues/|[\w./-]*#)?(\d+)/?\s*", str(key))
    return match.group(1) if match else None


def _person(user: Mapping[str, Any] | None) -> dict[str, Any] | None:
    if not user:
        return None
    email = user.get("email") or user.get("public_email") or None
    return {"email": email, "displayName": user.get("name") or user.get("username")}


@register
class GitLabConnector(Connector):
    """A GitLab project's issues. Item ids are iids; comment ids are note ids; attachment ids are
    ``<secret>/<filename>`` of project uploads."""

    tracker_type = "gitlab"

    _http: HttpClient | None = None

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._created: dict[str, str] = {}  # iid -> created_at, from the last query pages

    # --- plumbing ----------------------------------------------------------------------------------------
    @property
    def token(self) -> str:
        creds = common.credentials(self.instance, "GitLab", ("token",), '{"token": "<access token>"}')
        return str(creds["token"])

    @property
    def base_url(self) -> str:
        return common.base_url(self.instance, "GitLab", "https://gitlab.com")

    @property
    def http(self) -> HttpClient:
        if self._http is None:
            self._http = common.build_http(
                self.instance,
                tracker_type=self.tracker_type,
                service="GitLab",
                base_url=self.base_url + "/api/v4",
                headers={"PRIVATE-TOKEN": self.token, "Accept": "application/json"},
                hints=HINTS,
            )
        return self._http

    @http.setter
    def http(self, client: HttpClient) -> None:
        self._http = client

    @property
    def account(self) -> str:
        return common.account_key(self.instance, self.token)

    def _settings(self) -> dict[str, Any]:
        return dict(self.instance.settings or {})

    @property
    def project(self) -> str:
        project = self._settings().get("project")
        if not project:
            raise ConnectorError(
                f'{self.instance.name} has no GitLab project: set the instance\'s "project" setting to the '
                f"project's id or its group/project path."
            )
        return quote(str(project), safe="")

    def _p(self, path: str = "") -> str:
        return f"projects/{self.project}" + (f"/{path}" if path else "")

    @property
    def status_prefix(self) -> str:
        return str(self._settings().get("status_label_prefix", "status::"))

    @property
    def priority_prefix(self) -> str:
        return str(self._settings().get("priority_label_prefix", "priority::"))

    def _closed_names(self) -> set[str]:
        return {str(s).casefold() for s in self._settings().get("closed_statuses", DEFAULT_CLOSED)}

    def ref(self, issue: Mapping[str, Any]) -> ItemRef:
        return ItemRef(
            id=str(issue["iid"]),
            key=f"#{issue['iid']}",
            url=issue.get("web_url") or "",
            updated=issue.get("updated_at") or "",
        )

    def _pages(self, path: str, params: Mapping[str, Any], *, action: str) -> Iterator[dict[str, Any]]:
        """Every row of a paginated list, following ``X-Next-Page``."""
        page: str | None = "1"
        while page:
            response = self.http.request("GET", path, params={**params, "page": page}, action=action)
            yield from response.json()
            page = response.headers.get("X-Next-Page") or None

    def _raw(self, item_id: str) -> dict[str, Any]:
        if not str(item_id).isdigit():
            raise ConnectorError(f"'{item_id}' is not a GitLab issue iid.", status=404)
        return self.http.get_json(self._p(f"issues/{item_id}"), action=f"read issue #{item_id}")

    def _notes(self, item_id: str) -> list[dict[str, Any]]:
        return list(
            self._pages(
                self._p(f"issues/{item_id}/notes"),
                {"sort": "asc", "order_by": "created_at", "per_page": PER_PAGE},
                action=f"read the notes of issue #{item_id}",
            )
        )

    def me(self) -> dict[str, Any]:
        if self.account not in _me:
            _me[self.account] = self.http.get_json("user", action="read the token's user")
        return _me[self.account]

    # --- reads -------------------------------------------------------------------------------------------
    def get_item(self, item_id: str) -> dict[str, Any]:
        raw = self._raw(item_id)
        return self.to_hub(raw, self._notes(str(raw["iid"])))

    def _split_labels(self, labels: list[str]) -> tuple[list[str], str | None, str | None]:
        plain, status, priority = [], None, None
        for label in labels:
            if label.startswith(self.status_prefix):
                status = label[len(self.status_prefix) :]
            elif label.startswith(self.priority_prefix):
                priority = label[len(self.priority_prefix) :]
            else:
                plain.append(label)
        return plain, status, priority

    def to_hub(self, raw: Mapping[str, Any], notes: list[dict[str, Any]]) -> dict[str, Any]:
        labels, status_label, priority = self._split_labels(list(raw.get("labels") or []))
        status = "Closed" if raw.get("state") == "closed" else (status_label or "Open")
        comments, attachments = [], []
        for text, created in [(raw.get("description") or "", raw.get("created_at"))] + [
            (n.get("body") or "", n.get("created_at")) for n in notes if not n.get("system")
        ]:
            for _name, secret, filename in _UPLOAD_RE.findall(text):
                att_id = f"{secret}/{unquote(filename)}"
                if all(a["id"] != att_id for a in attachments):
                    attachments.append(
                        {
                            "id": att_id,
                            "filename": unquote(filename),
                            "mimeType": _mime(unquote(filename)),
                            "size": None,
                            "sha256": None,
                            "created": created,
                        }
                    )
        for note in notes:
            if note.get("system") or _is_carrier(note.get("body")):
                continue  # GitLab's own notes, and the node's notes that only carry an attachment
            comments.append(
                {
                    "id": str(note["id"]),
                    "body": note.get("body") or "",
                    "author": _person(note.get("author")),
                    "created": note.get("created_at"),
                    "updated": note.get("updated_at") or note.get("created_at"),
                    "internal": bool(note.get("internal", note.get("confidential"))),
                }
            )
        assignees = raw.get("assignees") or ([raw["assignee"]] if raw.get("assignee") else [])
        refs = raw.get("references") or {}
        return {
            "id": str(raw["iid"]),
            "key": f"#{raw['iid']}",
            "url": raw.get("web_url") or "",
            "summary": raw.get("title") or "",
            "description": raw.get("description") or None,
            "status": {"name": status},
            "priority": {"name": priority},
            "type": {"name": raw.get("issue_type") or raw.get("type", "issue").lower()},
            "labels": labels,
            "assignee": _person(assignees[0]) if assignees else None,
            "reporter": _person(raw.get("author")),
            "dueDate": raw.get("due_date"),
            "parentId": None,
            "created": raw.get("created_at"),
            "updated": raw.get("updated_at"),
            "project": {
                "idStr": str(raw.get("project_id") or ""),
                "key": (refs.get("full") or "").split("#")[0] or unquote(self.project),
                "name": (refs.get("full") or "").split("#")[0] or unquote(self.project),
            },
            "customFields": {},
            "comments": comments,
            "attachments": attachments,
        }

    def find_item(self, key: str) -> ItemRef | None:
        item_id = parse_key(key)
        if item_id is None:
            return None
        response = self.http.request(
            "GET", self._p(f"issues/{item_id}"), action=f"find issue #{item_id}", ok_statuses=(404,)
        )
        return self.ref(response.json()) if response.status_code == 200 else None

    def search_updated_since(
        self, cursor: str | None, *, limit: int = 100
    ) -> tuple[list[ItemRef], str | None]:
        """Issues updated at or after ``cursor`` minus an overlap window, oldest first, each change once."""
        params: dict[str, Any] = {
            "order_by": "updated_at",
            "sort": "asc",
            "per_page": PER_PAGE,
            "scope": "all",
        }
        if cursor:
            params["updated_after"] = common.iso(common.parse_ts(cursor) - OVERLAP)
        refs: list[ItemRef] = []
        newest = cursor
        for issue in self._pages(self._p("issues"), params, action="list the issues updated recently"):
            if not _seen.fresh(self.account, str(issue["iid"]), issue["updated_at"], self.http):
                continue
            refs.append(self.ref(issue))
            if not newest or common.parse_ts(issue["updated_at"]) > common.parse_ts(newest):
                newest = issue["updated_at"]
            if len(refs) >= limit:
                break
        if newest:
            _seen.forget_before(self.account, common.parse_ts(newest) - 2 * OVERLAP)
        return refs, newest

    def find_created(self, fields: Mapping[str, Any], *, since: datetime) -> list[ItemRef]:
        """Issues the token's user opened in the project at or after ``since`` with the title ``create_item``
        would give, newest first (at most two pages of the issue list).

        GitLab's ``GET /projects/:id/issues`` (Issues API) filters by ``author_id`` (with ``scope=all``), by
        ``created_after`` ("created on or after", ISO 8601) and by ``search`` limited to the title with
        ``in=title``, and sorts with ``order_by=created_at&sort=desc``; ``state=all`` lists closed issues too.
        The server filters are only wider than wanted: the search matches the title's words, not the whole
        title, and ``created_after`` is sent cut to the second (``created_at`` has milliseconds). So the exact
        checks are made here: the author's id is the token's user's (``GET /user``), ``created_at`` >= since,
        and the title equals the one create_item writes (both without surrounding whitespace).
        """
        title = str(self._body({"summary": fields.get("summary")}, None)["title"]).strip()
        me = self.me()["id"]
        params: dict[str, Any] = {
            "author_id": me,
            "scope": "all",
            "state": "all",
            "created_after": common.iso(since),
            "search": title,
            "in": "title",
            "order_by": "created_at",
            "sort": "desc",
            "per_page": PER_PAGE,
        }
        found: list[dict[str, Any]] = []
        page: str | None = "1"
        for _ in range(2):
            if not page:
                break
            response = self.http.request(
                "GET",
                self._p("issues"),
                params={**params, "page": page},
                action="look for an issue an earlier attempt created",
            )
            found += response.json()
            page = response.headers.get("X-Next-Page") or None
        mine = [
            issue
            for issue in found
            if (issue.get("author") or {}).get("id") == me
            and issue.get("created_at")
            and common.parse_ts(issue["created_at"]) >= since
            and (issue.get("title") or "").strip() == title
        ]
        mine.sort(key=lambda i: (common.parse_ts(i["created_at"]), int(i["iid"])), reverse=True)
        return [self.ref(issue) for issue in mine]

    def metadata(self) -> dict[str, list[Any]]:
        labels = [
            row["name"]
            for row in self._pages(self._p("labels"), {"per_page": PER_PAGE}, action="list the labels")
        ]
        statuses = [
            "Open",
            *[x[len(self.status_prefix) :] for x in labels if x.startswith(self.status_prefix)],
        ]
        priorities = [x[len(self.priority_prefix) :] for x in labels if x.startswith(self.priority_prefix)]
        users = [
            {
                "email": u.get("email") or u.get("public_email") or None,
                "displayName": u.get("name"),
                "id": str(u["id"]),
            }
            for u in self._pages(self._p("members/all"), {"per_page": PER_PAGE}, action="list the members")
        ]
        closed = [str(x) for x in self._settings().get("closed_statuses", DEFAULT_CLOSED)]
        return {
            "statuses": [*statuses, *closed],
            "priorities": priorities,
            "types": list(TYPES),
            "users": users,
        }

    # --- writes ------------------------------------------------------------------------------------------
    def _user_id(self, who: Mapping[str, Any] | None) -> int | None:
        if not who:
            return None
        if str(who.get("id") or "").isdigit():
            return int(who["id"])
        email = (who.get("email") or "").strip().lower()
        if not email:
            return None
        for user in self.http.get_json("users", params={"search": email}, action=f"find the user {email}"):
            if (user.get("email") or user.get("public_email") or "").lower() == email:
                return int(user["id"])
        raise ConnectorError(
            f"GitLab has no user with the e-mail {email} visible to the token's user (non-administrators "
            f"only see public e-mails). Map the assignee in the sync rules, or use an administrator's token.",
            status=422,
        )

    def _body(self, changes: Mapping[str, Any], raw: Mapping[str, Any] | None) -> dict[str, Any]:
        """The issue body for hubIssue field changes (only the fields given)."""
        out: dict[str, Any] = {}
        add: list[str] = []
        remove: list[str] = []
        current = list((raw or {}).get("labels") or [])
        for name, value in changes.items():
            if name == "summary":
                out["title"] = str(value or "(no summary)")
            elif name == "description":
                out["description"] = value or ""
            elif name == "status" and value and value.get("name"):
                wanted = str(value["name"])
                old_status = [x for x in current if x.startswith(self.status_prefix)]
                if wanted.casefold() in self._closed_names():
                    if (raw or {}).get("state") != "closed":
                        out["state_event"] = "close"
                else:
                    if (raw or {}).get("state") == "closed":
                        out["state_event"] = "reopen"
                    if wanted.casefold() not in ("open", "opened"):
                        label = self.status_prefix + wanted
                        if label not in current:
                            add.append(label)
                        old_status = [x for x in old_status if x != label]
                remove += old_status
            elif name == "priority" and value is not None:
                wanted = (value or {}).get("name")
                old = [x for x in current if x.startswith(self.priority_prefix)]
                if wanted:
                    label = self.priority_prefix + str(wanted)
                    if label not in current:
                        add.append(label)
                    old = [x for x in old if x != label]
                remove += old
            elif name == "type" and value and value.get("name"):
                kind = str(value["name"]).lower().replace(" ", "_")
                if kind not in TYPES:
                    raise ConnectorError(
                        f"GitLab has no issue type '{value['name']}'. Valid types: {', '.join(TYPES)}.",
                        status=422,
                    )
                out["issue_type"] = kind
            elif name == "labels":
                scoped = [x for x in current if x.startswith((self.status_prefix, self.priority_prefix))]
                wanted_labels = [
                    x for x in value or [] if not x.startswith((self.status_prefix, self.priority_prefix))
                ]
                out["labels"] = ",".join([*wanted_labels, *scoped])
            elif name == "assignee":
                user_id = self._user_id(value)
                out["assignee_ids"] = [user_id] if user_id else []
            elif name == "dueDate":
                out["due_date"] = value or None
        if "labels" in out:
            # ``labels`` replaces the set: fold the scoped changes into it instead of add/remove
            merged = [x for x in out["labels"].split(",") if x and x not in remove] + add
            out["labels"] = ",".join(dict.fromkeys(merged))
        else:
            if add:
                out["add_labels"] = ",".join(add)
            if remove:
                out["remove_labels"] = ",".join(remove)
        return out

    def create_item(self, fields: Mapping[str, Any]) -> ItemRef:
        wanted = {k: v for k, v in fields.items() if k not in ("project", "status")}
        body = self._body({"summary": "(no summary)", **wanted}, None)
        body.pop("remove_labels", None)
        if "add_labels" in body:
            body["labels"] = ",".join(filter(None, [body.pop("add_labels"), body.get("labels", "")]))
        issue = self.http.send_json("POST", self._p("issues"), body, action="create an issue")
        _own.remember(self.account, str(issue["iid"]), issue.get("updated_at"))
        if fields.get("status"):
            self.update_item(str(issue["iid"]), {"status": fields["status"]})
            issue = self._raw(str(issue["iid"]))
        return self.ref(issue)

    def update_item(self, item_id: str, changes: Mapping[str, Any]) -> None:
        needs_raw = any(k in changes for k in ("status", "priority", "labels"))
        raw = self._raw(item_id) if needs_raw else None
        body = self._body(changes, raw)
        if body:
            issue = self.http.send_json(
                "PUT", self._p(f"issues/{item_id}"), body, action=f"update issue #{item_id}"
            )
            _own.remember(self.account, item_id, issue.get("updated_at"))

    def _remember(self, item_id: str) -> None:
        """A note write changes the issue's ``updated_at`` without returning it: note it as the node's."""
        _own.remember(self.account, item_id, self._raw(item_id).get("updated_at"))

    def add_comment(self, item_id: str, *, body: str, internal: bool = False, author: str = "") -> str:
        note = self.http.send_json(
            "POST",
            self._p(f"issues/{item_id}/notes"),
            {"body": body, "internal": bool(internal)},
            action=f"comment on issue #{item_id}",
        )
        self._remember(item_id)
        return str(note["id"])

    def update_comment(self, item_id: str, comment_id: str, *, body: str) -> None:
        self.http.send_json(
            "PUT",
            self._p(f"issues/{item_id}/notes/{comment_id}"),
            {"body": body},
            action=f"edit comment {comment_id} on issue #{item_id}",
        )
        self._remember(item_id)

    def delete_comment(self, item_id: str, comment_id: str) -> None:
        response = self.http.request(
            "DELETE",
            self._p(f"issues/{item_id}/notes/{comment_id}"),
            action=f"delete comment {comment_id} on issue #{item_id}",
            ok_statuses=(404,),
        )
        if response.status_code != 404:
            self._remember(item_id)

    def add_attachment(self, item_id: str, *, filename: str, mime_type: str, content: IO[bytes]) -> str:
        form = MultipartFile("file", filename, content, mime_type)
        upload = self.http.upload(
            self._p("uploads"), form, content_type=form.content_type, action=f"upload {filename}"
        ).json()
        match = _UPLOAD_RE.search(upload.get("markdown") or f"[{filename}]({upload['url']})")
        if match is None:
            raise ConnectorError(f"GitLab accepted {filename} but returned no upload link ({upload}).")
        self.http.send_json(
            "POST",
            self._p(f"issues/{item_id}/notes"),
            {"body": f"📎 {upload.get('markdown') or match.group(0)}"},
            action=f"attach {filename} to issue #{item_id}",
        )
        self._remember(item_id)
        return f"{match.group(2)}/{unquote(match.group(3))}"

    def delete_attachment(self, item_id: str, attachment_id: str) -> None:
        secret, _, filename = str(attachment_id).partition("/")
        for note in self._notes(item_id):
            body = note.get("body") or ""
            if _is_carrier(body) and _UPLOAD_RE.findall(body)[0][1] == secret:
                self.delete_comment(item_id, str(note["id"]))
        self.http.request(
            "DELETE",
            self._p(f"uploads/{secret}/{quote(filename)}"),
            action=f"delete attachment {filename} of issue #{item_id}",
            ok_statuses=(404,),
        )

    def open_attachment(self, item_id: str, attachment_id: str) -> Iterator[bytes]:
        secret, _, filename = str(attachment_id).partition("/")
        return self.http.download(
            self._p(f"uploads/{secret}/{quote(filename)}"),
            action=f"download attachment {filename} of issue #{item_id}",
        )

    # --- queries: issue list filters (triggers, bulk exalate) ---------------------------------------------
    def _query_params(self, query: str) -> list[tuple[str, str]]:
        from urllib.parse import parse_qsl

        text = query.strip().lstrip("?")
        try:
            pairs = parse_qsl(text, keep_blank_values=True, strict_parsing=True) if text else []
        except ValueError:
            raise ConnectorError(
                "A GitLab trigger is a query string of issue list filters, such as "
                "'labels=sync&state=opened'.",
                status=400,
            )
        for name, _ in pairs:
            negated = re.fullmatch(r"not\[(\w+)\]", name)
            if negated and negated.group(1) in NEGATABLE:
                continue
            if name not in QUERY_FILTERS:
                raise ConnectorError(
                    f"GitLab's issue list has no filter {name!r} (GitLab would ignore it and match more "
                    f"issues than meant). Use {', '.join(sorted(QUERY_FILTERS))}, or not[<filter>] to "
                    "negate.",
                    status=400,
                )
        return pairs

    def _query(self, pairs: list[tuple[str, str]], extra: dict[str, Any], *, action: str) -> Any:
        params: dict[str, Any] = {"state": "all"}  # GitLab lists open and closed issues unless told
        for name, value in pairs:
            if name in params and name != "state":
                params[name] = [*(params[name] if isinstance(params[name], list) else [params[name]]), value]
            else:
                params[name] = value
        params.update(extra)
        response = self.http.request(
            "GET", self._p("issues"), params=params, action=action, ok_statuses=(400,)
        )
        if response.status_code == 400:
            body = response.json() if response.content else {}
            detail = body.get("error") or body.get("message") or body
            raise ConnectorError(
                f"GitLab refused the trigger's filters: {detail}. Fix the query (the parameters of the issue "
                "list, e.g. labels=sync&state=opened) and save the trigger again.",
                status=400,
            )
        return response

    def query_validate(self, query: str) -> None:
        self._query(self._query_params(query), {"per_page": 1}, action="check the trigger's filters")

    def query_matches(self, query: str, item: dict[str, Any]) -> bool:
        iid = str(item["id"])
        found = self._query(
            self._query_params(query),
            {"iids[]": iid, "per_page": 1},
            action=f"match #{iid} against the trigger",
        ).json()
        return any(str(issue["iid"]) == iid for issue in found)

    def query_search(self, query: str, *, after: str | None = None, limit: int = 100) -> list[ItemRef]:
        """Matching issues ordered by (created_at, iid), the page after issue ``after``."""
        pairs = self._query_params(query)
        start: tuple[str, int] = ("", 0)
        if after and str(after).isdigit():
            start = (
                self._created.get(str(after)) or str(self._raw(str(after)).get("created_at") or ""),
                int(after),
            )
        extra: dict[str, Any] = {"order_by": "created_at", "sort": "asc", "per_page": PER_PAGE}
        if start[0]:
            extra["created_after"] = start[0]
        refs: list[ItemRef] = []
        page = "1"
        while page and len(refs) < limit:
            response = self._query(
                pairs, {**extra, "page": page}, action="search issues with the trigger's filters"
            )
            for issue in sorted(
                response.json(), key=lambda i: (common.parse_ts(i["created_at"]), int(i["iid"]))
            ):
                if start[0] and (common.parse_ts(issue["created_at"]), int(issue["iid"])) <= (
                    common.parse_ts(start[0]),
                    start[1],
                ):
                    continue
                self._created[str(issue["iid"])] = issue["created_at"]
                refs.append(self.ref(issue))
            page = response.headers.get("X-Next-Page") or ""
        return refs[:limit]

    # --- housekeeping ------------------------------------------------------------------------------------
    def test_credentials(self) -> str:
        _me.pop(self.account, None)
        user = self.me()
        project = self.http.get_json(self._p(), action="read the project")
        return f"Connected to GitLab as {user.get('username')}, project {project.get('path_with_namespace')}."

    def is_own_change(self, item: Mapping[str, Any]) -> bool:
        """Whether the issue's latest change is the node's: its ``updated_at`` is one a node write left, or
        (for a webhook body with ``user``) the change was made by the token's user."""
        if isinstance(item.get("user"), dict) and "object_attributes" in item:
            return item["user"].get("id") == self.me().get("id")
        raw = item if "iid" in item and "updated_at" in item else self._raw(str(item["id"]))
        return _own.knows(self.account, str(raw["iid"]), raw.get("updated_at"))

    # --- webhooks ----------------------------------------------------------------------------------------
    def verify_webhook(self, headers: Mapping[str, str], body: bytes, secret: str) -> bool:
        """Authentic when ``X-Gitlab-Token`` equals the webhook's secret token (constant-time)."""
        return common.same_secret(common.header(headers, "X-Gitlab-Token"), secret)

    def parse_webhook(self, headers: Mapping[str, str], body: bytes) -> list[ItemRef]:
        """The issue an issue or note event is about; [] for other events and redeliveries."""
        delivery = common.header(headers, "Idempotency-Key") or common.header(headers, "X-Gitlab-Event-UUID")
        try:
            event = json.loads(body or b"{}")
        except ValueError:
            return []
        if not isinstance(event, dict):
            return []
        kind = event.get("object_kind")
        attributes = common.obj(event.get("object_attributes"))
        if kind in ("issue", "work_item"):
            issue = attributes
        elif kind == "note" and attributes.get("noteable_type") == "Issue":
            issue = common.obj(event.get("issue"))
        else:
            return []
        iid = common.scalar(issue.get("iid"))
        if not iid.isdigit():
            return []
        if not _deliveries.first_time(f"{self.account}:{delivery}" if delivery else ""):
            return []
        updated = common.scalar(issue.get("updated_at"))
        if updated and "UTC" in updated:  # "2026-03-01 09:00:00 UTC" in older payloads
            updated = common.iso(common.parse_ts(updated.replace(" UTC", "Z")))
        return [ItemRef(id=iid, key=f"#{iid}", url=common.scalar(issue.get("url")), updated=updated)]


def _mime(filename: str) -> str:
    import mimetypes

    return mimetypes.guess_type(filename)[0] or "application/octet-stream"
