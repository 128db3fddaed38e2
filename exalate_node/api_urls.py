"""The integration API's URL tree (/api/v1/)."""

from django.urls import include, path
from rest_framework.routers import DefaultRouter

from connections.api.views import ConnectionViewSet
from instances.api.views import InstanceViewSet, IssueViewSet, ProjectViewSet
from replicas.api.views import EntitySyncStatusView, SyncErrorViewSet, SyncEventViewSet

router = DefaultRouter()
router.register("instances", InstanceViewSet, basename="instance")
router.register("connections", ConnectionViewSet, basename="connection")
router.register("events", SyncEventViewSet, basename="event")
router.register("errors", SyncErrorViewSet, basename="error")
router.register("tracker/projects", ProjectViewSet, basename="tracker-project")
router.register("tracker/issues", IssueViewSet, basename="tracker-issue")

urlpatterns = [
    path("", include("syncrules.api.urls")),
    path(
        "entities/<int:instance_id>/<str:key>/sync-status/",
        EntitySyncStatusView.as_view(),
        name="entity-sync-status",
    ),
    *router.urls,
]
