"""Every node gets the periodic work it needs (reconciliation, the sweepers, polling, bulk-job resumption)
when it migrates, not only a node set up with the demo: ``replicas.schedules.SCHEDULES``, created or
updated by name, so running it again creates nothing twice."""

from django.db import migrations


def ensure(apps, schema_editor):  # type: ignore[no-untyped-def]
    from replicas.schedules import SCHEDULES

    Schedule = apps.get_model("django_q", "Schedule")
    for entry in SCHEDULES:
        Schedule.objects.update_or_create(
            name=entry["name"],
            defaults={"func": entry["func"], "schedule_type": "I", "minutes": entry["minutes"], "repeats": -1},
        )


class Migration(migrations.Migration):
    dependencies = [
        ("replicas", "0006_twin_acked_seq"),
        ("django_q", "0019_alter_task_options_alter_ormq_key_alter_ormq_lock_and_more"),
    ]

    operations = [migrations.RunPython(ensure, migrations.RunPython.noop)]
