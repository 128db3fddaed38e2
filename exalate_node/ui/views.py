"""Admin UI views. Thin: they read through selectors and querysets, write through the services, and turn
service errors into messages that say what went wrong and what to do next.

Every view requires a staff login; every state change is a POST (CSRF-protected by the middleware).
"""

from __future__ import annotations

import difflib
import json
from datetime import datetime
from typing import Any

from django.contrib import admin, messages
from django.contrib.admin.views.decorators import staff_member_required
from django.core.exceptions import ValidationError
from django.core.paginator import Paginator
from django.db.models import Count, F, Q, QuerySet
from django.http import FileResponse, HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.template.defaultfilters import pluralize
from django.urls import reverse
from django.utils.http import url_has_allowed_host_and_scheme
from django.views.decorators.http import require_GET, require_http_methods, require_POST

from connections import alerts
from connections import services as connection_services
from connections.models import Connection
from connections.rotation import RotationError, key_fingerprint, rotate_key
from exalate_node.api import TRACKER_FAILURES, tracker_failed
from exalate_node.parsers import JSONRefused, load_json
from exalate_node.text import unencodable_message, unencodable_path
from exalate_node.ui import forms
from instances.connectors import ConnectorError
from instances.models import Attachment, Instance, Issue, Project
from instances.tracker import services as tracker
from replicas import bulk, dryrun, pipeline, reconcile, selectors, triggers
from replicas.models import BulkJob, ReconciliationReport, SyncError, SyncEvent, Trigger, Twin
from syncrules import services as rules
from syncrules.models import RulesVersion

QUEUED = (SyncEvent.Status.PENDING, SyncEvent.Status.PROCESSING, SyncEvent.Status.SENT)
PAGE_SIZE = 25
TIMELINE_STEP = 20  # Entity Sync Status shows the newest 20 events; "Show older" adds 20 more at a time
TIMELINE_MAX = 1000

# --- helpers ------------------------------------------------------------------------------------------------


def _page(request: HttpRequest, template: str, context: dict[str, Any], status: int = 200) -> HttpResponse:
    """Render a UI page inside the admin's frame (header, user tools, theme), without the app sidebar."""
    ctx = {**admin.site.each_context(request), "is_nav_sidebar_enabled": False, **context}
    return render(request, template, ctx, status=status)


def _back(request: HttpRequest, default: str) -> HttpResponse:
    """Redirect to the page the form came from (``next``), if it is ours, else to ``default``."""
    target = request.POST.get("next") or request.GET.get("next") or ""
    if target and url_has_allowed_host_and_scheme(target, {request.get_host()}, request.is_secure()):
        return redirect(target)
    return redirect(default)


def _actor(request: HttpRequest) -> str:
    return request.user.email or request.user.get_username()


def _pretty(value: Any) -> str:
    if value is None:
        return ""
    return json.dumps(value, indent=2, sort_keys=True, ensure_ascii=False, default=str)


def _diff(before: str, after: str, before_name: str, after_name: str) -> list[tuple[str, str]]:
    """A unified diff as (css class, line) pairs for the template."""
    lines = []
    for line in difflib.unified_diff(
        before.splitlines(), after.splitlines(), before_name, after_name, lineterm="", n=3
    ):
        if line.startswith(("+++", "---")):
            cls = "meta"
        elif line.startswith("@@"):
            cls = "hunk"
        elif line.startswith("+"):
            cls = "add"
        elif line.startswith("-"):
            cls = "del"
        else:
            cls = "ctx"
        lines.append((cls, line))
    return lines


def connections_annotated() -> QuerySet[Connection]:
    """Connections with their items under sync, queued and failed events, in one query (as the API does)."""
    active = Q(twins__unexalated_at__isnull=True) & ~Q(twins__local_id="")
    return (
        Connection.objects.select_related("local_instance", "remote_instance", "peer")
        .annotate(
            items_under_sync=Count("twins", filter=active, distinct=True),
            queued_events=Count("events", filter=Q(events__status__in=QUEUED), distinct=True),
            failed_events=Count("events", filter=Q(events__status=SyncEvent.Status.FAILED), distinct=True),
        )
        .order_by("name", "id")
    )


# A local connection is two rows joined by ``peer``, one per side; lists and counts show it once, by the side
# with the lower id. Connections with another node have one row here.
ONE_ROW = Q(peer__isnull=True) | Q(pk__lt=F("peer_id"))


def connection_rows(*, limit: int | None = None) -> list[Connection]:
    """One row per connection for the lists: a local connection's first side, with ``other_side`` (its
    peer's row) and the queued and failed events of both sides added up. Items under sync are the first
    side's: each synced pair has a twin on either side."""
    query = connections_annotated().filter(ONE_ROW)
    rows = list(query[:limit] if limit else query)
    peers = connections_annotated().in_bulk([c.peer_id for c in rows if c.peer_id])
    waiting = _waiting_for_acceptance([c.pk for c in rows if c.status == Connection.Status.PENDING])
    for row in rows:
        # Pending with no code that can still be accepted: say so instead of "waiting for acceptance".
        row.invitation_expired = row.status == Connection.Status.PENDING and row.pk not in waiting  # type: ignore[attr-defined]
        row.other_side = peers.get(row.peer_id)  # type: ignore[attr-defined]
        if row.other_side is not None:  # type: ignore[attr-defined]
            row.queued_events += row.other_side.queued_events  # type: ignore[attr-defined]
            row.failed_events += row.other_side.failed_events  # type: ignore[attr-defined]
    return rows


def _waiting_for_acceptance(pending_ids: list[int]) -> set[int]:
    """Of these pending connections, those with an invitation code that can still be accepted."""
    from django.utils import timezone

    from connections.models import Invitation

    if not pending_ids:
        return set()
    live = Invitation.objects.filter(
        connection_id__in=pending_ids,
        used_at__isnull=True,
        revoked_at__isnull=True,
        expires_at__gt=timezone.now(),
    )
    return set(live.values_list("connection_id", flat=True))


# --- dashboard ----------------------------------------------------------------------------------------------


@staff_member_required
@require_GET
def dashboard(request: HttpRequest) -> HttpResponse:
    """Connections at a glance, recent events, open errors and how much is waiting."""
    queue = SyncEvent.objects.filter(status__in=QUEUED).aggregate(
        outgoing=Count("id", filter=Q(direction=SyncEvent.Direction.OUTGOING)),
        incoming=Count("id", filter=Q(direction=SyncEvent.Direction.INCOMING)),
    )
    open_errors = SyncError.objects.filter(resolved_at__isnull=True)
    context = {
        "title": "Dashboard",
        "connections": connection_rows(limit=20),
        "connection_count": Connection.objects.filter(ONE_ROW).count(),
        "queue": queue,
        "failed_events": SyncEvent.objects.filter(status=SyncEvent.Status.FAILED).count(),
        "twin_count": Twin.objects.filter(unexalated_at__isnull=True)
        .filter(Q(connection__peer__isnull=True) | Q(connection_id__lt=F("connection__peer_id")))
        .exclude(local_id="")
        .count(),
        "recent_events": SyncEvent.objects.select_related("connection", "connection__local_instance")[:10],
        "open_errors": open_errors.select_related("connection", "twin")[:6],
        "open_error_count": open_errors.count(),
    }
    return _page(request, "ui/dashboard.html", context)


# --- connections --------------------------------------------------------------------------------------------


@staff_member_required
@require_http_methods(["GET", "POST"])
def connection_list(request: HttpRequest) -> HttpResponse:
    """Every connection with its counts and actions; the form creates a local connection."""
    form = forms.LocalConnectionForm(request.POST or None)
    if request.method == "POST" and form.is_valid():
        try:
            side_a, _side_b = connection_services.connection_create_local(**form.cleaned_data)
        except connection_services.ConnectionError_ as exc:
            form.add_error(None, str(exc))
        else:
            messages.success(
                request,
                f"Local connection “{side_a.name}” is active on both sides. "
                "Exalate an item to start syncing it.",
            )
            return redirect("ui:connection", pk=side_a.pk)
    context = {
        "title": "Connections",
        "connections": connection_rows(),
        "form": form,
        "local_instance_count": forms.local_instances().count(),
    }
    return _page(request, "ui/connections/list.html", context, status=400 if form.errors else 200)


@staff_member_required
@require_GET
def connection_detail(request: HttpRequest, pk: int) -> HttpResponse:
    """One side of a connection: its state, its items under sync and the exalate form."""
    connection = get_object_or_404(connections_annotated(), pk=pk)
    twins = (
        Twin.objects.filter(connection=connection)
        .annotate(open_errors=Count("errors", filter=Q(errors__resolved_at__isnull=True)))
        .order_by("-id")
    )
    paginator = Paginator(twins, PAGE_SIZE)
    context = {
        "title": f"Connection: {connection.name}",
        "connection": connection,
        "twins": paginator.get_page(request.GET.get("page")),
        "exalate_form": forms.ItemKeyForm(),
        "example_key": _example_key(connection.local_instance),
        "rules": RulesVersion.objects.filter(connection=connection).order_by("-version").first(),
        "key_fingerprint": "" if connection.is_local else key_fingerprint(connection),
        "pending_invitation": connection.invitations.filter(used_at__isnull=True, revoked_at__isnull=True)
        .order_by("-created_at")
        .first(),
        "invitation_expired": connection.status == Connection.Status.PENDING
        and not _waiting_for_acceptance([connection.pk]),
    }
    return _page(request, "ui/connections/detail.html", context)


def _example_key(instance: Instance) -> str:
    """An item key of this instance to show as an example (its newest issue, else its first project's
    first key); empty for trackers whose items this node does not store."""
    newest = Issue.objects.filter(project__instance=instance).order_by("-id").values_list("key", flat=True)
    if key := newest.first():
        return key
    project = Project.objects.filter(instance=instance).order_by("id").values_list("key", flat=True).first()
    return f"{project}-1" if project else ""


def _connection_action(request: HttpRequest, pk: int, action: Any, done: str) -> HttpResponse:
    connection = get_object_or_404(Connection, pk=pk)
    try:
        action(connection=connection)
    except connection_services.ConnectionError_ as exc:
        messages.error(request, str(exc))
    else:
        messages.success(request, done.format(name=connection.name))
    return _back(request, reverse("ui:connections"))


@staff_member_required
@require_POST
def connection_activate(request: HttpRequest, pk: int) -> HttpResponse:
    return _connection_action(
        request,
        pk,
        connection_services.connection_activate,
        "“{name}” is active: queued changes are being sent in order.",
    )


@staff_member_required
@require_POST
def connection_deactivate(request: HttpRequest, pk: int) -> HttpResponse:
    return _connection_action(
        request,
        pk,
        connection_services.connection_deactivate,
        "“{name}” is paused: changes are queued and flow in order when you activate it again.",
    )


@staff_member_required
@require_POST
def connection_rotate_key(request: HttpRequest, pk: int) -> HttpResponse:
    """Rotate the connection key with the other node; the message shows the new fingerprint."""
    connection = get_object_or_404(Connection, pk=pk)
    try:
        rotated = rotate_key(connection)
    except RotationError as exc:
        messages.error(request, str(exc))
    else:
        messages.success(
            request,
            f"“{connection.name}” has a new key (fingerprint {key_fingerprint(rotated)}); the other node "
            "shows the same fingerprint.",
        )
    return _back(request, reverse("ui:connection", args=[pk]))


@staff_member_required
@require_http_methods(["GET", "POST"])
def connection_delete(request: HttpRequest, pk: int) -> HttpResponse:
    """GET asks for confirmation; POST deletes (both sides of a local connection)."""
    connection = get_object_or_404(connections_annotated(), pk=pk)
    if request.method == "POST":
        name = connection.name
        connection_services.connection_delete(connection=connection)
        messages.success(request, f"Connection “{name}” was deleted. The synced items stay as they are.")
        return redirect("ui:connections")
    return _page(
        request, "ui/connections/delete.html", {"title": "Delete connection", "connection": connection}
    )


def _tracker_message(connection: Connection, exc: Exception) -> str:
    """What a page says when the local tracker failed: the API's 502 detail (``exalate_node.api``)."""
    return str(tracker_failed(connection.local_instance, exc).detail)


@staff_member_required
@require_POST
def connection_exalate(request: HttpRequest, pk: int) -> HttpResponse:
    """Start syncing a local item on this connection (or send its current state again)."""
    connection = get_object_or_404(Connection, pk=pk)
    form = forms.ItemKeyForm(request.POST)
    if not form.is_valid():
        example = _example_key(connection.local_instance)
        messages.error(
            request,
            f"Enter the key of an item of {connection.local_instance.name}"
            + (f", e.g. {example}." if example else "."),
        )
        return _back(request, reverse("ui:connection", args=[pk]))
    try:
        twin = pipeline.exalate(connection=connection, key=form.cleaned_data["key"])
    except pipeline.OperationError as exc:
        messages.error(request, str(exc))
        return _back(request, reverse("ui:connection", args=[pk]))
    except TRACKER_FAILURES as exc:  # looking the item up in the tracker failed
        messages.error(request, _tracker_message(connection, exc))
        return _back(request, reverse("ui:connection", args=[pk]))
    twin.refresh_from_db()
    messages.success(
        request, f"{twin.local_key} is queued on “{connection.name}” (now: {twin.get_state_display()})."
    )
    url = reverse("ui:status") + f"?instance={connection.local_instance_id}&key={twin.local_key}"
    return redirect(url)


@staff_member_required
@require_http_methods(["GET", "POST"])
def connection_initiate(request: HttpRequest) -> HttpResponse:
    """Initiate a connection with another node: ends on the invitation code to give the other admin."""
    from connections.handshake import HandshakeError
    from connections.handshake import connection_initiate as initiate

    form = forms.InitiateForm(request.POST or None)
    if request.method == "POST" and form.is_valid():
        try:
            connection, code = initiate(**form.cleaned_data, user=request.user.get_username())
        except HandshakeError as exc:
            form.add_error(None, exc.message)
        else:
            return _invitation_page(request, connection, code)
    context = {"title": "Initiate a connection", "form": form}
    return _page(request, "ui/connections/initiate.html", context, status=400 if form.errors else 200)


def _invitation_page(request: HttpRequest, connection: Connection, code: str) -> HttpResponse:
    from connections.invitation import invitation_fingerprint

    invitation = connection.invitations.order_by("-created_at").first()
    context = {
        "title": "Invitation code",
        "connection": connection,
        "code": code,
        "expires_at": invitation.expires_at if invitation else None,
        "fingerprint": invitation_fingerprint(code),
    }
    return _page(request, "ui/connections/invitation.html", context)


@staff_member_required
@require_POST
def connection_invite_again(request: HttpRequest, pk: int) -> HttpResponse:
    """A fresh invitation code for a pending connection (the first one expired or got lost)."""
    from connections.handshake import HandshakeError, invitation_create

    connection = get_object_or_404(Connection, pk=pk)
    try:
        _invitation, code = invitation_create(connection=connection, user=request.user.get_username())
    except HandshakeError as exc:
        messages.error(request, exc.message)
        return redirect("ui:connection", pk=pk)
    return _invitation_page(request, connection, code)


@staff_member_required
@require_http_methods(["GET", "POST"])
def connection_accept(request: HttpRequest) -> HttpResponse:
    """Accept an invitation: first show what the code connects to, then connect on confirmation."""
    from connections.handshake import HandshakeError, preview_invitation
    from connections.handshake import connection_accept as accept
    from connections.invitation import InvitationError

    form = forms.AcceptForm(request.POST or None)
    preview = None
    if request.method == "POST" and form.is_valid():
        data = form.cleaned_data
        try:
            preview = preview_invitation(data["code"])
            own = _own_invitation(preview)
            if own is not None and (own.used_at or own.revoked_at):
                used = "was already used" if own.used_at else "was revoked"
                raise InvitationError(
                    "used",
                    f"This code {used}: a code works once. Ask the admin who sent it for a new one "
                    "(Connections → the pending connection → New invitation code).",
                )
            if own is not None or _is_this_node(preview):
                preview["own"] = True
            if request.POST.get("confirm") == "1":
                connection = accept(
                    code=data["code"],
                    local_instance=data["local_instance"],
                    user=request.user.get_username(),
                    name=data["name"] or None,
                )
                messages.success(request, f"Connected: “{connection.name}” is {connection.status}.")
                return redirect("ui:connection", pk=connection.pk)
        except InvitationError as exc:
            form.add_error("code", exc.message)
            preview = None
        except HandshakeError as exc:
            form.add_error(None, exc.message)
    if preview:
        preview["expires"] = datetime.fromisoformat(preview["expires_at"])
    context = {"title": "Accept an invitation", "form": form, "preview": preview}
    return _page(request, "ui/connections/accept.html", context, status=400 if form.errors else 200)


def _own_invitation(preview: dict[str, Any]) -> Any:
    """The invitation of this node a previewed code is (same instance and fingerprint), else None. Codes of
    other nodes cannot be checked before connecting: their node refuses a used code at Connect."""
    from connections.models import Invitation

    uid = (preview.get("instance") or {}).get("uid")
    if not uid or not Instance.objects.filter(uid=uid, kind=Instance.Kind.LOCAL).exists():
        return None
    return (
        Invitation.objects.filter(
            fingerprint=preview.get("fingerprint", ""), connection__local_instance__uid=uid
        )
        .order_by("-created_at")
        .first()
    )


def _is_this_node(preview: dict[str, Any]) -> bool:
    """Whether a previewed code was made by this very node (accepting it makes a loop-back connection)."""
    from django.conf import settings

    url = str((preview.get("node") or {}).get("url") or "").rstrip("/")
    return bool(url) and url == settings.NODE_URL.rstrip("/")


# --- entity sync status -------------------------------------------------------------------------------------


def _find_instance(key: str) -> Instance | None:
    """The instance an item key belongs to, when it can be told without asking a tracker."""
    issue = Issue.objects.select_related("project__instance").filter(key=key.upper()).first()
    if issue is not None:
        return issue.project.instance
    local = list(forms.local_instances()[:2])
    return local[0] if len(local) == 1 else None


@staff_member_required
@require_GET
def entity_status(request: HttpRequest) -> HttpResponse:
    """Entity Sync Status: per connection an item is synced on, its state, replicas, diff and timeline."""
    from replicas.selectors import sync_status

    form = forms.StatusForm(request.GET or None)
    status, twins = None, []
    shown = _timeline_length(request.GET.get("events"))
    if form.is_bound and form.is_valid():
        key = form.cleaned_data["key"]
        instance = form.cleaned_data["instance"] or _find_instance(key)
        if instance is None:
            form.add_error("instance", f"Choose the instance {key} belongs to: no built-in tracker has it.")
        else:
            try:
                # The page's own refresh (static/ui/ui.js) reuses the tracker's answer for the key.
                live = request.headers.get("X-Live-Poll") == "1"
                status = sync_status(instance=instance, key=key, events=shown, reuse_lookup=live)
            except TRACKER_FAILURES as exc:
                form.add_error(None, f"Could not look up {key}. {tracker_failed(instance, exc).detail}")
            except Exception as exc:  # a tracker that cannot be reached must not break the page
                form.add_error(None, f"Could not look up {key} in {instance.name}: {exc}")
            else:
                status["instance_obj"] = instance
                twins = _status_twins(status)
    context = {
        "title": "Entity Sync Status",
        "form": form,
        "status": status,
        "twins": twins,
        "item": _local_issue(status),
        "shown": shown,
        "more": min(shown + TIMELINE_STEP, TIMELINE_MAX),
    }
    return _page(request, "ui/status.html", context)


def _timeline_length(value: str | None) -> int:
    """How many timeline events to show (``?events=``): TIMELINE_STEP unless asked for more, at most
    TIMELINE_MAX; anything that is not a number is the default."""
    try:
        wanted = int(value or TIMELINE_STEP)
    except ValueError:
        return TIMELINE_STEP
    return max(TIMELINE_STEP, min(wanted, TIMELINE_MAX))


def _local_issue(status: dict[str, Any] | None) -> Issue | None:
    if not status or status["instance_obj"].tracker_type != "builtin":
        return None
    return Issue.objects.filter(key=status["key"].upper(), project__instance=status["instance_obj"]).first()


def _status_twins(status: dict[str, Any]) -> list[dict[str, Any]]:
    """Add what the template shows: pretty replicas, the diff of the last two remote ones, the models."""
    ids = [t["id"] for t in status["twins"]]
    models = Twin.objects.select_related("connection", "connection__remote_instance").in_bulk(ids)
    rule_ids = {e["rules_version"] for t in status["twins"] for e in t["events"] if e["rules_version"]}
    numbers = dict(RulesVersion.objects.filter(pk__in=rule_ids).values_list("pk", "version"))
    rows = []
    for data in status["twins"]:
        for event in data["events"]:
            event["rules_number"] = numbers.get(event["rules_version"])
            event["status_label"] = _label(SyncEvent.Status, event["status"])
        twin = models[data["id"]]
        remote, previous = _pretty(data["remote_replica"]), _pretty(data["previous_remote_replica"])
        rows.append(
            {
                **data,
                "twin": twin,
                "local_pretty": _pretty(_as_sent(data["local_replica"])),
                "remote_payload_pretty": _pretty(_as_received(twin, data["remote_replica"])),
                "remote_pretty": remote,
                "remote_diff": _diff(previous, remote, "previous remote replica", "remote replica")
                if previous
                else [],
            }
        )
    return rows


def _label(choices: Any, value: str) -> str:
    """The display label of a choice value, as the model's get_FOO_display would show it."""
    return str(dict(choices.choices).get(value, value))


def _as_sent(hub_issue: dict[str, Any] | None) -> dict[str, Any] | None:
    """The local replica as it travels: the version this node sends, and the hubIssue."""
    from replicas.schema import wrap

    return wrap(hub_issue) if hub_issue is not None else None


def _as_received(twin: Twin, hub_issue: dict[str, Any] | None) -> dict[str, Any] | None:
    """The remote replica as it arrived (with the sender's version), from the newest incoming event that
    carried it; just the hubIssue when no stored event has it any more."""
    if hub_issue is None:
        return None
    received = (
        SyncEvent.objects.filter(twin=twin, direction=SyncEvent.Direction.INCOMING, replica__isnull=False)
        .order_by("-id")
        .values_list("replica", flat=True)
        .first()
    )
    if isinstance(received, dict) and received.get("hubIssue") == hub_issue:
        return received
    return hub_issue


@staff_member_required
@require_POST
def twin_sync(request: HttpRequest, pk: int) -> HttpResponse:
    """Sync now: send the item's current state again."""
    twin = get_object_or_404(Twin.objects.select_related("connection"), pk=pk)
    try:
        pipeline.exalate(connection=twin.connection, key=twin.local_key)
    except pipeline.OperationError as exc:
        messages.error(request, str(exc))
    except TRACKER_FAILURES as exc:
        messages.error(request, _tracker_message(twin.connection, exc))
    else:
        messages.success(
            request, f"{twin.local_key}: its current state is queued on “{twin.connection.name}”."
        )
    return _back(request, reverse("ui:dashboard"))


@staff_member_required
@require_POST
def twin_unexalate(request: HttpRequest, pk: int) -> HttpResponse:
    """Stop syncing the item on this connection; both items stay."""
    twin = get_object_or_404(Twin.objects.select_related("connection"), pk=pk)
    pipeline.unexalate(twin=twin)
    messages.success(
        request,
        f"{twin.local_key} is no longer synced on “{twin.connection.name}”; both items stay. "
        "Use Sync now to start again.",
    )
    return _back(request, reverse("ui:dashboard"))


# --- sync queue ---------------------------------------------------------------------------------------------


@staff_member_required
@require_GET
def queue(request: HttpRequest) -> HttpResponse:
    """Outgoing and incoming sync events, newest first, filtered and paginated."""
    direction = request.GET.get("direction", SyncEvent.Direction.OUTGOING)
    if direction not in SyncEvent.Direction.values:
        direction = SyncEvent.Direction.OUTGOING
    form = forms.QueueFilterForm(request.GET)
    events = SyncEvent.objects.select_related("connection", "connection__local_instance", "twin").order_by(
        "-id"
    )
    if form.is_valid():
        data = form.cleaned_data
        if data["connection"]:
            events = events.filter(connection=data["connection"])
        if data["status"]:
            events = events.filter(status=data["status"])
        if data["key"]:
            events = events.filter(item_key__iexact=data["key"].strip())
    counts = events.aggregate(
        out=Count("id", filter=Q(direction=SyncEvent.Direction.OUTGOING)),
        inc=Count("id", filter=Q(direction=SyncEvent.Direction.INCOMING)),
    )
    page = Paginator(events.filter(direction=direction), PAGE_SIZE).get_page(request.GET.get("page"))
    context = {"title": "Sync queue", "form": form, "direction": direction, "page": page, "counts": counts}
    return _page(request, "ui/queue.html", context)


# --- activity charts ----------------------------------------------------------------------------------------


def _activity_filters(request: HttpRequest) -> tuple[str, Connection | None]:
    """The range (hour, day, week; default hour) and the connection (default: the whole node) asked for;
    anything unknown is the default."""
    from exalate_node.ui.activity import RANGES

    range_name = request.GET.get("range", "hour")
    if range_name not in RANGES:
        range_name = "hour"
    raw = request.GET.get("connection", "")
    connection = Connection.objects.filter(pk=int(raw)).first() if raw.isdigit() and len(raw) < 12 else None
    return range_name, connection


@staff_member_required
@require_GET
def activity(request: HttpRequest) -> HttpResponse:
    """Charts of sync activity: events, failures and latency, for the node or one connection."""
    range_name, connection = _activity_filters(request)
    context = {
        "title": "Activity",
        "range": range_name,
        "connection": connection,
        "connections": Connection.objects.order_by("name", "id"),
        "ranges": [("hour", "Last hour"), ("day", "Last day"), ("week", "Last week")],
    }
    return _page(request, "ui/activity.html", context)


@staff_member_required
@require_GET
def activity_data(request: HttpRequest) -> JsonResponse:
    """The charts' series (``exalate_node.ui.activity.activity_series``), after rolling up new events."""
    from exalate_node.ui.activity import activity_rollup, activity_series

    range_name, connection = _activity_filters(request)
    activity_rollup()
    series = activity_series(range_name=range_name, connection_id=connection.pk if connection else None)
    return JsonResponse(series)


# --- errors -------------------------------------------------------------------------------------------------


@staff_member_required
@require_GET
def error_list(request: HttpRequest) -> HttpResponse:
    """Errors grouped by impact (entity, connection, node, trigger); open ones by default."""
    show = request.GET.get("show", "open")
    errors = SyncError.objects.select_related("connection", "connection__local_instance", "twin", "event")
    if show == "open":
        errors = errors.filter(resolved_at__isnull=True)
    elif show == "resolved":
        errors = errors.filter(resolved_at__isnull=False)
    groups = []
    for impact, label in SyncError.Impact.choices:
        rows = list(errors.filter(impact=impact).order_by("-id")[:100])
        groups.append({"impact": impact, "label": label, "errors": rows})
    context = {
        "title": "Errors",
        "show": show,
        "groups": groups,
        "total": sum(len(g["errors"]) for g in groups),
        "alert_destinations": sorted(d.describe() for d in alerts.routes()),
    }
    return _page(request, "ui/errors.html", context)


@staff_member_required
@require_POST
def alerts_test(request: HttpRequest) -> HttpResponse:
    """Send a test alert to every destination now, and say which got it."""
    results = alerts.send_test()
    if not results:
        messages.warning(
            request,
            "No alert destination is set: set ALERT_EMAILS or ALERT_WEBHOOK_URL on the node (see "
            "docs/deployment.md), or a connection's alerts.",
        )
    for destination, outcome in results:
        if outcome == "sent":
            messages.success(request, f"Test alert sent: {destination}.")
        else:
            messages.error(
                request, f"Test alert to {destination} {outcome}. Check the address and the server."
            )
    return _back(request, reverse("ui:errors"))


@staff_member_required
@require_POST
def error_resolve(request: HttpRequest, pk: int) -> HttpResponse:
    """Resolve without retry: a failed event is skipped and its item goes on with the next change."""
    error = get_object_or_404(SyncError, pk=pk)
    pipeline.error_resolve(error=error, retry=False)
    messages.success(request, "Resolved. The failed change was skipped; later changes of the item go on.")
    return _back(request, reverse("ui:errors"))


@staff_member_required
@require_POST
def error_retry(request: HttpRequest, pk: int) -> HttpResponse:
    """Resolve and retry: the blocked event (or held connection) goes again."""
    error = get_object_or_404(SyncError, pk=pk)
    pipeline.error_resolve(error=error, retry=True)
    again = SyncError.objects.filter(resolved_at__isnull=True, pk__gt=error.pk)
    if error.twin_id:
        again = again.filter(twin_id=error.twin_id)
    elif error.connection_id:
        again = again.filter(connection_id=error.connection_id)
    if again.exists():
        messages.warning(request, "Retried, but it failed again; the new error is listed below.")
    else:
        messages.success(request, "Resolved and retried: the change is on its way again.")
    return _back(request, reverse("ui:errors"))


# --- rules editor -------------------------------------------------------------------------------------------


@staff_member_required
@require_http_methods(["GET", "POST"])
def rules_edit(request: HttpRequest, pk: int) -> HttpResponse:
    """Edit this side's scripts: validate, dry-run against an item, publish; the version history."""
    connection = get_object_or_404(
        Connection.objects.select_related("local_instance", "remote_instance"), pk=pk
    )
    current = rules.rules_current(connection)
    form = forms.RulesForm(
        request.POST or None, initial={"outgoing": current.outgoing, "incoming": current.incoming}
    )
    problems: list[dict[str, Any]] | None = None
    dry_run: dict[str, Any] | None = None
    action = request.POST.get("action", "")
    if request.method == "POST" and form.is_valid():
        data = form.cleaned_data
        if action == "publish":
            try:
                version = rules.rules_publish(
                    connection=connection,
                    outgoing=data["outgoing"],
                    incoming=data["incoming"],
                    note=data["note"],
                    published_by=request.user.get_username(),
                )
            except rules.RulesInvalid as exc:
                problems = exc.problems
                form.add_error(None, f"Not published. {exc} Fix it and publish again.")
            else:
                messages.success(
                    request,
                    f"Published version {version.version}. New changes run with it; "
                    "retry failed events on the Errors page.",
                )
                return redirect("ui:rules", pk=pk)
        elif action == "validate":
            problems = rules.rules_validate(outgoing=data["outgoing"], incoming=data["incoming"])
        elif action == "dryrun":
            dry_run = _dry_run(connection, form)
    return _rules_page(request, connection, current, form, problems=problems, dry_run=dry_run, action=action)


def _rules_page(
    request: HttpRequest,
    connection: Connection,
    current: RulesVersion,
    form: forms.RulesForm,
    *,
    problems: list[dict[str, Any]] | None = None,
    dry_run: dict[str, Any] | None = None,
    action: str = "",
) -> HttpResponse:
    versions = list(RulesVersion.objects.filter(connection=connection).order_by("-version")[:50])
    context = {
        "title": f"Sync rules: {connection.name}",
        "connection": connection,
        "current": current,
        "form": form,
        "problems": problems,
        "problem_lines": _problem_lines(problems or []),
        "dry_run": dry_run,
        "versions": versions,
        "version_diff": _version_diff(connection, request.GET.get("diff")),
        "action": action,
    }
    return _page(request, "ui/rules.html", context)


@staff_member_required
@require_http_methods(["GET", "POST"])
def rules_mapping(request: HttpRequest, pk: int) -> HttpResponse:
    """Visual mapping: pick fields; POST writes the generated scripts into the rules editor, unpublished."""
    from exalate_node.ui.mapping import generate_scripts

    connection = get_object_or_404(
        Connection.objects.select_related("local_instance", "remote_instance"), pk=pk
    )
    form = forms.MappingForm(request.POST or None)
    if request.method == "POST" and form.is_valid():
        outgoing, incoming = generate_scripts(form.cleaned_data)
        rules_form = forms.RulesForm(
            initial={"outgoing": outgoing, "incoming": incoming, "note": "From the visual mapping"}
        )
        messages.info(
            request,
            "Scripts generated from the visual mapping; nothing is published yet. "
            "Review or edit them, dry-run, then publish.",
        )
        problems = rules.rules_validate(outgoing=outgoing, incoming=incoming)
        return _rules_page(
            request,
            connection,
            rules.rules_current(connection),
            rules_form,
            problems=problems,
            action="validate",
        )
    context = {"title": f"Visual mapping: {connection.name}", "connection": connection, "form": form}
    return _page(request, "ui/mapping.html", context, status=400 if form.errors else 200)


def _problem_lines(problems: list[dict[str, Any]]) -> dict[str, str]:
    """Line numbers with problems per script, for the editor's gutter (comma-separated)."""
    lines: dict[str, set[int]] = {"outgoing": set(), "incoming": set()}
    for p in problems:
        if p.get("line") and p.get("direction") in lines:
            lines[p["direction"]].add(int(p["line"]))
    return {d: ",".join(str(n) for n in sorted(ns)) for d, ns in lines.items()}


def _dry_run(connection: Connection, form: forms.RulesForm) -> dict[str, Any] | None:
    """Run the edited script (not the published one) on a real item; writes nothing."""
    from syncrules.engine import ScriptError

    data = form.cleaned_data
    key, direction = data["dry_key"].strip(), data["dry_direction"] or "outgoing"
    if not key and direction == "outgoing":
        form.add_error("dry_key", "Enter the key of a local item to run the outgoing script on, e.g. SUP-1.")
        return None
    try:
        if direction == "outgoing":
            result = dryrun.dry_run_outgoing(connection=connection, key=key, outgoing=data["outgoing"])
            if _unencodable_result(form, result):
                return None
            return {
                "direction": direction,
                "key": key,
                **result,
                "replica_pretty": _pretty(result["replica"]),
            }
        replica = _dry_run_replica(connection, key, data["dry_replica"], form)
        if replica is None:
            return None
        result = dryrun.dry_run_incoming(
            connection=connection, replica=replica, key=key or None, incoming=data["incoming"]
        )
        if _unencodable_result(form, result):
            return None
        changes = [
            {"field": f, "before": _pretty(c["from"]), "after": _pretty(c["to"])}
            for f, c in result["changes"].items()
        ]
        return {"direction": direction, "key": key, **result, "change_rows": changes}
    except ScriptError as exc:
        form.add_error(None, f"The dry-run stopped: {exc}")
    except TRACKER_FAILURES as exc:
        form.add_error("dry_key", _tracker_message(connection, exc))
    except (pipeline.OperationError, ValueError) as exc:
        form.add_error("dry_key", str(exc))
    return None


def _unencodable_result(form: forms.RulesForm, result: Any) -> bool:
    """Whether the script's result holds text that cannot be shown (``chr(55296)``); says so on the form."""
    where = unencodable_path(result)
    if where is not None:
        form.add_error(None, f"The dry-run stopped: {unencodable_message(where, 'The script’s result')}")
    return where is not None


def _dry_run_replica(
    connection: Connection, key: str, pasted: str, form: forms.RulesForm
) -> dict[str, Any] | None:
    if pasted.strip():
        try:
            replica = load_json(pasted, what="The replica")
        except JSONRefused as exc:
            form.add_error("dry_replica", f"{exc.message} Paste a JSON object.")
            return None
        if not isinstance(replica, dict):
            form.add_error("dry_replica", 'The replica must be a JSON object, like {"summary": "…"}.')
            return None
        return replica
    twin = (
        Twin.objects.filter(connection=connection, local_key__iexact=key).exclude(remote_replica=None).first()
    )
    if twin is None:
        form.add_error(
            "dry_key",
            f"{key or 'This item'} has not received anything on this connection yet; "
            "paste a replica to apply instead.",
        )
        return None
    return twin.remote_replica


def _version_diff(connection: Connection, requested: str | None) -> dict[str, Any] | None:
    """The diff between version N and the one before it (``?diff=N``)."""
    if not requested or not requested.isdigit():
        return None
    newer = RulesVersion.objects.filter(connection=connection, version=int(requested)).first()
    if newer is None:
        return None
    older = (
        RulesVersion.objects.filter(connection=connection, version__lt=newer.version)
        .order_by("-version")
        .first()
    )
    name = f"v{older.version}" if older else "(nothing)"
    return {
        "newer": newer,
        "older": older,
        "outgoing": _diff(older.outgoing if older else "", newer.outgoing, name, f"v{newer.version}"),
        "incoming": _diff(older.incoming if older else "", newer.incoming, name, f"v{newer.version}"),
    }


# --- built-in tracker ---------------------------------------------------------------------------------------


@staff_member_required
@require_http_methods(["GET", "POST"])
def tracker_list(request: HttpRequest) -> HttpResponse:
    """Issues of the built-in tracker, filtered by project and text; POST creates a project."""
    project_form = forms.ProjectForm(request.POST or None)
    if request.method == "POST" and project_form.is_valid():
        data = project_form.cleaned_data
        try:
            project = tracker.project_create(instance=data["instance"], key=data["key"], name=data["name"])
        except ValidationError as exc:
            forms.add_service_error(project_form, exc)
        else:
            messages.success(request, f"Project {project.key} created. Create its first issue.")
            return redirect(reverse("ui:tracker") + f"?project={project.key}")
    projects = Project.objects.select_related("instance").annotate(issue_count=Count("issues"))
    issues = Issue.objects.select_related("project", "project__instance").order_by("-updated_at")
    project_key = request.GET.get("project", "")
    selected = next((p for p in projects if p.key == project_key), None)
    if selected:
        issues = issues.filter(project=selected)
    q = request.GET.get("q", "").strip()
    if q:
        issues = issues.filter(Q(key__iexact=q) | Q(summary__icontains=q))
    context = {
        "title": "Built-in tracker",
        "projects": projects,
        "selected": selected,
        "q": q,
        "issues": Paginator(issues, PAGE_SIZE).get_page(request.GET.get("page")),
        "project_form": project_form,
    }
    return _page(request, "ui/tracker/list.html", context, status=400 if project_form.errors else 200)


@staff_member_required
@require_http_methods(["GET", "POST"])
def tracker_issue_create(request: HttpRequest) -> HttpResponse:
    """Create an issue in a project (``?project=KEY``); without a known project, a page to choose one."""
    wanted = (request.GET.get("project") or request.POST.get("project") or "").strip()
    project = Project.objects.filter(key=wanted).first() if wanted else None
    if project is None:
        context = {
            "title": "New issue: choose a project",
            "wanted": wanted,
            "projects": Project.objects.select_related("instance").order_by("key"),
        }
        return _page(request, "ui/tracker/choose_project.html", context, status=404 if wanted else 200)
    form = forms.IssueForm(request.POST or None, project=project)
    if request.method == "POST" and form.is_valid():
        try:
            issue = tracker.issue_create(project=project, actor=_actor(request), **form.cleaned_data)
        except ValidationError as exc:
            forms.add_service_error(form, exc)
        else:
            messages.success(request, f"{issue.key} created.")
            return redirect("ui:issue", key=issue.key)
    context = {"title": f"New issue in {project.key}", "project": project, "form": form}
    return _page(request, "ui/tracker/create.html", context, status=400 if form.errors else 200)


@staff_member_required
@require_http_methods(["GET", "POST"])
def tracker_issue(request: HttpRequest, key: str) -> HttpResponse:
    """An issue: edit its fields (POST), its comments, attachments, history and where it is synced."""
    issue = get_object_or_404(Issue.objects.select_related("project", "project__instance"), key=key.upper())
    form = forms.IssueForm(
        request.POST or None, project=issue.project, initial=forms.IssueForm.initial_for(issue)
    )
    if request.method == "POST" and form.is_valid():
        try:
            updated = tracker.issue_update(issue=issue, actor=_actor(request), **form.cleaned_data)
        except ValidationError as exc:
            forms.add_service_error(form, exc)
        else:
            changed = updated.version != issue.version
            messages.success(request, f"{issue.key} saved." if changed else "Nothing changed.")
            return redirect("ui:issue", key=issue.key)
    return _issue_page(request, issue, form=form)


@staff_member_required
@require_GET
def tracker_issue_by_id(request: HttpRequest, pk: int) -> HttpResponse:
    """The link an item carries (``BuiltinConnector.url_for``): by id, which stays when a key changes."""
    issue = get_object_or_404(Issue.objects.only("key"), pk=pk)
    return redirect("ui:issue", key=issue.key)


NODE_ACTOR = "exalate-node:"  # replicas.pipeline.actor_for: the name the node writes under per connection


def _people(actors: set[str]) -> dict[str, str]:
    """What a page calls who made a change: the node's own account (``exalate-node:<connection uid>``)
    becomes the sync it made it for ("Sync from Engineering via “Support ⇄ Engineering”"); people stay."""
    import uuid

    uids = {}
    for actor in actors:
        if actor.startswith(NODE_ACTOR):
            try:
                uids[actor] = uuid.UUID(actor[len(NODE_ACTOR) :])
            except ValueError:
                continue
    found = Connection.objects.filter(uid__in=uids.values()).select_related("remote_instance")
    by_uid = {c.uid: c for c in found}
    labels = {}
    for actor, uid in uids.items():
        conn = by_uid.get(uid)
        if conn is None:
            labels[actor] = "Sync (a connection since deleted)"
        elif conn.remote_instance is not None:
            labels[actor] = f"Sync from {conn.remote_instance.name} via “{conn.name}”"
        else:
            labels[actor] = f"Sync via “{conn.name}”"
    return labels


def _issue_page(request: HttpRequest, issue: Issue, **forms_: Any) -> HttpResponse:
    instance = issue.project.instance
    comments, changes = list(issue.comments.all()), list(issue.changes.all()[:20])
    people = _people({issue.updated_by, *(c.author for c in comments), *(ch.actor for ch in changes)} - {""})
    issue.updated_by_label = people.get(issue.updated_by, issue.updated_by)  # type: ignore[attr-defined]
    people.update(_people({c.updated_by for c in comments} - {""}))
    for comment in comments:
        label = people.get(comment.author, comment.author)
        via = people.get(comment.updated_by) if comment.updated_by != comment.author else None
        if via and comment.updated_by.startswith(NODE_ACTOR):
            # A person's comment the sync wrote here: who wrote it, and through which connection.
            label = f"{label} · {via[0].lower()}{via[1:]}"
        comment.author_label = label  # type: ignore[attr-defined]
    for change in changes:
        change.actor_label = people.get(change.actor, change.actor)  # type: ignore[attr-defined]
    context = {
        "title": f"{issue.key}: {issue.summary}",
        "issue": issue,
        "form": forms_.get("form")
        or forms.IssueForm(project=issue.project, initial=forms.IssueForm.initial_for(issue)),
        "comment_form": forms_.get("comment_form") or forms.CommentForm(),
        "attachment_form": forms_.get("attachment_form") or forms.AttachmentForm(),
        "comments": comments,
        "attachments": issue.attachments.all(),
        "changes": changes,
        "twins": Twin.objects.filter(
            connection__local_instance=instance, local_id=str(issue.pk)
        ).select_related("connection"),
        "exalate_connections": Connection.objects.filter(
            local_instance=instance, status__in=[Connection.Status.ACTIVE, Connection.Status.DEACTIVATED]
        ),
    }
    status = 400 if any(f.errors for f in forms_.values()) else 200
    return _page(request, "ui/tracker/issue.html", context, status=status)


@staff_member_required
@require_POST
def tracker_comment(request: HttpRequest, key: str) -> HttpResponse:
    issue = get_object_or_404(Issue.objects.select_related("project", "project__instance"), key=key.upper())
    form = forms.CommentForm(request.POST)
    if form.is_valid():
        try:
            tracker.comment_add(issue=issue, actor=_actor(request), **form.cleaned_data)
        except ValidationError as exc:
            forms.add_service_error(form, exc)
        else:
            messages.success(request, "Comment added.")
            return redirect("ui:issue", key=issue.key)
    return _issue_page(request, issue, comment_form=form)


@staff_member_required
@require_POST
def tracker_attach(request: HttpRequest, key: str) -> HttpResponse:
    issue = get_object_or_404(Issue.objects.select_related("project", "project__instance"), key=key.upper())
    form = forms.AttachmentForm(request.POST, request.FILES)
    if form.is_valid():
        upload = form.cleaned_data["file"]
        try:
            attachment = tracker.attachment_add(
                issue=issue,
                actor=_actor(request),
                filename=upload.name,
                content=upload,
                mime_type=upload.content_type or "",
            )
        except ValidationError as exc:
            forms.add_service_error(form, exc)
        else:
            messages.success(request, f"{attachment.filename} attached.")
            return redirect("ui:issue", key=issue.key)
    return _issue_page(request, issue, attachment_form=form)


@staff_member_required
@require_GET
def tracker_attachment(request: HttpRequest, pk: int) -> FileResponse:
    """Download an attachment (as a file, never rendered inline)."""
    attachment = get_object_or_404(Attachment, pk=pk)
    return FileResponse(
        attachment.file.open("rb"),
        as_attachment=True,
        filename=attachment.filename,
        content_type=attachment.mime_type,
    )


# --- triggers, bulk operations, reconciliation, items of a connection ---------------------------------------

ACTIVE_JOB = (BulkJob.Status.QUEUED, BulkJob.Status.RUNNING)


def _ops_connection(pk: int) -> Connection:
    return get_object_or_404(
        Connection.objects.select_related("local_instance", "remote_instance", "peer"), pk=pk
    )


def _ops_page(
    request: HttpRequest, connection: Connection, tab: str, template: str, context: dict[str, Any], **kw: Any
) -> HttpResponse:
    titles = {
        "triggers": "Triggers",
        "bulk": "Bulk operations",
        "reconcile": "Reconciliation",
        "items": "Items",
    }
    ctx = {"title": f"{titles[tab]}: {connection.name}", "connection": connection, "tab": tab, **context}
    return _page(request, template, ctx, **kw)


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return ""
    if seconds < 1:
        return "under a second"
    seconds = int(seconds)
    if seconds < 60:
        return f"{seconds} s"
    if seconds < 3600:
        return f"{seconds // 60} min {seconds % 60} s"
    return f"{seconds // 3600} h {seconds % 3600 // 60} min"


def _progress(job: BulkJob) -> dict[str, Any]:
    """bulk.progress plus what the template shows: labels, time left in words, whether it can be cancelled."""
    data = bulk.progress(job)
    data["kind_label"] = job.get_kind_display()
    data["status_label"] = job.get_status_display()
    data["left"] = _duration(data["seconds_left"])
    took = (job.finished_at - job.started_at).total_seconds() if job.finished_at and job.started_at else None
    data["took"] = _duration(took)
    data["active"] = job.status in ACTIVE_JOB
    data["created_by"] = job.created_by
    data["trigger"] = str(job.trigger) if job.trigger_id else ""
    return data


@staff_member_required
@require_http_methods(["GET", "POST"])
def trigger_list(request: HttpRequest, pk: int) -> HttpResponse:
    """The connection's triggers; the form adds one (the tracker checks the query)."""
    connection = _ops_connection(pk)
    form = forms.TriggerForm(request.POST or None, tracker_type=connection.local_instance.tracker_type)
    if request.method == "POST" and form.is_valid():
        try:
            trigger = triggers.trigger_create(
                connection=connection,
                query=form.cleaned_data["query"],
                entity_type=form.cleaned_data["entity_type"],
                notes=form.cleaned_data["notes"],
            )
        except ConnectorError as exc:
            form.add_error("query", exc.message)
        else:
            if not form.cleaned_data["active"]:
                triggers.trigger_update(trigger=trigger, active=False)
            messages.success(
                request,
                f"Trigger #{trigger.pk} added: new and changed items matching “{trigger.query}” start "
                "syncing. Use Bulk Exalate to sync the items that match already.",
            )
            return redirect("ui:triggers", pk=pk)
    context = {"triggers": Trigger.objects.filter(connection=connection).order_by("id"), "form": form}
    return _ops_page(
        request, connection, "triggers", "ui/ops/triggers.html", context, status=400 if form.errors else 200
    )


def _trigger(pk: int, trigger_id: int) -> Trigger:
    return get_object_or_404(
        Trigger.objects.select_related("connection", "connection__local_instance"),
        pk=trigger_id,
        connection_id=pk,
    )


@staff_member_required
@require_http_methods(["GET", "POST"])
def trigger_edit(request: HttpRequest, pk: int, trigger_id: int) -> HttpResponse:
    trigger = _trigger(pk, trigger_id)
    initial = {f: getattr(trigger, f) for f in ("entity_type", "query", "notes", "active")}
    form = forms.TriggerForm(
        request.POST or None, initial=initial, tracker_type=trigger.connection.local_instance.tracker_type
    )
    if request.method == "POST" and form.is_valid():
        try:
            triggers.trigger_update(trigger=trigger, **form.cleaned_data)
        except ConnectorError as exc:
            form.add_error("query", exc.message)
        else:
            messages.success(request, f"Trigger #{trigger.pk} saved.")
            return redirect("ui:triggers", pk=pk)
    context = {"trigger": trigger, "form": form}
    return _ops_page(
        request,
        trigger.connection,
        "triggers",
        "ui/ops/trigger_edit.html",
        context,
        status=400 if form.errors else 200,
    )


@staff_member_required
@require_POST
def trigger_toggle(request: HttpRequest, pk: int, trigger_id: int) -> HttpResponse:
    trigger = _trigger(pk, trigger_id)
    triggers.trigger_update(trigger=trigger, active=not trigger.active)
    state = "active: matching items start syncing" if trigger.active else "inactive: changes are ignored"
    messages.success(request, f"Trigger #{trigger.pk} is {state}.")
    return redirect("ui:triggers", pk=pk)


@staff_member_required
@require_http_methods(["GET", "POST"])
def trigger_delete(request: HttpRequest, pk: int, trigger_id: int) -> HttpResponse:
    """GET asks for confirmation; POST deletes the trigger (items already in sync stay in sync)."""
    trigger = _trigger(pk, trigger_id)
    if request.method == "POST":
        trigger.delete()
        messages.success(request, f"Trigger #{trigger_id} was deleted. Items already in sync stay in sync.")
        return redirect("ui:triggers", pk=pk)
    return _ops_page(
        request, trigger.connection, "triggers", "ui/ops/trigger_delete.html", {"trigger": trigger}
    )


def _bulk_page(
    request: HttpRequest,
    connection: Connection,
    exalate_form: forms.BulkExalateForm | None = None,
    connect_form: forms.BulkConnectForm | None = None,
    status: int = 200,
) -> HttpResponse:
    jobs = BulkJob.objects.filter(connection=connection).select_related("trigger").order_by("-id")[:20]
    context = {
        "jobs": [_progress(j) for j in jobs],
        "exalate_form": exalate_form or forms.BulkExalateForm(connection=connection),
        "connect_form": connect_form or forms.BulkConnectForm(),
        "under_sync": selectors.twins_under_sync(connection_id=connection.pk).count(),
    }
    context["polling"] = any(j["active"] for j in context["jobs"])
    return _ops_page(request, connection, "bulk", "ui/ops/bulk.html", context, status=status)


def _bulk_start(request: HttpRequest, connection: Connection, **kwargs: Any) -> str | None:
    """Start a job; a message either way. Returns the error, if any."""
    try:
        job = bulk.bulk_start(connection=connection, user=_actor(request), **kwargs)
    except (bulk.BulkError, ConnectorError) as exc:
        return str(exc)
    messages.success(
        request, f"{job.get_kind_display()} started: {job.total} item{pluralize(job.total)} (job #{job.pk})."
    )
    return None


@staff_member_required
@require_http_methods(["GET", "POST"])
def bulk_page(request: HttpRequest, pk: int) -> HttpResponse:
    """Bulk Exalate / Bulk Connect forms and the jobs with their progress. POST ``kind`` starts a job."""
    connection = _ops_connection(pk)
    if request.method == "GET":
        return _bulk_page(request, connection)
    kind = request.POST.get("kind")
    if kind == BulkJob.Kind.EXALATE:
        exalate_form = forms.BulkExalateForm(request.POST, connection=connection)
        if exalate_form.is_valid():
            error = _bulk_start(request, connection, kind=kind, trigger=exalate_form.cleaned_data["trigger"])
            if error is None:
                return redirect("ui:bulk", pk=pk)
            exalate_form.add_error(None, error)
        return _bulk_page(request, connection, exalate_form=exalate_form, status=400)
    if kind == BulkJob.Kind.CONNECT:
        connect_form = forms.BulkConnectForm(request.POST, request.FILES)
        if connect_form.is_valid():
            error = _bulk_start(request, connection, kind=kind, pairs_csv=connect_form.cleaned_data["pairs"])
            if error is None:
                return redirect("ui:bulk", pk=pk)
            connect_form.add_error(None, error)
        return _bulk_page(request, connection, connect_form=connect_form, status=400)
    messages.error(request, "Choose Bulk Exalate or Bulk Connect.")
    return redirect("ui:bulk", pk=pk)


@staff_member_required
@require_http_methods(["GET", "POST"])
def bulk_unexalate(request: HttpRequest, pk: int) -> HttpResponse:
    """GET asks for confirmation; POST stops syncing every item of the connection (in the background)."""
    connection = _ops_connection(pk)
    if request.method == "POST":
        error = _bulk_start(request, connection, kind=BulkJob.Kind.UNEXALATE)
        if error:
            messages.error(request, error)
        return redirect("ui:bulk", pk=pk)
    context = {"under_sync": selectors.twins_under_sync(connection_id=connection.pk).count()}
    return _ops_page(request, connection, "bulk", "ui/ops/bulk_unexalate.html", context)


@staff_member_required
@require_POST
def bulk_cancel(request: HttpRequest, pk: int, job_id: int) -> HttpResponse:
    job = get_object_or_404(BulkJob, pk=job_id, connection_id=pk)
    if job.status in ACTIVE_JOB:
        bulk.bulk_cancel(job=job)
        job.refresh_from_db()
        messages.success(request, f"Job #{job.pk} cancelled after {job.position} of {job.total} items.")
    else:
        messages.info(request, f"Job #{job.pk} is {job.get_status_display().lower()} already.")
    return redirect("ui:bulk", pk=pk)


@staff_member_required
@require_GET
def bulk_progress(request: HttpRequest, pk: int) -> JsonResponse:
    """The progress of the connection's latest jobs, for the progress bars' refresh."""
    connection = _ops_connection(pk)
    jobs = BulkJob.objects.filter(connection=connection).select_related("trigger").order_by("-id")[:20]
    return JsonResponse({"jobs": [_progress(j) for j in jobs]})


@staff_member_required
@require_http_methods(["GET", "POST"])
def reconcile_page(request: HttpRequest, pk: int) -> HttpResponse:
    """The latest reconciliation reports; POST scans the connection now (drift is repaired)."""
    connection = _ops_connection(pk)
    if request.method == "POST":
        try:
            report = reconcile.reconcile(connection=connection)
        except ConnectorError as exc:
            messages.error(request, f"Reconciliation failed: {exc}")
        else:
            messages.success(
                request,
                f"Checked {report.checked} item{pluralize(report.checked)}: {report.drifted} drifted "
                f"({report.repaired} repaired), {report.missing} missing.",
            )
        return redirect("ui:reconcile", pk=pk)
    reports = ReconciliationReport.objects.filter(connection=connection).order_by("-id")[:10]
    return _ops_page(request, connection, "reconcile", "ui/ops/reconcile.html", {"reports": reports})


@staff_member_required
@require_GET
def connection_items(request: HttpRequest, pk: int) -> HttpResponse:
    """Items under sync, and the stuck ones (not synchronized for more than N minutes)."""
    connection = _ops_connection(pk)
    form = forms.StuckForm(request.GET if "minutes" in request.GET else None)
    minutes = form.cleaned_data["minutes"] if form.is_bound and form.is_valid() else 30
    under_sync = Paginator(selectors.twins_under_sync(connection_id=connection.pk), PAGE_SIZE)
    stuck = selectors.twins_stuck(connection_id=connection.pk, minutes=minutes)
    context = {
        "form": form,
        "minutes": minutes,
        "twins": under_sync.get_page(request.GET.get("page")),
        "stuck": stuck[:200],
        "stuck_count": stuck.count(),
    }
    return _ops_page(
        request, connection, "items", "ui/ops/items.html", context, status=400 if form.errors else 200
    )
