"""Shared fixtures: personas (an admin, a non-staff user, an anonymous client) and a built-in tracker."""

from __future__ import annotations

import os

import pytest
from rest_framework.test import APIClient

REQUIRE_SERVICES = os.environ.get("EXALATE_REQUIRE_SERVICES", "") not in ("", "0", "false")


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):  # type: ignore[no-untyped-def]
    """In CI (EXALATE_REQUIRE_SERVICES=1) a skipped test is a failure: nothing silently stops being tested."""
    outcome = yield
    report = outcome.get_result()
    if REQUIRE_SERVICES and report.skipped and not hasattr(report, "wasxfail"):
        report.outcome = "failed"
        reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else report.longrepr
        report.longrepr = f"Skipped in CI, where every suite must run: {reason}"


@pytest.fixture(autouse=True)
def _media(settings, tmp_path):  # type: ignore[no-untyped-def]
    settings.MEDIA_ROOT = str(tmp_path / "media")


@pytest.fixture(autouse=True)
def _secret_registry():  # type: ignore[no-untyped-def]
    """Each test starts with an empty secret registry (``exalate_node.redaction``): it learns the secrets
    of the objects the test makes, and stays small however long the run."""
    from exalate_node.redaction import registry

    registry.clear()


@pytest.fixture
def admin_user(django_user_model):  # type: ignore[no-untyped-def]
    return django_user_model.objects.create_user(
        "alice", "alice@example.com", "pw-alice-123", is_staff=True, is_superuser=True
    )


@pytest.fixture
def plain_user(django_user_model):  # type: ignore[no-untyped-def]
    return django_user_model.objects.create_user("bob", "bob@example.com", "pw-bob-123")


@pytest.fixture
def api(admin_user):  # type: ignore[no-untyped-def]
    client = APIClient()
    client.force_authenticate(admin_user)
    return client


@pytest.fixture
def anon_api():  # type: ignore[no-untyped-def]
    return APIClient()


@pytest.fixture
def user_api(plain_user):  # type: ignore[no-untyped-def]
    client = APIClient()
    client.force_authenticate(plain_user)
    return client


@pytest.fixture
def builtin(db):  # type: ignore[no-untyped-def]
    from instances.models import Instance
    from instances.tracker import services

    instance = Instance.objects.create(name="Support desk", tracker_type="builtin")
    project = services.project_create(instance=instance, key="SUP", name="Support")
    return project
