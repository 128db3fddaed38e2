"""Shared pieces of the integration API: the error body every endpoint uses."""

from __future__ import annotations

from typing import Any

import requests
from django.core.exceptions import ValidationError as DjangoValidationError
from django.http import Http404
from rest_framework import exceptions, status
from rest_framework.pagination import PageNumberPagination
from rest_framework.response import Response
from rest_framework.views import exception_handler as drf_exception_handler

from exalate_node.redaction import redact, redact_data
from instances.connectors.base import ConnectorError


class TrackerFailed(exceptions.APIException):
    """A tracker this node called failed, refused or answered something unreadable: a 502 that names the
    instance and says what the tracker answered, not a 500."""

    status_code = status.HTTP_502_BAD_GATEWAY
    default_code = "tracker_error"
    default_detail = "The tracker failed. Try again later."


# What escapes a connector when its tracker fails: the seam's ConnectorError (refusals, outages, answers that
# are not JSON), and requests' own errors where a connector reads an answer itself (``response.json()`` on
# an HTML page raises requests.JSONDecodeError).
TRACKER_FAILURES: tuple[type[Exception], ...] = (ConnectorError, requests.RequestException)


def tracker_failed(instance: Any, exc: Exception) -> TrackerFailed:
    """The API error for a failed tracker call made for ``instance`` (an ``Instance``, or None)."""
    from instances.connectors.http import redact

    who = "The tracker" if instance is not None else "A tracker or peer node"  # (None: the handler's net)
    if isinstance(exc, ConnectorError):
        message = exc.message  # the seam's messages say what the tracker said and what to do
    elif isinstance(exc, requests.JSONDecodeError):
        message = (
            f"{who} answered something that is not JSON ({str(exc)[:100]}). Check the instance URL "
            "and that the tracker is up."
        )
    else:
        message = f"{who} could not be reached ({redact(str(exc))[:300]}). Try again later."
    where = f"{instance.name} ({instance.tracker_type}): " if instance is not None else ""
    return TrackerFailed(f"{where}{message}")


def exception_handler(exc: Exception, context: dict[str, Any]) -> Response | None:
    """Every error is ``{"detail": <what went wrong and what to do>, "code": <machine code>}``;
    validation errors add ``"fields"`` with the per-field messages. The node's secret values are redacted
    from it (``exalate_node.redaction``)."""
    if isinstance(exc, TRACKER_FAILURES):
        # A view that did not name the instance: still a 502 saying what the tracker answered.
        exc = tracker_failed(None, exc)
    if isinstance(exc, DjangoValidationError):
        exc = exceptions.ValidationError(
            exc.message_dict if hasattr(exc, "error_dict") else {"non_field_errors": exc.messages}
        )
    if isinstance(exc, OverflowError):
        # An id beyond the database's integer range (e.g. /connections/99999999999999999999/) cannot exist.
        exc = exceptions.NotFound("No such object: the id is out of range.")
    response = drf_exception_handler(exc, context)
    if response is None:
        return None
    if isinstance(exc, exceptions.ValidationError):
        fields = response.data if isinstance(response.data, dict) else {"non_field_errors": response.data}
        first = next(iter(fields.items()), ("", [""]))
        message = first[1][0] if isinstance(first[1], list) and first[1] else str(first[1])
        where = "" if first[0] in ("non_field_errors", "detail") else f"{first[0]}: "
        response.data = redact_data({"detail": f"{where}{message}", "code": "invalid", "fields": fields})
        response.status_code = status.HTTP_400_BAD_REQUEST
        return response
    detail = response.data.get("detail", "") if isinstance(response.data, dict) else response.data
    if isinstance(exc, Http404) or str(detail) == "Not found.":
        request = context.get("request")
        where = f" at {request.path}" if request is not None else ""
        detail = exceptions.ErrorDetail(
            f"Not found: nothing{where} (check the id: list the objects to find it).", code="not_found"
        )
    code = getattr(detail, "code", None) or getattr(exc, "default_code", "error")
    response.data = {"detail": redact(str(detail)), "code": str(code)}  # it may quote a tracker or a peer
    return response


ERROR_SCHEMA: dict[str, Any] = {
    "type": "object",
    "description": "Every error the API returns: what went wrong and what to do next, and a machine code.",
    "properties": {
        "detail": {"type": "string", "description": "What went wrong and what to do next."},
        "code": {"type": "string", "description": "A machine-readable code, e.g. invalid, not_found."},
        "fields": {
            "type": "object",
            "additionalProperties": True,
            "description": "Validation errors only: the messages per field.",
        },
    },
    "required": ["detail", "code"],
}

ERROR_RESPONSES: dict[str, str] = {
    "400": "The input is not valid: `detail` says what to fix, `fields` lists the messages per field.",
    "401": "No credentials or invalid ones: send `Authorization: Token <key>` or log in.",
    "403": "The user is not staff, or a session request lacks its CSRF token.",
    "404": "No such object (or the id is out of range).",
}
# Operations with a rate limit (exalate_node.views.ObtainToken).
THROTTLED_PATHS = frozenset({"/api/v1/auth/token/"})
THROTTLED_RESPONSE = "Too many attempts from this address: wait the `Retry-After` seconds, then retry."
# Operations that call the local instance's tracker: a 502 when it fails, refuses or answers nonsense.
TRACKER_PATH_ENDINGS = ("/rules/dry-run/", "/exalate/", "/connect/", "/sync-status/", "/reconcile/")
TRACKER_RESPONSE = (
    "The tracker failed, refused the request or answered something that is not readable: `detail` names "
    "the instance and says what the tracker answered."
)
# Only for operations that read a body.
BODY_ERROR_RESPONSES: dict[str, str] = {
    "415": "The body's content type is not one this endpoint reads (or the body is malformed): send JSON.",
}


def add_error_responses(
    result: dict[str, Any], generator: Any, request: Any, public: bool, **kwargs: Any
) -> dict[str, Any]:
    """drf-spectacular postprocessing hook: declare the shared error body and the 4xx statuses on every
    operation, so the schema lists every status the API answers (the contract the fuzz tests check)."""
    result.setdefault("components", {}).setdefault("schemas", {})["Error"] = ERROR_SCHEMA
    reference = {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}
    for path, path_item in result.get("paths", {}).items():
        for method, operation in path_item.items():
            if method not in ("get", "post", "put", "patch", "delete"):
                continue
            responses = operation.setdefault("responses", {})
            errors = ERROR_RESPONSES | (BODY_ERROR_RESPONSES if method in ("post", "put", "patch") else {})
            if path in THROTTLED_PATHS:
                errors = errors | {"429": THROTTLED_RESPONSE}
            if path.endswith(TRACKER_PATH_ENDINGS) and not (path.endswith("/reconcile/") and method == "get"):
                errors = errors | {"502": TRACKER_RESPONSE}
            for status_code, description in errors.items():
                responses.setdefault(status_code, {"description": description, "content": reference})
    return result


class Pagination(PageNumberPagination):
    """The API's lists: ``?page=``, and ``?page_size=`` up to ``max_page_size`` (the default is the
    ``PAGE_SIZE`` setting); a page size that is not a positive number is the default. Every list view names
    this class; setting it as ``DEFAULT_PAGINATION_CLASS`` would make those lines unnecessary."""

    page_size_query_param = "page_size"
    max_page_size = 500
