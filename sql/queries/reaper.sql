-- The reaper: declares silent runners dead and sends their running jobs back to the queue.

-- name: reaper_lock
-- Transaction-level advisory lock: at most one reaper per schema at a time; released at
-- commit, so it is safe behind a transaction-mode pooler and cannot leak.
SELECT pg_try_advisory_xact_lock(%(class_id)s::int, %(object_id)s::int) AS held

-- name: reaper_run
-- Declares dead the runners silent for longer than their own lease (runners.dead_after), or,
-- when `runner_id` is given, retires that one runner (it lost its lease and is alive to say
-- so: its jobs are handed back, not counted as crashes). Then re-queues every running job
-- whose runner is not alive, or fails it once its crash budget is spent, with an event
-- naming the dead runner; wakes waiting runners and notifies the waiters of ended jobs.
WITH dead AS (
    UPDATE /* schema */runners AS r
    SET state = 'dead', waiting = false, stopped_at = now(),
        reason = CASE
            WHEN %(runner_id)s::bigint IS NULL THEN
                'no heartbeat for '
                || round(extract(epoch FROM now() - r.heartbeat_at)::numeric, 1) || ' s'
            ELSE %(reason)s::text END
    WHERE r.state = 'running'
      AND CASE
            WHEN %(runner_id)s::bigint IS NULL THEN
                -- After a server restart every runner gets a full lease to heartbeat again.
                greatest(r.heartbeat_at, pg_postmaster_start_time())
                    < now() - make_interval(secs => r.dead_after)
            ELSE r.id = %(runner_id)s::bigint END
    RETURNING r.id, r.reason
), seen AS (
    -- Running jobs whose runner is not alive: declared dead just now (the statement's
    -- snapshot still shows it running), dead before (a claim that raced an earlier reap),
    -- or missing (a row written by hand). Read without locks: the runner_id seen here is
    -- the one the lock below must still find.
    SELECT j.id, j.runner_id, d.reason
    FROM /* schema */jobs AS j
    LEFT JOIN dead AS d ON d.id = j.runner_id
    WHERE j.status = 'running'
      AND (%(runner_id)s::bigint IS NULL OR j.runner_id = %(runner_id)s::bigint)
      AND (d.id IS NOT NULL OR NOT EXISTS (
            SELECT 1 FROM /* schema */runners AS r WHERE r.id = j.runner_id AND r.state = 'running'))
), orphans AS (
    -- Locked in id order, as finishing statements lock them: no deadlock with a zombie's
    -- write. A row that changed hands since the snapshot (re-claimed by a live runner)
    -- fails the runner_id test when re-checked under the lock, and is left alone.
    SELECT j.id, s.runner_id, s.reason
    FROM /* schema */jobs AS j
    JOIN seen AS s ON s.id = j.id
    WHERE j.status = 'running' AND j.runner_id = s.runner_id
    ORDER BY j.id
    FOR UPDATE OF j
), rescued AS (
    -- A job whose cancellation was requested ends cancelled instead of running again.
    UPDATE /* schema */jobs AS j
    SET status = CASE WHEN j.cancel_requested THEN 'cancelled'
                      WHEN %(runner_id)s::bigint IS NULL AND j.crashes + 1 >= %(max_crashes)s::int
                      THEN 'failed'
                      ELSE 'queued' END,
        crashes = j.crashes + CASE WHEN %(runner_id)s::bigint IS NULL THEN 1 ELSE 0 END,
        runner_id = NULL, due = true,
        finished_at = CASE WHEN j.cancel_requested
                                OR (%(runner_id)s::bigint IS NULL AND j.crashes + 1 >= %(max_crashes)s::int)
                           THEN now() END,
        error = CASE WHEN NOT j.cancel_requested AND %(runner_id)s::bigint IS NULL
                          AND j.crashes + 1 >= %(max_crashes)s::int
                     THEN jsonb_build_object(
                         'type', 'RunnerDied',
                         'message', 'runner died ' || (j.crashes + 1) || ' times running this job')
                     ELSE j.error END
    FROM orphans AS o
    -- Fenced like every write: a zombie that finished the job first wins, and then this skips it.
    WHERE j.id = o.id AND j.status = 'running' AND j.runner_id = o.runner_id
    RETURNING j.id, j.status, j.attempts, j.crashes, j.queue, o.runner_id,
              coalesce(o.reason, 'runner not alive') AS reason
), events AS (
    INSERT INTO /* schema */job_events (job_id, from_status, to_status, attempt, runner_id, reason)
    SELECT id, 'running', status, attempts, runner_id,
           CASE WHEN status = 'failed'
                THEN 'runner died ' || crashes || ' times running this job (runner '
                     || runner_id || ': ' || reason || ')'
                WHEN status = 'cancelled'
                THEN 'cancelled (requested while running); runner ' || runner_id
                     || ' declared dead: ' || reason
                WHEN %(runner_id)s::bigint IS NOT NULL
                THEN 'handed back: runner ' || runner_id || ' ' || reason
                ELSE 'runner ' || runner_id || ' declared dead: ' || reason END
    FROM rescued
), notified AS (
    SELECT /* schema */notify_finished(array_agg(id)) AS n
    FROM rescued WHERE status <> 'queued' HAVING count(*) > 0
), woken AS (
    SELECT count(*) AS n FROM (
        SELECT /* schema */wake(array_agg(DISTINCT queue))
        FROM rescued WHERE status = 'queued' HAVING count(*) > 0
    ) AS w
)
SELECT (SELECT coalesce(array_agg(id), '{}') FROM dead) AS dead_runners,
       (SELECT count(*) FROM rescued WHERE status = 'queued') AS requeued,
       (SELECT count(*) FROM rescued WHERE status = 'failed') AS failed,
       coalesce((SELECT n FROM notified), 0) AS notified,
       (SELECT n FROM woken) AS woken

-- name: job_promote
-- Moves up to `batch` queued jobs whose run_at comes within due_soon()'s reach into the claim
-- index (run by the reaper-lock holder on its tick); wakes runners for those already due.
WITH promoted AS (
    UPDATE /* schema */jobs AS j
    SET due = true
    WHERE j.id = ANY (ARRAY(
        SELECT s.id FROM /* schema */jobs AS s
        WHERE s.status = 'queued' AND NOT s.due AND /* schema */due_soon(s.run_at)
        ORDER BY s.run_at
        LIMIT %(batch)s::int
        FOR UPDATE SKIP LOCKED))
    RETURNING j.queue, j.run_at
), woken AS (
    SELECT count(*) AS n FROM (
        SELECT /* schema */wake(array_agg(DISTINCT queue))
        FROM promoted WHERE run_at <= now() HAVING count(*) > 0
    ) AS w
)
SELECT (SELECT count(*) FROM promoted) AS promoted, (SELECT n FROM woken) AS woken
