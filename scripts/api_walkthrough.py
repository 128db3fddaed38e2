"""Connect two nodes and sync an item with nothing but the integration API and `requests`.

Usage:
    python scripts/api_walkthrough.py --a http://127.0.0.1:8001 --a-user admin --a-password ... \
        --b http://127.0.0.1:8002 --b-token <key>

Each node needs a staff user (username + password, or an API token from `manage.py create_api_token`).
The script follows the API docs (/api/docs/) step by step and prints each call:

1. get a token (POST /api/v1/auth/token/) unless one is given;
2. on each node, create a built-in tracker instance and a project (POST /api/v1/instances/,
   POST /api/v1/tracker/projects/), or reuse them when they exist;
3. on A, initiate a connection (POST /api/v1/connections/): the response carries the invitation code;
4. on B, accept it (POST /api/v1/connections/accept/): both sides go active;
5. on A, create an issue (POST /api/v1/tracker/issues/) and exalate it
   (POST /api/v1/connections/{id}/exalate/);
6. on B, wait until the copy appears (GET /api/v1/tracker/issues/), then show A's entity sync status
   (GET /api/v1/entities/{instance}/{key}/sync-status/).

Exit status 0 when the item arrived, 1 with the API's error message otherwise.
"""

from __future__ import annotations

import argparse
import sys
import time
import uuid
from typing import Any

import requests


class ApiError(Exception):
    pass


class Node:
    def __init__(self, label: str, url: str, token: str = "") -> None:
        self.label = label
        self.url = url.rstrip("/")
        self.session = requests.Session()
        if token:
            self.session.headers["Authorization"] = f"Token {token}"

    def call(self, method: str, path: str, **kwargs: Any) -> Any:
        response = self.session.request(method, f"{self.url}/api/v1{path}", timeout=30, **kwargs)
        print(f"  [{self.label}] {method} /api/v1{path} -> {response.status_code}")
        if response.status_code >= 400:
            try:
                detail = response.json().get("detail", response.text)
            except ValueError:
                detail = response.text[:300]
            raise ApiError(f"{self.label}: {method} {path} failed ({response.status_code}): {detail}")
        return response.json() if response.content else None

    def login(self, username: str, password: str) -> None:
        body = self.call("POST", "/auth/token/", json={"username": username, "password": password})
        self.session.headers["Authorization"] = f"Token {body['token']}"

    def results(self, path: str, **params: Any) -> list[dict[str, Any]]:
        data = self.call("GET", path, params=params)
        return data["results"] if isinstance(data, dict) and "results" in data else data

    def tracker(self, name: str, project_key: str) -> dict[str, Any]:
        """A built-in tracker instance with one project: found by name, or created."""
        found = [i for i in self.results("/instances/", search=name) if i["name"] == name]
        instance = (
            found[0]
            if found
            else self.call("POST", "/instances/", json={"name": name, "tracker_type": "builtin"})
        )
        projects = [
            p for p in self.results("/tracker/projects/", instance=instance["id"]) if p["key"] == project_key
        ]
        if not projects:
            self.call(
                "POST",
                "/tracker/projects/",
                json={"instance": instance["id"], "key": project_key, "name": name},
            )
        return instance


def walkthrough(a: Node, b: Node, *, timeout: float = 60.0) -> dict[str, Any]:
    print("1. trackers on both nodes")
    tracker_a = a.tracker("Walkthrough A", "WA")
    tracker_b = b.tracker("Walkthrough B", "WB")

    print("2. A initiates a connection; the response carries the invitation code")
    name = f"Walkthrough {uuid.uuid4().hex[:6]}"
    initiated = a.call("POST", "/connections/", json={"name": name, "local_instance": tracker_a["id"]})
    code, connection_a = initiated["invitation_code"], initiated["connection"]
    print(f"   invitation code: {code[:24]}… ({len(code)} characters)")

    print("3. B accepts the code")
    connection_b = b.call(
        "POST", "/connections/accept/", json={"code": code, "local_instance": tracker_b["id"]}
    )
    side_a = a.call("GET", f"/connections/{connection_a['id']}/")
    print(f"   B's side is {connection_b['status']}; A's side is {side_a['status']}")

    print("4. A creates an issue and exalates it")
    summary = f"Synced through the API {uuid.uuid4().hex[:8]}"
    issue = a.call(
        "POST", "/tracker/issues/", json={"project": "WA", "summary": summary, "description": "Hello B"}
    )
    a.call("POST", f"/connections/{connection_a['id']}/exalate/", json={"key": issue["key"]})

    print("5. B receives it")
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        arrived = [i for i in b.results("/tracker/issues/", search=summary) if i["summary"] == summary]
        if arrived:
            break
        time.sleep(0.5)
    else:
        raise ApiError(
            f"B: the issue did not arrive within {timeout:.0f} s; check A's events (GET /api/v1/events/)"
        )
    copy = arrived[0]
    print(f"   {issue['key']} on A is {copy['key']} on B: {copy['summary']!r}")

    status = a.call("GET", f"/entities/{tracker_a['id']}/{issue['key']}/sync-status/")
    return {"local": issue["key"], "remote": copy["key"], "sync_status": status}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    for side in ("a", "b"):
        parser.add_argument(f"--{side}", required=True, help=f"node {side.upper()}'s base URL")
        parser.add_argument(f"--{side}-token", default="", help="an API token (or give user and password)")
        parser.add_argument(f"--{side}-user", default="")
        parser.add_argument(f"--{side}-password", default="")
    parser.add_argument("--timeout", type=float, default=60.0)
    args = parser.parse_args()
    nodes = []
    for side in ("a", "b"):
        node = Node(side.upper(), getattr(args, side), getattr(args, f"{side}_token"))
        try:
            if not getattr(args, f"{side}_token"):
                node.login(getattr(args, f"{side}_user"), getattr(args, f"{side}_password"))
        except ApiError as exc:
            print(f"Could not log in: {exc}", file=sys.stderr)
            return 1
        nodes.append(node)
    try:
        result = walkthrough(*nodes, timeout=args.timeout)
    except (ApiError, requests.RequestException) as exc:
        print(f"Failed: {exc}", file=sys.stderr)
        return 1
    sides = result["sync_status"]
    print(f"Done: {result['local']} ⇄ {result['remote']}; A's sync status has keys {sorted(sides)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
