"""Connector benchmark: what one synced change costs, per connector, in tracker API requests and DB queries.

Usage: python bench/bench_connectors.py [--json] [--requests] [--only github,jira,...] [--start-redmine]
                                       [--no-redmine] [--verbose]

For every connector with a test double (the in-memory fakes of ``tests/connectors/fakes`` and
``tests/connectors2/fakes``, plugged in through ``instances.connectors._common.use_transport``) a local
connection joins a built-in tracker project and the tracker, and six changes go through the real pipeline
(tasks run inline, a throwaway SQLite database):

1. ``create``   exalate a new built-in item that has one comment (creates the item and the comment there);
2. ``edit``     a one-field edit (the summary) on the built-in side: exactly one tracker write expected;
3. ``echo``     the node polls the tracker (``instances.polling.poll_instance``) and finds its own write:
                no write on either side expected;
4. ``remote``   a person edits the summary in the tracker; the poll brings it to the built-in side:
                reads only, no tracker write;
5. ``noop``     the tracker reports an update of the item with nothing changed (what the webhook intake
                view records, ``replicas.outbox.record_item_change``): no write expected;
6. ``comment``  a comment added on the built-in side: one tracker write expected.

The one-field edit is the summary on purpose: a status change can legitimately cost more than one
request on some trackers (Jira moves an issue through a workflow transition, GitLab adds a scoped label).

Redmine has no fake: it is measured against a real Redmine when one answers (``REDMINE_URL`` and
``REDMINE_API_KEY``, or the one ``tests/e2e/redmine.sh`` starts on 127.0.0.1:3300), ``--start-redmine``
starts it with that script for the run; otherwise it is skipped with a note.

Exit status 1 when an echo or a no-op costs a write, when a one-field edit or a comment costs more than one
write, or when a scenario did not sync (checked after each step); 0 otherwise.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import traceback
import uuid
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

SCENARIOS: list[tuple[str, str]] = [
    ("create", "exalate new item + 1 comment"),
    ("edit", "1-field edit on the built-in side"),
    ("echo", "poll that sees the node's own edit"),
    ("remote", "1-field edit in the tracker, by poll"),
    ("noop", "update reported with nothing changed"),
    ("comment", "comment added on the built-in side"),
]
# The most tracker writes each scenario may cost (the issue's promise); None: not checked.
MAX_WRITES: dict[str, int | None] = {
    "create": None,
    "edit": 1,
    "echo": 0,
    "remote": 0,
    "noop": 0,
    "comment": 1,
}
# POSTs that only read (queries and an OAuth token): counted as reads.
READ_ONLY_POSTS = re.compile(r"(/search/jql|/_apis/wit/wiql|/oauth2/token)$")
REDMINE_SCRIPT = ROOT / "tests" / "e2e" / "redmine.sh"
REDMINE_DEFAULT_KEY = "0123456789abcdef0123456789abcdef01234567"  # the script's fixed loopback admin key


def configure(verbose: bool) -> str:
    """Django with the test settings (inline tasks), a temporary VAR_DIR and a migrated SQLite database."""
    var_dir = tempfile.mkdtemp(prefix="exalate-bench-connectors-")
    os.environ.update(
        {
            "DJANGO_SETTINGS_MODULE": "exalate_node.settings_test",
            "VAR_DIR": var_dir,
            "MEDIA_ROOT": os.path.join(var_dir, "media"),
            "DATABASE_URL": f"sqlite:///{var_dir}/bench.sqlite3",
            "TASKS_INLINE": "true",
            "LOG_LEVEL": "INFO" if verbose else "CRITICAL",
        }
    )
    os.environ.pop("REDIS_URL", None)
    import django

    django.setup()
    from django.core.management import call_command

    call_command("migrate", verbosity=0)
    return var_dir


# --- counting ----------------------------------------------------------------------------------------------

REQUESTS: list[tuple[str, str]] = []  # (method, path) of every request a connector's HttpClient sent


def record_requests() -> None:
    """Log each request at the HTTP seam (``HttpClient.request``, which every connector goes through)."""
    from instances.connectors.http import HttpClient

    original = HttpClient.request

    def request(self: HttpClient, method: str, path: str, **kwargs: Any) -> Any:
        REQUESTS.append((method.upper(), urlsplit(self.url(path)).path))
        return original(self, method, path, **kwargs)

    HttpClient.request = request  # type: ignore[method-assign]


def is_write(method: str, path: str) -> bool:
    if method in ("GET", "HEAD", "OPTIONS"):
        return False
    return not (method == "POST" and READ_ONLY_POSTS.search(path))


@dataclass
class Cost:
    reads: int = 0
    writes: int = 0
    queries: int = 0  # the sync's queries (the user's own edit on the built-in side left out)
    own_queries: int = 0  # the built-in tracker's own write of the user's change
    http: int = 0  # requests sent on the wire (retries included), from http.process_requests
    ms: float = 0.0
    requests: list[str] = field(default_factory=list)
    error: str = ""

    def cell(self) -> str:
        if self.error:
            return "FAIL"
        return f"{self.reads}r/{self.writes}w/{self.queries}q"


class Meter:
    """Measures one scenario: tracker requests (by the HTTP seam's log) and queries on the default DB."""

    def __init__(self) -> None:
        self.cost = Cost()
        self._own: Any = None

    @contextmanager
    def run(self) -> Iterator[Meter]:
        from django.db import connection
        from django.test.utils import CaptureQueriesContext

        from instances.connectors import http

        start, wire = len(REQUESTS), sum(http.process_requests.values())
        started = time.perf_counter()
        with CaptureQueriesContext(connection) as total:
            yield self
        self.cost.ms = (time.perf_counter() - started) * 1000
        own = len(self._own) if self._own is not None else 0
        self.cost.own_queries = own
        self.cost.queries = len(total) - own
        calls = REQUESTS[start:]
        self.cost.writes = sum(1 for m, p in calls if is_write(m, p))
        self.cost.reads = len(calls) - self.cost.writes
        self.cost.http = sum(http.process_requests.values()) - wire
        self.cost.requests = [f"{m} {p}" for m, p in calls]

    @contextmanager
    def users_change(self) -> Iterator[None]:
        """The user's own change on the built-in side: its queries are counted apart; the sync it queues
        runs when the transaction commits, after this block."""
        from django.db import connection, transaction
        from django.test.utils import CaptureQueriesContext

        with transaction.atomic():
            with CaptureQueriesContext(connection) as own:
                yield
            self._own = own


# --- the trackers ------------------------------------------------------------------------------------------


@dataclass
class Tracker:
    """One tracker to measure: where it is, how to log in, and how a person edits an item there."""

    name: str
    tracker_type: str
    url: str
    credentials: dict[str, Any]
    settings: dict[str, Any]
    human_edit: Callable[[str, str], None]  # (remote item id, new summary)
    statuses: list[str] | None = None
    status: str = ""  # the built-in item's status before exalating (one the tracker knows)
    rules: tuple[str, str] | None = None  # extra incoming rules: (built-in side, tracker side)
    later: Callable[[], None] = lambda: None  # move the tracker's clock past the node's writes
    violations: Callable[[], list[str]] = lambda: []  # contract breaches the fake saw


def contract_fake(stack: ExitStack, fake: Any) -> Any:
    """Wire a ``tests/connectors/fakes`` ContractFake (GitHub, Jira) with its fake clock."""
    from instances.connectors._common import use_transport
    from tests.connectors.fakes.support import FakeClock

    clock = FakeClock()
    stack.enter_context(
        use_transport(
            lambda tracker_type: fake.session(),
            sleep=clock.sleep,
            clock=clock.monotonic,
            wall_clock=clock.time,
        )
    )
    return fake


def fake_server(stack: ExitStack, cls: type) -> Any:
    """Wire a ``tests/connectors2/fakes`` FakeServer with its fake clock."""
    from tests.connectors2.conftest import wire
    from tests.connectors2.fakes.base import FakeClock

    server = cls(FakeClock())
    stack.enter_context(wire(server))
    return server


def github(stack: ExitStack) -> Tracker:
    from instances.connectors.github import reset_memory
    from tests.connectors.fakes.github import API, TOKEN, FakeGitHub

    reset_memory()
    fake = contract_fake(stack, FakeGitHub())
    return Tracker(
        "GitHub",
        "github",
        API,
        {"token": TOKEN},
        {"repo": "octo/widgets"},
        lambda rid, summary: fake.edit_issue(int(rid), title=summary) and None,
        violations=lambda: fake.violations,
    )


def jira(stack: ExitStack) -> Tracker:
    from instances.connectors.jira import reset_memory
    from tests.connectors.fakes.jira import API_TOKEN, EMAIL, SITE, FakeJira

    reset_memory()
    fake = contract_fake(stack, FakeJira())
    return Tracker(
        "Jira",
        "jira",
        SITE,
        {"email": EMAIL, "api_token": API_TOKEN},
        {"project": "SUP", "issue_type": "Task"},
        lambda rid, summary: fake.edit(rid, summary=summary) and None,
        violations=lambda: fake.violations,
    )


def azure(stack: ExitStack) -> Tracker:
    from tests.connectors2.fakes.azure import FakeAzureDevOps

    server = fake_server(stack, FakeAzureDevOps)
    return Tracker(
        "Azure DevOps",
        "azure",
        server.base_url,
        {"pat": server.pat},
        {"project": server.project},
        lambda rid, summary: server.human_edit(int(rid), **{"System.Title": summary}),
        later=server.clock.catch_up,
    )


def gitlab(stack: ExitStack) -> Tracker:
    from tests.connectors2.fakes.gitlab import FakeGitLab

    server = fake_server(stack, FakeGitLab)
    return Tracker(
        "GitLab",
        "gitlab",
        server.host,
        {"token": server.token},
        {"project": server.project_path},
        lambda rid, summary: server.human_edit(int(rid), title=summary),
        later=server.clock.catch_up,
    )


def salesforce(stack: ExitStack) -> Tracker:
    from instances.connectors import salesforce as sf
    from tests.connectors2.fakes.salesforce import FakeSalesforce

    sf._tokens.clear()
    server = fake_server(stack, FakeSalesforce)
    return Tracker(
        "Salesforce",
        "salesforce",
        server.host,
        {"client_id": server.client_id, "client_secret": server.client_secret},
        {},
        lambda rid, summary: server.human_update(rid, Subject=summary),
        statuses=["New", "Working", "Escalated", "Closed"],
        status="New",
        later=server.clock.catch_up,
    )


def servicenow(stack: ExitStack) -> Tracker:
    from tests.connectors2.fakes.servicenow import FakeServiceNow

    server = fake_server(stack, FakeServiceNow)
    return Tracker(
        "ServiceNow",
        "servicenow",
        server.host,
        {"username": server.username, "password": server.password},
        {"close_code": "Solved (Permanently)", "close_notes": "Resolved in the support desk"},
        lambda rid, summary: server.human_update(rid, short_description=summary),
        statuses=["New", "In Progress", "Resolved", "Closed"],
        later=server.clock.catch_up,
    )


def zendesk(stack: ExitStack) -> Tracker:
    from tests.connectors2.fakes.zendesk import FakeZendesk

    server = fake_server(stack, FakeZendesk)
    return Tracker(
        "Zendesk",
        "zendesk",
        server.host,
        {"email": server.email, "api_token": server.api_token},
        {},
        lambda rid, summary: server.human_update(int(rid), subject=summary),
        statuses=["Open", "Pending", "Solved", "Closed"],
        later=server.clock.catch_up,
    )


# --- Redmine: a real one, when there is one -----------------------------------------------------------------


def _redmine_answers(url: str, key: str) -> bool:
    import requests

    try:
        return (
            requests.get(
                f"{url}/issue_statuses.json", headers={"X-Redmine-API-Key": key}, timeout=3
            ).status_code
            == 200
        )
    except requests.RequestException:
        return False


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def find_redmine(stack: ExitStack, start: bool) -> tuple[str, str] | str:
    """(url, admin API key) of a Redmine that answers, or why there is none."""
    url, key = os.environ.get("REDMINE_URL", "").rstrip("/"), os.environ.get("REDMINE_API_KEY", "")
    if url and key:
        return (url, key) if _redmine_answers(url, key) else f"REDMINE_URL {url} does not answer"
    url, key = "http://127.0.0.1:3300", REDMINE_DEFAULT_KEY
    if _redmine_answers(url, key):
        return url, key
    if not start:
        return "no Redmine answers (set REDMINE_URL/REDMINE_API_KEY, or pass --start-redmine)"
    if not Path("/usr/share/redmine/config/routes.rb").exists():
        return "Redmine is not installed (bash tests/e2e/redmine.sh install)"
    port = _free_port()
    state = tempfile.mkdtemp(prefix="redmine-bench-")  # this run's own copy of Redmine's database
    stack.callback(shutil.rmtree, state, ignore_errors=True)
    env = {**os.environ, "REDMINE_PORT": str(port), "REDMINE_API_KEY": key, "REDMINE_STATE_DIR": state}
    env.pop("DATABASE_URL", None)
    started = subprocess.run(
        ["bash", str(REDMINE_SCRIPT), "start"],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    stack.callback(
        subprocess.run,
        ["bash", str(REDMINE_SCRIPT), "stop"],
        env=env,
        capture_output=True,
        timeout=60,
        check=False,
    )
    if started.returncode != 0:
        return f"Redmine did not start: {(started.stderr or started.stdout).strip()[-300:]}"
    return f"http://127.0.0.1:{port}", key


def redmine(stack: ExitStack, where: tuple[str, str]) -> Tracker:
    import requests

    from tests.connectors.test_redmine_sync import BUILTIN_INCOMING_MAP, REDMINE_INCOMING_MAP

    url, key = where
    headers = {"X-Redmine-API-Key": key}

    def call(method: str, path: str, **kwargs: Any) -> requests.Response:
        response = requests.request(method, f"{url}/{path}", headers=headers, timeout=30, **kwargs)
        response.raise_for_status()
        return response

    trackers = [t["id"] for t in call("GET", "trackers.json").json()["trackers"]]
    identifier = f"bench-{uuid.uuid4().hex[:10]}"
    call(
        "POST",
        "projects.json",
        json={"project": {"name": f"Bench {identifier}", "identifier": identifier, "tracker_ids": trackers}},
    )
    stack.callback(requests.delete, f"{url}/projects/{identifier}.json", headers=headers, timeout=30)
    return Tracker(
        "Redmine (real)",
        "redmine",
        url,
        {"api_key": key},
        {"project": identifier},
        lambda rid, summary: call("PUT", f"issues/{rid}.json", json={"issue": {"subject": summary}}) and None,
        rules=(BUILTIN_INCOMING_MAP, REDMINE_INCOMING_MAP),
        later=lambda: time.sleep(1.1),  # Redmine's times have whole seconds
    )


FAKED: dict[str, Callable[[ExitStack], Tracker]] = {
    "github": github,
    "jira": jira,
    "azure": azure,
    "gitlab": gitlab,
    "salesforce": salesforce,
    "servicenow": servicenow,
    "zendesk": zendesk,
}


# --- the scenarios -----------------------------------------------------------------------------------------


def settled(connection_ids: list[int]) -> str:
    """Why the pipeline is not done (events pending or failed, sync errors), or ""."""
    from replicas.models import SyncError, SyncEvent

    stuck = list(
        SyncEvent.objects.filter(
            connection_id__in=connection_ids, status__in=["pending", "processing", "failed"]
        ).values_list("status", "error")
    )
    errors = list(
        SyncError.objects.filter(connection_id__in=connection_ids).values_list("message", flat=True)
    )
    return f"events {stuck}; errors {errors}" if stuck or errors else ""


def measure(tracker: Tracker, key: str) -> dict[str, Cost]:
    """Run the six scenarios against ``tracker``; a failed check is recorded in that scenario's cost."""
    from django.db import transaction

    from connections.services import connection_create_local
    from instances.connectors import get_connector
    from instances.models import Instance, Issue
    from instances.polling import poll_instance
    from instances.tracker import services
    from replicas import pipeline
    from replicas.outbox import record_item_change
    from syncrules.services import rules_current, rules_publish
    from tests.connectors2.conftest import make_instance

    actor = "anna@example.com"
    builtin = Instance.objects.create(name=f"Support desk ({tracker.name})", tracker_type="builtin")
    project = services.project_create(instance=builtin, key=key, name="Support", statuses=tracker.statuses)
    remote = make_instance(
        tracker.tracker_type, tracker.url, tracker.credentials, tracker.settings, save=True
    )
    side_builtin, side_tracker = connection_create_local(
        name=f"Support ⇄ {tracker.name}", instance_a=builtin, instance_b=remote
    )
    if tracker.rules:
        for side, extra in zip((side_builtin, side_tracker), tracker.rules, strict=True):
            current = rules_current(side)
            rules_publish(connection=side, outgoing=current.outgoing, incoming=current.incoming + extra)
    pipeline.META_CACHE.clear()
    conns = [side_builtin.pk, side_tracker.pk]
    poll_instance(remote.pk)  # start the cursor: what the tracker held before is not news

    issue = services.issue_create(project=project, actor=actor, summary="Printer on fire")
    if tracker.status:
        issue = services.issue_update(issue=issue, actor=actor, status=tracker.status)
    services.comment_add(issue=issue, actor=actor, body="Seen twice today")

    def connector() -> Any:
        return get_connector(remote)

    def version() -> int:
        return Issue.objects.values_list("version", flat=True).get(pk=issue.pk)

    costs: dict[str, Cost] = {}

    def step(name: str, action: Callable[[Meter], None], check: Callable[[], str]) -> None:
        meter = Meter()
        try:
            with meter.run():
                action(meter)
            problem = check() or settled(conns)
        except Exception as exc:  # noqa: BLE001 - one failed scenario must not stop the table
            problem = f"{type(exc).__name__}: {exc}"
            if os.environ.get("BENCH_TRACEBACK"):
                traceback.print_exc()
        meter.cost.error = problem[:500]
        costs[name] = meter.cost

    # 1. Exalate a new item with one comment.
    step("create", lambda m: pipeline.exalate(connection=side_builtin, key=issue.key), lambda: "")
    twin = side_builtin.twins.first()
    rid, rkey = (twin.remote_id, twin.remote_key) if twin else ("", "")

    def created() -> str:
        item = connector().get_item(rid)
        bodies = [c.get("body") for c in item.get("comments") or []]
        ok = item.get("summary") == "Printer on fire" and any("Seen twice today" in (b or "") for b in bodies)
        return "" if ok else f"not created as expected: {item.get('summary')!r}, comments {bodies}"

    if not rid:
        costs["create"].error = costs["create"].error or "no item was created in the tracker"
        return costs
    costs["create"].error = costs["create"].error or created()
    poll_instance(remote.pk)  # the echo of the create (not measured: it is scenario 3's cost for an edit)

    # 2. A one-field edit on the built-in side, a moment later (trackers with whole-second times, such as
    # Redmine, would otherwise give it the same time as the create, and the poll would take it as seen).
    tracker.later()

    def edit(m: Meter) -> None:
        with m.users_change():
            services.issue_update(
                issue=Issue.objects.get(pk=issue.pk), actor=actor, summary="Printer on fire!"
            )

    step(
        "edit", edit, lambda: "" if connector().get_item(rid)["summary"] == "Printer on fire!" else "not sent"
    )

    def outgoing() -> Any:
        return side_tracker.events.filter(direction="out")

    def skipped_one(events_before: int, version_before: int) -> Callable[[], str]:
        """The tracker item was read and found unchanged: one more outgoing event, skipped, and the
        built-in item left alone."""

        def check() -> str:
            events = list(outgoing().order_by("id").values_list("status", flat=True))
            if len(events) <= events_before:
                return "the change was not seen (no event queued)"
            if events[-1] != "skipped":
                return f"the event was {events[-1]}, not skipped"
            return "" if version() == version_before else "changed the built-in item"

        return check

    # 3. The echo of that edit: a poll finds the node's own write.
    check = skipped_one(outgoing().count(), version())
    step("echo", lambda m: poll_instance(remote.pk) and None, check)

    # 4. A person edits the summary in the tracker; the poll brings it over.
    tracker.later()
    tracker.human_edit(rid, "Fuser replaced")

    def arrived() -> str:
        summary = Issue.objects.get(pk=issue.pk).summary
        return "" if summary == "Fuser replaced" else f"not applied (summary {summary!r})"

    step("remote", lambda m: poll_instance(remote.pk) and None, arrived)

    # 5. The tracker reports the item again with nothing changed (as the webhook intake records it).
    def report(m: Meter) -> None:
        with transaction.atomic():
            record_item_change(
                instance_id=remote.pk, item_id=rid, item_key=rkey, actor=f"{tracker.tracker_type}:webhook"
            )

    step("noop", report, skipped_one(outgoing().count(), version()))

    # 6. A comment on the built-in side.
    def comment(m: Meter) -> None:
        with m.users_change():
            services.comment_add(issue=Issue.objects.get(pk=issue.pk), actor=actor, body="Fuser ordered")

    def commented() -> str:
        bodies = [c.get("body") or "" for c in connector().get_item(rid).get("comments") or []]
        return "" if any("Fuser ordered" in b for b in bodies) else f"comment not sent: {bodies}"

    step("comment", comment, commented)
    breaches = tracker.violations()
    if breaches:
        costs["create"].error = costs["create"].error or f"contract violations: {breaches[:2]}"
    return costs


# --- output ------------------------------------------------------------------------------------------------


def over_budget(costs: dict[str, Cost]) -> list[str]:
    out = []
    for name, cost in costs.items():
        limit = MAX_WRITES.get(name)
        if cost.error:
            out.append(f"{name}: {cost.error}")
        elif limit is not None and cost.writes > limit:
            out.append(f"{name}: {cost.writes} writes (at most {limit}): {cost.requests}")
    return out


def print_table(results: dict[str, dict[str, Cost]], notes: list[str], seconds: float) -> None:
    names = [s for s, _ in SCENARIOS]
    rows = [["connector", *names]]
    for connector, costs in results.items():
        rows.append([connector, *[costs[n].cell() if n in costs else "-" for n in names]])
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    print("\nCost per synced change (built-in tracker ⇄ tracker, local connection, real pipeline)\n")
    for i, row in enumerate(rows):
        print(
            "  "
            + "  ".join(
                cell.ljust(w) if j == 0 else cell.rjust(w)
                for j, (cell, w) in enumerate(zip(row, widths, strict=True))
            )
        )
        if i == 0:
            print("  " + "  ".join("-" * w for w in widths))
    print("\n  Cells: tracker API reads r / tracker API writes w / database queries q of the sync.")
    for name, text in SCENARIOS:
        limit = MAX_WRITES[name]
        promise = "" if limit is None else f" (at most {limit} write{'s' if limit != 1 else ''})"
        print(f"  {name:<8} {text}{promise}")
    print(
        "  Writes: POST/PUT/PATCH/DELETE, except POSTs that only read (Jira search/jql, Azure WIQL, the "
        "Salesforce OAuth token).\n  Queries: the sync's, on the node's database; the built-in tracker's own "
        "write of the user's edit or comment is not counted.\n  echo/remote cost includes the poll's "
        "search request(s); noop is a webhook-style report (no search)."
    )
    for note in notes:
        print(f"  Note: {note}")
    print(f"  Run time: {seconds:.1f} s")


def print_requests(results: dict[str, dict[str, Cost]]) -> None:
    print("\nRequests per scenario (w: counted as a write)")
    for connector, costs in results.items():
        print(f"  {connector}")
        for name, cost in costs.items():
            print(f"    {name}:")
            for line in cost.requests:
                method, path = line.split(" ", 1)
                print(f"      {'w' if is_write(method, path) else ' '} {line}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--json", action="store_true", help="print the raw numbers as JSON instead")
    parser.add_argument("--only", default="", help="comma-separated connectors (github,jira,...,redmine)")
    parser.add_argument(
        "--start-redmine", action="store_true", help="start Redmine with tests/e2e/redmine.sh"
    )
    parser.add_argument("--no-redmine", action="store_true", help="skip Redmine")
    parser.add_argument("--requests", action="store_true", help="list each scenario's tracker requests too")
    parser.add_argument("--verbose", action="store_true", help="log at INFO (inline task failures included)")
    args = parser.parse_args()
    wanted = [w.strip() for w in args.only.split(",") if w.strip()] or [*FAKED, "redmine"]
    unknown = [w for w in wanted if w not in FAKED and w != "redmine"]
    if unknown:
        parser.error(f"unknown connectors {unknown}; choose from {[*FAKED, 'redmine']}")

    started = time.perf_counter()
    var_dir = configure(args.verbose)
    record_requests()
    results: dict[str, dict[str, Cost]] = {}
    notes: list[str] = [
        "the one-field edit is the summary: a status edit may need more (Jira: a workflow transition)."
    ]
    for n, name in enumerate(wanted):
        with ExitStack() as stack:
            if name == "redmine":
                if args.no_redmine:
                    notes.append("Redmine skipped (--no-redmine).")
                    continue
                where = find_redmine(stack, args.start_redmine)
                if isinstance(where, str):
                    notes.append(f"Redmine skipped: {where}.")
                    continue
            try:
                tracker = redmine(stack, where) if name == "redmine" else FAKED[name](stack)
                results[tracker.name] = measure(tracker, key=f"B{chr(ord('A') + n)}")
            except Exception as exc:  # noqa: BLE001 - one broken connector must not stop the table
                if os.environ.get("BENCH_TRACEBACK"):
                    traceback.print_exc()
                results[name] = {"create": Cost(error=f"set-up failed: {type(exc).__name__}: {exc}"[:500])}

    from django.db import connections

    connections.close_all()
    shutil.rmtree(var_dir, ignore_errors=True)
    problems = [f"{c}: {p}" for c, costs in results.items() for p in over_budget(costs)]
    if args.json:
        payload = {
            "scenarios": dict(SCENARIOS),
            "max_writes": MAX_WRITES,
            "results": {
                c: {s: {k: v for k, v in vars(cost).items()} for s, cost in costs.items()}
                for c, costs in results.items()
            },
            "notes": notes,
            "problems": problems,
            "seconds": round(time.perf_counter() - started, 2),
        }
        print(json.dumps(payload, indent=2))
    else:
        print_table(results, notes, time.perf_counter() - started)
        if args.requests:
            print_requests(results)
        for problem in problems:
            print(f"  FAIL {problem}")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
