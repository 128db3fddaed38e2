"""Helpers shared by the connection management commands."""

from __future__ import annotations

from django.core.exceptions import ValidationError
from django.core.management.base import CommandError
from django.db.models import Model, QuerySet

from connections.models import Connection
from instances.models import Instance


def by_ref(qs: QuerySet, ref: str, what: str) -> Model:
    """One object of ``qs`` by id, UID or (unique) name; a CommandError listing the choices otherwise."""
    found = qs.filter(pk=int(ref)).first() if ref.isdigit() else None
    if found is None:
        try:
            found = qs.filter(uid=ref).first()
        except ValidationError:  # not a UUID
            found = None
    if found is None:
        named = list(qs.filter(name=ref)[:2])
        if len(named) > 1:
            raise CommandError(f"Several {what}s are named '{ref}'; use the id or UID instead.")
        found = named[0] if named else None
    if found is None:
        names = ", ".join(f"{o.pk}: {o.name}" for o in qs[:20]) or "none"
        raise CommandError(f"No {what} '{ref}'. {what.capitalize()}s: {names}.")
    return found


def local_instance(ref: str) -> Instance:
    """A local instance by id, UID or (unique) name."""
    return by_ref(Instance.objects.filter(kind=Instance.Kind.LOCAL), ref, "local instance")


def connection(ref: str) -> Connection:
    """A connection by id, UID or (unique) name."""
    return by_ref(Connection.objects.all(), ref, "connection")
