-- Reverts 0004_flow_control: drops what it added and restores the 0003 definitions it replaced
-- (queue_stats, requeue_attempts, jobs_scheduled_idx). Jobs waiting blocked on a lock become
-- plain queued jobs.
UPDATE /* schema */jobs SET blocked = false, due = /* schema */due_soon(run_at) WHERE blocked;
DROP VIEW IF EXISTS /* schema */queue_stats;
DROP FUNCTION IF EXISTS /* schema */release_stuck_waiters();
DROP FUNCTION IF EXISTS /* schema */promote_locked(integer);
DROP FUNCTION IF EXISTS /* schema */record_starts(text, integer);
DROP FUNCTION IF EXISTS /* schema */queue_allowance(text, integer);
DROP FUNCTION IF EXISTS /* schema */claim_guard();
DROP FUNCTION IF EXISTS /* schema */limit_queue(text, integer, integer, interval, text);
DROP FUNCTION IF EXISTS /* schema */resume_queue(text, text);
DROP FUNCTION IF EXISTS /* schema */pause_queue(text, text, text);
DROP FUNCTION IF EXISTS /* schema */retry(bigint, text);
DROP FUNCTION IF EXISTS /* schema */retry_jobs(bigint[], text, text[]);
DROP FUNCTION IF EXISTS /* schema */cancel(bigint, text);
DROP FUNCTION IF EXISTS /* schema */cancel_jobs(bigint[], text);
DROP FUNCTION IF EXISTS /* schema */enqueue_many(text, jsonb, jsonb, text, integer, timestamptz, interval, integer, jsonb);
DROP FUNCTION IF EXISTS /* schema */enqueue(text, jsonb, jsonb, text, integer, timestamptz, interval, integer, text, text, interval, text, interval, interval, text, integer, jsonb);
DROP FUNCTION IF EXISTS /* schema */enqueue_job(text, jsonb, jsonb, text, integer, timestamptz, interval, integer, text, text, interval, text, interval, interval, text, integer, jsonb);
DROP FUNCTION IF EXISTS /* schema */lock_must_wait(text, integer);
DROP FUNCTION IF EXISTS /* schema */release_lock_slots(text[]);
DROP TABLE IF EXISTS /* schema */queue_events;
DROP TABLE IF EXISTS /* schema */queues;
DROP INDEX IF EXISTS /* schema */jobs_scheduled_idx;
CREATE INDEX jobs_scheduled_idx ON /* schema */jobs (run_at) WHERE status = 'queued' AND NOT due;
ALTER TABLE /* schema */jobs
    DROP COLUMN IF EXISTS scoped_key,
    DROP COLUMN IF EXISTS key_scope,
    DROP COLUMN IF EXISTS key_until,
    DROP COLUMN IF EXISTS lock_key,
    DROP COLUMN IF EXISTS lock_limit,
    DROP COLUMN IF EXISTS blocked,
    DROP COLUMN IF EXISTS superseded_by;
UPDATE /* schema */schema_info SET value = '0003' WHERE key = 'compatible_since';
ALTER FUNCTION /* schema */wake(text[]) RESET search_path;
ALTER FUNCTION /* schema */notify_finished(bigint[]) RESET search_path;

-- 0003's requeue_attempts, as it was.
CREATE OR REPLACE FUNCTION /* schema */requeue_attempts(
    p_job_ids bigint[], p_runner_ids bigint[], p_attempts integer[], p_reasons text[],
    p_kind text, p_max_crashes integer, p_skip_locked boolean
) RETURNS TABLE (job_id bigint, status text, queue text)
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    v_ids bigint[];
    v_runners bigint[];
    v_reasons text[];
BEGIN
    -- Lock the attempts that still run as named, in id order. Two statements only because
    -- SKIP LOCKED cannot be a parameter.
    IF p_skip_locked THEN
        SELECT array_agg(t.id ORDER BY t.id), array_agg(t.runner_id ORDER BY t.id),
               array_agg(t.reason ORDER BY t.id)
        INTO v_ids, v_runners, v_reasons
        FROM (SELECT j.id, a.runner_id, a.reason
              FROM /* schema */jobs AS j
              JOIN unnest(p_job_ids, p_runner_ids, p_attempts, p_reasons)
                   AS a(id, runner_id, attempt, reason) ON a.id = j.id
              WHERE j.status = 'running' AND j.runner_id = a.runner_id AND j.attempts = a.attempt
              ORDER BY j.id
              FOR UPDATE OF j SKIP LOCKED) AS t;
    ELSE
        SELECT array_agg(t.id ORDER BY t.id), array_agg(t.runner_id ORDER BY t.id),
               array_agg(t.reason ORDER BY t.id)
        INTO v_ids, v_runners, v_reasons
        FROM (SELECT j.id, a.runner_id, a.reason
              FROM /* schema */jobs AS j
              JOIN unnest(p_job_ids, p_runner_ids, p_attempts, p_reasons)
                   AS a(id, runner_id, attempt, reason) ON a.id = j.id
              WHERE j.status = 'running' AND j.runner_id = a.runner_id AND j.attempts = a.attempt
              ORDER BY j.id
              FOR UPDATE OF j) AS t;
    END IF;
    IF v_ids IS NULL THEN
        RETURN;
    END IF;
    RETURN QUERY
    WITH target AS (
        SELECT * FROM unnest(v_ids, v_runners, v_reasons) AS t(id, runner_id, reason)
    ), moved AS (
        UPDATE /* schema */jobs AS j
        SET status = CASE WHEN j.cancel_requested THEN 'cancelled'
                          WHEN p_max_crashes IS NOT NULL AND j.crashes + 1 >= p_max_crashes THEN 'failed'
                          ELSE 'queued' END,
            crashes = j.crashes + (p_max_crashes IS NOT NULL)::int,
            runner_id = NULL,
            due = true,
            finished_at = CASE WHEN j.cancel_requested
                                    OR (p_max_crashes IS NOT NULL AND j.crashes + 1 >= p_max_crashes)
                               THEN now() END,
            error = CASE WHEN NOT j.cancel_requested AND p_max_crashes IS NOT NULL
                              AND j.crashes + 1 >= p_max_crashes
                         THEN jsonb_build_object(
                             'type', 'RunnerDied',
                             'message', 'runner died ' || (j.crashes + 1) || ' times running this job',
                             'traceback', '')
                         ELSE j.error END
        FROM target AS t
        -- The fence, re-stated: these rows are locked by this transaction.
        WHERE j.id = t.id AND j.status = 'running' AND j.runner_id = t.runner_id
        RETURNING j.id, j.status, j.attempts, j.crashes, j.queue, j.started_at, t.runner_id, t.reason
    ), events AS (
        INSERT INTO /* schema */job_events
            (job_id, from_status, to_status, attempt, runner_id, kind, reason, error)
        SELECT m.id, 'running', m.status, m.attempts, m.runner_id, p_kind,
               CASE WHEN m.status = 'failed'
                    THEN 'runner died ' || m.crashes || ' times running this job (runner '
                         || m.runner_id || ': ' || m.reason || ')'
                    WHEN m.status = 'cancelled' AND p_kind = 'crashed'
                    THEN 'cancelled (requested while running); runner ' || m.runner_id
                         || ' declared dead: ' || m.reason
                    WHEN m.status = 'cancelled'
                    THEN 'cancelled (requested while running); ' || m.reason
                    WHEN p_kind = 'crashed'
                    THEN 'runner ' || m.runner_id || ' declared dead: ' || m.reason
                    ELSE m.reason END,
               CASE WHEN p_kind = 'crashed'
                    THEN jsonb_build_object('type', 'RunnerDied',
                                            'message', 'runner ' || m.runner_id || ' declared dead: '
                                                       || m.reason,
                                            'traceback', '') END
        FROM moved AS m
    ), counted AS (
        INSERT INTO /* schema */throughput AS c (queue, minute, runner_id, failed, cancelled, crashed,
                                                 run_seconds)
        SELECT m.queue, date_trunc('minute', now()), 0,
               count(*) FILTER (WHERE m.status = 'failed'),
               count(*) FILTER (WHERE m.status = 'cancelled'),
               count(*),
               coalesce(sum(extract(epoch FROM now() - m.started_at)), 0)
        FROM moved AS m
        WHERE p_kind = 'crashed'
        GROUP BY m.queue
        ON CONFLICT ON CONSTRAINT throughput_pkey DO UPDATE
        SET failed = c.failed + excluded.failed, cancelled = c.cancelled + excluded.cancelled,
            crashed = c.crashed + excluded.crashed, run_seconds = c.run_seconds + excluded.run_seconds
    ), notified AS (
        SELECT /* schema */notify_finished(array_agg(m.id)) AS n
        FROM moved AS m WHERE m.status <> 'queued' HAVING count(*) > 0
    ), woken AS (
        SELECT count(*) AS n FROM (
            SELECT /* schema */wake(array_agg(DISTINCT m.queue))
            FROM moved AS m WHERE m.status = 'queued' HAVING count(*) > 0
        ) AS w
    )
    SELECT m.id, m.status, m.queue
    FROM moved AS m
    -- Reading notified and woken is what runs them.
    WHERE (SELECT count(*) FROM notified) >= 0 AND (SELECT n FROM woken) >= 0;
END
$$;

COMMENT ON FUNCTION /* schema */requeue_attempts(bigint[], bigint[], integer[], text[], text, integer, boolean) IS
    'The one definition of running attempts going back to the queue (hand-back by a live runner, or crash re-queue by the reaper), fenced on (runner, attempt); writes events, wakes runners, notifies waiters.';

-- 0003's queue_stats, as it was.
CREATE OR REPLACE VIEW /* schema */queue_stats AS
WITH live AS (
    SELECT j.queue, count(*) AS queued, 0::bigint AS scheduled, 0::bigint AS running,
           min(j.run_at) AS oldest
    FROM /* schema */jobs AS j WHERE j.status = 'queued' AND j.due GROUP BY j.queue
    UNION ALL
    SELECT j.queue, count(*) FILTER (WHERE j.run_at <= now()),
           count(*) FILTER (WHERE j.run_at > now()), 0,
           min(j.run_at) FILTER (WHERE j.run_at <= now())
    FROM /* schema */jobs AS j WHERE j.status = 'queued' AND NOT j.due GROUP BY j.queue
    UNION ALL
    SELECT j.queue, 0, 0, count(*), NULL
    FROM /* schema */jobs AS j WHERE j.status = 'running' GROUP BY j.queue
), done AS (
    SELECT t.queue,
           sum(t.succeeded) AS succeeded, sum(t.failed) AS failed, sum(t.cancelled) AS cancelled,
           sum(t.succeeded) FILTER (WHERE t.minute >= date_trunc('minute', now()) - interval '1 minute') AS succeeded_last_minute,
           sum(t.failed) FILTER (WHERE t.minute >= date_trunc('minute', now()) - interval '1 minute') AS failed_last_minute,
           sum(t.succeeded) FILTER (WHERE t.minute > now() - interval '1 hour') AS succeeded_last_hour,
           sum(t.failed) FILTER (WHERE t.minute > now() - interval '1 hour') AS failed_last_hour,
           sum(t.retried) FILTER (WHERE t.minute > now() - interval '1 hour') AS retried_last_hour,
           sum(t.crashed) FILTER (WHERE t.minute > now() - interval '1 hour') AS crashed_last_hour
    FROM /* schema */throughput AS t
    WHERE t.minute > now() - interval '1 day'
    GROUP BY t.queue
), per_queue AS (
    SELECT l.queue, sum(l.queued)::bigint AS queued, sum(l.scheduled)::bigint AS scheduled,
           sum(l.running)::bigint AS running, min(l.oldest) AS oldest
    FROM live AS l GROUP BY l.queue
)
SELECT coalesce(p.queue, d.queue) AS queue,
       coalesce(p.queued, 0)::bigint AS queued,
       coalesce(p.scheduled, 0)::bigint AS scheduled,
       coalesce(p.running, 0)::bigint AS running,
       coalesce(d.succeeded, 0)::bigint AS succeeded,
       coalesce(d.failed, 0)::bigint AS failed,
       coalesce(d.cancelled, 0)::bigint AS cancelled,
       now() - p.oldest AS oldest_queued_age,
       coalesce(d.succeeded_last_minute, 0)::bigint AS succeeded_last_minute,
       coalesce(d.failed_last_minute, 0)::bigint AS failed_last_minute,
       coalesce(d.succeeded_last_hour, 0)::bigint AS succeeded_last_hour,
       coalesce(d.failed_last_hour, 0)::bigint AS failed_last_hour,
       coalesce(d.retried_last_hour, 0)::bigint AS retried_last_hour,
       coalesce(d.crashed_last_hour, 0)::bigint AS crashed_last_hour
FROM per_queue AS p
FULL JOIN done AS d ON d.queue = p.queue;

COMMENT ON VIEW /* schema */queue_stats IS
    'Per queue: queued (runnable now), scheduled (run_at in the future) and running jobs, from the partial indexes; how long the oldest runnable job has waited (the queue''s lag); and jobs finished, from the throughput rollup: succeeded, failed and cancelled in the last 24 hours, and per minute and hour.';
