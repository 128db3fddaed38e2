"""A fake Salesforce org (OAuth token endpoint, sObject REST, SOQL query, Files), built from Salesforce's
REST API developer guide (no machine-readable description is available here; the facts relied on are
listed in ``tests/connectors2/test_salesforce.py`` and ``tests/connectors2/test_queries.py``).

SOQL ``WHERE`` clauses are evaluated by ``Where``, a subset: comparisons ``= != < > <= >= LIKE IN, NOT
IN`` on fields (dot paths through ``…Id`` references), string, number, boolean, ``null`` and date-time
literals, AND/OR/NOT and parentheses. On ``Case``, an unknown field is ``INVALID_FIELD`` with Salesforce's
"No such column" message; what the fake cannot parse is ``MALFORMED_QUERY`` ("unexpected token")."""

from __future__ import annotations

import itertools
import json
import re
import secrets
from datetime import datetime
from typing import Any
from urllib.parse import parse_qs

from tests.connectors2.fakes.base import Call, FakeClock, FakeServer, HttpError, Reply

V = "/services/data/v60.0"
PICKLISTS = {
    "Status": ["New", "Working", "Escalated", "Closed"],
    "Priority": ["High", "Medium", "Low"],
    "Type": ["Problem", "Feature Request", "Question"],
}
CASE_FIELDS = {
    "Subject",
    "Description",
    "Status",
    "Priority",
    "Type",
    "Origin",
    "OwnerId",
    "ContactId",
    "ParentId",
    "Product__c",
}
PREFIX = {
    "Case": "500",
    "CaseComment": "00a",
    "ContentVersion": "068",
    "ContentDocument": "069",
    "ContentDocumentLink": "06A",
    "User": "005",
    "Contact": "003",
}
_counter = itertools.count(1)


def new_id(sobject: str) -> str:
    return f"{PREFIX[sobject]}5g00000{next(_counter):05d}AAA"[:18].ljust(18, "A")


def sf_error(status: int, code: str, message: str, fields: list[str] | None = None) -> HttpError:
    return HttpError(status, [{"message": message, "errorCode": code, "fields": fields or []}])


class FakeSalesforce(FakeServer):
    host = "https://acme.my.salesforce.com"
    client_id, client_secret = "3MVG9-client", "sf-secret-123"

    def __init__(self, clock: FakeClock | None = None) -> None:
        super().__init__(clock)
        self.db: dict[str, dict[str, dict[str, Any]]] = {k: {} for k in PREFIX}
        self.blobs: dict[str, bytes] = {}
        self.tokens: set[str] = set()
        self.token_requests: list[dict[str, str]] = []
        self.page_size = 2000
        self.pages: dict[str, list[dict[str, Any]]] = {}
        self.node = self.insert(
            "User", {"Name": "Exalate Integration", "Email": "node@acme.example", "IsActive": True}
        )
        self.ed = self.insert("User", {"Name": "Ed Agent", "Email": "ed@acme.example", "IsActive": True})
        self.contact = self.insert("Contact", {"Name": "Carla Customer", "Email": "carla@customer.example"})
        self.actor = self.node
        self.next_number = 1001
        self.route("POST", r"/services/oauth2/token", self.token)
        self.route("GET", V + r"/query", self.query)
        self.route("GET", V + r"/query/(?P<qid>[\w-]+)", self.query_more)
        self.route(
            "GET", V + r"/limits", lambda call: {"DailyApiRequests": {"Max": 15000, "Remaining": 14990}}
        )
        self.route("GET", V + r"/sobjects/(?P<obj>\w+)/describe", self.describe)
        self.route("POST", V + r"/sobjects/(?P<obj>\w+)", self.create)
        self.route("GET", V + r"/sobjects/(?P<obj>\w+)/(?P<rid>\w{18})", self.get)
        self.route("PATCH", V + r"/sobjects/(?P<obj>\w+)/(?P<rid>\w{18})", self.update)
        self.route("DELETE", V + r"/sobjects/(?P<obj>\w+)/(?P<rid>\w{18})", self.delete)
        self.route("GET", V + r"/sobjects/ContentVersion/(?P<rid>\w{18})/VersionData", self.version_data)

    # --- plumbing ----------------------------------------------------------------------------------------
    def authorize(self, call: Call) -> None:
        if call.path == "/services/oauth2/token":
            return
        auth = call.headers.get("Authorization", "")
        if not auth.startswith("Bearer ") or auth[7:] not in self.tokens:
            raise sf_error(401, "INVALID_SESSION_ID", "Session expired or invalid")

    def expire_tokens(self) -> None:
        self.tokens.clear()

    def stamp(self) -> str:
        self.clock.advance(0.001)
        return (
            self.clock.now().strftime("%Y-%m-%dT%H:%M:%S.")
            + f"{self.clock.now().microsecond // 1000:03d}+0000"
        )

    def insert(self, sobject: str, fields: dict[str, Any]) -> str:
        rid = new_id(sobject)
        now = self.stamp()
        actor = getattr(self, "actor", None) or rid
        self.db[sobject][rid] = {
            "attributes": {"type": sobject, "url": f"{V}/sobjects/{sobject}/{rid}"},
            "Id": rid,
            **fields,
            "CreatedDate": now,
            "LastModifiedDate": now,
            "SystemModstamp": now,
            "CreatedById": actor,
            "LastModifiedById": actor,
        }
        return rid

    def record(self, sobject: str, rid: str) -> dict[str, Any]:
        if sobject not in self.db:
            raise sf_error(404, "NOT_FOUND", f"The requested resource does not exist: {sobject}")
        row = self.db[sobject].get(rid)
        if row is None:
            raise sf_error(404, "NOT_FOUND", "The requested resource does not exist")
        return row

    def touch(self, row: dict[str, Any]) -> None:
        now = self.stamp()
        row.update(LastModifiedDate=now, SystemModstamp=now, LastModifiedById=self.actor)

    def validate_case(self, fields: dict[str, Any]) -> None:
        for key, value in fields.items():
            if key not in CASE_FIELDS:
                raise sf_error(400, "INVALID_FIELD", f"No such column '{key}' on sobject of type Case")
            if key in PICKLISTS and key == "Status" and value not in PICKLISTS[key]:
                raise sf_error(
                    400,
                    "INVALID_OR_NULL_FOR_RESTRICTED_PICKLIST",
                    f"Status: bad value for restricted picklist field: {value}",
                    [key],
                )
            if key == "OwnerId" and value not in self.db["User"]:
                raise sf_error(
                    400, "FIELD_INTEGRITY_EXCEPTION", "Owner ID: id value of incorrect type", [key]
                )

    # --- scripted activity -------------------------------------------------------------------------------
    def human_update(self, rid: str, **fields: Any) -> None:
        previous, self.actor = self.actor, self.ed
        try:
            self.validate_case(fields)
            row = self.record("Case", rid)
            row.update(fields)
            self.touch(row)
        finally:
            self.actor = previous

    def human_case(self, subject: str, **fields: Any) -> str:
        """A Case another user opened (``CreatedById`` is theirs)."""
        previous, self.actor = self.actor, self.ed
        try:
            body = {"Subject": subject, **fields}
            return self.create(Call("POST", "", "", {}, {}, json.dumps(body).encode()), "Case").body["id"]
        finally:
            self.actor = previous

    def human_comment(self, rid: str, body: str, published: bool = True) -> str:
        previous, self.actor = self.actor, self.ed
        try:
            cid = self.insert("CaseComment", {"ParentId": rid, "CommentBody": body, "IsPublished": published})
            self.touch(self.record("Case", rid))
            return cid
        finally:
            self.actor = previous

    def human_file(self, rid: str, title: str, ext: str, data: bytes) -> str:
        previous, self.actor = self.actor, self.ed
        try:
            return self._file(rid, f"{title}.{ext}", data)
        finally:
            self.actor = previous

    def _file(self, parent: str, path: str, data: bytes) -> str:
        title, _, ext = path.rpartition(".") if "." in path else (path, "", "")
        doc = self.insert(
            "ContentDocument",
            {"Title": title, "FileExtension": ext, "FileType": ext.upper(), "ContentSize": len(data)},
        )
        version = self.insert(
            "ContentVersion",
            {
                "ContentDocumentId": doc,
                "Title": title,
                "PathOnClient": path,
                "IsLatest": True,
                "ContentSize": len(data),
            },
        )
        self.db["ContentDocument"][doc]["LatestPublishedVersionId"] = version
        self.blobs[version] = data
        self.insert(
            "ContentDocumentLink", {"ContentDocumentId": doc, "LinkedEntityId": parent, "ShareType": "V"}
        )
        return version

    # --- OAuth ---------------------------------------------------------------------------------------------
    def token(self, call: Call) -> Reply:
        form = {k: v[0] for k, v in parse_qs(call.body.decode()).items()}
        self.token_requests.append(form)
        if (form.get("client_id"), form.get("client_secret")) != (self.client_id, self.client_secret):
            return Reply(400, {"error": "invalid_client", "error_description": "invalid client credentials"})
        if form.get("grant_type") == "password" and form.get("password") != "pw+securitytoken":
            return Reply(400, {"error": "invalid_grant", "error_description": "authentication failure"})
        if form.get("grant_type") not in ("client_credentials", "password"):
            return Reply(
                400, {"error": "unsupported_grant_type", "error_description": "grant type not supported"}
            )
        token = secrets.token_hex(8)
        self.tokens.add(token)
        return Reply(
            200,
            {
                "access_token": token,
                "instance_url": self.host,
                "token_type": "Bearer",
                "id": f"https://login.salesforce.com/id/00D5g000000XXXXEAA/{self.node}",
                "issued_at": "1772355600000",
                "signature": "x",
            },
        )

    # --- SOQL --------------------------------------------------------------------------------------------
    def _value(self, row: dict[str, Any], path: str) -> Any:
        head, _, rest = path.partition(".")
        if not rest:
            return row.get(head)
        target = row.get(f"{head}Id")
        for table in self.db.values():
            if target in table:
                return self._value(table[target], rest)
        return None

    @staticmethod
    def _literal(text: str) -> Any:
        text = text.strip()
        if text.startswith("'"):
            return re.sub(r"\\(.)", r"\1", text[1:-1])
        if text in ("true", "false"):
            return text == "true"
        return text

    def soql(self, soql: str) -> list[dict[str, Any]]:
        match = re.fullmatch(
            r"SELECT (?P<fields>.+?) FROM (?P<obj>\w+)(?: WHERE (?P<where>.+?))?(?: ORDER BY (?P<order>.+?))?"
            r"(?: LIMIT (?P<limit>\d+))?",
            soql.strip(),
        )
        if not match:
            raise sf_error(400, "MALFORMED_QUERY", f"unexpected token: {soql[:40]}")
        obj = match["obj"]
        if obj not in self.db:
            raise sf_error(400, "INVALID_TYPE", f"sObject type '{obj}' is not supported.")
        fields = [f.strip() for f in match["fields"].split(",")]
        rows = list(self.db[obj].values())
        if obj == "ContentDocumentLink" and not match["where"]:
            raise sf_error(
                400, "MALFORMED_QUERY", "Implementation restriction: ContentDocumentLink requires a filter"
            )
        if match["where"]:
            where = Where(self, obj, match["where"])
            rows = [r for r in rows if where.test(r)]
        for part in reversed((match["order"] or "").split(",") if match["order"] else []):
            name, *direction = part.split()
            rows.sort(key=lambda r: str(self._value(r, name)), reverse=direction == ["DESC"])
        if match["limit"]:
            rows = rows[: int(match["limit"])]
        out = []
        for row in rows:
            rec: dict[str, Any] = {"attributes": row["attributes"]}
            for field in fields:
                if "." in field:
                    head, _, rest = field.partition(".")
                    rec.setdefault(head, {})[rest] = self._value(row, field)
                else:
                    rec[field] = row.get(field)
            out.append(rec)
        return out

    def _page(self, rows: list[dict[str, Any]]) -> dict[str, Any]:
        page, rest = rows[: self.page_size], rows[self.page_size :]
        out: dict[str, Any] = {"totalSize": len(rows), "done": not rest, "records": page}
        if rest:
            qid = f"01g5g00000{secrets.token_hex(3)}-{len(page)}"
            self.pages[qid] = rest
            out["nextRecordsUrl"] = f"{V}/query/{qid}"
        return out

    def query(self, call: Call) -> dict[str, Any]:
        return self._page(self.soql(call.query["q"]))

    def query_more(self, call: Call, qid: str) -> dict[str, Any]:
        if qid not in self.pages:
            raise sf_error(400, "INVALID_QUERY_LOCATOR", "invalid query locator")
        rows = self.pages.pop(qid)
        out = self._page(rows)
        out["totalSize"] = len(rows)
        return out

    # --- sObjects ----------------------------------------------------------------------------------------
    def describe(self, call: Call, obj: str) -> dict[str, Any]:
        return {
            "name": obj,
            "fields": [
                {
                    "name": name,
                    "type": "picklist",
                    "picklistValues": [{"value": v, "label": v, "active": True} for v in vals],
                }
                for name, vals in PICKLISTS.items()
            ],
        }

    def create(self, call: Call, obj: str) -> Reply:
        if obj == "ContentVersion":
            return self.create_version(call)
        body = call.json()
        if obj == "Case":
            self.validate_case(body)
            body = {
                "Status": "New",
                "Priority": "Medium",
                "OwnerId": self.actor,
                **body,
                "CaseNumber": f"{self.next_number:08d}",
            }
            self.next_number += 1
        elif obj == "CaseComment":
            self.record("Case", body.get("ParentId", ""))
            if not body.get("CommentBody"):
                raise sf_error(
                    400,
                    "REQUIRED_FIELD_MISSING",
                    "Required fields are missing: [CommentBody]",
                    ["CommentBody"],
                )
            body = {"IsPublished": False, **body}
        else:
            raise sf_error(400, "INVALID_TYPE", f"cannot create {obj} here")
        rid = self.insert(obj, body)
        if obj == "CaseComment":
            self.touch(self.record("Case", body["ParentId"]))
        return Reply(201, {"id": rid, "success": True, "errors": []})

    def create_version(self, call: Call) -> Reply:
        ctype = call.headers.get("Content-Type", "")
        m = re.search(r"boundary=(\S+)", ctype)
        if not ctype.startswith("multipart/form-data") or not m:
            raise sf_error(400, "INVALID_MULTIPART_REQUEST", "expected multipart/form-data")
        parts = call.body.split(b"--" + m.group(1).encode())[1:-1]
        named = {}
        for part in parts:
            head, _, data = part.partition(b"\r\n\r\n")
            name = re.search(rb'name="([^"]+)"', head).group(1).decode()  # type: ignore[union-attr]
            named[name] = data[:-2]
        if "entity_content" not in named or "VersionData" not in named:
            raise sf_error(400, "REQUIRED_FIELD_MISSING", "Required fields are missing: [VersionData]")
        entity = json.loads(named["entity_content"])
        parent = entity.get("FirstPublishLocationId")
        self.record("Case", parent)
        version = self._file(parent, entity.get("PathOnClient") or entity["Title"], named["VersionData"])
        self.touch(self.record("Case", parent))
        return Reply(201, {"id": version, "success": True, "errors": []})

    def get(self, call: Call, obj: str, rid: str) -> dict[str, Any]:
        row = self.record(obj, rid)
        if call.query.get("fields"):
            return {
                "attributes": row["attributes"],
                **{f: row.get(f) for f in call.query["fields"].split(",")},
            }
        return dict(row)

    def update(self, call: Call, obj: str, rid: str) -> Reply:
        row = self.record(obj, rid)
        body = call.json()
        if obj == "Case":
            self.validate_case(body)
        row.update(body)
        self.touch(row)
        if obj == "CaseComment":
            self.touch(self.record("Case", row["ParentId"]))
        return Reply(204, None)

    def delete(self, call: Call, obj: str, rid: str) -> Reply:
        row = self.record(obj, rid)
        del self.db[obj][rid]
        if obj == "ContentDocument":
            for link_id, link in list(self.db["ContentDocumentLink"].items()):
                if link["ContentDocumentId"] == rid:
                    del self.db["ContentDocumentLink"][link_id]
        if obj == "CaseComment":
            self.touch(self.record("Case", row["ParentId"]))
        return Reply(204, None)

    def version_data(self, call: Call, rid: str) -> Reply:
        self.record("ContentVersion", rid)
        return Reply(200, self.blobs[rid], {"Content-Type": "application/octet-stream"})


# --- a small honest SOQL WHERE subset ---------------------------------------------------------------------

CASE_QUERYABLE = CASE_FIELDS | {
    "Id", "CaseNumber", "CreatedDate", "LastModifiedDate", "SystemModstamp", "CreatedById",
    "LastModifiedById",
}  # fmt: skip
_SOQL_TOKEN = re.compile(
    r"\s*('(?:[^'\\]|\\.)*'|!=|<>|<=|>=|[=<>(),]|\d{4}-\d\d-\d\dT[\d:.]+(?:Z|[+-]\d\d:?\d\d)|[\w.]+)"
)


class Where:
    """A WHERE clause, parsed at once (``sf_error`` 400 when Salesforce would refuse it)."""

    def __init__(self, fake: FakeSalesforce, obj: str, text: str) -> None:
        self.fake, self.obj = fake, obj
        self.tokens: list[str] = []
        pos = 0
        while text[pos:].strip():
            m = _SOQL_TOKEN.match(text, pos)
            if not m:
                raise sf_error(400, "MALFORMED_QUERY", f"unexpected token: '{text[pos:].split()[0]}'")
            self.tokens.append(m.group(1))
            pos = m.end()
        self.i = 0
        self.test = self.or_()
        if self.i < len(self.tokens):
            self.unexpected()

    def unexpected(self) -> None:
        token = self.tokens[self.i] if self.i < len(self.tokens) else "<EOF>"
        raise sf_error(400, "MALFORMED_QUERY", f"unexpected token: '{token}'")

    def word(self) -> str:
        return self.tokens[self.i].upper() if self.i < len(self.tokens) else ""

    def or_(self) -> Any:
        left = self.and_()
        while self.word() == "OR":
            self.i += 1
            a, b = left, self.and_()
            left = lambda r, a=a, b=b: a(r) or b(r)  # noqa: E731
        return left

    def and_(self) -> Any:
        left = self.not_()
        while self.word() == "AND":
            self.i += 1
            a, b = left, self.not_()
            left = lambda r, a=a, b=b: a(r) and b(r)  # noqa: E731
        return left

    def not_(self) -> Any:
        if self.word() == "NOT":
            self.i += 1
            inner = self.not_()
            return lambda r: not inner(r)
        if self.word() == "(":
            self.i += 1
            inner = self.or_()
            if self.word() != ")":
                self.unexpected()
            self.i += 1
            return inner
        return self.comparison()

    def literal(self) -> Any:
        if self.i >= len(self.tokens):
            self.unexpected()
        token = self.tokens[self.i]
        self.i += 1
        if token.startswith("'"):
            return re.sub(r"\\(.)", r"\1", token[1:-1])
        if token.lower() in ("true", "false"):
            return token.lower() == "true"
        if token.lower() == "null":
            return None
        if re.fullmatch(r"-?\d+(?:\.\d+)?", token):
            return float(token)
        if re.fullmatch(r"\d{4}-\d\d-\d\dT.+", token):
            return datetime.fromisoformat(token.replace("Z", "+00:00"))
        self.i -= 1
        self.unexpected()

    def comparison(self) -> Any:
        if self.i >= len(self.tokens) or not re.fullmatch(r"[A-Za-z][\w.]*", self.tokens[self.i]):
            self.unexpected()
        field = self.tokens[self.i]
        self.i += 1
        if self.obj == "Case" and "." not in field and field not in CASE_QUERYABLE:
            raise sf_error(
                400,
                "INVALID_FIELD",
                f"No such column '{field}' on entity 'Case'. If you are attempting to use a custom field, be "
                "sure to append the '__c' after the custom field name. Please reference your WSDL or the "
                "describe call for the appropriate names.",
            )
        op = self.word()
        if op == "NOT" and self.i + 1 < len(self.tokens) and self.tokens[self.i + 1].upper() == "IN":
            self.i += 1
            op = "NOT IN"
        if op not in ("=", "!=", "<>", "<", ">", "<=", ">=", "LIKE", "IN", "NOT IN"):
            self.unexpected()
        self.i += 1
        if op.endswith("IN"):
            if self.word() != "(":
                self.unexpected()
            self.i += 1
            values = [self.literal()]
            while self.word() == ",":
                self.i += 1
                values.append(self.literal())
            if self.word() != ")":
                self.unexpected()
            self.i += 1
        else:
            values = [self.literal()]
        return lambda r: self.compare(self.fake._value(r, field), op, values)

    @staticmethod
    def compare(actual: Any, op: str, values: list[Any]) -> bool:
        want = values[0]
        if isinstance(want, datetime) and isinstance(actual, str):
            actual = datetime.fromisoformat(actual.replace("+0000", "+00:00"))
        if isinstance(want, float) and isinstance(actual, str):
            try:
                actual = float(actual)
            except ValueError:
                return False
        if op == "LIKE":
            pattern = "^" + re.escape(str(want)).replace("%", ".*").replace("_", ".") + "$"
            return (
                actual is not None and re.match(pattern, str(actual), re.IGNORECASE | re.DOTALL) is not None
            )
        if op in ("IN", "NOT IN"):
            hit = any(str(actual).casefold() == str(v).casefold() for v in values)
            return hit if op == "IN" else not hit
        if op in ("=", "!=", "<>"):
            same = (actual is None and want is None) or (
                actual is not None
                and want is not None
                and (
                    str(actual).casefold() == str(want).casefold()
                    if isinstance(want, str)
                    else actual == want
                )
            )
            return same if op == "=" else not same
        if actual is None or want is None:
            return False
        return {"<": actual < want, ">": actual > want, "<=": actual <= want, ">=": actual >= want}[op]
