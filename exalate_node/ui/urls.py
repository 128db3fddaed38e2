"""URLs of the admin UI, mounted at /ui/ (namespace ``ui``)."""

from django.urls import path

from exalate_node.ui import views

app_name = "ui"

urlpatterns = [
    path("", views.dashboard, name="dashboard"),
    path("connections/", views.connection_list, name="connections"),
    path("connections/initiate/", views.connection_initiate, name="initiate"),
    path("connections/accept/", views.connection_accept, name="accept"),
    path("connections/<int:pk>/", views.connection_detail, name="connection"),
    path("connections/<int:pk>/activate/", views.connection_activate, name="activate"),
    path("connections/<int:pk>/deactivate/", views.connection_deactivate, name="deactivate"),
    path("connections/<int:pk>/rotate-key/", views.connection_rotate_key, name="rotate_key"),
    path("connections/<int:pk>/delete/", views.connection_delete, name="delete"),
    path("connections/<int:pk>/exalate/", views.connection_exalate, name="exalate"),
    path("connections/<int:pk>/invite/", views.connection_invite_again, name="invite"),
    path("connections/<int:pk>/rules/", views.rules_edit, name="rules"),
    path("connections/<int:pk>/mapping/", views.rules_mapping, name="mapping"),
    path("connections/<int:pk>/triggers/", views.trigger_list, name="triggers"),
    path("connections/<int:pk>/triggers/<int:trigger_id>/", views.trigger_edit, name="trigger_edit"),
    path(
        "connections/<int:pk>/triggers/<int:trigger_id>/toggle/", views.trigger_toggle, name="trigger_toggle"
    ),
    path(
        "connections/<int:pk>/triggers/<int:trigger_id>/delete/", views.trigger_delete, name="trigger_delete"
    ),
    path("connections/<int:pk>/bulk/", views.bulk_page, name="bulk"),
    path("connections/<int:pk>/bulk/unexalate/", views.bulk_unexalate, name="bulk_unexalate"),
    path("connections/<int:pk>/bulk/progress/", views.bulk_progress, name="bulk_progress"),
    path("connections/<int:pk>/bulk/<int:job_id>/cancel/", views.bulk_cancel, name="bulk_cancel"),
    path("connections/<int:pk>/reconcile/", views.reconcile_page, name="reconcile"),
    path("connections/<int:pk>/items/", views.connection_items, name="items"),
    path("status/", views.entity_status, name="status"),
    path("twins/<int:pk>/sync/", views.twin_sync, name="twin_sync"),
    path("twins/<int:pk>/unexalate/", views.twin_unexalate, name="twin_unexalate"),
    path("queue/", views.queue, name="queue"),
    path("activity/", views.activity, name="activity"),
    path("activity/data/", views.activity_data, name="activity_data"),
    path("errors/", views.error_list, name="errors"),
    path("errors/test-alert/", views.alerts_test, name="alerts_test"),
    path("errors/<int:pk>/resolve/", views.error_resolve, name="error_resolve"),
    path("errors/<int:pk>/retry/", views.error_retry, name="error_retry"),
    path("tracker/", views.tracker_list, name="tracker"),
    path("tracker/new/", views.tracker_issue_create, name="issue_create"),
    path("tracker/attachments/<int:pk>/", views.tracker_attachment, name="attachment"),
    path("tracker/issues/<int:pk>/", views.tracker_issue_by_id, name="issue_by_id"),
    path("tracker/<str:key>/", views.tracker_issue, name="issue"),
    path("tracker/<str:key>/comment/", views.tracker_comment, name="comment"),
    path("tracker/<str:key>/attach/", views.tracker_attach, name="attach"),
]
