-- Statements of the web dashboard (pgqueue.dashboard) and of the cluster metrics.
--
-- Reads run on the dashboard's own small pool, each in a READ ONLY transaction with a local
-- statement timeout; they never prepare statements, so each is planned with its parameter
-- values (a custom plan): `(%(queue)s::text IS NULL OR j.queue = %(queue)s::text)` folds to
-- `true` or to `j.queue = '...'`, and the index that fits is chosen for the filters given.
--
-- Every read is index-backed and bounded (tests/test_dashboard_plans.py EXPLAINs each one):
-- * no count(*) over jobs or job_events: counts of queued, scheduled and running jobs walk
--   their partial indexes and stop at a cap (`cap`), finished counts come from the throughput
--   rollup;
-- * lists page by keyset, never OFFSET, and filters that no index serves (task, args) look at
--   a bounded window of rows (`scan`) in index order, saying where the window ended;
-- * every read of job_events names one job (the primary key) or a time window (the BRIN index
--   on `at`), and stops at a row limit.
--
-- Operator actions (retry, cancel, delete) are one statement each, over at most a bounded
-- list of ids, and write a job_events row naming the dashboard and its user (`reason`). The
-- queue and schedule controls run the statements of the Python API (see "queues, schedules").

-- ------------------------------------------------------------------------ overview

-- name: dashboard_queues
-- Per queue: ready jobs (queued and due, counted up to `cap`), the run_at of the oldest ready
-- job (its lag), scheduled and running jobs (counted up to `cap` over all queues), and jobs
-- finished in the last hour and day (the throughput rollup). `heads` is a loose index scan of
-- jobs_claim_idx: one probe per (queue, priority) holding ready jobs, at most `max_heads`.
WITH RECURSIVE heads AS (
    (SELECT j.queue, j.priority, j.run_at, 1 AS n
     FROM /* schema */jobs AS j
     WHERE j.status = 'queued' AND j.due
     ORDER BY j.queue, j.priority DESC, j.run_at, j.id
     LIMIT 1)
    UNION ALL
    SELECT nxt.queue, nxt.priority, nxt.run_at, h.n + 1
    FROM heads AS h
    CROSS JOIN LATERAL (
        SELECT c.queue, c.priority, c.run_at
        FROM ((SELECT j.queue, j.priority, j.run_at, 1 AS branch
               FROM /* schema */jobs AS j
               WHERE j.status = 'queued' AND j.due AND j.queue = h.queue AND j.priority < h.priority
               ORDER BY j.queue, j.priority DESC, j.run_at, j.id
               LIMIT 1)
              UNION ALL
              (SELECT j.queue, j.priority, j.run_at, 2 AS branch
               FROM /* schema */jobs AS j
               WHERE j.status = 'queued' AND j.due AND j.queue > h.queue
               ORDER BY j.queue, j.priority DESC, j.run_at, j.id
               LIMIT 1)) AS c
        ORDER BY c.branch
        LIMIT 1
    ) AS nxt
    WHERE h.n < %(max_heads)s::int
), ready AS (
    SELECT q.queue, q.oldest,
           (SELECT count(*) FROM (SELECT 1 FROM /* schema */jobs AS j
                                  WHERE j.queue = q.queue AND j.status = 'queued' AND j.due
                                  LIMIT %(cap)s::int) AS s) AS ready
    FROM (SELECT h.queue, min(h.run_at) AS oldest FROM heads AS h GROUP BY h.queue) AS q
), scheduled AS (
    -- ORDER BY run_at: a walk of jobs_scheduled_idx that stops at the cap.
    SELECT s.queue, count(*) AS scheduled, min(s.run_at) AS next_run_at
    FROM (SELECT j.queue, j.run_at FROM /* schema */jobs AS j
          WHERE j.status = 'queued' AND NOT j.due AND NOT j.blocked
          ORDER BY j.run_at LIMIT %(cap)s::int) AS s
    GROUP BY s.queue
), running AS (
    SELECT r.queue, count(*) AS running
    FROM (SELECT j.queue FROM /* schema */jobs AS j
          WHERE j.status = 'running' ORDER BY j.runner_id LIMIT %(cap)s::int) AS r
    GROUP BY r.queue
), throughput_queues AS (
    -- The queues of the rollup: a loose scan of its primary key (queue, minute, runner_id).
    WITH RECURSIVE tq AS (
        (SELECT t.queue FROM /* schema */throughput AS t ORDER BY t.queue LIMIT 1)
        UNION ALL
        SELECT (SELECT t.queue FROM /* schema */throughput AS t
                WHERE t.queue > tq.queue ORDER BY t.queue LIMIT 1)
        FROM tq WHERE tq.queue IS NOT NULL
    )
    SELECT tq.queue FROM tq WHERE tq.queue IS NOT NULL LIMIT %(max_heads)s::int
), done AS (
    SELECT tq.queue, d.*
    FROM throughput_queues AS tq
    CROSS JOIN LATERAL (
        SELECT sum(t.succeeded) FILTER (WHERE t.minute > now() - interval '1 hour') AS succeeded_1h,
               sum(t.failed) FILTER (WHERE t.minute > now() - interval '1 hour') AS failed_1h,
               sum(t.retried) FILTER (WHERE t.minute > now() - interval '1 hour') AS retried_1h,
               sum(t.crashed) FILTER (WHERE t.minute > now() - interval '1 hour') AS crashed_1h,
               sum(t.cancelled) FILTER (WHERE t.minute > now() - interval '1 hour') AS cancelled_1h,
               sum(t.succeeded) AS succeeded_24h, sum(t.failed) AS failed_24h,
               sum(t.run_seconds) FILTER (WHERE t.minute > now() - interval '1 hour') AS run_seconds_1h
        FROM /* schema */throughput AS t
        WHERE t.queue = tq.queue AND t.minute > now() - interval '1 day'
    ) AS d
    WHERE d.succeeded_24h IS NOT NULL
), blocked AS (
    -- Jobs waiting for a lock's slot (jobs_lock_waiters_idx), up to the cap.
    SELECT b.queue, count(*) AS blocked
    FROM (SELECT j.queue FROM /* schema */jobs AS j
          WHERE j.status = 'queued' AND j.blocked LIMIT %(cap)s::int) AS b
    GROUP BY b.queue
), names AS (
    SELECT queue FROM ready UNION SELECT queue FROM scheduled
    UNION SELECT queue FROM running UNION SELECT queue FROM done
    UNION SELECT queue FROM blocked UNION SELECT q.name FROM /* schema */queues AS q
)
SELECT n.queue,
       coalesce(rd.ready, 0)::bigint AS ready,
       now() - rd.oldest AS oldest_ready_age,
       coalesce(sc.scheduled, 0)::bigint AS scheduled,
       sc.next_run_at,
       coalesce(rn.running, 0)::bigint AS running,
       coalesce(dn.succeeded_1h, 0)::bigint AS succeeded_1h,
       coalesce(dn.failed_1h, 0)::bigint AS failed_1h,
       coalesce(dn.retried_1h, 0)::bigint AS retried_1h,
       coalesce(dn.crashed_1h, 0)::bigint AS crashed_1h,
       coalesce(dn.cancelled_1h, 0)::bigint AS cancelled_1h,
       coalesce(dn.succeeded_24h, 0)::bigint AS succeeded_24h,
       coalesce(dn.failed_24h, 0)::bigint AS failed_24h,
       coalesce(dn.run_seconds_1h, 0)::float8 AS run_seconds_1h,
       coalesce(rd.ready, 0) >= %(cap)s::int AS ready_truncated,
       (SELECT count(*) FROM heads) >= %(max_heads)s::int AS heads_truncated,
       coalesce((SELECT sum(s.scheduled) FROM scheduled AS s), 0) >= %(cap)s::int AS scheduled_truncated,
       coalesce((SELECT sum(r.running) FROM running AS r), 0) >= %(cap)s::int AS running_truncated,
       coalesce(bl.blocked, 0)::bigint AS blocked,
       qc.paused_at, qc.pause_reason, qc.paused_by, qc.concurrency_limit, qc.rate_limit,
       extract(epoch FROM qc.rate_period)::float8 AS rate_period
FROM names AS n
LEFT JOIN ready AS rd ON rd.queue = n.queue
LEFT JOIN scheduled AS sc ON sc.queue = n.queue
LEFT JOIN running AS rn ON rn.queue = n.queue
LEFT JOIN done AS dn ON dn.queue = n.queue
LEFT JOIN blocked AS bl ON bl.queue = n.queue
LEFT JOIN /* schema */queues AS qc ON qc.name = n.queue
ORDER BY n.queue

-- name: dashboard_throughput
-- Attempts that ended per minute over the last `minutes` minutes, all queues or one (the
-- rollup's primary key, one range per queue), one row per minute (zeros included).
WITH RECURSIVE tq AS (
    (SELECT t.queue FROM /* schema */throughput AS t ORDER BY t.queue LIMIT 1)
    UNION ALL
    SELECT (SELECT t.queue FROM /* schema */throughput AS t
            WHERE t.queue > tq.queue ORDER BY t.queue LIMIT 1)
    FROM tq WHERE tq.queue IS NOT NULL
), rows AS (
    SELECT t.minute, t.succeeded, t.failed, t.retried, t.cancelled, t.crashed, t.run_seconds
    FROM tq
    CROSS JOIN LATERAL (
        -- ORDER BY and LIMIT keep this a range scan of the primary key per queue (the planner
        -- cannot tell how much of the table a window relative to now() selects).
        SELECT * FROM /* schema */throughput AS t
        WHERE t.queue = tq.queue
          AND t.minute >= date_trunc('minute', now()) - make_interval(mins => %(minutes)s::int - 1)
        ORDER BY t.queue, t.minute DESC
        LIMIT 1000000
    ) AS t
    WHERE tq.queue IS NOT NULL AND (%(queue)s::text IS NULL OR tq.queue = %(queue)s::text)
)
SELECT m.minute,
       coalesce(sum(r.succeeded), 0)::bigint AS succeeded,
       coalesce(sum(r.failed), 0)::bigint AS failed,
       coalesce(sum(r.retried), 0)::bigint AS retried,
       coalesce(sum(r.cancelled), 0)::bigint AS cancelled,
       coalesce(sum(r.crashed), 0)::bigint AS crashed,
       coalesce(sum(r.run_seconds), 0)::float8 AS run_seconds
FROM generate_series(date_trunc('minute', now()) - make_interval(mins => %(minutes)s::int - 1),
                     date_trunc('minute', now()), interval '1 minute') AS m(minute)
LEFT JOIN rows AS r ON r.minute = m.minute
GROUP BY m.minute
ORDER BY m.minute

-- name: dashboard_runner_summary
-- Runners by state: alive (heartbeat within its lease), stale (running, heartbeat older than
-- its lease: the reaper is about to declare it dead), and those that died or stopped within
-- `recent_seconds`; with the jobs that still run on runners that are not alive.
SELECT count(*) FILTER (WHERE r.state = 'running'
                          AND now() - r.heartbeat_at < make_interval(secs => r.dead_after)) AS alive,
       count(*) FILTER (WHERE r.state = 'running'
                          AND now() - r.heartbeat_at >= make_interval(secs => r.dead_after)) AS stale,
       count(*) FILTER (WHERE r.state = 'dead'
                          AND r.stopped_at > now() - make_interval(secs => %(recent_seconds)s::float8)) AS dead,
       count(*) FILTER (WHERE r.state = 'stopped'
                          AND r.stopped_at > now() - make_interval(secs => %(recent_seconds)s::float8)) AS stopped,
       coalesce(sum(r.concurrency) FILTER (WHERE r.state = 'running'), 0)::bigint AS slots,
       (SELECT count(*) FROM (
            SELECT 1 FROM /* schema */jobs AS j
            LEFT JOIN /* schema */runners AS o ON o.id = j.runner_id
            WHERE j.status = 'running'
              AND (o.id IS NULL OR o.state <> 'running'
                   OR now() - o.heartbeat_at >= make_interval(secs => o.dead_after))
            LIMIT %(cap)s::int) AS s) AS orphaned_jobs
FROM /* schema */runners AS r
WHERE r.state = 'running' OR r.stopped_at > now() - make_interval(secs => %(recent_seconds)s::float8)

-- name: dashboard_orphans
-- Jobs running on runners that do not look alive (the reaper will re-queue them), per runner.
SELECT j.runner_id, o.state, o.host, o.pid, now() - o.heartbeat_at AS heartbeat_age,
       count(*) AS jobs, min(j.started_at) AS since
FROM (SELECT j.id, j.runner_id, j.started_at FROM /* schema */jobs AS j
      WHERE j.status = 'running' ORDER BY j.runner_id LIMIT %(cap)s::int) AS j
LEFT JOIN /* schema */runners AS o ON o.id = j.runner_id
WHERE o.id IS NULL OR o.state <> 'running' OR now() - o.heartbeat_at >= make_interval(secs => o.dead_after)
GROUP BY j.runner_id, o.state, o.host, o.pid, o.heartbeat_at
ORDER BY j.runner_id
LIMIT 50

-- ---------------------------------------------------------------------------- jobs
-- Job lists: one statement per order (the index that serves it). Each returns 'job' rows
-- (at most `limit`, a page plus one to know there is more) and one 'window' row: how many rows
-- the window looked at and the key of the last one (where "search further" continues). With no
-- filter the window is the page itself (`scan` = `limit`); with filters no index serves (task,
-- args, kwargs, queue outside the claim order) at most `scan` rows are looked at.
-- Columns of 'job' rows are the same in every list statement.

-- name: dashboard_jobs_recent
-- Every job, newest first (the primary key, backwards), before `before_id`.
WITH win AS MATERIALIZED (
    SELECT j.id,
           (%(queue)s::text IS NULL OR j.queue = %(queue)s::text)
           AND (%(task)s::text IS NULL OR j.task = %(task)s::text)
           AND (%(args)s::jsonb IS NULL OR j.args @> %(args)s::jsonb)
           AND (%(kwargs)s::jsonb IS NULL OR j.kwargs @> %(kwargs)s::jsonb) AS hit
    FROM /* schema */jobs AS j
    WHERE (%(before_id)s::bigint IS NULL OR j.id < %(before_id)s::bigint)
    ORDER BY j.id DESC
    LIMIT %(scan)s::int
), page AS (
    SELECT w.id FROM win AS w WHERE w.hit ORDER BY w.id DESC LIMIT %(limit)s::int
)
SELECT 'job' AS what, j.id, j.task, j.queue, j.status, j.priority, j.attempts, j.max_attempts,
       j.failures, j.crashes, j.run_at, j.enqueued_at, j.started_at, j.finished_at, j.runner_id,
       j.key, j.due, j.cancel_requested,
       CASE WHEN pg_column_size(j.args) + pg_column_size(j.kwargs) <= %(max_args)s::int
            THEN j.args END AS args,
       CASE WHEN pg_column_size(j.args) + pg_column_size(j.kwargs) <= %(max_args)s::int
            THEN j.kwargs END AS kwargs,
       pg_column_size(j.args) + pg_column_size(j.kwargs) AS args_size,
       left(j.error ->> 'type', 200) AS error_type, left(j.error ->> 'message', 300) AS error_message,
       NULL::bigint AS scanned, NULL::bigint AS last_id, NULL::timestamptz AS last_at,
       NULL::int AS last_priority
FROM page AS p JOIN /* schema */jobs AS j ON j.id = p.id
UNION ALL
SELECT 'window', NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL,
       NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL,
       (SELECT count(*) FROM win), (SELECT min(id) FROM win), NULL, NULL
ORDER BY what, id DESC

-- name: dashboard_jobs_finished
-- Jobs of one finished status, most recently finished first (jobs_finished_idx), before the
-- key (`before_at`, `before_id`).
WITH win AS MATERIALIZED (
    SELECT j.id, j.finished_at,
           (%(queue)s::text IS NULL OR j.queue = %(queue)s::text)
           AND (%(task)s::text IS NULL OR j.task = %(task)s::text)
           AND (%(args)s::jsonb IS NULL OR j.args @> %(args)s::jsonb)
           AND (%(kwargs)s::jsonb IS NULL OR j.kwargs @> %(kwargs)s::jsonb) AS hit
    FROM /* schema */jobs AS j
    WHERE j.status = %(status)s::text AND j.status IN ('succeeded', 'failed', 'cancelled')
      AND (%(before_at)s::timestamptz IS NULL OR j.finished_at <= %(before_at)s::timestamptz)
      AND (%(before_at)s::timestamptz IS NULL
           OR (j.finished_at, j.id) < (%(before_at)s::timestamptz, %(before_id)s::bigint))
    ORDER BY j.finished_at DESC, j.id DESC
    LIMIT %(scan)s::int
), page AS (
    SELECT w.id, w.finished_at FROM win AS w WHERE w.hit
    ORDER BY w.finished_at DESC, w.id DESC LIMIT %(limit)s::int
), last AS (
    SELECT w.id, w.finished_at FROM win AS w ORDER BY w.finished_at, w.id LIMIT 1
)
SELECT 'job' AS what, j.id, j.task, j.queue, j.status, j.priority, j.attempts, j.max_attempts,
       j.failures, j.crashes, j.run_at, j.enqueued_at, j.started_at, j.finished_at, j.runner_id,
       j.key, j.due, j.cancel_requested,
       CASE WHEN pg_column_size(j.args) + pg_column_size(j.kwargs) <= %(max_args)s::int
            THEN j.args END AS args,
       CASE WHEN pg_column_size(j.args) + pg_column_size(j.kwargs) <= %(max_args)s::int
            THEN j.kwargs END AS kwargs,
       pg_column_size(j.args) + pg_column_size(j.kwargs) AS args_size,
       left(j.error ->> 'type', 200) AS error_type, left(j.error ->> 'message', 300) AS error_message,
       NULL::bigint AS scanned, NULL::bigint AS last_id, NULL::timestamptz AS last_at,
       NULL::int AS last_priority
FROM page AS p JOIN /* schema */jobs AS j ON j.id = p.id
UNION ALL
SELECT 'window', NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL,
       NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL,
       (SELECT count(*) FROM win), (SELECT id FROM last), (SELECT finished_at FROM last), NULL
ORDER BY what, finished_at DESC, id DESC

-- name: dashboard_jobs_ready
-- Queued jobs that may run now, in the order runners claim them (priority, run_at, id; in one
-- queue: jobs_claim_idx, else jobs_ready_idx), after the key (`after_priority`, `after_at`,
-- `after_id`). Two ranges, each an index range: the rest of the key's priority, then the lower
-- priorities (`below_priority` is after_priority - 1, or the top on the first page).
WITH win AS MATERIALIZED (
    SELECT w.id, w.priority, w.run_at, w.hit
    FROM ((SELECT j.id, j.priority, j.run_at, 1 AS part,
                  (%(task)s::text IS NULL OR j.task = %(task)s::text)
                  AND (%(args)s::jsonb IS NULL OR j.args @> %(args)s::jsonb)
                  AND (%(kwargs)s::jsonb IS NULL OR j.kwargs @> %(kwargs)s::jsonb) AS hit
           FROM /* schema */jobs AS j
           WHERE j.status = 'queued' AND j.due
             AND (%(queue)s::text IS NULL OR j.queue = %(queue)s::text)
             AND j.priority = %(after_priority)s::int
             AND (j.run_at, j.id) > (%(after_at)s::timestamptz, %(after_id)s::bigint)
           ORDER BY j.priority DESC, j.run_at, j.id
           LIMIT %(scan)s::int)
          UNION ALL
          (SELECT j.id, j.priority, j.run_at, 2 AS part,
                  (%(task)s::text IS NULL OR j.task = %(task)s::text)
                  AND (%(args)s::jsonb IS NULL OR j.args @> %(args)s::jsonb)
                  AND (%(kwargs)s::jsonb IS NULL OR j.kwargs @> %(kwargs)s::jsonb) AS hit
           FROM /* schema */jobs AS j
           WHERE j.status = 'queued' AND j.due
             AND (%(queue)s::text IS NULL OR j.queue = %(queue)s::text)
             AND j.priority <= %(below_priority)s::int
           ORDER BY j.priority DESC, j.run_at, j.id
           LIMIT %(scan)s::int)) AS w
    ORDER BY w.part, w.priority DESC, w.run_at, w.id
    LIMIT %(scan)s::int
), page AS (
    SELECT w.id, w.priority, w.run_at FROM win AS w WHERE w.hit
    ORDER BY w.priority DESC, w.run_at, w.id LIMIT %(limit)s::int
), last AS (
    SELECT w.id, w.priority, w.run_at FROM win AS w
    ORDER BY w.priority, w.run_at DESC, w.id DESC LIMIT 1
)
SELECT 'job' AS what, j.id, j.task, j.queue, j.status, j.priority, j.attempts, j.max_attempts,
       j.failures, j.crashes, j.run_at, j.enqueued_at, j.started_at, j.finished_at, j.runner_id,
       j.key, j.due, j.cancel_requested,
       CASE WHEN pg_column_size(j.args) + pg_column_size(j.kwargs) <= %(max_args)s::int
            THEN j.args END AS args,
       CASE WHEN pg_column_size(j.args) + pg_column_size(j.kwargs) <= %(max_args)s::int
            THEN j.kwargs END AS kwargs,
       pg_column_size(j.args) + pg_column_size(j.kwargs) AS args_size,
       left(j.error ->> 'type', 200) AS error_type, left(j.error ->> 'message', 300) AS error_message,
       NULL::bigint AS scanned, NULL::bigint AS last_id, NULL::timestamptz AS last_at,
       NULL::int AS last_priority
FROM page AS p JOIN /* schema */jobs AS j ON j.id = p.id
UNION ALL
SELECT 'window', NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL,
       NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL,
       (SELECT count(*) FROM win), (SELECT id FROM last), (SELECT run_at FROM last),
       (SELECT priority FROM last)
ORDER BY what, priority DESC, run_at, id

-- name: dashboard_jobs_scheduled
-- Queued jobs scheduled for later, soonest first (jobs_scheduled_idx), after the key
-- (`after_at`, `after_id`). (Jobs waiting for a lock's slot are not scheduled: they are counted
-- in queue_stats.blocked.)
WITH win AS MATERIALIZED (
    SELECT j.id, j.run_at,
           (%(queue)s::text IS NULL OR j.queue = %(queue)s::text)
           AND (%(task)s::text IS NULL OR j.task = %(task)s::text)
           AND (%(args)s::jsonb IS NULL OR j.args @> %(args)s::jsonb)
           AND (%(kwargs)s::jsonb IS NULL OR j.kwargs @> %(kwargs)s::jsonb) AS hit
    FROM /* schema */jobs AS j
    WHERE j.status = 'queued' AND NOT j.due AND NOT j.blocked
      AND (%(after_at)s::timestamptz IS NULL OR j.run_at >= %(after_at)s::timestamptz)
      AND (%(after_at)s::timestamptz IS NULL
           OR (j.run_at, j.id) > (%(after_at)s::timestamptz, %(after_id)s::bigint))
    ORDER BY j.run_at, j.id
    LIMIT %(scan)s::int
), page AS (
    SELECT w.id, w.run_at FROM win AS w WHERE w.hit ORDER BY w.run_at, w.id LIMIT %(limit)s::int
), last AS (
    SELECT w.id, w.run_at FROM win AS w ORDER BY w.run_at DESC, w.id DESC LIMIT 1
)
SELECT 'job' AS what, j.id, j.task, j.queue, j.status, j.priority, j.attempts, j.max_attempts,
       j.failures, j.crashes, j.run_at, j.enqueued_at, j.started_at, j.finished_at, j.runner_id,
       j.key, j.due, j.cancel_requested,
       CASE WHEN pg_column_size(j.args) + pg_column_size(j.kwargs) <= %(max_args)s::int
            THEN j.args END AS args,
       CASE WHEN pg_column_size(j.args) + pg_column_size(j.kwargs) <= %(max_args)s::int
            THEN j.kwargs END AS kwargs,
       pg_column_size(j.args) + pg_column_size(j.kwargs) AS args_size,
       left(j.error ->> 'type', 200) AS error_type, left(j.error ->> 'message', 300) AS error_message,
       NULL::bigint AS scanned, NULL::bigint AS last_id, NULL::timestamptz AS last_at,
       NULL::int AS last_priority
FROM page AS p JOIN /* schema */jobs AS j ON j.id = p.id
UNION ALL
SELECT 'window', NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL,
       NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL,
       (SELECT count(*) FROM win), (SELECT id FROM last), (SELECT run_at FROM last), NULL
ORDER BY what, run_at, id

-- name: dashboard_jobs_running
-- Running jobs, newest first (jobs_running_idx: at most as many as the runners' slots), before
-- `before_id`.
WITH win AS MATERIALIZED (
    SELECT j.id,
           (%(queue)s::text IS NULL OR j.queue = %(queue)s::text)
           AND (%(task)s::text IS NULL OR j.task = %(task)s::text)
           AND (%(args)s::jsonb IS NULL OR j.args @> %(args)s::jsonb)
           AND (%(kwargs)s::jsonb IS NULL OR j.kwargs @> %(kwargs)s::jsonb) AS hit
    FROM (SELECT r.id FROM /* schema */jobs AS r
          WHERE r.status = 'running'
            AND (%(before_id)s::bigint IS NULL OR r.id < %(before_id)s::bigint)
          ORDER BY r.runner_id
          LIMIT %(cap)s::int) AS running
    JOIN /* schema */jobs AS j ON j.id = running.id AND j.status = 'running'
    ORDER BY j.id DESC
    LIMIT %(scan)s::int
), page AS (
    SELECT w.id FROM win AS w WHERE w.hit ORDER BY w.id DESC LIMIT %(limit)s::int
)
SELECT 'job' AS what, j.id, j.task, j.queue, j.status, j.priority, j.attempts, j.max_attempts,
       j.failures, j.crashes, j.run_at, j.enqueued_at, j.started_at, j.finished_at, j.runner_id,
       j.key, j.due, j.cancel_requested,
       CASE WHEN pg_column_size(j.args) + pg_column_size(j.kwargs) <= %(max_args)s::int
            THEN j.args END AS args,
       CASE WHEN pg_column_size(j.args) + pg_column_size(j.kwargs) <= %(max_args)s::int
            THEN j.kwargs END AS kwargs,
       pg_column_size(j.args) + pg_column_size(j.kwargs) AS args_size,
       left(j.error ->> 'type', 200) AS error_type, left(j.error ->> 'message', 300) AS error_message,
       NULL::bigint AS scanned, NULL::bigint AS last_id, NULL::timestamptz AS last_at,
       NULL::int AS last_priority
FROM page AS p JOIN /* schema */jobs AS j ON j.id = p.id
UNION ALL
SELECT 'window', NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL,
       NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL,
       (SELECT count(*) FROM win), (SELECT min(id) FROM win), NULL, NULL
ORDER BY what, id DESC

-- name: dashboard_job
-- One job's row, every column (args, kwargs and result only up to `max_bytes` each).
SELECT j.id, j.queue, j.task, j.priority, j.run_at, j.status, j.due, j.attempts, j.failures,
       j.crashes, j.max_attempts, j.key, j.runner_id, j.cancel_requested, j.enqueued_at,
       j.started_at, j.finished_at, j.meta, j.error,
       CASE WHEN pg_column_size(j.args) <= %(max_bytes)s::int THEN j.args END AS args,
       CASE WHEN pg_column_size(j.kwargs) <= %(max_bytes)s::int THEN j.kwargs END AS kwargs,
       CASE WHEN pg_column_size(j.result) <= %(max_bytes)s::int THEN j.result END AS result,
       pg_column_size(j.args) AS args_size, pg_column_size(j.kwargs) AS kwargs_size,
       pg_column_size(j.result) AS result_size, now() AS now
FROM /* schema */jobs AS j
WHERE j.id = %(id)s::bigint

-- name: dashboard_job_events
-- One job's history, the newest `limit` events (the primary key), with each runner's host and
-- pid, oldest first, and how many events the job has beyond those.
WITH newest AS (
    SELECT e.id, e.at, e.from_status, e.to_status, e.attempt, e.runner_id, e.kind, e.reason, e.error
    FROM /* schema */job_events AS e
    WHERE e.job_id = %(id)s::bigint
    ORDER BY e.job_id DESC, e.id DESC
    LIMIT %(limit)s::int
)
SELECT n.id, n.at, n.from_status, n.to_status, n.attempt, n.runner_id, n.kind, n.reason,
       n.error, r.host AS runner_host, r.pid AS runner_pid, r.state AS runner_state,
       (SELECT count(*) FROM (SELECT 1 FROM /* schema */job_events AS e
                              WHERE e.job_id = %(id)s::bigint
                              LIMIT 100000) AS c) AS total
FROM newest AS n
LEFT JOIN /* schema */runners AS r ON r.id = n.runner_id
ORDER BY n.id

-- ------------------------------------------------------------------------- runners

-- name: dashboard_runners
-- Runners that run now or stopped or died within `recent_seconds` (the runner_health view),
-- running ones first, newest first, at most `limit`.
SELECT h.*, extract(epoch FROM h.heartbeat_age)::float8 AS heartbeat_seconds
FROM /* schema */runner_health AS h
WHERE h.state = 'running' OR h.stopped_at > now() - make_interval(secs => %(recent_seconds)s::float8)
ORDER BY h.state = 'running' DESC, h.id DESC
LIMIT %(limit)s::int

-- name: dashboard_runner
-- One runner (the runner_health view) and the database's clock.
SELECT h.*, extract(epoch FROM h.heartbeat_age)::float8 AS heartbeat_seconds, now() AS now
FROM /* schema */runner_health AS h
WHERE h.id = %(id)s::bigint

-- name: dashboard_runner_jobs
-- The jobs a runner runs now (jobs_running_idx).
SELECT j.id, j.task, j.queue, j.attempts, j.started_at, j.cancel_requested,
       now() - j.started_at AS running_for
FROM /* schema */jobs AS j
WHERE j.runner_id = %(id)s::bigint AND j.status = 'running'
ORDER BY j.id
LIMIT %(limit)s::int

-- name: dashboard_runner_events
-- What happened under a runner between `since` and `until` (the BRIN index on job_events.at:
-- the caller keeps the window short): attempts it ended, and what the reaper wrote when it
-- declared the runner dead, newest first.
SELECT e.job_id, e.id, e.at, e.attempt, e.kind, e.from_status, e.to_status, e.reason,
       left(e.error ->> 'type', 200) AS error_type, j.task, j.queue
FROM /* schema */job_events AS e
LEFT JOIN /* schema */jobs AS j ON j.id = e.job_id
WHERE e.at >= %(since)s::timestamptz AND e.at <= %(until)s::timestamptz
  AND e.runner_id = %(id)s::bigint AND e.kind IS DISTINCT FROM 'claimed'
ORDER BY e.at DESC, e.id DESC
LIMIT %(limit)s::int

-- ------------------------------------------------------------------------ timeline

-- name: dashboard_timeline
-- The attempts that overlap [since, until]: one row per (job, attempt, runner), with when it
-- started and ended and how (succeeded, retry_scheduled, failed, cancelled, crashed,
-- handed_back; NULL while it runs). Starts and ends inside the window come from the BRIN index
-- on job_events.at (at most `cap` events, the newest); an end or start outside it from the
-- job's own events (the primary key); attempts running since before the window from
-- jobs_running_idx. At most `bars` attempts, the latest ones.
WITH ev AS MATERIALIZED (
    SELECT e.job_id, e.attempt, e.runner_id, e.kind, e.at
    FROM /* schema */job_events AS e
    WHERE e.at >= %(since)s::timestamptz AND e.at <= %(until)s::timestamptz
      AND e.runner_id IS NOT NULL
      AND e.kind IN ('claimed', 'succeeded', 'retry_scheduled', 'failed', 'cancelled', 'crashed',
                     'handed_back')
    ORDER BY e.at DESC
    LIMIT %(cap)s::int
), seen AS (
    SELECT ev.job_id, ev.attempt, ev.runner_id,
           min(ev.at) FILTER (WHERE ev.kind = 'claimed') AS started_at,
           min(ev.at) FILTER (WHERE ev.kind <> 'claimed') AS ended_at,
           (array_agg(ev.kind ORDER BY ev.at) FILTER (WHERE ev.kind <> 'claimed'))[1] AS outcome
    FROM ev
    GROUP BY ev.job_id, ev.attempt, ev.runner_id
), long_running AS (
    SELECT j.id AS job_id, j.attempts AS attempt, j.runner_id, j.started_at,
           NULL::timestamptz AS ended_at, NULL::text AS outcome
    FROM /* schema */jobs AS j
    WHERE j.status = 'running' AND j.started_at < %(since)s::timestamptz
    ORDER BY j.runner_id
    LIMIT %(bars)s::int
), attempts AS (
    -- The latest first; without a queue or task filter only `bars` of them go on (the rest are
    -- not drawn), with one every attempt of the window is looked at.
    SELECT u.* FROM (
        SELECT * FROM seen
        UNION ALL
        SELECT * FROM long_running AS l
        WHERE NOT EXISTS (SELECT 1 FROM seen AS s
                          WHERE s.job_id = l.job_id AND s.attempt = l.attempt AND s.runner_id = l.runner_id)
    ) AS u
    ORDER BY coalesce(u.started_at, %(since)s::timestamptz) DESC, u.job_id DESC
    LIMIT CASE WHEN %(queue)s::text IS NULL AND %(task)s::text IS NULL THEN %(bars)s::int END
), filled AS (
    SELECT a.job_id, a.attempt, a.runner_id,
           coalesce(a.started_at, (SELECT min(e.at) FROM /* schema */job_events AS e
                                   WHERE e.job_id = a.job_id AND e.attempt = a.attempt
                                     AND e.runner_id = a.runner_id AND e.kind = 'claimed'))
               AS started_at,
           coalesce(a.ended_at, fin.at) AS ended_at,
           coalesce(a.outcome, fin.kind) AS outcome,
           j.task, j.queue, j.status AS job_status,
           (j.status = 'running' AND j.runner_id = a.runner_id AND j.attempts = a.attempt) AS running
    FROM attempts AS a
    LEFT JOIN /* schema */jobs AS j ON j.id = a.job_id
    LEFT JOIN LATERAL (
        SELECT e.at, e.kind FROM /* schema */job_events AS e
        WHERE a.ended_at IS NULL AND e.job_id = a.job_id AND e.attempt = a.attempt
          AND e.runner_id = a.runner_id
          AND e.kind IN ('succeeded', 'retry_scheduled', 'failed', 'cancelled', 'crashed', 'handed_back')
        ORDER BY e.job_id, e.id
        LIMIT 1
    ) AS fin ON true
    WHERE (%(queue)s::text IS NULL OR j.queue = %(queue)s::text)
      AND (%(task)s::text IS NULL OR j.task = %(task)s::text)
)
SELECT f.*, (SELECT count(*) FROM ev) AS events_read, now() AS now
FROM filled AS f
ORDER BY coalesce(f.started_at, %(since)s::timestamptz) DESC, f.job_id DESC
LIMIT %(bars)s::int

-- name: dashboard_timeline_runners
-- The lanes: runners alive at some point of [since, until] (they started before its end and
-- had not stopped before its start) and the runners named in `ids`, at most `limit`.
SELECT r.id, r.host, r.pid, r.state, r.started_at, r.stopped_at, r.heartbeat_at, r.reason,
       r.lost_reason, r.dead_after, r.concurrency, r.queues
FROM /* schema */runners AS r
WHERE (r.started_at <= %(until)s::timestamptz
       AND (r.stopped_at IS NULL OR r.stopped_at >= %(since)s::timestamptz))
   OR r.id = ANY (%(ids)s::bigint[])
ORDER BY r.id
LIMIT %(limit)s::int

-- ----------------------------------------------------------------- queues, schedules
-- The queues page reads dashboard_queues (above) for its counts and controls; the controls
-- themselves (pause, resume, limit; pause, resume, trigger a schedule) are the statements the
-- Python API and the CLI run (admin.sql queue_*, schedules.sql schedule_*), so each writes the
-- same queue_events or schedule_events row.

-- name: dashboard_queue_events
-- The latest pauses, resumes and limit changes, of one queue (queue_events_queue_idx) or of
-- every queue (the primary key), newest first, at most `limit`; a limit change's detail as
-- columns (`per` in seconds).
SELECT e.id, e.queue, e.at, e.action, e.by, e.reason,
       (e.detail ->> 'concurrency')::int AS concurrency,
       (e.detail ->> 'rate')::int AS rate,
       extract(epoch FROM (e.detail ->> 'per')::interval)::float8 AS per
FROM /* schema */queue_events AS e
WHERE (%(queue)s::text IS NULL OR e.queue = %(queue)s::text)
ORDER BY e.id DESC
LIMIT %(limit)s::int

-- name: dashboard_schedules
-- A page of schedules by id (the schedule_status view over schedules_pkey), after `after`
-- (NULL: from the first), at most `limit`, with the database's clock.
SELECT s.id, s.task, s.cron, s.timezone, s.queue, s.next_run_at, s.last_run_at, s.last_run_for,
       s.last_job_id, s.last_job_status, s.paused, s.pause_reason, s.paused_by, s.paused_at,
       s.orphaned, s.orphaned_at, s.declared_by, s.catch_up,
       extract(epoch FROM s.catch_up_within)::float8 AS catch_up_within, s.overlap, now() AS now
FROM /* schema */schedule_status AS s
WHERE (%(after)s::text IS NULL OR s.id > %(after)s::text)
ORDER BY s.id
LIMIT %(limit)s::int

-- name: dashboard_schedule
-- One schedule (schedule_status, and from its row the cursor's last tick and the last resume),
-- the live runners that declare it, and the database's clock.
SELECT s.*, extract(epoch FROM s.catch_up_within)::float8 AS catch_up_seconds, c.last_tick,
       c.resumed_at, c.max_attempts,
       ARRAY(SELECT d.runner_id FROM /* schema */schedule_declarations AS d
             JOIN /* schema */runners AS r ON r.id = d.runner_id
             WHERE d.schedule_id = s.id AND r.state = 'running'
             ORDER BY d.runner_id) AS declaring_runners,
       now() AS now
FROM /* schema */schedule_status AS s
JOIN /* schema */schedules AS c ON c.id = s.id
WHERE s.id = %(id)s::text

-- name: dashboard_schedule_events
-- One schedule's history, newest first, at most `limit` (schedule_events_schedule_idx; with
-- `runs`, only the events that enqueued a job: schedule_events_runs_idx), each with its job's
-- status (NULL once retention pruned the job). `newest` is a fence: the limit applies to the
-- walk of the index, before the join, however many events the schedule has.
WITH newest AS MATERIALIZED (
    SELECT e.id, e.at, e.kind, e.tick, e.job_id, e.runner_id, e.reason
    FROM /* schema */schedule_events AS e
    WHERE e.schedule_id = %(id)s::text AND (NOT %(runs)s::boolean OR e.job_id IS NOT NULL)
    ORDER BY e.schedule_id DESC, e.id DESC
    LIMIT %(limit)s::int
)
SELECT n.*, j.status AS job_status
FROM newest AS n
LEFT JOIN /* schema */jobs AS j ON j.id = n.job_id
ORDER BY n.id DESC

-- -------------------------------------------------------------------------- health

-- name: dashboard_table_health
-- The schema's tables as the statistics collector sees them: rows, dead rows, vacuum and
-- analyze times, size.
SELECT s.relname AS table_name, s.n_live_tup AS live_tuples, s.n_dead_tup AS dead_tuples,
       s.last_vacuum, s.last_autovacuum, s.last_analyze, s.last_autoanalyze, s.autovacuum_count,
       s.n_mod_since_analyze, pg_total_relation_size(s.relid) AS total_bytes,
       c.reltuples::bigint AS estimated_rows
FROM pg_catalog.pg_stat_user_tables AS s
JOIN pg_catalog.pg_class AS c ON c.oid = s.relid
WHERE s.schemaname = %(schema)s::text
ORDER BY s.relname

-- name: dashboard_xmin_horizon
-- What holds back vacuum's horizon (dead rows cannot be removed while it is older): the oldest
-- open transaction, replication slot and prepared transaction, with their ages in seconds or
-- transactions. Sessions of other roles show only to members of pg_read_all_stats.
SELECT (SELECT extract(epoch FROM now() - min(a.xact_start))::float8
        FROM pg_catalog.pg_stat_activity AS a
        WHERE a.xact_start IS NOT NULL AND a.pid <> pg_backend_pid()
          AND a.backend_type = 'client backend') AS oldest_xact_seconds,
       (SELECT a.pid FROM pg_catalog.pg_stat_activity AS a
        WHERE a.xact_start IS NOT NULL AND a.pid <> pg_backend_pid()
          AND a.backend_type = 'client backend'
        ORDER BY a.xact_start LIMIT 1) AS oldest_xact_pid,
       (SELECT left(a.application_name, 100) FROM pg_catalog.pg_stat_activity AS a
        WHERE a.xact_start IS NOT NULL AND a.pid <> pg_backend_pid()
          AND a.backend_type = 'client backend'
        ORDER BY a.xact_start LIMIT 1) AS oldest_xact_application,
       (SELECT a.state FROM pg_catalog.pg_stat_activity AS a
        WHERE a.xact_start IS NOT NULL AND a.pid <> pg_backend_pid()
          AND a.backend_type = 'client backend'
        ORDER BY a.xact_start LIMIT 1) AS oldest_xact_state,
       (SELECT max(age(a.backend_xmin)) FROM pg_catalog.pg_stat_activity AS a
        WHERE a.pid <> pg_backend_pid()) AS oldest_xmin_age,
       (SELECT max(age(s.xmin)) FROM pg_catalog.pg_replication_slots AS s) AS slot_xmin_age,
       (SELECT extract(epoch FROM now() - min(p.prepared))::float8
        FROM pg_catalog.pg_prepared_xacts AS p) AS oldest_prepared_seconds

-- name: dashboard_maintenance
-- The elected maintenance pass: when it last ran, how many passes ran, by which runner.
SELECT CASE WHEN isfinite(m.last_pass_at) THEN m.last_pass_at END AS last_pass_at,
       CASE WHEN isfinite(m.last_pass_at)
            THEN extract(epoch FROM now() - m.last_pass_at)::float8 END AS last_pass_seconds,
       m.passes, m.runner_id
FROM /* schema */maintenance AS m

-- name: dashboard_ping
-- The database answers, and its clock.
SELECT now() AS now, current_setting('server_version') AS server_version

-- ------------------------------------------------------------------------- actions

-- name: dashboard_retry
-- Sends the failed or cancelled jobs among `ids` back to the queue now (retry_jobs: a fresh
-- failure and crash budget, attempts keeps counting: it is the fencing token), each with a
-- 'retried' event; a job whose key an unfinished job holds stays as it is. Returns the jobs
-- queued again.
SELECT r.id
FROM /* schema */retry_jobs(%(ids)s::bigint[], %(reason)s::text, '{failed,cancelled}') AS r
WHERE r.retried
ORDER BY r.id

-- name: dashboard_cancel
-- Cancels the queued jobs among `ids` now, and asks the running ones to stop (cancel_jobs:
-- the runner stops an async task, a sync task checks current_job().cancel_requested), each with
-- an event; wakes job.result() waiters of the cancelled ones. Returns the jobs changed.
SELECT c.id, c.status FROM /* schema */cancel_jobs(%(ids)s::bigint[], %(reason)s::text) AS c ORDER BY c.id

-- name: dashboard_delete
-- Deletes the finished jobs among `ids` with their history, and leaves one 'deleted' event per
-- job (to_status 'deleted', the reason naming who deleted it): the record of the deletion.
-- (Data-modifying CTEs share one snapshot: the history delete cannot see the new event.)
WITH doomed AS MATERIALIZED (
    SELECT j.id, j.status, j.attempts
    FROM /* schema */jobs AS j
    WHERE j.id = ANY (%(ids)s::bigint[]) AND j.status IN ('succeeded', 'failed', 'cancelled')
    ORDER BY j.id
    FOR UPDATE
), history_gone AS (
    DELETE FROM /* schema */job_events AS e WHERE e.job_id = ANY (ARRAY(SELECT d.id FROM doomed AS d))
), jobs_gone AS (
    DELETE FROM /* schema */jobs AS j
    WHERE j.id = ANY (ARRAY(SELECT d.id FROM doomed AS d))
      AND j.status IN ('succeeded', 'failed', 'cancelled')
    RETURNING j.id, j.status, j.attempts
), tombstones AS (
    INSERT INTO /* schema */job_events (job_id, from_status, to_status, attempt, kind, reason)
    SELECT g.id, g.status, 'deleted', g.attempts, 'deleted', %(reason)s::text FROM jobs_gone AS g
)
SELECT g.id FROM jobs_gone AS g ORDER BY g.id

-- name: dashboard_deleted
-- Whether (and how) a job that no longer exists was deleted: its 'deleted' event.
SELECT e.at, e.reason, e.from_status
FROM /* schema */job_events AS e
WHERE e.job_id = %(id)s::bigint AND e.kind = 'deleted'
ORDER BY e.job_id, e.id DESC
LIMIT 1

-- name: dashboard_count_ids
-- Of the jobs `ids`, how many exist in each status (for the confirmation of a bulk action).
SELECT j.status, count(*) AS jobs
FROM /* schema */jobs AS j
WHERE j.id = ANY (%(ids)s::bigint[])
GROUP BY j.status
ORDER BY j.status
