-- Statements about runners (worker processes): register, heartbeat, stop.

-- name: runner_register
-- Registers a new runner; its id is new at every process start (and after a lost lease).
INSERT INTO /* schema */runners (host, pid, queues, concurrency, version, heartbeat_interval,
                                 dead_after)
VALUES (%(host)s, %(pid)s, %(queues)s::text[], %(concurrency)s, %(version)s,
        %(heartbeat_interval)s, %(dead_after)s)
RETURNING id

-- name: runner_heartbeat
-- Refreshes a live runner's heartbeat (database clock). No row back: the runner was declared
-- dead (or stopped) and must not write as itself again. Also returns the attempts the
-- database says it runs, and those whose cancellation was requested.
WITH beat AS (
    UPDATE /* schema */runners
    SET heartbeat_at = now()
    WHERE id = %(runner_id)s::bigint AND state = 'running'
    RETURNING id
), mine AS (
    SELECT j.id, j.attempts, j.cancel_requested
    FROM /* schema */jobs AS j
    WHERE j.runner_id = %(runner_id)s::bigint AND j.status = 'running'
)
SELECT coalesce((SELECT array_agg(id) FROM mine WHERE cancel_requested), '{}') AS cancel_requested,
       coalesce((SELECT array_agg(id ORDER BY id) FROM mine), '{}') AS running_ids,
       coalesce((SELECT array_agg(attempts ORDER BY id) FROM mine), '{}') AS running_attempts
FROM beat

-- name: runner_stop
-- Hands a stopping runner's unfinished jobs back to the queue (not counted as a failure) and
-- marks the runner stopped, in one statement: nothing is left running after a clean exit.
-- The runner row is locked first, then the jobs, as the reaper does (no deadlock). A runner
-- already declared dead still hands back what a late claim left under its id.
WITH stopped AS (
    UPDATE /* schema */runners
    SET state = 'stopped', waiting = false, stopped_at = now(), reason = %(reason)s
    WHERE id = %(runner_id)s::bigint AND state = 'running'
    RETURNING id
), handed_back AS (
    UPDATE /* schema */jobs
    SET status = CASE WHEN cancel_requested THEN 'cancelled' ELSE 'queued' END,
        runner_id = NULL, due = true,
        finished_at = CASE WHEN cancel_requested THEN now() END
    -- The count makes `stopped` run first (so the runner row is locked before job rows).
    WHERE runner_id = %(runner_id)s::bigint AND status = 'running'
      AND (SELECT count(*) FROM stopped) >= 0
    RETURNING id, attempts, queue, status
), events AS (
    INSERT INTO /* schema */job_events (job_id, from_status, to_status, attempt, runner_id, reason)
    SELECT id, 'running', status, attempts, %(runner_id)s::bigint, %(reason)s FROM handed_back
), notified AS (
    SELECT /* schema */notify_finished(array_agg(id)) AS n
    FROM handed_back WHERE status = 'cancelled' HAVING count(*) > 0
), woken AS (
    SELECT count(*) AS n FROM (
        SELECT /* schema */wake(array_agg(DISTINCT queue))
        FROM handed_back WHERE status = 'queued' HAVING count(*) > 0
    ) AS w
)
SELECT (SELECT count(*) FROM handed_back) AS handed_back,
       (SELECT count(*) FROM stopped) AS stopped,
       (SELECT n FROM woken) AS woken,
       (SELECT n FROM notified) AS notified
