-- Statements about runners (worker processes): register, heartbeat, liveness, stop, hand back.

-- name: runner_register
-- Registers a new runner (its id is new at every process start and after a lost lease) and,
-- on a direct connection, takes its liveness lock in the same statement: a session-level
-- shared advisory lock keyed by the runner id, which PostgreSQL releases the moment the
-- process's sessions end.
WITH registered AS (
    INSERT INTO /* schema */runners (host, pid, queues, concurrency, version, heartbeat_interval,
                                     dead_after, liveness, max_crashes)
    VALUES (%(host)s, %(pid)s, %(queues)s::text[], %(concurrency)s, %(version)s,
            %(heartbeat_interval)s, %(dead_after)s, %(liveness)s::boolean, %(max_crashes)s::int)
    RETURNING id, liveness
)
SELECT id,
       CASE WHEN liveness
            THEN pg_try_advisory_lock_shared(%(lock_class)s::int, (id %% 2147483648)::int)
            ELSE false END AS locked
FROM registered

-- name: runner_lock
-- Takes the runner's liveness lock on this session (each of a worker's direct connections
-- holds it, so one connection cut by pg_terminate_backend does not look like a dead process).
SELECT pg_try_advisory_lock_shared(%(lock_class)s::int, (%(runner_id)s::bigint %% 2147483648)::int) AS locked

-- name: runner_unlock
-- Releases an earlier incarnation's liveness lock on this session.
SELECT pg_advisory_unlock_shared(%(lock_class)s::int, (%(runner_id)s::bigint %% 2147483648)::int) AS released

-- name: runner_heartbeat
-- Refreshes a live runner's heartbeat (database clock), touching only the runners table, so a
-- lock held on jobs (VACUUM FULL, REINDEX, a queued ALTER) never stops heartbeats. No row back:
-- the runner was declared dead (or stopped) and must not write as itself again. Also returns
-- its rank among live runners (the first two run the maintenance passes) and how long ago the
-- last pass ran. A lost heartbeat only looks older: its commit need not wait for the disk.
WITH beat AS (
    UPDATE /* schema */runners
    SET heartbeat_at = now()
    WHERE id = %(runner_id)s::bigint AND state = 'running'
    RETURNING id
), asynchronous AS (
    SELECT set_config('synchronous_commit', 'off', true) AS setting
)
SELECT b.id,
       (SELECT count(*) FROM /* schema */runners AS r
        WHERE r.state = 'running' AND r.id < b.id) AS rank,
       extract(epoch FROM now() - (SELECT greatest(m.last_pass_at, now() - interval '1 day')
                                  FROM /* schema */maintenance AS m))::float8
           AS pass_age,
       (SELECT setting FROM asynchronous) IS NOT NULL AS asynchronous
FROM beat AS b

-- name: runner_attempts
-- The attempts the database says this runner runs, and which of them have a cancellation
-- request: the runner hands back those it does not know and tells the others to stop.
SELECT j.id, j.attempts, j.cancel_requested
FROM /* schema */jobs AS j
WHERE j.runner_id = %(runner_id)s::bigint AND j.status = 'running'
ORDER BY j.id

-- name: runner_end
-- Marks a runner stopped (a clean exit) or dead (it lost its lease and retires its old
-- identity); first of the two statements of a stop, in one transaction: the runner row is
-- locked before job rows, as the reaper does (no deadlock). The living re-read their rank.
WITH ended AS (
    UPDATE /* schema */runners
    SET state = %(state)s::text, waiting = false, stopped_at = now(), reason = %(reason)s::text,
        lost_reason = CASE WHEN %(state)s::text = 'dead' THEN 'lost its lease' END
    WHERE id = %(runner_id)s::bigint AND state = 'running'
    RETURNING id
)
SELECT e.id, pg_notify('/* channel */runners', 'ended') IS NULL AS told FROM ended AS e

-- name: runner_hand_back
-- Hands every attempt still running under this runner back to the queue (not a failure, not
-- a crash): at a clean stop, after the runner row is marked stopped, nothing is left running.
SELECT h.job_id, h.status
FROM (SELECT array_agg(j.id ORDER BY j.id) AS ids, array_agg(j.runner_id ORDER BY j.id) AS runners,
             array_agg(j.attempts ORDER BY j.id) AS attempts
      FROM /* schema */jobs AS j
      WHERE j.runner_id = %(runner_id)s::bigint AND j.status = 'running') AS m
CROSS JOIN LATERAL /* schema */requeue_attempts(
    m.ids, m.runners, m.attempts, array_fill(%(reason)s::text, ARRAY[cardinality(m.ids)]),
    'handed_back', NULL, false) AS h
WHERE m.ids IS NOT NULL

-- name: job_release
-- Hands back attempts that a live runner holds in the database but does not run (its claim
-- committed but the reply was lost with the connection): fenced, not a failure or a crash.
SELECT h.job_id, h.status
FROM /* schema */requeue_attempts(
    %(ids)s::bigint[], array_fill(%(runner_id)s::bigint, ARRAY[cardinality(%(ids)s::bigint[])]),
    %(attempts)s::int[],
    array_fill('handed back: runner ' || %(runner_id)s::bigint || ' did not hold this attempt any more',
               ARRAY[cardinality(%(ids)s::bigint[])]),
    'handed_back', NULL, false) AS h
