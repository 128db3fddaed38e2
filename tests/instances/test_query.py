"""The built-in tracker's query language."""

from __future__ import annotations

import pytest

from instances.tracker.query import QueryError, parse

ITEM = {
    "key": "SUP-7",
    "project": {"key": "SUP"},
    "summary": "Printer on fire",
    "status": {"name": "In Progress"},
    "priority": {"name": "High"},
    "type": {"name": "Bug"},
    "labels": ["sync", "hw"],
    "assignee": None,
    "reporter": {"email": "anna@example.com"},
}


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ("project = SUP", True),
        ("project = sup AND labels = sync", True),
        ("project = ENG OR labels = hw", True),
        ("labels = nope", False),
        ("labels != nope", True),
        ('status = "In Progress"', True),
        ('status IN (Open, "In Progress")', True),
        ("status NOT IN (Open, Closed)", True),
        ("summary ~ printer", True),
        ("summary !~ printer", False),
        ("assignee IS EMPTY", True),
        ("reporter IS NOT EMPTY AND NOT priority = Low", True),
        ("(project = ENG OR priority = High) AND type = Bug", True),
        ("key = sup-7", True),
    ],
)
def test_it_matches_items(query, expected):
    assert parse(query)(ITEM) is expected


@pytest.mark.parametrize(
    ("query", "message"),
    [
        ("", "empty"),
        ("projekt = SUP", "Unknown field 'projekt'"),
        ("project SUP", "Expected =, !=, ~, !~, IN or IS"),
        ("project = SUP labels = x", "join conditions with AND or OR"),
        ("(project = SUP", "parenthesis is not closed"),
        ("status IN Open", "in parentheses"),
        ("status IN (Open Closed)", "commas"),
        ("assignee IS nobody", "EMPTY or NOT EMPTY"),
        ("project = ", "ends too early"),
        ("x" * 3000, "longer than"),
    ],
)
def test_bad_queries_say_what_is_wrong(query, message):
    with pytest.raises(QueryError, match=message):
        parse(query)
