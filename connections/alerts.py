"""Alerts: errors an admin must see, announced by e-mail and by an outgoing webhook, as digests.

Where: each connection's own ``alert_emails`` / ``alert_webhook_url``, else the node's ``ALERT_EMAILS`` /
``ALERT_WEBHOOK_URL`` (errors of no connection go there too). What: the errors opened since the last
message to that destination, and those cleared (resolved) since. When: ``send_due`` runs in the sweeper's
loop (every 2 s); a destination gets a message once its oldest news is ``ALERT_GATHER_SECONDS`` old (a burst
is gathered into one message) and at most one message per ``ALERT_DIGEST_SECONDS``: 1,000 failing items make
one message, not 1,000.

Nothing is lost or sent twice: a destination's cursor (``AlertCursor``) advances only after its message was
sent; a failed send is tried again after the digest interval, with everything that came meanwhile. Several
sweepers (hosts) claim a destination's turn with a compare-and-set on the cursor, so one of them sends.

The webhook posts JSON with a ``text`` field, which Slack- and Teams-style incoming webhooks show as the
message, and the details under ``exalate``. With ``ALERT_WEBHOOK_SECRET`` set it is signed:
``X-Exalate-Signature: sha256=<hex HMAC-SHA256 of "<X-Exalate-Timestamp>.<body>">``.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import time
from collections import defaultdict
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from django.conf import settings
from django.core.mail import EmailMessage
from django.core.validators import validate_email
from django.db.models import Max, Min, Q
from django.utils import timezone

from connections.models import AlertCursor, Connection
from exalate_node import outbound
from exalate_node.redaction import redact, registry
from replicas.models import SyncError

logger = logging.getLogger(__name__)

SHOWN = 10  # errors listed by name in one message; the rest are counted
EPOCH = datetime(2000, 1, 1, tzinfo=UTC)


@dataclass(frozen=True)
class Destination:
    kind: str  # "email" or "webhook"
    target: str  # the addresses (comma-separated, sorted) or the URL

    @property
    def key(self) -> str:
        # A webhook URL is a credential: the cursor is keyed by its digest, never the URL itself.
        if self.kind == "webhook":
            return "webhook:" + hashlib.sha256(self.target.encode()).hexdigest()
        return f"email:{self.target}"[:600]

    def describe(self) -> str:
        return f"e-mail to {self.target}" if self.kind == "email" else "the alert webhook"


def parse_emails(text: str) -> list[str]:
    """The addresses in a comma-separated list; ``ValueError`` naming the first invalid one."""
    found = []
    for part in (text or "").replace(";", ",").split(","):
        address = part.strip()
        if not address:
            continue
        try:
            validate_email(address)
        except Exception:  # noqa: BLE001 - Django's ValidationError, restated for a person
            raise ValueError(f"{address!r} is not an e-mail address.") from None
        found.append(address)
    return sorted(set(found))


def check_webhook_url(url: str) -> str:
    """``url`` if it can be an incoming webhook (http or https, no credentials in it); else ``ValueError``."""
    url = (url or "").strip()
    if url:
        try:
            outbound.check_url(url, what="The alert webhook URL", userinfo=False)
        except outbound.OutboundError as exc:
            raise ValueError(str(exc)) from None
    return url


def routes() -> dict[Destination, Q]:
    """Each destination, and which errors it announces."""
    default_emails = list(settings.ALERT_EMAILS)
    default_hook = settings.ALERT_WEBHOOK_URL
    scopes: dict[Destination, set[int]] = defaultdict(set)
    defaults: set[Destination] = set()
    if default_emails:
        defaults.add(Destination("email", ",".join(sorted(default_emails))))
    if default_hook:
        defaults.add(Destination("webhook", default_hook))
    for conn in Connection.objects.only("pk", "alert_emails", "alert_webhook_url"):
        try:
            emails = parse_emails(conn.alert_emails) or default_emails
        except ValueError:
            emails = default_emails  # refused when set; an old bad value falls back to the node's
        if emails:
            scopes[Destination("email", ",".join(sorted(emails)))].add(conn.pk)
        hook = conn.alert_webhook_url or default_hook
        if hook:
            scopes[Destination("webhook", hook)].add(conn.pk)
    result: dict[Destination, Q] = {}
    for dest in set(scopes) | defaults:
        scope = Q(connection_id__in=sorted(scopes.get(dest, set())))
        if dest in defaults:
            scope |= Q(connection__isnull=True)
        result[dest] = scope
    return result


@dataclass
class Digest:
    opened: list[SyncError]
    opened_count: int
    cleared: list[SyncError]
    cleared_count: int

    def subject(self) -> str:
        parts = []
        if self.opened_count:
            parts.append(f"{self.opened_count} new sync error{'s' if self.opened_count != 1 else ''}")
        if self.cleared_count:
            parts.append(f"{self.cleared_count} cleared")
        return f"[exalate-node {settings.NODE_NAME}] " + ", ".join(parts)

    def text(self) -> str:
        lines = [self.subject(), ""]
        for title, shown, count in (
            ("New", self.opened, self.opened_count),
            ("Cleared", self.cleared, self.cleared_count),
        ):
            if not count:
                continue
            lines.append(f"{title}:")
            lines += [f"- {_line(error)}" for error in shown]
            if count > len(shown):
                lines.append(f"- ... and {count - len(shown)} more")
            lines.append("")
        lines.append(f"See and retry them: {settings.NODE_URL}/ui/errors/")
        return "\n".join(lines)

    def payload(self) -> dict[str, Any]:
        return {
            "text": self.text(),
            "exalate": {
                "node": settings.NODE_NAME,
                "opened": self.opened_count,
                "cleared": self.cleared_count,
                "errors": [_entry(e, "opened") for e in self.opened]
                + [_entry(e, "cleared") for e in self.cleared],
                "url": f"{settings.NODE_URL}/ui/errors/",
            },
        }


def _item(error: SyncError) -> str:
    twin = error.twin
    return (twin.local_key or twin.remote_key) if twin else ""


def _line(error: SyncError) -> str:
    where = " · ".join(p for p in (error.connection.name if error.connection else "", _item(error)) if p)
    message = redact(error.message.strip().splitlines()[0] if error.message.strip() else "")[:200]
    return f"{where}: {message}" if where else message


def _entry(error: SyncError, what: str) -> dict[str, Any]:
    return {
        "id": error.pk,
        "what": what,
        "impact": error.impact,
        "connection": error.connection.name if error.connection else None,
        "item": _item(error) or None,
        "message": redact(error.message)[:1000],
        "at": (error.resolved_at if what == "cleared" else error.created_at).isoformat(),
    }


def send(dest: Destination, digest: Digest) -> None:
    """Send one message; raises on failure (``OutboundError``, ``requests`` errors, ``smtplib`` errors)."""
    if dest.kind == "email":
        EmailMessage(
            subject=digest.subject(),
            body=digest.text(),
            from_email=settings.DEFAULT_FROM_EMAIL,
            to=dest.target.split(","),
        ).send(fail_silently=False)
        return
    registry.add(dest.target)  # the URL is a credential: never in a log line
    body = json.dumps(digest.payload(), ensure_ascii=False).encode()
    headers = {"Content-Type": "application/json", "User-Agent": "exalate-node alerts"}
    secret = settings.ALERT_WEBHOOK_SECRET
    if secret:
        stamp = str(int(time.time()))
        mac = hmac.new(secret.encode(), stamp.encode() + b"." + body, hashlib.sha256).hexdigest()
        headers |= {"X-Exalate-Timestamp": stamp, "X-Exalate-Signature": f"sha256={mac}"}
    outbound.check_url(dest.target, what="The alert webhook URL", userinfo=False)
    budget = outbound.Budget(outbound.peer_deadline())
    with outbound.deadline(budget), outbound.new_session() as session:
        response = session.post(
            dest.target, data=body, headers=headers, timeout=(5, 15), allow_redirects=False
        )
        outbound.read_body(response, limit=64 * 1024, truncate=True)
    if not 200 <= response.status_code < 300:
        raise outbound.BadAnswer(
            f"The alert webhook answered {response.status_code} {response.reason or ''}."
        )


def send_due(now: datetime | None = None) -> list[tuple[str, str]]:
    """Send every destination's digest that is due. Returns (destination, outcome) for each message tried."""
    now = now or timezone.now()
    gather = timedelta(seconds=settings.ALERT_GATHER_SECONDS)
    digest_every = timedelta(seconds=settings.ALERT_DIGEST_SECONDS)
    tried: list[tuple[str, str]] = []
    for dest, scope in routes().items():
        cursor, created = AlertCursor.objects.get_or_create(
            destination=dest.key,
            defaults={
                # A new destination starts now: it is not sent the node's whole history.
                "opened_after": SyncError.objects.aggregate(n=Max("id"))["n"] or 0,
                "cleared_after": now,
            },
        )
        if created or (cursor.sent_at and now - cursor.sent_at < digest_every):
            continue
        opened = SyncError.objects.filter(scope, pk__gt=cursor.opened_after)
        cleared = SyncError.objects.filter(scope, resolved_at__gt=cursor.cleared_after or EPOCH)
        news = opened.aggregate(first=Min("created_at"), last=Max("id"))
        gone = cleared.aggregate(first=Min("resolved_at"), last=Max("resolved_at"))
        oldest = min([t for t in (news["first"], gone["first"]) if t is not None], default=None)
        if oldest is None or now - oldest < gather:
            continue  # nothing new, or a burst still arriving
        claimed = (
            AlertCursor.objects.filter(pk=cursor.pk, sent_at=cursor.sent_at)
            if cursor.sent_at
            else (AlertCursor.objects.filter(pk=cursor.pk, sent_at__isnull=True))
        )
        if not claimed.update(sent_at=now):
            continue  # another sweeper took this turn
        related = ("connection", "twin")
        digest = Digest(
            opened=list(opened.select_related(*related).order_by("id")[:SHOWN]),
            opened_count=opened.filter(pk__lte=news["last"] or 0).count(),
            cleared=list(cleared.select_related(*related).order_by("resolved_at", "id")[:SHOWN]),
            cleared_count=cleared.filter(resolved_at__lte=gone["last"]).count() if gone["last"] else 0,
        )
        try:
            send(dest, digest)
        except Exception as exc:  # noqa: BLE001 - kept on the cursor, tried again next interval
            message = redact(f"{type(exc).__name__}: {exc}")[:500]
            AlertCursor.objects.filter(pk=cursor.pk).update(failures=cursor.failures + 1, last_error=message)
            logger.warning(
                "Alert to %s failed (%s); trying again in %s", dest.describe(), message, digest_every
            )
            tried.append((dest.describe(), f"failed: {message}"))
            continue
        AlertCursor.objects.filter(pk=cursor.pk).update(
            opened_after=max(cursor.opened_after, news["last"] or 0),
            cleared_after=gone["last"] or cursor.cleared_after,
            failures=0,
            last_error="",
        )
        logger.info("Alert sent to %s: %s", dest.describe(), digest.subject())
        tried.append((dest.describe(), "sent"))
    return tried


def send_test() -> list[tuple[str, str]]:
    """A test message to every destination, now (no throttle): what an admin sends to check the set-up.
    Returns (destination, outcome) for each; an empty list when no destination is set."""
    results = []
    for dest in routes():
        try:
            send(dest, TestMessage())
            results.append((dest.describe(), "sent"))
        except Exception as exc:  # noqa: BLE001 - shown to the admin who asked
            results.append((dest.describe(), f"failed: {redact(f'{type(exc).__name__}: {exc}')[:500]}"))
    return results


class TestMessage(Digest):
    """What ``send_test`` sends: says where it came from, lists nothing."""

    def __init__(self) -> None:
        super().__init__(opened=[], opened_count=0, cleared=[], cleared_count=0)

    def subject(self) -> str:
        return f"[exalate-node {settings.NODE_NAME}] Test alert"

    def text(self) -> str:
        node = f"exalate-node {settings.NODE_NAME} ({settings.NODE_URL})"
        return f"This is a test alert from {node}: alerts reach you."

    def payload(self) -> dict[str, Any]:
        return {"text": self.text(), "exalate": {"node": settings.NODE_NAME, "test": True}}
