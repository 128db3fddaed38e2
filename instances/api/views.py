"""API views for instances and the built-in tracker (``/api/v1/instances/``, ``/api/v1/tracker/``).

Writes go through ``instances.tracker.services`` so every change is recorded and reaches the pipeline.
"""

from __future__ import annotations

from django.http import FileResponse
from django.shortcuts import get_object_or_404
from drf_spectacular.utils import extend_schema
from rest_framework import mixins, status, viewsets
from rest_framework.decorators import action
from rest_framework.parsers import FormParser, MultiPartParser
from rest_framework.request import Request
from rest_framework.response import Response

from exalate_node.api import Pagination
from instances.api.serializers import (
    AttachmentSerializer,
    AttachmentUploadSerializer,
    CommentSerializer,
    InstanceSerializer,
    IssueSerializer,
    ProjectSerializer,
)
from instances.models import Attachment, Comment, Instance, Issue, Project
from instances.tracker import services


def _actor(request: Request) -> str:
    return request.user.email or request.user.get_username()


class InstanceViewSet(viewsets.ModelViewSet):
    """Trackers this node talks to. Credentials can be written but are never returned."""

    pagination_class = Pagination
    queryset = Instance.objects.all()
    serializer_class = InstanceSerializer
    filterset_fields = ["kind", "tracker_type"]
    search_fields = ["name", "url", "uid"]
    ordering_fields = ["name", "created_at", "updated_at"]


class ProjectViewSet(
    mixins.ListModelMixin, mixins.RetrieveModelMixin, mixins.CreateModelMixin, viewsets.GenericViewSet
):
    """Projects of the built-in tracker."""

    pagination_class = Pagination
    queryset = Project.objects.all()
    serializer_class = ProjectSerializer
    lookup_field = "key"
    filterset_fields = ["instance"]
    search_fields = ["key", "name"]
    ordering_fields = ["key", "name"]

    def perform_create(self, serializer: ProjectSerializer) -> None:
        data = serializer.validated_data
        serializer.instance = services.project_create(
            instance=data["instance"],
            key=data["key"],
            name=data["name"],
            statuses=data.get("statuses"),
            priorities=data.get("priorities"),
            issue_types=data.get("issue_types"),
        )


class IssueViewSet(
    mixins.ListModelMixin,
    mixins.RetrieveModelMixin,
    mixins.CreateModelMixin,
    mixins.UpdateModelMixin,
    viewsets.GenericViewSet,
):
    """Issues of the built-in tracker, addressed by key (``DEMO-12``)."""

    pagination_class = Pagination
    serializer_class = IssueSerializer
    lookup_field = "key"
    lookup_value_regex = r"[A-Z][A-Z0-9]*-\d+"
    search_fields = ["key", "summary", "description"]
    ordering_fields = ["key", "created_at", "updated_at", "priority", "status"]
    filterset_fields = ["project__key", "status", "priority", "issue_type", "assignee"]

    def get_queryset(self):  # type: ignore[no-untyped-def]
        qs = Issue.objects.select_related("project", "parent").prefetch_related("comments", "attachments")
        project = self.request.query_params.get("project")
        if project:
            qs = qs.filter(project__key=project)
        return qs.order_by("-updated_at", "-id")

    def perform_create(self, serializer: IssueSerializer) -> None:
        data = dict(serializer.validated_data)
        project = data.pop("project")
        serializer.instance = services.issue_create(project=project, actor=_actor(self.request), **data)

    def perform_update(self, serializer: IssueSerializer) -> None:
        data = dict(serializer.validated_data)
        if "project" in data and data["project"] != serializer.instance.project:
            from rest_framework.exceptions import ValidationError

            raise ValidationError({"project": "An issue cannot move to another project."})
        data.pop("project", None)
        serializer.instance = services.issue_update(
            issue=serializer.instance, actor=_actor(self.request), **data
        )

    @action(detail=True, methods=["get", "post"], serializer_class=CommentSerializer)
    def comments(self, request: Request, key: str) -> Response:
        issue = self.get_object()
        if request.method == "GET":
            return Response(CommentSerializer(issue.comments.all(), many=True).data)
        ser = CommentSerializer(data=request.data)
        ser.is_valid(raise_exception=True)
        comment = services.comment_add(
            issue=issue,
            actor=_actor(request),
            body=ser.validated_data["body"],
            author=ser.validated_data.get("author", ""),
            internal=ser.validated_data.get("internal", False),
        )
        return Response(CommentSerializer(comment).data, status=status.HTTP_201_CREATED)

    @action(
        detail=True,
        methods=["patch", "delete"],
        url_path=r"comments/(?P<comment_id>\d+)",
        serializer_class=CommentSerializer,
    )
    def comment_detail(self, request: Request, key: str, comment_id: str) -> Response:
        issue = self.get_object()
        comment = get_object_or_404(Comment, issue=issue, pk=comment_id)
        if request.method == "DELETE":
            services.comment_delete(comment=comment, actor=_actor(request))
            return Response(status=status.HTTP_204_NO_CONTENT)
        ser = CommentSerializer(comment, data=request.data, partial=True)
        ser.is_valid(raise_exception=True)
        comment = services.comment_update(
            comment=comment,
            actor=_actor(request),
            body=ser.validated_data.get("body", comment.body),
            internal=ser.validated_data.get("internal"),
        )
        return Response(CommentSerializer(comment).data)

    @extend_schema(methods=["GET"], operation_id="tracker_issue_attachments_list")
    @extend_schema(methods=["POST"], operation_id="tracker_issue_attachments_create")
    @action(
        detail=True,
        methods=["get", "post"],
        parser_classes=[MultiPartParser, FormParser],
        serializer_class=AttachmentUploadSerializer,
    )
    def attachments(self, request: Request, key: str) -> Response:
        issue = self.get_object()
        if request.method == "GET":
            return Response(AttachmentSerializer(issue.attachments.all(), many=True).data)
        ser = AttachmentUploadSerializer(data=request.data)
        ser.is_valid(raise_exception=True)
        upload = ser.validated_data["file"]
        attachment = services.attachment_add(
            issue=issue,
            actor=_actor(request),
            filename=upload.name,
            content=upload,
            mime_type=upload.content_type or "",
        )
        return Response(AttachmentSerializer(attachment).data, status=status.HTTP_201_CREATED)

    @extend_schema(methods=["GET"], operation_id="tracker_issue_attachment_read")
    @extend_schema(methods=["DELETE"], operation_id="tracker_issue_attachment_delete")
    @action(
        detail=True,
        methods=["get", "delete"],
        url_path=r"attachments/(?P<attachment_id>\d+)",
        serializer_class=AttachmentSerializer,
    )
    def attachment_detail(self, request: Request, key: str, attachment_id: str) -> Response:
        issue = self.get_object()
        attachment = get_object_or_404(Attachment, issue=issue, pk=attachment_id)
        if request.method == "DELETE":
            services.attachment_delete(attachment=attachment, actor=_actor(request))
            return Response(status=status.HTTP_204_NO_CONTENT)
        return Response(AttachmentSerializer(attachment).data)

    @action(detail=True, methods=["get"], url_path=r"attachments/(?P<attachment_id>\d+)/content")
    def attachment_content(self, request: Request, key: str, attachment_id: str) -> FileResponse:
        issue = self.get_object()
        attachment = get_object_or_404(Attachment, issue=issue, pk=attachment_id)
        return FileResponse(
            attachment.file.open("rb"),
            as_attachment=True,
            filename=attachment.filename,
            content_type=attachment.mime_type,
        )
