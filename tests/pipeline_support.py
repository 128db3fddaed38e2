"""Helpers the pipeline tests of several packages share."""

from __future__ import annotations


def retry_now(twin_id: int) -> None:
    """Run the retry of a twin's pending events that the backoff would run a little later."""
    from replicas import pipeline
    from replicas.models import SyncEvent

    SyncEvent.objects.filter(twin_id=twin_id, status="pending").update(not_before=None)
    pipeline.process_twin(twin_id)
