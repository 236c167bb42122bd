-- Statements of the worker's hot path. Each write about a
-- running job is fenced by (runner_id, attempts, status = 'running'): it applies only
-- while the job still runs the same attempt on the same runner.

-- name: job_claim
-- Claims up to `limit` runnable jobs for a live runner, in priority, run_at, id order,
-- skipping rows other runners hold, and records whether the runner now waits for work.
-- Always returns one row at least: `alive` false means the runner was declared dead;
-- `more` means runnable jobs were left because another claim held them at that instant.
WITH RECURSIVE any_queue AS (
    -- For a runner serving every queue (queues is NULL): the distinct queues that have
    -- queued jobs, one probe of jobs_claim_idx each (a loose index scan).
    (SELECT queue FROM /* schema */jobs
     WHERE status = 'queued' AND due AND %(queues)s::text[] IS NULL
     ORDER BY queue LIMIT 1)
    UNION ALL
    SELECT (SELECT j.queue FROM /* schema */jobs AS j
            WHERE j.status = 'queued' AND j.due AND j.queue > a.queue ORDER BY j.queue LIMIT 1)
    FROM any_queue AS a
    WHERE a.queue IS NOT NULL
), served AS (
    SELECT unnest(%(queues)s::text[]) AS queue
    UNION ALL
    SELECT queue FROM any_queue WHERE queue IS NOT NULL
), me AS MATERIALIZED (
    -- FOR SHARE: a reaper declaring this runner dead right now makes the claim wait for its
    -- commit and then see the runner dead, so a dead runner never claims.
    SELECT id FROM /* schema */runners
    WHERE id = %(runner_id)s::bigint AND state = 'running'
    FOR SHARE
), locked AS MATERIALIZED (
    -- Per queue, the first rows in claim order that nobody else holds (SKIP LOCKED), so each
    -- lateral scan walks only its own queue's range of jobs_claim_idx; then the best overall.
    -- (A runner serving several queues briefly locks up to `limit` rows per queue.)
    SELECT c.ctid, c.priority, c.run_at, c.id
    FROM served AS s
    CROSS JOIN LATERAL (
        SELECT j.ctid, j.priority, j.run_at, j.id
        FROM /* schema */jobs AS j
        WHERE j.queue = s.queue AND j.status = 'queued' AND j.due AND j.run_at <= now()
        ORDER BY j.priority DESC, j.run_at, j.id
        LIMIT %(limit)s::int
        FOR UPDATE SKIP LOCKED
    ) AS c
    WHERE EXISTS (SELECT FROM me)
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
), more AS (
    -- Only after a short claim: were runnable jobs passed over because another claim held
    -- them? Then the runner tries again soon instead of waiting for a notification. (Rows
    -- this statement claimed still look queued to it: they are excluded.)
    SELECT EXISTS (
        SELECT 1 FROM served AS s
        JOIN /* schema */jobs AS j ON j.queue = s.queue
        WHERE j.status = 'queued' AND j.due AND j.run_at <= now()
          AND NOT (j.id = ANY (ARRAY(SELECT id FROM locked)))
    ) AS more
    WHERE (SELECT count(*) FROM locked) < %(limit)s::int AND EXISTS (SELECT FROM me)
), waiting AS (
    -- Waiting: free slots left and no more work. Enqueues NOTIFY only while a runner
    -- waits; written only when it changes, so a busy runner writes nothing here.
    UPDATE /* schema */runners
    SET waiting = %(can_wait)s::boolean AND (SELECT count(*) FROM claimed) < %(limit)s::int
                  AND NOT coalesce((SELECT more FROM more), false)
    WHERE id = (SELECT id FROM me)
      AND waiting IS DISTINCT FROM
          (%(can_wait)s::boolean AND (SELECT count(*) FROM claimed) < %(limit)s::int
           AND NOT coalesce((SELECT more FROM more), false))
    RETURNING waiting
)
SELECT EXISTS (SELECT FROM me) AS alive,
       coalesce((SELECT more FROM more), false) AS more,
       coalesce((SELECT waiting FROM waiting), false) AS became_waiting,
       c.id, c.task, c.args, c.kwargs, c.queue, c.attempts, c.failures, c.max_attempts,
       c.cancel_requested
FROM (SELECT) AS one
LEFT JOIN claimed AS c ON true

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
    -- A retry of a job whose cancellation was requested meanwhile ends it as cancelled.
    UPDATE /* schema */jobs AS j
    SET status = CASE WHEN o.status = 'queued' AND j.cancel_requested THEN 'cancelled'
                      ELSE o.status END,
        runner_id = NULL,
        result = o.result::jsonb,
        error = coalesce(o.error::jsonb, j.error),
        failures = j.failures + o.failed::int,
        run_at = CASE WHEN o.status = 'queued' AND NOT j.cancel_requested
                      THEN now() + make_interval(secs => o.delay) ELSE j.run_at END,
        due = /* schema */due_soon(now() + make_interval(secs => o.delay)),
        finished_at = CASE WHEN o.status = 'queued' AND NOT j.cancel_requested
                           THEN NULL ELSE now() END
    FROM outcome AS o
    -- The fence. IS NOT DISTINCT FROM keeps the planner on the primary key (id) rather than
    -- jobs_running_idx, whose runner_id range it would otherwise walk.
    WHERE j.id = o.id AND j.runner_id IS NOT DISTINCT FROM o.runner_id
      AND j.attempts = o.attempt AND j.status = 'running'
    RETURNING j.id, j.status, j.attempts, j.queue, j.run_at, o.runner_id,
              CASE WHEN j.status = 'cancelled' AND o.status = 'queued'
                   THEN 'cancelled (requested while running): ' || o.reason
                   ELSE o.reason END AS reason
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

-- name: job_outcome_check
-- Of these (job, attempt, status) outcomes, those the jobs show already: a write whose reply
-- was lost with its connection had committed.
SELECT j.id
FROM /* schema */jobs AS j
JOIN unnest(%(ids)s::bigint[], %(attempts)s::int[], %(statuses)s::text[]) AS o(id, attempt, status)
  ON o.id = j.id
WHERE j.attempts = o.attempt AND j.runner_id IS NULL
  AND (j.status = o.status OR (o.status = 'queued' AND j.status = 'cancelled'))

-- name: job_release
-- Hands back attempts that a live runner holds in the database but no longer knows about
-- (its claim committed but the reply was lost): fenced, not counted as a failure or crash.
WITH released AS (
    UPDATE /* schema */jobs AS j
    SET status = CASE WHEN j.cancel_requested THEN 'cancelled' ELSE 'queued' END,
        runner_id = NULL, due = true,
        finished_at = CASE WHEN j.cancel_requested THEN now() END
    FROM unnest(%(ids)s::bigint[], %(attempts)s::int[]) AS a(id, attempt)
    WHERE j.id = a.id AND j.attempts = a.attempt AND j.status = 'running'
      AND j.runner_id = %(runner_id)s::bigint
    RETURNING j.id, j.status, j.attempts, j.queue
), events AS (
    INSERT INTO /* schema */job_events (job_id, from_status, to_status, attempt, runner_id, reason)
    SELECT id, 'running', status, attempts, %(runner_id)s::bigint,
           'handed back: runner ' || %(runner_id)s::bigint || ' did not hold this attempt any more'
    FROM released
), notified AS (
    SELECT /* schema */notify_finished(array_agg(id)) AS n
    FROM released WHERE status = 'cancelled' HAVING count(*) > 0
), woken AS (
    SELECT count(*) AS n FROM (
        SELECT /* schema */wake(array_agg(DISTINCT queue))
        FROM released WHERE status = 'queued' HAVING count(*) > 0
    ) AS w
)
SELECT id, (SELECT n FROM woken) AS woken, (SELECT n FROM notified) AS notified FROM released
