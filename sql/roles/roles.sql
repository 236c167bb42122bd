-- pgqueue's three least-privilege roles for one schema (`pgqueue roles` prints this file,
-- `pgqueue grant` runs it). Group roles without LOGIN: grant them to your logins, e.g.
--     GRANT /* producer */ TO webapp;   GRANT /* worker */ TO jobs;   GRANT /* reader */ TO grafana;
-- Run it as a role that may create roles (CREATEROLE) and owns the schema (or a superuser),
-- after `pgqueue migrate`, and again after each upgrade: it is idempotent.
--
--   producer: enqueue, cancel and read its jobs' status and results (job.result() too); no
--             right on any table beyond reading jobs: it writes only through the SQL API's
--             functions, which run with their owner's rights.
--   worker:   what `pgqueue work` needs: read and write the queue's tables, call its
--             functions, LISTEN; no DDL (it owns nothing: no DROP, TRUNCATE or ALTER).
--   reader:   read every table and view (dashboards, reporting); write nothing.

DO $roles$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_catalog.pg_roles WHERE rolname = /* producer_literal */) THEN
        CREATE ROLE /* producer */ NOLOGIN;
    END IF;
    IF NOT EXISTS (SELECT 1 FROM pg_catalog.pg_roles WHERE rolname = /* worker_literal */) THEN
        CREATE ROLE /* worker */ NOLOGIN;
    END IF;
    IF NOT EXISTS (SELECT 1 FROM pg_catalog.pg_roles WHERE rolname = /* reader_literal */) THEN
        CREATE ROLE /* reader */ NOLOGIN;
    END IF;
END
$roles$;

COMMENT ON ROLE /* producer */ IS 'pgqueue (schema /* schema_literal_text */): may enqueue, cancel and read its jobs, nothing else.';
COMMENT ON ROLE /* worker */ IS 'pgqueue (schema /* schema_literal_text */): runs `pgqueue work`: reads and writes the queue''s tables; no DDL.';
COMMENT ON ROLE /* reader */ IS 'pgqueue (schema /* schema_literal_text */): reads the tables and views; writes nothing.';

GRANT USAGE ON SCHEMA /* schema_name */ TO /* producer */, /* worker */, /* reader */;

-- reader
GRANT SELECT ON ALL TABLES IN SCHEMA /* schema_name */ TO /* reader */;

-- worker
GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA /* schema_name */ TO /* worker */;
GRANT USAGE, SELECT ON ALL SEQUENCES IN SCHEMA /* schema_name */ TO /* worker */;
GRANT EXECUTE ON ALL FUNCTIONS IN SCHEMA /* schema_name */ TO /* worker */;

-- producer: the version check of an App, its jobs, job.result()'s waiter rows.
GRANT SELECT ON /* schema */alembic_version, /* schema */schema_info, /* schema */jobs TO /* producer */;
GRANT SELECT, INSERT, DELETE ON /* schema */result_waiters TO /* producer */;
GRANT USAGE ON SEQUENCE /* schema */result_waiters_id_seq TO /* producer */;
GRANT EXECUTE ON FUNCTION
    /* schema */enqueue_job(text, jsonb, jsonb, text, integer, timestamptz, interval, integer, text, text, interval, text, interval, interval, text, integer, jsonb),
    /* schema */enqueue(text, jsonb, jsonb, text, integer, timestamptz, interval, integer, text, text, interval, text, interval, interval, text, integer, jsonb),
    /* schema */enqueue_many(text, jsonb, jsonb, text, integer, timestamptz, interval, integer, jsonb),
    /* schema */cancel_jobs(bigint[], text),
    /* schema */cancel(bigint, text)
    TO /* producer */;
