"""django-q2 tasks of the pipeline: each takes an id and calls the pipeline; all are idempotent."""

from __future__ import annotations

from replicas import pipeline


def process_twin(twin_id: int) -> None:
    pipeline.run_worker_task(twin_id)


def sweep() -> int:
    return pipeline.sweep()


def run_bulk(job_id: int) -> None:
    from replicas.bulk import run_bulk as run

    run(job_id)


def reconcile_all() -> int:
    from replicas.reconcile import reconcile_all as run

    return run()


def resume_bulk_jobs() -> int:
    from replicas.bulk import resume_stale_jobs

    return resume_stale_jobs()
