"""A fake ServiceNow instance (Table API and Attachment API), built from ServiceNow's REST API reference
(no official machine-readable description exists; the facts relied on are listed in
``tests/connectors2/test_servicenow.py`` and ``tests/connectors2/test_queries.py``).

``sysparm_query`` is evaluated for a subset of encoded queries: ``^`` (AND), ``^OR``, ``^NQ``, ``ORDERBY``/
``ORDERBYDESC``, and the operators in ``FakeServiceNow.OPERATORS``; like ServiceNow with its default
``glide.invalid_query.returns_no_rows=false``, a condition on an unknown field is ignored."""

from __future__ import annotations

import base64
import hashlib
import json
import re
import uuid
from typing import Any

from tests.connectors2.fakes.base import Call, FakeClock, FakeServer, HttpError, Reply

STATE = {"1": "New", "2": "In Progress", "3": "On Hold", "6": "Resolved", "7": "Closed", "8": "Canceled"}
PRIORITY = {"1": "1 - Critical", "2": "2 - High", "3": "3 - Moderate", "4": "4 - Low", "5": "5 - Planning"}
CATEGORY = {"inquiry": "Inquiry / Help", "software": "Software", "hardware": "Hardware", "network": "Network"}
# The default priority lookup: (impact, urgency) → priority
LOOKUP = {
    ("1", "1"): "1",
    ("1", "2"): "2",
    ("2", "1"): "2",
    ("1", "3"): "3",
    ("2", "2"): "3",
    ("3", "1"): "3",
    ("2", "3"): "4",
    ("3", "2"): "4",
    ("3", "3"): "5",
}
CHOICES = {"state": STATE, "priority": PRIORITY, "category": CATEGORY}
REFERENCES = {"assigned_to", "caller_id", "opened_by"}


def sid() -> str:
    return uuid.uuid4().hex


class FakeServiceNow(FakeServer):
    host = "https://acme.service-now.com"
    username, password = "exalate.node", "sn-pass-123"
    token = "oauth-token-123"

    def __init__(self, clock: FakeClock | None = None) -> None:
        super().__init__(clock)
        self.users: dict[str, dict[str, Any]] = {}
        for user_name, name, email in (
            ("exalate.node", "Exalate Node", "node@acme.example"),
            ("ed.agent", "Ed Agent", "ed@acme.example"),
            ("abel.tuter", "Abel Tuter", "abel@customer.example"),
        ):
            uid = sid()
            self.users[uid] = {
                "sys_id": uid,
                "user_name": user_name,
                "name": name,
                "email": email,
                "active": "true",
            }
        self.tables: dict[str, dict[str, dict[str, Any]]] = {"incident": {}, "sys_journal_field": {}}
        self.attachments: dict[str, tuple[dict[str, Any], bytes]] = {}
        self.actor = "exalate.node"
        self.next_number = 10001
        self.route("GET", r"/api/now/table/(?P<table>\w+)", self.list_table)
        self.route("POST", r"/api/now/table/(?P<table>\w+)", self.insert)
        self.route("GET", r"/api/now/table/(?P<table>\w+)/(?P<rid>[0-9a-f]{32})", self.get_record)
        self.route("PATCH", r"/api/now/table/(?P<table>\w+)/(?P<rid>[0-9a-f]{32})", self.update)
        self.route("DELETE", r"/api/now/table/(?P<table>\w+)/(?P<rid>[0-9a-f]{32})", self.delete)
        self.route("POST", r"/api/now/attachment/file", self.upload)
        self.route("GET", r"/api/now/attachment", self.list_attachments)
        self.route("GET", r"/api/now/attachment/(?P<aid>[0-9a-f]{32})/file", self.download)
        self.route("DELETE", r"/api/now/attachment/(?P<aid>[0-9a-f]{32})", self.delete_attachment)

    # --- plumbing ----------------------------------------------------------------------------------------
    def authorize(self, call: Call) -> None:
        basic = "Basic " + base64.b64encode(f"{self.username}:{self.password}".encode()).decode()
        if call.headers.get("Authorization") not in (basic, f"Bearer {self.token}"):
            raise HttpError(
                401,
                {
                    "error": {
                        "message": "User Not Authenticated",
                        "detail": "Required to provide Auth information",
                    },
                    "status": "failure",
                },
            )

    def user_id(self, user_name: str) -> str:
        return next(u["sys_id"] for u in self.users.values() if u["user_name"] == user_name)

    def now(self) -> str:
        self.clock.advance(1)
        return self.clock.now().strftime("%Y-%m-%d %H:%M:%S")

    def rows(self, table: str) -> dict[str, dict[str, Any]]:
        if table == "sys_user":
            return self.users
        if table == "sys_choice":
            return {
                f"{el}:{v}": {
                    "name": "incident",
                    "element": el,
                    "value": v,
                    "label": lab,
                    "inactive": "false",
                    "sequence": v,
                }
                for el, ch in CHOICES.items()
                for v, lab in ch.items()
            }
        if table not in self.tables:
            raise HttpError(
                400, {"error": {"message": "Invalid table", "detail": table}, "status": "failure"}
            )
        return self.tables[table]

    def display(self, table: str, field: str, value: Any) -> Any:
        if table == "incident" and field in CHOICES:
            return CHOICES[field].get(str(value), value)
        if field in REFERENCES and value:
            return self.users.get(value, {}).get("name", value)
        return value

    def render(self, table: str, row: dict[str, Any], call: Call) -> dict[str, Any]:
        fields = call.query.get("sysparm_fields")
        names = fields.split(",") if fields else list(row)
        mode = call.query.get("sysparm_display_value", "false")
        out: dict[str, Any] = {}
        for name in names:
            value = row.get(name, "")
            if mode == "all":
                out[name] = {"value": value, "display_value": self.display(table, name, value)}
            elif mode == "true":
                out[name] = self.display(table, name, value)
            else:
                out[name] = value
        return out

    # Encoded query operators the fake evaluates (ServiceNow's operators are upper case, field names lower).
    OPERATORS = (
        "ISNOTEMPTY", "ISEMPTY", "NOT LIKE", "NOT IN", "STARTSWITH", "ENDSWITH", "LIKE", "IN",
        ">=", "<=", "!=", ">", "<", "=",
    )  # fmt: skip

    @classmethod
    def term(cls, row: dict[str, Any], cond: str) -> bool:
        m = re.match(r"([a-z0-9_]+)(.*)$", cond)
        if not m:
            return True
        field, rest = m.groups()
        op = next((o for o in cls.OPERATORS if rest.startswith(o)), None)
        if op is None or (field not in row and field not in ("element_id", "table_sys_id")):
            return True  # an unknown field (or operator) is ignored, as ServiceNow does by default
        value, actual = rest[len(op) :], str(row.get(field, ""))
        if op == "ISNOTEMPTY":
            return bool(actual)
        if op == "ISEMPTY":
            return not actual
        if op in ("LIKE", "NOT LIKE"):
            return (value.lower() in actual.lower()) == (op == "LIKE")
        if op == "STARTSWITH":
            return actual.lower().startswith(value.lower())
        if op == "ENDSWITH":
            return actual.lower().endswith(value.lower())
        if op in ("IN", "NOT IN"):
            return (actual in value.split(",")) == (op == "IN")
        return {
            ">=": actual >= value,
            "<=": actual <= value,
            "!=": actual != value,
            ">": actual > value,
            "<": actual < value,
            "=": actual == value,
        }[op]

    @classmethod
    def matches(cls, row: dict[str, Any], query: str) -> tuple[bool, list[tuple[str, bool]]]:
        """``^`` is AND, ``^OR`` binds tighter (ORs the next condition with the previous one), ``^NQ`` starts
        another query whose rows are added; ``ORDERBY``/``ORDERBYDESC`` give the order."""
        order: list[tuple[str, bool]] = []
        any_group = False
        for group in query.split("^NQ"):
            clauses: list[list[str]] = []
            for cond in filter(None, group.split("^")):
                if cond.startswith("ORDERBYDESC"):
                    order.append((cond[len("ORDERBYDESC") :], True))
                elif cond.startswith("ORDERBY"):
                    order.append((cond[len("ORDERBY") :], False))
                elif cond.startswith("OR") and clauses:
                    clauses[-1].append(cond[2:])
                elif cond != "EQ":
                    clauses.append([cond])
            any_group |= all(any(cls.term(row, c) for c in alts) for alts in clauses)
        return any_group, order

    def select(self, rows: list[dict[str, Any]], query: str) -> list[dict[str, Any]]:
        hits = [r for r in rows if self.matches(r, query)[0]]
        for field, desc in reversed(self.matches({}, query)[1]):
            hits.sort(key=lambda r: str(r.get(field, "")), reverse=desc)
        return hits

    # --- records -------------------------------------------------------------------------------------------
    def list_table(self, call: Call, table: str) -> Reply:
        rows = self.select(list(self.rows(table).values()), call.query.get("sysparm_query", ""))
        offset, limit = int(call.query.get("sysparm_offset", 0)), int(call.query.get("sysparm_limit", 10000))
        page = rows[offset : offset + limit]
        return Reply(
            200, {"result": [self.render(table, r, call) for r in page]}, {"X-Total-Count": str(len(rows))}
        )

    def record(self, table: str, rid: str) -> dict[str, Any]:
        row = self.rows(table).get(rid)
        if row is None:
            raise HttpError(
                404,
                {
                    "error": {
                        "message": "No Record found",
                        "detail": "Record doesn't exist or ACL restricts the record retrieval",
                    },
                    "status": "failure",
                },
            )
        return row

    def get_record(self, call: Call, table: str, rid: str) -> dict[str, Any]:
        return {"result": self.render(table, self.record(table, rid), call)}

    def apply(self, row: dict[str, Any], body: dict[str, Any]) -> None:
        journal = {k: body.pop(k) for k in ("comments", "work_notes") if k in body}
        for key, value in body.items():
            if (
                key in row
                or key.startswith("u_")
                or key in ("close_code", "close_notes", "category", "due_date")
            ):
                row[key] = value  # unknown fields are ignored silently, as the Table API does
        if "state" in row:
            row["active"] = "false" if str(row["state"]) in ("6", "7", "8") else "true"
        if "impact" in body or "urgency" in body:
            row["priority"] = LOOKUP.get((str(row.get("impact")), str(row.get("urgency"))), row["priority"])
        if str(row.get("state")) in ("6", "7"):
            missing = [
                label
                for field, label in (("close_code", "Resolution code"), ("close_notes", "Resolution notes"))
                if not row.get(field)
            ]
            if missing:
                raise HttpError(
                    403,
                    {
                        "error": {
                            "message": "Operation Failed",
                            "detail": f"Data Policy Exception: \n\tThe following fields are "
                            f"mandatory: {', '.join(missing)}\n",
                        },
                        "status": "failure",
                    },
                )
        now = self.now()
        for element, text in journal.items():
            if str(text).strip():
                jid = sid()
                self.tables["sys_journal_field"][jid] = {
                    "sys_id": jid,
                    "element": element,
                    "element_id": row["sys_id"],
                    "name": "incident",
                    "value": text,
                    "sys_created_on": now,
                    "sys_created_by": self.actor,
                }
        row["sys_updated_on"] = now
        row["sys_updated_by"] = self.actor
        row["sys_mod_count"] = str(int(row.get("sys_mod_count", "-1")) + 1)

    def insert(self, call: Call, table: str) -> Reply:
        if table != "incident":
            raise HttpError(
                403, {"error": {"message": "Operation Failed", "detail": "ACL"}, "status": "failure"}
            )
        rid = sid()
        now = self.clock.now().strftime("%Y-%m-%d %H:%M:%S")
        row = {
            "sys_id": rid,
            "number": f"INC{self.next_number:07d}",
            "short_description": "",
            "description": "",
            "state": "1",
            "active": "true",
            "impact": "3",
            "urgency": "3",
            "priority": "5",
            "category": "inquiry",
            "assigned_to": "",
            "caller_id": self.user_id(self.actor),
            "opened_by": self.user_id(self.actor),
            "due_date": "",
            "close_code": "",
            "close_notes": "",
            "u_customer": "",
            "parent": "",
            "sys_created_on": now,
            "sys_created_by": self.actor,
        }
        self.apply(row, dict(call.json()))  # a refusal leaves nothing behind: the row is not stored yet
        self.next_number += 1
        self.tables["incident"][rid] = row
        return Reply(201, {"result": self.render(table, row, call)})

    def update(self, call: Call, table: str, rid: str) -> dict[str, Any]:
        row = self.record(table, rid)
        if table == "sys_journal_field":
            if self.actor != "exalate.node" or not self.admin:
                raise HttpError(
                    403, {"error": {"message": "Operation Failed", "detail": "ACL"}, "status": "failure"}
                )
            row["value"] = call.json()["value"]
            return {"result": row}
        before = dict(row)
        try:
            self.apply(row, dict(call.json()))
        except HttpError:
            row.clear()
            row.update(before)
            raise
        return {"result": self.render(table, row, call)}

    admin = True  # whether the integration user may change sys_journal_field rows

    def delete(self, call: Call, table: str, rid: str) -> Reply:
        self.record(table, rid)
        if table == "sys_journal_field" and not self.admin:
            raise HttpError(
                403, {"error": {"message": "Operation Failed", "detail": "ACL"}, "status": "failure"}
            )
        del self.rows(table)[rid]
        return Reply(204, None)

    # --- scripted activity -------------------------------------------------------------------------------
    def human_update(self, rid: str, by: str = "ed.agent", **body: Any) -> None:
        previous, self.actor = self.actor, by
        try:
            self.apply(self.tables["incident"][rid], body)
        finally:
            self.actor = previous

    def human_create(self, short_description: str, by: str = "ed.agent", **body: Any) -> str:
        """A record someone else opened (``sys_created_by`` is their ``user_name``)."""
        previous, self.actor = self.actor, by
        try:
            call = Call(
                "POST", "", "", {}, {}, json.dumps({"short_description": short_description, **body}).encode()
            )
            return self.insert(call, "incident").body["result"]["sys_id"]
        finally:
            self.actor = previous

    def human_attach(self, rid: str, name: str, data: bytes, by: str = "ed.agent") -> str:
        aid = sid()
        self.attachments[aid] = (
            {
                "sys_id": aid,
                "file_name": name,
                "content_type": "image/jpeg",
                "size_bytes": str(len(data)),
                "hash": hashlib.sha256(data).hexdigest(),
                "table_name": "incident",
                "table_sys_id": rid,
                "sys_created_on": self.now(),
                "sys_created_by": by,
            },
            data,
        )
        return aid

    # --- attachments ---------------------------------------------------------------------------------------
    def upload(self, call: Call) -> Reply:
        q = call.query
        for name in ("table_name", "table_sys_id", "file_name"):
            if not q.get(name):
                raise HttpError(
                    400,
                    {"error": {"message": f"Missing parameter: {name}", "detail": ""}, "status": "failure"},
                )
        self.record(q["table_name"], q["table_sys_id"])
        aid = sid()
        meta = {
            "sys_id": aid,
            "file_name": q["file_name"],
            "content_type": call.headers.get("Content-Type"),
            "size_bytes": str(len(call.body)),
            "hash": hashlib.sha256(call.body).hexdigest(),
            "table_name": q["table_name"],
            "table_sys_id": q["table_sys_id"],
            "sys_created_on": self.now(),
            "sys_created_by": self.actor,
            "download_link": f"{self.host}/api/now/attachment/{aid}/file",
        }
        self.attachments[aid] = (meta, call.body)
        return Reply(201, {"result": meta})

    def list_attachments(self, call: Call) -> dict[str, Any]:
        rows = self.select([m for m, _ in self.attachments.values()], call.query.get("sysparm_query", ""))
        return {"result": rows}

    def download(self, call: Call, aid: str) -> Reply:
        if aid not in self.attachments:
            raise HttpError(
                404, {"error": {"message": "Record doesn't exist", "detail": ""}, "status": "failure"}
            )
        meta, data = self.attachments[aid]
        return Reply(200, data, {"Content-Type": meta["content_type"] or "application/octet-stream"})

    def delete_attachment(self, call: Call, aid: str) -> Reply:
        if aid not in self.attachments:
            raise HttpError(
                404, {"error": {"message": "Record doesn't exist", "detail": ""}, "status": "failure"}
            )
        del self.attachments[aid]
        return Reply(204, None)
