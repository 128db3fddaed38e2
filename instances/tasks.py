"""django-q2 tasks of the instances app."""

from __future__ import annotations


def poll_due() -> int:
    from instances.polling import poll_due as run

    return run()


def poll_instance(instance_id: int) -> int:
    from instances.polling import poll_instance as run

    return run(instance_id)
