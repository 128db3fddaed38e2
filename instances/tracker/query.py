"""The built-in tracker's query language, for triggers and bulk operations.

    project = SUP AND labels = sync
    status IN (Open, "In Progress") AND NOT priority = Low
    summary ~ printer OR assignee IS EMPTY

Fields: key, project, summary, description, status, priority, type, labels, assignee, reporter.
Operators: ``=``, ``!=``, ``~`` (contains, case-insensitive), ``!~``, ``IN (...)``, ``NOT IN (...)``,
``IS EMPTY``, ``IS NOT EMPTY``; ``AND``, ``OR``, ``NOT`` and parentheses. Keywords and values compare
case-insensitively. A query is evaluated on an item in the replica's shape (what connectors return).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

FIELDS = (
    "key",
    "project",
    "summary",
    "description",
    "status",
    "priority",
    "type",
    "labels",
    "assignee",
    "reporter",
)
MAX_QUERY = 2000
_TOKEN = re.compile(r'\s*(?:(?P<str>"(?:[^"\\]|\\.)*")|(?P<op>!=|!~|=|~|\(|\)|,)|(?P<word>[^\s=!~(),"]+))')


class QueryError(ValueError):
    """A query that cannot be parsed; the message points at the problem and shows the syntax."""


@dataclass
class _Tokens:
    items: list[tuple[str, str]]
    pos: int = 0

    def peek(self) -> tuple[str, str] | None:
        return self.items[self.pos] if self.pos < len(self.items) else None

    def take(self) -> tuple[str, str]:
        if self.pos >= len(self.items):
            raise QueryError("The query ends too early. Example: project = SUP AND labels = sync")
        self.pos += 1
        return self.items[self.pos - 1]

    def keyword(self, *words: str) -> bool:
        token = self.peek()
        if token and token[0] == "word" and token[1].upper() in words:
            self.pos += 1
            return True
        return False


def _tokenize(text: str) -> list[tuple[str, str]]:
    tokens, pos = [], 0
    text = text.strip()
    while pos < len(text):
        match = _TOKEN.match(text, pos)
        if not match or match.end() == pos:
            raise QueryError(f"Unexpected character at position {pos + 1}: {text[pos : pos + 10]!r}.")
        pos = match.end()
        kind = match.lastgroup or ""
        value = match.group(kind)
        if kind == "str":
            value = re.sub(r"\\(.)", r"\1", value[1:-1])
        tokens.append((kind, value))
    return tokens


Predicate = Callable[[dict[str, Any]], bool]


def _values(item: dict[str, Any], field: str) -> list[str]:
    """The item's value(s) for a field, as lower-case strings (labels are several)."""
    value = item.get(field)
    if field == "project":
        value = (value or {}).get("key") if isinstance(value, dict) else value
    elif field in ("status", "priority", "type"):
        value = (value or {}).get("name") if isinstance(value, dict) else value
    elif field in ("assignee", "reporter"):
        value = (value or {}).get("email") if isinstance(value, dict) else value
    if field == "labels":
        return [str(v).lower() for v in value or []]
    return [] if value in (None, "") else [str(value).lower()]


def _comparison(tokens: _Tokens) -> Predicate:
    kind, field = tokens.take()
    field_l = field.lower()
    if kind != "word" or field_l not in FIELDS:
        raise QueryError(f"Unknown field {field!r}. Use one of: {', '.join(FIELDS)}.")
    if tokens.keyword("IS"):
        negate = tokens.keyword("NOT")
        if not tokens.keyword("EMPTY"):
            raise QueryError(f"After '{field} IS' write EMPTY or NOT EMPTY.")
        return lambda item: bool(_values(item, field_l)) == negate
    negate_in = tokens.keyword("NOT")
    if tokens.keyword("IN"):
        if tokens.take() != ("op", "("):
            raise QueryError(f"Write the values of '{field} IN' in parentheses: {field} IN (a, b).")
        options = []
        while True:
            kind, value = tokens.take()
            if kind not in ("word", "str"):
                raise QueryError(f"Expected a value in the list of '{field} IN', found {value!r}.")
            options.append(value.lower())
            sep = tokens.take()
            if sep == ("op", ")"):
                break
            if sep != ("op", ","):
                raise QueryError(f"Separate the values of '{field} IN' with commas.")
        wanted = set(options)
        return lambda item: bool(wanted & set(_values(item, field_l))) != negate_in
    if negate_in:
        raise QueryError(f"After '{field} NOT' write IN (...).")
    kind, op = tokens.take()
    if kind != "op" or op not in ("=", "!=", "~", "!~"):
        raise QueryError(f"Expected =, !=, ~, !~, IN or IS after {field!r}, found {op!r}.")
    kind, value = tokens.take()
    if kind not in ("word", "str"):
        raise QueryError(f"Expected a value after '{field} {op}', found {value!r}.")
    value = value.lower()
    if op == "=":
        return lambda item: value in _values(item, field_l)
    if op == "!=":
        return lambda item: value not in _values(item, field_l)
    if op == "~":
        return lambda item: any(value in v for v in _values(item, field_l))
    return lambda item: not any(value in v for v in _values(item, field_l))


def _atom(tokens: _Tokens) -> Predicate:
    if tokens.keyword("NOT"):
        inner = _atom(tokens)
        return lambda item: not inner(item)
    if tokens.peek() == ("op", "("):
        tokens.take()
        inner = _or(tokens)
        if tokens.peek() != ("op", ")"):
            raise QueryError("A parenthesis is not closed: add ')'.")
        tokens.take()
        return inner
    return _comparison(tokens)


def _and(tokens: _Tokens) -> Predicate:
    parts = [_atom(tokens)]
    while tokens.keyword("AND"):
        parts.append(_atom(tokens))
    return parts[0] if len(parts) == 1 else lambda item: all(p(item) for p in parts)


def _or(tokens: _Tokens) -> Predicate:
    parts = [_and(tokens)]
    while tokens.keyword("OR"):
        parts.append(_and(tokens))
    return parts[0] if len(parts) == 1 else lambda item: any(p(item) for p in parts)


def parse(query: str) -> Predicate:
    """Compile a query into a predicate over an item; raises QueryError saying what is wrong."""
    if not isinstance(query, str) or not query.strip():
        raise QueryError("The query is empty. Example: project = SUP AND labels = sync")
    if len(query) > MAX_QUERY:
        raise QueryError(f"The query is longer than {MAX_QUERY} characters.")
    tokens = _Tokens(_tokenize(query))
    predicate = _or(tokens)
    if tokens.peek() is not None:
        raise QueryError(f"Unexpected {tokens.peek()[1]!r}: join conditions with AND or OR.")
    return predicate
