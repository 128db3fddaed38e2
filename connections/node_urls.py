"""URLs of the node-to-node protocol v1, included at ``/node/v1/`` (see ``connections.node_views``)."""

from __future__ import annotations

from django.urls import path

from connections import node_views

app_name = "node"

urlpatterns = [
    path("handshake/", node_views.handshake, name="handshake"),
    path("messages/", node_views.messages, name="messages"),
    path("messages/ack/", node_views.messages_ack, name="messages-ack"),
    path("status/", node_views.status, name="status"),
    path("rotate-key/", node_views.rotate_key, name="rotate-key"),
    path("rotate-key/confirm/", node_views.rotate_key_confirm, name="rotate-key-confirm"),
    path("attachments/<str:item_id>/<str:attachment_id>/", node_views.attachment, name="attachment"),
]
