"""Triggers start syncing matching items; bulk jobs sync many with progress, can be cancelled and resume;
reconciliation finds drift behind the node's back and repairs it."""

from __future__ import annotations

import pytest

from instances.models import Comment, Issue
from instances.tracker import services
from replicas import bulk, pipeline, reconcile, triggers
from replicas.models import BulkJob, SyncError, Trigger, Twin


def test_a_matching_item_starts_syncing_on_create_and_on_update(local_pair):
    a, b = local_pair
    triggers.trigger_create(connection=a.connection, query="labels = sync")
    tagged = a.create("tagged", labels=["sync"])
    plain = a.create("plain")
    assert list(Issue.objects.filter(project=b.project).values_list("summary", flat=True)) == ["tagged"]
    a.edit(plain.key, labels=["sync"])  # now it matches
    assert Issue.objects.filter(project=b.project).count() == 2
    assert Twin.objects.filter(connection=a.connection).count() == 2
    assert tagged.key != plain.key


def test_an_inactive_trigger_ignores_changes(local_pair):
    a, b = local_pair
    trigger = triggers.trigger_create(connection=a.connection, query="labels = sync")
    triggers.trigger_update(trigger=trigger, active=False)
    a.create("tagged", labels=["sync"])
    assert not Issue.objects.filter(project=b.project).exists()


def test_an_invalid_query_is_refused_with_the_trackers_message(local_pair):
    from instances.connectors import ConnectorError

    a, _ = local_pair
    with pytest.raises(ConnectorError, match="Unknown field 'lables'"):
        triggers.trigger_create(connection=a.connection, query="lables = sync")
    assert not Trigger.objects.exists()


def test_a_trigger_that_fails_to_evaluate_is_a_trigger_error(local_pair):
    a, b = local_pair
    Trigger.objects.create(connection=a.connection, query="lables = sync")  # stored before validation existed
    a.create("x")
    assert SyncError.objects.get().impact == "trigger"
    assert not Issue.objects.filter(project=b.project).exists()


def test_bulk_exalate_syncs_everything_the_trigger_matches(local_pair):
    a, b = local_pair
    for i in range(30):
        a.create(f"item {i}", labels=["sync"] if i % 3 else [])
    trigger = Trigger.objects.create(connection=a.connection, query="labels = sync")
    job = bulk.bulk_start(connection=a.connection, kind="exalate", trigger=trigger)
    job.refresh_from_db()
    assert (job.status, job.position, job.total) == ("done", 20, 20)
    assert Issue.objects.filter(project=b.project).count() == 20
    progress = bulk.progress(job)
    assert progress["percent"] == 100.0 and progress["errors"] == 0


def test_bulk_connect_links_pairs_and_reports_bad_lines(local_pair):
    a, b = local_pair
    one, two = a.create("one"), a.create("two")
    x, y = b.create("x"), b.create("y")
    csv_text = f"local_key,remote_key\n{one.key},{x.key}\n{two.key},{y.key}\nSUP-99,ENG-99\n"
    job = bulk.bulk_start(connection=a.connection, kind="connect", pairs_csv=csv_text)
    job.refresh_from_db()
    assert job.status == "done" and job.total == 3
    assert [e["item"] for e in job.errors] == ["SUP-99,ENG-99"]
    assert (b.issue(x.key).summary, b.issue(y.key).summary) == ("one", "two")
    with pytest.raises(bulk.BulkError, match="Line 2"):
        bulk.parse_pairs("a,b\nonly-one\n")


def test_bulk_unexalate_stops_everything(local_pair):
    a, _ = local_pair
    for i in range(3):
        pipeline.exalate(connection=a.connection, key=a.create(f"i{i}").key)
    bulk.bulk_start(connection=a.connection, kind="unexalate")
    assert set(Twin.objects.filter(connection=a.connection).values_list("state", flat=True)) == {"unexalated"}


def test_a_cancelled_job_stops_and_a_stale_job_resumes_where_it_stopped(local_pair, settings, monkeypatch):
    a, b = local_pair
    keys = [a.create(f"item {i}").key for i in range(60)]
    settings.TASKS_INLINE = False  # queue the job without running it
    monkeypatch.setattr("exalate_node.tasks.transaction.on_commit", lambda fn, *x, **k: None)
    job = bulk.bulk_start(connection=a.connection, kind="exalate", keys=keys)
    monkeypatch.undo()
    settings.TASKS_INLINE = True
    # A worker did the first 25 and died (its heartbeat is old).
    BulkJob.objects.filter(pk=job.pk).update(status="running", position=25, heartbeat_at="2000-01-01T00:00Z")
    assert bulk.resume_stale_jobs() == 1
    job.refresh_from_db()
    assert (job.status, job.position) == ("done", 60)
    assert Issue.objects.filter(project=b.project).count() == 35  # the first 25 were not redone
    cancelled = BulkJob.objects.create(connection=a.connection, kind="exalate", items=keys, total=60)
    bulk.bulk_cancel(job=cancelled)
    bulk.run_bulk(cancelled.pk)
    cancelled.refresh_from_db()
    assert (cancelled.status, cancelled.position) == ("cancelled", 0)


def test_reconciliation_finds_drift_behind_the_nodes_back_and_repairs_it(local_pair):
    a, b = local_pair
    issue = a.create("original")
    pipeline.exalate(connection=a.connection, key=issue.key)
    copy = b.only_issue()
    # A change that no webhook or poll delivered: written straight to the database.
    Issue.objects.filter(pk=issue.pk).update(summary="changed behind our back")
    Comment.objects.create(issue=issue, body="sneaky comment", author="x@y")
    report = reconcile.reconcile(connection=a.connection)
    assert (report.checked, report.drifted, report.repaired) == (1, 1, 1)
    assert report.findings[0]["fields"] == ["comments", "summary"]
    assert b.issue(copy.key).summary == "changed behind our back"
    assert [c.body for c in b.issue(copy.key).comments.all()] == ["sneaky comment"]
    # Nothing left to repair; a deleted item is reported, not repaired.
    Issue.objects.filter(pk=issue.pk).delete()
    report = reconcile.reconcile(connection=a.connection)
    assert (report.drifted, report.missing) == (0, 1)
    assert "no longer exists" in report.findings[0]["detail"]


def test_stuck_and_under_sync_queries(local_pair):
    from datetime import timedelta

    from django.utils import timezone

    from replicas.selectors import twins_stuck, twins_under_sync

    a, _ = local_pair
    pipeline.exalate(connection=a.connection, key=a.create("fine").key)
    stuck = Twin.objects.create(connection=a.connection, local_id="999", local_key="SUP-999", state="queued")
    Twin.objects.filter(pk=stuck.pk).update(created_at=timezone.now() - timedelta(minutes=30))
    assert twins_under_sync(connection_id=a.connection.pk).count() == 2
    assert list(twins_stuck(connection_id=a.connection.pk, minutes=10)) == [Twin.objects.get(pk=stuck.pk)]
    assert not twins_stuck(connection_id=a.connection.pk, minutes=60).exists()


def test_the_api_drives_triggers_bulk_and_reconciliation(api, local_pair):
    a, b = local_pair
    cid = a.connection.pk
    r = api.post(f"/api/v1/connections/{cid}/triggers/", {"query": "lables = x"}, format="json")
    assert r.status_code == 400 and "Unknown field" in r.json()["detail"]
    r = api.post(f"/api/v1/connections/{cid}/triggers/", {"query": "labels = sync"}, format="json")
    assert r.status_code == 201
    trigger_id = r.json()["id"]
    services.issue_create(project=a.project, actor="u@x", summary="old one", labels=["sync"])
    assert Issue.objects.filter(project=b.project).count() == 1  # the trigger fired on create
    r = api.post(
        f"/api/v1/connections/{cid}/bulk/", {"kind": "exalate", "trigger": trigger_id}, format="json"
    )
    assert r.status_code == 202, r.content
    job = api.get(f"/api/v1/connections/{cid}/bulk/{r.json()['id']}/").json()
    assert (job["status"], job["done"], job["total"]) == ("done", 1, 1)
    report = api.post(f"/api/v1/connections/{cid}/reconcile/").json()
    assert report["checked"] == 1 and report["drifted"] == 0
    twins = api.get(f"/api/v1/connections/{cid}/twins/").json()["results"]
    assert [t["state"] for t in twins] == ["synchronized"]
    assert api.get(f"/api/v1/connections/{cid}/twins/", {"stuck_minutes": "x"}).status_code == 400
    assert (
        api.patch(
            f"/api/v1/connections/{cid}/triggers/{trigger_id}/", {"active": False}, format="json"
        ).json()["active"]
        is False
    )


def test_reconciliation_compares_the_two_live_items_and_the_later_edit_is_repaired(local_pair):
    # The state a lost edit left behind (issue #18, F1): the person's value on one side was recorded as
    # already sent, so both sides said "synchronized" while their summaries differed, and a scan that only
    # compared each item with what it had sent found nothing.
    a, b = local_pair
    issue = a.create("from support")
    pipeline.exalate(connection=a.connection, key=issue.key)
    copy = b.only_issue()
    services.issue_update(issue=copy, actor="ed@example.com", summary="typed by a person")
    twin_b = Twin.objects.get(connection=b.connection)
    Issue.objects.filter(pk=issue.pk).update(summary="from support")  # as if the edit never left
    twin_a = Twin.objects.get(connection=a.connection)
    sent_a = {**twin_a.local_replica, "summary": "from support"}
    Twin.objects.filter(pk=twin_a.pk).update(local_replica=sent_a)
    assert a.issue(issue.key).summary != b.issue(copy.key).summary
    assert twin_b.local_replica["summary"] == "typed by a person"

    report = reconcile.reconcile(connection=a.connection)
    assert (report.drifted, report.repaired) == (1, 1), report.findings
    summary = report.findings[0]["values"]["summary"]
    assert summary == {"here": "from support", "there": "typed by a person", "later": "there"}
    assert a.issue(issue.key).summary == b.issue(copy.key).summary == "typed by a person"
    assert reconcile.reconcile(connection=a.connection).drifted == 0
    assert reconcile.reconcile(connection=b.connection).drifted == 0


def test_values_the_rules_leave_alone_are_not_drift(local_pair):
    a, b = local_pair
    b.project.statuses = ["New", "In Progress", "Resolved", "Closed"]
    b.project.save()
    issue = b.create(status="New")
    pipeline.exalate(connection=b.connection, key=issue.key)
    assert a.only_issue().status == "Open"  # New is unknown here: the rules kept the default
    for side in (a, b):
        report = reconcile.reconcile(connection=side.connection)
        assert report.drifted == 0, report.findings


@pytest.mark.django_db
def test_every_node_gets_its_schedules_when_it_migrates_and_only_once():
    from importlib import import_module

    from django.apps import apps as django_apps
    from django_q.models import Schedule

    from replicas.schedules import SCHEDULES, ensure_schedules

    names = sorted(entry["name"] for entry in SCHEDULES)
    assert sorted(Schedule.objects.values_list("name", flat=True)) == names  # migrate alone created them
    assert Schedule.objects.get(name="reconciliation").minutes == 15
    import_module("replicas.migrations.0007_default_schedules").ensure(django_apps, None)
    ensure_schedules()
    assert sorted(Schedule.objects.values_list("name", flat=True)) == names
