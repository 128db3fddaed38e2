"""Node-level views: the home page, the health check and the API token endpoint."""

from __future__ import annotations

from django.db import connection
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import redirect
from rest_framework.authtoken.views import ObtainAuthToken
from rest_framework.permissions import AllowAny

from exalate_node import __version__


def home(request: HttpRequest) -> HttpResponse:
    """The node's front page is the admin UI's dashboard (which asks for a staff login)."""
    return redirect("ui:dashboard")


def healthz(request: HttpRequest) -> JsonResponse:
    """Liveness and database reachability, for load balancers and the run script."""
    with connection.cursor() as cursor:
        cursor.execute("SELECT 1")
    return JsonResponse({"status": "ok", "version": __version__})


class ObtainToken(ObtainAuthToken):
    """POST username and password, get an API token (staff users only)."""

    permission_classes = [AllowAny]

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
