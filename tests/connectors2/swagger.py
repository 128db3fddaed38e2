"""A small, strict validator of HTTP calls against a Swagger 2.0 description (Azure DevOps' format).

openapi-core reads OpenAPI 3 only, so the Azure DevOps 7.2 description (Swagger 2.0) is checked here with
``jsonschema`` (already a dependency). What it checks, for a request: the path matches a template of
``paths`` or ``x-ms-paths`` (Microsoft's extension for operations told apart by query parameters, written
``/path?format={format}``); the method exists on it; every required path, query and header parameter is
there, with the declared type; no query parameter the operation does not declare; ``api-version`` equals
the version the description asks for; the Content-Type is one the operation consumes; a JSON body validates
against the body parameter's schema. For a response: a JSON body validates against the schema of its status.

Two faithful adjustments to the description, both because of how Microsoft generates it from .NET types:

* ``{"type": "object"}`` with nothing else is how the generator writes .NET ``object`` (any JSON value:
  work item field values, a patch operation's ``value``); it is read as "any value".
* ``JsonPatchDocument`` says ``type: object`` *and* ``allOf: [array]`` (a .NET List subclass): the array
  wins. And a collection response (``type: array``) arrives wrapped as ``{"count": n, "value": [...]}``
  (VssJsonCollectionWrapper, as every Azure DevOps list does): the wrapper is checked, then its ``value``.
"""

from __future__ import annotations

import copy
import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jsonschema

SPECS = Path(__file__).resolve().parent / "specs"


class ContractError(AssertionError):
    """A call or a reply breaks the API description."""


@dataclass
class Operation:
    template: str
    method: str
    spec: dict[str, Any]
    regex: re.Pattern[str]
    path_names: list[str]
    discriminators: list[str]  # query parameters named in an x-ms-paths key ("?format={format}")
    parameters: list[dict[str, Any]]


def _normalise(node: Any) -> Any:
    if isinstance(node, dict):
        out = {k: _normalise(v) for k, v in node.items()}
        rest = {k for k in out if k not in ("description", "x-ms-enum")}
        if rest == {"type"} and out["type"] == "object":
            return {}  # .NET ``object``: any JSON value
        if out.get("type") == "object" and any(
            isinstance(s, dict) and s.get("type") == "array" for s in out.get("allOf", [])
        ):
            out.pop("type")
        if "format" in out and out["format"] not in ("date-time",):
            out.pop("format")  # int32, uuid, Stream...: not checked
        return out
    if isinstance(node, list):
        return [_normalise(v) for v in node]
    return node


class SwaggerContract:
    def __init__(self, filename: str, *, prefix: str = "") -> None:
        with open(SPECS / filename, encoding="utf-8-sig") as fh:
            self.raw = json.load(fh)
        self.definitions = _normalise(copy.deepcopy(self.raw["definitions"]))
        self.prefix = prefix  # a path prefix before the spec's paths (none for Azure DevOps)
        self.operations: list[Operation] = []
        for source in ("paths", "x-ms-paths"):
            for key, item in (self.raw.get(source) or {}).items():
                template, _, qs = key.partition("?")
                discriminators = re.findall(r"([^&=]+)=\{[^}]+\}", qs)
                names = re.findall(r"\{([^}]+)\}", template)
                pattern = "".join(
                    "([^/]+)" if part.startswith("{") else re.escape(part)
                    for part in re.split(r"(\{[^}]+\})", template)
                )
                for method, op in item.items():
                    if method == "parameters":
                        continue
                    params = [
                        self._param(p) for p in [*item.get("parameters", []), *op.get("parameters", [])]
                    ]
                    self.operations.append(
                        Operation(
                            key, method.upper(), op, re.compile(pattern + "$"), names, discriminators, params
                        )
                    )

    def _param(self, param: dict[str, Any]) -> dict[str, Any]:
        if "$ref" in param:
            return self.raw["parameters"][param["$ref"].rsplit("/", 1)[-1]]
        return param

    def _validate(self, schema: dict[str, Any], value: Any, what: str) -> None:
        schema = {**_normalise(copy.deepcopy(schema)), "definitions": self.definitions}
        errors = sorted(jsonschema.Draft4Validator(schema).iter_errors(value), key=lambda e: list(e.path))
        if errors:
            e = errors[0]
            where = "/".join(str(p) for p in e.path) or "(root)"
            raise ContractError(f"{what}: {where}: {e.message[:300]}")

    @staticmethod
    def _typed(param: dict[str, Any], value: str, what: str) -> None:
        kind = param.get("type")
        ok = True
        if kind == "integer":
            ok = re.fullmatch(r"-?\d+", value) is not None
        elif kind == "boolean":
            ok = value.lower() in ("true", "false")
        if ok and "enum" in param:
            ok = value in [str(v) for v in param["enum"]]
        if not ok:
            raise ContractError(f"{what}: parameter {param['name']}={value!r} is not a valid {kind}")

    # --- requests --------------------------------------------------------------------------------------
    def match(self, method: str, path: str, query: dict[str, str]) -> tuple[Operation, dict[str, str]]:
        path = path[len(self.prefix) :] if self.prefix and path.startswith(self.prefix) else path
        on_path = [(op, m) for op in self.operations if (m := op.regex.match(path))]
        if not on_path:
            raise ContractError(f"unknown path: {path} is not in the API description")
        with_method = [(op, m) for op, m in on_path if op.method == method.upper()]
        if not with_method:
            allowed = sorted({op.method for op, _ in on_path})
            raise ContractError(f"wrong method: {method} {path}; the description allows {', '.join(allowed)}")

        # Several operations on one path (x-ms-paths variants): the most specific one whose required query
        # parameters are all there.
        def required_query(op: Operation) -> set[str]:
            return {p["name"] for p in op.parameters if p.get("in") == "query" and p.get("required")}

        usable = [(op, m) for op, m in with_method if set(op.discriminators) <= set(query)]
        usable.sort(
            key=lambda om: (len(om[0].discriminators), len(required_query(om[0]) & set(query))), reverse=True
        )
        chosen = [om for om in usable if required_query(om[0]) <= set(query)] or usable or with_method
        op, m = chosen[0]
        return op, dict(zip(op.path_names, m.groups(), strict=True))

    def check_request(
        self, method: str, path: str, query: dict[str, str], headers: dict[str, str], body: bytes
    ) -> Operation:
        op, path_values = self.match(method, path, query)
        what = f"{method} {op.template}"
        declared = {p["name"] for p in op.parameters if p.get("in") == "query"}
        unknown = sorted(set(query) - declared)
        if unknown:
            raise ContractError(f"{what}: query parameter(s) {', '.join(unknown)} are not in the description")
        lower_headers = {k.lower(): v for k, v in headers.items()}
        for param in op.parameters:
            where, name = param.get("in"), param.get("name")
            if where == "path":
                self._typed(param, path_values[name], what)
            elif where == "query":
                if name not in query:
                    if param.get("required"):
                        raise ContractError(f"{what}: the required query parameter {name} is missing")
                    continue
                self._typed(param, query[name], what)
                if name == "api-version":
                    wanted = re.search(r"set to '([^']+)'", param.get("description", ""))
                    if wanted and query[name] != wanted.group(1):
                        raise ContractError(
                            f"{what}: api-version {query[name]!r}, the description says {wanted.group(1)!r}"
                        )
            elif where == "header" and param.get("required") and name.lower() not in lower_headers:
                # Azure names some header parameters after the .NET argument (contentRangeHeader): skip those
                if "-" in name:
                    raise ContractError(f"{what}: the required header {name} is missing")
            elif where == "body":
                if param.get("required") and not body:
                    raise ContractError(f"{what}: the request body is required")
                consumes = op.spec.get("consumes") or self.raw.get("consumes") or ["application/json"]
                ctype = lower_headers.get("content-type", "").split(";")[0].strip()
                if body and ctype not in consumes:
                    raise ContractError(f"{what}: Content-Type {ctype!r}; the operation consumes {consumes}")
                schema = param.get("schema") or {}
                if body and ctype.endswith("json"):
                    try:
                        value = json.loads(body)
                    except ValueError:
                        raise ContractError(f"{what}: the body is not JSON")
                    self._validate(schema, value, f"{what} request body")
        return op

    # --- responses -------------------------------------------------------------------------------------
    def check_response(self, op: Operation, status: int, body: Any) -> None:
        what = f"{op.method} {op.template} → {status}"
        responses = op.spec.get("responses") or {}
        spec = responses.get(str(status)) or responses.get("default")
        if spec is None:
            if 200 <= status < 300:
                raise ContractError(f"{what}: the description lists no such response")
            return  # error statuses are not described by Azure's specs
        schema = spec.get("schema")
        if not schema or schema.get("format") == "Stream" or body is None:
            return
        if isinstance(body, (bytes, str)):
            raise ContractError(f"{what}: the description says JSON, the reply is not")
        if schema.get("type") == "array" and isinstance(body, dict):
            if set(body) - {"count", "value"} or not isinstance(body.get("value"), list):
                raise ContractError(f"{what}: a collection must be {{count, value}}, got keys {sorted(body)}")
            body = body["value"]
        self._validate(schema, body, f"{what} response body")
