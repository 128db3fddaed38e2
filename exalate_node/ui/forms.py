"""Forms of the admin UI. They only check input; the services do the work and the domain validation."""

from __future__ import annotations

from typing import Any

from django import forms
from django.core.exceptions import ValidationError

from connections.models import Connection
from instances.models import Instance, Issue, Project, TrackerType
from replicas.models import SyncEvent

MAX_SCRIPT = 100_000


def local_instances() -> Any:
    return Instance.objects.filter(kind=Instance.Kind.LOCAL).order_by("name")


def add_service_error(form: forms.Form, exc: ValidationError) -> None:
    """Show a service's ValidationError on the form: on the field it names when the form has one."""
    if hasattr(exc, "error_dict"):
        for field, errors in exc.message_dict.items():
            form.add_error(field if field in form.fields else None, errors)
    else:
        form.add_error(None, exc.messages)


class LocalConnectionForm(forms.Form):
    name = forms.CharField(max_length=200, help_text="Shown on both sides, e.g. “Support ⇄ Engineering”.")
    instance_a = forms.ModelChoiceField(queryset=local_instances(), label="First instance")
    instance_b = forms.ModelChoiceField(queryset=local_instances(), label="Second instance")
    type = forms.ChoiceField(choices=Connection.Type.choices, initial=Connection.Type.BASIC)

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        for name in ("instance_a", "instance_b"):
            self.fields[name].queryset = local_instances()

    def clean(self) -> dict[str, Any]:
        data = super().clean()
        a, b = data.get("instance_a"), data.get("instance_b")
        if a and b and a.pk == b.pk:
            raise ValidationError("Pick two different instances: a connection joins two trackers.")
        return data


class InitiateForm(forms.Form):
    name = forms.CharField(max_length=200, help_text="The other admin sees this name when accepting.")
    local_instance = forms.ModelChoiceField(queryset=local_instances(), label="Instance on this node")
    type = forms.ChoiceField(
        choices=Connection.Type.choices,
        initial=Connection.Type.SCRIPT,
        help_text="Script: each side edits its sync rules. Basic: the default rules.",
    )

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.fields["local_instance"].queryset = local_instances()


class AcceptForm(forms.Form):
    code = forms.CharField(
        label="Invitation code",
        widget=forms.Textarea(
            attrs={"rows": 4, "spellcheck": "false", "placeholder": "EXN1-…", "class": "invitation-code"}
        ),
        help_text="Paste the whole code the other node's admin sent you (it starts with EXN1-).",
    )
    local_instance = forms.ModelChoiceField(queryset=local_instances(), label="Instance on this node")
    name = forms.CharField(
        max_length=200, required=False, help_text="Leave empty to use the name the other side chose."
    )

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.fields["local_instance"].queryset = local_instances()

    def clean_code(self) -> str:
        return "".join(self.cleaned_data["code"].split())


class StatusForm(forms.Form):
    instance = forms.ModelChoiceField(queryset=local_instances(), required=False, empty_label="Any instance")
    key = forms.CharField(
        max_length=200, label="Item key", widget=forms.TextInput(attrs={"placeholder": "SUP-1"})
    )

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.fields["instance"].queryset = local_instances()

    def clean_key(self) -> str:
        return self.cleaned_data["key"].strip()


class ItemKeyForm(forms.Form):
    key = forms.CharField(max_length=200, label="Item key")

    def clean_key(self) -> str:
        return self.cleaned_data["key"].strip()


class QueueFilterForm(forms.Form):
    connection = forms.ModelChoiceField(
        queryset=Connection.objects.all(), required=False, empty_label="All connections"
    )
    status = forms.ChoiceField(choices=[("", "Any status"), *SyncEvent.Status.choices], required=False)
    key = forms.CharField(max_length=200, required=False, label="Item key")

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.fields["connection"].queryset = Connection.objects.select_related("local_instance")
        self.fields["connection"].label_from_instance = lambda c: f"{c.name} ({c.local_instance.name})"


class RulesForm(forms.Form):
    outgoing = forms.CharField(
        max_length=MAX_SCRIPT,
        required=False,
        strip=False,
        widget=forms.Textarea(attrs={"spellcheck": "false"}),
    )
    incoming = forms.CharField(
        max_length=MAX_SCRIPT,
        required=False,
        strip=False,
        widget=forms.Textarea(attrs={"spellcheck": "false"}),
    )
    note = forms.CharField(max_length=300, required=False, label="Version note")
    dry_key = forms.CharField(max_length=200, required=False, label="Item key")
    dry_direction = forms.ChoiceField(
        choices=[
            ("outgoing", "Outgoing: the replica this item would send"),
            ("incoming", "Incoming: apply the last received replica to this item"),
        ],
        required=False,
        label="Dry-run",
    )
    dry_replica = forms.CharField(
        required=False,
        strip=False,
        label="Replica (JSON, optional)",
        widget=forms.Textarea(attrs={"rows": 4, "spellcheck": "false", "placeholder": '{"summary": "…"}'}),
        help_text="Incoming only: a replica to apply instead of the one last received.",
    )


class ProjectForm(forms.Form):
    instance = forms.ModelChoiceField(queryset=Instance.objects.none())
    key = forms.RegexField(
        regex=r"^[A-Za-z][A-Za-z0-9]{0,9}$",
        max_length=10,
        help_text="Letters and digits, e.g. SUP; issues are keyed SUP-1, SUP-2…",
        error_messages={"invalid": "Use 1–10 letters or digits, starting with a letter (e.g. SUP)."},
    )
    name = forms.CharField(max_length=200)

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.fields["instance"].queryset = local_instances().filter(tracker_type=TrackerType.BUILTIN)


class IssueForm(forms.Form):
    """The built-in tracker's editable issue fields; choices come from the issue's project."""

    summary = forms.CharField(max_length=500)
    description = forms.CharField(required=False, widget=forms.Textarea(attrs={"rows": 6}))
    status = forms.ChoiceField()
    priority = forms.ChoiceField()
    issue_type = forms.ChoiceField(label="Type")
    labels = forms.CharField(required=False, help_text="Comma-separated, e.g. hardware, urgent.")
    assignee = forms.EmailField(required=False)
    reporter = forms.EmailField(required=False)
    due_date = forms.DateField(required=False, widget=forms.DateInput(attrs={"type": "date"}))

    def __init__(self, *args: Any, project: Project, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.fields["status"].choices = [(s, s) for s in project.statuses]
        self.fields["priority"].choices = [(p, p) for p in project.priorities]
        self.fields["issue_type"].choices = [(t, t) for t in project.issue_types]
        if not self.is_bound:
            self.fields["priority"].initial = "Medium" if "Medium" in project.priorities else None

    @classmethod
    def initial_for(cls, issue: Issue) -> dict[str, Any]:
        return {
            "summary": issue.summary,
            "description": issue.description,
            "status": issue.status,
            "priority": issue.priority,
            "issue_type": issue.issue_type,
            "labels": ", ".join(issue.labels or []),
            "assignee": issue.assignee,
            "reporter": issue.reporter,
            "due_date": issue.due_date,
        }

    def clean_labels(self) -> list[str]:
        return [x.strip() for x in self.cleaned_data["labels"].split(",") if x.strip()]


class CommentForm(forms.Form):
    body = forms.CharField(label="Comment", widget=forms.Textarea(attrs={"rows": 3}))
    internal = forms.BooleanField(required=False, label="Internal note (not shown to customers)")


class AttachmentForm(forms.Form):
    file = forms.FileField()


class MappingForm(forms.Form):
    """The visual mapping of one connection side: what to send, how to apply what arrives."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        from exalate_node.ui import mapping

        super().__init__(*args, **kwargs)
        for field, label in mapping.OUTGOING_FIELDS:
            self.fields[f"out_{field}"] = forms.BooleanField(required=False, initial=True, label=label)
        for field, label in mapping.INCOMING_FIELDS:
            self.fields[f"in_{field}"] = forms.ChoiceField(
                choices=mapping.APPLY_CHOICES, initial=mapping.CHANGED, label=label
            )
        for field, label in mapping.MERGED:
            self.fields[f"in_{field}"] = forms.BooleanField(
                required=False, initial=True, label=f"{label}: add, edit and delete by id (merge)"
            )
        for field in mapping.NAMED:
            self.fields[f"map_{field}"] = forms.CharField(
                required=False,
                label=f"{field.capitalize()} values",
                widget=forms.Textarea(
                    attrs={"rows": 2, "spellcheck": "false", "placeholder": "Done = Resolved"}
                ),
                help_text="One per line: Remote value = Local value. Others are matched by name.",
            )

    def _clean_map(self, field: str) -> dict[str, str]:
        from exalate_node.ui.mapping import parse_value_map

        try:
            return parse_value_map(self.cleaned_data[f"map_{field}"])
        except ValueError as exc:
            raise ValidationError(str(exc))

    def clean_map_status(self) -> dict[str, str]:
        return self._clean_map("status")

    def clean_map_priority(self) -> dict[str, str]:
        return self._clean_map("priority")

    def clean_map_type(self) -> dict[str, str]:
        return self._clean_map("type")

    def outgoing_fields(self) -> list[forms.BoundField]:
        return [self[name] for name in self.fields if name.startswith("out_")]

    def incoming_rows(self) -> list[dict[str, Any]]:
        """One row per incoming field: its choice and, for named fields, its value map."""
        from exalate_node.ui.mapping import INCOMING_FIELDS, NAMED

        return [
            {"field": self[f"in_{f}"], "map": self[f"map_{f}"] if f in NAMED else None}
            for f, _l in INCOMING_FIELDS
        ]

    def merged_fields(self) -> list[forms.BoundField]:
        from exalate_node.ui.mapping import MERGED

        return [self[f"in_{f}"] for f, _label in MERGED]


# --- triggers, bulk operations, stuck items -----------------------------------------------------------------

MAX_CSV_BYTES = 5_000_000


# Per tracker type: (what the query is, an example). See docs/connectors.md, "Trigger query language".
QUERY_LANGUAGES: dict[str, tuple[str, str]] = {
    "builtin": ("the built-in filter language", "project = SUP AND labels = sync"),
    "redmine": ("Redmine issue filters as a query string", "tracker_id=1&status_id=open"),
    "github": ("GitHub issue search qualifiers (repo and is:issue are added)", "label:sync state:open"),
    "jira": ("JQL (limited to the instance's project)", "labels = sync AND priority = High"),
    "azure": ("a WIQL condition, what follows WHERE", "[System.Tags] CONTAINS 'sync'"),
    "gitlab": ("GitLab issue list filters as a query string", "labels=sync&state=opened"),
    "zendesk": ("Zendesk search terms (type:ticket is added)", "tags:sync status<solved"),
    "servicenow": ("a ServiceNow encoded query (a list filter's “Copy query”)", "active=true^priority=1"),
    "salesforce": ("a SOQL condition, what follows WHERE", "Priority = 'High' AND IsClosed = false"),
}


class TriggerForm(forms.Form):
    entity_type = forms.CharField(max_length=50, initial="issue", label="Entity type")
    query = forms.CharField(
        max_length=2000,
        widget=forms.Textarea(attrs={"rows": 2, "spellcheck": "false", "placeholder": "labels = sync"}),
        help_text="In the tracker's own query language, e.g. “project = SUP AND labels = sync”.",
    )
    notes = forms.CharField(required=False, widget=forms.Textarea(attrs={"rows": 2}))
    active = forms.BooleanField(required=False, initial=True)

    def __init__(self, *args: Any, tracker_type: str = "builtin", **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        language, example = QUERY_LANGUAGES.get(tracker_type, QUERY_LANGUAGES["builtin"])
        self.fields["query"].widget.attrs["placeholder"] = example
        self.fields[
            "query"
        ].help_text = (
            f"In the tracker's own language: {language}, e.g. “{example}”. The tracker checks it on save."
        )

    def clean_query(self) -> str:
        return self.cleaned_data["query"].strip()


class BulkExalateForm(forms.Form):
    trigger = forms.ModelChoiceField(
        queryset=None,  # type: ignore[arg-type]  # set per connection
        empty_label=None,
        help_text="Everything the trigger's query matches starts syncing; items in sync are sent again.",
    )

    def __init__(self, *args: Any, connection: Connection, **kwargs: Any) -> None:
        from replicas.models import Trigger

        super().__init__(*args, **kwargs)
        self.fields["trigger"].queryset = Trigger.objects.filter(connection=connection).order_by("id")


class BulkConnectForm(forms.Form):
    csv_file = forms.FileField(required=False, label="CSV file")
    csv_text = forms.CharField(
        required=False,
        label="…or paste the pairs",
        widget=forms.Textarea(attrs={"rows": 4, "spellcheck": "false", "placeholder": "SUP-1,ENG-7"}),
        help_text="One “local key,remote key” per line; a header line is skipped.",
    )

    def clean(self) -> dict[str, Any]:
        data = super().clean()
        upload = data.get("csv_file")
        if upload:
            if upload.size > MAX_CSV_BYTES:
                raise ValidationError("The file is larger than 5 MB; split it.")
            try:
                data["pairs"] = upload.read().decode("utf-8-sig")
            except UnicodeDecodeError:
                raise ValidationError("The file is not UTF-8 text. Save it as CSV (UTF-8) and upload again.")
        elif (data.get("csv_text") or "").strip():
            data["pairs"] = data["csv_text"]
        else:
            raise ValidationError("Upload a CSV file or paste the pairs.")
        return data


class StuckForm(forms.Form):
    minutes = forms.IntegerField(
        min_value=1, max_value=60 * 24 * 365, initial=30, label="Not synchronized for (minutes)"
    )
