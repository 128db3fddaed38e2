"""The API's JSON parser: DRF's, with a nesting limit.

Its own module (not ``exalate_node.api``) because DRF imports the parser classes while
``rest_framework.views`` is being imported, and ``exalate_node.api`` imports ``rest_framework.views``.
"""

from __future__ import annotations

from typing import Any

from rest_framework import exceptions, parsers

MAX_JSON_DEPTH = 64


class JSONParser(parsers.JSONParser):
    """A body nested deeper than ``MAX_JSON_DEPTH`` levels is a 400 (without the limit, JSON nested ~1000
    deep overflowed the decoder's recursion and became a 500)."""

    def parse(self, stream, media_type=None, parser_context=None):  # type: ignore[no-untyped-def]
        try:
            data = super().parse(stream, media_type, parser_context)
        except RecursionError:
            data, too_deep = None, True
        else:
            too_deep = depth_exceeds(data, MAX_JSON_DEPTH)
        if too_deep:
            raise exceptions.ParseError(
                f"JSON parse error - the body is nested deeper than {MAX_JSON_DEPTH} levels."
            )
        return data


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
