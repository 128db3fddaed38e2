"""Admin pages for instances and the built-in tracker."""

from __future__ import annotations

from django import forms
from django.contrib import admin

from instances.models import Attachment, Comment, Instance, Issue, IssueChange, Project


class InstanceForm(forms.ModelForm):
    """Credentials are write-only: the stored value is never shown, leaving the field empty keeps it."""

    credentials = forms.CharField(
        required=False,
        widget=forms.PasswordInput(render_value=False),
        help_text="Tracker credentials as JSON, stored encrypted. Leave empty to keep the current ones.",
    )

    class Meta:
        model = Instance
        fields = [
            "name",
            "kind",
            "tracker_type",
            "url",
            "tracker_version",
            "node_url",
            "credentials",
            "settings",
        ]

    def clean_credentials(self) -> str:
        value = self.cleaned_data.get("credentials") or ""
        if not value and self.instance.pk:
            return self.instance.credentials
        return value


@admin.register(Instance)
class InstanceAdmin(admin.ModelAdmin):
    form = InstanceForm
    list_display = ["name", "tracker_type", "kind", "url", "uid", "has_credentials", "updated_at"]
    list_filter = ["kind", "tracker_type"]
    search_fields = ["name", "url", "uid"]
    readonly_fields = ["uid", "created_at", "updated_at"]

    @admin.display(boolean=True, description="credentials")
    def has_credentials(self, obj: Instance) -> bool:
        return bool(obj.credentials)


@admin.register(Project)
class ProjectAdmin(admin.ModelAdmin):
    list_display = ["key", "name", "instance", "next_number"]
    list_filter = ["instance"]
    search_fields = ["key", "name"]


class CommentInline(admin.TabularInline):
    model = Comment
    extra = 0
    fields = ["body", "author", "internal", "created_at"]
    readonly_fields = ["created_at"]


class AttachmentInline(admin.TabularInline):
    model = Attachment
    extra = 0
    fields = ["filename", "mime_type", "size", "sha256", "created_at"]
    readonly_fields = ["filename", "mime_type", "size", "sha256", "created_at"]

    def has_add_permission(self, request, obj=None) -> bool:  # type: ignore[no-untyped-def]
        return False


@admin.register(Issue)
class IssueAdmin(admin.ModelAdmin):
    """Editing here goes through the tracker services, so the change is recorded and synced."""

    list_display = ["key", "summary", "status", "priority", "issue_type", "assignee", "updated_at"]
    list_filter = ["project", "status", "priority", "issue_type"]
    search_fields = ["key", "summary", "description"]
    readonly_fields = ["key", "created_at", "updated_at", "updated_by", "version"]
    fields = [
        "project",
        "key",
        "summary",
        "description",
        ("status", "priority", "issue_type"),
        "labels",
        ("assignee", "reporter"),
        "due_date",
        "parent",
        "custom_fields",
        ("created_at", "updated_at", "updated_by", "version"),
    ]
    inlines = [CommentInline, AttachmentInline]
    list_select_related = ["project"]

    def save_model(self, request, obj, form, change):  # type: ignore[no-untyped-def]
        from instances.tracker import services

        actor = request.user.email or request.user.get_username()
        data = {f: form.cleaned_data[f] for f in form.changed_data if f in services.EDITABLE_FIELDS}
        if change:
            services.issue_update(issue=obj, actor=actor, **data)
        else:
            data.pop("project", None)
            created = services.issue_create(project=form.cleaned_data["project"], actor=actor, **data)
            obj.pk, obj.key = created.pk, created.key

    def save_formset(self, request, form, formset, change):  # type: ignore[no-untyped-def]
        from instances.tracker import services

        actor = request.user.email or request.user.get_username()
        if formset.model is not Comment:
            return super().save_formset(request, form, formset, change)
        formset.save(commit=False)  # fills new_objects, changed_objects and deleted_objects
        for obj in formset.deleted_objects:
            services.comment_delete(comment=obj, actor=actor)
        for obj, _fields in formset.changed_objects:
            services.comment_update(comment=obj, actor=actor, body=obj.body, internal=obj.internal)
        for obj in formset.new_objects:
            services.comment_add(
                issue=form.instance,
                actor=actor,
                body=obj.body,
                internal=obj.internal,
                author=obj.author or actor,
            )


@admin.register(IssueChange)
class IssueChangeAdmin(admin.ModelAdmin):
    list_display = ["issue", "action", "actor", "at", "fields"]
    list_filter = ["action"]
    search_fields = ["issue__key", "actor"]
    list_select_related = ["issue"]

    def has_add_permission(self, request) -> bool:  # type: ignore[no-untyped-def]
        return False

    def has_change_permission(self, request, obj=None) -> bool:  # type: ignore[no-untyped-def]
        return False
