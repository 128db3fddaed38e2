"""Create the admin account (without asking anything) and the demo built-in tracker."""

from __future__ import annotations

import secrets
from typing import Any

from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand
from django.db import transaction

from instances.models import Instance, Project
from instances.tracker import services


class Command(BaseCommand):
    help = "Create the admin user and a demo: two built-in tracker projects. Safe to run again."

    def add_arguments(self, parser: Any) -> None:
        parser.add_argument("--username", default="admin")
        parser.add_argument("--no-demo", action="store_true")

    def handle(self, *args: Any, username: str, no_demo: bool, **options: Any) -> None:
        from replicas.schedules import ensure_schedules

        ensure_schedules()
        password = self._admin(username)
        if not no_demo:
            self._demo()
        self.stdout.write(
            self.style.SUCCESS(
                f"\n  Log in at {settings.NODE_URL}/ui/ as user '{username}' with password '{password}'"
                f"\n  (the password is kept in {settings.VAR_DIR / 'admin-password'}).\n"
            )
        )

    def _admin(self, username: str) -> str:
        User = get_user_model()
        path = settings.VAR_DIR / "admin-password"
        path.parent.mkdir(parents=True, exist_ok=True)
        if not path.exists():
            path.write_text(secrets.token_urlsafe(12))
            path.chmod(0o600)
        password = path.read_text().strip()
        user, created = User.objects.get_or_create(
            username=username,
            defaults={"email": f"{username}@localhost", "is_staff": True, "is_superuser": True},
        )
        if created or not user.check_password(password):
            user.set_password(password)
            user.is_staff = user.is_superuser = True
            user.save()
        return password

    @transaction.atomic
    def _demo(self) -> None:
        if Project.objects.filter(key__in=["SUP", "ENG"]).exists():
            return
        support = Instance.objects.create(name="Support desk", tracker_type="builtin", url=settings.NODE_URL)
        engineering = Instance.objects.create(
            name="Engineering", tracker_type="builtin", url=settings.NODE_URL
        )
        sup = services.project_create(instance=support, key="SUP", name="Customer support")
        services.project_create(instance=engineering, key="ENG", name="Engineering backlog")
        actor = "demo@localhost"
        services.issue_create(
            project=sup,
            actor=actor,
            summary="Login page times out for EU customers",
            description="Several customers report a 30 s timeout on the login page since Tuesday.",
            priority="High",
            issue_type="Bug",
            labels=["customer", "login"],
            reporter="anna@example.com",
        )
        from connections.services import connection_create_local
        from replicas.pipeline import exalate

        side_a, _ = connection_create_local(
            name="Support ⇄ Engineering", instance_a=support, instance_b=engineering
        )
        exalate(connection=side_a, key="SUP-1")
        self.stdout.write(
            "Demo created: built-in tracker instances 'Support desk' (SUP) and 'Engineering' (ENG), "
            "joined by the local connection 'Support ⇄ Engineering'; SUP-1 is synced to ENG."
        )
