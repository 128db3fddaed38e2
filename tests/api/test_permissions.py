"""Every API endpoint denies anonymous and non-staff users, whatever the method.

The routes are walked from the URL tree, and each gets a concrete URL built from its own pattern (path
converters and regex groups filled with values that match them), checked to resolve back to that very
route. A route for which no such URL can be built fails the collection, so no route is ever left out
silently (the earlier walk dropped 12, among them every ``connections/{pk}`` action and ``errors/{pk}``'s
``retry`` and ``resolve``, because ``route.replace("^", "")`` turned ``[^/.]`` into ``[/.]``).
"""

from __future__ import annotations

import re

import pytest
from django.urls import URLPattern, URLResolver, get_resolver, resolve

pytestmark = pytest.mark.django_db

PREFIX = "api/v1/"
# Values tried, in order, for a path converter or a regex group: the one named for it, then the first of the
# others that its regex matches fully.
NAMED = {"format": "json", "key": "SUP-1"}
SAMPLES = ("1", "SUP-1", "json", ".json")
# The one route that anyone may call: it takes a staff user's password and gives a token
# (tests/security/test_headers.py::test_the_token_endpoint_refuses_non_staff).
TOKEN_ROUTE = "api/v1/auth/token/"


def _routes() -> list[tuple[str, URLPattern]]:
    """(the full route as Django reports it in ResolverMatch.route, the pattern) of every API endpoint."""
    found: list[tuple[str, URLPattern]] = []

    def walk(patterns, prefix: str) -> None:  # type: ignore[no-untyped-def]
        for p in patterns:
            part = str(p.pattern)
            route = prefix + (part.removeprefix("^") if prefix else part)  # as Django joins them
            if isinstance(p, URLResolver):
                walk(p.url_patterns, route)
            elif route.startswith(PREFIX):
                found.append((route, p))

    walk(get_resolver().url_patterns, "")
    return found


def _sample(regex: str, name: str) -> str:
    for value in (NAMED.get(name, ""), *SAMPLES):
        if re.fullmatch(regex, value):
            return value
    raise AssertionError(f"No sample value matches <{name}> ({regex}): add one to SAMPLES.")


def _concrete(route: str, pattern: URLPattern) -> str:
    """A URL that resolves to ``pattern``: its converters and groups filled, regex syntax spelled out."""
    text = route
    for name, converter in getattr(pattern.pattern, "converters", {}).items():
        text = re.sub(rf"<(?:\w+:)?{name}>", _sample(converter.regex, name), text)
    # Regex routes (DRF's router): named groups first, then the few regex spellings routers use.
    group = re.compile(r"\(\?P<(\w+)>((?:[^()\\]|\\.|\[[^\]]*\])+)\)")
    text = group.sub(lambda m: _sample(m.group(2), m.group(1)), text)
    text = text.replace("^", "").replace("$", "").replace("/?", "/").replace("\\.", ".")
    path = "/" + text
    match = resolve(path)
    assert match.route == route, f"{path} resolves to {match.route}, not to {route}"
    return path


ROUTES = _routes()
API_PATHS = [_concrete(route, pattern) for route, pattern in ROUTES]


def test_every_route_gets_a_url_that_resolves_to_it():
    assert len(API_PATHS) == len(ROUTES) == len(set(API_PATHS))
    for path in (
        "/api/v1/",
        "/api/v1/connections/1/exalate/",
        "/api/v1/connections/1/rotate-key/",
        "/api/v1/connections/1/activate/",
        "/api/v1/errors/1/retry/",
        "/api/v1/errors/1/resolve/",
        "/api/v1/connections/1/rules/dry-run/",
        "/api/v1/tracker/issues/SUP-1/attachments/1/content/",
        "/api/v1/entities/1/SUP-1/sync-status/",
    ):
        assert path in API_PATHS, path


@pytest.mark.parametrize("path", API_PATHS)
@pytest.mark.parametrize("persona", ["anon_api", "user_api"])
def test_it_denies_anonymous_and_non_staff_users(path, persona, request):
    client = request.getfixturevalue(persona)
    for method in ("get", "post", "put", "patch", "delete"):
        response = getattr(client, method)(path, {}, format="json")
        if resolve(path).route == TOKEN_ROUTE:
            assert response.status_code in (400, 405), (method, path, response.status_code)
            assert "token" not in response.json(), (method, path)
            continue
        assert response.status_code in (401, 403, 405), (method, path, response.status_code)
        if response.status_code != 405:
            assert response.json()["code"] in ("not_authenticated", "permission_denied")


@pytest.mark.parametrize(
    "path",
    [
        "/api/v1/tracker/issues/SUP-1/attachments.json/",
        "/api/v1/connections/1/exalate.json/",
        "/api/v1/instances.json",
    ],
)
def test_format_suffix_urls_are_not_routes(api, builtin, path):
    """They were a 500 for staff on every custom action (found by walking every route); ?format= remains."""
    response = api.post(path, {}, format="json")
    assert response.status_code == 404 and response.json()["code"] == "not_found"
    assert api.get("/api/v1/instances/?format=json").status_code == 200
