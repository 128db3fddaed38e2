"""A catalogue of hostile scripts: each must fail with a clear ScriptError and change nothing."""

from __future__ import annotations

import copy
import sys
import time

import pytest

from syncrules.engine import ScriptError, run_incoming, run_outgoing

REPLICA = {"summary": "remote", "labels": ["a"], "comments": [{"id": "r1", "body": "hi"}]}
ISSUE = {"summary": "local", "labels": ["b"], "comments": [{"id": "l1", "body": "x"}]}
PREVIOUS = {"summary": "old"}
LIMITS = {"limits": {"timeout_s": 0.3}}

HOSTILE = {
    # imports and module access
    "import": ("import os\n", {"compile"}),
    "from-import": ("from os import system\n", {"compile"}),
    "__import__": ("__import__('os').system('id')\n", {"compile"}),
    "sys-name": ("sys.modules\n", {"compile"}),
    "os-name": ("os.system('id')\n", {"compile"}),
    "__builtins__": ("__builtins__['open']\n", {"compile"}),
    # introspection chains
    "tuple-class": ("x = ().__class__\n", {"compile"}),
    "mro-subclasses": ("x = ''.__class__.__mro__[1].__subclasses__()\n", {"compile"}),
    "dict-init": ("dict.__init__\n", {"compile"}),
    "format-dunder": ("x = '{0.__class__}'.format(1)\n", {"forbidden"}),
    "str-format-type": ("x = str.format('{0}', 1)\n", {"forbidden"}),
    "format-map": ("x = '{a}'.format_map({'a': 1})\n", {"forbidden"}),
    "fstring-dunder": ("x = f'{issue.__class__}'\n", {"compile"}),
    "getattr-concat": ("x = getattr(issue, '__cl' + 'ass__')\n", {"compile"}),
    "vars": ("x = vars()\n", {"compile"}),
    "globals": ("x = globals()\n", {"compile"}),
    "locals": ("x = locals()\n", {"compile"}),
    "eval": ("eval('1')\n", {"compile"}),
    "exec": ("exec('x = 1')\n", {"compile"}),
    "compile": ("compile('1', 'f', 'eval')\n", {"compile"}),
    "open": ("open('/etc/passwd').read()\n", {"compile"}),
    "type": ("x = type(issue)\n", {"compile"}),
    "generator-gi_frame": ("g = (x for x in [1])\ny = g.gi_frame\n", {"compile"}),
    "generator-gi_code": ("g = (x for x in [1])\ny = g.gi_code\n", {"compile"}),
    "generator-attr": ("g = (x for x in [1])\ny = g.send\n", {"forbidden"}),
    "generator-function": ("def g():\n    yield 1\n", {"compile"}),
    "traceback": ("try:\n    1 / 0\nexcept Exception as e:\n    t = e.__traceback__\n", {"compile"}),
    "tb_frame": ("try:\n    1 / 0\nexcept Exception as e:\n    t = e.tb_frame\n", {"compile"}),
    "exception-attr": ("try:\n    1 / 0\nexcept Exception as e:\n    t = e.with_traceback\n", {"forbidden"}),
    "function-attr": ("def f():\n    pass\nx = f.func_globals\n", {"forbidden"}),
    "lambda-code": ("f = lambda: 1\nx = f.__code__\n", {"compile"}),
    "lambda-attr": ("f = lambda: 1\nx = f.closure\n", {"forbidden"}),
    "helper-internals": ("x = log._state\n", {"compile"}),
    "helper-unknown-method": ("x = comment_helper.merge\n", {"forbidden"}),
    "builtin-attr-read": ("x = len.self\n", {"forbidden"}),
    "ctor-attr": ("x = str.lower\n", {"forbidden"}),
    "decorator": ("def d(f):\n    return f\n@d\ndef g():\n    pass\n", {"compile"}),
    "class": ("class A:\n    pass\n", {"compile"}),
    "global": ("def f():\n    global x\n", {"compile"}),
    "with": ("with log:\n    pass\n", {"compile"}),
    "finally-loop": ("try:\n    pass\nfinally:\n    while True:\n        pass\n", {"compile"}),
    "except-basexception": ("try:\n    pass\nexcept BaseException:\n    pass\n", {"compile"}),
    "except-expression": ("try:\n    pass\nexcept (lambda: Exception)():\n    pass\n", {"compile"}),
    "except-unknown-name": ("try:\n    pass\nexcept Nope:\n    pass\n", {"compile"}),
    "async": ("async def f():\n    pass\n", {"compile"}),
    "bytes": ("x = b'a' * 10\n", {"compile"}),
    # loops and recursion
    "endless-loop": ("while True:\n    pass\n", {"timeout"}),
    "swallow-timeout": ("try:\n    while True:\n        pass\nexcept:\n    pass\n", {"timeout"}),
    "swallow-timeout-loop": (
        "while True:\n    try:\n        while True:\n            pass\n    except Exception:\n        pass\n",
        {"timeout"},
    ),
    "rebound-exception": (
        "Exception = 5\ntry:\n    while True:\n        pass\nexcept Exception:\n    pass\n",
        {"timeout"},
    ),
    "recursion-bomb": ("def f():\n    f()\nf()\n", {"limit"}),
    "exponential-calls": (
        "def f(n):\n    return f(n + 1) + f(n + 1) if n < 40 else 1\nf(0)\n",
        {"timeout", "limit"},
    ),
    "comprehension-bomb": ("x = [a for a in range(10**6) for b in range(10**6)]\n", {"timeout"}),
    "sorted-key-loop": ("def k(v):\n    while True:\n        pass\nsorted([1, 2], key=k)\n", {"timeout"}),
    # allocations
    "str-mult": ("x = 'a' * 10**9\n", {"limit"}),
    "list-mult": ("x = [0] * 10**9\n", {"limit"}),
    "pow": ("x = 10 ** 10**8\n", {"limit"}),
    "lshift": ("x = 1 << 10**9\n", {"limit"}),
    "range-list": ("x = list(range(10**9))\n", {"limit"}),
    "doubling": ("s = 'x'\nwhile True:\n    s = s + s\n", {"limit"}),
    "sum-lists": ("x = sum([[1] * 1000] * 1000, [])\n", {"runtime"}),
    # writes to things that are not data
    "helper-write": ("log.info = None\n", {"forbidden"}),
    "helper-new-attr": ("comment_helper.x = 1\n", {"forbidden"}),
    "builtin-write": ("len.x = 1\n", {"forbidden"}),
    "function-write": ("def f():\n    pass\nf.x = 1\n", {"forbidden"}),
    "ctor-item-write": ("str['x'] = 1\n", {"forbidden"}),
    "string-index-write": ("s = 'abc'\ns[0] = 'x'\n", {"forbidden"}),
    "connection-write": ("connection.name = 'x'\n", {"forbidden"}),
    "helper-index": ("x = log[0]\n", {"forbidden"}),
    "helper-iterate": ("for x in log:\n    pass\n", {"forbidden"}),
    # plain bugs still fail cleanly after mutating the copy
    "mutate-then-fail": (
        "issue.summary = 'hacked'\nissue.labels.append('z')\nreplica.labels.clear()\n1 / 0\n",
        {"runtime"},
    ),
    "raise-exception": ("issue.summary = 'x'\nraise Exception('no')\n", {"runtime"}),
    "isinstance-type-leak": ("x = isinstance(1, len)\n", {"runtime"}),
}


@pytest.mark.parametrize("name", sorted(HOSTILE))
def test_hostile_script_incoming(name):
    src, kinds = HOSTILE[name]
    replica, issue, previous = copy.deepcopy(REPLICA), copy.deepcopy(ISSUE), copy.deepcopy(PREVIOUS)
    tracer = sys.gettrace()
    start = time.perf_counter()
    with pytest.raises(ScriptError) as info:
        run_incoming(src, replica=replica, issue=issue, previous=previous, first_sync=False, context=LIMITS)
    e = info.value
    assert time.perf_counter() - start < 1.5
    assert e.kind in kinds, (e.kind, str(e))
    assert e.direction == "incoming"
    assert e.message and str(e).startswith("Incoming script")
    assert str(e).endswith("Fix the script and publish it; the event is retried then.")
    if e.kind != "compile":
        assert e.line is not None
    assert (replica, issue, previous) == (REPLICA, ISSUE, PREVIOUS)
    assert sys.gettrace() is tracer


@pytest.mark.parametrize("name", ["import", "format-dunder", "endless-loop", "str-mult", "helper-write"])
def test_hostile_script_outgoing(name):
    src, kinds = HOSTILE[name]
    issue = copy.deepcopy(ISSUE)
    with pytest.raises(ScriptError) as info:
        run_outgoing(src, issue=issue, context=LIMITS)
    assert info.value.kind in kinds and info.value.direction == "outgoing"
    assert issue == ISSUE


def test_catalogue_is_big_enough():
    assert len(HOSTILE) >= 30


def test_helpers_unchanged_after_hostile_attempts():
    # a later run still has working helpers (nothing is shared between runs)
    r = run_outgoing("log.info('ok')\n", issue={})
    assert r.log == ["INFO: ok"]
