"""A fake GitLab (REST API v4) for one project, built from GitLab's API reference (no machine-readable
description is available here; the facts relied on are listed in ``tests/connectors2/test_gitlab.py``)."""

from __future__ import annotations

import json
import re
import secrets
from datetime import datetime
from typing import Any
from urllib.parse import unquote

from requests.structures import CaseInsensitiveDict

from tests.connectors2.fakes.base import Call, FakeClock, FakeServer, HttpError, Reply

TYPES = ("issue", "incident", "test_case", "task")


def parse_multipart(call: Call) -> tuple[str, str, bytes]:
    """(field name, filename, content) of the single file part of a multipart/form-data body."""
    ctype = call.headers.get("Content-Type", "")
    match = re.search(r"boundary=([^;]+)", ctype)
    if not ctype.startswith("multipart/form-data") or not match:
        raise HttpError(400, {"error": "file is missing"})
    boundary = match.group(1).strip('"').encode()
    parts = call.body.split(b"--" + boundary)
    if len(parts) < 3 or not parts[-1].startswith(b"--"):
        raise HttpError(400, {"error": "malformed multipart body"})
    head, _, data = parts[1].partition(b"\r\n\r\n")
    disp = re.search(rb'name="([^"]+)"; filename="([^"]*)"', head)
    if not disp:
        raise HttpError(400, {"error": "file is invalid"})
    return disp.group(1).decode(), disp.group(2).decode(), data[: -len(b"\r\n")]


class FakeGitLab(FakeServer):
    host = "https://gitlab.example"
    token = "glpat-secret-123"
    project_path = "acme/support"
    project_id = 7

    def __init__(self, clock: FakeClock | None = None) -> None:
        super().__init__(clock)
        self.issues: dict[int, dict[str, Any]] = {}
        self.notes: dict[int, list[dict[str, Any]]] = {}
        self.uploads: dict[str, tuple[str, bytes]] = {}
        self.users = {
            1: {"id": 1, "username": "exalate-node", "name": "Exalate Node", "email": "node@acme.example"},
            2: {"id": 2, "username": "ed", "name": "Ed Engineer", "email": "ed@acme.example"},
        }
        self.labels = ["bug", "hw", "status::In Progress", "priority::High", "priority::Low"]
        self.actor = self.users[1]
        self.next_iid, self.next_note = 1, 500
        p = r"/api/v4/projects/(?P<pid>[^/]+)"
        self.route("GET", r"/api/v4/user", lambda call: self.actor_for_token(call))
        self.route("GET", r"/api/v4/users", self.search_users)
        self.route("GET", p, self.get_project)
        self.route("GET", p + r"/issues", self.list_issues)
        self.route("POST", p + r"/issues", self.create_issue)
        self.route("GET", p + r"/issues/(?P<iid>\d+)", self.get_issue)
        self.route("PUT", p + r"/issues/(?P<iid>\d+)", self.update_issue)
        self.route("GET", p + r"/issues/(?P<iid>\d+)/notes", self.list_notes)
        self.route("POST", p + r"/issues/(?P<iid>\d+)/notes", self.create_note)
        self.route("PUT", p + r"/issues/(?P<iid>\d+)/notes/(?P<nid>\d+)", self.update_note)
        self.route("DELETE", p + r"/issues/(?P<iid>\d+)/notes/(?P<nid>\d+)", self.delete_note)
        self.route("POST", p + r"/uploads", self.upload)
        self.route("GET", p + r"/uploads/(?P<secret>[0-9a-f]+)/(?P<filename>[^/]+)", self.download)
        self.route("DELETE", p + r"/uploads/(?P<secret>[0-9a-f]+)/(?P<filename>[^/]+)", self.delete_upload)
        self.route(
            "GET", p + r"/labels", lambda call, pid: self.paged(call, [{"name": x} for x in self.labels])
        )
        self.route("GET", p + r"/members/all", lambda call, pid: self.paged(call, list(self.users.values())))

    # --- plumbing ----------------------------------------------------------------------------------------
    def authorize(self, call: Call) -> None:
        if call.headers.get("PRIVATE-TOKEN") != self.token:
            raise HttpError(401, {"message": "401 Unauthorized"})

    def actor_for_token(self, call: Call) -> dict[str, Any]:
        return dict(self.users[1])

    def check_project(self, pid: str) -> None:
        if unquote(pid) not in (self.project_path, str(self.project_id)):
            raise HttpError(404, {"message": "404 Project Not Found"})

    def now(self) -> str:
        self.clock.advance(0.001)
        return self.clock.iso()

    def paged(self, call: Call, rows: list[Any]) -> Reply:
        per_page = min(int(call.query.get("per_page", 20)), 100)
        page = int(call.query.get("page", 1))
        chunk = rows[(page - 1) * per_page : page * per_page]
        headers = {"X-Page": str(page), "X-Per-Page": str(per_page), "X-Total": str(len(rows))}
        headers["X-Next-Page"] = str(page + 1) if page * per_page < len(rows) else ""
        return Reply(200, chunk, headers)

    def issue(self, pid: str, iid: Any) -> dict[str, Any]:
        self.check_project(pid)
        issue = self.issues.get(int(iid))
        if issue is None:
            raise HttpError(404, {"message": "404 Issue Not Found"})
        return issue

    def view(self, issue: dict[str, Any]) -> dict[str, Any]:
        out = dict(issue)
        out["assignee"] = out["assignees"][0] if out["assignees"] else None
        return out

    def touch(self, issue: dict[str, Any]) -> None:
        issue["updated_at"] = self.now()

    def apply(self, issue: dict[str, Any], body: dict[str, Any]) -> None:
        if "title" in body and not str(body["title"]).strip():
            raise HttpError(400, {"message": {"title": ["can't be blank"]}})
        for key in ("title", "description"):
            if key in body:
                issue[key] = body[key]
        if "state_event" in body:
            if body["state_event"] not in ("close", "reopen"):
                raise HttpError(400, {"error": "state_event does not have a valid value"})
            issue["state"] = "closed" if body["state_event"] == "close" else "opened"
            issue["closed_at"] = self.clock.iso() if issue["state"] == "closed" else None
        if "issue_type" in body:
            if body["issue_type"] not in TYPES:
                raise HttpError(400, {"error": "issue_type does not have a valid value"})
            issue["issue_type"] = body["issue_type"]
        if "labels" in body:
            issue["labels"] = [x for x in str(body["labels"]).split(",") if x]
        labels = list(issue["labels"])
        for x in str(body.get("add_labels") or "").split(","):
            if x:
                # A scoped label replaces the other labels of its scope, as GitLab does.
                scope = x.rsplit("::", 1)[0] + "::" if "::" in x else None
                labels = [y for y in labels if not (scope and y.startswith(scope))] + [x]
        remove = {x for x in str(body.get("remove_labels") or "").split(",") if x}
        issue["labels"] = sorted(dict.fromkeys(y for y in labels if y not in remove))
        if "assignee_ids" in body:
            ids = body["assignee_ids"] or []
            if any(i not in self.users for i in ids):
                raise HttpError(404, {"message": "404 User Not Found"})
            issue["assignees"] = [self.public(self.users[i]) for i in ids]
        if "due_date" in body:
            if body["due_date"] and not re.fullmatch(r"\d{4}-\d{2}-\d{2}", str(body["due_date"])):
                raise HttpError(400, {"error": "due_date is invalid"})
            issue["due_date"] = body["due_date"] or None

    @staticmethod
    def public(user: dict[str, Any]) -> dict[str, Any]:
        return {k: v for k, v in user.items() if k != "email"}  # e-mails are private to non-admins

    # --- scripted activity (a person in the web UI) -----------------------------------------------------
    def human_edit(self, iid: int, by: int = 2, **body: Any) -> None:
        issue = self.issues[iid]
        self.apply(issue, body)
        self.touch(issue)

    def human_issue(self, title: str, by: int = 2) -> int:
        """An issue opened in the web UI by user ``by``; its iid."""
        previous, self.actor = self.actor, self.users[by]
        try:
            return self.create_issue(
                Call("POST", "", "", {}, CaseInsensitiveDict(), json.dumps({"title": title}).encode()),
                self.project_path,
            ).body["iid"]
        finally:
            self.actor = previous

    def human_note(self, iid: int, text: str, by: int = 2, internal: bool = False) -> int:
        return self._note(self.issues[iid], text, self.users[by], internal)["id"]

    def human_upload(self, iid: int, name: str, data: bytes) -> str:
        secret = secrets.token_hex(16)
        self.uploads[secret] = (name, data)
        self._note(self.issues[iid], f"Screenshot: [{name}](/uploads/{secret}/{name})", self.users[2], False)
        return f"{secret}/{name}"

    def hook(self, kind: str, iid: int, *, by: int = 2) -> dict[str, Any]:
        issue = self.issues[iid]
        attrs = {
            "id": 1000 + iid,
            "iid": iid,
            "updated_at": issue["updated_at"].replace("T", " ")[:19] + " UTC",
            "url": issue["web_url"],
            "action": "update",
        }
        body: dict[str, Any] = {
            "object_kind": kind,
            "event_type": kind,
            "user": self.public(self.users[by]),
            "project": {"id": self.project_id, "path_with_namespace": self.project_path},
        }
        if kind == "issue":
            body["object_attributes"] = attrs
        else:
            body["object_attributes"] = {"id": 9, "noteable_type": "Issue", "note": "..."}
            body["issue"] = attrs
        return body

    # --- routes --------------------------------------------------------------------------------------
    def search_users(self, call: Call) -> list[dict[str, Any]]:
        term = call.query.get("search", "").lower()
        # Non-administrators find users by public e-mail only: this fake's users have theirs public.
        return [
            {**self.public(u), "public_email": u["email"]}
            for u in self.users.values()
            if term in (u["email"], u["username"])
        ]

    def get_project(self, call: Call, pid: str) -> dict[str, Any]:
        self.check_project(pid)
        return {"id": self.project_id, "path_with_namespace": self.project_path, "name": "Support"}

    ORDER_BY = ("created_at", "updated_at", "priority", "due_date", "relative_position", "label_priority",
                "milestone_due", "popularity", "weight", "title")  # fmt: skip

    def list_issues(self, call: Call, pid: str) -> Reply:
        """Filters: ``state``, ``labels`` (all of them; ``None``/``Any``), ``not[labels]``, ``iids[]``,
        ``author_id``/``author_username`` (mutually exclusive), ``assignee_username``, ``search`` (every word
        of it, case-insensitively, in the title and description, or only in the fields ``in`` names),
        ``issue_type``, ``created_after`` (inclusive); values are checked as GitLab does (400 ``{"error":
        "<param> does not have a valid value"}``), unknown parameters are ignored."""
        self.check_project(pid)
        q = call.query
        checks = {
            "state": ("opened", "closed", "all"),
            "order_by": self.ORDER_BY,
            "sort": ("asc", "desc"),
            "issue_type": TYPES,
            "scope": ("created_by_me", "assigned_to_me", "all", "created-by-me", "assigned-to-me"),
        }
        for name, allowed in checks.items():
            if name in q and q[name] not in allowed:
                raise HttpError(400, {"error": f"{name} does not have a valid value"})
        if "author_id" in q and "author_username" in q:
            raise HttpError(400, {"error": "author_id, author_username are mutually exclusive"})
        if "author_id" in q and not q["author_id"].isdigit() and q["author_id"] not in ("None", "Any"):
            raise HttpError(400, {"error": "author_id is invalid"})
        searched = [x.strip() for x in q.get("in", "title,description").split(",")]
        if not searched or any(x not in ("title", "description") for x in searched):
            raise HttpError(400, {"error": "in does not have a valid value"})
        for name in ("created_after", "created_before", "updated_after", "updated_before"):
            if name in q:
                try:
                    datetime.fromisoformat(q[name].replace("Z", "+00:00"))
                except ValueError:
                    raise HttpError(400, {"error": f"{name} is invalid"})
        rows = list(self.issues.values())
        if q.get("state", "all") != "all":
            rows = [i for i in rows if i["state"] == q["state"]]
        if "labels" in q:
            wanted = [name.strip().lower() for name in q["labels"].split(",") if name.strip()]
            if wanted == ["none"]:
                rows = [i for i in rows if not i["labels"]]
            elif wanted == ["any"]:
                rows = [i for i in rows if i["labels"]]
            else:
                rows = [i for i in rows if set(wanted) <= {lb.lower() for lb in i["labels"]}]
        if "not[labels]" in q:
            unwanted = {name.strip().lower() for name in q["not[labels]"].split(",")}
            rows = [i for i in rows if not unwanted & {lb.lower() for lb in i["labels"]}]
        if "iids[]" in q:
            rows = [i for i in rows if str(i["iid"]) == q["iids[]"]]
        if "author_username" in q:
            rows = [i for i in rows if i["author"]["username"] == q["author_username"]]
        if q.get("author_id", "").isdigit():
            rows = [i for i in rows if i["author"]["id"] == int(q["author_id"])]
        if "assignee_username" in q:
            rows = [i for i in rows if q["assignee_username"] in [a["username"] for a in i["assignees"]]]
        if q.get("search"):
            words = q["search"].lower().split()

            def haystack(issue: dict[str, Any]) -> str:
                return " ".join(str(issue.get(field) or "") for field in searched).lower()

            rows = [i for i in rows if all(word in haystack(i) for word in words)]
        if "issue_type" in q:
            rows = [i for i in rows if i["issue_type"] == q["issue_type"]]
        if q.get("created_after"):
            start = datetime.fromisoformat(q["created_after"].replace("Z", "+00:00"))
            rows = [
                i for i in rows if datetime.fromisoformat(i["created_at"].replace("Z", "+00:00")) >= start
            ]
        if call.query.get("updated_after"):
            since = datetime.fromisoformat(call.query["updated_after"].replace("Z", "+00:00"))
            rows = [
                i for i in rows if datetime.fromisoformat(i["updated_at"].replace("Z", "+00:00")) >= since
            ]
        order = call.query.get("order_by", "created_at")
        rows.sort(key=lambda i: (i[order], i["iid"]), reverse=call.query.get("sort", "desc") == "desc")
        return self.paged(call, [self.view(i) for i in rows])

    def create_issue(self, call: Call, pid: str) -> Reply:
        self.check_project(pid)
        body = call.json()
        if not body.get("title"):
            raise HttpError(400, {"message": {"title": ["can't be blank"]}})
        iid = self.next_iid
        now = self.now()
        issue = {
            "id": 1000 + iid,
            "iid": iid,
            "project_id": self.project_id,
            "title": "",
            "description": None,
            "state": "opened",
            "labels": [],
            "assignees": [],
            "author": self.public(self.actor),
            "due_date": None,
            "issue_type": "issue",
            "created_at": now,
            "updated_at": now,
            "closed_at": None,
            "web_url": f"{self.host}/{self.project_path}/-/issues/{iid}",
            "references": {"short": f"#{iid}", "full": f"{self.project_path}#{iid}"},
        }
        self.apply(issue, body)
        self.next_iid += 1
        self.issues[iid] = issue
        self.notes[iid] = []
        return Reply(201, self.view(issue))

    def get_issue(self, call: Call, pid: str, iid: str) -> dict[str, Any]:
        return self.view(self.issue(pid, iid))

    def update_issue(self, call: Call, pid: str, iid: str) -> dict[str, Any]:
        issue = self.issue(pid, iid)
        self.apply(issue, call.json())
        self.touch(issue)
        return self.view(issue)

    def _note(
        self, issue: dict[str, Any], body: str, author: dict[str, Any], internal: bool
    ) -> dict[str, Any]:
        now = self.now()
        note = {
            "id": self.next_note,
            "body": body,
            "author": self.public(author),
            "created_at": now,
            "updated_at": now,
            "system": False,
            "internal": internal,
            "confidential": internal,
            "noteable_type": "Issue",
            "noteable_iid": issue["iid"],
        }
        self.next_note += 1
        self.notes[issue["iid"]].append(note)
        issue["updated_at"] = now  # a note touches its issue
        return note

    def list_notes(self, call: Call, pid: str, iid: str) -> Reply:
        issue = self.issue(pid, iid)
        rows = sorted(
            self.notes[issue["iid"]],
            key=lambda n: (n["created_at"], n["id"]),
            reverse=call.query.get("sort", "desc") == "desc",
        )
        return self.paged(call, rows)

    def create_note(self, call: Call, pid: str, iid: str) -> Reply:
        issue = self.issue(pid, iid)
        body = call.json()
        if not str(body.get("body") or "").strip():
            raise HttpError(400, {"message": {"note": ["can't be blank"]}})
        return Reply(201, self._note(issue, body["body"], self.actor, bool(body.get("internal"))))

    def _find_note(self, issue: dict[str, Any], nid: str) -> dict[str, Any]:
        for note in self.notes[issue["iid"]]:
            if note["id"] == int(nid):
                return note
        raise HttpError(404, {"message": "404 Note Not Found"})

    def update_note(self, call: Call, pid: str, iid: str, nid: str) -> dict[str, Any]:
        issue = self.issue(pid, iid)
        note = self._find_note(issue, nid)
        note.update(body=call.json()["body"], updated_at=self.now())
        issue["updated_at"] = note["updated_at"]
        return note

    def delete_note(self, call: Call, pid: str, iid: str, nid: str) -> Reply:
        issue = self.issue(pid, iid)
        self.notes[issue["iid"]].remove(self._find_note(issue, nid))
        self.touch(issue)
        return Reply(204, None)

    def upload(self, call: Call, pid: str) -> Reply:
        self.check_project(pid)
        field, name, data = parse_multipart(call)
        if field != "file":
            raise HttpError(400, {"error": "file is missing"})
        secret = secrets.token_hex(16)
        self.uploads[secret] = (name, data)
        url = f"/uploads/{secret}/{name}"
        return Reply(
            201,
            {
                "id": len(self.uploads),
                "alt": name,
                "url": url,
                "full_path": f"/-/project/{self.project_id}{url}",
                "markdown": f"[{name}]({url})",
            },
        )

    def download(self, call: Call, pid: str, secret: str, filename: str) -> Reply:
        self.check_project(pid)
        if secret not in self.uploads or self.uploads[secret][0] != unquote(filename):
            raise HttpError(404, {"message": "404 Not found"})
        return Reply(200, self.uploads[secret][1], {"Content-Type": "application/octet-stream"})

    def delete_upload(self, call: Call, pid: str, secret: str, filename: str) -> Reply:
        self.download(call, pid, secret, filename)
        del self.uploads[secret]
        return Reply(204, None)
