-- Statements about jobs seen from the application: enqueue, look up, wait, cancel.
-- Every statement that changes a job's state writes its job_events row in the same
-- statement, so the history cannot disagree with the job.

-- name: job_enqueue
-- One job, through enqueue_job: the one definition of an insert, shared with SQL callers
-- (validation, unique-key scopes, debounce, lock gating, its event, the wake-up).
SELECT e.id, e.created, e.replaced
FROM /* schema */enqueue_job(
    task => %(task)s::text, args => %(args)s::jsonb, kwargs => %(kwargs)s::jsonb,
    queue => %(queue)s::text, priority => %(priority)s::int, run_at => %(run_at)s::timestamptz,
    delay => make_interval(secs => %(delay)s::float8), max_attempts => %(max_attempts)s::int,
    key => %(key)s::text, key_scope => %(key_scope)s::text,
    key_period => make_interval(secs => %(key_period)s::float8),
    on_conflict => %(on_conflict)s::text, debounce => make_interval(secs => %(debounce)s::float8),
    debounce_max => make_interval(secs => %(debounce_max)s::float8), lock => %(lock)s::text,
    lock_limit => %(lock_limit)s::int, meta => %(meta)s::jsonb) AS e

-- name: job_enqueue_many
-- Many jobs of one task in one statement, through enqueue_many (args: a JSON array of argument
-- arrays; kwargs: a JSON array of objects, or NULL when no job has any). The ids come back as
-- one array, in the items' order (one row to decode, not one per job).
SELECT coalesce(array_agg(e.id), '{}') AS ids
FROM /* schema */enqueue_many(
    task => %(task)s::text, args => %(args)s::jsonb, kwargs => %(kwargs)s::jsonb,
    queue => %(queue)s::text, priority => %(priority)s::int, run_at => %(run_at)s::timestamptz,
    delay => make_interval(secs => %(delay)s::float8), max_attempts => %(max_attempts)s::int,
    meta => %(meta)s::jsonb) AS e(id)

-- name: job_get
-- One job's row.
SELECT id, queue, task, args, kwargs, priority, run_at, status, attempts, failures, crashes,
       max_attempts, coalesce(key, scoped_key) AS key, coalesce(key_scope, CASE WHEN key IS NOT NULL
       THEN 'active' END) AS key_scope, key_until, lock_key AS lock, lock_limit, blocked, superseded_by,
       runner_id, result, error, cancel_requested, enqueued_at, started_at, finished_at, meta
FROM /* schema */jobs
WHERE id = %(id)s

-- name: job_status
-- One job's status (no row: no such job).
SELECT status FROM /* schema */jobs WHERE id = %(id)s

-- name: job_outcome
-- What job.result() needs: status, result and error.
SELECT status, result, error FROM /* schema */jobs WHERE id = %(id)s

-- name: job_wait_register
-- Registers a job.result() waiter; the statement that finishes the job will notify it.
INSERT INTO /* schema */result_waiters (job_id) VALUES (%(id)s) RETURNING id

-- name: job_wait_unregister
-- Removes a waiter that stops waiting (the finishing statement may have removed it already).
DELETE FROM /* schema */result_waiters WHERE id = %(waiter)s

-- name: job_cancel
-- Cancels a queued job now; a running job gets cancellation requested (cancel_jobs).
SELECT c.id, c.status FROM /* schema */cancel_jobs(ARRAY[%(id)s::bigint], %(reason)s::text) AS c
