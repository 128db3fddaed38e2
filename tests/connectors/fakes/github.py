"""An in-memory GitHub (REST API 2022-11-28, issues of one repository), checked against GitHub's description.

Implements what the connector uses: ``GET /user``; ``GET|POST /repos/{owner}/{repo}/issues`` (``state``,
``since`` (updated at or after), ``creator`` (the login that opened the issue), ``sort``, ``direction``,
``per_page``, ``page`` with a ``Link`` header); ``GET|PATCH
/repos/{owner}/{repo}/issues/{number}``; ``GET|POST .../issues/{number}/comments``; ``PATCH|DELETE
.../issues/comments/{id}``; ``GET .../assignees``, ``.../labels``, ``.../milestones``; ``GET /search/issues``
(a subset of the issue search syntax: ``repo:``, ``is:``, ``state:``, ``[-]label:``, ``no:``, ``assignee:``,
``author:``, ``milestone:``, ``created:>=``, words in the title or body; ``sort=created``, ``order``,
``per_page``, ``page``, the first 1000 results). ``/search/issues`` is not in the repository's copy of
GitHub's description (an issues-only subset), so its requests and responses are checked by hand: the
parameters as GitHub documents them, and each item against the description's ``issue`` schema. Every GET
answers with an ``ETag`` and honours ``If-None-Match`` with a bodiless 304. ``webhook(...)`` builds a signed
delivery whose payload is checked against GitHub's webhook descriptions.

The GitHub facts the fake reproduces (and the connector relies on) are listed in
``tests/connectors/test_github.py``.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import re
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import urlencode

import requests
from openapi_core.contrib.requests import RequestsOpenAPIWebhookRequest

from tests.connectors.fakes.base import Call, ContractFake, Reply, describe
from tests.contracts.specs import GITHUB_REST, GITHUB_WEBHOOKS, openapi

API = "https://api.github.com"
WEB = "https://github.com"
TOKEN = "github_pat_test_0123456789"


class FakeGitHub(ContractFake):
    base_url = API
    spec = GITHUB_REST
    # GitHub answers 401 (bad token), 403 (rate limit, permissions) and 404 (not found or not visible) on
    # any endpoint, documented in the REST guide though not listed per operation in the description.
    UNDECLARED_OK = ContractFake.UNDECLARED_OK | {401, 403, 404}

    def __init__(self, owner: str = "octo", repo: str = "widgets", *, token: str = TOKEN) -> None:
        super().__init__()
        self.owner, self.repo, self.token = owner, repo, token
        self.full_name = f"{owner}/{repo}"
        self.clock = datetime(2026, 3, 1, 9, 0, 0, tzinfo=UTC)
        self.next_id = 1000
        self.users: dict[str, dict[str, Any]] = {}
        self.issues: dict[int, dict[str, Any]] = {}
        self.comments: dict[int, dict[str, Any]] = {}
        self.labels: dict[str, dict[str, Any]] = {}
        self.milestones: dict[int, dict[str, Any]] = {}
        self.collaborators: list[str] = []
        self.me = "exalate-bot"
        self.add_user("exalate-bot", name="Exalate Node", collaborator=True)
        self.add_user("octocat", name="The Octocat", email="octocat@example.com", collaborator=True)
        self.add_user("hubot", collaborator=True)
        repo_path = f"/repos/{owner}/{repo}"
        self.route("GET", "/user", self.get_user)
        self.route("GET", f"{repo_path}/issues", self.list_issues)
        self.route("POST", f"{repo_path}/issues", self.create_issue)
        self.route("GET", f"{repo_path}/issues/{{number}}", self.get_issue)
        self.route("PATCH", f"{repo_path}/issues/{{number}}", self.update_issue)
        self.route("GET", f"{repo_path}/issues/{{number}}/comments", self.list_comments)
        self.route("POST", f"{repo_path}/issues/{{number}}/comments", self.create_comment)
        self.route("PATCH", f"{repo_path}/issues/comments/{{comment_id}}", self.update_comment)
        self.route("DELETE", f"{repo_path}/issues/comments/{{comment_id}}", self.delete_comment)
        self.route("GET", f"{repo_path}/assignees", self.list_assignees)
        self.route("GET", f"{repo_path}/labels", self.list_labels)
        self.route("GET", f"{repo_path}/milestones", self.list_milestones)
        self.route("GET", "/search/issues", self.search_issues)

    # --- state helpers -------------------------------------------------------------------------------------
    def tick(self) -> str:
        self.clock += timedelta(seconds=1)
        return self.clock.strftime("%Y-%m-%dT%H:%M:%SZ")

    def new_id(self) -> int:
        self.next_id += 1
        return self.next_id

    def add_user(self, login: str, *, name: str | None = None, email: str | None = None, collaborator=False):  # type: ignore[no-untyped-def]
        uid = len(self.users) + 1
        base = f"{API}/users/{login}"
        self.users[login] = {
            "login": login,
            "id": uid,
            "node_id": f"U_{uid}",
            "avatar_url": f"https://avatars.githubusercontent.com/u/{uid}",
            "gravatar_id": "",
            "url": base,
            "html_url": f"{WEB}/{login}",
            "followers_url": f"{base}/followers",
            "following_url": f"{base}/following{{/other_user}}",
            "gists_url": f"{base}/gists{{/gist_id}}",
            "starred_url": f"{base}/starred{{/owner}}{{/repo}}",
            "subscriptions_url": f"{base}/subscriptions",
            "organizations_url": f"{base}/orgs",
            "repos_url": f"{base}/repos",
            "events_url": f"{base}/events{{/privacy}}",
            "received_events_url": f"{base}/received_events",
            "type": "User",
            "site_admin": False,
            "_name": name,
            "_email": email,
        }
        if collaborator:
            self.collaborators.append(login)
        return self.users[login]

    def simple_user(self, login: str | None) -> dict[str, Any] | None:
        if login is None:
            return None
        user = {k: v for k, v in self.users[login].items() if not k.startswith("_")}
        if self.users[login]["_email"]:
            user["email"] = self.users[login]["_email"]  # only a public e-mail is shown
        if self.users[login]["_name"]:
            user["name"] = self.users[login]["_name"]
        return user

    def label(self, name: str) -> dict[str, Any]:
        if name not in self.labels:
            lid = self.new_id()
            self.labels[name] = {
                "id": lid,
                "node_id": f"LA_{lid}",
                "url": f"{API}/repos/{self.full_name}/labels/{name}",
                "name": name,
                "description": None,
                "color": "ededed",
                "default": False,
            }
        return self.labels[name]

    def add_milestone(self, title: str) -> dict[str, Any]:
        number = len(self.milestones) + 1
        mid = self.new_id()
        now = self.tick()
        self.milestones[number] = {
            "url": f"{API}/repos/{self.full_name}/milestones/{number}",
            "html_url": f"{WEB}/{self.full_name}/milestone/{number}",
            "labels_url": f"{API}/repos/{self.full_name}/milestones/{number}/labels",
            "id": mid,
            "node_id": f"MI_{mid}",
            "number": number,
            "state": "open",
            "title": title,
            "description": None,
            "creator": self.simple_user(self.me),
            "open_issues": 0,
            "closed_issues": 0,
            "created_at": now,
            "updated_at": now,
            "closed_at": None,
            "due_on": None,
        }
        return self.milestones[number]

    def add_issue(
        self,
        title: str,
        *,
        body: str | None = None,
        by: str = "octocat",
        labels: list[str] | None = None,
        assignees: list[str] | None = None,
        pull_request: bool = False,
    ) -> dict[str, Any]:
        """An issue (or a pull request) created on GitHub by a person (not through the connector)."""
        number = len(self.issues) + 1
        iid = self.new_id()
        now = self.tick()
        url = f"{API}/repos/{self.full_name}/issues/{number}"
        issue: dict[str, Any] = {
            "id": iid,
            "node_id": f"I_{iid}",
            "url": url,
            "repository_url": f"{API}/repos/{self.full_name}",
            "labels_url": f"{url}/labels{{/name}}",
            "comments_url": f"{url}/comments",
            "events_url": f"{url}/events",
            "html_url": f"{WEB}/{self.full_name}/{'pull' if pull_request else 'issues'}/{number}",
            "number": number,
            "state": "open",
            "state_reason": None,
            "title": title,
            "body": body,
            "_user": by,
            "_labels": list(labels or []),
            "_assignees": list(assignees or []),
            "_milestone": None,
            "locked": False,
            "active_lock_reason": None,
            "closed_at": None,
            "created_at": now,
            "updated_at": now,
            "author_association": "OWNER",
        }
        for name in issue["_labels"]:
            self.label(name)
        if pull_request:
            issue["pull_request"] = {
                "url": f"{API}/repos/{self.full_name}/pulls/{number}",
                "html_url": f"{WEB}/{self.full_name}/pull/{number}",
                "diff_url": f"{WEB}/{self.full_name}/pull/{number}.diff",
                "patch_url": f"{WEB}/{self.full_name}/pull/{number}.patch",
                "merged_at": None,
            }
        self.issues[number] = issue
        return issue

    def edit_issue(self, number: int, **fields: Any) -> dict[str, Any]:
        """A person edits the issue on GitHub: title, body, state, state_reason or labels."""
        issue = self.issues[number]
        for name, value in fields.items():
            issue["_labels" if name == "labels" else name] = value
        if fields.get("state") == "closed":
            issue["closed_at"] = self.clock.strftime("%Y-%m-%dT%H:%M:%SZ")
        issue["updated_at"] = self.tick()
        return issue

    def add_comment_as(self, number: int, body: str, *, by: str = "octocat") -> dict[str, Any]:
        cid = self.new_id()
        now = self.tick()
        comment = {
            "id": cid,
            "node_id": f"IC_{cid}",
            "url": f"{API}/repos/{self.full_name}/issues/comments/{cid}",
            "html_url": f"{WEB}/{self.full_name}/issues/{number}#issuecomment-{cid}",
            "issue_url": f"{API}/repos/{self.full_name}/issues/{number}",
            "body": body,
            "_user": by,
            "created_at": now,
            "updated_at": now,
            "author_association": "OWNER",
            "_issue": number,
        }
        self.comments[cid] = comment
        self.issues[number]["updated_at"] = now  # a comment updates the issue
        return comment

    # --- rendering -----------------------------------------------------------------------------------------
    def render_issue(self, issue: dict[str, Any]) -> dict[str, Any]:
        out = {k: v for k, v in issue.items() if not k.startswith("_")}
        out["user"] = self.simple_user(issue["_user"])
        out["labels"] = [self.labels[name] for name in issue["_labels"]]
        out["assignees"] = [self.simple_user(a) for a in issue["_assignees"]]
        out["assignee"] = out["assignees"][0] if out["assignees"] else None
        milestone = issue["_milestone"]
        out["milestone"] = self.milestones[milestone] if milestone else None
        out["comments"] = sum(1 for c in self.comments.values() if c["_issue"] == issue["number"])
        return out

    def render_comment(self, comment: dict[str, Any]) -> dict[str, Any]:
        out = {k: v for k, v in comment.items() if not k.startswith("_")}
        out["user"] = self.simple_user(comment["_user"])
        return out

    # --- HTTP ----------------------------------------------------------------------------------------------
    def dispatch(self, call: Call) -> Reply:
        auth = call.headers.get("Authorization", "")
        if auth not in (f"Bearer {self.token}", f"token {self.token}"):
            return Reply(
                401, {"message": "Bad credentials", "documentation_url": "https://docs.github.com/rest"}
            )
        reply = super().dispatch(call)
        reply.headers.setdefault("X-RateLimit-Limit", "5000")
        reply.headers.setdefault("X-RateLimit-Remaining", "4999")
        reply.headers.setdefault("X-RateLimit-Reset", "1900000000")
        if call.method == "GET" and reply.status == 200:
            etag = (
                'W/"' + hashlib.sha256(json.dumps(reply.body, sort_keys=True).encode()).hexdigest()[:32] + '"'
            )
            reply.headers["ETag"] = etag
            if call.headers.get("If-None-Match") == etag:
                # No body; GitHub does not count it against the rate limit (the remaining count stays).
                return Reply(
                    304, None, {"ETag": etag, **{k: v for k, v in reply.headers.items() if k == "Link"}}
                )
        return reply

    def not_found(self, call: Call) -> Reply:
        return Reply(404, {"message": "Not Found", "documentation_url": "https://docs.github.com/rest"})

    def exempt_response(self, call: Call, response: requests.Response) -> bool:
        if response.status_code == 304:
            # GitHub answers any GET with a matching If-None-Match with 304 (conditional requests), though
            # the description lists 304 only for some operations.
            return call.method == "GET" and bool(call.headers.get("If-None-Match"))
        return super().exempt_response(call, response)

    # --- /search/issues: checked by hand (not in the description subset) -----------------------------------
    SEARCH_PARAMS = {"q", "sort", "order", "per_page", "page"}
    SEARCH_SORTS = {
        "comments", "reactions", "reactions-+1", "reactions--1", "reactions-smile", "reactions-thinking_face",
        "reactions-heart", "reactions-tada", "interactions", "created", "updated",
    }  # fmt: skip

    def check_request(self, request: requests.PreparedRequest, call: Call) -> None:
        if call.path != "/search/issues":
            return super().check_request(request, call)
        args = {k: v[0] for k, v in call.query.items()}
        problems = [f"unknown parameter {k!r}" for k in args if k not in self.SEARCH_PARAMS]
        if call.method != "GET":
            problems.append(f"method {call.method}")
        if not args.get("q"):
            problems.append("q is required")
        if "sort" in args and args["sort"] not in self.SEARCH_SORTS:
            problems.append(f"sort {args['sort']!r}")
        if "order" in args and args["order"] not in ("asc", "desc"):
            problems.append(f"order {args['order']!r}")
        for name, top in (("per_page", 100), ("page", None)):
            if name in args and not (args[name].isdigit() and 1 <= int(args[name]) <= (top or 10**9)):
                problems.append(f"{name} {args[name]!r}")
        if problems:
            self.violation(f"GET /search/issues: request breaks GitHub's documentation: {problems}")

    def check_response(
        self, request: requests.PreparedRequest, call: Call, response: requests.Response
    ) -> None:
        if call.path != "/search/issues":
            return super().check_response(request, call, response)
        if response.status_code in (304, 401, 403, 422, 503):
            return
        body = response.json()
        problems = []
        if set(body) != {"total_count", "incomplete_results", "items"}:
            problems.append(f"keys {sorted(body)}")
        from openapi_schema_validator import OAS30Validator

        with (self.openapi.spec / "components").open() as components:
            validator = OAS30Validator({"$ref": "#/components/schemas/issue", "components": components})
            for item in body.get("items") or []:
                problems += [e.message for e in validator.iter_errors(item)][:3]
                if not isinstance(item.get("score"), (int, float)):
                    problems.append("an item without its score")
        if problems:
            self.violation(f"GET /search/issues -> {response.status_code}: {problems}")

    def search_issues(self, call: Call) -> Reply:
        q = call.arg("q") or ""
        try:
            if len(q) > 256:
                raise SearchInvalid("The search is longer than 256 characters.")
            predicates = self.parse_search(q)
        except SearchInvalid as exc:
            return Reply(
                422,
                {
                    "message": "Validation Failed",
                    "errors": [{"message": str(exc), "resource": "Search", "field": "q", "code": "invalid"}],
                    "documentation_url": "https://docs.github.com/v3/search/",
                },
            )
        hits = [i for i in self.issues.values() if all(p(i) for p in predicates)]
        # By creation time; GitHub leaves the order of equal times open (here: the highest number first).
        hits.sort(key=lambda i: -i["number"])
        hits.sort(key=lambda i: i["created_at"], reverse=call.arg("order", "desc") == "desc")
        per_page, page = min(int(call.arg("per_page", "30") or 30), 100), int(call.arg("page", "1") or 1)
        if page * per_page > 1000 + per_page:
            return Reply(
                422,
                {
                    "message": "Only the first 1000 search results are available",
                    "documentation_url": "https://docs.github.com/v3/search/",
                },
            )
        chunk = hits[(page - 1) * per_page : page * per_page]
        return Reply(
            200,
            {
                "total_count": len(hits),
                "incomplete_results": False,
                "items": [{**self.render_issue(i), "score": 1.0} for i in chunk],
            },
        )

    def parse_search(self, q: str) -> list[Any]:
        """The predicates of a query; unknown qualifiers are words (as on GitHub)."""
        preds: list[Any] = []
        for token in re.findall(r'-?[\w-]+:"[^"]*"|-?[\w-]+:\S+|"[^"]*"|\S+', q):
            negate = token.startswith("-") and ":" in token
            name, _, value = token.lstrip("-").partition(":") if ":" in token else ("", "", token)
            value = value.strip('"')
            pred = self.qualifier(name.lower(), value)
            preds.append((lambda i, p=pred: not p(i)) if negate else pred)
        return preds

    def qualifier(self, name: str, value: str) -> Any:
        low = value.lower()
        if name == "repo":
            if low != self.full_name.lower():
                raise SearchInvalid(
                    "The listed users and repositories cannot be searched either because the resources do "
                    "not exist or you do not have permission to view them."
                )
            return lambda i: True
        if name in ("author", "assignee", "mentions") and value not in self.users:
            raise SearchInvalid(
                "The listed users cannot be searched either because the users do not exist or you do not "
                "have permission to view the users."
            )
        if name == "is" and low in ("issue", "open", "closed"):
            return lambda i: "pull_request" not in i if low == "issue" else i["state"] == low
        if name == "state":
            return lambda i: i["state"] == low
        if name == "label":
            names = {n.lower() for n in low.split(",")}
            return lambda i: bool(names & {n.lower() for n in i["_labels"]})
        if name == "no":
            field = {"label": "_labels", "assignee": "_assignees", "milestone": "_milestone"}.get(low)
            return lambda i: not i[field] if field else True
        if name == "author":
            return lambda i: i["_user"] == value
        if name == "assignee":
            return lambda i: value in i["_assignees"]
        if name == "milestone":
            return lambda i: (
                bool(i["_milestone"]) and self.milestones[i["_milestone"]]["title"].lower() == low
            )
        if name == "created" and value.startswith(">="):
            return lambda i: i["created_at"] >= value[2:]
        if name == "in":
            return lambda i: True
        word = f"{name}:{value}" if name else value  # plain text (also an unknown qualifier, as on GitHub)
        return lambda i: word.lower() in f"{i['title']} {i['body'] or ''}".lower()

    def _page(self, call: Call, items: list[dict[str, Any]]) -> Reply:
        per_page = min(int(call.arg("per_page", "30") or 30), 100)
        page = int(call.arg("page", "1") or 1)
        chunk = items[(page - 1) * per_page : page * per_page]
        headers = {}
        if page * per_page < len(items):
            query = {k: v[0] for k, v in call.query.items()}
            links = [f'<{API}{call.path}?{urlencode({**query, "page": page + 1})}>; rel="next"']
            last = (len(items) + per_page - 1) // per_page
            links.append(f'<{API}{call.path}?{urlencode({**query, "page": last})}>; rel="last"')
            headers["Link"] = ", ".join(links)
        return Reply(200, chunk, headers)

    def _issue_or_404(self, call: Call) -> dict[str, Any] | None:
        return self.issues.get(int(call.params["number"]))

    def get_user(self, call: Call) -> Reply:
        user = self.simple_user(self.me) or {}
        return Reply(
            200,
            {
                **user,
                "user_view_type": "public",
                "name": "Exalate Node",
                "company": None,
                "blog": "",
                "location": None,
                "email": None,
                "hireable": None,
                "bio": None,
                "public_repos": 0,
                "public_gists": 0,
                "followers": 0,
                "following": 0,
                "created_at": "2020-01-01T00:00:00Z",
                "updated_at": "2020-01-01T00:00:00Z",
            },
        )

    def list_issues(self, call: Call) -> Reply:
        state = call.arg("state", "open")
        since = call.arg("since")
        creator = call.arg("creator")
        items = [i for i in self.issues.values() if state == "all" or i["state"] == state]
        if since:
            when = datetime.fromisoformat(since.replace("Z", "+00:00"))
            items = [i for i in items if _time(i["updated_at"]) >= when]  # at or after `since`
        if creator:
            items = [i for i in items if i["_user"].casefold() == creator.casefold()]  # who opened it
        key = "updated_at" if call.arg("sort", "created") == "updated" else "created_at"
        items.sort(key=lambda i: (i[key], i["number"]), reverse=call.arg("direction", "desc") == "desc")
        return self._page(call, [self.render_issue(i) for i in items])

    def _apply(self, issue: dict[str, Any], body: dict[str, Any]) -> Reply | None:
        for name in ("title", "body"):
            if name in body:
                issue[name] = body[name]
        if "labels" in body:
            names = [lb if isinstance(lb, str) else lb.get("name") for lb in body["labels"] or []]
            for name in names:
                self.label(name)  # GitHub creates missing labels
            issue["_labels"] = names
        if "assignees" in body:
            unknown = [a for a in body["assignees"] or [] if a not in self.collaborators]
            if unknown:
                return Reply(
                    422,
                    {
                        "message": "Validation Failed",
                        "errors": [{"resource": "Issue", "field": "assignees", "code": "invalid"}],
                        "documentation_url": "https://docs.github.com/rest",
                    },
                )
            issue["_assignees"] = list(body["assignees"] or [])
        if "milestone" in body:
            if body["milestone"] is not None and int(body["milestone"]) not in self.milestones:
                return Reply(
                    422, {"message": "Validation Failed", "documentation_url": "https://docs.github.com/rest"}
                )
            issue["_milestone"] = int(body["milestone"]) if body["milestone"] is not None else None
        if "state" in body:
            if body["state"] == "closed" and issue["state"] != "closed":
                issue["closed_at"] = self.clock.strftime("%Y-%m-%dT%H:%M:%SZ")
                issue["state_reason"] = body.get("state_reason") or "completed"
            elif body["state"] == "open" and issue["state"] == "closed":
                issue["closed_at"] = None
                issue["state_reason"] = "reopened"
            issue["state"] = body["state"]
        if body.get("state_reason") and issue["state"] == "closed":
            issue["state_reason"] = body["state_reason"]
        issue["updated_at"] = self.tick()
        return None

    def create_issue(self, call: Call) -> Reply:
        body = call.json
        issue = self.add_issue(body["title"], body=body.get("body"), by=self.me)
        error = self._apply(issue, {k: v for k, v in body.items() if k not in ("title", "body")})
        if error:
            del self.issues[issue["number"]]
            return error
        return Reply(201, self.render_issue(issue), {"Location": issue["url"]})

    def get_issue(self, call: Call) -> Reply:
        issue = self._issue_or_404(call)
        return Reply(200, self.render_issue(issue)) if issue else self.not_found(call)

    def update_issue(self, call: Call) -> Reply:
        issue = self._issue_or_404(call)
        if issue is None:
            return self.not_found(call)
        error = self._apply(issue, call.json)
        return error or Reply(200, self.render_issue(issue))

    def list_comments(self, call: Call) -> Reply:
        number = int(call.params["number"])
        if number not in self.issues:
            return self.not_found(call)
        items = sorted((c for c in self.comments.values() if c["_issue"] == number), key=lambda c: c["id"])
        return self._page(call, [self.render_comment(c) for c in items])

    def create_comment(self, call: Call) -> Reply:
        number = int(call.params["number"])
        if number not in self.issues:
            return self.not_found(call)
        comment = self.add_comment_as(number, call.json["body"], by=self.me)
        return Reply(201, self.render_comment(comment), {"Location": comment["url"]})

    def update_comment(self, call: Call) -> Reply:
        comment = self.comments.get(int(call.params["comment_id"]))
        if comment is None:
            return self.not_found(call)
        comment["body"] = call.json["body"]
        comment["updated_at"] = self.tick()
        self.issues[comment["_issue"]]["updated_at"] = comment["updated_at"]
        return Reply(200, self.render_comment(comment))

    def delete_comment(self, call: Call) -> Reply:
        comment = self.comments.pop(int(call.params["comment_id"]), None)
        if comment is None:
            return self.not_found(call)
        self.issues[comment["_issue"]]["updated_at"] = self.tick()
        return Reply(204)

    def list_assignees(self, call: Call) -> Reply:
        return self._page(call, [self.simple_user(login) for login in self.collaborators])

    def list_labels(self, call: Call) -> Reply:
        return self._page(call, list(self.labels.values()))

    def list_milestones(self, call: Call) -> Reply:
        return self._page(call, list(self.milestones.values()))

    # --- webhooks ------------------------------------------------------------------------------------------
    def webhook(
        self,
        event: str,
        action: str,
        number: int,
        *,
        secret: str,
        sender: str = "octocat",
        comment_id: int | None = None,
        delivery: str | None = None,
    ) -> tuple[dict[str, str], bytes]:
        """A delivery of ``event``/``action`` about issue ``number`` as GitHub sends it: headers and the raw
        body, signed with ``secret``; the payload is checked against GitHub's webhook description."""
        issue = self.render_issue(self.issues[number])
        issue.setdefault("reactions", _reactions(issue["url"]))
        issue.setdefault("timeline_url", issue["url"] + "/timeline")
        issue.setdefault("performed_via_github_app", None)
        payload: dict[str, Any] = {
            "action": action,
            "issue": issue,
            "repository": self.repository(),
            "sender": self.simple_user(sender),
        }
        if comment_id is not None:
            comment = self.render_comment(self.comments[comment_id])
            comment.setdefault("reactions", _reactions(comment["url"]))
            comment.setdefault("performed_via_github_app", None)
            payload["comment"] = comment
        if action == "edited" and comment_id is None:
            payload["changes"] = {"title": {"from": "(before)"}}
        body = json.dumps(payload).encode()
        headers = {
            "User-Agent": "GitHub-Hookshot/0a1b2c3",
            "Content-Type": "application/json",
            "X-GitHub-Event": event,
            "X-GitHub-Delivery": delivery or str(uuid.uuid4()),
            "X-GitHub-Hook-ID": "123456",
            "X-GitHub-Hook-Installation-Target-ID": "987654",
            "X-GitHub-Hook-Installation-Target-Type": "repository",
            "X-Hub-Signature-256": "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest(),
        }
        name = f"{event.replace('_', '-')}-{action}"
        request = requests.Request("POST", "https://node.example/hooks/github/x/", headers=headers, data=body)
        errors = list(
            openapi(GITHUB_WEBHOOKS).iter_webhook_request_errors(
                RequestsOpenAPIWebhookRequest(request.prepare(), name)
            )
        )
        if errors:
            self.violation(f"webhook {name}: payload breaks GitHub's webhook description: {describe(errors)}")
        return headers, body

    def repository(self) -> dict[str, Any]:
        owner = self.simple_user(self.me) or {}
        base = f"{API}/repos/{self.full_name}"
        urls = {
            f"{name}_url": f"{base}/{name}"
            for name in (
                "archive",
                "assignees",
                "blobs",
                "branches",
                "collaborators",
                "comments",
                "commits",
                "compare",
                "contents",
                "contributors",
                "deployments",
                "downloads",
                "events",
                "forks",
                "git_commits",
                "git_refs",
                "git_tags",
                "issue_comment",
                "issue_events",
                "issues",
                "keys",
                "labels",
                "languages",
                "merges",
                "milestones",
                "notifications",
                "pulls",
                "releases",
                "stargazers",
                "statuses",
                "subscribers",
                "subscription",
                "tags",
                "teams",
                "trees",
                "hooks",
            )
        }
        return {
            **urls,
            "id": 4242,
            "node_id": "R_4242",
            "name": self.repo,
            "full_name": self.full_name,
            "private": False,
            "owner": owner,
            "html_url": f"{WEB}/{self.full_name}",
            "description": None,
            "fork": False,
            "url": base,
            "git_url": f"git://github.com/{self.full_name}.git",
            "ssh_url": f"git@github.com:{self.full_name}.git",
            "clone_url": f"{WEB}/{self.full_name}.git",
            "svn_url": f"{WEB}/{self.full_name}",
            "mirror_url": None,
            "homepage": None,
            "language": None,
            "forks_count": 0,
            "forks": 0,
            "stargazers_count": 0,
            "watchers_count": 0,
            "watchers": 0,
            "size": 1,
            "default_branch": "main",
            "open_issues_count": 0,
            "open_issues": 0,
            "is_template": False,
            "topics": [],
            "has_issues": True,
            "has_projects": True,
            "has_wiki": True,
            "has_pages": False,
            "has_downloads": True,
            "has_discussions": False,
            "archived": False,
            "disabled": False,
            "visibility": "public",
            "pushed_at": "2026-01-01T00:00:00Z",
            "created_at": "2026-01-01T00:00:00Z",
            "updated_at": "2026-01-01T00:00:00Z",
            "license": None,
        }


def _time(value: str) -> datetime:
    return datetime.fromisoformat(value.replace("Z", "+00:00"))


class SearchInvalid(Exception):
    """A query GitHub's search refuses (422 Validation Failed)."""


def _reactions(url: str) -> dict[str, Any]:
    keys = ("+1", "-1", "laugh", "confused", "heart", "hooray", "eyes", "rocket")
    return {"url": url + "/reactions", "total_count": 0, **{k: 0 for k in keys}}
