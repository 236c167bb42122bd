-- Statements of the worker's hot path. Each write about a running job is fenced by
-- (runner_id, attempts, status = 'running'): it applies only while the job still runs the
-- same attempt on the same runner.

-- name: job_claim
-- variants: all one limited many
-- Claims up to `limit` runnable jobs for a live runner, in priority, run_at, id order,
-- skipping rows other runners hold, and records whether the runner now waits for work.
-- Modes: 'all' (every queue: one ordered scan of jobs_ready_idx), 'one' (the queue `queue`:
-- one ordered scan of its range of jobs_claim_idx), 'many' (the queues `queues`, or every
-- queue when NULL, minus `excluded`: the head of each queue read without locks, the best
-- `limit` of them locked with SKIP LOCKED), 'limited' (the limited queue `queue`, at most what
-- queue_allowance grants, its starts recorded for the rate limit). Only the rows it claims are
-- locked. Every claim goes through claim_guard: paused queues are never claimed, limited ones
-- only in mode 'limited' (the runner learns both from the state row and avoids them).
-- Returns a 'state' row first (alive false: the runner was declared dead; more: runnable
-- jobs were passed over because another claim held them at that instant, or a pause was being
-- committed; paused and limited: the queues under control), then a 'job' row per claimed job.
-- One statement per mode (job_claim_all, ...): each plan holds only its mode's scans, which
-- the executor would otherwise set up and tear down at every claim.
WITH me AS MATERIALIZED (
    -- FOR SHARE: a reaper declaring this runner dead right now makes the claim wait for its
    -- commit and then see the runner dead, so a dead runner never claims.
    SELECT id FROM /* schema */runners
    WHERE id = %(runner_id)s::bigint AND state = 'running'
    FOR SHARE
), commit_mode AS MATERIALIZED (
    -- Unless `synchronous`, this claim's commit does not wait for the disk (local to this
    -- statement's transaction: the worker runs each claim as a transaction of its own). The
    -- next synchronous commit (the job's outcome, a write of its task) flushes it first; a
    -- server crash before that forgets the claim, and the job is claimed again. (Read in the
    -- state row's `alive`: a CTE nothing reads does not run.)
    SELECT CASE WHEN NOT %(synchronous)s::boolean
                THEN set_config('synchronous_commit', 'off', true) END AS setting
), guard AS MATERIALIZED (
    SELECT g.paused, g.limited FROM /* schema */claim_guard() AS g
), gate AS MATERIALIZED (
    -- A live runner, and no pause being committed: the claim may take jobs, from any queue but
    -- `held` (paused, and limited outside mode 'limited').
    SELECT g.paused || g.limited AS held
    FROM guard AS g
    WHERE EXISTS (SELECT FROM me) AND g.paused IS NOT NULL
-- variant: all
), gate_all AS MATERIALIZED (
    -- Mode 'all' is chosen by a runner that knows of no queue under control. If one came
    -- under control since, this claim takes nothing and says `more`: the runner's next claim
    -- leaves that queue out by mode. (A per-row test of the queue here would have the planner
    -- guess its selectivity and, on an analyzed table, sort the whole backlog for each claim.)
    SELECT FROM gate WHERE coalesce(cardinality(held), 0) = 0
), claim_all AS MATERIALIZED (
    SELECT j.ctid, j.id
    FROM /* schema */jobs AS j
    WHERE EXISTS (SELECT FROM gate_all)
      AND j.status = 'queued' AND j.due AND j.run_at <= now()
    ORDER BY j.priority DESC, j.run_at, j.id
    LIMIT %(limit)s::int
    FOR UPDATE SKIP LOCKED
-- variant: limited
), allowance AS MATERIALIZED (
    -- Mode 'limited' only: how many the queue's limits allow now (serialized per queue).
    SELECT /* schema */queue_allowance(%(queue)s::text, %(limit)s::int) AS n
    WHERE EXISTS (SELECT FROM gate)
-- variant: one limited
), claim_one AS MATERIALIZED (
    -- Modes 'one' (a queue that is neither paused nor limited) and 'limited' (within what
    -- queue_allowance granted): one ordered scan of the queue's range of jobs_claim_idx.
    SELECT j.ctid, j.id
    FROM /* schema */jobs AS j
    WHERE EXISTS (SELECT FROM gate)
      AND (%(mode)s::text = 'limited' OR NOT (%(queue)s::text = ANY ((SELECT held FROM gate)::text[])))
      AND j.queue = %(queue)s::text AND j.status = 'queued' AND j.due AND j.run_at <= now()
    ORDER BY j.priority DESC, j.run_at, j.id
    -- variant: one
    LIMIT %(limit)s::int
    -- variant: limited
    LIMIT (SELECT n FROM allowance)
    -- variant: one limited
    FOR UPDATE SKIP LOCKED
-- variant: limited
), started AS (
    -- Mode 'limited': the starts, remembered for the queue's rate limit.
    SELECT /* schema */record_starts(%(queue)s::text, count(*)::int) AS n
    FROM claim_one
    HAVING count(*) > 0
-- variant: many
), any_queue AS (
    -- Mode 'many' without a list: the distinct queues that hold runnable jobs, one probe of
    -- jobs_claim_idx each (a loose index scan).
    WITH RECURSIVE q AS (
        (SELECT j.queue FROM /* schema */jobs AS j
         WHERE %(queues)s::text[] IS NULL
           AND j.status = 'queued' AND j.due
         ORDER BY j.queue LIMIT 1)
        UNION ALL
        SELECT (SELECT j.queue FROM /* schema */jobs AS j
                WHERE j.status = 'queued' AND j.due AND j.queue > q.queue ORDER BY j.queue LIMIT 1)
        FROM q WHERE q.queue IS NOT NULL
    )
    SELECT queue FROM q WHERE queue IS NOT NULL
), served AS (
    SELECT s.queue
    FROM (SELECT unnest(%(queues)s::text[]) AS queue
          UNION ALL
          SELECT queue FROM any_queue) AS s
    WHERE NOT (s.queue = ANY (coalesce(%(excluded)s::text[], '{}')))
      AND NOT (s.queue = ANY ((SELECT held FROM gate)::text[]))
), heads AS (
    -- Per served queue, its first row in claim order, read without locks (each lateral scan
    -- walks only its own queue's range of jobs_claim_idx, from the index alone where the
    -- visibility map allows: no ctid here, which would need every row's heap tuple).
    SELECT s.queue, h.priority, h.run_at, h.id
    FROM served AS s
    CROSS JOIN LATERAL (
        SELECT j.priority, j.run_at, j.id
        FROM /* schema */jobs AS j
        WHERE j.queue = s.queue AND j.status = 'queued' AND j.due AND j.run_at <= now()
        ORDER BY j.priority DESC, j.run_at, j.id
        LIMIT 1
    ) AS h
    WHERE EXISTS (SELECT FROM gate)
), ranked AS (
    -- A queue whose head r - 1 other heads beat can give at most limit - r + 1 of the best
    -- `limit` rows (those heads come first), and none past rank `limit`: so the queues read
    -- further are the best `limit` heads, each only as far as its rank allows (50 queues and
    -- 20 free slots read 50 heads and at most 210 rows, not 1,000).
    SELECT queue, %(limit)s::int + 1 - row_number() OVER (ORDER BY priority DESC, run_at, id) AS room
    FROM heads
    ORDER BY priority DESC, run_at, id
    LIMIT %(limit)s::int
), candidates AS (
    SELECT c.priority, c.run_at, c.id
    FROM ranked AS r
    CROSS JOIN LATERAL (
        SELECT j.priority, j.run_at, j.id
        FROM /* schema */jobs AS j
        WHERE j.queue = r.queue AND j.status = 'queued' AND j.due AND j.run_at <= now()
        ORDER BY j.priority DESC, j.run_at, j.id
        LIMIT r.room
    ) AS c
    ORDER BY c.priority DESC, c.run_at, c.id
    LIMIT %(limit)s::int
), claim_many AS MATERIALIZED (
    -- Lock only the chosen rows. A row another claim took since it was read is skipped (held)
    -- or fails the re-check (taken): the claim comes up short and says `more`.
    SELECT j.ctid, j.id
    FROM /* schema */jobs AS j
    WHERE j.id = ANY (ARRAY(SELECT id FROM candidates))
      AND j.status = 'queued' AND j.due
    FOR UPDATE SKIP LOCKED
-- variant: end
), locked AS (
    -- variant: all
    SELECT ctid, id FROM claim_all
    -- variant: one limited
    SELECT ctid, id FROM claim_one
    -- variant: many
    SELECT ctid, id FROM claim_many
    -- variant: end
), claimed AS (
    UPDATE /* schema */jobs AS j
    SET status = 'running', runner_id = %(runner_id)s::bigint, attempts = j.attempts + 1,
        started_at = now()
    -- By ctid (a TID scan, no index lookup): `locked` holds these rows' locks in this very
    -- statement, so they cannot have moved.
    WHERE j.ctid = ANY (ARRAY(SELECT ctid FROM locked))
    -- Arguments go out as text: the worker decodes each row on its own, so one it cannot
    -- decode fails that job alone. Oversized ones are not sent at all.
    RETURNING j.id, j.task,
              CASE WHEN pg_column_size(j.args) + pg_column_size(j.kwargs) <= %(max_args)s::int
                   THEN j.args::text END AS args,
              CASE WHEN pg_column_size(j.args) + pg_column_size(j.kwargs) <= %(max_args)s::int
                   THEN j.kwargs::text END AS kwargs,
              j.queue, j.attempts, j.failures, j.max_attempts, j.cancel_requested,
              pg_column_size(j.args) + pg_column_size(j.kwargs) AS args_size, j.meta::text AS meta,
              extract(epoch FROM now() - greatest(j.run_at, j.enqueued_at))::float8 AS waited,
              j.lock_key IS NOT NULL AS locked
), events AS (
    INSERT INTO /* schema */job_events
        (job_id, from_status, to_status, attempt, runner_id, kind, reason)
    SELECT c.id, 'queued', 'running', c.attempts, %(runner_id)s::bigint, 'claimed', 'claimed'
    FROM claimed AS c
), more AS (
    -- Only after a short claim: were runnable jobs passed over because another claim held
    -- them? Then the runner tries again soon instead of waiting for a notification. (Rows
    -- this statement claimed still look queued to it: they are excluded.)
    SELECT NOT EXISTS (SELECT FROM gate)
    -- variant: all
        OR NOT EXISTS (SELECT FROM gate_all) OR EXISTS (
        SELECT 1 FROM /* schema */jobs AS j
        WHERE j.status = 'queued' AND j.due AND j.run_at <= now()
          AND NOT (j.id = ANY (ARRAY(SELECT id FROM locked)))
    -- variant: one limited
        OR EXISTS (
        SELECT 1 FROM /* schema */jobs AS j
        WHERE j.queue = %(queue)s::text AND j.status = 'queued'
          AND (%(mode)s::text = 'limited' OR NOT (%(queue)s::text = ANY ((SELECT held FROM gate)::text[])))
          AND j.due AND j.run_at <= now() AND NOT (j.id = ANY (ARRAY(SELECT id FROM locked)))
    -- variant: many
        OR EXISTS (
        SELECT 1 FROM served AS s
        JOIN /* schema */jobs AS j ON j.queue = s.queue
        WHERE j.status = 'queued' AND j.due AND j.run_at <= now()
          AND NOT (j.id = ANY (ARRAY(SELECT id FROM locked)))
    -- variant: end
    ) AS more
    WHERE (SELECT count(*) FROM locked) < %(limit)s::int AND EXISTS (SELECT FROM me)
), waiting AS (
    -- Waiting: free slots left and no more work. Enqueues NOTIFY only while a runner
    -- waits; written only when it changes, so a busy runner writes nothing here.
    UPDATE /* schema */runners
    SET waiting = %(can_wait)s::boolean AND (SELECT count(*) FROM locked) < %(limit)s::int
                  AND NOT coalesce((SELECT more FROM more), false)
    WHERE id = (SELECT id FROM me)
      AND waiting IS DISTINCT FROM
          (%(can_wait)s::boolean AND (SELECT count(*) FROM locked) < %(limit)s::int
           AND NOT coalesce((SELECT more FROM more), false))
    RETURNING waiting
)
SELECT 'state' AS what, EXISTS (SELECT FROM me) AND EXISTS (SELECT FROM commit_mode) AS alive,
       coalesce((SELECT more FROM more), false) AS more,
       coalesce((SELECT waiting FROM waiting), false) AS became_waiting,
       NULL::bigint AS id, NULL::text AS task, NULL::text AS args, NULL::text AS kwargs,
       NULL::text AS queue, NULL::int AS attempt, NULL::int AS failures,
       NULL::int AS max_attempts, NULL::boolean AS cancel_requested, NULL::int AS args_size,
       NULL::text AS meta, NULL::float8 AS waited, NULL::boolean AS locked,
       (SELECT paused FROM guard) AS paused, (SELECT limited FROM guard) AS limited,
       -- variant: limited
       (SELECT count(*) FROM started) AS started
       -- variant: all one many
       0::bigint AS started
       -- variant: end
UNION ALL
SELECT 'job', NULL, NULL, NULL, c.id, c.task, c.args, c.kwargs, c.queue, c.attempts, c.failures,
       c.max_attempts, c.cancel_requested, c.args_size, c.meta, c.waited, c.locked, NULL, NULL, NULL
FROM claimed AS c


-- name: job_finish
-- Writes the outcomes of finished attempts in one statement, each fenced. Returns a 'done' row
-- per outcome written and a 'busy' row per outcome whose job row someone else holds (retry it
-- later); an outcome that is neither was fenced out (its attempt was reclaimed meanwhile).
-- A retry that meets a queued job of its "queued"-scope key is superseded by it (cancelled).
-- A 'done' row carries the lock key of a job that freed its lock's slot (it ended, or retries
-- later): the caller releases those in the same transaction (release_lock_slots).
WITH outcome AS (
    SELECT *
    FROM unnest(%(ids)s::bigint[], %(runner_ids)s::bigint[], %(attempts)s::int[],
                %(statuses)s::text[], %(results)s::text[], %(errors)s::text[],
                %(delays)s::float8[], %(failed)s::boolean[], %(reasons)s::text[])
         AS o(id, runner_id, attempt, status, result, error, delay, failed, reason)
), target AS MATERIALIZED (
    -- The outcomes' job rows, locked in id order (the order every finishing statement and the
    -- reaper lock in: no deadlock). SKIP LOCKED: a row held elsewhere (an operator's open
    -- transaction) is left for a later write instead of stalling every other outcome.
    SELECT j.id,
           -- Only for retries of jobs with a "queued"-scope key: the queued job holding it.
           CASE WHEN j.key_scope = 'queued' AND o.status = 'queued' AND NOT j.cancel_requested
                THEN (SELECT s.id FROM /* schema */jobs AS s
                      WHERE s.scoped_key = j.scoped_key AND s.key_scope = 'queued' AND s.status = 'queued'
                      LIMIT 1) END AS sibling
    FROM /* schema */jobs AS j
    JOIN outcome AS o ON o.id = j.id
    WHERE j.runner_id IS NOT DISTINCT FROM o.runner_id AND j.attempts = o.attempt
      AND j.status = 'running'
    ORDER BY j.id
    FOR UPDATE OF j SKIP LOCKED
), busy AS (
    -- Only after a short lock: outcomes whose row matched the fence but was held elsewhere.
    SELECT o.id
    FROM outcome AS o
    JOIN /* schema */jobs AS j ON j.id = o.id
    WHERE (SELECT count(*) FROM target) < cardinality(%(ids)s::bigint[])
      AND j.runner_id IS NOT DISTINCT FROM o.runner_id AND j.attempts = o.attempt
      AND j.status = 'running' AND NOT (o.id = ANY (ARRAY(SELECT id FROM target)))
), finished AS (
    -- A retry of a job whose cancellation was requested meanwhile ends it as cancelled; so does
    -- a superseded one.
    UPDATE /* schema */jobs AS j
    SET status = CASE WHEN o.status = 'queued' AND (j.cancel_requested OR t.sibling IS NOT NULL)
                      THEN 'cancelled' ELSE o.status END,
        superseded_by = t.sibling,
        runner_id = NULL,
        result = o.result::jsonb,
        error = coalesce(o.error::jsonb, j.error),
        failures = j.failures + o.failed::int,
        run_at = CASE WHEN o.status = 'queued' AND NOT j.cancel_requested AND t.sibling IS NULL
                      THEN now() + make_interval(secs => o.delay) ELSE j.run_at END,
        due = o.status = 'queued' AND NOT j.cancel_requested AND t.sibling IS NULL
              AND /* schema */due_soon(now() + make_interval(secs => o.delay)),
        finished_at = CASE WHEN o.status = 'queued' AND NOT j.cancel_requested AND t.sibling IS NULL
                           THEN NULL ELSE now() END
    FROM outcome AS o, target AS t
    -- The fence (re-stated: `target` holds these rows' locks).
    WHERE j.id = o.id AND t.id = o.id
      AND j.runner_id IS NOT DISTINCT FROM o.runner_id AND j.attempts = o.attempt
      AND j.status = 'running'
    RETURNING j.id, j.status, j.attempts, j.queue, j.run_at, j.due, j.started_at, o.runner_id,
              o.error, j.superseded_by,
              CASE WHEN j.lock_key IS NOT NULL AND NOT j.due THEN j.lock_key END AS freed_lock,
              CASE WHEN j.superseded_by IS NOT NULL
                   THEN 'superseded by job ' || j.superseded_by || ', queued with the same key ('
                        || o.reason || ')'
                   WHEN j.status = 'cancelled' AND o.status = 'queued'
                   THEN 'cancelled (requested while running): ' || o.reason
                   ELSE o.reason END AS reason
), events AS (
    INSERT INTO /* schema */job_events
        (job_id, from_status, to_status, attempt, runner_id, kind, reason, error)
    SELECT f.id, 'running', f.status, f.attempts, f.runner_id,
           CASE WHEN f.superseded_by IS NOT NULL THEN 'superseded'
                WHEN f.status = 'queued' THEN 'retry_scheduled' ELSE f.status END,
           f.reason, CASE WHEN f.status <> 'succeeded' THEN f.error::jsonb END
    FROM finished AS f
), counted AS (
    -- This runner's own rows of the rollup: no other runner ever waits on them.
    INSERT INTO /* schema */throughput AS t (queue, minute, runner_id, succeeded, failed, retried,
                                             cancelled, run_seconds)
    SELECT f.queue, date_trunc('minute', now()), coalesce(%(writer)s::bigint, 0),
           count(*) FILTER (WHERE f.status = 'succeeded'),
           count(*) FILTER (WHERE f.status = 'failed'),
           count(*) FILTER (WHERE f.status = 'queued'),
           count(*) FILTER (WHERE f.status = 'cancelled'),
           coalesce(sum(extract(epoch FROM now() - f.started_at)), 0)
    FROM finished AS f
    GROUP BY f.queue
    ON CONFLICT (queue, minute, runner_id) DO UPDATE
    SET succeeded = t.succeeded + excluded.succeeded, failed = t.failed + excluded.failed,
        retried = t.retried + excluded.retried, cancelled = t.cancelled + excluded.cancelled,
        run_seconds = t.run_seconds + excluded.run_seconds
), notified AS (
    -- Wakes job.result() waiters; when nobody waits, one look at an empty table.
    SELECT /* schema */notify_finished(array_agg(f.id)) AS n
    FROM finished AS f
    WHERE f.status <> 'queued' AND EXISTS (SELECT FROM /* schema */result_waiters)
    HAVING count(*) > 0
), woken AS (
    -- Retries due now: wake runners waiting on those queues.
    SELECT count(*) AS n FROM (
        SELECT /* schema */wake(array_agg(DISTINCT f.queue))
        FROM finished AS f WHERE f.status = 'queued' AND f.due HAVING count(*) > 0
    ) AS w
)
-- Reading notified and woken in the select list is what runs them.
SELECT 'done' AS what, f.id, (SELECT n FROM notified) AS notified, (SELECT n FROM woken) AS woken,
       f.freed_lock
FROM finished AS f
UNION ALL
SELECT 'busy', b.id, NULL, NULL, NULL FROM busy AS b

-- name: job_outcome_check
-- Of these (job, attempt, runner) outcomes, those the history shows already written: a write
-- whose reply was lost with its connection had committed. (The job's own row cannot tell: a
-- crash re-queue leaves it looking the same.)
SELECT DISTINCT e.job_id AS id
FROM /* schema */job_events AS e
JOIN unnest(%(ids)s::bigint[], %(attempts)s::int[], %(runner_ids)s::bigint[])
     AS o(id, attempt, runner_id)
  ON o.id = e.job_id
WHERE e.attempt = o.attempt AND e.runner_id = o.runner_id AND e.from_status = 'running'
  AND e.kind IN ('succeeded', 'retry_scheduled', 'failed', 'cancelled', 'superseded')

-- name: job_probe
-- Whether a claim in mode 'all' or over a list of queues could find work now, read-only (no
-- row lock, no transaction id, no WAL): an idle runner's poll runs this and claims only when
-- it says yes. Paused queues hold no work for it, except in mode 'all': a runner claims in
-- that mode only while it knows of no paused queue, and the claim this yes leads to tells it
-- of the pause (its next polls are in mode 'many', which skips this probe). A test of each
-- row's queue here would be costed as if it matched nothing, and planned as a full scan.
SELECT CASE WHEN %(mode)s::text = 'all'
            THEN EXISTS (SELECT 1 FROM /* schema */jobs AS j
                         WHERE j.status = 'queued' AND j.due AND j.run_at <= now())
            ELSE EXISTS (SELECT 1 FROM /* schema */jobs AS j
                         WHERE j.queue = ANY (ARRAY(
                                   SELECT s.queue FROM unnest(%(queues)s::text[]) AS s(queue)
                                   WHERE NOT EXISTS (SELECT 1 FROM /* schema */queues AS q
                                                     WHERE q.name = s.queue AND q.paused_at IS NOT NULL)))
                           AND j.status = 'queued' AND j.due AND j.run_at <= now())
       END AS work

-- name: lock_release
-- After job_finish, in its transaction: the slots its jobs freed go to their locks' first
-- waiters (release_lock_slots), whose queues are woken.
SELECT /* schema */release_lock_slots(%(keys)s::text[]) AS unblocked
