"""Real-browser tests: Chromium (Debian's /usr/bin/chromium) driven by Playwright against the live server.

The main journey: log in, create a local connection, create an issue in the tracker UI, exalate it, check
both replicas on its Entity Sync Status page, break the incoming rule, see the error, fix the rule,
resolve and retry, see it synchronized. Full-page screenshots of the main pages go to var/screenshots/.
"""

from __future__ import annotations

import functools
import os
import re
import shutil
import time
from pathlib import Path

import pytest
from django.conf import settings
from django.db import connections

from connections.models import Connection
from instances.models import Issue

pytestmark = [pytest.mark.services, pytest.mark.django_db(transaction=True)]

CHROMIUM = "/usr/bin/chromium"
ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
]
SHOTS = Path(settings.BASE_DIR) / "var" / "screenshots"
PASSWORD = "pw-alice-123"  # the admin_user fixture's

BROKEN_INCOMING = """\
# Broken on purpose: fails for items whose summary mentions "boom".
if "boom" in (replica.summary or ""):
    x = 1 / 0
issue.summary = replica.summary
"""


@pytest.fixture
def browser(monkeypatch):  # type: ignore[no-untyped-def]
    if not (os.path.exists(CHROMIUM) or shutil.which("chromium")):
        pytest.skip("Chromium is not installed at /usr/bin/chromium (apt-get install chromium)")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        pytest.skip("Playwright is not installed (pip install playwright)")
    # Playwright's sync API keeps an event loop in this thread; the test's own ORM calls are still sync.
    monkeypatch.setenv("DJANGO_ALLOW_ASYNC_UNSAFE", "true")
    SHOTS.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as p:
        instance = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        yield instance
        instance.close()


@pytest.fixture
def page(browser, live_server, admin_user):  # type: ignore[no-untyped-def]
    context = browser.new_context(viewport={"width": 1366, "height": 768}, base_url=live_server.url)
    context.set_default_timeout(15_000)
    page = context.new_page()
    page.goto("/ui/")
    # Anonymous: the admin login page, then back to the dashboard.
    page.fill("#id_username", admin_user.username)
    page.fill("#id_password", PASSWORD)
    page.click("input[type=submit]")
    page.wait_for_url(re.compile(r"/ui/$"))
    yield page
    context.close()


def closes_db_connections(test):  # type: ignore[no-untyped-def]
    """Close the database connections the test body opened. Under Playwright's sync API the body's ORM calls
    get connections of their own context, which pytest-django does not close; a leftover connection would
    keep the PostgreSQL test database from being dropped."""

    @functools.wraps(test)
    def wrapper(*args, **kwargs):  # type: ignore[no-untyped-def]
        try:
            return test(*args, **kwargs)
        finally:
            connections.close_all()

    return wrapper


def shot(page, name: str) -> None:  # type: ignore[no-untyped-def]
    page.screenshot(path=str(SHOTS / f"{name}.png"), full_page=True)


def publish_incoming(page, connection: Connection, script: str, note: str) -> None:  # type: ignore[no-untyped-def]
    page.goto(f"/ui/connections/{connection.pk}/rules/")
    page.fill("#id_incoming", script)
    page.fill("#id_note", note)
    page.click("button[value=publish]")
    page.wait_for_selector(".messagelist .success")
    assert "Published version" in page.inner_text(".messagelist")


@closes_db_connections
def test_the_whole_journey_in_a_browser(page, two_trackers):
    from syncrules.defaults import default_rules

    sup, eng = two_trackers
    shot(page, "01-dashboard-empty")

    # A local connection between the two built-in instances.
    page.click("nav.ui-nav >> text=Connections")
    page.fill("#id_name", "Support ⇄ Engineering")
    page.select_option("#id_instance_a", label=str(sup.instance))
    page.select_option("#id_instance_b", label=str(eng.instance))
    page.click("text=Create local connection")
    page.wait_for_selector(".messagelist .success")
    side_a = Connection.objects.get(local_instance=sup.instance)
    side_b = Connection.objects.get(local_instance=eng.instance)
    assert side_a.status == side_b.status == "active"

    # An issue created in the tracker UI, with a comment.
    page.click("nav.ui-nav >> text=Built-in tracker")
    page.click("text=New SUP issue")
    page.fill("#id_summary", "Printer on fire")
    page.fill("#id_description", "Since Tuesday, third floor.")
    page.select_option("#id_priority", "High")
    page.fill("#id_labels", "hardware, urgent")
    page.click("text=Create issue")
    page.wait_for_url(re.compile(r"/ui/tracker/SUP-1/$"))
    page.fill("#id_body", "Smoke seen twice today.")
    page.click("text=Add comment")
    page.wait_for_selector("text=Smoke seen twice today.")

    # Exalate it from the issue page: the Entity Sync Status page shows both replicas.
    page.click("#exalate-form button")
    page.wait_for_url(re.compile(r"/ui/status/\?instance="))
    assert Issue.objects.filter(project=eng).count() == 1
    copy = Issue.objects.get(project=eng)
    assert (copy.summary, copy.priority) == ("Printer on fire", "High")
    page.click("summary:has-text('Show local replica')")
    assert "Printer on fire" in page.inner_text(".local-replica pre")
    assert copy.key in page.inner_text(".remote-link")
    assert "Synchronized" in page.inner_text(".twin .panel-head")
    # The receiving side holds both: what it received (remote) and what it recorded as its own (local).
    page.goto(f"/ui/status/?key={copy.key}")
    page.click("summary:has-text('Show local replica')")
    page.click("summary:has-text('Show remote replica')")
    assert copy.key in page.inner_text(".local-replica pre")
    remote = page.inner_text(".remote-replica pre")
    assert "Printer on fire" in remote and "SUP-1" in remote and "Since Tuesday" in remote
    assert "SUP-1" in page.inner_text(".remote-link")
    shot(page, "03-entity-sync-status")
    page.goto(f"/ui/connections/{side_a.pk}/")
    shot(page, "02b-connection-detail")
    page.goto(f"/ui/tracker/{copy.key}/")
    shot(page, "04-tracker-issue")
    page.goto("/ui/tracker/")
    shot(page, "05-tracker-list")
    page.goto("/ui/connections/")
    shot(page, "02-connections")

    # The rules editor: validate shows problems with line numbers; a dry-run shows the replica.
    page.goto(f"/ui/connections/{side_a.pk}/rules/")
    page.fill("#id_incoming", "issue.summary = replica.summary\nissue.description = (\n")
    page.click("button[value=validate]")
    assert "incoming script" in page.inner_text(".problems")
    assert page.locator(".code-editor .gutter .ln.bad").count() >= 1
    page.fill("#id_dry_key", "SUP-1")
    page.click("button[value=dryrun]")
    assert "Since Tuesday, third floor." in page.inner_text(".dry-result pre.json")
    shot(page, "06a-rules-validate-and-dry-run")

    # Break the incoming rule of the receiving side in the rules editor.
    publish_incoming(page, side_b, BROKEN_INCOMING, "Broken on purpose")
    page.goto(f"/ui/connections/{side_b.pk}/rules/?diff=2#diff")
    shot(page, "06-rules-editor")

    # Change the issue in the tracker: the change fails on the other side.
    page.goto("/ui/tracker/SUP-1/")
    page.fill("#id_summary", "Printer on fire: boom")
    page.click("text=Save")
    page.wait_for_selector(".messagelist .success")
    page.click("nav.ui-nav >> text=Errors")
    card = page.locator("#impact-entity .error-card").first
    assert "ZeroDivisionError" in card.inner_text() and "script line 3" in card.inner_text()
    shot(page, "07-errors")

    # Fix the rule, then resolve and retry: the change arrives and the item is synchronized.
    publish_incoming(page, side_b, default_rules("builtin")[1], "Back to the defaults")
    page.click("nav.ui-nav >> text=Errors")
    page.click("#impact-entity >> text=Resolve and retry")
    page.wait_for_selector(".messagelist .success")
    assert "Resolved and retried" in page.inner_text(".messagelist")
    assert "No open errors" in page.inner_text("#content")
    copy.refresh_from_db()
    assert copy.summary == "Printer on fire: boom"
    page.goto(f"/ui/status/?instance={eng.instance_id}&key={copy.key}")
    assert "Synchronized" in page.inner_text(".twin .panel-head")
    page.click("summary:has-text('Show remote replica')")
    assert "Printer on fire: boom" in page.inner_text(".remote-replica pre")
    shot(page, "08-entity-sync-status-after-retry")

    # The visual mapping generates scripts into the editor, unpublished.
    page.goto(f"/ui/connections/{side_b.pk}/mapping/")
    page.fill("#id_map_status", "Done = Resolved")
    shot(page, "14-visual-mapping")
    page.click("button:has-text('Generate scripts')")
    page.wait_for_selector(".messagelist .info")
    assert "STATUS_MAP" in page.input_value("#id_incoming")
    shot(page, "15-rules-from-mapping")

    page.goto("/ui/queue/")
    shot(page, "09-sync-queue")
    page.goto("/ui/")
    shot(page, "10-dashboard")


@closes_db_connections
def test_the_connection_wizard_in_a_browser(page, builtin):
    from connections.invitation import Invitation, new_secret, seal_invitation

    # Initiate: the code is shown with a Copy button that copies (or selects) it.
    page.goto("/ui/connections/initiate/")
    page.fill("#id_name", "To the Acme node")
    page.select_option("#id_local_instance", label=str(builtin.instance))
    page.click("text=Create invitation code")
    code = page.input_value("#invitation-code")
    assert code.startswith("EXN1-")
    page.click("text=Copy code")
    page.wait_for_function("document.querySelector('.copy-status').textContent.length > 0")
    assert page.inner_text(".copy-status") in ("Copied.", "Selected: press Ctrl+C (⌘C) to copy.")
    shot(page, "11-wizard-invitation-code")

    def sealed(expires_at: int) -> str:
        return seal_invitation(
            Invitation(
                secret=new_secret(),
                connection_type="script",
                connection_name="Acme ⇄ Support",
                invitation_id="0b7f3c1e-2a4d-4c55-9a1c-222222222222",
                initiator_node="Acme node",
                initiator_user="carol",
                app_version="0.1.0",
                features=("replica-1", "batches"),
                tracker_type="jira",
                tracker_version="cloud",
                tracker_url="https://acme.atlassian.net",
                node_url="https://sync.acme.example",
                instance_uid="e" * 32,
                instance_name="Acme Jira",
                expires_at=expires_at,
            )
        )

    page.goto("/ui/connections/accept/")
    page.select_option("#id_local_instance", label=str(builtin.instance))
    # A garbled code.
    good = sealed(int(time.time()) + 3600)
    page.fill("#id_code", good[:30] + "Zz" + good[32:])
    page.click("text=Check code")
    assert "EXN1-" in page.inner_text(".has-error .field-error")
    # An expired code.
    page.fill("#id_code", sealed(int(time.time()) - 60))
    page.click("text=Check code")
    assert "expired" in page.inner_text(".has-error .field-error")
    shot(page, "12-wizard-accept-expired")
    # A good code: a preview of what it connects to, nothing created yet.
    page.fill("#id_code", good)
    page.click("text=Check code")
    preview = page.inner_text("dl.preview")
    for text in ("Acme ⇄ Support", "Acme node", "https://sync.acme.example", "Acme Jira"):
        assert text in preview
    assert page.is_visible("button[name=confirm]")
    assert not Connection.objects.filter(name="Acme ⇄ Support").exists()
    shot(page, "13-wizard-accept-preview")


@closes_db_connections
def test_bulk_exalate_progress_in_a_browser(page, two_trackers):
    from connections.services import connection_create_local
    from instances.tracker import services

    sup, eng = two_trackers
    side_a, _ = connection_create_local(
        name="Support ⇄ Engineering", instance_a=sup.instance, instance_b=eng.instance
    )
    for i in range(12):
        labels = ["backfill"] if i % 3 else []
        services.issue_create(project=sup, actor="anna@example.com", summary=f"Item {i}", labels=labels)
    # A trigger through the form, then Bulk Exalate what it matches; the job runs in the background.
    page.goto(f"/ui/connections/{side_a.pk}/triggers/")
    page.fill("#id_query", "labels = backfill")
    page.fill("#id_notes", "Backfill of the tagged items")
    page.click("text=Add trigger")
    page.wait_for_selector(".messagelist .success")
    page.click(".connection-tabs >> text=Bulk operations")
    page.click("#bulk-exalate button")
    page.wait_for_selector(".messagelist .success")
    page.goto(f"/ui/connections/{side_a.pk}/bulk/")
    row = page.locator("tr.job").first
    assert row.locator(".progress-percent").inner_text() == "100%"
    assert row.locator(".progress").get_attribute("aria-valuenow") == "100.0"
    assert "8 / 8" in row.inner_text() and "Done" in row.inner_text()
    assert Issue.objects.filter(project=eng).count() == 8
    shot(page, "16-bulk-progress")
    # While a job is queued or running, the bars refresh by themselves (every 2 s, from a JSON endpoint).
    from django.utils import timezone

    from replicas.models import BulkJob

    job = BulkJob.objects.create(connection=side_a, kind="unexalate", items=["a", "b", "c", "d"], total=4)
    page.goto(f"/ui/connections/{side_a.pk}/bulk/")
    assert "0 / 4" in page.inner_text(f"#job-{job.pk}") and page.is_visible(f"#job-{job.pk} .cancel-form")
    BulkJob.objects.filter(pk=job.pk).update(
        position=4, status="done", started_at=job.created_at, finished_at=timezone.now()
    )
    page.wait_for_function(
        f"document.querySelector('#job-{job.pk} .progress-percent').textContent === '100%'"
    )
    assert "Done" in page.inner_text(f"#job-{job.pk} .job-status")
    assert not page.is_visible(f"#job-{job.pk} .cancel-form")


@closes_db_connections
def test_open_pages_show_a_sync_without_a_reload(page, two_trackers):
    """Exalate an item while its Entity Sync Status page, the dashboard and the connection page are open:
    each shows the change within a second or two, and none of them was reloaded."""
    from connections.services import connection_create_local
    from instances.tracker import services
    from replicas import pipeline

    sup, eng = two_trackers
    a, _b = connection_create_local(
        name="Support ⇄ Engineering", instance_a=sup.instance, instance_b=eng.instance
    )
    pipeline.META_CACHE.clear()
    first = services.issue_create(project=sup, actor="anna@example.com", summary="Printer on fire")
    second = services.issue_create(project=sup, actor="anna@example.com", summary="Toner low")

    page.goto(f"/ui/status/?instance={sup.instance.pk}&key={first.key}")
    assert "is not synced on any connection" in page.inner_text("#live-status")
    page.evaluate("window.notReloaded = true")
    pipeline.exalate(connection=a, key=first.key)
    page.wait_for_selector("#live-status .twin .badge-synchronized", timeout=5_000)
    assert "ENG-1" in page.inner_text("#live-status .remote-link")
    assert "just now" in page.inner_text("#live-status .facts") or "seconds ago" in page.inner_text(
        "#live-status .facts"
    )
    assert page.evaluate("window.notReloaded") is True
    shot(page, "live-status")

    others = page.context.new_page()
    others.goto(f"/ui/connections/{a.pk}/")
    others.evaluate("window.notReloaded = true")
    page.goto("/ui/")
    page.evaluate("window.notReloaded = true")
    before = page.inner_text("#live-dashboard .card-num >> nth=1")
    pipeline.exalate(connection=a, key=second.key)
    page.wait_for_function(
        "n => document.querySelectorAll('#live-dashboard .card-num')[1].textContent.trim() !== n",
        arg=before,
        timeout=5_000,
    )
    others.wait_for_selector(f"#live-connection-items >> text={second.key}", timeout=5_000)
    assert page.evaluate("window.notReloaded") is True
    assert others.evaluate("window.notReloaded") is True
    others.close()


OVERFLOW = """() => {
  const width = document.documentElement.clientWidth;
  const wide = [];
  // Tables may scroll inside their .table-wrap; the page, the navigation and the cards may not.
  const parts = "#header, .ui-nav, .ui-nav a, .cards, .card, .card > *, .breadcrumbs";
  for (const el of document.querySelectorAll(parts)) {
    const box = el.getBoundingClientRect();
    if (box.right > width + 1 || el.scrollWidth > el.clientWidth + 1) {
      wide.push((el.id || el.className || el.tagName) + " " + Math.round(box.right) + "/" + el.scrollWidth);
    }
  }
  const page = document.documentElement.scrollWidth;
  if (page > width + 1) { wide.push("page " + page); }
  return wide;
}"""


@closes_db_connections
def test_at_390_px_nothing_overflows_or_is_clipped(page, synced):
    a, _b, issue = synced
    page.set_viewport_size({"width": 390, "height": 844})
    for name, url in [
        ("dashboard", "/ui/"),
        ("connections", "/ui/connections/"),
        ("connection", f"/ui/connections/{a.pk}/"),
        ("status", f"/ui/status/?instance={a.local_instance_id}&key={issue.key}"),
        ("queue", "/ui/queue/"),
    ]:
        page.goto(url)
        shot(page, f"mobile-{name}")
        assert page.evaluate(OVERFLOW) == [], name


@closes_db_connections
def test_a_live_page_leaves_selected_text_alone(page, synced):
    """Selecting a trace id to copy it must survive the page's refresh, even while the events change."""
    from replicas import pipeline

    a, _b, issue = synced
    page.goto(f"/ui/status/?instance={a.local_instance_id}&key={issue.key}")
    page.evaluate(
        """() => { const code = document.querySelector('#live-status code.trace');
                   window.getSelection().selectAllChildren(code); window.selectedNode = code; }"""
    )
    selected = page.evaluate("window.getSelection().toString()")
    pipeline.exalate(connection=a, key=issue.key)  # a new event: the region has new content to show
    polls = int(page.evaluate("document.documentElement.dataset.livePolls || '0'"))
    page.wait_for_function(
        f"Number(document.documentElement.dataset.livePolls) >= {polls + 2}", timeout=5_000
    )
    assert page.evaluate("window.getSelection().toString()") == selected
    assert page.evaluate("document.contains(window.selectedNode)") is True
    page.evaluate("window.getSelection().removeAllRanges()")
    page.wait_for_function(
        "document.querySelectorAll('#live-status .events tbody tr').length > 2", timeout=5_000
    )


@closes_db_connections
def test_the_activity_charts_draw(page, synced):
    page.set_viewport_size({"width": 1440, "height": 900})
    page.goto("/ui/activity/")
    page.wait_for_selector("#activity[data-loaded] [data-chart=events] canvas")
    assert page.locator("#activity canvas").count() == 3
    assert int(page.inner_text("[data-total=events]")) > 0
    assert page.inner_text("[data-total=p50]").startswith("≤")
    assert "Support ⇄ Engineering" in page.inner_text("[data-connections]")
    shot(page, "activity")
    page.set_viewport_size({"width": 390, "height": 844})
    page.reload()
    page.wait_for_selector("#activity[data-loaded] [data-chart=events] canvas")
    shot(page, "mobile-activity")
    assert page.evaluate(OVERFLOW) == []
