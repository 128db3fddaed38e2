"""Connector for ServiceNow records (Table API), ``incident`` by default, with basic auth or an OAuth token.

Instance configuration: ``url`` is the instance URL (``https://<instance>.service-now.com``);
``credentials`` is ``{"username": "...", "password": "..."}`` (basic auth) or ``{"token": "..."}`` (an OAuth
access token, sent as ``Authorization: Bearer``); ``settings`` may hold ``table`` (default ``incident``),
``node_user`` (the integration user's ``user_name``; defaults to the basic-auth username), ``close_code``
and ``close_notes`` (defaults for resolving), ``resolved_states`` (state labels that need them; default
Resolved, Closed), ``type_field`` (default ``category``), ``webhook_header`` (default ``X-Exalate-Token``)
and ``rate_limit_per_s``.

How a record maps onto the hubIssue: the ``sys_id`` is the id, ``number`` the key (``INC0010001``);
``short_description``/``description``; ``state`` by its label (from ``sys_choice``); ``priority`` by label
(``1 - Critical`` … ``5 - Planning``; written as the impact and urgency that the default priority lookup
turns into it, because the priority of an incident is computed); the ``type_field`` by label; ServiceNow has
no labels (``[]``); ``assigned_to`` and ``caller_id`` (or ``opened_by``) by e-mail; ``due_date``;
``close_code``/``close_notes`` and every ``u_`` field are custom fields.

* Reads use ``sysparm_display_value=all`` (each field is ``{value, display_value}``); times are the UTC
  ``value`` (``YYYY-MM-DD HH:MM:SS``).
* Comments are the journal fields: ``comments`` (additional comments, public) and ``work_notes`` (internal).
  They are read from ``sys_journal_field`` and written by setting ``comments``/``work_notes`` on the record;
  the new entry's id is found in ``sys_journal_field`` afterwards. Editing or deleting an entry updates or
  deletes its ``sys_journal_field`` row (needs the admin role or an ACL granting it; the record's history
  keeps the old text).
* Attachments: ``POST /api/now/attachment/file?table_name=&table_sys_id=&file_name=`` (the raw file,
  streamed), listed with ``/api/now/attachment?sysparm_query=``, downloaded from
  ``/api/now/attachment/{sys_id}/file``; ServiceNow's ``hash`` (SHA-256) is the hubIssue's sha256.
* Resolving needs ``close_code`` and ``close_notes`` (the data policy refuses it otherwise): they are taken
  from the change's customFields, else the record, else the instance's settings; when one is still missing
  the connector raises a ConnectorError that names it, before sending anything.
* Polling: ``sysparm_query=sys_updated_on>=<cursor - overlap>^ORDERBYsys_updated_on`` with
  ``sysparm_limit``/``sysparm_offset``, de-duplicated on (sys_id, sys_updated_on).
* Triggers hold an encoded query, as a list filter's "Copy query" gives it (``active=true^priority=1``,
  ``short_descriptionLIKEprinter^ORcategory=network``); a trailing ``ORDERBY`` is dropped. ServiceNow
  evaluates it on the Table API (``sysparm_query``), ``^sys_id=<id>`` for one record and
  ``^number><after>^ORDERBYnumber`` for pages. ServiceNow *ignores* a condition on a field the table does
  not have (unless ``glide.invalid_query.returns_no_rows`` is set), which would match more records than
  meant: the connector checks every field name (before any dot-walk) against the fields of a record of the
  table and refuses unknown ones.
* ServiceNow sends no webhooks of its own: a business rule with an outbound REST message may post
  ``{"sys_id": "...", "table": "..."}`` to the node with the shared secret in ``X-Exalate-Token``.
* Retries: setting ``comments``/``work_notes`` adds a journal entry each time it is sent, and a create adds a
  record: neither is repeated by the HTTP seam once ServiceNow may have carried it out (lost answer, timeout,
  5xx). The pipeline then looks for what the earlier attempt wrote: ``find_created`` for a record (the node
  user's records created since then with the same short description), an unlinked journal entry with the
  same text. Field updates (``PATCH``) set values and are repeated as usual.
* ``is_own_change``: the record's ``sys_mod_count`` is one the node's write left, or ``sys_updated_by`` is
  the node's user.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Iterator, Mapping
from datetime import UTC, datetime, timedelta
from itertools import islice
from typing import IO, Any
from urllib.parse import quote

from instances.connectors import _common as common
from instances.connectors.base import Connector, ConnectorError, ItemRef, register
from instances.connectors.http import HttpClient

OVERLAP = timedelta(seconds=10)
PAGE = 100
FIELDS_TTL = 3600.0  # how long the field names of the table are trusted
# The default incident priority lookup (impact, urgency) → priority; the first pair for each priority.
PRIORITY_IMPACT_URGENCY = {
    "1": ("1", "1"),
    "2": ("1", "2"),
    "3": ("2", "2"),
    "4": ("2", "3"),
    "5": ("3", "3"),
}
DEFAULT_RESOLVED = ("Resolved", "Closed")
HINTS = {
    401: "the credentials were rejected. Check the user name and password (or the OAuth token) in the "
    "instance's credentials, and that the user has the web service access role.",
    403: "ServiceNow refused it (ACL or data policy). Check the integration user's roles and the mandatory "
    "fields.",
    404: "it does not exist or the user cannot see it. Check the URL, the table setting and the ACLs.",
}

_seen = common.SeenWindow()
_own = common.OwnWrites()
_cache: dict[tuple[str, ...], Any] = {}


def _sn_time(value: str) -> str:
    """ServiceNow's ``YYYY-MM-DD HH:MM:SS`` (UTC) as ISO 8601."""
    return common.iso(common.parse_ts(value)) if value else ""


def _v(field: Any) -> Any:
    return field.get("value") if isinstance(field, dict) else field


def _d(field: Any) -> Any:
    return field.get("display_value") if isinstance(field, dict) else field


@register
class ServiceNowConnector(Connector):
    """A ServiceNow table. Item ids are sys_ids; comment ids are sys_journal_field sys_ids; attachment ids
    are sys_attachment sys_ids."""

    tracker_type = "servicenow"

    _http: HttpClient | None = None

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._numbers: dict[str, str] = {}  # sys_id -> number, from the last query pages

    # --- plumbing ----------------------------------------------------------------------------------------
    @property
    def creds(self) -> dict[str, Any]:
        example = '{"username": "...", "password": "..."} or {"token": "<OAuth access token>"}'
        creds = common.credentials(self.instance, "ServiceNow", (), example)
        if not creds.get("token") and not (creds.get("username") and creds.get("password")):
            raise ConnectorError(
                f"{self.instance.name}: the ServiceNow credentials need a username and password or a token. "
                f"Set them to {example}.",
                status=401,
            )
        return creds

    @property
    def base_url(self) -> str:
        return common.base_url(self.instance, "ServiceNow instance", "https://<instance>.service-now.com")

    @property
    def http(self) -> HttpClient:
        if self._http is None:
            creds = self.creds
            auth = (
                f"Bearer {creds['token']}"
                if creds.get("token")
                else common.basic_auth(str(creds["username"]), str(creds["password"]))
            )
            self._http = common.build_http(
                self.instance,
                tracker_type=self.tracker_type,
                service="ServiceNow",
                base_url=self.base_url + "/api/now",
                headers={"Authorization": auth, "Accept": "application/json"},
                hints=HINTS,
            )
        return self._http

    @http.setter
    def http(self, client: HttpClient) -> None:
        self._http = client

    @property
    def account(self) -> str:
        creds = self.creds
        return common.account_key(self.instance, str(creds.get("token") or creds.get("password")))

    def _settings(self) -> dict[str, Any]:
        return dict(self.instance.settings or {})

    @property
    def table(self) -> str:
        table = str(self._settings().get("table") or "incident")
        if not re.fullmatch(r"[a-z0-9_]+", table):
            raise ConnectorError(
                f"'{table}' is not a ServiceNow table name. Fix the instance's table setting."
            )
        return table

    @property
    def node_user(self) -> str:
        return str(self._settings().get("node_user") or self.creds.get("username") or "")

    def item_url(self, sys_id: str) -> str:
        return f"{self.base_url}/nav_to.do?uri={self.table}.do?sys_id={sys_id}"

    def ref(self, rec: Mapping[str, Any]) -> ItemRef:
        sys_id = _v(rec["sys_id"])
        return ItemRef(
            id=sys_id,
            key=_v(rec.get("number")) or sys_id,
            url=self.item_url(sys_id),
            updated=_sn_time(_v(rec.get("sys_updated_on")) or ""),
        )

    def _raw(self, item_id: str) -> dict[str, Any]:
        if not re.fullmatch(r"[0-9a-f]{32}", str(item_id)):
            raise ConnectorError(f"'{item_id}' is not a ServiceNow sys_id.", status=404)
        return self.http.get_json(
            f"table/{self.table}/{item_id}",
            params={"sysparm_display_value": "all", "sysparm_exclude_reference_link": "true"},
            action=f"read {self.table} {item_id}",
        )["result"]

    def _query(self, table: str, query: str, *, fields: str = "", limit: int = PAGE) -> Iterator[dict]:
        offset = 0
        while True:
            params = {"sysparm_query": query, "sysparm_limit": limit, "sysparm_offset": offset}
            if fields:
                params["sysparm_fields"] = fields
            rows = self.http.get_json(f"table/{table}", params=params, action=f"query {table}")["result"]
            yield from rows
            if len(rows) < limit:
                return
            offset += len(rows)

    def _user(self, sys_id: str) -> dict[str, Any] | None:
        if not sys_id:
            return None
        key = ("user", self.account, sys_id)
        if key not in _cache:
            response = self.http.request(
                "GET",
                f"table/sys_user/{sys_id}",
                params={"sysparm_fields": "sys_id,user_name,name,email"},
                action=f"read user {sys_id}",
                ok_statuses=(403, 404),
            )
            _cache[key] = response.json()["result"] if response.status_code == 200 else None
        return _cache[key]

    def _person_ref(self, field: Any) -> dict[str, Any] | None:
        sys_id = _v(field)
        if not sys_id:
            return None
        user = self._user(sys_id) or {}
        return {"email": user.get("email") or None, "displayName": user.get("name") or _d(field)}

    def _person_by_name(self, user_name: str) -> dict[str, Any] | None:
        if not user_name:
            return None
        key = ("user_name", self.account, user_name)
        if key not in _cache:
            rows = list(
                self._query("sys_user", f"user_name={user_name}", fields="sys_id,name,email", limit=1)
            )
            _cache[key] = rows[0] if rows else None
        user = _cache[key] or {}
        return {"email": user.get("email") or None, "displayName": user.get("name") or user_name}

    def _choices(self, element: str) -> dict[str, str]:
        """label → value of a choice field of the table (``sys_choice``), cached."""
        key = ("choices", self.account, self.table, element)
        if key not in _cache:
            rows = self._query(
                "sys_choice",
                f"name={self.table}^element={element}^inactive=false^ORDERBYsequence",
                fields="label,value",
            )
            _cache[key] = {r["label"]: r["value"] for r in rows}
        return _cache[key]

    # --- reads -------------------------------------------------------------------------------------------
    def get_item(self, item_id: str) -> dict[str, Any]:
        rec = self._raw(item_id)
        journal = list(
            self._query(
                "sys_journal_field",
                f"element_id={item_id}^elementINcomments,work_notes^ORDERBYsys_created_on",
                fields="sys_id,element,value,sys_created_on,sys_created_by",
            )
        )
        atts = self.http.get_json(
            "attachment",
            params={"sysparm_query": f"table_name={self.table}^table_sys_id={item_id}^ORDERBYsys_created_on"},
            action=f"list the attachments of {item_id}",
        )["result"]
        return self.to_hub(rec, journal, atts)

    def to_hub(self, rec: Mapping[str, Any], journal: list[dict], atts: list[dict]) -> dict[str, Any]:
        type_field = str(self._settings().get("type_field", "category"))
        custom = {k: _v(v) for k, v in rec.items() if k.startswith("u_") and _v(v) not in (None, "")}
        for name in ("close_code", "close_notes"):
            if _v(rec.get(name)):
                custom[name] = _v(rec[name])
        sys_id = _v(rec["sys_id"])
        return {
            "id": sys_id,
            "key": _v(rec.get("number")) or sys_id,
            "url": self.item_url(sys_id),
            "summary": _v(rec.get("short_description")) or "",
            "description": _v(rec.get("description")) or None,
            "status": {"name": _d(rec.get("state")) or None},
            "priority": {"name": _d(rec.get("priority")) or None},
            "type": {"name": _d(rec.get(type_field)) or None},
            "labels": [],
            "assignee": self._person_ref(rec.get("assigned_to")),
            "reporter": self._person_ref(rec.get("caller_id") or rec.get("opened_by")),
            "dueDate": (_v(rec.get("due_date")) or "")[:10] or None,
            "parentId": _v(rec.get("parent")) or None,
            "created": _sn_time(_v(rec.get("sys_created_on")) or ""),
            "updated": _sn_time(_v(rec.get("sys_updated_on")) or ""),
            "project": {"idStr": self.table, "key": self.table, "name": self.table},
            "customFields": custom,
            "comments": [
                {
                    "id": j["sys_id"],
                    "body": j.get("value") or "",
                    "author": self._person_by_name(j.get("sys_created_by") or ""),
                    "created": _sn_time(j.get("sys_created_on") or ""),
                    "updated": _sn_time(j.get("sys_created_on") or ""),
                    "internal": j.get("element") == "work_notes",
                }
                for j in journal
                if (j.get("value") or "").strip()
            ],
            "attachments": [
                {
                    "id": a["sys_id"],
                    "filename": a.get("file_name"),
                    "mimeType": a.get("content_type") or "application/octet-stream",
                    "size": int(a["size_bytes"]) if str(a.get("size_bytes") or "").isdigit() else None,
                    "sha256": a.get("hash") if re.fullmatch(r"[0-9a-f]{64}", a.get("hash") or "") else None,
                    "created": _sn_time(a.get("sys_created_on") or ""),
                }
                for a in atts
            ],
        }

    def find_item(self, key: str) -> ItemRef | None:
        key = str(key).strip()
        if re.fullmatch(r"[0-9a-f]{32}", key):
            query = f"sys_id={key}"
        elif re.fullmatch(r"[A-Za-z]+\d+", key):
            query = f"number={key.upper()}"
        else:
            return None
        rows = list(self._query(self.table, query, fields="sys_id,number,sys_updated_on", limit=1))
        return self.ref(rows[0]) if rows else None

    def search_updated_since(
        self, cursor: str | None, *, limit: int = 100
    ) -> tuple[list[ItemRef], str | None]:
        """Records updated at or after ``cursor`` minus an overlap window, oldest first, each change once."""
        since = common.parse_ts(cursor) - OVERLAP if cursor else None
        query = "ORDERBYsys_updated_on"
        if since is not None:
            query = f"sys_updated_on>={since.strftime('%Y-%m-%d %H:%M:%S')}^" + query
        refs: list[ItemRef] = []
        newest = cursor
        for rec in self._query(
            self.table, query, fields="sys_id,number,sys_updated_on", limit=min(PAGE, limit * 2)
        ):
            updated = _sn_time(rec["sys_updated_on"])
            if not _seen.fresh(self.account, rec["sys_id"], updated, self.http):
                continue
            refs.append(self.ref(rec))
            if not newest or common.parse_ts(updated) > common.parse_ts(newest):
                newest = updated
            if len(refs) >= limit:
                break
        if newest:
            _seen.forget_before(self.account, common.parse_ts(newest) - 2 * OVERLAP)
        return refs, newest

    def find_created(self, fields: Mapping[str, Any], *, since: datetime) -> list[ItemRef]:
        """Records of the table the node's user created at or after ``since`` with the short description
        ``create_item`` would give, newest first (at most two pages).

        Table API facts (ServiceNow REST API reference): ``sys_created_by`` holds the creator's ``user_name``
        and ``sys_created_on`` the creation time, ``YYYY-MM-DD HH:MM:SS`` in whole seconds; a date-time
        written as text in an encoded query is read as UTC, as stored (``javascript:gs.dateGenerate`` would
        use the user's time zone); ``ORDERBYDESC`` sorts newest first. The short description is added to the
        query only when it cannot break the encoded query (no ``^``, no surrounding whitespace); the creator,
        the time (from ``since`` cut to its second) and the text are then checked exactly here. Without a
        user name (a token and no ``node_user`` setting) the creator cannot be told: nothing is found.
        """
        user = self.node_user
        if not user or "^" in user:
            return []
        summary = str(self._body({"summary": fields.get("summary")}, None)["short_description"]).strip()
        cut = since.astimezone(UTC).replace(microsecond=0)
        terms = [f"sys_created_by={user}", f"sys_created_on>={cut.strftime('%Y-%m-%d %H:%M:%S')}"]
        if summary and "^" not in summary and "\n" not in summary:
            terms.append(f"short_description={summary}")
        rows = islice(
            self._query(
                self.table,
                "^".join([*terms, "ORDERBYDESCsys_created_on"]),
                fields="sys_id,number,sys_updated_on,sys_created_on,sys_created_by,short_description",
            ),
            2 * PAGE,
        )
        mine = [
            row
            for row in rows
            if row.get("sys_created_by") == user
            and row.get("sys_created_on")
            and common.parse_ts(row["sys_created_on"]) >= cut
            and (row.get("short_description") or "").strip() == summary
        ]
        mine.sort(key=lambda r: (common.parse_ts(r["sys_created_on"]), r.get("number") or ""), reverse=True)
        return [self.ref(row) for row in mine]

    def metadata(self) -> dict[str, list[Any]]:
        type_field = str(self._settings().get("type_field", "category"))
        users = [
            {"email": u.get("email") or None, "displayName": u.get("name"), "id": u["sys_id"]}
            for u in self._query("sys_user", "active=true^emailISNOTEMPTY", fields="sys_id,name,email")
        ]
        return {
            "statuses": list(self._choices("state")),
            "priorities": list(self._choices("priority")),
            "types": list(self._choices(type_field)),
            "users": users,
        }

    # --- writes ------------------------------------------------------------------------------------------
    def _choice_value(self, element: str, label: str) -> str:
        choices = self._choices(element)
        for known, value in choices.items():
            if known.casefold() == label.strip().casefold() or value == label.strip():
                return value
        raise ConnectorError(
            f"ServiceNow {self.table}.{element} has no choice '{label}'. Valid: {', '.join(choices)}. "
            f"Map it in the sync rules.",
            status=400,
        )

    def _user_sys_id(self, who: Mapping[str, Any] | None) -> str:
        email = ((who or {}).get("email") or "").strip()
        if not email:
            return ""
        rows = list(self._query("sys_user", f"email={email}", fields="sys_id", limit=1))
        if not rows:
            raise ConnectorError(
                f"ServiceNow has no user with the e-mail {email}. Create it or change the mapping."
            )
        return rows[0]["sys_id"]

    def _body(self, changes: Mapping[str, Any], current: Mapping[str, Any] | None) -> dict[str, Any]:
        out: dict[str, Any] = {}
        custom = dict(changes.get("customFields") or {})
        for name, value in changes.items():
            if name == "summary":
                out["short_description"] = str(value or "(no summary)")
            elif name == "description":
                out["description"] = value or ""
            elif name == "status" and value and value.get("name"):
                out["state"] = self._choice_value("state", str(value["name"]))
                if str(value["name"]).casefold() in {
                    s.casefold() for s in self._settings().get("resolved_states", DEFAULT_RESOLVED)
                }:
                    missing = []
                    for field in ("close_code", "close_notes"):
                        chosen = (
                            custom.get(field) or _v((current or {}).get(field)) or self._settings().get(field)
                        )
                        if chosen:
                            out[field] = chosen
                        else:
                            missing.append(field)
                    if missing:
                        raise ConnectorError(
                            f"ServiceNow needs {' and '.join(missing)} to set {self.table} to "
                            f"'{value['name']}'. Set {', '.join(missing)} in the sync rules "
                            f"(issue.customFields) or as defaults in the instance's settings.",
                            status=400,
                        )
            elif name == "priority" and value and value.get("name"):
                number = self._choice_value("priority", str(value["name"]))
                if self.table == "incident" and number in PRIORITY_IMPACT_URGENCY:
                    out["impact"], out["urgency"] = PRIORITY_IMPACT_URGENCY[number]
                else:
                    out["priority"] = number
            elif name == "type" and value and value.get("name"):
                field = str(self._settings().get("type_field", "category"))
                out[field] = self._choice_value(field, str(value["name"]))
            elif name == "assignee":
                out["assigned_to"] = self._user_sys_id(value)
            elif name == "dueDate":
                out["due_date"] = f"{value} 12:00:00" if value else ""
            elif name == "customFields" and value:
                for key, val in value.items():
                    if key.startswith("u_") or key in ("close_code", "close_notes"):
                        out[key] = val
            # labels (none in ServiceNow), reporter (caller: not changed by sync): not written
        return out

    def _write(
        self, item_id: str, body: Mapping[str, Any], *, action: str, idempotent: bool | None = None
    ) -> dict[str, Any]:
        rec = self.http.send_json(
            "PATCH",
            f"table/{self.table}/{item_id}?sysparm_display_value=false",
            dict(body),
            action=action,
            idempotent=idempotent,
        )["result"]
        _own.remember(self.account, item_id, rec.get("sys_mod_count"))
        return rec

    def create_item(self, fields: Mapping[str, Any]) -> ItemRef:
        wanted = {k: v for k, v in fields.items() if k not in ("project", "status")}
        body = {"short_description": "(no summary)", **self._body(wanted, None)}
        rec = self.http.send_json(
            "POST", f"table/{self.table}?sysparm_display_value=false", body, action=f"create a {self.table}"
        )["result"]
        _own.remember(self.account, rec["sys_id"], rec.get("sys_mod_count"))
        if (fields.get("status") or {}).get("name"):
            self.update_item(
                rec["sys_id"], {"status": fields["status"], "customFields": fields.get("customFields")}
            )
            rec = self._raw(rec["sys_id"])
        return self.ref(rec)

    def update_item(self, item_id: str, changes: Mapping[str, Any]) -> None:
        resolving = bool((changes.get("status") or {}).get("name"))
        current = self._raw(item_id) if resolving else None
        body = self._body(changes, current)
        if body:
            self._write(item_id, body, action=f"update {self.table} {item_id}")

    def add_comment(self, item_id: str, *, body: str, internal: bool = False, author: str = "") -> str:
        element = "work_notes" if internal else "comments"
        # Each such PATCH adds a journal entry: not repeated once ServiceNow may have done it.
        self._write(item_id, {element: body}, action=f"comment on {self.table} {item_id}", idempotent=False)
        # The record does not return the journal entry: find the newest one by the node with this text.
        user = self.node_user
        rows = list(
            self._query(
                "sys_journal_field",
                f"element_id={item_id}^element={element}^ORDERBYDESCsys_created_on",
                fields="sys_id,value,sys_created_by",
                limit=20,
            )
        )
        for row in rows:
            if (row.get("value") or "").strip() == body.strip() and (
                not user or row.get("sys_created_by") == user
            ):
                return row["sys_id"]
        raise ConnectorError(
            f"ServiceNow accepted the comment on {item_id} but it cannot be found in sys_journal_field. "
            f"Give the integration user read access to sys_journal_field.",
        )

    def update_comment(self, item_id: str, comment_id: str, *, body: str) -> None:
        self.http.send_json(
            "PATCH",
            f"table/sys_journal_field/{comment_id}",
            {"value": body},
            action=f"edit comment {comment_id} on {self.table} {item_id}",
        )

    def delete_comment(self, item_id: str, comment_id: str) -> None:
        self.http.request(
            "DELETE",
            f"table/sys_journal_field/{comment_id}",
            action=f"delete comment {comment_id} on {self.table} {item_id}",
            ok_statuses=(404,),
        )

    def add_attachment(self, item_id: str, *, filename: str, mime_type: str, content: IO[bytes]) -> str:
        result = self.http.upload(
            "attachment/file",
            content,
            params={"table_name": self.table, "table_sys_id": item_id, "file_name": filename},
            content_type=mime_type or "application/octet-stream",
            action=f"attach {filename} to {self.table} {item_id}",
        ).json()["result"]
        return str(result["sys_id"])

    def delete_attachment(self, item_id: str, attachment_id: str) -> None:
        self.http.request(
            "DELETE",
            f"attachment/{quote(attachment_id)}",
            action=f"delete attachment {attachment_id} of {item_id}",
            ok_statuses=(404,),
        )

    def open_attachment(self, item_id: str, attachment_id: str) -> Iterator[bytes]:
        return self.http.download(
            f"attachment/{quote(attachment_id)}/file",
            action=f"download attachment {attachment_id} of {item_id}",
        )

    # --- queries: encoded queries (triggers, bulk exalate) ------------------------------------------------
    def _table_fields(self) -> set[str] | None:
        """The table's field names (one record read without ``sysparm_fields`` shows them all, inherited ones
        included), cached for an hour; None when the table has no record to show them."""
        key = ("fields", self.account, self.table)
        cached = _cache.get(key)
        if cached is None or time.monotonic() - cached[0] > FIELDS_TTL:
            rows = self.http.get_json(
                f"table/{self.table}", params={"sysparm_limit": 1}, action=f"read the fields of {self.table}"
            )["result"]
            if not rows:
                return None
            cached = _cache[key] = (time.monotonic(), set(rows[0]))
        return cached[1]

    def _query_groups(self, query: str) -> list[str]:
        """The trigger's encoded query split at ``^NQ`` (each part is ANDed with the node's own bounds),
        with ``ORDERBY`` terms dropped and every field name checked."""
        text = query.strip().lstrip("^")
        groups: list[str] = []
        fields = self._table_fields()
        for group in text.split("^NQ") if text else []:
            terms = []
            for term in group.split("^"):
                if not term or term == "EQ" or term.startswith(("ORDERBY", "GROUPBY")):
                    continue
                terms.append(term)
                match = re.match(r"(?:OR|NQ)?([a-z0-9_]+)(?:\.[a-z0-9_.]+)?(.*)$", term)
                if (
                    not match
                    or not match.group(2)
                    or match.group(2)[0] not in "=!<>ABCDEFGHIJKLMNOPQRSTUVWXYZ"
                ):
                    raise ConnectorError(
                        f"'{term}' is not a ServiceNow encoded query condition (field, operator, value, e.g. "
                        "priority=1 or short_descriptionLIKEprinter). Copy the query from a list filter "
                        "(right-click the breadcrumb → Copy query).",
                        status=400,
                    )
                if fields is not None and match.group(1) not in fields:
                    raise ConnectorError(
                        f"The {self.table} table has no field '{match.group(1)}' (in '{term}'). ServiceNow "
                        "would ignore that condition and match more records than meant; use the field's "
                        "column name (e.g. short_description, not 'Short description').",
                        status=400,
                    )
            if terms:
                groups.append("^".join(terms))
        return groups

    def _bounded(self, query: str, bound: str, order: str = "") -> str:
        groups = self._query_groups(query) or [""]
        text = "^NQ".join("^".join(filter(None, (g, bound))) for g in groups)
        return "^".join(filter(None, (text, order)))

    def _run_query(self, query: str, *, limit: int, action: str) -> list[dict[str, Any]]:
        response = self.http.request(
            "GET",
            f"table/{self.table}",
            params={
                "sysparm_query": query,
                "sysparm_limit": limit,
                "sysparm_fields": "sys_id,number,sys_updated_on",
            },
            action=action,
            ok_statuses=(400,),
        )
        data = response.json()
        if response.status_code == 400:
            error = data.get("error") or {}
            raise ConnectorError(
                f"ServiceNow refused the trigger's query: {error.get('message')}: {error.get('detail')}. Fix "
                "the encoded query (try it as a list filter first) and save the trigger again.",
                status=400,
            )
        return data["result"]

    def query_validate(self, query: str) -> None:
        self._run_query(self._bounded(query, ""), limit=1, action="check the trigger's query")

    def query_matches(self, query: str, item: dict[str, Any]) -> bool:
        sys_id = str(item["id"])
        if not re.fullmatch(r"[0-9a-f]{32}", sys_id):
            return False
        rows = self._run_query(
            self._bounded(query, f"sys_id={sys_id}"),
            limit=1,
            action=f"match {item.get('key')} against the trigger",
        )
        return any(r["sys_id"] == sys_id for r in rows)

    def query_search(self, query: str, *, after: str | None = None, limit: int = 100) -> list[ItemRef]:
        """Matching records by ``number`` (it only grows), the page after the record ``after``."""
        bound = ""
        if after:
            number = self._numbers.get(after) or _v(self._raw(after).get("number"))
            bound = f"number>{number}"
        rows = self._run_query(
            self._bounded(query, bound, "ORDERBYnumber"),
            limit=max(1, min(PAGE, limit)),
            action="search records with the trigger's query",
        )
        for row in rows:
            self._numbers[row["sys_id"]] = row["number"]
        return [self.ref(row) for row in rows]

    # --- housekeeping ------------------------------------------------------------------------------------
    def test_credentials(self) -> str:
        list(self._query(self.table, "ORDERBYsys_created_on", fields="sys_id", limit=1))
        return f"Connected to ServiceNow as {self.node_user or 'the token user'}, table {self.table}."

    def is_own_change(self, item: Mapping[str, Any]) -> bool:
        """Whether the record's latest update was the node's (its ``sys_mod_count`` after a node write, or
        ``sys_updated_by`` is the node's user)."""
        raw = item if "sys_mod_count" in item else self._raw(str(item.get("sys_id") or item["id"]))
        if _own.knows(self.account, _v(raw["sys_id"]), _v(raw.get("sys_mod_count"))):
            return True
        return bool(self.node_user) and _v(raw.get("sys_updated_by")) == self.node_user

    # --- webhooks (business rule + outbound REST message) -------------------------------------------------
    def verify_webhook(self, headers: Mapping[str, str], body: bytes, secret: str) -> bool:
        name = str(self._settings().get("webhook_header", "X-Exalate-Token"))
        return common.same_secret(common.header(headers, name), secret)

    def parse_webhook(self, headers: Mapping[str, str], body: bytes) -> list[ItemRef]:
        try:
            event = json.loads(body or b"{}")
        except ValueError:
            return []
        if not isinstance(event, dict) or event.get("table", self.table) != self.table:
            return []
        sys_id = common.scalar(event.get("sys_id"))
        if not re.fullmatch(r"[0-9a-f]{32}", sys_id):
            return []
        updated = _sn_time(common.scalar(event.get("sys_updated_on")))
        return [
            ItemRef(
                id=sys_id,
                key=common.scalar(event.get("number")) or sys_id,
                url=self.item_url(sys_id),
                updated=updated,
            )
        ]
