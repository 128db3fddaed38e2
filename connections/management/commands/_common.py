"""Helpers shared by the connection management commands."""

from __future__ import annotations

from django.core.management.base import CommandError

from instances.models import Instance


def local_instance(ref: str) -> Instance:
    """A local instance by id, UID or (unique) name."""
    qs = Instance.objects.filter(kind=Instance.Kind.LOCAL)
    found = None
    if ref.isdigit():
        found = qs.filter(pk=int(ref)).first()
    found = found or qs.filter(uid=ref).first()
    if found is None:
        named = list(qs.filter(name=ref)[:2])
        if len(named) > 1:
            raise CommandError(f"Several local instances are named '{ref}'; use the id or UID instead.")
        found = named[0] if named else None
    if found is None:
        names = ", ".join(f"{i.pk}: {i.name}" for i in qs[:20]) or "none"
        raise CommandError(f"No local instance '{ref}'. Local instances: {names}.")
    return found
