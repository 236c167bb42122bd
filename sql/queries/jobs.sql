-- Statements about jobs seen from the application: enqueue, look up, wait, cancel.
-- Every statement that changes a job's state writes its job_events row in the same
-- statement, so the history cannot disagree with the job.

-- name: job_enqueue
-- Inserts one job and its 'enqueued' event, and wakes a runner waiting on its queue when the
-- job may run now (NOTIFY only while one waits; sent when the transaction commits).
WITH inserted AS (
    INSERT INTO /* schema */jobs (queue, task, args, kwargs, priority, run_at, due, max_attempts, meta)
    SELECT %(queue)s, %(task)s, %(args)s::jsonb, %(kwargs)s::jsonb, %(priority)s, at.run_at,
           /* schema */due_soon(at.run_at), %(max_attempts)s, %(meta)s::jsonb
    FROM (SELECT coalesce(%(run_at)s::timestamptz,
                          now() + make_interval(secs => %(delay)s::float8)) AS run_at) AS at
    RETURNING id, due
), event AS (
    INSERT INTO /* schema */job_events (job_id, to_status, kind, reason)
    SELECT id, 'queued', 'enqueued', 'enqueued' FROM inserted
), woken AS (
    SELECT /* schema */wake(ARRAY[%(queue)s::text]) FROM inserted WHERE inserted.due
)
SELECT id, true AS created, (SELECT count(*) FROM woken) AS woken FROM inserted

-- name: job_enqueue_unique
-- Inserts one job unless a queued or running job holds the same key; returns the holder then.
WITH inserted AS (
    INSERT INTO /* schema */jobs (queue, task, args, kwargs, priority, run_at, due, max_attempts, key,
                                  meta)
    SELECT %(queue)s, %(task)s, %(args)s::jsonb, %(kwargs)s::jsonb, %(priority)s, at.run_at,
           /* schema */due_soon(at.run_at), %(max_attempts)s, %(key)s, %(meta)s::jsonb
    FROM (SELECT coalesce(%(run_at)s::timestamptz,
                          now() + make_interval(secs => %(delay)s::float8)) AS run_at) AS at
    ON CONFLICT (key) WHERE key IS NOT NULL AND status IN ('queued', 'running') DO NOTHING
    RETURNING id, due
), event AS (
    INSERT INTO /* schema */job_events (job_id, to_status, kind, reason)
    SELECT id, 'queued', 'enqueued', 'enqueued with key ' || %(key)s FROM inserted
), woken AS (
    SELECT /* schema */wake(ARRAY[%(queue)s::text]) FROM inserted WHERE inserted.due
)
SELECT id, true AS created FROM inserted WHERE (SELECT count(*) FROM woken) >= 0
UNION ALL
-- The holder: visible unless it committed after this statement's snapshot, in which
-- case nothing is returned and the caller runs the statement again.
SELECT id, false AS created FROM /* schema */jobs
WHERE key = %(key)s AND status IN ('queued', 'running') AND NOT EXISTS (SELECT FROM inserted)

-- name: job_enqueue_many
-- Inserts many jobs of one task in one statement, with their events, and wakes a runner
-- waiting on the queue once. args is a JSON array of argument arrays; kwargs a JSON array of
-- objects, or NULL when no job has any.
WITH inserted AS (
    INSERT INTO /* schema */jobs (queue, task, args, kwargs, priority, run_at, due, max_attempts, meta)
    SELECT %(queue)s, %(task)s, call.args, coalesce(call.kwargs, '{}'), %(priority)s, at.run_at,
           at.due, %(max_attempts)s, %(meta)s::jsonb
    FROM (SELECT t.run_at, /* schema */due_soon(t.run_at) AS due
          FROM (SELECT coalesce(%(run_at)s::timestamptz,
                                now() + make_interval(secs => %(delay)s::float8)) AS run_at) AS t) AS at,
    -- ROWS FROM zips the two lists (a NULL kwargs list yields NULLs), in order.
         ROWS FROM (jsonb_array_elements(%(args)s::jsonb),
                    jsonb_array_elements(%(kwargs)s::jsonb)) WITH ORDINALITY AS call(args, kwargs, n)
    ORDER BY call.n
    RETURNING id, due
), events AS (
    INSERT INTO /* schema */job_events (job_id, to_status, kind, reason)
    SELECT id, 'queued', 'enqueued', 'enqueued' FROM inserted
), woken AS (
    SELECT /* schema */wake(ARRAY[%(queue)s::text]) FROM (SELECT 1 FROM inserted WHERE due LIMIT 1) AS one
)
SELECT id FROM inserted WHERE (SELECT count(*) FROM woken) >= 0 ORDER BY id

-- name: job_get
-- One job's row.
SELECT id, queue, task, args, kwargs, priority, run_at, status, attempts, failures, crashes,
       max_attempts, key, runner_id, result, error, cancel_requested, enqueued_at, started_at,
       finished_at, meta
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
-- Cancels a queued job now; a running job gets cancellation requested. Writes the event.
WITH changed AS (
    UPDATE /* schema */jobs
    SET status = CASE WHEN status = 'queued' THEN 'cancelled' ELSE status END,
        finished_at = CASE WHEN status = 'queued' THEN now() ELSE finished_at END,
        cancel_requested = true
    WHERE id = %(id)s
      AND (status = 'queued' OR (status = 'running' AND NOT cancel_requested))
    RETURNING id, status, attempts, runner_id
), events AS (
    INSERT INTO /* schema */job_events (job_id, from_status, to_status, attempt, runner_id, kind, reason)
    SELECT id,
           CASE WHEN status = 'cancelled' THEN 'queued' ELSE 'running' END,
           status, attempts, runner_id,
           CASE WHEN status = 'cancelled' THEN 'cancelled' ELSE 'cancel_requested' END,
           CASE WHEN status = 'cancelled' THEN %(reason)s
                ELSE 'cancellation requested: ' || %(reason)s END
    FROM changed
), notified AS (
    SELECT /* schema */notify_finished(array_agg(id)) AS n
    FROM changed WHERE status = 'cancelled' HAVING count(*) > 0
)
SELECT id, status, (SELECT n FROM notified) AS notified FROM changed
