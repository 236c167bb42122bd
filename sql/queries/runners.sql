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
-- dead (or stopped) and must not write as itself again. Also returns its running jobs whose
-- cancellation was requested.
UPDATE /* schema */runners
SET heartbeat_at = now()
WHERE id = %(runner_id)s::bigint AND state = 'running'
RETURNING (
    SELECT coalesce(array_agg(j.id), '{}')
    FROM /* schema */jobs AS j
    WHERE j.runner_id = %(runner_id)s::bigint AND j.status = 'running' AND j.cancel_requested
) AS cancel_requested

-- name: runner_stop
-- Hands a stopping runner's unfinished jobs back to the queue (not counted as a failure) and
-- marks the runner stopped, in one statement: nothing is left running after a clean exit.
WITH handed_back AS (
    UPDATE /* schema */jobs
    SET status = 'queued', runner_id = NULL
    WHERE runner_id = %(runner_id)s::bigint AND status = 'running'
    RETURNING id, attempts, queue
), events AS (
    INSERT INTO /* schema */job_events (job_id, from_status, to_status, attempt, runner_id, reason)
    SELECT id, 'running', 'queued', attempts, %(runner_id)s::bigint, %(reason)s FROM handed_back
), stopped AS (
    UPDATE /* schema */runners
    SET state = 'stopped', waiting = false, stopped_at = now(), reason = %(reason)s
    WHERE id = %(runner_id)s::bigint AND state = 'running'
    RETURNING id
), woken AS (
    SELECT count(*) AS n FROM (
        SELECT /* schema */wake(array_agg(DISTINCT queue)) FROM handed_back HAVING count(*) > 0
    ) AS w
)
SELECT (SELECT count(*) FROM handed_back) AS handed_back,
       (SELECT count(*) FROM stopped) AS stopped,
       (SELECT n FROM woken) AS woken
