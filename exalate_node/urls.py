"""URL root: admin UI, integration API (/api/v1/), node-to-node protocol (/node/v1/), health (/healthz:
liveness; /readyz: readiness)."""

from django.contrib import admin
from django.urls import include, path, re_path
from drf_spectacular.views import SpectacularAPIView

from exalate_node import metrics, views

handler404 = "exalate_node.views.not_found"
handler500 = "exalate_node.views.server_error"

admin.site.site_header = "exalate-node"
admin.site.site_title = "exalate-node admin"
admin.site.index_title = "Sync node administration"

urlpatterns = [
    path("", views.home, name="home"),
    path("healthz", views.healthz, name="healthz"),
    path("readyz", views.readyz, name="readyz"),
    path("metrics", metrics.metrics, name="metrics"),
    path("admin/login/", views.admin_login, name="admin-login-throttled"),
    path("admin/", admin.site.urls),
    path("ui/", include("exalate_node.ui.urls")),
    path("api/v1/auth/token/", views.ObtainToken.as_view(), name="api-token"),
    path("api/v1/", include("exalate_node.api_urls")),
    path("node/v1/", include("connections.node_urls")),
    path("hooks/", include("instances.webhook_urls")),
    path("api/schema/", SpectacularAPIView.as_view(), name="api-schema"),
    path("api/docs/", views.api_docs, name="api-docs"),
    path("favicon.ico", views.favicon, name="favicon"),
    # Last: any other URL for people gets the product's 404 page, also on a DEBUG node. The machine prefixes
    # keep handler404's JSON (and Django's own behaviour), static and media files their handlers.
    re_path(r"^(?!api/|node/|hooks/|static/|media/|admin/)(?P<path>.*)$", views.page_not_found),
]
