"""Hypothesis strategies from a JSON Schema (the subset the replica schema uses), and hostile JSON.

``from_schema(schema)`` draws values the schema accepts: ``$ref`` into ``$defs``, ``const``, ``type`` (one
or a list), ``properties``/``required``, ``items``/``maxItems``, ``minLength``/``maxLength``, ``pattern``
and ``minimum``. An object schema without ``properties`` gets a few arbitrary members. Sizes are kept small
(a fuzz example should be cheap), so long-text limits are not reached here; other tests cover them.

``mutated(strategy)`` replaces some values inside what ``strategy`` draws by ``hostile_json()``: the cases
a schema check has to catch (wrong types, lone surrogates, huge numbers, deep nesting, markup).
"""

from __future__ import annotations

from typing import Any

from hypothesis import strategies as st

# Text a person or a peer could send that tends to break things downstream.
HOSTILE_TEXT = [
    "",
    "\ud800",  # a lone surrogate: JSON can spell it, UTF-8 cannot encode it
    "a\udfffb",
    "\x00",
    "\u202e",
    "javascript:alert(1)",
    "<script>alert(1)</script>",
    "' OR 1=1 --",
    "../../etc/passwd",
    "x" * 300,
    "😀",
    "\\ud800",
]
HOSTILE_NUMBERS = [0, -1, 2**31, 2**63, 2**70, -(2**63) - 1, 10**30, 1.5, -0.0, 1e308]

scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**80), max_value=2**80),
    st.sampled_from(HOSTILE_NUMBERS),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(max_size=20),
    st.sampled_from(HOSTILE_TEXT),
)


def hostile_json(max_leaves: int = 12) -> st.SearchStrategy[Any]:
    """Any JSON value, small, with the hostile scalars above among its leaves."""
    return st.recursive(
        scalars,
        lambda children: st.one_of(
            st.lists(children, max_size=4),
            st.dictionaries(
                st.one_of(st.text(max_size=8), st.sampled_from(HOSTILE_TEXT)), children, max_size=4
            ),
        ),
        max_leaves=max_leaves,
    )


def from_schema(schema: dict[str, Any], root: dict[str, Any] | None = None) -> st.SearchStrategy[Any]:
    """Values that ``schema`` accepts (``root`` holds the ``$defs`` that ``$ref`` points into)."""
    root = root if root is not None else schema
    if "$ref" in schema:
        name = schema["$ref"].removeprefix("#/$defs/")
        return st.deferred(lambda: from_schema(root["$defs"][name], root))
    if "const" in schema:
        return st.just(schema["const"])
    types = schema.get("type", ["string", "integer", "boolean", "null", "object", "array"])
    types = [types] if isinstance(types, str) else types
    return st.one_of(*(_of_type(t, schema, root) for t in types))


def _of_type(kind: str, schema: dict[str, Any], root: dict[str, Any]) -> st.SearchStrategy[Any]:
    if kind == "null":
        return st.none()
    if kind == "boolean":
        return st.booleans()
    if kind == "integer":
        return st.integers(min_value=schema.get("minimum", -(2**40)), max_value=2**40)
    if kind == "number":
        return st.floats(allow_nan=False, allow_infinity=False)
    if kind == "string":
        if "pattern" in schema:
            return st.from_regex(schema["pattern"], fullmatch=True).filter(
                lambda s: len(s) <= schema.get("maxLength", 10**9)
            )
        return st.text(min_size=schema.get("minLength", 0), max_size=min(schema.get("maxLength", 30), 30))
    if kind == "array":
        items = from_schema(schema["items"], root) if "items" in schema else hostile_json(4)
        return st.lists(items, max_size=min(schema.get("maxItems", 3), 3))
    if kind == "object":
        properties = schema.get("properties")
        if not properties:
            return st.dictionaries(st.text(max_size=8), hostile_json(4), max_size=3)
        required = set(schema.get("required", []))
        return st.fixed_dictionaries(
            {name: from_schema(sub, root) for name, sub in properties.items() if name in required},
            optional={
                name: from_schema(sub, root) for name, sub in properties.items() if name not in required
            },
        )
    raise ValueError(f"type {kind!r} is not supported by tests/schema_strategies.py")


def mutated(strategy: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    """What ``strategy`` draws, with (sometimes) one member of an object or list replaced by hostile JSON."""

    @st.composite
    def draw(draw_: st.DrawFn) -> Any:
        value = draw_(strategy)
        if not draw_(st.booleans()):
            return value
        containers = list(_containers(value))
        if not containers:
            return draw_(hostile_json())
        container = draw_(st.sampled_from(containers))
        if isinstance(container, dict):
            key = draw_(st.one_of(st.sampled_from(sorted(container) or ["x"]), st.text(max_size=6)))
            container[key] = draw_(hostile_json())
        else:
            container.append(draw_(hostile_json()))
        return value

    return draw()


def _containers(value: Any) -> Any:
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, dict):
            yield item
            stack.extend(item.values())
        elif isinstance(item, list):
            yield item
            stack.extend(item)
