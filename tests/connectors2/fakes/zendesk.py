"""A fake Zendesk Support account (REST API v2), built from Zendesk's API reference (no machine-readable
description is available here; the facts relied on are listed in ``tests/connectors2/test_zendesk.py`` and
``tests/connectors2/test_queries.py``).

``GET /api/v2/search.json`` evaluates a subset of the search syntax over tickets: ``type:ticket``,
``status``/``priority`` with ``: < > <= >=`` (in Zendesk's order of the values), ``ticket_type``, ``tags``,
``assignee``/``requester`` (e-mail or ``none``), ``created`` (a date or an ISO time), a leading ``-`` to
negate, and words or quoted phrases in the subject or description; an unknown keyword is text, as in
Zendesk. Pages: ``page``/``per_page`` (at most 100, the first 1000 results; beyond is a 422), ``sort_by``
and ``sort_order``. Zendesk does not document the wording of its answer to a search it cannot parse; the
fake answers an unbalanced quote with 400 in Zendesk's error shape ``{"error", "description"}``.

``GET /api/v2/tickets.json`` (List Tickets) reads the tickets themselves (no index lag) with offset
pagination: ``sort_by`` (``id``, ``created_at``, ``updated_at``, ``subject``, ``status``), ``sort_order``
(``asc`` by default), ``page`` and ``per_page`` (at most 100), answering ``tickets``, ``next_page``,
``previous_page`` and ``count``. A ticket the API creates has ``via.channel`` ``api`` and the API user as its
submitter (``submitter_is_requester`` makes the requester the submitter instead, as Zendesk's older
documentation describes the default)."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import re
import secrets
from datetime import datetime
from typing import Any
from urllib.parse import urlencode

from tests.connectors2.fakes.base import Call, FakeClock, FakeServer, HttpError, Reply

STATUSES = ("new", "open", "pending", "hold", "solved", "closed")
PRIORITIES = ("low", "normal", "high", "urgent")
TYPES = ("problem", "incident", "question", "task")


def invalid(field: str, text: str) -> HttpError:
    return HttpError(
        422,
        {
            "error": "RecordInvalid",
            "description": "Record validation errors",
            "details": {field: [{"description": text}]},
        },
    )


class FakeZendesk(FakeServer):
    host = "https://acme.zendesk.com"
    email = "node@acme.example"
    api_token = "zd-token-123"

    def __init__(self, clock: FakeClock | None = None) -> None:
        super().__init__(clock)
        self.tickets: dict[int, dict[str, Any]] = {}
        self.comments: dict[int, list[dict[str, Any]]] = {}
        self.blobs: dict[str, tuple[dict[str, Any], bytes]] = {}  # upload token → (attachment, data)
        self.users = {
            1: {"id": 1, "name": "Exalate Node", "email": self.email, "role": "admin"},
            2: {"id": 2, "name": "Ed Agent", "email": "ed@acme.example", "role": "agent"},
            3: {"id": 3, "name": "Carla Customer", "email": "carla@customer.example", "role": "end-user"},
        }
        self.actor = 1
        self.next_id, self.next_comment, self.next_att = 1, 9000, 500
        self.update_times: dict[int, list[float]] = {}
        self.page_size = 1000
        self.submitter_is_requester = False
        self.route("GET", r"/api/v2/tickets/(?P<tid>\d+)\.json", self.get_ticket)
        self.route("PUT", r"/api/v2/tickets/(?P<tid>\d+)\.json", self.update_ticket)
        self.route("POST", r"/api/v2/tickets\.json", self.create_ticket)
        self.route("GET", r"/api/v2/tickets\.json", self.list_tickets)
        self.route("GET", r"/api/v2/tickets/(?P<tid>\d+)/comments\.json", self.list_comments)
        self.route("PUT", r"/api/v2/tickets/(?P<tid>\d+)/comments/(?P<cid>\d+)/redact\.json", self.redact)
        self.route(
            "PUT",
            r"/api/v2/tickets/(?P<tid>\d+)/comments/(?P<cid>\d+)/attachments/(?P<aid>\d+)/redact\.json",
            self.redact_attachment,
        )
        self.route("POST", r"/api/v2/uploads\.json", self.upload)
        self.route("GET", r"/api/v2/attachments/(?P<aid>\d+)\.json", self.get_attachment)
        self.route("GET", r"/attachments/token/(?P<token>\w+)/", self.download)
        self.route("GET", r"/api/v2/users/me\.json", lambda call: {"user": self.users[1]})
        self.route("GET", r"/api/v2/users/show_many\.json", self.show_many)
        self.route("GET", r"/api/v2/users\.json", self.list_users)
        self.route("GET", r"/api/v2/incremental/tickets/cursor\.json", self.export)
        self.route("GET", r"/api/v2/search\.json", self.search)

    def authorize(self, call: Call) -> None:
        expected = "Basic " + base64.b64encode(f"{self.email}/token:{self.api_token}".encode()).decode()
        if call.headers.get("Authorization") != expected:
            raise HttpError(401, {"error": "Couldn't authenticate you"})

    def now(self) -> str:
        self.clock.advance(1)  # Zendesk times have whole seconds
        return self.clock.now().strftime("%Y-%m-%dT%H:%M:%SZ")

    def ticket(self, tid: Any) -> dict[str, Any]:
        ticket = self.tickets.get(int(tid))
        if ticket is None:
            raise HttpError(404, {"error": "RecordNotFound", "description": "Not found"})
        return ticket

    def user_by_email(self, email: str) -> int:
        for user in self.users.values():
            if user["email"] == email:
                return user["id"]
        new_id = max(self.users) + 1
        self.users[new_id] = {"id": new_id, "name": email.split("@")[0], "email": email, "role": "end-user"}
        return new_id

    def apply(self, ticket: dict[str, Any], body: dict[str, Any]) -> list[dict[str, Any]]:
        if ticket.get("status") == "closed":
            raise invalid("status", "Status: closed prevents ticket update")
        events: list[dict[str, Any]] = []
        for key in ("subject", "tags", "due_at"):
            if key in body:
                ticket[key] = body[key]
        for key, allowed in (("status", STATUSES), ("priority", PRIORITIES), ("type", TYPES)):
            if key in body:
                if body[key] is not None and body[key] not in allowed:
                    raise invalid(key, f"{key.capitalize()}: {body[key]} is not valid")
                ticket[key] = body[key]
        if "assignee_email" in body:
            uid = self.user_by_email(body["assignee_email"])
            if self.users[uid]["role"] == "end-user":
                raise invalid("assignee", "Assignee is not an agent")
            ticket["assignee_id"] = uid
        if "assignee_id" in body:
            ticket["assignee_id"] = body["assignee_id"]
        if "custom_fields" in body:
            values = {f["id"]: f for f in ticket["custom_fields"]}
            for field in body["custom_fields"]:
                if field["id"] not in values:
                    raise invalid("custom_fields", f"Field {field['id']} does not exist")
                values[field["id"]]["value"] = field["value"]
        if "comment" in body:
            events.append(self._comment(ticket, body["comment"]))
        return events

    def _comment(self, ticket: dict[str, Any], comment: dict[str, Any]) -> dict[str, Any]:
        if not str(comment.get("body") or comment.get("html_body") or "").strip():
            raise invalid("comment", "Comment: body can't be blank")
        atts = []
        for token in comment.get("uploads") or []:
            if token not in self.blobs:
                raise invalid("uploads", f"Upload token {token} is invalid or expired")
            atts.append(self.blobs[token][0])
        row = {
            "id": self.next_comment,
            "type": "Comment",
            "author_id": self.actor,
            "body": comment.get("body"),
            "plain_body": comment.get("body"),
            "public": bool(comment.get("public", True)),
            "attachments": atts,
            "created_at": self.clock.now().strftime("%Y-%m-%dT%H:%M:%SZ"),
        }
        self.next_comment += 1
        self.comments[ticket["id"]].append(row)
        return {"id": row["id"], "type": "Comment", "body": row["body"], "public": row["public"]}

    def count_update(self, tid: int) -> None:
        """Zendesk's per-ticket limit: 30 updates per 10 minutes, else 429 with Retry-After."""
        now = self.clock.time()
        times = [t for t in self.update_times.get(tid, []) if t > now - 600]
        if len(times) >= 30:
            raise HttpError(
                429,
                {"error": "TooManyRequests", "description": "Ticket update rate limit"},
                {"Retry-After": str(int(times[0] + 600 - now) + 1)},
            )
        self.update_times[tid] = [*times, now]

    # --- scripted activity ----------------------------------------------------------------------------
    def human_update(self, tid: int, by: int = 2, **body: Any) -> None:
        previous, self.actor = self.actor, by
        try:
            ticket = self.ticket(tid)
            self.apply(ticket, body)
            ticket["updated_at"] = self.now()
        finally:
            self.actor = previous

    def human_ticket(self, subject: str, by: int = 2, channel: str = "web", **body: Any) -> int:
        """A ticket someone else opened (an agent in the web interface, a customer by e-mail)."""
        previous, self.actor, self._channel = self.actor, by, channel
        try:
            body = {"subject": subject, "comment": {"body": subject}, **body}
            return self.create_ticket(
                Call("POST", "", "", {}, {}, json.dumps({"ticket": body}).encode())
            ).body["ticket"]["id"]
        finally:
            self.actor = previous
            del self._channel

    def human_attach(self, tid: int, name: str, data: bytes, by: int = 2) -> int:
        token = self._store(name, data, "image/jpeg")
        self.human_update(tid, by=by, comment={"body": "Photo attached", "public": True, "uploads": [token]})
        return self.blobs[token][0]["id"]

    def signed(self, body: dict[str, Any], secret: str, *, age: float = 0) -> tuple[dict[str, str], bytes]:
        raw = json.dumps(body).encode()
        stamp = datetime.fromtimestamp(self.clock.time() - age).astimezone().isoformat()
        sig = base64.b64encode(
            hmac.new(secret.encode(), stamp.encode() + raw, hashlib.sha256).digest()
        ).decode()
        return {"X-Zendesk-Webhook-Signature": sig, "X-Zendesk-Webhook-Signature-Timestamp": stamp}, raw

    # --- routes ------------------------------------------------------------------------------------------
    def get_ticket(self, call: Call, tid: str) -> dict[str, Any]:
        return {"ticket": self.ticket(tid)}

    def create_ticket(self, call: Call) -> Reply:
        body = call.json()["ticket"]
        if "comment" not in body:
            raise invalid("description", "Description: cannot be blank")
        tid = self.next_id
        now = self.now()
        requester = self.user_by_email(body["requester"]["email"]) if body.get("requester") else self.actor
        ticket = {
            "id": tid,
            "url": f"{self.host}/api/v2/tickets/{tid}.json",
            "subject": "",
            "description": "",
            "status": "new",
            "priority": None,
            "type": None,
            "tags": [],
            "assignee_id": None,
            "requester_id": requester,
            "submitter_id": requester if self.submitter_is_requester else self.actor,
            "due_at": None,
            "group_id": 360,
            "custom_fields": [{"id": 77, "value": None}],
            "created_at": now,
            "updated_at": now,
            "via": {"channel": getattr(self, "_channel", "api")},
        }
        self.tickets[tid] = ticket
        self.comments[tid] = []
        self.next_id += 1
        try:
            events = self.apply(ticket, body)
        except HttpError:
            del self.tickets[tid]
            raise
        ticket["description"] = body["comment"].get("body")
        if ticket["status"] == "new" and ticket["assignee_id"]:
            ticket["status"] = "open"
        self.update_times[tid] = [self.clock.time()]
        return Reply(201, {"ticket": ticket, "audit": {"id": 1, "events": events}})

    def list_tickets(self, call: Call) -> dict[str, Any]:
        sort_by, order = call.query.get("sort_by", "id"), call.query.get("sort_order", "asc")
        sortable = {"id", "created_at", "updated_at", "subject", "status"}
        if sort_by not in sortable or order not in {"asc", "desc"}:
            raise HttpError(
                400, {"error": "InvalidPaginationParameter", "description": "sort_by or sort_order"}
            )
        per_page, page = int(call.query.get("per_page", 100)), int(call.query.get("page", 1))
        if not 1 <= per_page <= 100 or page < 1:
            raise HttpError(400, {"error": "InvalidPaginationParameter", "description": "per_page or page"})
        rows = sorted(self.tickets.values(), key=lambda t: -t["id"])  # equal times: order left open
        rows.sort(key=lambda t: t[sort_by], reverse=order == "desc")
        chunk = rows[(page - 1) * per_page : page * per_page]
        base = f"{self.host}/api/v2/tickets.json?"
        return {
            "tickets": chunk,
            "next_page": base + urlencode({**call.query, "page": page + 1})
            if page * per_page < len(rows)
            else None,
            "previous_page": base + urlencode({**call.query, "page": page - 1}) if page > 1 else None,
            "count": len(rows),
        }

    def update_ticket(self, call: Call, tid: str) -> dict[str, Any]:
        ticket = self.ticket(tid)
        self.count_update(ticket["id"])
        events = self.apply(ticket, call.json()["ticket"])
        ticket["updated_at"] = self.now()
        return {
            "ticket": ticket,
            "audit": {"id": 2, "ticket_id": ticket["id"], "author_id": self.actor, "events": events},
        }

    def list_comments(self, call: Call, tid: str) -> dict[str, Any]:
        rows = self.comments[self.ticket(tid)["id"]]
        size = int(call.query.get("page[size]", 100))
        start = int(call.query.get("page[after]", 0))
        page = rows[start : start + size]
        more = start + size < len(rows)
        links = {
            "next": f"{self.host}/api/v2/tickets/{tid}/comments.json?"
            + urlencode({"page[size]": size, "page[after]": start + size})
            if more
            else None
        }
        return {
            "comments": page,
            "meta": {"has_more": more, "after_cursor": str(start + size)},
            "links": links,
        }

    def _find_comment(self, tid: str, cid: str) -> dict[str, Any]:
        for row in self.comments[self.ticket(tid)["id"]]:
            if row["id"] == int(cid):
                return row
        raise HttpError(404, {"error": "RecordNotFound", "description": "Not found"})

    def redact(self, call: Call, tid: str, cid: str) -> dict[str, Any]:
        row = self._find_comment(tid, cid)
        text = call.json().get("text") or ""
        if text not in (row["body"] or ""):
            raise invalid("text", "Text to redact was not found in the comment")
        row["body"] = row["plain_body"] = row["body"].replace(text, "▇" * len(text))
        return {"comment": row}

    def redact_attachment(self, call: Call, tid: str, cid: str, aid: str) -> dict[str, Any]:
        row = self._find_comment(tid, cid)
        for att in row["attachments"]:
            if att["id"] == int(aid):
                att.update(file_name="redacted.txt", size=0, content_type="text/plain")
                return {"attachment": att}
        raise HttpError(404, {"error": "RecordNotFound", "description": "Not found"})

    def _store(self, name: str, data: bytes, ctype: str) -> str:
        token = secrets.token_hex(12)
        att = {
            "id": self.next_att,
            "file_name": name,
            "content_type": ctype,
            "size": len(data),
            "content_url": f"{self.host}/attachments/token/{token}/?name={name}",
        }
        self.next_att += 1
        self.blobs[token] = (att, data)
        return token

    def upload(self, call: Call) -> Reply:
        if not call.query.get("filename"):
            raise invalid("filename", "filename is required")
        token = self._store(call.query["filename"], call.body, call.headers.get("Content-Type", ""))
        att = self.blobs[token][0]
        return Reply(
            201,
            {
                "upload": {
                    "token": token,
                    "expires_at": "2026-12-31T00:00:00Z",
                    "attachment": att,
                    "attachments": [att],
                }
            },
        )

    def get_attachment(self, call: Call, aid: str) -> dict[str, Any]:
        for att, _ in self.blobs.values():
            if att["id"] == int(aid):
                return {"attachment": att}
        raise HttpError(404, {"error": "RecordNotFound", "description": "Not found"})

    def download(self, call: Call, token: str) -> Reply:
        if token not in self.blobs:
            raise HttpError(404, "Not found")
        att, data = self.blobs[token]
        return Reply(
            200, b"" if att["file_name"] == "redacted.txt" else data, {"Content-Type": att["content_type"]}
        )

    def show_many(self, call: Call) -> dict[str, Any]:
        ids = [int(i) for i in call.query["ids"].split(",")]
        if len(ids) > 100:
            raise HttpError(400, {"error": "TooManyIds"})
        return {"users": [self.users[i] for i in ids if i in self.users]}

    def list_users(self, call: Call) -> dict[str, Any]:
        rows = [u for u in self.users.values() if u["role"] in ("agent", "admin")]
        return {"users": rows, "meta": {"has_more": False}, "links": {"next": None}}

    def search(self, call: Call) -> dict[str, Any]:
        query = call.query.get("query", "")
        if query.count('"') % 2:
            raise HttpError(
                400, {"error": "InvalidSearch", "description": "The search has an unbalanced double quote."}
            )
        per_page, page = min(int(call.query.get("per_page", 100)), 100), int(call.query.get("page", 1))
        if page * per_page > 1000:
            raise HttpError(
                422,
                {
                    "error": "InsufficientResource",
                    "description": "Search results are limited to 1000 per query.",
                },
            )
        preds = [
            self.search_term(t) for t in re.findall(r'-?[a-z_]+(?::|<=|>=|<|>)"[^"]*"|"[^"]*"|\S+', query)
        ]
        if not any(t.startswith("type:ticket") for t in query.split()):
            rows: list[dict[str, Any]] = []  # the fake keeps tickets only
        else:
            rows = [t for t in self.tickets.values() if all(p(t) for p in preds)]
        field = call.query.get("sort_by", "relevance")
        if field in ("created_at", "updated_at"):
            rows.sort(key=lambda t: -t["id"])  # Zendesk leaves the order of equal times open
            rows.sort(key=lambda t: t[field], reverse=call.query.get("sort_order", "desc") == "desc")
        chunk = rows[(page - 1) * per_page : page * per_page]
        more = page * per_page < len(rows)
        base = f"{self.host}/api/v2/search.json?"
        return {
            "results": [{**t, "result_type": "ticket"} for t in chunk],
            "facets": None,
            "next_page": base + urlencode({**call.query, "page": page + 1}) if more else None,
            "previous_page": base + urlencode({**call.query, "page": page - 1}) if page > 1 else None,
            "count": len(rows),
        }

    def search_term(self, token: str) -> Any:
        negate = token.startswith("-")
        match = re.fullmatch(r'-?([a-z_]+)(:|<=|>=|<|>)("?)(.*)\3', token)
        name, op, value = (match.group(1), match.group(2), match.group(4).lower()) if match else ("", "", "")

        def test(ticket: dict[str, Any]) -> bool:
            if name == "type":
                return True
            if name in ("status", "priority"):
                order = list(STATUSES if name == "status" else PRIORITIES)
                have = ticket[name]
                if have is None or value not in order:
                    return value == "none" and have is None
                a, b = order.index(have), order.index(value)
                return {":": a == b, "<": a < b, ">": a > b, "<=": a <= b, ">=": a >= b}[op]
            if name == "ticket_type":
                return (ticket["type"] or "none") == value
            if name == "tags":
                return value in [t.lower() for t in ticket["tags"]]
            if name in ("assignee", "requester"):
                uid = ticket["assignee_id" if name == "assignee" else "requester_id"]
                if value == "none":
                    return uid is None
                return uid is not None and value in (self.users[uid]["email"].lower(), str(uid))
            if name == "created":
                have = ticket["created_at"] if "t" in value else ticket["created_at"][:10]
                want = value.upper() if "t" in value else value
                return {
                    ":": have == want,
                    "<": have < want,
                    ">": have > want,
                    "<=": have <= want,
                    ">=": have >= want,
                }[op]
            text = token.lstrip("-").strip('"').lower()  # words (and unknown keywords) are searched as text
            return text in f"{ticket['subject']} {ticket['description']}".lower()

        return (lambda t: not test(t)) if negate else test

    def export(self, call: Call) -> dict[str, Any]:
        def key(t: dict[str, Any]) -> tuple[str, int]:
            return (t["updated_at"], t["id"])

        if "cursor" in call.query:
            after = tuple(json.loads(base64.b64decode(call.query["cursor"])))
            rows = [t for t in self.tickets.values() if key(t) > after]
        elif "start_time" in call.query:
            start = int(call.query["start_time"])
            if start > self.clock.time() - 60:
                raise HttpError(
                    422,
                    {
                        "error": "InvalidValue",
                        "description": "Too recent start_time. Use a start_time older than 1 minute.",
                    },
                )
            rows = [
                t
                for t in self.tickets.values()
                if datetime.fromisoformat(t["updated_at"].replace("Z", "+00:00")).timestamp() >= start
            ]
        else:
            raise HttpError(400, {"error": "InvalidValue", "description": "start_time or cursor is required"})
        rows.sort(key=key)
        page = rows[: self.page_size]
        end = len(rows) <= self.page_size
        last = key(page[-1]) if page else (after if "cursor" in call.query else ("", 0))  # type: ignore[possibly-undefined]
        if not page and "start_time" in call.query:
            last = (datetime.fromtimestamp(int(call.query["start_time"])).strftime("%Y-%m-%dT%H:%M:%SZ"), 0)
        cursor = base64.b64encode(json.dumps(list(last)).encode()).decode()
        return {
            "tickets": page,
            "after_cursor": cursor,
            "before_cursor": None,
            "end_of_stream": end,
            "after_url": f"{self.host}/api/v2/incremental/tickets/cursor.json?cursor={cursor}",
        }
