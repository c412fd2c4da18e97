"""Full-text search of logs: a GIN index on PostgreSQL, an FTS5 table kept by triggers on SQLite."""

from django.db import migrations

POSTGRES = [
    "CREATE INDEX IF NOT EXISTS tasks_app_logentry_message_fts ON tasks_app_logentry "
    "USING GIN (to_tsvector('simple', message))",
]
POSTGRES_UNDO = ["DROP INDEX IF EXISTS tasks_app_logentry_message_fts"]
SQLITE = [
    "CREATE VIRTUAL TABLE IF NOT EXISTS tasks_app_logentry_fts USING fts5("
    "message, content='tasks_app_logentry', content_rowid='id')",
    "CREATE TRIGGER IF NOT EXISTS tasks_app_logentry_fts_insert AFTER INSERT ON tasks_app_logentry BEGIN "
    "INSERT INTO tasks_app_logentry_fts(rowid, message) VALUES (new.id, new.message); END",
    "CREATE TRIGGER IF NOT EXISTS tasks_app_logentry_fts_delete AFTER DELETE ON tasks_app_logentry BEGIN "
    "INSERT INTO tasks_app_logentry_fts(tasks_app_logentry_fts, rowid, message) VALUES ('delete', old.id, old.message); END",
    "INSERT INTO tasks_app_logentry_fts(tasks_app_logentry_fts) VALUES ('rebuild')",
]
SQLITE_UNDO = [
    "DROP TRIGGER IF EXISTS tasks_app_logentry_fts_insert",
    "DROP TRIGGER IF EXISTS tasks_app_logentry_fts_delete",
    "DROP TABLE IF EXISTS tasks_app_logentry_fts",
]


def run(statements_by_vendor):
    def apply(apps, schema_editor):
        for sql in statements_by_vendor.get(schema_editor.connection.vendor, []):
            schema_editor.execute(sql)

    return apply


class Migration(migrations.Migration):
    dependencies = [("tasks_app", "0001_initial")]

    operations = [
        migrations.RunPython(run({"postgresql": POSTGRES, "sqlite": SQLITE}),
                             run({"postgresql": POSTGRES_UNDO, "sqlite": SQLITE_UNDO})),
    ]
