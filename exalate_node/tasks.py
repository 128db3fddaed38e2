"""The one seam through which the node enqueues background work (django-q2).

Tasks are enqueued after the transaction commits, by dotted path with plain ids. With ``TASKS_INLINE``
(unit tests, debugging) they run in the calling process right after the commit instead.
"""

from __future__ import annotations

import logging
from typing import Any

from django.conf import settings
from django.db import transaction
from django.utils.module_loading import import_string

logger = logging.getLogger(__name__)


def _run_inline(func: str, args: tuple[Any, ...]) -> None:
    try:
        import_string(func)(*args)
    except Exception:  # a task failure must not break the caller, as with a real worker
        logger.exception("Inline task %s%r failed", func, args)


def enqueue(func: str, *args: Any, group: str | None = None) -> None:
    """Run ``func(*args)`` in a worker once the current transaction commits."""
    if settings.TASKS_INLINE:
        transaction.on_commit(lambda: _run_inline(func, args))
        return

    def send() -> None:
        from django_q.tasks import async_task

        async_task(func, *args, group=group, save=False)

    transaction.on_commit(send)
