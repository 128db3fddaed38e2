"""Engine: API, data access, errors, limits, budget, cache, validate()."""

from __future__ import annotations

import copy
import sys
import time

import pytest

from syncrules import engine
from syncrules.engine import (
    KNOWN_FIELDS,
    RunResult,
    ScriptError,
    compile_script,
    run_incoming,
    run_outgoing,
    validate,
)

ISSUE = {
    "id": "1",
    "key": "A-1",
    "summary": "Hello",
    "status": {"name": "Open"},
    "labels": ["x"],
    "customFields": {"Severity": "S2"},
    "comments": [],
}


def inc(src, replica=None, issue=None, previous=None, first_sync=False, context=None):
    return run_incoming(
        src,
        replica=replica if replica is not None else {},
        issue=issue if issue is not None else {},
        previous=previous,
        first_sync=first_sync,
        context=context,
    )


def err(fn, *a, **kw) -> ScriptError:
    with pytest.raises(ScriptError) as info:
        fn(*a, **kw)
    return info.value


# --- basics ---------------------------------------------------------------------------------------


def test_outgoing_builds_replica_from_skeleton():
    r = run_outgoing("replica.summary = issue.summary\nreplica['key'] = entity.key\n", issue=ISSUE)
    assert isinstance(r, RunResult)
    assert r.issue is None and r.log == [] and not r.unexalate and not r.sync_back
    assert r.duration_ms >= 0
    assert r.replica["summary"] == "Hello" and r.replica["key"] == "A-1"
    for name in engine.LIST_FIELDS:
        assert r.replica[name] == []
    assert r.replica["customFields"] == {}


def test_attribute_and_item_access_nested_and_missing():
    src = """
replica.customFields["Sev"] = issue.customFields["Severity"]
replica.customFields.Other = issue.customFields.Severity.lower()
replica.description = issue.description
replica.summary = issue["nothing"]
replica.labels = [l.upper() for l in issue.labels]
replica.status = {"name": issue.status.name}
replica.project = {"key": "P"}
replica.project.name = replica.project.key + "!"
"""
    r = run_outgoing(src, issue=ISSUE)
    assert r.replica["customFields"] == {"Sev": "S2", "Other": "s2"}
    assert r.replica["description"] is None and r.replica["summary"] is None
    assert r.replica["labels"] == ["X"]
    assert r.replica["project"] == {"key": "P", "name": "P!"}


def test_reading_field_of_none_is_a_clear_runtime_error():
    e = err(run_outgoing, "\nx = issue.priority.name\n", issue=ISSUE)
    assert e.kind == "runtime" and e.line == 2 and "of None" in e.message


def test_incoming_does_not_mutate_inputs_even_on_failure():
    replica = {"summary": "new", "labels": ["a"], "comments": [{"id": "r1", "body": "b"}]}
    issue = {"summary": "old", "labels": ["z"], "comments": []}
    previous = {"summary": "old"}
    snap = copy.deepcopy((replica, issue, previous))
    r = inc(
        "issue.summary = replica.summary\nissue.labels.append('q')\nreplica.labels.append('r')\n"
        "previous.summary = 'p'\ncomment_helper.merge_comments(issue, replica)\n",
        replica,
        issue,
        previous,
    )
    assert r.replica is None and r.issue["summary"] == "new" and r.issue["labels"] == ["z", "q"]
    assert (replica, issue, previous) == snap
    err(inc, "issue.summary = 'x'\nissue.labels.append(1)\nboom()\n", replica, issue, previous)
    assert (replica, issue, previous) == snap


def test_outgoing_does_not_mutate_issue():
    issue = copy.deepcopy(ISSUE)
    run_outgoing("issue.labels.append('x')\nissue.summary = 'z'\n", issue=issue)
    assert issue == ISSUE


def test_first_sync_names_and_previous():
    src = "issue.a = first_sync\nissue.b = firstSync\nissue.c = len(previous)\nissue.d = previous.summary\n"
    assert inc(src, first_sync=True).issue == {"a": True, "b": True, "c": 0, "d": None}
    assert inc(src, previous={"summary": "s"}).issue == {"a": False, "b": False, "c": 1, "d": "s"}


def test_connection_info_is_read_only():
    ctx = {"connection": {"name": "c1", "remote_instance": {"name": "R", "tracker_type": "jira"}}}
    r = run_outgoing(
        "replica.summary = connection.name + connection.remote_instance.tracker_type\n", issue={}, context=ctx
    )
    assert r.replica["summary"] == "c1jira"
    for src in (
        "connection.name = 'x'\n",
        "connection.remote_instance['name'] = 1\n",
        "connection.clear()\n",
    ):
        assert err(run_outgoing, src, issue={}, context=ctx).kind == "forbidden"
    assert ctx["connection"]["name"] == "c1"


def test_result_must_be_json_data():
    e = err(run_outgoing, "replica.summary = log\n", issue={})
    assert e.kind == "runtime" and "cannot be synced" in e.message
    r = run_outgoing("replica.labels = ('a', 'b')\nreplica.customFields = {1: {'x'}}\n", issue={})
    assert r.replica["labels"] == ["a", "b"] and r.replica["customFields"] == {"1": ["x"]}


def test_reassigning_replica_name_does_not_replace_result():
    r = run_outgoing("replica.summary = 's'\nreplica = {}\n", issue={})
    assert r.replica["summary"] == "s"


def test_print_goes_to_log():
    r = run_outgoing("print('hello', 1, [2])\n", issue={})
    assert r.log == ["PRINT: hello 1 [2]"]


def test_safe_builtins_work():
    src = """
xs = sorted([3, 1, 2], reverse=True)
issue.a = [len(xs), min(xs), max(xs), sum(xs), abs(-2), round(2.567, 2), int("4"), float("1.5"), bool(0)]
issue.b = list(reversed(xs)) + list(range(2))
issue.c = dict(zip(["k1", "k2"], [1, 2]))
issue.d = [i for i, v in enumerate(xs) if v > 1]
issue.e = any(x > 2 for x in xs) and all(x > 0 for x in xs)
issue.f = isinstance("s", str) and isinstance(1, (int, float)) and not isinstance([], dict)
issue.g = str(5) + " " + f"{3:03d}|{'x'!r}|{xs}" + " %s-%d" % ("a", 2)
issue.h = sorted(set([1, 1, 2])) + list(tuple([9]))
a, (b, c) = 1, (2, 3)
issue.i = [a, b, c]
n = 1
n += 2
n *= 3
issue.j = n
def twice(v):
    return v * 2
issue.k = list(map_ for map_ in [twice(2), (lambda q: q + 1)(1)])
try:
    1 / 0
except ZeroDivisionError:
    issue.l = "caught"
try:
    raise ValueError("bad")
except (KeyError, ValueError) as ex:
    issue.m = str(ex)
"""
    r = inc(src)
    assert r.issue["a"] == [3, 1, 3, 6, 2, 2.57, 4, 1.5, False]
    assert r.issue["b"] == [1, 2, 3, 0, 1]
    assert r.issue["c"] == {"k1": 1, "k2": 2}
    assert r.issue["d"] == [0, 1]
    assert r.issue["e"] is True and r.issue["f"] is True
    assert r.issue["g"] == "5 003|'x'|[3, 2, 1] a-2"
    assert r.issue["h"] == [1, 2, 9]
    assert r.issue["i"] == [1, 2, 3] and r.issue["j"] == 9 and r.issue["k"] == [4, 2]
    assert r.issue["l"] == "caught" and r.issue["m"] == "bad"


def test_string_helpers_allowed():
    src = "issue.a = '-'.join(['a', 'b'])\nissue.b = 'abc'.replace('b', 'XX')\n"
    src += "issue.c = ' x '.strip().split(',')\n"
    src += "l = [1]\nl.extend([2, 3])\nissue.d = l\nd = {}\nd.update({'x': 1})\nissue.e = d\n"
    r = inc(src)
    assert r.issue == {"a": "a-b", "b": "aXXc", "c": ["x"], "d": [1, 2, 3], "e": {"x": 1}}


# --- errors ---------------------------------------------------------------------------------------


def test_runtime_error_message_and_line():
    e = err(inc, "x = 1\n\n\nfoo\n")
    assert e.kind == "runtime" and e.line == 4 and e.direction == "incoming"
    assert str(e) == (
        'Incoming script, line 4: NameError: name "foo" is not defined. '
        "Fix the script and publish it; the event is retried then."
    )


def test_runtime_error_inside_function_reports_that_line():
    e = err(run_outgoing, "def f(d):\n    return d['a'] + 1\n\nf({})\n", issue={})
    assert e.kind == "runtime" and e.line == 2 and e.direction == "outgoing" and "TypeError" in e.message
    assert str(e).startswith("Outgoing script, line 2: TypeError")


def test_raise_in_script_is_runtime_error():
    e = err(inc, "raise Exception('stop here')\n")
    assert e.kind == "runtime" and e.message == "Exception: stop here"


def test_compile_error_has_line():
    e = err(compile_script, "x = 1\nif x\n", direction="outgoing")
    assert e.kind == "compile" and e.line == 2 and "SyntaxError" in e.message
    e = err(run_incoming, "x = 1\nimport os\n", replica={}, issue={}, previous=None, first_sync=True)
    assert e.kind == "compile" and e.line == 2
    with pytest.raises(ValueError):
        compile_script("x = 1", direction="sideways")


def test_compile_cache():
    src = "replica.summary = 'cached'\n"
    assert compile_script(src, direction="outgoing") is compile_script(src, direction="outgoing")
    assert compile_script(src, direction="incoming") is not compile_script(src, direction="outgoing")


# --- budget ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "src, line",
    [
        ("x = 1\nwhile True: pass\n", 2),
        ("x = 1\nwhile True:\n    x = x + 1\n", 3),
        ("for i in range(10):\n    while i < 5:\n        pass\n", 2),
        ("x = [1 for a in range(1000000) for b in range(1000000)]\n", 1),
        ("def f():\n    while True:\n        pass\nf()\n", 2),
    ],
)
def test_endless_loop_times_out_with_line(src, line):
    ctx = {"limits": {"max_steps": 10**12, "timeout_s": 0.3}}
    t = time.perf_counter()
    e = err(inc, src, context=ctx)
    assert time.perf_counter() - t < 1.5
    assert e.kind == "timeout" and "longer than 0.3 s" in e.message
    assert e.line is not None and e.line <= line + 1
    assert f"on line {e.line}" in e.message


def test_endless_loop_default_budget_fails_within_one_and_a_half_seconds():
    t = time.perf_counter()
    e = err(inc, "while True:\n    pass\n")
    assert time.perf_counter() - t < 1.5 and e.kind == "timeout" and e.line in (1, 2)


def test_bare_except_cannot_swallow_timeout():
    src = "while True:\n    try:\n        while True:\n            pass\n    except:\n        pass\n"
    t = time.perf_counter()
    e = err(inc, src, context={"limits": {"max_steps": 10**12, "timeout_s": 0.2}})
    assert e.kind == "timeout" and time.perf_counter() - t < 1.0


def test_step_limit():
    e = err(inc, "n = 0\nfor i in range(1000):\n    n = n + i\n", context={"limits": {"max_steps": 100}})
    assert e.kind == "timeout" and "more than 100 steps" in e.message and e.line == 2
    inc("n = 0\nfor i in range(50):\n    n = n + i\n", context={"limits": {"max_steps": 100}})


def test_recursion_is_stopped():
    e = err(inc, "def f(n):\n    return f(n + 1)\nf(0)\n")
    assert e.kind == "limit" and "levels deep" in e.message and e.line == 2


def test_recursion_with_except_still_stopped():
    src = "def f():\n    try:\n        f()\n    except:\n        f()\nf()\n"
    t = time.perf_counter()
    e = err(inc, src)
    assert e.kind in ("limit", "timeout") and time.perf_counter() - t < 1.5


def test_previous_tracer_is_restored():
    calls = []

    def tracer(frame, event, arg):
        calls.append(event)
        return None

    old = sys.gettrace()
    sys.settrace(tracer)
    try:
        inc("def f():\n    return 1\nx = f()\n")
        assert sys.gettrace() is tracer
        err(inc, "def f():\n    while True:\n        pass\nf()\n", context={"limits": {"timeout_s": 0.05}})
        assert sys.gettrace() is tracer
    finally:
        sys.settrace(old)


def test_straight_line_scripts_are_not_traced():
    assert not compile_script("issue.summary = replica.summary\n", direction="incoming").needs_trace
    assert compile_script("def f():\n    pass\n", direction="incoming").needs_trace
    assert compile_script("f = lambda: 1\n", direction="incoming").needs_trace


# --- size limits ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "src",
    [
        "x = 'a' * 10**9",
        "x = 10**9 * 'a'",
        "x = [0] * 10**9",
        "x = (0,) * 10**9",
        "x = 10 ** 10**8",
        "x = 2 ** 200000",
        "x = 1 << 10**9",
        "x = 3 ** 100000 * 3 ** 100000",
        "x = list(range(10**9))",
        "x = range(10**20)",
        "s = 'ab'\nfor i in range(40):\n    s = s + s",
        "s = 'ab'\nfor i in range(40):\n    s += s",
        "l = [1]\nfor i in range(40):\n    l += l",
        "l = [1]\nfor i in range(40):\n    l.extend(l)",
        "s = 'a' * 1000\nx = s.join([s] * 2000)",
        "s = 'a' * 100000\nx = s.replace('a', s)",
        "x = '%0999999999d' % 1",
        "x = '%*d' % (10**9, 1)",
        "x = f'{1:>999999999}'",
        "x = f'{1:{10**9}}'",
        "s = 'a' * 900000\nfor i in range(20):\n    t = s + 'b'",
        "x = 1\nx <<= 10**9",
        "x = 10\nx **= 10**8",
        "x = round(5, -10**8)",
    ],
)
def test_size_limits(src):
    t = time.perf_counter()
    e = err(inc, src + "\n")
    assert time.perf_counter() - t < 1.0
    assert e.kind in ("limit", "forbidden", "runtime"), e
    if e.kind == "runtime":
        assert "round" in src


def test_final_result_size_is_checked():
    e = err(inc, "issue.description = 'x' * 600000\nissue.summary = 'y' * 600000\n")
    assert e.kind == "limit"
    e = err(inc, "l = [1]\nfor i in range(100):\n    l = [l, l]\nissue.labels = l\n")
    assert e.kind == "limit"
    e = err(inc, "l = []\nl.append(l)\nissue.labels = l\n")
    assert e.kind == "limit"
    e = err(run_outgoing, "replica.summary = 'x' * 50\n", issue={}, context={"limits": {"max_size": 40}})
    assert e.kind == "limit"


def test_str_of_huge_nested_value_is_refused():
    src = "l = [1]\nfor i in range(60):\n    l = [l, l]\nissue.summary = str(l)\n"
    assert err(inc, src).kind == "limit"
    src = "l = [1]\nfor i in range(60):\n    l = [l, l]\nlog.info(l)\n"
    assert err(inc, src).kind == "limit"
    src = "l = [1]\nfor i in range(60):\n    l = [l, l]\nx = f'{l}'\n"
    assert err(inc, src).kind == "limit"


def test_total_build_budget():
    src = "keep = []\nfor i in range(100):\n    keep.append('x' * 900000)\n"
    assert err(inc, src).kind == "limit"


# --- validate -------------------------------------------------------------------------------------


def test_validate_ok():
    from syncrules.defaults import DEFAULT_INCOMING, DEFAULT_OUTGOING

    assert validate(DEFAULT_OUTGOING, DEFAULT_INCOMING) == []


def test_validate_compile_error_with_line():
    problems = validate("replica.summary = issue.summary\nreplica.key = (\n", "")
    assert problems and problems[0]["severity"] == "error"
    assert problems[0]["direction"] == "outgoing" and problems[0]["line"] in (2, 3)
    problems = validate("", "x = 1\nimport os\n")
    assert problems == [
        {
            "direction": "incoming",
            "line": 2,
            "message": "import is not allowed in sync scripts",
            "severity": "error",
        }
    ]
    problems = validate("x = ().__class__\n", "")
    assert (
        problems[0]["severity"] == "error"
        and problems[0]["line"] == 1
        and "__class__" in problems[0]["message"]
    )


def test_validate_unknown_field_warning():
    problems = validate(
        "replica.sumary = issue.summary\n", "\nissue.stauts = replica.status\nissue['foo'] = 1\n"
    )
    assert problems == [
        {
            "direction": "outgoing",
            "line": 1,
            "message": "unknown replica field 'sumary' – did you mean 'summary'?",
            "severity": "warning",
        },
        {
            "direction": "incoming",
            "line": 2,
            "message": "unknown issue field 'stauts' – did you mean 'status'?",
            "severity": "warning",
        },
        {
            "direction": "incoming",
            "line": 3,
            "message": "unknown issue field 'foo' – it is not part of the hubIssue and is ignored; "
            "use customFields for extra data",
            "severity": "warning",
        },
    ]


def test_known_fields():
    assert isinstance(KNOWN_FIELDS, frozenset)
    assert {"summary", "customFields", "eventTriggerContext", "comments", "dueDate"} <= KNOWN_FIELDS


def test_writing_into_missing_field_is_a_clear_runtime_error():
    e = err(inc, "issue.customFields['Severity'] = 'S1'\n")
    assert e.kind == "runtime" and e.line == 1 and "field of None" in e.message
    r = inc("if issue.customFields == None:\n    issue.customFields = {}\nissue.customFields['S'] = 1\n")
    assert r.issue == {"customFields": {"S": 1}}
