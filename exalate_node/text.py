"""Text that cannot be encoded as UTF-8 (lone surrogates such as ``"\\ud800"``).

JSON allows ``"\\ud800"`` escapes and Python decodes them into a ``str`` that cannot be encoded as UTF-8:
stored in a JSON column it came back on every page that showed it as a 500. Every door where text comes in
(the API's parser, the node protocol, webhooks, tracker answers, script results) refuses such text with
:func:`unencodable_path`; :func:`scrub` makes a value already stored safe to show.

This module imports nothing from Django or the project, so any layer may use it.
"""

from __future__ import annotations

import json
import re
from typing import Any

_SURROGATE = re.compile("[\ud800-\udfff]")
_ESCAPED_SURROGATE = re.compile(r"\\u[dD][89a-fA-F][0-9a-fA-F]{2}")
REPLACEMENT = "\ufffd"


def is_encodable(text: str) -> bool:
    """True when ``text`` can be encoded as UTF-8 (it holds no lone surrogate)."""
    return _SURROGATE.search(text) is None


def unencodable_path(value: Any, root: str = "$") -> str | None:
    """Where in JSON-like ``value`` the first string (a value or a key) that cannot be encoded as UTF-8 is,
    as a path such as ``$.hubIssue.labels[0]``; None when there is none. Iterative: any depth is safe."""
    stack: list[tuple[Any, str]] = [(value, root)]
    while stack:
        item, path = stack.pop()
        if isinstance(item, str):
            if not is_encodable(item):
                return path
        elif isinstance(item, dict):
            for key, child in item.items():
                child_path = f"{path}.{key}" if isinstance(key, str) and is_encodable(key) else f"{path}.?"
                if isinstance(key, str) and not is_encodable(key):
                    return child_path
                stack.append((child, child_path))
        elif isinstance(item, list | tuple):
            stack.extend((child, f"{path}[{i}]") for i, child in enumerate(item))
    return None


def unencodable_message(path: str, what: str = "The data") -> str:
    """The error a person sees when text at ``path`` cannot be encoded."""
    return (
        f"{what} holds text that is not valid Unicode at {path} (a lone surrogate such as \\ud800). "
        "Send the text as valid UTF-8."
    )


def scrub(value: Any) -> Any:
    """``value`` with every lone surrogate in its strings (values and keys) replaced by U+FFFD."""
    if isinstance(value, str):
        return _SURROGATE.sub(REPLACEMENT, value) if not is_encodable(value) else value
    if isinstance(value, dict):
        return {scrub(k): scrub(v) for k, v in value.items()}
    if isinstance(value, list):
        return [scrub(v) for v in value]
    if isinstance(value, tuple):
        return tuple(scrub(v) for v in value)
    return value


class ScrubbingJSONDecoder(json.JSONDecoder):
    """A decoder for JSON columns: values stored before the doors refused unencodable text still render
    (their lone surrogates read as U+FFFD) instead of failing every page that shows them."""

    def decode(self, s: str, *args: Any, **kwargs: Any) -> Any:  # type: ignore[override]
        value = super().decode(s, *args, **kwargs)
        # Only text with an escaped surrogate can decode into one: the walk is skipped for everything else.
        return scrub(value) if _has_lone_surrogate_escape(s) else value


def _has_lone_surrogate_escape(s: str) -> bool:
    """Whether JSON text ``s`` escapes a lone surrogate: a high one (``\\ud800``-``\\udbff``) not followed
    by a low one, or a low one not right after a high one. Pairs (how JSON columns store emoji on SQLite)
    decode into one valid character, so reading them costs no walk. (An escaped backslash before
    ``ud800`` also counts: that costs only a walk that changes nothing.)"""
    pair_end = -1  # where the low half of the last high escape must start to make a pair
    for match in _ESCAPED_SURROGATE.finditer(s):
        is_high = match.group()[3] in "89abAB"
        if match.start() == pair_end and not is_high:
            pair_end = -1  # the low half of a pair
            continue
        if pair_end != -1 or not is_high:
            return True  # a high escape left unpaired, or a low one on its own
        pair_end = match.end()
    return pair_end != -1
