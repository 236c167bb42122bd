-- Statements about the schema itself: migrations and version checks.

-- name: meta_migrate_lock
-- Serialises migrations of one schema across processes until the transaction ends.
SELECT pg_advisory_xact_lock(%(class_id)s::int, %(object_id)s::int)

-- name: meta_schema_revision
-- The alembic revision the schema is at (the table exists once migrated).
SELECT version_num FROM /* schema */alembic_version

-- name: meta_compatible_since
-- The oldest code revision that may run on this schema (schema_info, from revision 0003 on).
SELECT value FROM /* schema */schema_info WHERE key = 'compatible_since'
