"""Webhook hardening: a signing secret per user, and the due time of a delivery's next attempt.

The secret is added empty and then filled row by row: a callable default in AddField is evaluated
once, which would give every existing user the same secret.
"""

from django.db import migrations, models

import tasks_app.models


def fill_secrets(apps, schema_editor) -> None:
    Preference = apps.get_model("tasks_app", "NotificationPreference")
    for preference in Preference.objects.filter(webhook_secret="").only("pk").iterator():
        Preference.objects.filter(pk=preference.pk).update(webhook_secret=tasks_app.models.new_webhook_secret())


class Migration(migrations.Migration):

    dependencies = [
        ("tasks_app", "0006_members_due_index"),
    ]

    operations = [
        migrations.AddField(
            model_name="notification",
            name="webhook_attempt",
            field=models.PositiveSmallIntegerField(default=0),
        ),
        migrations.AddField(
            model_name="notification",
            name="webhook_due_at",
            field=models.DateTimeField(blank=True, db_index=True, null=True),
        ),
        migrations.AddField(
            model_name="notificationpreference",
            name="webhook_secret",
            field=models.CharField(default="", max_length=100),
            preserve_default=False,
        ),
        migrations.RunPython(fill_secrets, migrations.RunPython.noop),
        migrations.AlterField(
            model_name="notificationpreference",
            name="webhook_secret",
            field=models.CharField(default=tasks_app.models.new_webhook_secret, max_length=100),
        ),
    ]
