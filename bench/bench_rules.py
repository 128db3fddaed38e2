"""Time per run of sync rules: the default rules and a rule set with 50 mapped custom fields.

Run from the repository root:  python bench/bench_rules.py
"""

from __future__ import annotations

import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from syncrules.defaults import DEFAULT_INCOMING, DEFAULT_OUTGOING  # noqa: E402
from syncrules.engine import run_incoming, run_outgoing  # noqa: E402

N_FIELDS = 50
USER = {"email": "alice@example.com", "displayName": "Alice"}
ISSUE = {
    "id": "101",
    "key": "SUP-1",
    "url": "https://a.example/SUP-1",
    "summary": "Printer on fire",
    "description": "It is really on fire. " * 20,
    "status": {"name": "Open"},
    "priority": {"name": "High"},
    "type": {"name": "Bug"},
    "labels": ["hardware", "urgent"],
    "assignee": USER,
    "reporter": USER,
    "dueDate": "2024-05-01",
    "created": "2024-04-01T10:00:00Z",
    "updated": "2024-04-02T10:00:00Z",
    "comments": [
        {
            "id": f"c{i}",
            "body": f"comment {i} " * 10,
            "author": USER,
            "created": "t",
            "updated": "t",
            "internal": False,
        }
        for i in range(10)
    ],
    "attachments": [
        {
            "id": f"a{i}",
            "filename": f"f{i}.png",
            "mimeType": "image/png",
            "size": 10,
            "sha256": "ab",
            "created": "t",
        }
        for i in range(3)
    ],
    "project": {"idStr": "1", "key": "SUP", "name": "Support", "versions": [], "components": []},
    "customFields": {f"Field {i}": f"value {i % 5}" for i in range(N_FIELDS)},
}
CONTEXT = {
    "statuses": ["To Do", "Open", "Done"],
    "priorities": ["Low", "High"],
    "types": ["Bug", "Task"],
    "users": [{"email": "alice@example.com", "displayName": "Alice", "id": "1"}],
}

FIELDS_OUT = "".join(
    f'replica.customFields["Field {i}"] = issue.customFields["Field {i}"]\n' for i in range(N_FIELDS)
)
VALUE_MAP = '{"value 0": "A", "value 1": "B", "value 2": "C", "value 3": "D"}'
FIELDS_IN = "".join(
    f'if changed("customFields.Field {i}"):\n'
    f'    issue.customFields["Field {i}"] = mapping.map(replica.customFields["Field {i}"], MAP, "other")\n'
    for i in range(N_FIELDS)
)
FIELDS_IN = f"MAP = {VALUE_MAP}\nif issue.customFields == None:\n    issue.customFields = {{}}\n" + FIELDS_IN
LOOP_OUT = "for name, value in issue.customFields.items():\n    replica.customFields[name] = value\n"
LOOP_IN = (
    f"MAP = {VALUE_MAP}\nissue.customFields = {{}}\n"
    "for name in replica.customFields.keys():\n"
    "    if changed('customFields.' + name):\n"
    "        issue.customFields[name] = mapping.map(replica.customFields[name], MAP, 'other')\n"
)


def timeit(fn, min_seconds: float = 0.5) -> tuple[float, int]:
    fn()  # warm the compile cache
    runs = 0
    start = time.perf_counter()
    while True:
        fn()
        runs += 1
        elapsed = time.perf_counter() - start
        if elapsed >= min_seconds and runs >= 100:
            return elapsed / runs * 1e6, runs


def main() -> None:
    replica = run_outgoing(DEFAULT_OUTGOING, issue=ISSUE, context=CONTEXT).replica
    fields_replica = run_outgoing(DEFAULT_OUTGOING + FIELDS_OUT, issue=ISSUE).replica
    previous = dict(fields_replica, summary="older")
    cases = [
        ("default outgoing", lambda: run_outgoing(DEFAULT_OUTGOING, issue=ISSUE, context=CONTEXT)),
        (
            "default incoming (first sync)",
            lambda: run_incoming(
                DEFAULT_INCOMING, replica=replica, issue={}, previous=None, first_sync=True, context=CONTEXT
            ),
        ),
        (
            "default incoming (update)",
            lambda: run_incoming(
                DEFAULT_INCOMING,
                replica=replica,
                issue=ISSUE,
                previous=previous,
                first_sync=False,
                context=CONTEXT,
            ),
        ),
        (
            "default outgoing + incoming",
            lambda: (
                run_outgoing(DEFAULT_OUTGOING, issue=ISSUE, context=CONTEXT),
                run_incoming(
                    DEFAULT_INCOMING,
                    replica=replica,
                    issue=ISSUE,
                    previous=previous,
                    first_sync=False,
                    context=CONTEXT,
                ),
            ),
        ),
        (
            f"{N_FIELDS} mapped fields, outgoing",
            lambda: run_outgoing(DEFAULT_OUTGOING + FIELDS_OUT, issue=ISSUE, context=CONTEXT),
        ),
        (
            f"{N_FIELDS} mapped fields, incoming",
            lambda: run_incoming(
                DEFAULT_INCOMING + FIELDS_IN,
                replica=fields_replica,
                issue=ISSUE,
                previous=previous,
                first_sync=False,
                context=CONTEXT,
            ),
        ),
        (
            f"{N_FIELDS} mapped fields, out + in",
            lambda: (
                run_outgoing(DEFAULT_OUTGOING + FIELDS_OUT, issue=ISSUE, context=CONTEXT),
                run_incoming(
                    DEFAULT_INCOMING + FIELDS_IN,
                    replica=fields_replica,
                    issue=ISSUE,
                    previous=previous,
                    first_sync=True,
                    context=CONTEXT,
                ),
            ),
        ),
        (
            f"{N_FIELDS} fields via loop, out + in",
            lambda: (
                run_outgoing(DEFAULT_OUTGOING + LOOP_OUT, issue=ISSUE, context=CONTEXT),
                run_incoming(
                    DEFAULT_INCOMING + LOOP_IN,
                    replica=fields_replica,
                    issue=ISSUE,
                    previous=None,
                    first_sync=True,
                    context=CONTEXT,
                ),
            ),
        ),
    ]
    width = max(len(name) for name, _ in cases)
    print(f"{'rule set':<{width}}  {'µs per run':>11}  {'runs':>7}")
    print(f"{'-' * width}  {'-' * 11}  {'-' * 7}")
    for name, fn in cases:
        us, runs = timeit(fn)
        print(f"{name:<{width}}  {us:>11.1f}  {runs:>7}")


if __name__ == "__main__":
    main()
