"""Webhook intake: ``POST /hooks/<tracker type>/<instance uid>/`` from a tracker becomes outgoing sync work.

The view finds the local instance by its UID (and tracker type), checks the delivery with the connector's
``verify_webhook(headers, body, secret)`` against ``webhook_secret`` from the instance's credentials
(encrypted at rest), asks ``parse_webhook(headers, body)`` which items it is about (connectors drop
redeliveries by their delivery id) and records a change of each item in the outbox
(``replicas.outbox.record_item_change``), which queues outgoing events on every connection the item is
synced on. Nothing else happens in the request: the pipeline's workers read the items later.

Answers: 202 with ``{"accepted": n}``; 401 when the signature or secret is wrong; 404 for an unknown
instance; 409 when the instance has no ``webhook_secret`` (unsigned deliveries are never accepted) or its
settings do not let the connector read the delivery; 413 above ``DATA_UPLOAD_MAX_MEMORY_SIZE``; 400 for a
body that is not a JSON object or list, is nested deeper than 64 levels, holds text that is not valid
Unicode (a lone surrogate), names more than ``MAX_ITEMS`` items, or that the connector cannot read. Every
error is ``{"detail", "code"}``; a refused delivery records nothing. Jira's URL may carry the secret as
``?secret=…`` (see the Jira connector); it is passed to connectors whose ``verify_webhook`` takes ``query``.

The node's own writes are not dropped here even when the connector can recognise them (``is_own_change``):
a write made for one connection must still reach the item's other connections, and the pipeline already
skips a replica that did not change, so an echo costs one read and sends nothing.
"""

from __future__ import annotations

import inspect
import json
import logging

from django.conf import settings
from django.core.exceptions import RequestDataTooBig
from django.db import transaction
from django.http import HttpRequest, JsonResponse
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_POST

from exalate_node.parsers import JSONRefused, load_json
from instances.connectors import ConnectorError, get_connector
from instances.models import Instance
from instances.outbox import record_item_change

logger = logging.getLogger(__name__)

MAX_ITEMS = 1000  # items one delivery may name (a tracker names one; a Salesforce callout may batch a few)
_ID_MAX = 200  # the length of the item id and key columns


def _refused(status: int, code: str, detail: str) -> JsonResponse:
    return JsonResponse({"detail": detail, "code": code}, status=status)


def _secret(instance: Instance) -> str:
    try:
        creds = json.loads(instance.credentials or "{}")
    except ValueError:
        return ""
    return str(creds.get("webhook_secret") or "") if isinstance(creds, dict) else ""


@csrf_exempt
@require_POST
def intake(request: HttpRequest, tracker: str, uid: str) -> JsonResponse:
    """Receive one webhook delivery for the local instance ``uid`` of type ``tracker``."""
    instance = Instance.objects.filter(uid=uid, tracker_type=tracker, kind=Instance.Kind.LOCAL).first()
    if instance is None:
        return JsonResponse(
            {
                "detail": f"No local {tracker} instance with UID {uid} on this node.",
                "code": "unknown_instance",
            },
            status=404,
        )
    secret = _secret(instance)
    if not secret:
        return JsonResponse(
            {
                "detail": f'{instance.name} has no webhook secret. Add "webhook_secret" to its '
                "credentials and the same secret to the webhook in the tracker.",
                "code": "no_webhook_secret",
            },
            status=409,
        )
    try:
        connector = get_connector(instance)
    except ConnectorError as exc:
        return JsonResponse({"detail": exc.message, "code": "no_connector"}, status=404)
    verify = getattr(connector, "verify_webhook", None)
    parse = getattr(connector, "parse_webhook", None)
    if verify is None or parse is None:
        return JsonResponse(
            {"detail": f"The {tracker} connector does not take webhooks; it polls.", "code": "no_webhooks"},
            status=404,
        )
    headers = dict(request.headers)
    try:
        body = request.body
    except RequestDataTooBig:  # Django's own answer would be an HTML page
        limit = settings.DATA_UPLOAD_MAX_MEMORY_SIZE
        return _refused(
            413,
            "too_large",
            f"The delivery is larger than this node reads ({limit} bytes); nothing was recorded.",
        )
    extra = {"query": request.GET} if "query" in inspect.signature(verify).parameters else {}
    if not verify(headers, body, secret, **extra):
        logger.warning("Webhook for %s refused: bad or missing signature.", instance.name)
        return JsonResponse(
            {"detail": "The signature or secret does not match this instance's.", "code": "bad_signature"},
            status=401,
        )
    if body.strip():
        # Checked here, once for every connector: connectors then read a body of a known size and depth.
        try:
            payload = load_json(body, what="The delivery")
        except JSONRefused as exc:
            return _refused(400, exc.code, f"{exc.message} Check the webhook's payload format in {tracker}.")
        if not isinstance(payload, dict | list):
            return _refused(
                400, "unreadable", "The delivery is not a JSON object. Check the webhook's payload format."
            )
    try:
        refs = parse(headers, body)
    except (ValueError, KeyError, TypeError) as exc:
        what = str(exc)[:200] or type(exc).__name__
        return _refused(
            400, "unreadable", f"The delivery could not be read: {what}. Check the webhook's payload format."
        )
    except ConnectorError as exc:
        return _refused(409, "not_configured", exc.message)
    refs = list({ref.id: ref for ref in refs if 0 < len(ref.id) <= _ID_MAX}.values())
    if len(refs) > MAX_ITEMS:
        return _refused(
            400, "too_many_items", f"The delivery names {len(refs)} items; at most {MAX_ITEMS} are read."
        )
    for ref in refs:
        with transaction.atomic():
            record_item_change(
                instance_id=instance.pk,
                item_id=ref.id,
                item_key=ref.key[:_ID_MAX],
                actor=f"{tracker}:webhook",
            )
    return JsonResponse({"accepted": len(refs)}, status=202)
