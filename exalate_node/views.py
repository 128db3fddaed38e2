"""Node-level views: the home page, the health check and the API token endpoint."""

from __future__ import annotations

from django.contrib.auth import authenticate
from django.contrib.auth.views import redirect_to_login
from django.db import connection
from django.http import Http404, HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import redirect
from django.templatetags.static import static
from django.urls import Resolver404, resolve, reverse
from django.utils.http import escape_leading_slashes
from django.views import defaults
from django.views.decorators.cache import never_cache
from drf_spectacular.utils import extend_schema
from drf_spectacular.views import SpectacularSwaggerView
from rest_framework import serializers
from rest_framework.exceptions import PermissionDenied, Throttled, ValidationError
from rest_framework.permissions import AllowAny
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.throttling import ScopedRateThrottle
from rest_framework.views import APIView

from exalate_node import __version__
from exalate_node.tokens import token_create


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


def favicon(request: HttpRequest) -> HttpResponse:
    """Browsers ask for /favicon.ico on pages that name none (the API docs, a JSON error): the UI's icon. The
    static URL is resolved per request, so a hashed (manifest) static storage works too."""
    return redirect(static("ui/favicon.svg"), permanent=True)


_swagger = SpectacularSwaggerView.as_view(url_name="api-schema")


def api_docs(request: HttpRequest) -> HttpResponse:
    """The API's browsable docs (staff only): a browser that is not logged in is sent to the login page and
    back, instead of a bare "401 Unauthorized"; an API client without a token still gets the JSON 401."""
    if not request.user.is_authenticated and "text/html" in request.headers.get("Accept", ""):
        return redirect_to_login(request.get_full_path(), reverse("admin:login"))
    return _swagger(request)


def page_not_found(request: HttpRequest, path: str = "") -> HttpResponse:
    """The last URL pattern: a URL nothing else matched, outside the machine prefixes. It answers with the
    product's 404 page even on a DEBUG node (``make run``), where Django would show its debug page listing
    every URL pattern; like ``CommonMiddleware``'s APPEND_SLASH, a GET for a known path without its final
    slash is redirected first."""
    if request.method in ("GET", "HEAD") and not request.path.endswith("/"):
        try:
            match = resolve(request.path + "/")
        except Resolver404:
            match = None
        if match is not None and match.func is not page_not_found:
            query = request.META.get("QUERY_STRING", "")
            target = escape_leading_slashes(request.path + "/")  # "//host" would leave the site
            return redirect(target + (f"?{query}" if query else ""), permanent=True)
    return defaults.page_not_found(request, Http404(request.path))


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


LOGIN_WINDOW_S = 300


def _client_address(request: HttpRequest) -> str:
    return request.META.get("REMOTE_ADDR", "") or "unknown"


def admin_login(request: HttpRequest, **kwargs: object) -> HttpResponse:
    """The admin's login page with a limit on failed attempts per client address (LOGIN_FAILURE_LIMIT in
    LOGIN_WINDOW_S seconds): beyond it, a 429 page says how long to wait, even for the right password."""
    from django.conf import settings
    from django.contrib import admin
    from django.core.cache import cache

    counter = f"exalate-node:login-failures:{_client_address(request)}"
    if request.method == "POST" and cache.get(counter, 0) >= settings.LOGIN_FAILURE_LIMIT:
        response = HttpResponse(
            f"Too many failed logins from this address. Wait {LOGIN_WINDOW_S // 60} minutes, then try again "
            "(ask another admin to reset your password if you lost it).",
            status=429,
            content_type="text/plain; charset=utf-8",
        )
        response["Retry-After"] = str(LOGIN_WINDOW_S)
        return response
    response = admin.site.login(request, **kwargs)
    if request.method == "POST" and response.status_code == 200:  # the form again: the login failed
        cache.add(counter, 0, LOGIN_WINDOW_S)
        try:
            cache.incr(counter)
        except ValueError:  # expired between add and incr
            cache.set(counter, 1, LOGIN_WINDOW_S)
    return response


def healthz(request: HttpRequest) -> JsonResponse:
    """Liveness and database reachability, for load balancers and the run script."""
    with connection.cursor() as cursor:
        cursor.execute("SELECT 1")
    return JsonResponse({"status": "ok", "version": __version__})


@never_cache
def readyz(request: HttpRequest) -> JsonResponse:
    """Readiness, for load balancers and orchestrators: 200 when the database, the task broker and a
    recent worker heartbeat are all there; 503 naming the failing part and what to do
    (exalate_node/health.py). Anonymous, like /healthz: it says nothing secret."""
    from exalate_node.health import readiness

    ready, checks = readiness()
    return JsonResponse(
        {"status": "ready" if ready else "not ready", "version": __version__, "checks": checks},
        status=200 if ready else 503,
    )


class TokenRequestSerializer(serializers.Serializer):
    username = serializers.CharField()
    password = serializers.CharField(style={"input_type": "password"}, trim_whitespace=False)
    name = serializers.CharField(required=False, max_length=100, help_text="What the token is for.")


class TokenSerializer(serializers.Serializer):
    token = serializers.CharField(help_text="Shown once: only its digest is stored.")
    expires_at = serializers.DateTimeField(allow_null=True)


class ObtainToken(APIView):
    """POST username and password, get a new API token (staff users only). The key is in this answer only;
    it expires after API_TOKEN_TTL_DAYS (default 90)."""

    permission_classes = [AllowAny]
    authentication_classes: list = []
    # Limits password guessing: API_TOKEN_RATE attempts per client address (default 10 a minute), a 429
    # with Retry-After beyond that. The count lives in Django's cache (per process unless CACHES is shared).
    throttle_classes = [ScopedRateThrottle]
    throttle_scope = "token"

    def throttled(self, request, wait):  # type: ignore[no-untyped-def]
        raise Throttled(
            wait,
            detail="Too many token requests from this address. Check the username and password, then retry "
            "later.",
        )

    @extend_schema(request=TokenRequestSerializer, responses={200: TokenSerializer})
    def post(self, request: Request) -> Response:
        ser = TokenRequestSerializer(data=request.data)
        ser.is_valid(raise_exception=True)
        user = authenticate(
            request=request._request,
            username=ser.validated_data["username"],
            password=ser.validated_data["password"],
        )
        if user is None:
            raise ValidationError(
                {"non_field_errors": ["Unable to log in with the username and password given."]}
            )
        if not user.is_staff:
            raise PermissionDenied(
                "Only staff users can use the API. Ask an admin to make your account staff."
            )
        token, key = token_create(user=user, name=ser.validated_data.get("name", ""))
        return Response({"token": key, "expires_at": token.expires_at})
