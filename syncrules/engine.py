"""Sync rules engine: compile, cache and run sync scripts (the language guard).

Scripts are a small subset of Python compiled with RestrictedPython plus the extra rules of
:class:`_RulesTransformer`; they run against plain JSON-like data (dicts, lists, str, numbers).
The node never calls this module's ``run_*`` functions in its own processes: every run goes through
:mod:`syncrules.sandbox`, which runs them in an OS-limited child process that the node kills when it
crashes, runs out of memory or misses its deadline (see "Known limitation" below for why).

Sandbox design
--------------
* **Data.** ``replica``, ``issue`` and ``previous`` are plain dicts (deep copies, so the caller's
  inputs are never mutated and a failing script changes nothing).  The attribute guard lets a
  script read dict keys as attributes (``replica.status.name``); a missing key reads as None;
  ``d["key"]`` also returns None for a missing key.  ``_write_`` wraps a dict in a tiny proxy so
  ``replica.summary = x`` sets the key.  Dict method names (get, keys, items, ...) win over keys
  of the same name; use ``d["items"]`` for such keys.
* **Attribute whitelist.** ``_getattr_`` allows dict keys, a fixed list of str/list/dict/set/tuple
  methods, and the ``_exposed`` methods of helper objects.  Nothing else: no attribute of
  functions, types, exceptions, generators, modules.  Names starting with ``_`` are rejected at
  compile time.  ``str.format``/``format_map`` are not available (format-string attribute escapes);
  f-strings are compiled into a guarded formatter.
* **Writes.** Only dicts (not the read-only ``connection``) and lists can be written to.
* **Exceptions.** ``except`` clauses may only name a few builtin exception classes (bare ``except``
  means ``Exception``); they are compiled to references the script cannot rebind.  Timeouts,
  limits and forbidden operations raise :class:`ScriptAbort`, a BaseException, which therefore
  can never be swallowed.  ``finally``, ``with``, classes, generators (``yield``), imports,
  ``global``/``nonlocal`` and decorators are rejected at compile time.
* **Size caps.** ``*``, ``**``, ``<<``, ``+``, ``%`` and ``+=``-style operators, f-string format
  specs, ``range()``, ``str.join``/``str.replace``, ``list.extend`` and ``str()`` of containers are
  checked *before* allocating: a single result may not exceed ``max_size`` elements/characters,
  integers may not exceed ``MAX_INT_BITS`` bits, and the total built by these operations in one run
  is capped at ``10 * max_size``.  The final replica/issue is measured as well.
* **Time budget.** Every ``for``/``while`` body starts with a compiled-in ``_tick_()`` call and
  every comprehension / generator expression iterates through ``_ticking_()``; each tick counts
  one step (``max_steps``) and every 128 steps the wall clock (``timeout_s``) is checked.  Both
  exhaustions raise kind ``"timeout"`` naming the script line.  (A ``sys.settrace`` line tracer
  alone is not enough: CPython 3.11 emits no line event for ``while True: pass``.)
  *Performance trick:* the ``sys.settrace`` tracer is only installed when the script contains a
  ``def`` or ``lambda``: it counts executed lines of script frames (code file name
  ``<rules:outgoing>``/``<rules:incoming>``) and caps the script's call depth at
  ``MAX_CALL_DEPTH`` (recursion).  A script without loops and functions runs with no budget
  overhead (the default rules).  The previous tracer (coverage, debugger) is restored after each
  traced run.
* **Known limitation.** These guards run between Python operations, so they cannot stop an
  operation implemented in C, and not every builtin is size-capped (``sorted``, ``tuple``, ``set``,
  ``dict``, ``str.split``, ``.copy`` are not).  Measured in-process: hashing a tuple nested 200,000
  deep (``len({t})``, ``mapping.map(t, {})``) overflows the C stack and kills the process;
  ``[tuple(range(10**6)) for i in range(60)]`` took 12 s and 2.3 GB; 20 straight-line
  ``sorted()`` calls of a million-item set took 6 s with no loop to tick.  Straight-line code *can*
  run away.  That is why the node runs scripts only in :mod:`syncrules.sandbox` processes, where
  address space, CPU time and a wall-clock deadline are enforced by the OS and the parent.
* **Memory.** A ``MemoryError`` (the sandbox's address-space limit) ends the run as kind
  ``"memory"``.

The module does not import Django.
"""

from __future__ import annotations

import ast
import difflib
import functools
import re
import sys
import time
from dataclasses import dataclass
from types import CodeType
from typing import Any

from RestrictedPython import compile_restricted_exec
from RestrictedPython.Guards import guarded_iter_unpack_sequence, guarded_unpack_sequence
from RestrictedPython.transformer import RestrictingNodeTransformer, copy_locations

from syncrules.helpers import (
    AttachmentHelper,
    CommentHelper,
    Helper,
    LogHelper,
    MappingHelper,
    NodeHelper,
    ReadOnlyDict,
    RunState,
    ScriptAbort,
    SyncHelper,
    changed_fn,
    clone,
    read_only,
)

__all__ = [
    "KNOWN_FIELDS",
    "CodeObj",
    "CompiledScript",
    "RunResult",
    "ScriptAbort",
    "ScriptError",
    "compile_script",
    "run_incoming",
    "run_outgoing",
    "validate",
]

DIRECTIONS = ("outgoing", "incoming")
KNOWN_FIELDS: frozenset[str] = frozenset(
    {
        "id",
        "key",
        "url",
        "summary",
        "description",
        "status",
        "priority",
        "type",
        "labels",
        "assignee",
        "reporter",
        "dueDate",
        "parentId",
        "created",
        "updated",
        "comments",
        "attachments",
        "project",
        "customFields",
        "watchers",
        "fixVersions",
        "components",
        "voters",
        "eventTriggerContext",
    }
)
LIST_FIELDS = ("labels", "comments", "attachments", "watchers", "fixVersions", "components", "voters")

DEFAULT_LIMITS = {"timeout_s": 1.0, "max_steps": 1_000_000, "max_size": 1_000_000}
MAX_SOURCE_CHARS = 200_000
MAX_INT_BITS = 100_000
MAX_FORMAT_WIDTH = 10_000
MAX_CALL_DEPTH = 50
MAX_NESTING = 64
TOTAL_BUILD_FACTOR = 10
CACHE_SIZE = 256

# ----------------------------------------------------------------------------------------------
# errors


class ScriptError(Exception):
    """A sync script failed to compile or run."""

    def __init__(self, message: str, *, line: int | None, direction: str, kind: str):
        self.message = message
        self.line = line
        self.direction = direction
        self.kind = kind
        super().__init__(str(self))

    def __str__(self) -> str:
        where = f"{self.direction.capitalize()} script"
        if self.line:
            where += f", line {self.line}"
        return (
            f"{where}: {self.message.rstrip('.')}. Fix the script and publish it; the event is retried then."
        )

    def as_dict(self) -> dict:
        return {"direction": self.direction, "line": self.line, "message": self.message, "kind": self.kind}


@dataclass
class RunResult:
    replica: dict | None
    issue: dict | None
    log: list[str]
    unexalate: bool
    sync_back: bool
    duration_ms: float


@dataclass(frozen=True)
class CompiledScript:
    code: CodeType
    direction: str
    filename: str
    needs_trace: bool


CodeObj = CompiledScript

# ----------------------------------------------------------------------------------------------
# compilation

# exceptions a script may raise and catch
EXCEPTION_NAMES = (
    "Exception",
    "ValueError",
    "KeyError",
    "TypeError",
    "IndexError",
    "AttributeError",
    "ZeroDivisionError",
    "LookupError",
    "ArithmeticError",
    "RuntimeError",
    "AssertionError",
)
FORBIDDEN_NAMES = frozenset(
    {
        "eval",
        "exec",
        "compile",
        "open",
        "getattr",
        "setattr",
        "delattr",
        "hasattr",
        "globals",
        "locals",
        "vars",
        "dir",
        "type",
        "object",
        "super",
        "id",
        "iter",
        "next",
        "format",
        "repr",
        "input",
        "help",
        "breakpoint",
        "memoryview",
        "bytearray",
        "classmethod",
        "staticmethod",
        "property",
        "issubclass",
        "callable",
        "pow",
        "exit",
        "quit",
        "sys",
        "os",
        "builtins",
        "subprocess",
        "BaseException",
        "SystemExit",
        "KeyboardInterrupt",
        "GeneratorExit",
    }
)
_FORBIDDEN_NODES = {
    ast.Import: "import is not allowed in sync scripts",
    ast.ImportFrom: "import is not allowed in sync scripts",
    ast.ClassDef: "class definitions are not allowed in sync scripts",
    ast.Global: "'global' is not allowed in sync scripts",
    ast.Nonlocal: "'nonlocal' is not allowed in sync scripts",
    ast.Yield: "'yield' (generator functions) is not allowed in sync scripts",
    ast.YieldFrom: "'yield' (generator functions) is not allowed in sync scripts",
    ast.Await: "async code is not allowed in sync scripts",
    ast.AsyncFunctionDef: "async code is not allowed in sync scripts",
    ast.AsyncFor: "async code is not allowed in sync scripts",
    ast.AsyncWith: "async code is not allowed in sync scripts",
    ast.With: "'with' is not allowed in sync scripts",
    ast.TryStar: "'except*' is not allowed in sync scripts",
}
# only functions need the line tracer (call depth / recursion); loops are budgeted by _tick_
_TRACE_NODES = (ast.FunctionDef, ast.Lambda)
_GUARDED_BINOPS = {
    ast.Mult: "_mul_",
    ast.Pow: "_pow_",
    ast.LShift: "_lshift_",
    ast.Add: "_add_",
    ast.Mod: "_mod_",
}


def _call(name: str, args: list, like: ast.AST) -> ast.Call:
    node = ast.Call(func=ast.Name(name, ast.Load()), args=args, keywords=[])
    copy_locations(node, like)
    copy_locations(node.func, like)
    return node


class _RulesTransformer(RestrictingNodeTransformer):
    """RestrictedPython policy plus the size guards and the safe ``except`` rewrite."""

    def visit_BinOp(self, node: ast.BinOp):
        node = self.node_contents_visit(node)
        guard = _GUARDED_BINOPS.get(type(node.op))
        if guard is None:
            return node
        return _call(guard, [node.left, node.right], node)

    def _tick_body(self, node):
        tick = ast.Expr(_call("_tick_", [], node))
        copy_locations(tick, node)
        node.body.insert(0, tick)
        return node

    def visit_While(self, node: ast.While):
        return self._tick_body(super().visit_While(node))

    def visit_For(self, node: ast.For):
        return self._tick_body(super().visit_For(node))

    def visit_comprehension(self, node: ast.comprehension):
        node = super().visit_comprehension(node)
        node.iter = _call("_ticking_", [node.iter], node.iter)
        return node

    def visit_FormattedValue(self, node: ast.FormattedValue):
        node = self.node_contents_visit(node)
        spec = node.format_spec if node.format_spec is not None else ast.Constant("")
        copy_locations(spec, node)
        conv = ast.Constant(node.conversion)
        copy_locations(conv, node)
        node.value = _call("_fmt_", [node.value, conv, spec], node)
        node.conversion = -1
        node.format_spec = None
        return node

    def visit_ExceptHandler(self, node: ast.ExceptHandler):
        node = super().visit_ExceptHandler(node)
        names = []
        if node.type is None:
            names = ["Exception"]
        elif isinstance(node.type, ast.Name):
            names = [node.type.id]
        elif isinstance(node.type, ast.Tuple) and all(isinstance(e, ast.Name) for e in node.type.elts):
            names = [e.id for e in node.type.elts]
        else:
            self.error(node, "'except' may only name exception classes such as ValueError or KeyError")
            return node
        bad = [n for n in names if n not in EXCEPTION_NAMES]
        if bad:
            self.error(
                node,
                f"'except {bad[0]}' is not allowed; use one of: {', '.join(EXCEPTION_NAMES)}",
            )
            return node
        refs = [ast.Name(f"_exc_{n}", ast.Load()) for n in names]
        for ref in refs:
            copy_locations(ref, node)
        node.type = refs[0] if len(refs) == 1 else ast.Tuple(refs, ast.Load())
        copy_locations(node.type, node)
        return node


_LINE_RE = re.compile(r"^Line (\d+): ?(.*)$", re.S)


def _precheck(tree: ast.AST) -> list[tuple[int | None, str]]:
    errors = []
    for node in ast.walk(tree):
        msg = _FORBIDDEN_NODES.get(type(node))
        if msg:
            errors.append((getattr(node, "lineno", None), msg))
        elif isinstance(node, ast.Try) and node.finalbody:
            errors.append((node.lineno, "'finally' is not allowed in sync scripts"))
        elif isinstance(node, ast.FunctionDef | ast.Lambda) and getattr(node, "decorator_list", None):
            errors.append((node.lineno, "decorators are not allowed in sync scripts"))
        elif isinstance(node, ast.Name) and node.id in FORBIDDEN_NAMES:
            errors.append((node.lineno, f"'{node.id}' is not available in sync scripts"))
        elif isinstance(node, ast.Constant) and isinstance(node.value, bytes):
            errors.append((node.lineno, "bytes literals are not allowed in sync scripts"))
    return sorted(errors, key=lambda e: e[0] or 0)


def _compile_errors(
    source: str, direction: str
) -> tuple[CompiledScript | None, list[tuple[int | None, str]]]:
    if direction not in DIRECTIONS:
        raise ValueError(f"direction must be one of {DIRECTIONS}")
    if not isinstance(source, str):
        return None, [(None, "the script must be text")]
    if len(source) > MAX_SOURCE_CHARS:
        return None, [(None, f"the script is longer than {MAX_SOURCE_CHARS:,} characters")]
    filename = f"<rules:{direction}>"
    try:
        return _compile_tree(source, direction, filename)
    except (RecursionError, MemoryError):  # the parser's and the transformer's nesting limits
        return None, [(None, TOO_DEEP)]


TOO_DEEP = (
    "the script nests too deeply to compile (e.g. hundreds of operators or brackets in one expression); "
    "split it into several statements"
)


def _compile_tree(
    source: str, direction: str, filename: str
) -> tuple[CompiledScript | None, list[tuple[int | None, str]]]:
    try:
        tree = ast.parse(source, filename, "exec")
    except SyntaxError as e:
        return None, [(e.lineno, f"SyntaxError: {e.msg}")]
    except ValueError as e:  # NUL characters
        return None, [(None, f"SyntaxError: {e}")]
    errors = _precheck(tree)
    if errors:
        return None, errors
    needs_trace = any(isinstance(n, _TRACE_NODES) for n in ast.walk(tree))
    result = compile_restricted_exec(tree, filename=filename, policy=_RulesTransformer)
    if result.errors or result.code is None:
        out = []
        for err in result.errors or ["the script could not be compiled"]:
            m = _LINE_RE.match(err)
            if m:
                out.append((int(m.group(1)) if m.group(1).isdigit() else None, m.group(2)))
            else:
                out.append((None, err))
        return None, out
    return CompiledScript(result.code, direction, filename, needs_trace), []


@functools.lru_cache(maxsize=CACHE_SIZE)
def _compile_cached(source: str, direction: str) -> CompiledScript:
    compiled, errors = _compile_errors(source, direction)
    if errors:
        line, msg = errors[0]
        raise ScriptError(msg, line=line, direction=direction, kind="compile")
    assert compiled is not None
    return compiled


def compile_script(source: str, *, direction: str) -> CompiledScript:
    """Compile (cached per (source, direction)); raises ScriptError(kind="compile")."""
    try:
        return _compile_cached(source, direction)
    except ScriptError as e:
        raise ScriptError(e.message, line=e.line, direction=e.direction, kind=e.kind) from None


_WRITE_TARGETS = {"outgoing": ("replica",), "incoming": ("issue", "entity")}


def validate(outgoing: str, incoming: str) -> list[dict]:
    """Check both scripts without running them.

    Returns ``[{"direction", "line", "message", "severity"}]``: compile problems are errors,
    assignments to unknown replica/issue fields are warnings with a suggestion.
    """
    problems: list[dict] = []
    for direction, source in (("outgoing", outgoing), ("incoming", incoming)):
        _compiled, errors = _compile_errors(source or "", direction)
        for line, msg in errors:
            problems.append({"direction": direction, "line": line, "message": msg, "severity": "error"})
        try:
            tree = ast.parse(source or "")
        except (SyntaxError, ValueError, RecursionError, MemoryError):
            continue
        for node in ast.walk(tree):
            targets: list[ast.AST] = []
            if isinstance(node, ast.Assign):
                targets = list(node.targets)
            elif isinstance(node, ast.AugAssign | ast.AnnAssign):
                targets = [node.target]
            for target in targets:
                field = None
                obj = None
                if isinstance(target, ast.Attribute) and isinstance(target.value, ast.Name):
                    obj, field = target.value.id, target.attr
                elif (
                    isinstance(target, ast.Subscript)
                    and isinstance(target.value, ast.Name)
                    and isinstance(target.slice, ast.Constant)
                    and isinstance(target.slice.value, str)
                ):
                    obj, field = target.value.id, target.slice.value
                if obj not in ("replica", "issue", "entity") or field in KNOWN_FIELDS:
                    continue
                label = "replica" if obj == "replica" else "issue"
                close = difflib.get_close_matches(field, sorted(KNOWN_FIELDS), n=1, cutoff=0.6)
                if close:
                    msg = f"unknown {label} field '{field}' – did you mean '{close[0]}'?"
                else:
                    msg = (
                        f"unknown {label} field '{field}' – it is not part of the hubIssue and is "
                        "ignored; use customFields for extra data"
                    )
                problems.append(
                    {"direction": direction, "line": node.lineno, "message": msg, "severity": "warning"}
                )
    return problems


# ----------------------------------------------------------------------------------------------
# runtime guards

STR_METHODS = frozenset(
    {
        "lower",
        "upper",
        "strip",
        "lstrip",
        "rstrip",
        "split",
        "rsplit",
        "splitlines",
        "startswith",
        "endswith",
        "find",
        "rfind",
        "index",
        "rindex",
        "count",
        "capitalize",
        "title",
        "casefold",
        "swapcase",
        "isdigit",
        "isalpha",
        "isalnum",
        "isspace",
        "islower",
        "isupper",
        "isnumeric",
        "isdecimal",
        "istitle",
        "partition",
        "rpartition",
        "removeprefix",
        "removesuffix",
    }
)
LIST_METHODS = frozenset(
    {"append", "insert", "pop", "remove", "index", "count", "sort", "reverse", "copy", "clear"}
)
DICT_METHODS = frozenset({"get", "keys", "values", "items", "pop", "setdefault", "update", "copy", "clear"})
DICT_MUTATORS = frozenset({"pop", "setdefault", "update", "clear"})
SET_METHODS = frozenset(
    {
        "add",
        "remove",
        "discard",
        "pop",
        "union",
        "intersection",
        "difference",
        "symmetric_difference",
        "issubset",
        "issuperset",
        "isdisjoint",
        "update",
        "copy",
        "clear",
    }
)
TUPLE_METHODS = frozenset({"index", "count"})
_VALUE_TYPES = (int, float, bool, str, list, tuple, set, frozenset, type(None), range)
_SEQ_TYPES = (str, list, tuple)
_FMT_NUM_RE = re.compile(r"\d+")
_PERCENT_RE = re.compile(r"%(?:\([^)]*\))?[#0\- +]*(\*|\d+)?(?:\.(\*|\d+))?")


def _type_name(obj: Any) -> str:
    if isinstance(obj, Helper):
        return "helper"
    if isinstance(obj, dict):
        return "dict"
    return type(obj).__name__


class _DictWriter:
    """What ``_write_(d)`` returns for a dict: attribute writes become key writes."""

    __slots__ = ("_d",)

    def __init__(self, d: dict):
        object.__setattr__(self, "_d", d)

    def __setattr__(self, name: str, value: Any) -> None:
        self._d[name] = value

    def __delattr__(self, name: str) -> None:
        self._d.pop(name, None)

    def __setitem__(self, key: Any, value: Any) -> None:
        self._d[key] = value

    def __delitem__(self, key: Any) -> None:
        del self._d[key]


class _Ctor:
    """A safe stand-in for a builtin type: callable, usable in isinstance(), nothing else."""

    __slots__ = ("name", "pytype", "fn")

    def __init__(self, name: str, pytype: type, fn):
        self.name = name
        self.pytype = pytype
        self.fn = fn

    def __call__(self, *args, **kwargs):
        return self.fn(*args, **kwargs)

    def __repr__(self) -> str:
        return f"<builtin {self.name}>"


def _measure(value: Any, limit: int) -> int:
    """Size of ``value`` (chars of strings + 1 per element), stopping as soon as it exceeds limit."""
    size = 0
    stack = [(value, 0)]
    while stack:
        item, depth = stack.pop()
        size += 1
        if isinstance(item, str):
            size += len(item)
        elif isinstance(item, dict):
            if depth >= MAX_NESTING:
                raise ScriptAbort(f"data is nested deeper than {MAX_NESTING} levels", "limit")
            for k, v in item.items():
                stack.append((k, depth + 1))
                stack.append((v, depth + 1))
        elif isinstance(item, list | tuple | set | frozenset):
            if depth >= MAX_NESTING:
                raise ScriptAbort(f"data is nested deeper than {MAX_NESTING} levels", "limit")
            size += len(item)
            stack.extend((v, depth + 1) for v in item)
        if size > limit:
            raise ScriptAbort(f"the data is larger than the limit of {limit:,} elements/characters", "limit")
    return size


class _Guards:
    """Per-run guard functions referenced by the compiled code."""

    __slots__ = ("max_size", "budget")

    def __init__(self, max_size: int):
        self.max_size = max_size
        self.budget = max_size * TOTAL_BUILD_FACTOR

    # -- size accounting
    def charge(self, n: int) -> None:
        if n > self.max_size:
            raise ScriptAbort(
                f"the result would have {n:,} elements/characters; the limit is {self.max_size:,}", "limit"
            )
        self.budget -= n
        if self.budget < 0:
            raise ScriptAbort(
                f"the script built more than {self.max_size * TOTAL_BUILD_FACTOR:,} elements/characters "
                "in total",
                "limit",
            )

    @staticmethod
    def _int_bits(bits: int) -> None:
        if bits > MAX_INT_BITS:
            raise ScriptAbort(f"the number would have more than {MAX_INT_BITS:,} bits", "limit")

    def mul(self, a: Any, b: Any) -> Any:
        ta, tb = type(a), type(b)
        if ta is int and tb is int:
            self._int_bits(a.bit_length() + b.bit_length())
        elif isinstance(a, _SEQ_TYPES) and isinstance(b, int):
            self.charge(len(a) * max(b, 0))
        elif isinstance(b, _SEQ_TYPES) and isinstance(a, int):
            self.charge(len(b) * max(a, 0))
        return a * b

    def pow(self, a: Any, b: Any) -> Any:
        if isinstance(a, int) and isinstance(b, int) and b > 0 and abs(a) > 1:
            self._int_bits(a.bit_length() * b)
        return a**b

    def lshift(self, a: Any, b: Any) -> Any:
        if isinstance(a, int) and isinstance(b, int) and a != 0 and b > 0:
            self._int_bits(a.bit_length() + b)
        return a << b

    def add(self, a: Any, b: Any) -> Any:
        ta = type(a)
        if ta is int or ta is float:
            return a + b
        if isinstance(a, _SEQ_TYPES) and isinstance(b, _SEQ_TYPES):
            self.charge(len(a) + len(b))
        return a + b

    def mod(self, a: Any, b: Any) -> Any:
        if isinstance(a, str):
            for m in _PERCENT_RE.finditer(a):
                for num in m.groups():
                    if num == "*":
                        raise ScriptAbort("'*' widths in % formatting are not allowed", "forbidden")
                    if num and int(num) > MAX_FORMAT_WIDTH:
                        raise ScriptAbort(
                            f"format widths above {MAX_FORMAT_WIDTH:,} are not allowed", "limit"
                        )
            args = b if isinstance(b, tuple) else (b,)
            for arg in args:
                if isinstance(arg, dict | list | tuple | set):
                    _measure(arg, self.max_size)
            result = a % b
            self.charge(len(result))
            return result
        return a % b

    def inplacevar(self, op: str, a: Any, b: Any) -> Any:
        if op == "+=":
            if isinstance(a, list) and not isinstance(b, str):
                b = list(b) if not isinstance(b, list) else b
                self.charge(len(a) + len(b))
                a += b
                return a
            return self.add(a, b)
        if op == "*=":
            return self.mul(a, b)
        if op == "**=":
            return self.pow(a, b)
        if op == "<<=":
            return self.lshift(a, b)
        if op == "%=":
            return self.mod(a, b)
        fn = _INPLACE.get(op)
        if fn is None:
            raise ScriptAbort(f"operator {op} is not supported", "forbidden")
        return fn(a, b)

    def fmt(self, value: Any, conversion: int, spec: str) -> str:
        if conversion in (114, 97):  # !r / !a
            value = self.to_text(value, repr_=True)
        elif conversion == 115 or isinstance(value, dict | list | tuple | set):
            value = self.to_text(value)
        if spec:
            for num in _FMT_NUM_RE.findall(spec):
                if int(num) > MAX_FORMAT_WIDTH:
                    raise ScriptAbort(f"format widths above {MAX_FORMAT_WIDTH:,} are not allowed", "limit")
            if not isinstance(value, int | float | str | bool | type(None)):
                value = self.to_text(value)
        result = format(value, spec)
        self.charge(len(result))
        return result

    def to_text(self, value: Any = "", repr_: bool = False) -> str:
        if isinstance(value, dict | list | tuple | set | frozenset):
            _measure(value, self.max_size)
        elif isinstance(value, Helper | _Ctor):
            return repr(value)
        elif not isinstance(value, _VALUE_TYPES) and not isinstance(value, Exception):
            return f"<{type(value).__name__}>"
        text = repr(value) if repr_ else str(value)
        self.charge(len(text))
        return text

    # -- attribute / item access
    def getattr(self, obj: Any, name: str) -> Any:
        t = type(obj)
        if t is dict or t is ReadOnlyDict:
            if name in DICT_METHODS:
                if t is ReadOnlyDict and name in DICT_MUTATORS:
                    raise ScriptAbort(f"'{name}' is not allowed: this object is read-only", "forbidden")
                if name == "update":
                    return functools.partial(self._dict_update, obj)
                return getattr(obj, name)
            return obj.get(name)
        if t is str:
            if name in STR_METHODS:
                return getattr(obj, name)
            if name == "join":
                return functools.partial(self._str_join, obj)
            if name == "replace":
                return functools.partial(self._str_replace, obj)
            if name in ("format", "format_map"):
                raise ScriptAbort(
                    f"str.{name}() is not available in sync scripts; use f-strings or +", "forbidden"
                )
        elif t is list:
            if name in LIST_METHODS:
                return getattr(obj, name)
            if name == "extend":
                return functools.partial(self._list_extend, obj)
        elif t is set:
            if name in SET_METHODS:
                return getattr(obj, name)
        elif t is tuple:
            if name in TUPLE_METHODS:
                return getattr(obj, name)
        elif isinstance(obj, Helper):
            if name in t._exposed:
                return getattr(obj, name)
            raise ScriptAbort(f"the helper has no function '{name}'", "forbidden")
        if obj is None:
            raise AttributeError(
                f"cannot read '.{name}' of None (the value is missing; check it with 'if ...:' first)"
            )
        if isinstance(obj, _VALUE_TYPES):
            raise AttributeError(f"'{_type_name(obj)}' has no attribute '{name}' available in sync scripts")
        raise ScriptAbort(f"reading '.{name}' of a {_type_name(obj)} is not allowed", "forbidden")

    def getitem(self, obj: Any, key: Any) -> Any:
        t = type(obj)
        if t is dict or t is ReadOnlyDict:
            return obj.get(key)
        if t is list or t is tuple or t is str or t is range:
            return obj[key]
        if obj is None:
            raise TypeError(f"cannot read [{key!r}] of None (the value is missing)")
        raise ScriptAbort(f"indexing a {_type_name(obj)} is not allowed", "forbidden")

    @staticmethod
    def write(obj: Any) -> Any:
        t = type(obj)
        if t is dict:
            return _DictWriter(obj)
        if t is list:
            return obj
        if obj is None:
            raise TypeError("cannot change a field of None (the value is missing; set it first, e.g. x = {})")
        if t is ReadOnlyDict or t is tuple:
            raise ScriptAbort("this object is read-only", "forbidden")
        raise ScriptAbort(f"changing a {_type_name(obj)} is not allowed", "forbidden")

    def _str_join(self, sep: str, items: Any) -> str:
        items = list(items)
        total = len(sep) * max(len(items) - 1, 0)
        for item in items:
            if isinstance(item, str):
                total += len(item)
        self.charge(total)
        return sep.join(items)

    def _str_replace(self, s: str, old: str, new: str, count: int = -1) -> str:
        if not isinstance(old, str) or not isinstance(new, str):
            raise TypeError("replace() arguments must be str")
        if len(new) > len(old):
            n = s.count(old) if old else len(s) + 1
            if count is not None and count >= 0:
                n = min(n, count)
            self.charge(len(s) + n * (len(new) - len(old)))
        return s.replace(old, new, count)

    def _list_extend(self, lst: list, items: Any) -> None:
        items = list(items) if not isinstance(items, list) else items
        self.charge(len(lst) + len(items))
        lst.extend(items)

    def _dict_update(self, d: dict, *args, **kwargs) -> None:
        d.update(*args, **kwargs)
        if len(d) > self.max_size:
            raise ScriptAbort(f"a dict grew beyond {self.max_size:,} entries", "limit")

    # -- builtins
    def range(self, *args: Any) -> range:
        r = range(*args)
        try:
            n = len(r)
        except OverflowError:
            n = self.max_size + 1
        if n > self.max_size:
            raise ScriptAbort(
                f"range() of {n:,} numbers is larger than the limit of {self.max_size:,}", "limit"
            )
        return r

    def list(self, iterable: Any = ()) -> list:
        result = list(iterable)
        self.charge(len(result))
        return result

    @staticmethod
    def isinstance(obj: Any, types: Any) -> bool:
        def one(t):
            if isinstance(t, _Ctor):
                return t.pytype
            if isinstance(t, type) and issubclass(t, Exception):
                return t
            raise TypeError("isinstance() needs str, int, float, bool, list, dict, set or tuple")

        if isinstance(types, tuple):
            return isinstance(obj, tuple(one(t) for t in types))
        return isinstance(obj, one(types))

    @staticmethod
    def round(number: Any, ndigits: Any = None) -> Any:
        if ndigits is not None and (not isinstance(ndigits, int) or abs(ndigits) > 30):
            raise ValueError("round(): ndigits must be an integer between -30 and 30")
        return round(number, ndigits)

    @staticmethod
    def sum(iterable: Any, start: Any = 0) -> Any:
        if not isinstance(start, int | float):
            raise TypeError("sum() adds numbers only")
        total = start
        for item in iterable:
            if not isinstance(item, int | float):
                raise TypeError("sum() adds numbers only")
            total = total + item
        return total


def _inplace_ops() -> dict:
    import operator

    return {
        "-=": operator.sub,
        "/=": operator.truediv,
        "//=": operator.floordiv,
        ">>=": operator.rshift,
        "&=": operator.and_,
        "|=": operator.or_,
        "^=": operator.xor,
    }


_INPLACE = _inplace_ops()


def _apply(fn, *args, **kwargs):
    return fn(*args, **kwargs)


def _getiter(obj: Any):
    if isinstance(obj, Helper | _Ctor):
        raise ScriptAbort(f"cannot loop over a {_type_name(obj)}", "forbidden")
    return iter(obj)


def _base_builtins() -> dict:
    import builtins as b

    safe = {
        name: getattr(b, name)
        for name in (
            "len",
            "min",
            "max",
            "sorted",
            "reversed",
            "enumerate",
            "zip",
            "any",
            "all",
            "abs",
            "chr",
            "ord",
            "divmod",
            *EXCEPTION_NAMES,
        )
    }
    safe.update({"None": None, "True": True, "False": False})
    return safe


_BASE_BUILTINS = _base_builtins()
_EXC_GLOBALS = {f"_exc_{n}": _BASE_BUILTINS[n] for n in EXCEPTION_NAMES}


class _LogPrinter:
    """Target of RestrictedPython's print() rewrite: printed lines go to the log."""

    __slots__ = ("state", "to_text")

    def __init__(self, state: RunState, to_text):
        self.state = state
        self.to_text = to_text

    def _call_print(self, *objects: Any, sep: Any = " ", **_ignored: Any) -> None:
        sep = sep if isinstance(sep, str) else " "
        self.state.add_log("PRINT", sep.join(o if isinstance(o, str) else self.to_text(o) for o in objects))

    def __call__(self) -> str:  # the 'printed' name
        return ""


def _make_globals(state: RunState, guards: _Guards, names: dict) -> dict:
    builtins = dict(_BASE_BUILTINS)
    builtins.update(
        {
            "str": _Ctor("str", str, guards.to_text),
            "int": _Ctor("int", int, int),
            "float": _Ctor("float", float, float),
            "bool": _Ctor("bool", bool, bool),
            "list": _Ctor("list", list, guards.list),
            "tuple": _Ctor("tuple", tuple, tuple),
            "dict": _Ctor("dict", dict, dict),
            "set": _Ctor("set", set, set),
            "range": guards.range,
            "isinstance": guards.isinstance,
            "round": guards.round,
            "sum": guards.sum,
        }
    )
    printer = _LogPrinter(state, guards.to_text)
    glb = {
        "__builtins__": builtins,
        "__name__": "rules",
        "_getattr_": guards.getattr,
        "_getitem_": guards.getitem,
        "_write_": guards.write,
        "_getiter_": _getiter,
        "_iter_unpack_sequence_": guarded_iter_unpack_sequence,
        "_unpack_sequence_": guarded_unpack_sequence,
        "_apply_": _apply,
        "_inplacevar_": guards.inplacevar,
        "_print_": lambda *_a: printer,
        "_mul_": guards.mul,
        "_pow_": guards.pow,
        "_lshift_": guards.lshift,
        "_add_": guards.add,
        "_mod_": guards.mod,
        "_fmt_": guards.fmt,
        **_EXC_GLOBALS,
    }
    helpers = {
        "log": LogHelper(state, guards.to_text),
        "comment_helper": CommentHelper(state),
        "attachment_helper": AttachmentHelper(state),
        "node_helper": NodeHelper(state),
        "sync_helper": SyncHelper(state),
        "mapping": MappingHelper(state),
        "changed": changed_fn(state),
    }
    glb.update(helpers)
    glb.update(names)
    return glb


# ----------------------------------------------------------------------------------------------
# running


def script_limits(context: dict | None) -> tuple[float, int, int]:
    """A run's timeout (s), step and size limits: the defaults overridden by ``context["limits"]``."""
    limits = dict(DEFAULT_LIMITS)
    if context and isinstance(context.get("limits"), dict):
        limits.update({k: v for k, v in context["limits"].items() if v is not None})
    return float(limits["timeout_s"]), int(limits["max_steps"]), int(limits["max_size"])


class _Budget:
    """Execution budget of one run: loop iterations / traced lines and wall-clock time."""

    __slots__ = ("filename", "timeout_s", "max_steps", "deadline", "steps", "depth")

    def __init__(self, filename: str, timeout_s: float, max_steps: int):
        self.filename = filename
        self.timeout_s = timeout_s
        self.max_steps = max_steps
        self.deadline = time.perf_counter() + timeout_s
        self.steps = 0
        self.depth = 0

    def _script_lineno(self) -> int | None:
        frame = sys._getframe(1)
        while frame is not None and frame.f_code.co_filename != self.filename:
            frame = frame.f_back
        return frame.f_lineno if frame is not None else None

    def _exhausted(self, line: int | None, by_steps: bool) -> ScriptAbort:
        where = f" on line {line}" if line else ""
        if by_steps:
            msg = f"the script ran more than {self.max_steps:,} steps; check for an endless loop{where}"
        else:
            msg = f"the script took longer than {self.timeout_s:g} s; check for an endless loop{where}"
        return ScriptAbort(msg, "timeout", line)

    def tick(self) -> None:
        """Called at the start of every loop iteration (and per traced line)."""
        self.steps += 1
        if self.steps > self.max_steps:
            raise self._exhausted(self._script_lineno(), True)
        if not self.steps & 127 and time.perf_counter() > self.deadline:
            raise self._exhausted(self._script_lineno(), False)

    def ticking(self, iterable: Any):
        """Iterator for comprehensions: one tick per item."""
        tick = self.tick
        for item in iterable:
            tick()
            yield item

    def tracer(self):
        """sys.settrace function for scripts with def/lambda: counts lines, caps call depth."""
        filename = self.filename
        tick = self.tick

        def local(frame, event, arg):
            if event == "line":
                tick()
            elif event == "return":
                self.depth -= 1
            return local

        def global_(frame, event, arg):
            if frame.f_code.co_filename != filename:
                return None
            self.depth += 1
            if self.depth > MAX_CALL_DEPTH:
                caller = frame.f_back
                while caller is not None and caller.f_code.co_filename != filename:
                    caller = caller.f_back
                raise ScriptAbort(
                    f"functions call each other more than {MAX_CALL_DEPTH} levels deep (endless recursion?)",
                    "limit",
                    (caller or frame).f_lineno,
                )
            tick()
            return local

        return global_


def _script_line(tb, filename: str) -> int | None:
    line = None
    while tb is not None:
        if tb.tb_frame.f_code.co_filename == filename:
            line = tb.tb_lineno
        tb = tb.tb_next
    return line


def _describe(exc: BaseException) -> str:
    if isinstance(exc, NameError) and getattr(exc, "name", None):
        return f'NameError: name "{exc.name}" is not defined'
    if isinstance(exc, RecursionError):
        return "RecursionError: functions call each other too deeply (endless recursion?)"
    text = str(exc)
    if isinstance(exc, KeyError) and exc.args:
        text = f"key {exc.args[0]!r} not found"
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def _export(value: Any, what: str, limit: int) -> Any:
    """Check the script's result and return it as plain JSON-able data.

    One pass counts the size (chars of strings + 1 per element; shared sub-objects count every
    time they appear, so a deliberately exponential structure stops at ``limit``), checks nesting
    and types.  The value is returned as is when it already is plain JSON data; otherwise (tuples,
    sets, read-only dicts, non-str keys) a converted copy is made.
    """
    count = 0
    plain = True

    def walk(v: Any, depth: int) -> None:
        nonlocal count, plain
        t = type(v)
        if t is str:
            count += len(v) + 1
            return
        if v is None or t is int or t is float or t is bool:
            count += 1
            return
        if depth > MAX_NESTING:
            raise ScriptAbort(f"{what} is nested deeper than {MAX_NESTING} levels", "limit")
        if isinstance(v, dict):
            count += len(v) + 1
            if count > limit:
                raise ScriptAbort(
                    f"{what} is larger than the limit of {limit:,} elements/characters", "limit"
                )
            if t is not dict:
                plain = False
            for k, x in v.items():
                if type(k) is not str:
                    plain = False
                tx = type(x)
                if tx is str:
                    count += len(x) + 1
                elif x is None or tx is int or tx is bool or tx is float:
                    count += 1
                else:
                    walk(x, depth + 1)
            return
        if isinstance(v, list | tuple | set | frozenset):
            count += len(v) + 1
            if count > limit:
                raise ScriptAbort(
                    f"{what} is larger than the limit of {limit:,} elements/characters", "limit"
                )
            if t is not list:
                plain = False
            for x in v:
                tx = type(x)
                if tx is str:
                    count += len(x) + 1
                elif x is None or tx is int or tx is bool or tx is float:
                    count += 1
                else:
                    walk(x, depth + 1)
            return
        if isinstance(v, int | float | str):  # subclasses of scalars
            plain = False
            count += 1
            return
        raise TypeError(f"{what}: a {_type_name(v)} value cannot be synced (use text, numbers, lists, dicts)")

    walk(value, 0)
    if count > limit:
        raise ScriptAbort(f"{what} is larger than the limit of {limit:,} elements/characters", "limit")
    return value if plain else _to_plain(value)


def _to_plain(v: Any) -> Any:
    if isinstance(v, dict):
        return {str(k): _to_plain(x) for k, x in v.items()}
    if isinstance(v, list | tuple | set | frozenset):
        return [_to_plain(x) for x in v]
    if isinstance(v, bool):
        return bool(v)
    if isinstance(v, int):
        return int(v)
    if isinstance(v, float):
        return float(v)
    if isinstance(v, str):
        return str(v)
    return v


def _execute(compiled: CompiledScript, names: dict, state: RunState, context: dict | None, result_name: str):
    timeout_s, max_steps, max_size = script_limits(context)
    guards = _Guards(max_size)
    budget = _Budget(compiled.filename, timeout_s, max_steps)
    glb = _make_globals(state, guards, names)
    glb["_tick_"] = budget.tick
    glb["_ticking_"] = budget.ticking
    direction = compiled.direction
    start = time.perf_counter()
    try:
        if compiled.needs_trace:
            old = sys.gettrace()
            sys.settrace(budget.tracer())
            try:
                exec(compiled.code, glb)  # noqa: S102 - restricted, guarded code
            finally:
                sys.settrace(old)
        else:
            exec(compiled.code, glb)  # noqa: S102 - restricted, guarded code
        exported = _export(names[result_name], result_name, max_size)
    except ScriptAbort as e:
        line = e.line or _script_line(e.__traceback__, compiled.filename)
        raise ScriptError(e.message, line=line, direction=direction, kind=e.kind) from None
    except ScriptError:
        raise
    except MemoryError as e:  # the sandbox process's memory limit (RLIMIT_AS): not the script's to handle
        line = _script_line(e.__traceback__, compiled.filename)
        raise ScriptError(
            "the script ran out of memory", line=line, direction=direction, kind="memory"
        ) from None
    except Exception as e:  # any error of the script itself
        line = _script_line(e.__traceback__, compiled.filename)
        raise ScriptError(_describe(e), line=line, direction=direction, kind="runtime") from None
    duration_ms = (time.perf_counter() - start) * 1000
    return exported, duration_ms


def _connection(context: dict | None) -> ReadOnlyDict:
    conn = (context or {}).get("connection") or {}
    return read_only(conn if isinstance(conn, dict) else {})


def _skeleton() -> dict:
    replica: dict = {name: [] for name in LIST_FIELDS}
    replica["customFields"] = {}
    replica["eventTriggerContext"] = {}
    return replica


def run_outgoing(source: str, *, issue: dict, context: dict | None = None) -> RunResult:
    """Run an outgoing script: build the replica (hubIssue) from the local issue."""
    compiled = compile_script(source, direction="outgoing")
    state = RunState("outgoing", context)
    local = clone(issue or {})
    replica = _skeleton()
    names = {
        "replica": replica,
        "issue": local,
        "entity": local,
        "previous": {},
        "first_sync": False,
        "firstSync": False,
        "connection": _connection(context),
    }
    exported, ms = _execute(compiled, names, state, context, "replica")
    return RunResult(exported, None, state.final_log(), state.unexalate, state.sync_back, ms)


def run_incoming(
    source: str,
    *,
    replica: dict,
    issue: dict,
    previous: dict | None,
    first_sync: bool,
    context: dict | None = None,
) -> RunResult:
    """Run an incoming script: apply the remote replica to a copy of the local issue."""
    compiled = compile_script(source, direction="incoming")
    remote = clone(replica or {})
    prev = clone(previous) if previous else {}
    local = clone(issue or {})
    state = RunState("incoming", context, replica=remote, previous=prev, first_sync=bool(first_sync))
    names = {
        "replica": remote,
        "issue": local,
        "entity": local,
        "previous": prev,
        "first_sync": bool(first_sync),
        "firstSync": bool(first_sync),
        "connection": _connection(context),
    }
    exported, ms = _execute(compiled, names, state, context, "issue")
    return RunResult(None, exported, state.final_log(), state.unexalate, state.sync_back, ms)
