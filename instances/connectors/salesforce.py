"""Connector for Salesforce Cases (REST API v60.0) with OAuth 2.0 (client credentials or username-password).

Instance configuration: ``url`` is the org's My Domain URL (``https://<domain>.my.salesforce.com``), where
the token is requested (``/services/oauth2/token``); ``credentials`` is ``{"client_id": "...",
"client_secret": "..."}`` for the client credentials flow (the connected app's "run as" user), plus
``"username"`` and ``"password"`` (password followed by the security token) for the username-password flow;
``settings`` may hold ``sobject`` (default ``Case``), ``api_version`` (default ``v60.0``),
``webhook_header`` (default ``X-Exalate-Token``) and ``rate_limit_per_s``.

The token is cached per process and account and requested again once when a call answers 401
(``INVALID_SESSION_ID``); API calls go to the ``instance_url`` the token response names.

How a Case maps onto the hubIssue: the record ``Id`` is the id, ``CaseNumber`` the key; ``Subject``,
``Description``, ``Status``, ``Priority``, ``Type`` by picklist value; Salesforce has no labels (``[]``);
the owner (a user; a queue shows no e-mail) is the assignee, the contact the reporter; every ``__c`` field
is a custom field; ``ParentId`` the parent.

* Comments are **CaseComment** records (rather than Chatter FeedItems: CaseComment is plain text with an
  explicit public/private flag, ``IsPublished``, which maps onto the hubIssue's ``internal``, and it is
  edited and deleted like any record); they are read with SOQL on ``ParentId``.
* Attachments are Salesforce Files: a ``ContentVersion`` is created with ``FirstPublishLocationId`` = the
  case, sent as multipart (``entity_content`` JSON + ``VersionData``, streamed); they are listed through
  ``ContentDocumentLink``; the attachment id is the ``ContentDocumentId``; the content is downloaded from
  ``ContentVersion/{latest version}/VersionData``; deleting one deletes the ContentDocument. Salesforce
  records MD5 checksums only, so ``sha256`` is None.
* Polling: SOQL on ``SystemModstamp`` (``>=`` cursor minus an overlap, ``ORDER BY SystemModstamp, Id``),
  following ``nextRecordsUrl``, de-duplicated on (Id, SystemModstamp).
* Triggers hold a SOQL condition, what follows ``WHERE`` (``Priority = 'High' AND IsClosed = false``); a
  full ``SELECT … FROM Case WHERE …`` is cut down to it. Salesforce evaluates it: ``SELECT Id, CaseNumber,
  SystemModstamp FROM Case WHERE (<condition>) …`` with ``AND Id = '<id>'`` for one record and ``AND Id >
  '<after>' ORDER BY Id LIMIT n`` for pages (record ids of one object compare in creation order).
* Webhooks: Salesforce has no signed JSON webhooks; a Flow or Apex HTTP callout may post ``{"Id": "..."}``
  with the shared secret in ``X-Exalate-Token`` (Outbound Messages, SOAP without a secret, are not
  accepted).
* ``is_own_change``: ``LastModifiedById`` is the token's user (the ``id`` URL of the token response).
* Retries: the OAuth token request is a POST that changes nothing, flagged so the HTTP seam repeats it like a
  read (SOQL queries are GETs). Creating a record, a CaseComment or a file is a POST that the seam does not
  repeat once Salesforce may have carried it out (lost answer, timeout, 5xx); the pipeline then looks for what
  the earlier attempt wrote: ``find_created`` for a record (SOQL on ``CreatedById``, ``CreatedDate`` and
  ``Subject``), an unlinked comment with the same text, a file with the same name and size. Field updates
  (``PATCH``) set values and are repeated as usual.
* Errors: Salesforce answers a list ``[{errorCode, message, fields}]``; the message quotes it.
  ``REQUEST_LIMIT_EXCEEDED`` (the org's daily API limit) is retryable.
"""

from __future__ import annotations

import json
import re
import threading
from collections.abc import Iterator, Mapping
from datetime import UTC, datetime, timedelta
from typing import IO, Any
from urllib.parse import quote, urlencode, urlsplit

import requests

from instances.connectors import _common as common
from instances.connectors._multipart import MultipartFile
from instances.connectors.base import Connector, ConnectorError, ItemRef, register
from instances.connectors.http import HttpClient

OVERLAP = timedelta(seconds=10)
HINTS = {
    400: "Salesforce rejected the request. Check the sync rules' mapping (picklist values, field names).",
    401: "the OAuth credentials were rejected. Check the connected app's client id and secret (and the "
    "user name, password and security token for the password flow).",
    403: "the user has no permission for this, or the org's API limit is used up.",
    404: "it does not exist or the user cannot see it. Check the record id and sharing.",
}
FIELDS = {
    "summary": "Subject",
    "description": "Description",
    "status": "Status",
    "priority": "Priority",
    "type": "Type",
}

_seen = common.SeenWindow()
_tokens: dict[str, dict[str, Any]] = {}  # account → token response
_people: dict[tuple[str, str], dict[str, Any] | None] = {}
_lock = threading.Lock()
_ID_RE = re.compile(r"[A-Za-z0-9]{15}(?:[A-Za-z0-9]{3})?")


def soql(fields: str, sobject: str, where: str = "", order: str = "", limit: int = 0) -> str:
    """A SOQL statement. Every value inside ``where`` comes from ``soql_quote`` or is a timestamp this module
    formatted, and ``sobject`` is checked to be a plain name: nothing from outside is pasted in raw — except
    a trigger's own SOQL condition (``_trigger_where``), which an administrator wrote to be run as SOQL and
    which goes in parentheses (SOQL only reads, and Salesforce checks it against the user's access)."""
    parts = ["SELECT", fields, "FROM", sobject]
    if where:
        parts += ["WHERE", where]
    if order:
        parts += ["ORDER BY", order]
    if limit:
        parts += ["LIMIT", str(limit)]
    return " ".join(parts)


def soql_quote(value: str) -> str:
    """A SOQL string literal (backslash and quote escaped)."""
    return "'" + str(value).replace("\\", "\\\\").replace("'", "\\'") + "'"


@register
class SalesforceConnector(Connector):
    """Salesforce Cases (or another sObject). Item ids are record ids; comment ids CaseComment ids;
    attachment ids ContentDocument ids."""

    tracker_type = "salesforce"

    _http: HttpClient | None = None
    _auth_http: HttpClient | None = None

    # --- plumbing ----------------------------------------------------------------------------------------
    @property
    def creds(self) -> dict[str, Any]:
        return common.credentials(
            self.instance,
            "Salesforce",
            ("client_id", "client_secret"),
            '{"client_id": "...", "client_secret": "..."} (plus "username" and "password" for the '
            "username-password flow)",
        )

    @property
    def login_url(self) -> str:
        return common.base_url(self.instance, "Salesforce My Domain", "https://<domain>.my.salesforce.com")

    @property
    def account(self) -> str:
        return common.account_key(self.instance, f"{self.creds['client_id']}:{self.creds['client_secret']}")

    def _settings(self) -> dict[str, Any]:
        return dict(self.instance.settings or {})

    @property
    def sobject(self) -> str:
        name = str(self._settings().get("sobject") or "Case")
        if not re.fullmatch(r"\w+", name):
            raise ConnectorError(
                f"'{name}' is not a Salesforce object name. Fix the instance's sobject setting."
            )
        return name

    @property
    def data(self) -> str:
        return f"services/data/{self._settings().get('api_version') or 'v60.0'}"

    def _token(self, *, fresh: bool = False) -> dict[str, Any]:
        with _lock:
            token = None if fresh else _tokens.get(self.account)
        if token:
            return token
        if self._auth_http is None:
            self._auth_http = common.build_http(
                self.instance,
                tracker_type=self.tracker_type,
                service="Salesforce",
                base_url=self.login_url,
                headers={"Accept": "application/json"},
                hints=HINTS,
            )
        creds = self.creds
        form = {"client_id": creds["client_id"], "client_secret": creds["client_secret"]}
        if creds.get("username"):
            form.update(grant_type="password", username=creds["username"], password=creds.get("password", ""))
        else:
            form["grant_type"] = "client_credentials"
        response = self._auth_http.request(
            "POST",
            "services/oauth2/token",
            data=urlencode(form),
            headers={"Content-Type": "application/x-www-form-urlencoded"},
            action="get an OAuth token",
            ok_statuses=(400, 401),
            idempotent=True,  # a token request changes nothing: repeated after a failure like a read
        )
        body = response.json() if response.content else {}
        body = body if isinstance(body, dict) else {}
        if response.status_code != 200 or "access_token" not in body:
            said = f"{body.get('error')}: {body.get('error_description')}; " if body.get("error") else ""
            raise ConnectorError(
                f"Salesforce refused the OAuth token request ({said}HTTP {response.status_code}). Check the "
                "connected app's client id and secret, that the client credentials flow (or the user's "
                "password and security token) is enabled.",
                status=401,
            )
        with _lock:
            _tokens[self.account] = body
        return body

    @property
    def http(self) -> HttpClient:
        if self._http is None:
            token = self._token()
            base = token.get("instance_url") or self.login_url
            self._http = common.build_http(
                self.instance,
                tracker_type=self.tracker_type,
                service="Salesforce",
                base_url=base,
                headers={"Authorization": f"Bearer {token['access_token']}", "Accept": "application/json"},
                hints=HINTS,
            )
        return self._http

    @http.setter
    def http(self, client: HttpClient) -> None:
        self._http = client

    def _call(
        self, method: str, path: str, *, missing_ok: bool = False, action: str, **kwargs: Any
    ) -> requests.Response:
        """A request with the refusal quoted from Salesforce's error list, and one new token on a 401."""
        for attempt in range(2):
            response = self.http.request(
                method, path, action=action, ok_statuses=(400, 401, 403, 404), **kwargs
            )
            if response.status_code == 401 and attempt == 0:
                token = self._token(fresh=True)  # expired or revoked: ask once more, then retry
                self.http.session.headers["Authorization"] = f"Bearer {token['access_token']}"
                continue
            if response.status_code < 400 or (missing_ok and response.status_code == 404):
                return response
            try:
                errors = response.json()
            except ValueError:
                errors = []
            rows = errors if isinstance(errors, list) else [errors]
            codes = [str(e.get("errorCode")) for e in rows if isinstance(e, dict)]
            said = "; ".join(
                f"{e.get('errorCode')}: {e.get('message')}"
                + (f" ({', '.join(e['fields'])})" if e.get("fields") else "")
                for e in rows
                if isinstance(e, dict)
            )
            status = response.status_code
            hint = HINTS.get(status, "")
            if "REQUEST_LIMIT_EXCEEDED" in codes:
                hint = "the org's API request limit is used up. The node will retry later."
            raise ConnectorError(
                f"Salesforce refused the request to {action} ({status}): {hint} "
                f"Salesforce said: {said[:500]}",
                retryable="REQUEST_LIMIT_EXCEEDED" in codes,
                status=status,
            )
        raise AssertionError("unreachable")

    def _json(self, method: str, path: str, **kwargs: Any) -> Any:
        response = self._call(method, path, **kwargs)
        return response.json() if response.content else None

    def query(self, soql: str, *, action: str) -> Iterator[dict[str, Any]]:
        """Every record of a SOQL query, following ``nextRecordsUrl``."""
        page = self._json("GET", f"{self.data}/query", params={"q": soql}, action=action)
        while True:
            yield from page.get("records", [])
            if page.get("done", True) or not page.get("nextRecordsUrl"):
                return
            page = self._json("GET", page["nextRecordsUrl"], action=action)

    def item_url(self, record_id: str) -> str:
        base = urlsplit(self.http.base_url)
        return f"{base.scheme}://{base.netloc}/lightning/r/{self.sobject}/{record_id}/view"

    def ref(self, rec: Mapping[str, Any]) -> ItemRef:
        return ItemRef(
            id=rec["Id"],
            key=rec.get("CaseNumber") or rec["Id"],
            url=self.item_url(rec["Id"]),
            updated=_iso(rec.get("SystemModstamp") or ""),
        )

    def _raw(self, item_id: str) -> dict[str, Any]:
        if not _ID_RE.fullmatch(str(item_id)):
            raise ConnectorError(f"'{item_id}' is not a Salesforce record id.", status=404)
        return self._json(
            "GET", f"{self.data}/sobjects/{self.sobject}/{item_id}", action=f"read {self.sobject} {item_id}"
        )

    def me(self) -> str:
        """The token's user id (the last segment of the token response's ``id`` URL)."""
        return str(self._token().get("id") or "").rstrip("/").rsplit("/", 1)[-1]

    def _person(self, kind: str, record_id: str | None) -> dict[str, Any] | None:
        if not record_id:
            return None
        key = (self.account, record_id)
        if key not in _people:
            if kind == "User" and not record_id.startswith("005"):
                _people[key] = None  # a queue owns it
            else:
                response = self._call(
                    "GET",
                    f"{self.data}/sobjects/{kind}/{record_id}",
                    params={"fields": "Name,Email"},
                    action=f"read {kind} {record_id}",
                    missing_ok=True,
                )
                _people[key] = response.json() if response.status_code == 200 else None
        person = _people[key]
        if person is None:
            return {"email": None, "displayName": record_id}
        return {"email": person.get("Email") or None, "displayName": person.get("Name")}

    # --- reads -------------------------------------------------------------------------------------------
    def get_item(self, item_id: str) -> dict[str, Any]:
        rec = self._raw(item_id)
        comments = list(
            self.query(
                soql(
                    "Id, CommentBody, IsPublished, CreatedById, CreatedDate, LastModifiedDate",
                    "CaseComment",
                    f"ParentId = {soql_quote(rec['Id'])}",
                    "CreatedDate ASC",
                ),
                action=f"read the comments of {rec['Id']}",
            )
        )
        links = list(
            self.query(
                soql(
                    "ContentDocumentId, ContentDocument.Title, ContentDocument.FileExtension, "
                    "ContentDocument.FileType, ContentDocument.ContentSize, ContentDocument.CreatedDate",
                    "ContentDocumentLink",
                    f"LinkedEntityId = {soql_quote(rec['Id'])}",
                ),
                action=f"list the files of {rec['Id']}",
            )
        )
        return self.to_hub(rec, comments, links)

    def to_hub(self, rec: Mapping[str, Any], comments: list[dict], links: list[dict]) -> dict[str, Any]:
        attachments = []
        for link in links:
            doc = link.get("ContentDocument") or {}
            ext = doc.get("FileExtension") or ""
            title = doc.get("Title") or "file"
            filename = title if not ext or title.lower().endswith(f".{ext.lower()}") else f"{title}.{ext}"
            attachments.append(
                {
                    "id": link["ContentDocumentId"],
                    "filename": filename,
                    "mimeType": _mime(filename),
                    "size": doc.get("ContentSize"),
                    "sha256": None,
                    "created": _iso(doc.get("CreatedDate") or ""),
                }
            )
        return {
            "id": rec["Id"],
            "key": rec.get("CaseNumber") or rec["Id"],
            "url": self.item_url(rec["Id"]),
            "summary": rec.get("Subject") or "",
            "description": rec.get("Description") or None,
            "status": {"name": rec.get("Status")},
            "priority": {"name": rec.get("Priority")},
            "type": {"name": rec.get("Type")},
            "labels": [],
            "assignee": self._person("User", rec.get("OwnerId")),
            "reporter": self._person("Contact", rec.get("ContactId")),
            "dueDate": None,
            "parentId": rec.get("ParentId"),
            "created": _iso(rec.get("CreatedDate") or ""),
            "updated": _iso(rec.get("SystemModstamp") or ""),
            "project": {"idStr": self.sobject, "key": self.sobject, "name": self.sobject},
            "customFields": {k: v for k, v in rec.items() if k.endswith("__c") and v is not None},
            "comments": [
                {
                    "id": c["Id"],
                    "body": c.get("CommentBody") or "",
                    "author": self._person("User", c.get("CreatedById")),
                    "created": _iso(c.get("CreatedDate") or ""),
                    "updated": _iso(c.get("LastModifiedDate") or c.get("CreatedDate") or ""),
                    "internal": not c.get("IsPublished"),
                }
                for c in comments
            ],
            "attachments": sorted(attachments, key=lambda a: (a["created"] or "", a["id"])),
        }

    def find_item(self, key: str) -> ItemRef | None:
        key = str(key).strip()
        if _ID_RE.fullmatch(key) and not key.isdigit():
            where = f"Id = {soql_quote(key)}"
        elif key.isdigit():
            where = f"CaseNumber = {soql_quote(key)}"
        else:
            return None
        rows = list(
            self.query(
                soql("Id, CaseNumber, SystemModstamp", self.sobject, where, limit=1),
                action=f"find {key}",
            )
        )
        return self.ref(rows[0]) if rows else None

    def search_updated_since(
        self, cursor: str | None, *, limit: int = 100
    ) -> tuple[list[ItemRef], str | None]:
        """Records whose ``SystemModstamp`` is at or after ``cursor`` minus an overlap, oldest first, once."""
        where = f"SystemModstamp >= {common.iso(common.parse_ts(cursor) - OVERLAP)}" if cursor else ""
        statement = soql("Id, CaseNumber, SystemModstamp", self.sobject, where, "SystemModstamp ASC, Id ASC")
        refs: list[ItemRef] = []
        newest = cursor
        for rec in self.query(statement, action="query the records changed recently"):
            ref = self.ref(rec)
            if not _seen.fresh(self.account, ref.id, ref.updated, self.http):
                continue
            refs.append(ref)
            if not newest or common.parse_ts(ref.updated) > common.parse_ts(newest):
                newest = ref.updated
            if len(refs) >= limit:
                break
        if newest:
            _seen.forget_before(self.account, common.parse_ts(newest) - 2 * OVERLAP)
        return refs, newest

    def find_created(self, fields: Mapping[str, Any], *, since: datetime) -> list[ItemRef]:
        """Records the token's user created at or after ``since`` with the subject ``create_item`` would
        give, newest first (one SOQL query).

        SOQL facts (SOQL and SOSL Reference): every record has ``CreatedById`` and ``CreatedDate``; a
        dateTime literal is unquoted ISO 8601 in UTC (``2026-03-01T09:00:00Z``); string comparison with
        ``=`` ignores case; ``ORDER BY CreatedDate DESC`` sorts newest first. The token's user is the last
        segment of the token response's ``id`` URL (``me``). ``since`` is sent cut to its second (the literal
        has whole seconds); the creator, the time and the exact subject (without surrounding whitespace) are
        then checked here.
        """
        me = self.me()
        if not _ID_RE.fullmatch(me):
            return []
        subject = str(self._body({"summary": fields.get("summary")})["Subject"]).strip()
        cut = since.astimezone(UTC).replace(microsecond=0)
        where = f"CreatedById = {soql_quote(me)} AND CreatedDate >= {common.iso(cut)}"
        if subject and not re.search(r"[\r\n\t]", subject):  # soql_quote escapes quotes and backslashes only
            where += f" AND Subject = {soql_quote(subject)}"
        statement = soql(
            "Id, CaseNumber, SystemModstamp, CreatedDate, CreatedById, Subject",
            self.sobject,
            where,
            "CreatedDate DESC, Id DESC",
            limit=200,
        )
        mine = [
            rec
            for rec in self.query(statement, action="look for a record an earlier attempt created")
            if rec.get("CreatedById") == me
            and rec.get("CreatedDate")
            and common.parse_ts(rec["CreatedDate"]) >= cut
            and (rec.get("Subject") or "").strip() == subject
        ]
        mine.sort(key=lambda r: (common.parse_ts(r["CreatedDate"]), r["Id"]), reverse=True)
        return [self.ref(rec) for rec in mine]

    def metadata(self) -> dict[str, list[Any]]:
        describe = self._json(
            "GET", f"{self.data}/sobjects/{self.sobject}/describe", action="describe the object"
        )
        picklists = {
            f["name"]: [p["value"] for p in f.get("picklistValues") or [] if p.get("active", True)]
            for f in describe.get("fields", [])
        }
        users = [
            {"email": u.get("Email"), "displayName": u.get("Name"), "id": u["Id"]}
            for u in self.query(soql("Id, Name, Email", "User", "IsActive = true"), action="list the users")
        ]
        return {
            "statuses": picklists.get("Status", []),
            "priorities": picklists.get("Priority", []),
            "types": picklists.get("Type", []),
            "users": users,
        }

    # --- writes ------------------------------------------------------------------------------------------
    def _body(self, changes: Mapping[str, Any]) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for name, value in changes.items():
            if name in ("summary", "description"):
                out[FIELDS[name]] = value or ("(no summary)" if name == "summary" else None)
            elif name in ("status", "priority", "type"):
                if value and value.get("name"):
                    out[FIELDS[name]] = value["name"]
            elif name == "assignee":
                email = (value or {}).get("email")
                if email:
                    rows = list(
                        self.query(
                            soql("Id", "User", f"Email = {soql_quote(email)} AND IsActive = true", limit=1),
                            action=f"find the user {email}",
                        )
                    )
                    if not rows:
                        raise ConnectorError(
                            f"Salesforce has no active user with the e-mail {email}.", status=400
                        )
                    out["OwnerId"] = rows[0]["Id"]
            elif name == "customFields" and value:
                out.update({k: v for k, v in value.items() if k.endswith("__c")})
            elif name == "parentId":
                out["ParentId"] = value or None
            # labels, dueDate, reporter (the contact): not written
        return out

    def create_item(self, fields: Mapping[str, Any]) -> ItemRef:
        body = {"Subject": "(no summary)", **self._body({k: v for k, v in fields.items() if k != "project"})}
        created = self._json(
            "POST", f"{self.data}/sobjects/{self.sobject}", json=body, action=f"create a {self.sobject}"
        )
        return self.ref(self._raw(created["id"]))

    def update_item(self, item_id: str, changes: Mapping[str, Any]) -> None:
        body = self._body(changes)
        if body:
            self._call(
                "PATCH",
                f"{self.data}/sobjects/{self.sobject}/{item_id}",
                json=body,
                action=f"update {item_id}",
            )

    def add_comment(self, item_id: str, *, body: str, internal: bool = False, author: str = "") -> str:
        created = self._json(
            "POST",
            f"{self.data}/sobjects/CaseComment",
            json={"ParentId": item_id, "CommentBody": body, "IsPublished": not internal},
            action=f"comment on {item_id}",
            idempotent=False,  # each POST adds a comment (the default for a POST, said for the reader)
        )
        return str(created["id"])

    def update_comment(self, item_id: str, comment_id: str, *, body: str) -> None:
        self._call(
            "PATCH",
            f"{self.data}/sobjects/CaseComment/{comment_id}",
            json={"CommentBody": body},
            action=f"edit comment {comment_id} on {item_id}",
        )

    def delete_comment(self, item_id: str, comment_id: str) -> None:
        self._call(
            "DELETE",
            f"{self.data}/sobjects/CaseComment/{comment_id}",
            action=f"delete comment {comment_id} on {item_id}",
            missing_ok=True,
        )

    def add_attachment(self, item_id: str, *, filename: str, mime_type: str, content: IO[bytes]) -> str:
        entity = json.dumps({"Title": filename, "PathOnClient": filename, "FirstPublishLocationId": item_id})
        form = MultipartFile(
            "VersionData",
            filename,
            content,
            mime_type,
            before=[("entity_content", "application/json", entity.encode())],
        )
        created = self._json(
            "POST",
            f"{self.data}/sobjects/ContentVersion",
            data=form,
            headers={"Content-Type": form.content_type},
            action=f"attach {filename} to {item_id}",
        )
        version = self._json(
            "GET",
            f"{self.data}/sobjects/ContentVersion/{created['id']}",
            params={"fields": "ContentDocumentId"},
            action=f"read the new file version {created['id']}",
        )
        return str(version["ContentDocumentId"])

    def delete_attachment(self, item_id: str, attachment_id: str) -> None:
        self._call(
            "DELETE",
            f"{self.data}/sobjects/ContentDocument/{quote(attachment_id)}",
            action=f"delete file {attachment_id} of {item_id}",
            missing_ok=True,
        )

    def open_attachment(self, item_id: str, attachment_id: str) -> Iterator[bytes]:
        rows = list(
            self.query(
                soql(
                    "Id",
                    "ContentVersion",
                    f"ContentDocumentId = {soql_quote(attachment_id)} AND IsLatest = true",
                ),
                action=f"find the latest version of file {attachment_id}",
            )
        )
        if not rows:
            raise ConnectorError(f"Salesforce has no file {attachment_id} on {item_id}.", status=404)
        return self.http.download(
            f"{self.data}/sobjects/ContentVersion/{rows[0]['Id']}/VersionData",
            action=f"download file {attachment_id} of {item_id}",
        )

    # --- queries: SOQL conditions (triggers, bulk exalate) -------------------------------------------------
    def _trigger_where(self, query: str, bound: str = "") -> str:
        condition = query.strip()
        full = re.match(r"(?is)^select\s.+?\sfrom\s+(\w+)\s*(.*)$", condition)
        if full:
            if full.group(1).lower() != self.sobject.lower():
                raise ConnectorError(
                    f"The trigger selects {full.group(1)} records; this instance syncs {self.sobject}. Write "
                    "only the condition (e.g. Priority = 'High' AND IsClosed = false).",
                    status=400,
                )
            condition = re.sub(r"(?is)^where\s+", "", full.group(2).strip())
        condition = re.sub(r"(?is)^where\s+", "", condition)
        # The node orders and limits itself: drop a trailing ORDER BY / LIMIT (outside quotes).
        condition = re.sub(r"(?is)\s*\b(?:order\s+by|limit)\b[^']*$", "", condition).strip()
        return " AND ".join(filter(None, (f"({condition})" if condition else "", bound)))

    def _trigger_query(self, statement: str, *, action: str) -> list[dict[str, Any]]:
        try:
            return list(self.query(statement, action=action))
        except ConnectorError as exc:
            if exc.status != 400:
                raise
            said = exc.message.split("Salesforce said: ", 1)[-1]
            raise ConnectorError(
                f"Salesforce refused the trigger's SOQL condition: {said.strip()} Fix the condition (what "
                f"follows WHERE in a query on {self.sobject}) and save the trigger again.",
                status=400,
            )

    def query_validate(self, query: str) -> None:
        self._trigger_query(
            soql("Id", self.sobject, self._trigger_where(query), limit=1), action="check the trigger's SOQL"
        )

    def query_matches(self, query: str, item: dict[str, Any]) -> bool:
        record_id = str(item["id"])
        if not _ID_RE.fullmatch(record_id):
            return False
        rows = self._trigger_query(
            soql("Id", self.sobject, self._trigger_where(query, f"Id = {soql_quote(record_id)}"), limit=1),
            action=f"match {item.get('key') or record_id} against the trigger",
        )
        return any(r["Id"] == record_id for r in rows)

    def query_search(self, query: str, *, after: str | None = None, limit: int = 100) -> list[ItemRef]:
        bound = f"Id > {soql_quote(after)}" if after and _ID_RE.fullmatch(str(after)) else ""
        statement = soql(
            "Id, CaseNumber, SystemModstamp",
            self.sobject,
            self._trigger_where(query, bound),
            "Id ASC",
            limit=max(1, min(limit, 2000)),
        )
        return [
            self.ref(rec) for rec in self._trigger_query(statement, action="search with the trigger's SOQL")
        ]

    # --- housekeeping ------------------------------------------------------------------------------------
    def test_credentials(self) -> str:
        self._token(fresh=True)
        limits = self._json("GET", f"{self.data}/limits", action="read the org's limits")
        daily = (limits or {}).get("DailyApiRequests") or {}
        return (
            f"Connected to Salesforce as user {self.me()}; API requests left today: "
            f"{daily.get('Remaining', '?')} of {daily.get('Max', '?')}."
        )

    def is_own_change(self, item: Mapping[str, Any]) -> bool:
        """Whether the record was last modified by the token's user (the node's integration user)."""
        raw = item if "LastModifiedById" in item else self._raw(str(item.get("Id") or item["id"]))
        return raw.get("LastModifiedById") == self.me()

    # --- webhooks (Flow / Apex HTTP callouts) -------------------------------------------------------------
    def verify_webhook(self, headers: Mapping[str, str], body: bytes, secret: str) -> bool:
        name = str(self._settings().get("webhook_header", "X-Exalate-Token"))
        return common.same_secret(common.header(headers, name), secret)

    def parse_webhook(self, headers: Mapping[str, str], body: bytes) -> list[ItemRef]:
        try:
            event = json.loads(body or b"{}")
        except ValueError:
            return []
        rows = event if isinstance(event, list) else [event]
        refs = []
        for row in rows:
            row = common.obj(row)
            record_id = common.scalar(row.get("Id")) or common.scalar(row.get("id"))
            if _ID_RE.fullmatch(record_id):
                refs.append(ItemRef(id=record_id, key=common.scalar(row.get("CaseNumber")) or record_id))
        return refs


def _iso(value: str) -> str:
    """Salesforce's ``2026-03-01T09:00:00.000+0000`` as ``2026-03-01T09:00:00.000Z`` (milliseconds kept:
    two changes within one second must not look like one)."""
    return common.iso_ms(common.parse_ts(value)) if value else ""


def _mime(filename: str) -> str:
    import mimetypes

    return mimetypes.guess_type(filename)[0] or "application/octet-stream"
