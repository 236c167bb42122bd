-- Statements behind the operator commands (status, jobs, job, retry, prune).

-- name: admin_queue_stats
-- Per-queue counts, lag and last-minute throughput (the queue_stats view).
SELECT * FROM /* schema */queue_stats ORDER BY queue

-- name: admin_runners
-- Runners that run now, or stopped or died within `recent_seconds` (the runner_health view).
SELECT * FROM /* schema */runner_health
WHERE state = 'running' OR stopped_at > now() - make_interval(secs => %(recent_seconds)s::float8)
ORDER BY id

-- name: admin_jobs
-- Jobs matching the optional filters (NULL: any), newest first.
SELECT id, task, queue, status, priority, attempts, failures, crashes, run_at, enqueued_at,
       started_at, finished_at, key
FROM /* schema */jobs
WHERE (%(queue)s::text IS NULL OR queue = %(queue)s::text)
  AND (%(status)s::text IS NULL OR status = %(status)s::text)
  AND (%(task)s::text IS NULL OR task = %(task)s::text)
  AND (%(since)s::timestamptz IS NULL OR enqueued_at >= %(since)s::timestamptz)
ORDER BY id DESC
LIMIT %(limit)s::int

-- name: admin_job_timeline
-- One job's history with runner details (the job_timeline view).
SELECT * FROM /* schema */job_timeline WHERE job_id = %(id)s ORDER BY event_id

-- name: job_retry
-- Sends failed jobs back to the queue with a fresh failure and crash budget, each with an
-- event: the jobs in `ids`, or (ids NULL) up to `batch` failed jobs matching task and queue.
-- A job whose key is now held by an unfinished job is left failed.
WITH target AS (
    SELECT j.id
    FROM /* schema */jobs AS j
    WHERE j.status = 'failed'
      AND (%(ids)s::bigint[] IS NULL OR j.id = ANY (%(ids)s::bigint[]))
      AND (%(task)s::text IS NULL OR j.task = %(task)s::text)
      AND (%(queue)s::text IS NULL OR j.queue = %(queue)s::text)
      AND (j.key IS NULL OR NOT EXISTS (
            SELECT 1 FROM /* schema */jobs AS k
            WHERE k.key = j.key AND k.status IN ('queued', 'running')))
    ORDER BY j.id
    LIMIT %(batch)s::int
    FOR UPDATE SKIP LOCKED
), retried AS (
    UPDATE /* schema */jobs AS j
    SET status = 'queued', run_at = now(), due = true, finished_at = NULL, failures = 0,
        crashes = 0, result = NULL, cancel_requested = false
    FROM target AS t
    WHERE j.id = t.id AND j.status = 'failed'
    RETURNING j.id, j.attempts, j.queue
), events AS (
    INSERT INTO /* schema */job_events (job_id, from_status, to_status, attempt, reason)
    SELECT id, 'failed', 'queued', attempts, %(reason)s FROM retried
), woken AS (
    SELECT count(*) AS n FROM (
        SELECT /* schema */wake(array_agg(DISTINCT queue)) FROM retried HAVING count(*) > 0
    ) AS w
)
SELECT id, (SELECT n FROM woken) AS woken FROM retried ORDER BY id

-- name: job_prune_batch
-- Deletes up to `batch` finished jobs that finished before `before`, with their events, in id
-- order after `after`: short transactions that never hold many locks.
WITH doomed AS (
    SELECT id
    FROM /* schema */jobs
    WHERE id > %(after)s::bigint
      AND status IN ('succeeded', 'failed', 'cancelled')
      AND finished_at < %(before)s::timestamptz
    ORDER BY id
    LIMIT %(batch)s::int
    FOR UPDATE SKIP LOCKED
), events_gone AS (
    DELETE FROM /* schema */job_events AS e USING doomed AS d WHERE e.job_id = d.id
), jobs_gone AS (
    DELETE FROM /* schema */jobs AS j USING doomed AS d WHERE j.id = d.id RETURNING j.id
)
SELECT count(*) AS deleted, max(id) AS last_id FROM jobs_gone

-- name: runner_prune
-- Deletes runners that stopped or died before `before` and that no job or remaining event
-- mentions; and forgotten waiters.
WITH runners_gone AS (
    DELETE FROM /* schema */runners AS r
    WHERE r.state <> 'running' AND r.stopped_at < %(before)s::timestamptz
      AND NOT EXISTS (SELECT 1 FROM /* schema */jobs AS j WHERE j.runner_id = r.id)
      AND NOT EXISTS (SELECT 1 FROM /* schema */job_events AS e WHERE e.runner_id = r.id)
    RETURNING r.id
), waiters_gone AS (
    DELETE FROM /* schema */result_waiters WHERE since < %(before)s::timestamptz RETURNING id
)
SELECT (SELECT count(*) FROM runners_gone) AS runners, (SELECT count(*) FROM waiters_gone) AS waiters

-- name: admin_now
-- The database's clock.
SELECT now() AS now
