-- Statements behind the operator commands (status, jobs, job, retry, prune).

-- name: admin_queue_stats
-- Per-queue counts, lag and last-minute throughput (the queue_stats view).
SELECT * FROM /* schema */queue_stats ORDER BY queue

-- name: admin_health
-- The health view's one row.
SELECT * FROM /* schema */health

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

-- name: admin_task_names
-- Task names of recent jobs (for "did you mean ...?"): the newest jobs, by the primary key.
SELECT DISTINCT task FROM (SELECT task FROM /* schema */jobs ORDER BY id DESC LIMIT %(limit)s::int) AS recent

-- name: admin_job_timeline
-- One job's history with runner details (the job_timeline view).
SELECT * FROM /* schema */job_timeline WHERE job_id = %(id)s ORDER BY event_id

-- name: job_retry
-- Sends failed jobs back to the queue (retry_jobs: a fresh failure and crash budget, each with
-- an event): the jobs in `ids`, or (ids NULL) up to `batch` failed jobs matching task and queue
-- with after < id <= until (the caller moves `after` forward and fixes `until` at the start, so
-- jobs that fail again at once are not met twice). Of jobs sharing a key the first goes back,
-- and none whose key an unfinished job holds: those stay failed (retried = false).
WITH candidates AS MATERIALIZED (
    SELECT j.id, coalesce(j.key, j.scoped_key) AS key
    FROM /* schema */jobs AS j
    WHERE j.status = 'failed'
      AND (%(ids)s::bigint[] IS NULL OR j.id = ANY (%(ids)s::bigint[]))
      AND (%(task)s::text IS NULL OR j.task = %(task)s::text)
      AND (%(queue)s::text IS NULL OR j.queue = %(queue)s::text)
      AND j.id > %(after)s::bigint AND j.id <= %(until)s::bigint
    ORDER BY j.id
    LIMIT %(batch)s::int
)
SELECT c.id, c.key, coalesce(r.retried, false) AS retried
FROM candidates AS c
LEFT JOIN /* schema */retry_jobs(ARRAY(SELECT c2.id FROM candidates AS c2), %(reason)s::text) AS r
       ON r.id = c.id
ORDER BY c.id

-- name: job_max_id
-- The highest job id now (where a bulk retry stops).
SELECT coalesce(max(id), 0) AS id FROM /* schema */jobs

-- name: job_prune_batch
-- Deletes up to `batch` jobs of one final status that finished before `before`, oldest first,
-- with their events: one short transaction that never holds many locks (jobs_finished_idx).
-- A job whose period-scoped key still holds (key_until in the future) is kept.
WITH doomed AS (
    SELECT id
    FROM /* schema */jobs
    WHERE status = %(status)s::text AND finished_at < %(before)s::timestamptz
      AND (key_until IS NULL OR key_until <= now())
    ORDER BY finished_at
    LIMIT %(batch)s::int
    FOR UPDATE SKIP LOCKED
), events_gone AS (
    DELETE FROM /* schema */job_events AS e USING doomed AS d WHERE e.job_id = d.id
), jobs_gone AS (
    DELETE FROM /* schema */jobs AS j USING doomed AS d
    WHERE j.id = d.id AND j.status = %(status)s::text
    RETURNING j.id
)
SELECT count(*) AS deleted FROM jobs_gone

-- name: runner_prune
-- Deletes runners that stopped or died before `before` and that no job runs under; their old
-- events keep the runner id. Also forgotten waiters, and throughput rows older than `before`.
WITH runners_gone AS (
    DELETE FROM /* schema */runners AS r
    WHERE r.state <> 'running' AND r.stopped_at < %(before)s::timestamptz
      AND NOT EXISTS (SELECT 1 FROM /* schema */jobs AS j
                      WHERE j.runner_id = r.id AND j.status = 'running')
    RETURNING r.id
), waiters_gone AS (
    DELETE FROM /* schema */result_waiters WHERE since < %(before)s::timestamptz RETURNING id
), throughput_gone AS (
    DELETE FROM /* schema */throughput WHERE minute < %(before)s::timestamptz RETURNING 1
)
SELECT (SELECT count(*) FROM runners_gone) AS runners, (SELECT count(*) FROM waiters_gone) AS waiters,
       (SELECT count(*) FROM throughput_gone) AS throughput

-- name: admin_now
-- The database's clock.
SELECT now() AS now

-- ------------------------------------------------------------------- queue controls

-- name: queue_pause
-- Pauses a queue (pause_queue: from its commit on, no claim takes its jobs).
SELECT /* schema */pause_queue(%(queue)s::text, %(reason)s::text, %(by)s::text) AS done

-- name: queue_resume
-- Resumes a paused queue and wakes the runners that serve it.
SELECT /* schema */resume_queue(%(queue)s::text, %(by)s::text) AS done

-- name: queue_limit
-- Sets (or, with NULLs, removes) a queue's concurrency and rate limits.
SELECT /* schema */limit_queue(%(queue)s::text, %(concurrency)s::int, %(rate)s::int,
                               make_interval(secs => %(per)s::float8), %(by)s::text) AS done

-- name: queue_list
-- Every queue that holds jobs or has controls: its counts (queue_stats) and its controls.
SELECT coalesce(s.queue, q.name) AS queue,
       coalesce(s.queued, 0) AS queued, coalesce(s.scheduled, 0) AS scheduled,
       coalesce(s.running, 0) AS running, coalesce(s.blocked, 0) AS blocked,
       s.oldest_queued_age, coalesce(s.succeeded_last_hour, 0) AS succeeded_last_hour,
       coalesce(s.failed_last_hour, 0) AS failed_last_hour,
       q.paused_at, q.paused_by, q.pause_reason, q.concurrency_limit, q.rate_limit,
       extract(epoch FROM q.rate_period)::float8 AS rate_period, q.updated_at, q.updated_by
FROM /* schema */queue_stats AS s
FULL JOIN /* schema */queues AS q ON q.name = s.queue
ORDER BY 1

-- name: queue_history
-- The latest control changes of a queue (queue_events), newest first.
SELECT e.at, e.action, e.by, e.reason, e.detail
FROM /* schema */queue_events AS e
WHERE e.queue = %(queue)s::text
ORDER BY e.id DESC
LIMIT %(limit)s::int
