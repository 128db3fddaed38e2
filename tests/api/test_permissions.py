"""Every API endpoint denies anonymous and non-staff users, whatever the method."""

from __future__ import annotations

import re

import pytest
from django.urls import URLPattern, URLResolver, get_resolver

pytestmark = pytest.mark.django_db


def _api_paths() -> list[str]:
    paths: list[str] = []

    def walk(patterns, prefix: str) -> None:  # type: ignore[no-untyped-def]
        for p in patterns:
            route = prefix + str(p.pattern)
            if isinstance(p, URLResolver):
                walk(p.url_patterns, route)
            elif isinstance(p, URLPattern) and route.startswith("^api/v1/") or route.startswith("api/v1/"):
                paths.append(route)

    walk(get_resolver().url_patterns, "")
    concrete = set()
    for route in paths:
        path = route.replace("^", "").replace("$", "").replace("/?", "/")
        path = re.sub(r"\(\?P<format>[^)]*\)", "", path)
        path = re.sub(r"\\\.", "", path)
        path = re.sub(r"<int:\w+>|\(\?P<\w+>\[\^/\.\]\+\)|\(\?P<\w+>\\d\+\)", "1", path)
        path = re.sub(r"<str:\w+>|\(\?P<key>[^)]*\)", "SUP-1", path)
        path = path.replace("\\", "")
        if "(?P" in path or "<" in path or "auth/token" in path:
            continue
        concrete.add("/" + path)
    return sorted(concrete)


API_PATHS = _api_paths()


def test_the_walk_finds_the_api():
    assert len(API_PATHS) > 20
    assert "/api/v1/connections/1/rules/dry-run/" in API_PATHS


@pytest.mark.parametrize("path", API_PATHS)
@pytest.mark.parametrize("persona", ["anon_api", "user_api"])
def test_it_denies_anonymous_and_non_staff_users(path, persona, request):
    client = request.getfixturevalue(persona)
    for method in ("get", "post", "put", "patch", "delete"):
        response = getattr(client, method)(path, {}, format="json")
        assert response.status_code in (401, 403, 405), (method, path, response.status_code)
        if response.status_code != 405:
            assert response.json()["code"] in ("not_authenticated", "permission_denied")
