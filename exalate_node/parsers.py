"""Reading JSON that comes in: the API's parsers (DRF's, with limits) and ``load_json`` for the machine doors
(the node protocol, webhooks).

Every door refuses, with a 400 that says what is wrong, a body that is nested deeper than ``MAX_JSON_DEPTH``
levels (deeper JSON overflowed the decoder's recursion: a 500), that holds NaN/Infinity (not JSON), or that
holds text that cannot be encoded as UTF-8 (a lone surrogate such as ``"\\ud800"``: stored in a JSON column
it made every page that showed it a 500; see ``exalate_node.text``).

Its own module (not ``exalate_node.api``) because DRF imports the parser classes while
``rest_framework.views`` is being imported, and ``exalate_node.api`` imports ``rest_framework.views``.
"""

from __future__ import annotations

import json
from typing import Any

from rest_framework import exceptions, parsers

from exalate_node.text import unencodable_message, unencodable_path

MAX_JSON_DEPTH = 64


class JSONRefused(ValueError):
    """A body ``load_json`` refuses: ``code`` for machines, the message for people."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code, self.message = code, message


def load_json(body: bytes | str, *, what: str = "The body") -> Any:
    """``body`` decoded as strict JSON: UTF-8, no NaN/Infinity, nested at most ``MAX_JSON_DEPTH`` levels,
    every string (and key) encodable as UTF-8. Raises ``JSONRefused`` saying what is wrong."""

    def reject_constant(name: str) -> Any:
        raise ValueError(f"{name} is not valid JSON")

    try:
        text = body.decode("utf-8") if isinstance(body, bytes) else body
        data = json.loads(text, parse_constant=reject_constant)
    except RecursionError:
        data, too_deep = None, True
    except (ValueError, UnicodeDecodeError) as exc:
        raise JSONRefused("malformed_json", f"{what} is not valid UTF-8 JSON: {str(exc)[:200]}")
    else:
        too_deep = depth_exceeds(data, MAX_JSON_DEPTH)
    if too_deep:
        raise JSONRefused("too_deep", f"{what} is JSON nested deeper than {MAX_JSON_DEPTH} levels.")
    refuse_unencodable(data, what=what)
    return data


def refuse_unencodable(data: Any, *, what: str = "The body") -> None:
    """Raise ``JSONRefused`` (``unencodable_text``) when ``data`` holds text that is not valid Unicode."""
    path = unencodable_path(data)
    if path is not None:
        raise JSONRefused("unencodable_text", unencodable_message(path, what))


def depth_exceeds(data: Any, limit: int) -> bool:
    """True when lists/objects in ``data`` nest deeper than ``limit`` levels (iterative: no recursion)."""
    stack = [(data, 1)]
    while stack:
        value, depth = stack.pop()
        if isinstance(value, dict | list):
            if depth > limit:
                return True
            children = value.values() if isinstance(value, dict) else value
            stack.extend((child, depth + 1) for child in children if isinstance(child, dict | list))
    return False


class JSONParser(parsers.JSONParser):
    """DRF's parser with ``load_json``'s checks: too deep, or text that is not valid Unicode, is a 400."""

    def parse(self, stream, media_type=None, parser_context=None):  # type: ignore[no-untyped-def]
        try:
            data = super().parse(stream, media_type, parser_context)
        except RecursionError:
            raise exceptions.ParseError(
                f"JSON parse error - the body is nested deeper than {MAX_JSON_DEPTH} levels."
            )
        if depth_exceeds(data, MAX_JSON_DEPTH):
            raise exceptions.ParseError(
                f"JSON parse error - the body is nested deeper than {MAX_JSON_DEPTH} levels."
            )
        _refuse_unencodable(data, "The request body")
        return data


def _refuse_unencodable(data: Any, what: str) -> None:
    try:
        refuse_unencodable(data, what=what)
    except JSONRefused as exc:
        raise exceptions.ParseError(exc.message, code=exc.code)


def _json_text_is_unencodable(value: Any) -> bool:
    """Whether a form value is JSON whose text cannot be encoded (a JSON field reads form values as JSON)."""
    if not isinstance(value, str) or "\\u" not in value.lower():
        return False
    try:
        return unencodable_path(json.loads(value)) is not None
    except (ValueError, RecursionError):
        return False


class _FormChecks:
    """Form fields are text decoded from UTF-8 (always encodable), but the API's JSON fields decode a form
    value as JSON, where ``"\\ud800"`` becomes a lone surrogate: such a value is refused here."""

    def _check(self, data: Any) -> None:
        for name, values in data.lists():
            if any(_json_text_is_unencodable(v) for v in values):
                raise exceptions.ParseError(
                    unencodable_message(f"the form field '{name}'", "The request body"),
                    code="unencodable_text",
                )


class FormParser(_FormChecks, parsers.FormParser):
    def parse(self, stream, media_type=None, parser_context=None):  # type: ignore[no-untyped-def]
        data = super().parse(stream, media_type, parser_context)
        self._check(data)
        return data


class MultiPartParser(_FormChecks, parsers.MultiPartParser):
    def parse(self, stream, media_type=None, parser_context=None):  # type: ignore[no-untyped-def]
        result = super().parse(stream, media_type, parser_context)
        self._check(result.data)
        return result
