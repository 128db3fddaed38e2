"""A fake Azure DevOps organization (Work Item Tracking 7.2), checked against the published description.

Every request the connector makes is validated against ``specs/azure-devops-wit-7.2-workItemTracking.json``
before it is answered, and every JSON reply of the fake is validated against the same description (see
``tests/connectors2/swagger.py``), so the fake cannot drift from the contract on the shapes it covers.

Behaviour modelled on Azure DevOps Services (documented, or observed by the REST reference's examples):
work items have a ``rev`` that every change (fields, relations, comments) increments, with
``System.ChangedDate``/``System.ChangedBy``; JSON Patch bodies (``application/json-patch+json``) with a
``test`` on ``/rev`` fail with 412 when the revision is stale; unknown fields give 400 (TF51535), a state
the type does not have gives 400; collections come as ``{count, value}``; WIQL compares dates only unless
``timePrecision=true``; WIQL conditions are evaluated by ``Wiql`` (a subset: ``[Field] op value`` with
``= <> > < >= <= CONTAINS, NOT CONTAINS, IN, NOT IN``, AND/OR/NOT and parentheses, ``@project``, ``@Me``,
``ORDER BY`` with ``ASC``/``DESC``; date fields by date, or by time with ``timePrecision``;
unknown fields and syntax errors answer 400 with Azure DevOps' TF51005/TF51006 messages); attachments are
uploaded first and linked by an ``AttachedFile`` relation; comments are separate resources
(``comments?format=markdown``) and deleted ones are flagged ``isDeleted``.
"""

from __future__ import annotations

import base64
import json
import re
import uuid
from datetime import UTC, date, datetime
from typing import Any
from urllib.parse import unquote

from requests.structures import CaseInsensitiveDict

from tests.connectors2.fakes.base import Call, FakeClock, FakeServer, HttpError, Reply
from tests.connectors2.swagger import SwaggerContract

CONTRACT: SwaggerContract | None = None


def contract() -> SwaggerContract:
    global CONTRACT
    if CONTRACT is None:
        CONTRACT = SwaggerContract("azure-devops-wit-7.2-workItemTracking.json")
    return CONTRACT


STATES = {
    "Task": ["New", "Active", "Resolved", "Closed", "Removed"],
    "Bug": ["New", "Active", "Resolved", "Closed"],
}
KNOWN_FIELDS = {
    "System.Title",
    "System.Description",
    "System.State",
    "System.Reason",
    "System.WorkItemType",
    "System.Tags",
    "System.AssignedTo",
    "System.AreaPath",
    "System.History",
    "Microsoft.VSTS.Common.Priority",
    "Microsoft.VSTS.Scheduling.DueDate",
}
READ_ONLY = {"System.CreatedBy", "System.CreatedDate", "System.ChangedBy", "System.ChangedDate", "System.Rev"}


class FakeAzureDevOps(FakeServer):
    host = "https://dev.azure.com"
    org = "acme"
    project = "Demo"
    pat = "pat-secret-123"

    def __init__(self, clock: FakeClock | None = None) -> None:
        super().__init__(clock)
        self.items: dict[int, dict[str, Any]] = {}
        self.comments: dict[int, list[dict[str, Any]]] = {}
        self.blobs: dict[str, tuple[str, bytes, str]] = {}
        self.next_id = 1
        self.next_comment = 100
        self.custom_fields = {"Custom.Severity"}
        self.node_identity = {"displayName": "Exalate Node", "uniqueName": "node@acme.example", "id": "n-1"}
        self.actor = self.node_identity  # who the next write is made by (tests switch to a person)
        self.validate = True
        self.interfere = 0  # the next N PATCHes find that a person saved the item just before
        base = rf"/{self.org}/(?P<project>[^/]+)/_apis/wit"
        self.route("POST", base + r"/workitems/\$(?P<wtype>[^/]+)", self.create)
        self.route("GET", base + r"/workitems/(?P<wid>\d+)", self.get)
        self.route("PATCH", base + r"/workitems/(?P<wid>\d+)", self.patch)
        self.route("GET", base + r"/workitems", self.batch)
        self.route("POST", rf"/{self.org}/(?P<project>[^/]+)/(?P<team>[^/]+)/_apis/wit/wiql", self.wiql)
        self.route("GET", base + r"/workItems/(?P<wid>\d+)/comments", self.list_comments)
        self.route("POST", base + r"/workItems/(?P<wid>\d+)/comments", self.add_comment)
        self.route("PATCH", base + r"/workItems/(?P<wid>\d+)/comments/(?P<cid>\d+)", self.edit_comment)
        self.route("DELETE", base + r"/workItems/(?P<wid>\d+)/comments/(?P<cid>\d+)", self.delete_comment)
        self.route("POST", base + r"/attachments", self.upload)
        self.route("GET", base + r"/attachments/(?P<aid>[0-9a-f-]+)", self.download)
        self.route("GET", base + r"/workitemtypes", self.types)
        self.route("GET", base + r"/workitemtypes/(?P<wtype>[^/]+)/states", self.states)

    @property
    def base_url(self) -> str:
        return f"{self.host}/{self.org}"

    # --- contract --------------------------------------------------------------------------------------
    def authorize(self, call: Call) -> None:
        expected = "Basic " + base64.b64encode(f":{self.pat}".encode()).decode()
        if call.headers.get("Authorization") != expected:
            raise HttpError(401, {"message": "TF400813: The user is not authorized to access this resource."})

    def check_request(self, call: Call) -> None:
        if self.validate:
            call.operation = contract().check_request(  # type: ignore[attr-defined]
                call.method, call.path, call.query, dict(call.headers), call.body
            )

    def check_response(self, call: Call, reply: Reply) -> None:
        if self.validate and getattr(call, "operation", None) is not None:
            contract().check_response(call.operation, reply.status, reply.body)  # type: ignore[attr-defined]

    # --- helpers ---------------------------------------------------------------------------------------
    def now(self) -> str:
        self.clock.advance(0.001)  # every write gets its own ChangedDate, as in Azure DevOps
        return self.clock.iso()

    def identity(self, value: str) -> dict[str, Any]:
        if value == self.node_identity["uniqueName"]:
            return dict(self.node_identity)
        return {"displayName": value.split("@")[0].title(), "uniqueName": value, "id": f"id-{value}"}

    def item(self, wid: Any) -> dict[str, Any]:
        item = self.items.get(int(wid))
        if item is None:
            raise HttpError(
                404,
                {
                    "message": f"TF401232: Work item {wid} does not exist, or you do not "
                    "have permissions to read it.",
                    "typeKey": "WorkItemUnauthorizedAccessException",
                },
            )
        return item

    def touch(self, item: dict[str, Any]) -> None:
        item["rev"] += 1
        item["fields"]["System.Rev"] = item["rev"]
        item["fields"]["System.ChangedDate"] = self.now()
        item["fields"]["System.ChangedBy"] = dict(self.actor)

    def view(self, item: dict[str, Any], *, relations: bool = True, fields: list[str] | None = None) -> dict:
        out: dict[str, Any] = {
            "id": item["id"],
            "rev": item["rev"],
            "fields": {k: v for k, v in item["fields"].items() if fields is None or k in fields},
            "url": f"{self.base_url}/_apis/wit/workItems/{item['id']}",
        }
        if relations and fields is None and item["relations"]:
            out["relations"] = [dict(r) for r in item["relations"]]
        return out

    def apply_ops(self, item: dict[str, Any], ops: list[dict[str, Any]]) -> None:
        for op in ops:
            path = op.get("path", "")
            if op["op"] == "test":
                if path == "/rev" and int(op.get("value")) != item["rev"]:
                    raise HttpError(
                        412,
                        {
                            "message": f"TF26071: This work item has been changed by someone "
                            f"else since you opened it (rev {item['rev']}, you had {op.get('value')}).",
                            "typeKey": "WorkItemRevisionMismatchException",
                        },
                    )
                continue
            if path.startswith("/fields/"):
                name = path[len("/fields/") :]
                if name in READ_ONLY:
                    raise HttpError(
                        400, {"message": f"TF401326: Invalid field status 'ReadOnly' for field '{name}'."}
                    )
                if name not in KNOWN_FIELDS and name not in self.custom_fields:
                    raise HttpError(
                        400,
                        {
                            "message": f"TF51535: Cannot find field {name}.",
                            "typeKey": "WorkItemFieldInvalidException",
                        },
                    )
                value = op.get("value")
                if op["op"] == "remove" or value in ("", None):
                    item["fields"].pop(name, None)
                    continue
                if name == "System.State" and value not in STATES[item["fields"]["System.WorkItemType"]]:
                    raise HttpError(
                        400,
                        {
                            "message": f"TF401320: Rule Error for field State. Error code: "
                            f"Required, HasValues, LimitedToValues. '{value}' is not allowed."
                        },
                    )
                if name == "Microsoft.VSTS.Common.Priority" and value not in (1, 2, 3, 4):
                    raise HttpError(
                        400, {"message": "TF401320: Rule Error for field Priority: LimitedToValues."}
                    )
                if name == "System.AssignedTo":
                    value = self.identity(str(value))
                if name == "System.Tags":
                    value = "; ".join(sorted({t.strip() for t in str(value).split(";") if t.strip()}))
                item["fields"][name] = value
            elif path == "/relations/-" and op["op"] == "add":
                rel = dict(op["value"])
                if rel["rel"] == "AttachedFile":
                    guid = re.search(r"/attachments/([0-9a-f-]{36})", rel["url"]).group(1)  # type: ignore[union-attr]
                    if guid not in self.blobs:
                        raise HttpError(400, {"message": f"VS402339: Attachment {guid} not found."})
                    name, data, created = self.blobs[guid]
                    rel["attributes"] = {
                        **rel.get("attributes", {}),
                        "name": name,
                        "resourceSize": len(data),
                        "resourceCreatedDate": created,
                        "authorizedDate": created,
                        "id": len(item["relations"]) + 1,
                    }
                item["relations"].append(rel)
            elif path.startswith("/relations/") and op["op"] == "remove":
                index = int(path.rsplit("/", 1)[-1])
                if index >= len(item["relations"]):
                    raise HttpError(400, {"message": f"VS403691: Relation index {index} is out of range."})
                item["relations"].pop(index)
            else:
                raise HttpError(400, {"message": f"VS403662: Unsupported patch operation {op['op']} {path}."})

    # --- scripted changes (a person editing in the web UI) ---------------------------------------------
    def human_edit(self, wid: int, by: str = "pat.person@acme.example", **fields: Any) -> None:
        item = self.item(wid)
        previous, self.actor = self.actor, self.identity(by)
        try:
            self.apply_ops(
                item, [{"op": "add", "path": f"/fields/{k}", "value": v} for k, v in fields.items()]
            )
            self.touch(item)
        finally:
            self.actor = previous

    def human_create(self, title: str, by: str = "pat.person@acme.example", wtype: str = "Task") -> int:
        """A work item created in the web UI by ``by``; its id."""
        previous, self.actor = self.actor, self.identity(by)
        try:
            body = json.dumps([{"op": "add", "path": "/fields/System.Title", "value": title}]).encode()
            item = self.create(Call("POST", "", "", {}, CaseInsensitiveDict(), body), self.project, wtype)
            return item["id"]
        finally:
            self.actor = previous

    def human_comment(self, wid: int, text: str, by: str = "pat.person@acme.example") -> int:
        previous, self.actor = self.actor, self.identity(by)
        try:
            return self._new_comment(self.item(wid), text)["id"]
        finally:
            self.actor = previous

    def human_attach(self, wid: int, name: str, data: bytes, by: str = "pat.person@acme.example") -> str:
        guid = str(uuid.uuid4())
        self.blobs[guid] = (name, data, self.clock.iso())
        previous, self.actor = self.actor, self.identity(by)
        try:
            url = f"{self.base_url}/_apis/wit/attachments/{guid}?fileName={name}"
            self.apply_ops(
                self.item(wid),
                [{"op": "add", "path": "/relations/-", "value": {"rel": "AttachedFile", "url": url}}],
            )
            self.touch(self.item(wid))
        finally:
            self.actor = previous
        return guid

    def service_hook(self, event_type: str, wid: int, *, event_id: str | None = None) -> dict[str, Any]:
        """The body Azure DevOps posts for a ``workitem.*`` event (resource version 1.0)."""
        item = self.item(wid)
        if event_type == "workitem.updated":
            resource = {
                "id": item["rev"],
                "workItemId": wid,
                "rev": item["rev"],
                "fields": {"System.ChangedDate": {"newValue": item["fields"]["System.ChangedDate"]}},
                "revision": self.view(item),
            }
        else:
            resource = self.view(item)
        return {
            "subscriptionId": str(uuid.uuid4()),
            "notificationId": 3,
            "id": event_id or str(uuid.uuid4()),
            "eventType": event_type,
            "publisherId": "tfs",
            "resource": resource,
            "resourceVersion": "1.0",
            "createdDate": self.clock.iso(),
        }

    # --- work items ------------------------------------------------------------------------------------
    def create(self, call: Call, project: str, wtype: str) -> dict[str, Any]:
        wtype = unquote(wtype)
        if wtype not in STATES:
            raise HttpError(404, {"message": f"VS402323: Work item type {wtype} does not exist in project."})
        wid = self.next_id
        now = self.now()
        item = {
            "id": wid,
            "rev": 0,
            "relations": [],
            "fields": {
                "System.Id": wid,
                "System.TeamProject": unquote(project),
                "System.WorkItemType": wtype,
                "System.State": "New",
                "System.CreatedDate": now,
                "System.CreatedBy": dict(self.actor),
                "System.AreaPath": unquote(project),
            },
        }
        self.apply_ops(item, call.json())
        if "System.Title" not in item["fields"]:
            raise HttpError(400, {"message": "TF401320: Rule Error for field Title. Error code: Required."})
        self.next_id += 1
        self.items[wid] = item
        self.comments[wid] = []
        self.touch(item)
        return self.view(item)

    def get(self, call: Call, project: str, wid: str) -> dict[str, Any]:
        item = self.item(wid)
        fields = call.query["fields"].split(",") if call.query.get("fields") else None
        return self.view(item, relations=call.query.get("$expand") in ("relations", "all"), fields=fields)

    def patch(self, call: Call, project: str, wid: str) -> dict[str, Any]:
        item = self.item(wid)
        if self.interfere > 0:
            self.interfere -= 1
            self.human_edit(int(wid), **{"System.History": "edited in the browser meanwhile"})
        saved = (dict(item["fields"]), list(item["relations"]))
        try:
            self.apply_ops(item, call.json())
        except HttpError:
            item["fields"], item["relations"] = saved  # all or nothing
            raise
        self.touch(item)
        return self.view(item)

    def batch(self, call: Call, project: str) -> dict[str, Any]:
        ids = [int(i) for i in call.query["ids"].split(",")]
        if len(ids) > 200:
            raise HttpError(400, {"message": "VS402337: The number of work items requested exceeds 200."})
        fields = call.query["fields"].split(",") if call.query.get("fields") else None
        rows = []
        for wid in ids:
            if wid in self.items:
                rows.append(self.view(self.items[wid], relations=False, fields=fields))
            elif call.query.get("errorPolicy", "").lower() != "omit":
                self.item(wid)
        return {"count": len(rows), "value": rows}

    def wiql(self, call: Call, project: str, team: str) -> dict[str, Any]:
        query = call.json()["query"]
        precise = call.query.get("timePrecision", "").lower() == "true"
        return self.wiql_result(
            Wiql(self, unquote(project), query, precise=precise).run(int(call.query.get("$top", 20000)))
        )

    def wiql_result(self, hits: list[dict[str, Any]]) -> dict[str, Any]:
        return {
            "queryType": "flat",
            "queryResultType": "workItem",
            "asOf": self.clock.iso(),
            "columns": [
                {
                    "referenceName": "System.Id",
                    "name": "ID",
                    "url": f"{self.base_url}/_apis/wit/fields/System.Id",
                }
            ],
            "workItems": [
                {"id": i["id"], "url": f"{self.base_url}/_apis/wit/workItems/{i['id']}"} for i in hits
            ],
        }

    # --- comments --------------------------------------------------------------------------------------
    def _comment_view(self, c: dict[str, Any]) -> dict[str, Any]:
        return {k: v for k, v in c.items() if k != "_item"}

    def _new_comment(self, item: dict[str, Any], text: str) -> dict[str, Any]:
        now = self.now()
        comment = {
            "id": self.next_comment,
            "workItemId": item["id"],
            "version": 1,
            "text": text,
            "createdBy": dict(self.actor),
            "createdDate": now,
            "modifiedBy": dict(self.actor),
            "modifiedDate": now,
            "isDeleted": False,
            "url": f"{self.base_url}/_apis/wit/workItems/{item['id']}/comments/{self.next_comment}",
        }
        self.next_comment += 1
        self.comments[item["id"]].append(comment)
        item["fields"]["System.CommentCount"] = len(
            [c for c in self.comments[item["id"]] if not c["isDeleted"]]
        )
        self.touch(item)
        return comment

    def list_comments(self, call: Call, project: str, wid: str) -> dict[str, Any]:
        item = self.item(wid)
        rows = [
            c
            for c in self.comments[item["id"]]
            if not c["isDeleted"] or call.query.get("includeDeleted") == "true"
        ]
        start = int(call.query.get("continuationToken") or 0)
        top = int(call.query.get("$top") or 200)
        page = rows[start : start + top]
        out = {"totalCount": len(rows), "count": len(page), "comments": [self._comment_view(c) for c in page]}
        if start + top < len(rows):
            out["continuationToken"] = str(start + top)
        return out

    def add_comment(self, call: Call, project: str, wid: str) -> dict[str, Any]:
        text = call.json().get("text")
        if not text:
            raise HttpError(400, {"message": "VS403629: The comment text cannot be empty."})
        return self._comment_view(self._new_comment(self.item(wid), text))

    def _comment(self, wid: str, cid: str) -> dict[str, Any]:
        for c in self.comments.get(int(wid), []):
            if c["id"] == int(cid) and not c["isDeleted"]:
                return c
        raise HttpError(404, {"message": f"VS402625: Comment {cid} does not exist on work item {wid}."})

    def edit_comment(self, call: Call, project: str, wid: str, cid: str) -> dict[str, Any]:
        item, comment = self.item(wid), self._comment(wid, cid)
        comment.update(text=call.json()["text"], version=comment["version"] + 1, modifiedDate=self.now())
        self.touch(item)
        return self._comment_view(comment)

    def delete_comment(self, call: Call, project: str, wid: str, cid: str) -> Reply:
        item, comment = self.item(wid), self._comment(wid, cid)
        comment["isDeleted"] = True
        self.touch(item)
        return Reply(200, None)

    # --- attachments -----------------------------------------------------------------------------------
    def upload(self, call: Call, project: str) -> dict[str, Any]:
        guid = str(uuid.uuid4())
        name = call.query.get("fileName") or "attachment"
        self.blobs[guid] = (name, call.body, self.clock.iso())
        return {"id": guid, "url": f"{self.base_url}/_apis/wit/attachments/{guid}?fileName={name}"}

    def download(self, call: Call, project: str, aid: str) -> Reply:
        if aid not in self.blobs:
            raise HttpError(404, {"message": f"VS402339: Attachment {aid} not found."})
        return Reply(200, self.blobs[aid][1], {"Content-Type": "application/octet-stream"})

    # --- metadata --------------------------------------------------------------------------------------
    def types(self, call: Call, project: str) -> dict[str, Any]:
        rows = [
            {
                "name": n,
                "referenceName": f"Microsoft.VSTS.WorkItemTypes.{n}",
                "isDisabled": False,
                "url": f"{self.base_url}/_apis/wit/workItemTypes/{n}",
            }
            for n in STATES
        ]
        return {"count": len(rows), "value": rows}

    def states(self, call: Call, project: str, wtype: str) -> dict[str, Any]:
        names = STATES.get(unquote(wtype))
        if names is None:
            raise HttpError(404, {"message": f"VS402323: Work item type {wtype} does not exist."})
        rows = [
            {"name": n, "color": "b2b2b2", "category": "Proposed" if n == "New" else "InProgress"}
            for n in names
        ]
        return {"count": len(rows), "value": rows}


# --- a small honest WIQL subset ---------------------------------------------------------------------------

WIQL_FIELDS = KNOWN_FIELDS | READ_ONLY | {"System.Id", "System.TeamProject"}
_WIQL_TOKEN = re.compile(
    r"\s*(\[[^\]]*\]|'(?:[^']|'')*'|<>|>=|<=|[=<>(),]|@\w+|-?\d+(?:\.\d+)?|[A-Za-z_][\w.]*)"
)


DATE_FIELDS = {"System.CreatedDate", "System.ChangedDate"}


class Wiql:
    """``SELECT … FROM WorkItems WHERE … ORDER BY … [ASC|DESC]``: parsed at once (HttpError 400 with Azure
    DevOps' message when it is not valid), then run over the fake's work items.

    ``@project`` is the project of the URL, ``@Me`` the PAT's user (the node). Date fields compare dates only
    unless the query runs with ``timePrecision=true``; without it a date with a time is refused, as Azure
    DevOps does. A date without a time zone is read in the user's zone, which is UTC here."""

    def __init__(self, fake: FakeAzureDevOps, project: str, text: str, *, precise: bool = False) -> None:
        self.fake, self.project, self.precise = fake, project, precise
        self.tokens = [m.group(1) for m in _WIQL_TOKEN.finditer(text) if m.group(1)]
        self.i = 0
        self.expect_word("select")
        self.field()
        while self.peek() == ",":
            self.take()
            self.field()
        self.expect_word("from")
        if (self.take() or "").lower() != "workitems":
            self.fail("TF51006", "Expecting WorkItems or WorkItemLinks", self.tokens[self.i - 1])
        self.where: Any = lambda item: True
        if self.peek_word() == "where":
            self.take()
            self.where = self.or_()
        self.order: list[tuple[str, bool]] = []  # (field, descending)
        if self.peek_word() == "order":
            self.take()
            self.expect_word("by")
            self.order.append(self.sort_key())
            while self.peek() == ",":
                self.take()
                self.order.append(self.sort_key())
        if self.peek() is not None:
            self.fail("TF51006", "Expecting end of string", self.peek())

    def fail(self, code: str, text: str, near: str | None) -> None:
        kind = "WorkItemTrackingFieldDefinitionNotFoundException" if code == "TF51005" else "SyntaxException"
        raise HttpError(
            400, {"message": f"{code}: {text}. The error is caused by «{near}».", "typeKey": kind}
        )

    def peek(self) -> str | None:
        return self.tokens[self.i] if self.i < len(self.tokens) else None

    def peek_word(self) -> str:
        return (self.peek() or "").lower()

    def take(self) -> str | None:
        token = self.peek()
        self.i += 1
        return token

    def expect_word(self, word: str) -> None:
        if (self.take() or "").lower() != word:
            self.fail("TF51006", f"Expecting {word.upper()}", self.tokens[self.i - 1] if self.tokens else "")

    def field(self) -> str:
        token = self.take() or ""
        if not token.startswith("["):
            self.fail("TF51006", "Expecting field name", token)
        name = token[1:-1]
        if name not in WIQL_FIELDS and name not in self.fake.custom_fields:
            self.fail("TF51005", "The query references a field that does not exist", token)
        return name

    def sort_key(self) -> tuple[str, bool]:
        name = self.field()
        if self.peek_word() in ("asc", "desc"):
            return name, (self.take() or "").lower() == "desc"
        return name, False

    def or_(self) -> Any:
        left = self.and_()
        while self.peek_word() == "or":
            self.take()
            a, b = left, self.and_()
            left = lambda item, a=a, b=b: a(item) or b(item)  # noqa: E731
        return left

    def and_(self) -> Any:
        left = self.not_()
        while self.peek_word() == "and":
            self.take()
            a, b = left, self.not_()
            left = lambda item, a=a, b=b: a(item) and b(item)  # noqa: E731
        return left

    def not_(self) -> Any:
        if self.peek_word() == "not":
            self.take()
            inner = self.not_()
            return lambda item: not inner(item)
        if self.peek() == "(":
            self.take()
            inner = self.or_()
            if self.take() != ")":
                self.fail("TF51006", "Expecting )", self.peek())
            return inner
        return self.clause()

    def value(self) -> Any:
        token = self.take()
        if token is None or token in ("(", ")", ",", "="):
            self.fail("TF51006", "Expecting a value", token)
        assert token is not None
        if token.startswith("'"):
            return token[1:-1].replace("''", "'")
        if token.lower() == "@project":
            return self.project
        if token.lower() == "@me":
            return self.fake.node_identity["uniqueName"]
        if re.fullmatch(r"-?\d+(?:\.\d+)?", token):
            return float(token) if "." in token else int(token)
        self.fail("TF51006", "Expecting a value", token)

    def clause(self) -> Any:
        name = self.field()
        op = self.peek_word()
        if op == "not":
            self.take()
            op = "not " + self.peek_word()
        if op not in ("=", "<>", ">", "<", ">=", "<=", "contains", "not contains", "in", "not in"):
            self.fail("TF51006", "Expecting comparison operator", self.peek())
        self.take()
        if op.endswith("in"):
            if self.take() != "(":
                self.fail("TF51006", "Expecting (", self.peek())
            values = [self.value()]
            while self.peek() == ",":
                self.take()
                values.append(self.value())
            if self.take() != ")":
                self.fail("TF51006", "Expecting )", self.peek())
        else:
            values = [self.value()]
        if name in DATE_FIELDS:
            values = [self.moment(v, f"[{name}] {op} '{v}'") for v in values]
            return lambda item: self.compare(self.moment(self.get(item, name)), name, op, values)
        return lambda item: self.compare(self.get(item, name), name, op, values)

    def moment(self, value: Any, clause: str | None = None) -> datetime | date | None:
        """A date field's value or a literal: a time (UTC) with ``timePrecision``, else a date. ``clause``:
        the literal's clause, named in the error when it has a time but the query uses date precision."""
        if value in (None, ""):
            return None
        text = str(value).strip()
        if clause is not None and not self.precise and re.search(r"\d[T ]\d", text):
            raise HttpError(
                400,
                {
                    "message": "You cannot supply a time with the date when running a query using date "
                    f"precision. The error is caused by «{clause}»."
                },
            )
        try:
            when = datetime.fromisoformat(text.replace("Z", "+00:00"))
        except ValueError:
            raise HttpError(
                400, {"message": f"TF51006: Expecting a date. The error is caused by «'{text}'»."}
            )
        when = when if when.tzinfo else when.replace(tzinfo=UTC)
        return when if self.precise else when.astimezone(UTC).date()

    @staticmethod
    def get(item: dict[str, Any], name: str) -> Any:
        if name == "System.Id":
            return item["id"]
        value = item["fields"].get(name)
        return value.get("uniqueName") if isinstance(value, dict) else value

    @staticmethod
    def compare(actual: Any, name: str, op: str, values: list[Any]) -> bool:
        def norm(v: Any) -> Any:
            return v.casefold() if isinstance(v, str) else v

        if op.endswith("contains"):
            if name == "System.Tags":
                tags = {t.strip().casefold() for t in str(actual or "").split(";") if t.strip()}
                hit = norm(str(values[0])) in tags
            else:
                hit = norm(str(values[0])) in norm(str(actual or ""))
            return hit if op == "contains" else not hit
        if op.endswith("in"):
            hit = norm(actual) in {norm(v) for v in values}
            return hit if op == "in" else not hit
        a, b = norm(actual), norm(values[0])
        if op == "=":
            return a == b
        if op == "<>":
            return a != b
        if a is None:
            return False
        return {">": a > b, "<": a < b, ">=": a >= b, "<=": a <= b}[op]

    def run(self, top: int) -> list[dict[str, Any]]:
        hits = [i for i in self.fake.items.values() if self.where(i)]
        for name, descending in reversed(self.order):
            if name in DATE_FIELDS:  # by time, not by text (Azure DevOps drops trailing zeros: .12Z < .123Z)
                hits.sort(
                    key=lambda i, n=name: (self.get(i, n) is None, self.moment(self.get(i, n)) or 0),
                    reverse=descending,
                )
            else:
                hits.sort(
                    key=lambda i, n=name: (self.get(i, n) is None, self.get(i, n) or 0), reverse=descending
                )
        return hits[:top]
