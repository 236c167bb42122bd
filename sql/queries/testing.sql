-- Statements of pgqueue.testing: running, in a test, the jobs the test enqueued.

-- name: testing_runnable
-- Whether a job of these queues (NULL: all) is runnable now: queued, due, and not in a paused
-- queue (the idle worker's job_probe asks it more cheaply, and in mode 'all' leaves the pause
-- to the claim; a drain must know for sure).
SELECT EXISTS (SELECT 1 FROM /* schema */jobs AS j
               WHERE j.status = 'queued' AND j.due AND j.run_at <= now()
                 AND (%(queues)s::text[] IS NULL OR j.queue = ANY (%(queues)s::text[]))
                 AND NOT EXISTS (SELECT 1 FROM /* schema */queues AS q
                                 WHERE q.name = j.queue AND q.paused_at IS NOT NULL)) AS work

-- name: testing_running
-- Whether the drain's runner still holds a job (claimed, outcome not committed yet).
SELECT EXISTS (SELECT 1 FROM /* schema */jobs AS j
               WHERE j.status = 'running' AND j.runner_id = %(runner_id)s::bigint) AS running

-- name: testing_run_scheduled
-- Makes the queued jobs of these queues (NULL: all) that wait for a later run_at (a delay, a
-- retry's backoff) runnable now, and wakes the runners waiting on their queues. Only for
-- run_pending(with_scheduled=True): run_at is not a state, so no event is written. Jobs with
-- a lock key only get their run_at: the maintenance pass gates them (promote_locked), and jobs
-- waiting for a lock's slot stay waiting.
WITH moved AS (
    UPDATE /* schema */jobs AS j
    SET run_at = now(), due = j.lock_key IS NULL
    WHERE j.status = 'queued' AND NOT j.blocked AND (j.run_at > now() OR NOT j.due)
      AND (%(queues)s::text[] IS NULL OR j.queue = ANY (%(queues)s::text[]))
    RETURNING j.queue
), woken AS (
    SELECT count(*) AS n FROM (
        SELECT /* schema */wake(array_agg(DISTINCT queue)) FROM moved HAVING count(*) > 0
    ) AS w
)
SELECT (SELECT count(*) FROM moved) AS moved, (SELECT n FROM woken) AS woken

-- name: testing_attempted
-- The jobs a runner claimed, in the order of their first claim by it (from the history).
SELECT e.job_id
FROM /* schema */job_events AS e
WHERE e.runner_id = %(runner_id)s::bigint AND e.kind = 'claimed'
  AND e.at >= (SELECT r.started_at FROM /* schema */runners AS r WHERE r.id = %(runner_id)s::bigint)
GROUP BY e.job_id
ORDER BY min(e.id)
