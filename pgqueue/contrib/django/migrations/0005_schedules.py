from pgqueue.contrib.django.migration_ops import sql_migration

Migration = sql_migration(__name__)
