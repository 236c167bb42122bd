-- Statements of the Django integration: django.tasks results, and the bookkeeping of the
-- Django migrations that apply sql/migrations (the same alembic_version table
-- `pgqueue migrate` reads and writes, so either tool can continue from the other).

-- name: django_task_result
-- One job as a django.tasks TaskResult needs it: the row, the runner of every attempt (its
-- 'claimed' events, oldest first), the first and latest start, every attempt's error (events
-- that ended an attempt with one, oldest first) and the last event's reason.
SELECT j.id, j.task, j.queue, j.priority, j.args, j.kwargs, j.run_at, j.status, j.attempts,
       j.result, j.error, j.enqueued_at, j.started_at, j.finished_at, j.meta,
       coalesce(claims.runner_ids, '{}') AS worker_ids,
       claims.first_at AS first_started_at,
       claims.last_at AS last_started_at,
       coalesce(failures.errors, '[]') AS errors,
       (SELECT e.reason FROM /* schema */job_events AS e
        WHERE e.job_id = j.id ORDER BY e.id DESC LIMIT 1) AS last_reason
FROM /* schema */jobs AS j
LEFT JOIN LATERAL (
    SELECT array_agg(e.runner_id ORDER BY e.id) AS runner_ids, min(e.at) AS first_at,
           max(e.at) AS last_at
    FROM /* schema */job_events AS e
    WHERE e.job_id = j.id AND e.kind = 'claimed'
) AS claims ON true
LEFT JOIN LATERAL (
    SELECT jsonb_agg(e.error ORDER BY e.id) AS errors
    FROM /* schema */job_events AS e
    WHERE e.job_id = j.id AND e.error IS NOT NULL
) AS failures ON true
WHERE j.id = %(id)s::bigint

-- name: django_version_table
-- Whether the schema has alembic's bookkeeping table yet.
SELECT to_regclass(%(table)s::text) IS NOT NULL AS present

-- name: django_version_table_create
-- alembic's bookkeeping table, as `pgqueue migrate` creates it.
CREATE TABLE IF NOT EXISTS /* schema */alembic_version (
    version_num varchar(32) NOT NULL,
    CONSTRAINT alembic_version_pkc PRIMARY KEY (version_num)
)

-- name: django_version_set
-- Records the revision the schema is at, after django_version_clear (one row, as alembic
-- keeps it on the pgqueue branch).
INSERT INTO /* schema */alembic_version (version_num) VALUES (%(revision)s::text)

-- name: django_version_clear
-- Forgets the recorded revision (before recording the next, or after reverting the first).
DELETE FROM /* schema */alembic_version
