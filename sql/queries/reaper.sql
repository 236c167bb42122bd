-- The maintenance pass: elected once per interval for the whole cluster; declares dead runners
-- dead, gives their running jobs to the living, promotes jobs whose time has come.

-- name: maintenance_begin
-- First statement of a pass's transaction: its timeouts, local to the transaction (behind a
-- transaction-mode pooler a session setting would land on someone else's connection), and an
-- asynchronous commit (a pass lost in a crash is simply run again).
SELECT set_config('statement_timeout', %(timeout_ms)s::text, true),
       set_config('lock_timeout', %(lock_timeout_ms)s::text, true),
       set_config('idle_in_transaction_session_timeout', %(timeout_ms)s::text, true),
       set_config('synchronous_commit', 'off', true)

-- name: maintenance_elect
-- Wins this interval's pass, or returns nothing: another runner ran one less than an interval
-- ago, or runs one now (its lock on the row is skipped, never waited for). A pass that follows
-- a gap longer than `gap` seconds (every heartbeat may have stopped with it: a lock, a failover,
-- a paused VM) starts a new unbroken run: no heartbeat counts as older than resumed_at. Also
-- notes a crash restart or failover (the unlogged server_epoch row is gone), and says whether
-- the slower sweep for orphaned jobs is due.
WITH due AS (
    SELECT m.id FROM /* schema */maintenance AS m
    WHERE m.last_pass_at <= now() - make_interval(secs => %(interval)s::float8 * 0.8)
    FOR UPDATE SKIP LOCKED
), elected AS (
    UPDATE /* schema */maintenance AS m
    SET last_pass_at = now(),
        resumed_at = CASE WHEN m.last_pass_at < now() - make_interval(secs => %(gap)s::float8)
                          THEN now() ELSE m.resumed_at END,
        passes = m.passes + 1,
        runner_id = %(runner_id)s::bigint,
        last_sweep_at = CASE WHEN m.last_sweep_at < now() - make_interval(secs => %(sweep_every)s::float8)
                             THEN now() ELSE m.last_sweep_at END
    FROM due
    WHERE m.id = due.id
    RETURNING m.last_pass_at, m.passes, m.last_sweep_at = now() AS sweep
), epoch AS (
    INSERT INTO /* schema */server_epoch (id, noticed_at)
    SELECT true, now() FROM elected
    ON CONFLICT (id) DO NOTHING
    RETURNING noticed_at
)
SELECT e.passes, e.sweep, (SELECT count(*) FROM epoch) > 0 AS server_changed, e.last_pass_at
FROM elected AS e

-- name: reaper_declare
-- Runs after maintenance_elect, in its transaction (it reads what that one wrote).
-- Declares dead the runners whose lease ran out (no heartbeat for longer than their own
-- dead_after, counted from no earlier than resumed_at and the server's start) and, when
-- `process_checks`, the runners whose process is gone: no session holds their liveness lock
-- any more although they took it on this server (they registered after its last restart or
-- failover, or have had a whole lease since to take it again), and their heartbeat is not
-- fresh (older than `fresh` seconds).
WITH since AS MATERIALIZED (
    -- When the current run of passes began, and since when this server incarnation has run
    -- (its start, or the pass that found the unlogged epoch row gone: a crash restart, a
    -- failover).
    SELECT m.resumed_at,
           greatest(pg_postmaster_start_time(),
                    coalesce((SELECT e.noticed_at FROM /* schema */server_epoch AS e), now())) AS server_since
    FROM /* schema */maintenance AS m
), held AS MATERIALIZED (
    SELECT l.objid
    FROM pg_catalog.pg_locks AS l
    WHERE l.locktype = 'advisory' AND l.granted AND l.objsubid = 2
      AND l.classid = (%(lock_class)s::int)::oid
      AND l.database = (SELECT d.oid FROM pg_catalog.pg_database AS d
                        WHERE d.datname = current_database())
), verdict AS (
    SELECT r.id,
           greatest(r.heartbeat_at, s.resumed_at, s.server_since)
               < now() - make_interval(secs => r.dead_after) AS lease_out,
           %(process_checks)s::boolean AND r.liveness
               AND (s.server_since < r.started_at
                    OR s.server_since < now() - make_interval(secs => r.dead_after))
               AND r.heartbeat_at < now() - make_interval(secs => %(fresh)s::float8)
               AND NOT EXISTS (SELECT 1 FROM held AS h
                               WHERE h.objid = ((r.id %% 2147483648)::int)::oid) AS process_gone
    FROM /* schema */runners AS r, since AS s
    WHERE r.state = 'running'
), dead AS (
    UPDATE /* schema */runners AS r
    SET state = 'dead', waiting = false, stopped_at = now(),
        lost_reason = CASE WHEN v.process_gone THEN 'process gone' ELSE 'no heartbeat' END,
        reason = CASE WHEN v.process_gone
                      THEN 'process gone (no session of it is left; last heartbeat '
                           || round(extract(epoch FROM now() - r.heartbeat_at)::numeric, 1) || ' s ago)'
                      ELSE 'no heartbeat for '
                           || round(extract(epoch FROM now() - r.heartbeat_at)::numeric, 1) || ' s' END
    FROM verdict AS v
    WHERE r.id = v.id AND r.state = 'running' AND (v.lease_out OR v.process_gone)
    RETURNING r.id, r.reason, coalesce(r.max_crashes, %(max_crashes)s::int) AS max_crashes,
              extract(epoch FROM now() - r.heartbeat_at)::float8 AS silent_for
), told AS (
    -- The living re-read their rank at once (the two oldest run the passes).
    SELECT pg_notify('/* channel */runners', 'dead') FROM (SELECT 1 FROM dead LIMIT 1) AS any_dead
)
SELECT id, reason, max_crashes, silent_for, (SELECT count(*) FROM told) AS told
FROM dead ORDER BY id

-- name: reaper_requeue
-- Gives the running jobs of these dead runners to the living: re-queued with a crash counted,
-- or failed once the runner's crash budget is spent (requeue_attempts, with SKIP LOCKED: a job
-- row someone holds is left to the orphan sweep).
SELECT r.status, count(*) AS jobs
FROM unnest(%(runner_ids)s::bigint[], %(reasons)s::text[], %(max_crashes)s::int[])
     AS d(runner_id, reason, max_crashes)
CROSS JOIN LATERAL (
    SELECT array_agg(j.id ORDER BY j.id) AS ids, array_agg(j.runner_id ORDER BY j.id) AS runners,
           array_agg(j.attempts ORDER BY j.id) AS attempts
    FROM /* schema */jobs AS j
    WHERE j.runner_id = d.runner_id AND j.status = 'running'
) AS m
CROSS JOIN LATERAL /* schema */requeue_attempts(
    m.ids, m.runners, m.attempts, array_fill(d.reason, ARRAY[cardinality(m.ids)]),
    'crashed', d.max_crashes, true) AS r
WHERE m.ids IS NOT NULL
GROUP BY r.status

-- name: reaper_sweep
-- Running jobs whose runner is not alive (a row written by hand, a runner row deleted, a job
-- whose row was locked when its runner was reaped): re-queued like a dead runner's, or handed
-- back without a crash when their runner stopped cleanly. Cost grows with the runners that
-- hold jobs, not with the jobs: a loose scan of jobs_running_idx finds the distinct runners.
WITH RECURSIVE holders AS (
    (SELECT j.runner_id FROM /* schema */jobs AS j
     WHERE j.status = 'running' ORDER BY j.runner_id LIMIT 1)
    UNION ALL
    SELECT (SELECT j.runner_id FROM /* schema */jobs AS j
            WHERE j.status = 'running' AND j.runner_id > h.runner_id ORDER BY j.runner_id LIMIT 1)
    FROM holders AS h WHERE h.runner_id IS NOT NULL
), orphaned AS (
    SELECT h.runner_id, (rr.state = 'stopped') AS stopped
    FROM holders AS h
    LEFT JOIN /* schema */runners AS rr ON rr.id = h.runner_id
    WHERE h.runner_id IS NOT NULL AND (rr.id IS NULL OR rr.state <> 'running')
)
SELECT r.status, count(*) AS jobs
FROM orphaned AS o
CROSS JOIN LATERAL (
    SELECT array_agg(j.id ORDER BY j.id) AS ids, array_agg(j.runner_id ORDER BY j.id) AS runners,
           array_agg(j.attempts ORDER BY j.id) AS attempts
    FROM /* schema */jobs AS j
    WHERE j.runner_id = o.runner_id AND j.status = 'running'
) AS m
CROSS JOIN LATERAL /* schema */requeue_attempts(
    m.ids, m.runners, m.attempts,
    array_fill(CASE WHEN o.stopped THEN 'handed back: runner ' || o.runner_id || ' stopped'
                    ELSE 'runner not alive' END, ARRAY[cardinality(m.ids)]),
    CASE WHEN o.stopped THEN 'handed_back' ELSE 'crashed' END,
    CASE WHEN o.stopped THEN NULL ELSE %(max_crashes)s::int END, true) AS r
WHERE m.ids IS NOT NULL
GROUP BY r.status

-- name: job_promote
-- Moves up to `batch` queued jobs whose run_at has come into the claim indexes, oldest first,
-- and wakes the runners waiting on their queues. Jobs with a lock key are left to
-- promote_locked (they take a slot of their lock, or wait blocked for one).
WITH promoted AS (
    UPDATE /* schema */jobs AS j
    SET due = true
    WHERE j.id = ANY (ARRAY(
        SELECT s.id FROM /* schema */jobs AS s
        WHERE s.status = 'queued' AND NOT s.due AND NOT s.blocked AND /* schema */due_soon(s.run_at)
          AND s.lock_key IS NULL
        ORDER BY s.run_at
        LIMIT %(batch)s::int
        FOR UPDATE SKIP LOCKED))
      AND j.status = 'queued' AND NOT j.due
    RETURNING j.queue
), woken AS (
    SELECT count(*) AS n FROM (
        SELECT /* schema */wake(array_agg(DISTINCT queue)) FROM promoted HAVING count(*) > 0
    ) AS w
)
SELECT (SELECT count(*) FROM promoted) AS promoted, (SELECT n FROM woken) AS woken

-- name: job_promote_locked
-- Jobs with a lock key whose run_at has come: gated like a new enqueue (promote_locked).
SELECT /* schema */promote_locked(%(batch)s::int) AS promoted

-- name: lock_sweep
-- The backstop for a lost release: locks with waiters and a free slot give it (the sweep).
SELECT /* schema */release_stuck_waiters() AS unblocked
