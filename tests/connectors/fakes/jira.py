"""An in-memory Jira Cloud site (platform REST API v3, one project), checked against Atlassian's description.

Implements what the connector uses: ``GET /rest/api/3/myself``, ``/project/{key}``,
``/project/{key}/statuses``, ``/priority``, ``/user/search``, ``/user/assignable/search``; ``POST /issue``;
``GET|PUT /issue/{id}``; ``GET|POST /issue/{id}/transitions``; ``GET|POST /issue/{id}/comment``, ``PUT|DELETE
/issue/{id}/comment/{cid}``; ``POST /issue/{id}/attachments`` (multipart, ``X-Atlassian-Token: no-check``),
``DELETE /attachment/{id}``, ``GET /attachment/content/{id}``; ``POST /search/jql`` (the JQL the connector
writes: project, ``updated >=`` in the user's time zone, ``ORDER BY updated ASC``; ``nextPageToken``), and
``POST /jql/parse`` and ``/jql/match``. Trigger JQL (and ``find_created``'s) is evaluated by ``Jql``, a small
honest subset of JQL: clauses ``field op value`` joined by AND/OR/NOT and parentheses, operators ``= != ~ !~
> >= < <= IN, NOT IN, IS [NOT] EMPTY``, fields project, id, key, summary, status, priority, issuetype/type,
labels, assignee, reporter, creator (the function ``currentUser()`` is the API user), created and updated
(``> >= < <=`` with Jira's date formats ``yyyy/MM/dd HH:mm``, ``yyyy-MM-dd HH:mm``, ``yyyy/MM/dd``,
``yyyy-MM-dd``, read in the user's time zone at minute precision); anything else gets Jira's own error
message. Issues keep their ``creator`` (who created them) apart from the ``reporter`` (which can be changed).

The workflow: To Do —'Start progress'→ In Progress —'Done'→ Done, 'Reopen' from Done to To Do, and 'Done'
from To Do. ``webhook(...)`` builds a delivery as Jira Cloud sends it (its payloads are not in the OpenAPI
description; their shape is from Atlassian's webhook documentation).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import operator
import re
import uuid
from datetime import UTC, datetime, timedelta
from email.parser import BytesParser
from email.policy import HTTP
from typing import Any
from zoneinfo import ZoneInfo

from tests.connectors.fakes.base import Call, ContractFake, Reply
from tests.contracts.specs import JIRA

SITE = "https://your-domain.atlassian.net"
EMAIL = "node@example.com"
API_TOKEN = "ATATT-test-token"
API = "/rest/api/3"

STATUSES = {"1": ("To Do", "new"), "3": ("In Progress", "indeterminate"), "10000": ("Done", "done")}
TRANSITIONS = {  # from status id -> [(transition id, name, to status id)]
    "1": [("21", "Start progress", "3"), ("31", "Done", "10000")],
    "3": [("11", "Stop progress", "1"), ("31", "Done", "10000")],
    "10000": [("41", "Reopen", "1")],
}
PRIORITIES = {"1": "Highest", "2": "High", "3": "Medium", "4": "Low", "5": "Lowest"}
ISSUE_TYPES = {"10001": "Task", "10002": "Bug", "10003": "Story"}


class FakeJira(ContractFake):
    base_url = SITE
    spec = JIRA
    # Jira answers 401/403/404 on any endpoint and 429 (with Retry-After) when rate limiting, documented in
    # Atlassian's REST guide though not listed per operation.
    UNDECLARED_OK = ContractFake.UNDECLARED_OK | {401, 403, 404}

    def __init__(self, project: str = "SUP", *, time_zone: str = "Europe/Berlin") -> None:
        super().__init__()
        self.project = project
        self.project_id = "10100"
        self.time_zone = time_zone
        self.clock = datetime(2026, 3, 1, 9, 0, 0, tzinfo=UTC)
        self.next_id = 10000
        self.users: dict[str, dict[str, Any]] = {}
        self.issues: dict[str, dict[str, Any]] = {}  # id -> issue state
        self.comments: dict[str, dict[str, Any]] = {}
        self.attachments: dict[str, dict[str, Any]] = {}
        self.me = self.add_user("Exalate Node", EMAIL, visible_email=True)
        self.anna = self.add_user("Anna Smith", "anna@example.com", visible_email=True)
        self.ed = self.add_user("Ed Hidden", "ed@example.com", visible_email=False)
        r = self.route
        r("GET", f"{API}/myself", self.myself)
        r("GET", f"{API}/project/{{key}}", self.get_project)
        r("GET", f"{API}/project/{{key}}/statuses", self.project_statuses)
        r("GET", f"{API}/priority", self.priorities)
        r("GET", f"{API}/user/search", self.user_search)
        r("GET", f"{API}/user/assignable/search", self.assignable)
        r("POST", f"{API}/issue", self.create_issue)
        r("GET", f"{API}/issue/{{issue}}", self.get_issue)
        r("PUT", f"{API}/issue/{{issue}}", self.edit_issue_api)
        r("GET", f"{API}/issue/{{issue}}/transitions", self.get_transitions)
        r("POST", f"{API}/issue/{{issue}}/transitions", self.do_transition)
        r("GET", f"{API}/issue/{{issue}}/comment", self.list_comments)
        r("POST", f"{API}/issue/{{issue}}/comment", self.add_comment_api)
        r("PUT", f"{API}/issue/{{issue}}/comment/{{cid}}", self.edit_comment_api)
        r("DELETE", f"{API}/issue/{{issue}}/comment/{{cid}}", self.delete_comment_api)
        r("POST", f"{API}/issue/{{issue}}/attachments", self.add_attachment_api)
        r("DELETE", f"{API}/attachment/{{aid}}", self.delete_attachment_api)
        r("GET", f"{API}/attachment/content/{{aid}}", self.attachment_content)
        r("POST", f"{API}/search/jql", self.search)
        r("POST", f"{API}/jql/parse", self.jql_parse)
        r("POST", f"{API}/jql/match", self.jql_match)

    # --- state ---------------------------------------------------------------------------------------------
    def tick(self) -> str:
        self.clock += timedelta(seconds=1)
        return self.jira_time(self.clock)

    def jira_time(self, when: datetime) -> str:
        """Jira's timestamp format, in the site's time zone: ``2026-03-01T10:00:01.000+0100``."""
        local = when.astimezone(ZoneInfo(self.time_zone))
        return local.strftime("%Y-%m-%dT%H:%M:%S.000%z")

    def new_id(self) -> str:
        self.next_id += 1
        return str(self.next_id)

    def add_user(self, name: str, email: str, *, visible_email: bool) -> dict[str, Any]:
        account = "5b10" + hashlib.sha1(email.encode()).hexdigest()[:20]  # noqa: S324 - an id, not security
        self.users[account] = {
            "accountId": account,
            "displayName": name,
            "_email": email,
            "_visible": visible_email,
        }
        return self.users[account]

    def user(self, account: str | None) -> dict[str, Any] | None:
        if not account:
            return None
        u = self.users[account]
        out = {
            "self": f"{SITE}{API}/user?accountId={account}",
            "accountId": account,
            "accountType": "atlassian",
            "displayName": u["displayName"],
            "active": True,
            "timeZone": self.time_zone,
            "avatarUrls": {"48x48": f"https://avatar.example/{account}.png"},
        }
        if u["_visible"]:
            out["emailAddress"] = u["_email"]
        return out

    def add_issue(
        self, summary: str, *, description: Any = None, by: str | None = None, type_id: str = "10001"
    ) -> dict[str, Any]:
        """An issue created in Jira by a person (``description`` is ADF)."""
        iid = self.new_id()
        number = sum(1 for _ in self.issues) + 1
        now = self.tick()
        issue = {
            "id": iid,
            "key": f"{self.project}-{number}",
            "summary": summary,
            "description": description,
            "status": "1",
            "priority": "3",
            "issuetype": type_id,
            "labels": [],
            "assignee": None,
            "reporter": by or self.anna["accountId"],
            "creator": by or self.anna["accountId"],
            "duedate": None,
            "created": now,
            "updated": now,
            "history": [],  # (created, accountId, field)
            "properties": {},
        }
        self.issues[iid] = issue
        return issue

    def issue_by(self, id_or_key: str) -> dict[str, Any] | None:
        if id_or_key in self.issues:
            return self.issues[id_or_key]
        return next((i for i in self.issues.values() if i["key"] == id_or_key), None)

    def touch(self, issue: dict[str, Any], who: str, field: str) -> None:
        issue["updated"] = self.tick()
        issue["history"].append((issue["updated"], who, field))

    def edit(self, key: str, **fields: Any) -> dict[str, Any]:
        """A person (Anna) edits an issue in Jira."""
        issue = self.issue_by(key)
        assert issue is not None
        issue.update(fields)
        self.touch(issue, self.anna["accountId"], ",".join(fields))
        return issue

    def comment_as(self, key: str, body: Any, *, by: str | None = None) -> dict[str, Any]:
        issue = self.issue_by(key)
        assert issue is not None
        cid = self.new_id()
        now = self.tick()
        comment = {
            "id": cid,
            "issue": issue["id"],
            "body": body,
            "author": by or self.anna["accountId"],
            "updateAuthor": by or self.anna["accountId"],
            "created": now,
            "updated": now,
            "properties": [],
        }
        self.comments[cid] = comment
        issue["updated"] = now
        return comment

    # --- rendering -----------------------------------------------------------------------------------------
    def render_status(self, sid: str) -> dict[str, Any]:
        name, category = STATUSES[sid]
        return {
            "self": f"{SITE}{API}/status/{sid}",
            "id": sid,
            "name": name,
            "description": "",
            "iconUrl": f"{SITE}/images/icons/statuses/generic.png",
            "statusCategory": {
                "self": f"{SITE}{API}/statuscategory/{category}",
                "key": category,
                "name": name,
            },
        }

    def render_comment(self, c: dict[str, Any]) -> dict[str, Any]:
        out = {
            "self": f"{SITE}{API}/issue/{c['issue']}/comment/{c['id']}",
            "id": c["id"],
            "author": self.user(c["author"]),
            "updateAuthor": self.user(c["updateAuthor"]),
            "body": c["body"],
            "created": c["created"],
            "updated": c["updated"],
        }
        if any(
            p.get("key") == "sd.public.comment" and (p.get("value") or {}).get("internal")
            for p in c["properties"]
        ):
            out["jsdPublic"] = False
        return out

    def render_attachment(self, a: dict[str, Any]) -> dict[str, Any]:
        return {
            "self": f"{SITE}{API}/attachment/{a['id']}",
            "id": a["id"],
            "filename": a["filename"],
            "author": self.user(a["author"]),
            "created": a["created"],
            "size": len(a["content"]),
            "mimeType": a["mimeType"],
            "content": f"{SITE}/rest/api/3/attachment/content/{a['id']}",
        }

    def render_issue(
        self, issue: dict[str, Any], fields: list[str] | None, expand: str = ""
    ) -> dict[str, Any]:
        comments = sorted(
            (c for c in self.comments.values() if c["issue"] == issue["id"]), key=lambda c: int(c["id"])
        )
        all_fields = {
            "summary": issue["summary"],
            "description": issue["description"],
            "status": self.render_status(issue["status"]),
            "priority": {
                "self": f"{SITE}{API}/priority/{issue['priority']}",
                "id": issue["priority"],
                "name": PRIORITIES[issue["priority"]],
            }
            if issue["priority"]
            else None,
            "issuetype": {
                "self": f"{SITE}{API}/issuetype/{issue['issuetype']}",
                "id": issue["issuetype"],
                "name": ISSUE_TYPES[issue["issuetype"]],
                "subtask": False,
            },
            "labels": issue["labels"],
            "assignee": self.user(issue["assignee"]),
            "reporter": self.user(issue["reporter"]),
            "creator": self.user(issue["creator"]),
            "duedate": issue["duedate"],
            "created": issue["created"],
            "updated": issue["updated"],
            "project": {
                "self": f"{SITE}{API}/project/{self.project_id}",
                "id": self.project_id,
                "key": self.project,
                "name": "Support",
            },
            "attachment": [
                self.render_attachment(a) for a in self.attachments.values() if a["issue"] == issue["id"]
            ],
            "comment": {
                "comments": [
                    self.render_comment(c) for c in comments[:5]
                ],  # Jira pages comments in the issue
                "maxResults": 5,
                "total": len(comments),
                "startAt": 0,
            },
        }
        wanted = fields if fields and fields != ["*all"] else list(all_fields)
        out: dict[str, Any] = {
            "expand": "renderedFields,names,schema,operations,editmeta,changelog",
            "id": issue["id"],
            "self": f"{SITE}{API}/issue/{issue['id']}",
            "key": issue["key"],
            "fields": {k: v for k, v in all_fields.items() if k in wanted},
        }
        if "changelog" in expand:
            histories = [
                {
                    "id": str(n + 1),
                    "author": self.user(who),
                    "created": when,
                    "items": [{"field": field, "fieldtype": "jira"}],
                }
                for n, (when, who, field) in enumerate(issue["history"])
            ]
            out["changelog"] = {
                "startAt": 0,
                "maxResults": 100,
                "total": len(histories),
                "histories": histories,
            }
        return out

    # --- HTTP ----------------------------------------------------------------------------------------------
    def dispatch(self, call: Call) -> Reply:
        expected = "Basic " + base64.b64encode(f"{EMAIL}:{API_TOKEN}".encode()).decode()
        if call.headers.get("Authorization") != expected:
            return Reply(401, {"errorMessages": ["You are not authenticated."], "errors": {}})
        return super().dispatch(call)

    def not_found(self, call: Call) -> Reply:
        return Reply(
            404,
            {
                "errorMessages": ["Issue does not exist or you do not have permission to see it."],
                "errors": {},
            },
        )

    def validate_request_body(self, call: Call) -> bool:
        # The description types the multipart body as an array of Spring's MultipartFile, which no
        # multipart parser produces; the fake checks that body itself (see add_attachment_api).
        return not call.path.endswith("/attachments")

    def _issue(self, call: Call) -> dict[str, Any] | None:
        return self.issue_by(call.params["issue"])

    def _check_adf(self, doc: Any, where: str) -> Reply | None:
        if doc is None:
            return None
        if not (
            isinstance(doc, dict)
            and doc.get("type") == "doc"
            and doc.get("version") == 1
            and isinstance(doc.get("content"), list)
        ):
            return Reply(
                400, {"errorMessages": [], "errors": {where: "Operation value must be an Atlassian Document"}}
            )
        return None

    def myself(self, call: Call) -> Reply:
        return Reply(200, {**(self.user(self.me["accountId"]) or {}), "locale": "en_US"})

    def get_project(self, call: Call) -> Reply:
        if call.params["key"] not in (self.project, self.project_id):
            return Reply(404, {"errorMessages": ["No project could be found with key 'X'."], "errors": {}})
        return Reply(
            200,
            {
                "self": f"{SITE}{API}/project/{self.project_id}",
                "id": self.project_id,
                "key": self.project,
                "name": "Support",
                "projectTypeKey": "software",
                "simplified": False,
                "issueTypes": [
                    {
                        "self": f"{SITE}{API}/issuetype/{tid}",
                        "id": tid,
                        "name": name,
                        "subtask": False,
                        "hierarchyLevel": 0,
                        "description": "",
                    }
                    for tid, name in ISSUE_TYPES.items()
                ],
            },
        )

    def project_statuses(self, call: Call) -> Reply:
        return Reply(
            200,
            [
                {
                    "self": f"{SITE}{API}/issuetype/{tid}",
                    "id": tid,
                    "name": name,
                    "subtask": False,
                    "statuses": [self.render_status(sid) for sid in STATUSES],
                }
                for tid, name in ISSUE_TYPES.items()
            ],
        )

    def priorities(self, call: Call) -> Reply:
        return Reply(
            200,
            [
                {
                    "self": f"{SITE}{API}/priority/{pid}",
                    "id": pid,
                    "name": name,
                    "statusColor": "#ffffff",
                    "iconUrl": f"{SITE}/images/icons/priorities/{name.lower()}.svg",
                    "description": name,
                }
                for pid, name in PRIORITIES.items()
            ],
        )

    def user_search(self, call: Call) -> Reply:
        query = (call.arg("query") or "").casefold()
        # Jira matches the query against display name and e-mail (hidden ones too), shows only visible ones.
        found = [
            self.user(a)
            for a, u in self.users.items()
            if query and (query in u["displayName"].casefold() or query == u["_email"].casefold())
        ]
        return Reply(200, found)

    def assignable(self, call: Call) -> Reply:
        return Reply(200, [self.user(a) for a in self.users])

    def _apply_fields(self, issue: dict[str, Any], fields: dict[str, Any]) -> Reply | None:
        errors: dict[str, str] = {}
        for name, value in fields.items():
            if name == "summary":
                if not value:
                    errors["summary"] = "You must specify a summary of the issue."
                issue["summary"] = value
            elif name == "description":
                bad = self._check_adf(value, "description")
                if bad:
                    return bad
                issue["description"] = value
            elif name == "priority":
                if value and value.get("id") not in PRIORITIES:
                    errors["priority"] = "Specify the Priority (id or name) in the valid format"
                issue["priority"] = value.get("id") if value else None
            elif name == "issuetype":
                if value.get("id") not in ISSUE_TYPES:
                    errors["issuetype"] = "Specify a valid issue type"
                issue["issuetype"] = value.get("id")
            elif name == "labels":
                if any(" " in lb for lb in value):
                    errors["labels"] = "The label can't contain spaces."
                issue["labels"] = list(value)
            elif name in ("assignee", "reporter"):
                account = (value or {}).get("accountId")
                if account and account not in self.users:
                    errors[name] = f"User '{account}' does not exist."
                issue[name] = account
            elif name == "duedate":
                issue["duedate"] = value
            elif name == "project":
                pass
            else:
                errors[name] = (
                    f"Field '{name}' cannot be set. It is not on the appropriate screen, or unknown."
                )
        if errors:
            return Reply(400, {"errorMessages": [], "errors": errors})
        return None

    def create_issue(self, call: Call) -> Reply:
        fields = (call.json or {}).get("fields") or {}
        if (fields.get("project") or {}).get("key") not in (self.project,) and (
            fields.get("project") or {}
        ).get("id") != self.project_id:
            return Reply(400, {"errorMessages": [], "errors": {"project": "valid project is required"}})
        issue = self.add_issue(fields.get("summary") or "", by=self.me["accountId"])
        error = self._apply_fields(issue, fields)
        if error:
            del self.issues[issue["id"]]
            return error
        self.touch(issue, self.me["accountId"], "created")
        return Reply(
            201, {"id": issue["id"], "key": issue["key"], "self": f"{SITE}{API}/issue/{issue['id']}"}
        )

    def get_issue(self, call: Call) -> Reply:
        issue = self._issue(call)
        if issue is None:
            return self.not_found(call)
        fields = [f for f in (call.arg("fields") or "").split(",") if f] or None
        return Reply(200, self.render_issue(issue, fields, call.arg("expand") or ""))

    def edit_issue_api(self, call: Call) -> Reply:
        issue = self._issue(call)
        if issue is None:
            return self.not_found(call)
        fields = (call.json or {}).get("fields") or {}
        error = self._apply_fields(issue, fields)
        if error:
            return error
        self.touch(issue, self.me["accountId"], ",".join(fields))
        return Reply(204)

    def get_transitions(self, call: Call) -> Reply:
        issue = self._issue(call)
        if issue is None:
            return self.not_found(call)
        return Reply(
            200,
            {
                "expand": "transitions",
                "transitions": [
                    {
                        "id": tid,
                        "name": name,
                        "to": self.render_status(to),
                        "hasScreen": False,
                        "isGlobal": False,
                        "isInitial": False,
                        "isAvailable": True,
                        "isConditional": False,
                        "isLooped": False,
                    }
                    for tid, name, to in TRANSITIONS[issue["status"]]
                ],
            },
        )

    def do_transition(self, call: Call) -> Reply:
        issue = self._issue(call)
        if issue is None:
            return self.not_found(call)
        wanted = ((call.json or {}).get("transition") or {}).get("id")
        for tid, _name, to in TRANSITIONS[issue["status"]]:
            if tid == wanted:
                issue["status"] = to
                self.touch(issue, self.me["accountId"], "status")
                return Reply(204)
        return Reply(
            400, {"errorMessages": [f"Transition id '{wanted}' is not valid for this issue."], "errors": {}}
        )

    def list_comments(self, call: Call) -> Reply:
        issue = self._issue(call)
        if issue is None:
            return self.not_found(call)
        start = int(call.arg("startAt", "0") or 0)
        size = min(int(call.arg("maxResults", "50") or 50), 100)
        comments = sorted(
            (c for c in self.comments.values() if c["issue"] == issue["id"]), key=lambda c: int(c["id"])
        )
        return Reply(
            200,
            {
                "comments": [self.render_comment(c) for c in comments[start : start + size]],
                "startAt": start,
                "maxResults": size,
                "total": len(comments),
            },
        )

    def add_comment_api(self, call: Call) -> Reply:
        issue = self._issue(call)
        if issue is None:
            return self.not_found(call)
        body = call.json or {}
        bad = self._check_adf(body.get("body"), "comment")
        if bad:
            return bad
        comment = self.comment_as(issue["id"], body["body"], by=self.me["accountId"])
        comment["properties"] = list(body.get("properties") or [])
        issue["history"].append((comment["created"], self.me["accountId"], "comment"))
        return Reply(201, self.render_comment(comment))

    def edit_comment_api(self, call: Call) -> Reply:
        comment = self.comments.get(call.params["cid"])
        if comment is None:
            return self.not_found(call)
        bad = self._check_adf((call.json or {}).get("body"), "comment")
        if bad:
            return bad
        comment["body"] = call.json["body"]
        comment["updated"] = self.tick()
        comment["updateAuthor"] = self.me["accountId"]
        self.issues[comment["issue"]]["updated"] = comment["updated"]
        return Reply(200, self.render_comment(comment))

    def delete_comment_api(self, call: Call) -> Reply:
        comment = self.comments.pop(call.params["cid"], None)
        if comment is None:
            return self.not_found(call)
        self.touch(self.issues[comment["issue"]], self.me["accountId"], "comment")
        return Reply(204)

    def add_attachment_api(self, call: Call) -> Reply:
        issue = self._issue(call)
        if issue is None:
            return self.not_found(call)
        if call.headers.get("X-Atlassian-Token") != "no-check":
            # Jira's XSRF check refuses multipart posts without the header.
            return Reply(403, {"errorMessages": ["XSRF check failed"], "errors": {}})
        content_type = call.headers.get("Content-Type", "")
        if not content_type.startswith("multipart/form-data; boundary="):
            self.violation(f"POST {call.path}: attachments must be multipart/form-data, got {content_type!r}")
        message = BytesParser(policy=HTTP).parsebytes(
            f"Content-Type: {content_type}\r\n\r\n".encode() + call.body
        )
        files = [
            p for p in message.iter_parts() if p.get_param("name", header="content-disposition") == "file"
        ]
        if not files or not files[0].get_filename():
            self.violation(f"POST {call.path}: the multipart body has no 'file' part with a filename")
        created = []
        for part in files:
            aid = self.new_id()
            self.attachments[aid] = {
                "id": aid,
                "issue": issue["id"],
                "filename": part.get_filename(),
                "mimeType": part.get_content_type(),
                "content": part.get_payload(decode=True) or b"",
                "author": self.me["accountId"],
                "created": self.tick(),
            }
            created.append(self.render_attachment(self.attachments[aid]))
        self.touch(issue, self.me["accountId"], "attachment")
        return Reply(200, created)

    def delete_attachment_api(self, call: Call) -> Reply:
        att = self.attachments.pop(call.params["aid"], None)
        if att is None:
            return self.not_found(call)
        self.touch(self.issues[att["issue"]], self.me["accountId"], "attachment")
        return Reply(204)

    def attachment_content(self, call: Call) -> Reply:
        att = self.attachments.get(call.params["aid"])
        if att is None:
            return self.not_found(call)
        if call.arg("redirect", "true") != "false":
            # Jira redirects to its media host; the connector must ask for the content itself.
            return Reply(303, None, {"Location": f"https://api.media.atlassian.com/file/{att['id']}/binary"})
        return Reply(200, att["content"], {"Content-Type": att["mimeType"]})

    _JQL = re.compile(
        r'^project = "(?P<project>[^"]+)"(?: AND updated >= "(?P<since>\d{4}-\d\d-\d\d \d\d:\d\d)")?'
        r" ORDER BY updated ASC$"
    )

    def search(self, call: Call) -> Reply:
        body = call.json or {}
        match = self._JQL.match(body.get("jql") or "")
        if not match:
            return self.search_by_jql(body)
        items = [i for i in self.issues.values() if match.group("project") == self.project]
        if match.group("since"):
            # JQL dates are in the searching user's time zone, at minute precision.
            since = datetime.strptime(match.group("since"), "%Y-%m-%d %H:%M").replace(
                tzinfo=ZoneInfo(self.time_zone)
            )
            items = [i for i in items if datetime.strptime(i["updated"], "%Y-%m-%dT%H:%M:%S.%f%z") >= since]
        items.sort(key=lambda i: (datetime.strptime(i["updated"], "%Y-%m-%dT%H:%M:%S.%f%z"), int(i["id"])))
        size = min(int(body.get("maxResults") or 50), 5000)
        start = int(base64.b64decode(body["nextPageToken"]).decode()) if body.get("nextPageToken") else 0
        page = items[start : start + size]
        out: dict[str, Any] = {
            "issues": [self.render_issue(i, body.get("fields") or ["updated"]) for i in page],
            "isLast": start + size >= len(items),
        }
        if not out["isLast"]:
            out["nextPageToken"] = base64.b64encode(str(start + size).encode()).decode()
        return Reply(200, out)

    def search_by_jql(self, body: dict[str, Any]) -> Reply:
        """Any other JQL (triggers): evaluated by ``Jql``; Jira answers 400 with ``errorMessages``."""
        try:
            jql = Jql(self, body.get("jql") or "")
        except JqlError as exc:
            return Reply(400, {"errorMessages": [str(exc)], "errors": {}})
        items = [i for i in self.issues.values() if jql.matches(i)]
        if jql.order:
            field, descending = jql.order
            items.sort(key=lambda i: self.jql_value(i, field), reverse=descending)  # type: ignore[arg-type,return-value]
        size = min(int(body.get("maxResults") or 50), 5000)
        start = int(base64.b64decode(body["nextPageToken"]).decode()) if body.get("nextPageToken") else 0
        page = items[start : start + size]
        out: dict[str, Any] = {
            "issues": [self.render_issue(i, body.get("fields") or ["updated"]) for i in page],
            "isLast": start + size >= len(items),
        }
        if not out["isLast"]:
            out["nextPageToken"] = base64.b64encode(str(start + size).encode()).decode()
        return Reply(200, out)

    def jql_parse(self, call: Call) -> Reply:
        """Each query parsed; a query's errors are listed with it (the answer is still 200)."""
        out = []
        for query in (call.json or {}).get("queries") or []:
            try:
                Jql(self, query, strict=call.arg("validation", "strict") == "strict")
                out.append({"query": query, "errors": []})
            except JqlError as exc:
                out.append({"query": query, "errors": [str(exc)]})
        return Reply(200, {"queries": out})

    def jql_match(self, call: Call) -> Reply:
        body = call.json or {}
        ids = [str(i) for i in body.get("issueIds") or []]
        matches = []
        for query in body.get("jqls") or []:
            try:
                jql = Jql(self, query)
            except JqlError as exc:
                matches.append({"matchedIssues": [], "errors": [str(exc)]})
                continue
            hits = [int(i) for i in ids if i in self.issues and jql.matches(self.issues[i])]
            matches.append({"matchedIssues": hits, "errors": []})
        return Reply(200, {"matches": matches})

    def jql_value(self, issue: dict[str, Any], field: str) -> Any:
        """An issue's value for a JQL field: names for status/priority/type, a list for labels."""
        if field == "project":
            return [self.project, self.project_id, "Support"]
        if field == "id":
            return int(issue["id"])
        if field in ("key", "issuekey"):
            return issue["key"]
        if field == "status":
            return STATUSES[issue["status"]][0]
        if field == "priority":
            return PRIORITIES[issue["priority"]] if issue["priority"] else None
        if field in ("issuetype", "type"):
            return ISSUE_TYPES[issue["issuetype"]]
        if field in ("assignee", "reporter", "creator"):
            who = issue[field]
            return [who, self.users[who]["displayName"]] if who else None
        if field in ("created", "updated"):
            return datetime.strptime(issue[field], "%Y-%m-%dT%H:%M:%S.%f%z")
        return issue[field]  # summary, labels

    # --- webhooks ------------------------------------------------------------------------------------------
    def webhook(
        self,
        event: str,
        key: str,
        *,
        secret: str | None = None,
        by: str | None = None,
        comment_id: str | None = None,
        delivery: str | None = None,
    ) -> tuple[dict[str, str], bytes]:
        """A delivery of ``event`` (``jira:issue_updated``, ``comment_created`` …) as Jira Cloud sends it,
        signed with ``X-Hub-Signature`` when the webhook has a ``secret``."""
        issue = self.issue_by(key)
        assert issue is not None
        payload: dict[str, Any] = {
            "timestamp": int(self.clock.timestamp() * 1000),
            "webhookEvent": event,
            "issue": self.render_issue(issue, ["summary", "status", "updated", "project", "issuetype"]),
            "user": self.user(by or self.anna["accountId"]),
        }
        if event.startswith("jira:issue_"):
            payload["issue_event_type_name"] = (
                "issue_updated" if event.endswith("updated") else "issue_created"
            )
            payload["changelog"] = {
                "id": "1",
                "items": [{"field": "summary", "fromString": "a", "toString": "b"}],
            }
        if comment_id:
            payload["comment"] = self.render_comment(self.comments[comment_id])
        body = json.dumps(payload).encode()
        headers = {
            "Content-Type": "application/json; charset=utf-8",
            "User-Agent": "Atlassian Webhook HTTP Client",
            "X-Atlassian-Webhook-Identifier": delivery or str(uuid.uuid4()),
            "X-Atlassian-Webhook-Retry": "0",
        }
        if secret:
            headers["X-Hub-Signature"] = (
                "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()
            )
        return headers, body


# --- a small honest JQL subset ---------------------------------------------------------------------------

JQL_FIELDS = {
    "project", "id", "key", "issuekey", "summary", "status", "priority", "issuetype", "type", "labels",
    "assignee", "reporter", "creator", "created", "updated",
}  # fmt: skip
RANGE_OPERATORS = {">": operator.gt, ">=": operator.ge, "<": operator.lt, "<=": operator.le}
JQL_DATE_FORMATS = ("%Y/%m/%d %H:%M", "%Y-%m-%d %H:%M", "%Y/%m/%d", "%Y-%m-%d")
JQL_OPERATORS = "'=', '!=', '<', '>', '<=', '>=', '~', '!~', 'IN', 'NOT IN', 'IS' and 'IS NOT'"
_TOKEN = re.compile(r'\s*("(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'|!=|!~|>=|<=|[=~<>(),]|[^\s=!~<>(),"\']+)')


class JqlError(Exception):
    pass


class Jql:
    """Parses a query (raising ``JqlError`` with Jira's wording) and tells whether an issue matches."""

    def __init__(self, fake: FakeJira, text: str, *, strict: bool = True) -> None:
        self.fake = fake
        self.tokens: list[tuple[str, int]] = []
        pos = 0
        while pos < len(text):
            m = _TOKEN.match(text, pos)
            if not m or not m.group(1):
                break
            self.tokens.append((m.group(1), m.start(1) + 1))
            pos = m.end()
        self.i = 0
        self.order: tuple[str, bool] | None = None
        self.tree = self.expr() if self.peek() and self.peek().lower() != "order" else None
        if self.peek() and self.peek().lower() == "order":
            self.take()
            if (self.take() or "").lower() != "by":
                self.fail("Expecting 'by' after 'order'")
            field = (self.take() or "").lower()
            self.check_field(field)
            direction = (self.peek() or "").lower()
            if direction in ("asc", "desc"):
                self.take()
            self.order = (field, direction == "desc")
        if self.peek() is not None:
            self.fail(f"Expecting either 'OR' or 'AND' but got '{self.peek()}'.")

    # parsing
    def peek(self) -> str | None:
        return self.tokens[self.i][0] if self.i < len(self.tokens) else None

    def take(self) -> str | None:
        token = self.peek()
        self.i += 1
        return token

    def fail(self, text: str) -> None:
        where = self.tokens[min(self.i, len(self.tokens) - 1)][1] if self.tokens else 1
        raise JqlError(f"Error in the JQL Query: {text} (line 1, character {where})")

    def check_field(self, field: str) -> None:
        if field not in JQL_FIELDS:
            raise JqlError(f"Field '{field}' does not exist or you do not have permission to view it.")

    def expr(self) -> Any:
        left = self.conj()
        while (self.peek() or "").lower() == "or":
            self.take()
            a, b = left, self.conj()
            left = lambda issue, a=a, b=b: a(issue) or b(issue)  # noqa: E731
        return left

    def conj(self) -> Any:
        left = self.unary()
        while (self.peek() or "").lower() == "and":
            self.take()
            a, b = left, self.unary()
            left = lambda issue, a=a, b=b: a(issue) and b(issue)  # noqa: E731
        return left

    def unary(self) -> Any:
        token = self.peek()
        if token is None:
            self.fail("Expecting a field name but reached the end of the query.")
        if token.lower() == "not":
            self.take()
            inner = self.unary()
            return lambda issue: not inner(issue)
        if token == "(":
            self.take()
            inner = self.expr()
            if self.take() != ")":
                self.fail("Expecting ')' before the end of the query.")
            return inner
        return self.clause()

    def value(self) -> str:
        token = self.take()
        if token is None or token in "(),=":
            self.fail(f"Expecting either a value, list or function but got '{token or '<EOF>'}'.")
        assert token is not None
        if token[0] in "\"'":
            return re.sub(r"\\(.)", r"\1", token[1:-1])
        if self.peek() == "(":  # a function call: only currentUser() in the fake
            self.take()
            if token.lower() != "currentuser" or self.take() != ")":
                raise JqlError(f"Unable to find JQL function '{token}()'.")
            return self.fake.me["accountId"]  # the fake authenticates only as the node's user
        return token

    def clause(self) -> Any:
        field = (self.take() or "").lower()
        self.check_field(field)
        op = (self.take() or "").lower()
        if op == "not" and (self.peek() or "").lower() == "in":
            self.take()
            op = "not in"
        elif op == "is":
            if (self.peek() or "").lower() == "not":
                self.take()
                op = "is not"
            if (self.take() or "").lower() not in ("empty", "null"):
                self.fail("Expecting 'EMPTY' or 'NULL' after 'IS'.")
            empty = op == "is"
            return lambda issue: (not self.fake.jql_value(issue, field)) == empty
        if op not in ("=", "!=", "~", "!~", ">", ">=", "<", "<=", "in", "not in"):
            self.i -= 1
            self.fail(f"Expecting operator but got '{self.peek()}'. The valid operators are {JQL_OPERATORS}.")
        if op in ("in", "not in"):
            if self.take() != "(":
                self.fail("Expecting '(' after 'IN'.")
            values = [self.value()]
            while self.peek() == ",":
                self.take()
                values.append(self.value())
            if self.take() != ")":
                self.fail("Expecting ')' to close the list.")
        else:
            values = [self.value()]
        for v in values:
            self.check_value(field, v)
        return lambda issue: self.compare(issue, field, op, values)

    def check_value(self, field: str, value: str) -> None:
        if field in ("created", "updated"):
            self.date(field, value)
            return
        known = {
            "status": [s for s, _ in STATUSES.values()],
            "priority": list(PRIORITIES.values()),
            "issuetype": list(ISSUE_TYPES.values()),
            "type": list(ISSUE_TYPES.values()),
        }.get(field)
        if field == "project" and value.casefold() not in {
            self.fake.project.casefold(),
            self.fake.project_id,
        }:
            known = []
        if known is not None and value.casefold() not in {k.casefold() for k in known}:
            raise JqlError(f"The value '{value}' does not exist for the field '{field}'.")

    def date(self, field: str, value: str) -> datetime:
        """A JQL date value, read in the searching user's time zone (minute precision at most)."""
        for fmt in JQL_DATE_FORMATS:
            try:
                return datetime.strptime(value, fmt).replace(tzinfo=ZoneInfo(self.fake.time_zone))
            except ValueError:
                continue
        raise JqlError(
            f"Date value '{value}' for field '{field}' is invalid. Valid formats include: "
            "'yyyy/MM/dd HH:mm', 'yyyy-MM-dd HH:mm', 'yyyy/MM/dd', 'yyyy-MM-dd', or a period format e.g. "
            "'-5d', '4w 2d'."
        )

    def compare(self, issue: dict[str, Any], field: str, op: str, values: list[str]) -> bool:
        actual = self.fake.jql_value(issue, field)
        if field in ("created", "updated"):
            if op not in (">", ">=", "<", "<="):
                raise JqlError(f"The operator '{op}' is not supported by the '{field}' field in the fake.")
            return bool(RANGE_OPERATORS[op](actual, self.date(field, values[0])))
        have = [
            str(a).casefold() for a in (actual if isinstance(actual, list) else [actual]) if a is not None
        ]
        wanted = [v.casefold() for v in values]
        if op in ("~", "!~"):
            hit = any(w in h for w in wanted for h in have)
            return hit if op == "~" else not hit
        if op in ("=", "in"):
            return any(w in have for w in wanted)
        if op in ("!=", "not in"):
            return bool(have) and not any(w in have for w in wanted)
        if field != "id":
            raise JqlError(f"The operator '{op}' is not supported by the '{field}' field in the fake.")
        number, bound = int(actual), int(values[0])
        return {">": number > bound, ">=": number >= bound, "<": number < bound, "<=": number <= bound}[op]

    def matches(self, issue: dict[str, Any]) -> bool:
        return True if self.tree is None else bool(self.tree(issue))
