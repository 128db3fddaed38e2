"""Property-based fuzzing of the integration API against its own OpenAPI schema (schemathesis).

Every operation of ``/api/schema/`` gets hypothesis-generated input through the WSGI app, as a staff user
with a token, on a node with a built-in instance, a project, an issue and a local connection. Checks: no
5xx, the content type and the body match the schema.
"""

from __future__ import annotations

import json
from unittest import mock

import pytest
import requests
import schemathesis
from django.core.wsgi import get_wsgi_application
from drf_spectacular.generators import SchemaGenerator
from drf_spectacular.renderers import OpenApiJsonRenderer
from hypothesis import HealthCheck, settings
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

# Every status the API answers is in the schema (the 4xx responses come from exalate_node.api's hook).
CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance, response_schema_conformance]

# The schema exactly as /api/schema/ serves it (same generator and renderer), loaded without a user.
_document = json.loads(OpenApiJsonRenderer().render(SchemaGenerator().get_schema(request=None, public=True)))
schema = schemathesis.openapi.from_dict(_document)
schema.app = get_wsgi_application()


@pytest.fixture
def token_header(transactional_db, django_user_model):  # type: ignore[no-untyped-def]
    from connections.services import connection_create_local
    from exalate_node.tokens import token_create
    from instances.models import Instance
    from instances.tracker import services

    staff = django_user_model.objects.create_user("fuzz", "fuzz@example.com", "pw-fuzz-123", is_staff=True)
    a = Instance.objects.create(name="Support", tracker_type="builtin")
    b = Instance.objects.create(name="Engineering", tracker_type="builtin")
    sup = services.project_create(instance=a, key="SUP", name="Support")
    services.project_create(instance=b, key="ENG", name="Engineering")
    services.issue_create(project=sup, actor="fuzz", summary="Seeded issue")
    connection_create_local(name="S-E", instance_a=a, instance_b=b)
    return {"Authorization": f"Token {token_create(user=staff)[1]}"}


def _no_network(*args: object, **kwargs: object) -> None:
    raise requests.ConnectionError("no network in the fuzz test")


@schema.parametrize()
@settings(
    max_examples=25,
    deadline=None,
    suppress_health_check=[
        HealthCheck.function_scoped_fixture,
        HealthCheck.too_slow,
        HealthCheck.filter_too_much,
    ],
)
def test_api_conforms_to_its_schema(case, token_header):  # type: ignore[no-untyped-def]
    # connections/accept/ and preview/ would call another node: it is unreachable, a clean 400.
    with mock.patch("connections.transport.http_request", _no_network):
        case.call_and_validate(headers=token_header, checks=CHECKS)
