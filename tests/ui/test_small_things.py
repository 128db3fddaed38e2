"""The rough edges a newcomer hit (issue #23, items 8 and 9): error pages, missing query parameters, the API
docs without a login, the favicon, one date format, one badge casing, the example key, the README wording
and the login line of `make run`."""

from __future__ import annotations

import re
from io import StringIO
from pathlib import Path

import pytest
from django.conf import settings
from django.core.management import call_command
from django.template.loader import render_to_string
from django.urls import reverse

from instances.models import Issue

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.mark.parametrize("path", ["/ui/no-such-page/", "/no-such-page", "/ui/tracker/NOPE-1/comment/x/"])
def test_a_wrong_url_gets_the_products_404_page_even_on_a_debug_node(staff, settings, path):
    settings.DEBUG = True  # as `make run` does
    response = staff.get(path)
    assert response.status_code == 404
    body = response.content.decode()
    assert "Page not found" in body and "ui-nav" in body and 'href="/ui/"' in body
    assert "URLconf" not in body and "Using the URLconf" not in body


def test_a_wrong_url_of_the_api_is_not_an_html_page(staff):
    response = staff.get("/api/v1/no-such-thing/")
    assert response.status_code == 404
    assert b"Page not found</h1>" not in response.content


def test_a_known_url_without_its_slash_still_redirects(staff):
    response = staff.get("/ui/connections?x=1")
    assert response.status_code == 301 and response["Location"] == "/ui/connections/?x=1"
    response = staff.get("//evil.example/ui/connections")
    assert response.status_code in (301, 404)
    assert not response.get("Location", "").startswith("//evil")


def test_the_500_page_needs_neither_a_request_nor_a_database():
    body = render_to_string("500.html")
    assert "Something went wrong" in body and "exalate-node" in body and "/ui/" in body


def test_a_new_issue_without_a_project_asks_for_one(staff, two_trackers):
    response = staff.get(reverse("ui:issue_create"))
    assert response.status_code == 200
    body = response.content.decode()
    assert "Which project is the new issue for?" in body
    assert f'href="{reverse("ui:issue_create")}?project=SUP"' in body

    response = staff.get(reverse("ui:issue_create") + "?project=NOPE")
    assert response.status_code == 404
    assert "There is no project “NOPE”" in response.content.decode()
    assert "URLconf" not in response.content.decode()


def test_the_api_docs_send_a_browser_to_the_login_page(client):
    response = client.get("/api/docs/", headers={"Accept": "text/html,application/xhtml+xml"})
    assert response.status_code == 302
    assert response["Location"] == reverse("admin:login") + "?next=/api/docs/"
    assert client.get("/api/docs/").status_code == 401  # an API client without a token


def test_the_api_docs_still_open_for_staff(staff):
    response = staff.get("/api/docs/", headers={"Accept": "text/html"})
    assert response.status_code == 200 and b"swagger" in response.content.lower()


def test_every_page_has_a_favicon(staff, synced):
    body = staff.get(reverse("ui:dashboard")).content.decode()
    assert 'rel="icon" href="/static/ui/favicon.svg"' in body
    assert staff.get("/favicon.ico")["Location"] == "/static/ui/favicon.svg"
    assert (Path(settings.BASE_DIR) / "static/ui/favicon.svg").read_text().startswith("<svg")


def test_dates_have_one_format_and_badges_one_casing(staff, synced):
    a, b, issue = synced
    pages = [
        reverse("ui:status") + f"?instance={a.local_instance_id}&key={issue.key}",
        reverse("ui:connection", args=[a.pk]),
        reverse("ui:issue", args=[issue.key]),
        reverse("ui:rules", args=[a.pk]),
        reverse("ui:queue") + "?direction=in",
    ]
    for url in pages:
        body = staff.get(url).content.decode()
        assert not re.search(r"\b[A-Z][a-z]{2} \d{1,2}, \d\d:\d\d", body), url  # "Dec 5, 11:24"
        assert not re.search(r'class="badge[^"]*">[a-z]', body), url  # "done" next to "Done"


def test_the_exalate_box_suggests_a_key_of_this_sides_project(staff, synced):
    _a, b, _issue = synced
    copy = Issue.objects.get(project__instance=b.local_instance)
    body = staff.get(reverse("ui:connection", args=[b.pk])).content.decode()
    assert f'placeholder="{copy.key}"' in body and 'placeholder="SUP-1"' not in body

    response = staff.post(reverse("ui:exalate", args=[b.pk]), {"key": ""}, follow=True)
    assert f"e.g. {copy.key}" in response.content.decode()


def test_the_readme_names_the_menu_entry_as_the_menu_does():
    readme = (Path(settings.BASE_DIR) / "README.md").read_text()
    assert "Open **Built-in tracker**" in readme and "Open **Tracker**" not in readme


def test_make_runs_login_line_leads_to_the_dashboard(settings, tmp_path, transactional_db):
    settings.VAR_DIR = tmp_path
    out = StringIO()
    call_command("bootstrap_demo", "--no-demo", stdout=out)
    assert f"Log in at {settings.NODE_URL}/ui/ as user" in out.getvalue()
