-- Statements of the worker's hot path. Each write about a
-- running job is fenced by (runner_id, attempts, status = 'running'): it applies only
-- while the job still runs the same attempt on the same runner.

-- name: job_claim
-- Claims up to `limit` runnable jobs for a live runner, in priority, run_at, id order,
-- skipping rows other runners hold, and records whether the runner now waits for work.
WITH RECURSIVE any_queue AS (
    -- For a runner serving every queue (queues is NULL): the distinct queues that have
    -- queued jobs, one probe of jobs_claim_idx each (a loose index scan).
    (SELECT queue FROM /* schema */jobs
     WHERE status = 'queued' AND %(queues)s::text[] IS NULL
     ORDER BY queue LIMIT 1)
    UNION ALL
    SELECT (SELECT j.queue FROM /* schema */jobs AS j
            WHERE j.status = 'queued' AND j.queue > a.queue ORDER BY j.queue LIMIT 1)
    FROM any_queue AS a
    WHERE a.queue IS NOT NULL
), served AS (
    SELECT unnest(%(queues)s::text[]) AS queue
    UNION ALL
    SELECT queue FROM any_queue WHERE queue IS NOT NULL
), locked AS MATERIALIZED (
    -- Per queue, the first rows in claim order that nobody else holds (SKIP LOCKED), so each
    -- lateral scan walks only its own queue's range of jobs_claim_idx; then the best overall.
    SELECT c.ctid, c.priority, c.run_at, c.id
    FROM served AS s
    CROSS JOIN LATERAL (
        SELECT j.ctid, j.priority, j.run_at, j.id
        FROM /* schema */jobs AS j
        WHERE j.queue = s.queue AND j.status = 'queued' AND j.run_at <= now()
        ORDER BY j.priority DESC, j.run_at, j.id
        LIMIT %(limit)s::int
        FOR UPDATE SKIP LOCKED
    ) AS c
    WHERE EXISTS (
        -- A runner declared dead must not claim: its jobs are being handed to others.
        SELECT FROM /* schema */runners WHERE id = %(runner_id)s::bigint AND state = 'running')
    ORDER BY c.priority DESC, c.run_at, c.id
    LIMIT %(limit)s::int
), claimed AS (
    UPDATE /* schema */jobs AS j
    SET status = 'running', runner_id = %(runner_id)s::bigint, attempts = j.attempts + 1,
        started_at = now()
    -- By ctid (a TID scan, no index lookup): `locked` holds these rows' locks in this very
    -- statement, so they cannot have moved, and it saw them queued. (A join instead would
    -- get a hash join over the whole table in a generic plan, the LIMIT being a parameter.)
    WHERE j.ctid = ANY (ARRAY(SELECT ctid FROM locked))
    RETURNING j.id, j.task, j.args, j.kwargs, j.queue, j.attempts, j.failures, j.max_attempts,
              j.cancel_requested
), events AS (
    INSERT INTO /* schema */job_events (job_id, from_status, to_status, attempt, runner_id, reason)
    SELECT id, 'queued', 'running', attempts, %(runner_id)s::bigint, 'claimed' FROM claimed
), waiting AS (
    -- Waiting: free slots left and no more work. Enqueues NOTIFY only while a runner
    -- waits; written only when it changes, so a busy runner writes nothing here.
    UPDATE /* schema */runners
    SET waiting = %(can_wait)s::boolean AND (SELECT count(*) FROM claimed) < %(limit)s::int
    WHERE id = %(runner_id)s::bigint AND state = 'running'
      AND waiting IS DISTINCT FROM
          (%(can_wait)s::boolean AND (SELECT count(*) FROM claimed) < %(limit)s::int)
)
SELECT id, task, args, kwargs, queue, attempts, failures, max_attempts, cancel_requested
FROM claimed

-- name: job_finish
-- Writes the outcomes of finished attempts in one statement, each fenced; returns the jobs it
-- changed (an outcome missing from the result was fenced out: its attempt was reclaimed).
WITH outcome AS (
    SELECT *
    FROM unnest(%(ids)s::bigint[], %(runner_ids)s::bigint[], %(attempts)s::int[],
                %(statuses)s::text[], %(results)s::text[], %(errors)s::text[],
                %(delays)s::float8[], %(failed)s::boolean[], %(reasons)s::text[])
         AS o(id, runner_id, attempt, status, result, error, delay, failed, reason)
), finished AS (
    UPDATE /* schema */jobs AS j
    SET status = o.status,
        runner_id = NULL,
        result = o.result::jsonb,
        error = coalesce(o.error::jsonb, j.error),
        failures = j.failures + o.failed::int,
        run_at = CASE WHEN o.status = 'queued'
                      THEN now() + make_interval(secs => o.delay) ELSE j.run_at END,
        finished_at = CASE WHEN o.status = 'queued' THEN NULL ELSE now() END
    FROM outcome AS o
    -- The fence. IS NOT DISTINCT FROM keeps the planner on the primary key (id) rather than
    -- jobs_running_idx, whose runner_id range it would otherwise walk.
    WHERE j.id = o.id AND j.runner_id IS NOT DISTINCT FROM o.runner_id
      AND j.attempts = o.attempt AND j.status = 'running'
    RETURNING j.id, j.status, j.attempts, j.queue, j.run_at, o.runner_id, o.reason
), events AS (
    INSERT INTO /* schema */job_events (job_id, from_status, to_status, attempt, runner_id, reason)
    SELECT id, 'running', status, attempts, runner_id, reason FROM finished
), notified AS (
    -- Wakes job.result() waiters; when nobody waits, one look at an empty table.
    SELECT /* schema */notify_finished(array_agg(id)) AS n
    FROM finished
    WHERE status <> 'queued' AND EXISTS (SELECT FROM /* schema */result_waiters)
    HAVING count(*) > 0
), woken AS (
    -- Retries due now: wake runners waiting on those queues.
    SELECT count(*) AS n FROM (
        SELECT /* schema */wake(array_agg(DISTINCT queue))
        FROM finished WHERE status = 'queued' AND run_at <= now()
        HAVING count(*) > 0
    ) AS w
)
-- Reading notified and woken in the select list is what runs them.
SELECT id, (SELECT n FROM notified) AS notified, (SELECT n FROM woken) AS woken
FROM finished

-- name: job_cancel_requested
-- Of the given jobs, those whose cancellation was requested while running.
SELECT id FROM /* schema */jobs
WHERE id = ANY (%(ids)s::bigint[]) AND status = 'running' AND cancel_requested
