"""The integration API's URL tree (/api/v1/)."""

from django.urls import include, path
from rest_framework.routers import DefaultRouter

from connections.api.views import AlertTestView, ConnectionViewSet
from instances.api.views import InstanceViewSet, IssueViewSet, ProjectViewSet
from replicas.api.dryrun import RulesDryRunView
from replicas.api.ops import (
    BulkCancelView,
    BulkDetailView,
    BulkListView,
    ReconcileView,
    TriggerDetailView,
    TriggerListView,
    TwinListView,
)
from replicas.api.views import EntitySyncStatusView, SyncErrorViewSet, SyncEventViewSet

# No format-suffix routes (``…/exalate.json/``): the schema never listed them, every custom action answered
# them with a 500 (its method takes no ``format``), and ``?format=json`` or an Accept header does the same.
router = DefaultRouter()
router.include_format_suffixes = False
router.register("instances", InstanceViewSet, basename="instance")
router.register("connections", ConnectionViewSet, basename="connection")
router.register("events", SyncEventViewSet, basename="event")
router.register("errors", SyncErrorViewSet, basename="error")
router.register("tracker/projects", ProjectViewSet, basename="tracker-project")
router.register("tracker/issues", IssueViewSet, basename="tracker-issue")

urlpatterns = [
    path("", include("syncrules.api.urls")),
    path("connections/<int:pk>/rules/dry-run/", RulesDryRunView.as_view(), name="rules-dry-run"),
    path("alerts/test/", AlertTestView.as_view(), name="alerts-test"),
    path("connections/<int:pk>/triggers/", TriggerListView.as_view(), name="triggers"),
    path("connections/<int:pk>/triggers/<int:trigger_id>/", TriggerDetailView.as_view(), name="trigger"),
    path("connections/<int:pk>/bulk/", BulkListView.as_view(), name="bulk-jobs"),
    path("connections/<int:pk>/bulk/<int:job_id>/", BulkDetailView.as_view(), name="bulk-job"),
    path("connections/<int:pk>/bulk/<int:job_id>/cancel/", BulkCancelView.as_view(), name="bulk-cancel"),
    path("connections/<int:pk>/reconcile/", ReconcileView.as_view(), name="reconcile"),
    path("connections/<int:pk>/twins/", TwinListView.as_view(), name="twins"),
    path(
        "entities/<int:instance_id>/<str:key>/sync-status/",
        EntitySyncStatusView.as_view(),
        name="entity-sync-status",
    ),
    *router.urls,
]
