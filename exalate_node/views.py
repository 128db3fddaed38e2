"""Node-level views: the home page, the health check and the API token endpoint."""

from __future__ import annotations

from django.db import connection
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import redirect
from django.views import defaults
from rest_framework.authtoken.views import ObtainAuthToken
from rest_framework.permissions import AllowAny
from rest_framework.throttling import ScopedRateThrottle

from exalate_node import __version__


def home(request: HttpRequest) -> HttpResponse:
    """The node's front page is the admin UI's dashboard (which asks for a staff login)."""
    return redirect("ui:dashboard")


MACHINE_PREFIXES = ("/api/", "/node/", "/hooks/")


def not_found(request: HttpRequest, exception: Exception | None = None) -> HttpResponse:
    """404 for a URL no route matches: the API's JSON error body under /api/, /node/ and /hooks/ (programs
    read those), Django's page elsewhere. Only used with DEBUG off, as Django does for handler404."""
    if request.path.startswith(MACHINE_PREFIXES):
        return JsonResponse(
            {
                "detail": f"No such endpoint or object: {request.path}. Check the id and the path "
                "against the API docs at /api/docs/.",
                "code": "not_found",
            },
            status=404,
        )
    return defaults.page_not_found(request, exception)


def server_error(request: HttpRequest) -> HttpResponse:
    """500: a JSON body for programs (under /api/, /node/, /hooks/), Django's page elsewhere."""
    if request.path.startswith(MACHINE_PREFIXES):
        return JsonResponse(
            {
                "detail": "The node failed to handle this request; the error is in its log. "
                "Retry, and report it if it persists.",
                "code": "server_error",
            },
            status=500,
        )
    return defaults.server_error(request)


def healthz(request: HttpRequest) -> JsonResponse:
    """Liveness and database reachability, for load balancers and the run script."""
    with connection.cursor() as cursor:
        cursor.execute("SELECT 1")
    return JsonResponse({"status": "ok", "version": __version__})


class ObtainToken(ObtainAuthToken):
    """POST username and password, get an API token (staff users only)."""

    permission_classes = [AllowAny]
    # Limits password guessing: API_TOKEN_RATE attempts per client address (default 10 a minute), a 429
    # with Retry-After beyond that. The count lives in Django's cache (per process unless CACHES is shared).
    throttle_classes = [ScopedRateThrottle]
    throttle_scope = "token"

    def throttled(self, request, wait):  # type: ignore[no-untyped-def]
        from rest_framework.exceptions import Throttled

        raise Throttled(
            wait,
            detail="Too many token requests from this address. Check the username and password, then retry "
            "later.",
        )

    def post(self, request, *args, **kwargs):  # type: ignore[no-untyped-def]
        from rest_framework.exceptions import PermissionDenied

        serializer = self.serializer_class(data=request.data, context={"request": request})
        serializer.is_valid(raise_exception=True)
        user = serializer.validated_data["user"]
        if not user.is_staff:
            raise PermissionDenied(
                "Only staff users can use the API. Ask an admin to make your account staff."
            )
        return super().post(request, *args, **kwargs)
