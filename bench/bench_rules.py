"""Time per run of sync rules: the default rules and a rule set with 50 mapped custom fields, in-process (the
engine alone, the baseline) and in a sandbox process (syncrules.sandbox, what the node runs), measured in the
same run, interleaved, so the added cost per run is the difference of the two.

Run from the repository root:  python bench/bench_rules.py [--seconds 2]
"""

from __future__ import annotations

import argparse
import functools
import os
import statistics
import sys
import time
from collections.abc import Callable

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from syncrules import engine, sandbox  # noqa: E402
from syncrules.defaults import DEFAULT_INCOMING, DEFAULT_OUTGOING  # noqa: E402

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


class Runner:
    """The engine's two entry points: in-process, or in a sandbox process of ``pool``."""

    def __init__(self, pool: sandbox.SandboxPool | None = None) -> None:
        if pool is None:
            self.out, self.inc = engine.run_outgoing, engine.run_incoming
        else:
            self.out = functools.partial(sandbox.run_outgoing, pool=pool)
            self.inc = functools.partial(sandbox.run_incoming, pool=pool)


def cases(replica: dict, fields_replica: dict) -> list[tuple[str, Callable[[Runner], object]]]:
    previous = dict(fields_replica, summary="older")
    return [
        ("default outgoing", lambda r: r.out(DEFAULT_OUTGOING, issue=ISSUE, context=CONTEXT)),
        (
            "default incoming (first sync)",
            lambda r: r.inc(
                DEFAULT_INCOMING, replica=replica, issue={}, previous=None, first_sync=True, context=CONTEXT
            ),
        ),
        (
            "default incoming (update)",
            lambda r: r.inc(
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
            lambda r: (
                r.out(DEFAULT_OUTGOING, issue=ISSUE, context=CONTEXT),
                r.inc(
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
            lambda r: r.out(DEFAULT_OUTGOING + FIELDS_OUT, issue=ISSUE, context=CONTEXT),
        ),
        (
            f"{N_FIELDS} mapped fields, incoming",
            lambda r: r.inc(
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
            lambda r: (
                r.out(DEFAULT_OUTGOING + FIELDS_OUT, issue=ISSUE, context=CONTEXT),
                r.inc(
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
            lambda r: (
                r.out(DEFAULT_OUTGOING + LOOP_OUT, issue=ISSUE, context=CONTEXT),
                r.inc(
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


def measure(fn: Callable[[Runner], object], seconds: float) -> tuple[list[float], list[float]]:
    """Per-run times in µs, in-process and sandboxed, interleaved (a pair per round) for ``seconds``."""
    # The defaults of the SCRIPT_SANDBOX_* settings (the node reads them from Django's settings).
    inproc, boxed = Runner(), Runner(sandbox.get_pool(sandbox.SandboxConfig()))
    fn(inproc), fn(boxed)  # warm the compile caches (and start the sandbox process)
    base: list[float] = []
    sand: list[float] = []
    clock = time.perf_counter
    end = clock() + seconds
    while clock() < end or len(base) < 200:
        t0 = clock()
        fn(inproc)
        t1 = clock()
        fn(boxed)
        t2 = clock()
        base.append((t1 - t0) * 1e6)
        sand.append((t2 - t1) * 1e6)
    return base, sand


def p95(values: list[float]) -> float:
    return statistics.quantiles(values, n=20)[-1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=float, default=1.0, help="measuring time per case")
    args = parser.parse_args()
    replica = engine.run_outgoing(DEFAULT_OUTGOING, issue=ISSUE, context=CONTEXT).replica
    fields_replica = engine.run_outgoing(DEFAULT_OUTGOING + FIELDS_OUT, issue=ISSUE).replica
    all_cases = cases(replica, fields_replica)
    width = max(len(name) for name, _ in all_cases)
    print(
        f"{'rule set':<{width}}  {'in-process µs':>13}  {'sandbox µs':>10}  {'added µs':>8}  "
        f"{'added p95':>9}  {'ratio':>5}  {'runs':>6}"
    )
    print(f"{'':<{width}}  {'(median)':>13}  {'(median)':>10}  {'(median)':>8}  {'':>9}  {'':>5}")
    print("-" * (width + 66))
    for name, fn in all_cases:
        base, sand = measure(fn, args.seconds)
        added = [s - b for b, s in zip(base, sand, strict=True)]
        mb, ms = statistics.median(base), statistics.median(sand)
        print(
            f"{name:<{width}}  {mb:>13.0f}  {ms:>10.0f}  {statistics.median(added):>8.0f}  "
            f"{p95(added):>9.0f}  {ms / mb:>5.2f}  {len(base):>6}"
        )


if __name__ == "__main__":
    main()
