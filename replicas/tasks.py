"""django-q2 tasks of the pipeline: each takes an id and calls the pipeline; all are idempotent."""

from __future__ import annotations

from replicas import pipeline


def process_twin(twin_id: int) -> None:
    pipeline.run_worker_task(twin_id)


def sweep() -> int:
    return pipeline.sweep()
