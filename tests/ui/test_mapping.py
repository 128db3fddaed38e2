"""Visual mapping: field choices generate this side's scripts, which compile and run as chosen."""

from __future__ import annotations

import pytest
from django.urls import reverse

from exalate_node.ui.mapping import generate_scripts, parse_value_map
from syncrules.services import rules_validate

pytestmark = pytest.mark.django_db(transaction=True)


def test_the_generated_scripts_compile_and_follow_the_choices():
    data = {
        "out_summary": True,
        "out_status": True,
        "in_summary": "always",
        "in_status": "changed",
        "map_status": {"Done": "Resolved"},
        "in_priority": "skip",
        "in_comments": True,
    }
    outgoing, incoming = generate_scripts(data)
    assert "replica.summary = issue.summary" in outgoing and "replica.description" not in outgoing
    assert 'STATUS_MAP = {"Done": "Resolved"}' in incoming
    assert "issue.status = node_helper.get_status(STATUS_MAP.get(replica.status, replica.status)" in incoming
    assert "issue.summary = replica.summary\n" in incoming and "priority" not in incoming
    assert "comment_helper.merge_comments(issue, replica)" in incoming and "attachment_helper" not in incoming
    assert [p for p in rules_validate(outgoing=outgoing, incoming=incoming) if p["severity"] == "error"] == []


def test_a_bad_value_map_line_says_how_to_write_it():
    with pytest.raises(ValueError, match="Remote value = Local value"):
        parse_value_map("Done -> Resolved")


def test_generate_opens_the_scripts_in_the_rules_editor_unpublished(staff, synced):
    from syncrules.models import RulesVersion

    a, _b, issue = synced
    assert staff.get(reverse("ui:mapping", args=[a.pk])).status_code == 200
    before = RulesVersion.objects.filter(connection=a).count()
    data = {f"out_{f}": "on" for f in ("summary", "status")}
    data.update(
        {
            "in_summary": "changed",
            "in_description": "skip",
            "in_status": "changed",
            "in_priority": "changed",
            "in_type": "changed",
            "in_labels": "skip",
            "in_assignee": "skip",
            "in_dueDate": "skip",
            "map_status": "Done = Resolved",
        }
    )
    body = staff.post(reverse("ui:mapping", args=[a.pk]), data).content.decode()
    assert "nothing is published yet" in body and "STATUS_MAP" in body and "no problems found" in body
    assert RulesVersion.objects.filter(connection=a).count() == before
    bad = staff.post(reverse("ui:mapping", args=[a.pk]), {**data, "map_status": "Done"})
    assert bad.status_code == 400 and "Remote value = Local value" in bad.content.decode()
