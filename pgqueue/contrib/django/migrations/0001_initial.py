"""Applies sql/migrations/0001_initial.sql (see migration_ops), and records Django's state of
the read-only models (unmanaged: no table is created for them; their table names follow
PGQUEUE_SCHEMA).

Every later wrapper is the same two lines, named like its SQL file::

    from pgqueue.contrib.django.migration_ops import sql_migration
    Migration = sql_migration(__name__)
"""

from django.db import migrations, models

import pgqueue.contrib.django.models
from pgqueue.contrib.django import app
from pgqueue.contrib.django.migration_ops import sql_migration


def _table(name: str) -> str:
    return f'"{app.settings.schema}"."{name}"'


Migration = sql_migration(__name__, state_operations=(
    migrations.CreateModel(
        name='Job',
        fields=[
            ('id', models.BigIntegerField(primary_key=True, serialize=False)),
            ('queue', models.TextField()),
            ('task', models.TextField()),
            ('args', models.JSONField()),
            ('kwargs', models.JSONField()),
            ('priority', models.IntegerField()),
            ('run_at', models.DateTimeField()),
            ('status', models.TextField(choices=[('queued', 'queued'), ('running', 'running'), ('succeeded', 'succeeded'), ('failed', 'failed'), ('cancelled', 'cancelled')])),
            ('due', models.BooleanField()),
            ('attempts', models.IntegerField()),
            ('failures', models.IntegerField()),
            ('crashes', models.IntegerField()),
            ('max_attempts', models.IntegerField()),
            ('key', models.TextField(null=True)),
            ('runner_id', models.BigIntegerField(null=True)),
            ('result', models.JSONField(null=True)),
            ('error', models.JSONField(null=True)),
            ('cancel_requested', models.BooleanField()),
            ('enqueued_at', models.DateTimeField()),
            ('started_at', models.DateTimeField(null=True)),
            ('finished_at', models.DateTimeField(null=True)),
            ('meta', models.JSONField(null=True)),
        ],
        options={
            'db_table': _table("jobs"),
            'ordering': ['-id'],
            'managed': False,
        },
    ),
    migrations.CreateModel(
        name='JobEvent',
        fields=[
            ('id', models.BigIntegerField(primary_key=True, serialize=False)),
            ('at', models.DateTimeField()),
            ('kind', models.TextField(null=True)),
            ('from_status', models.TextField(null=True)),
            ('to_status', models.TextField()),
            ('attempt', models.IntegerField()),
            ('runner_id', models.BigIntegerField(null=True)),
            ('reason', models.TextField()),
            ('error', models.JSONField(null=True)),
        ],
        options={
            'db_table': _table("job_events"),
            'ordering': ['id'],
            'managed': False,
        },
    ),
    migrations.CreateModel(
        name='Runner',
        fields=[
            ('id', models.BigIntegerField(primary_key=True, serialize=False)),
            ('host', models.TextField()),
            ('pid', models.IntegerField()),
            ('queues', pgqueue.contrib.django.models.TextArrayField(null=True)),
            ('concurrency', models.IntegerField()),
            ('version', models.TextField()),
            ('heartbeat_interval', models.FloatField()),
            ('dead_after', models.FloatField()),
            ('state', models.TextField(choices=[('running', 'running'), ('stopped', 'stopped'), ('dead', 'dead')])),
            ('waiting', models.BooleanField()),
            ('started_at', models.DateTimeField()),
            ('heartbeat_at', models.DateTimeField()),
            ('stopped_at', models.DateTimeField(null=True)),
            ('reason', models.TextField(null=True)),
            ('liveness', models.BooleanField()),
            ('lost_reason', models.TextField(null=True)),
            ('max_crashes', models.IntegerField(null=True)),
        ],
        options={
            'db_table': _table("runners"),
            'ordering': ['-id'],
            'managed': False,
        },
    ),
))
