-- Reverts 0003_resilience: drops what it added and restores the 0001/0002 definitions it replaced.
DROP VIEW IF EXISTS /* schema */health;
DROP VIEW IF EXISTS /* schema */queue_stats;
DROP VIEW IF EXISTS /* schema */runner_health;
DROP FUNCTION IF EXISTS /* schema */requeue_attempts(bigint[], bigint[], integer[], text[], text, integer, boolean);
DROP TABLE IF EXISTS /* schema */throughput;
DROP INDEX IF EXISTS /* schema */job_events_at_brin;
ALTER TABLE /* schema */job_events DROP COLUMN IF EXISTS kind, DROP COLUMN IF EXISTS error;
ALTER TABLE /* schema */job_events RESET (autovacuum_vacuum_insert_scale_factor, autovacuum_analyze_scale_factor);
DROP INDEX IF EXISTS /* schema */jobs_finished_idx;
DROP INDEX IF EXISTS /* schema */jobs_ready_idx;
ALTER TABLE /* schema */jobs
    DROP COLUMN IF EXISTS meta,
    DROP CONSTRAINT IF EXISTS jobs_queue_length,
    DROP CONSTRAINT IF EXISTS jobs_task_length,
    DROP CONSTRAINT IF EXISTS jobs_key_length;
ALTER TABLE /* schema */jobs RESET (autovacuum_vacuum_scale_factor, autovacuum_vacuum_threshold,
    autovacuum_analyze_scale_factor, autovacuum_analyze_threshold, autovacuum_vacuum_cost_delay);
DROP TABLE IF EXISTS /* schema */server_epoch;
DROP TABLE IF EXISTS /* schema */maintenance;
ALTER TABLE /* schema */runners
    DROP CONSTRAINT IF EXISTS runners_heartbeat_interval_sane,
    DROP CONSTRAINT IF EXISTS runners_dead_after_sane,
    DROP COLUMN IF EXISTS liveness,
    DROP COLUMN IF EXISTS lost_reason,
    DROP COLUMN IF EXISTS max_crashes;
DROP TABLE IF EXISTS /* schema */schema_info;
ALTER TABLE /* schema */jobs ALTER COLUMN due SET DEFAULT true;

CREATE OR REPLACE FUNCTION /* schema */due_soon(run_at timestamptz) RETURNS boolean
LANGUAGE sql STABLE AS $$
    SELECT run_at <= now() + interval '5 seconds'
$$;

CREATE FUNCTION /* schema */jobs_after_insert() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    PERFORM 1 FROM /* schema */runners WHERE state = 'running' AND waiting LIMIT 1;
    IF NOT FOUND THEN
        RETURN NULL;
    END IF;
    PERFORM /* schema */wake(array_agg(DISTINCT queue))
    FROM inserted
    WHERE status = 'queued' AND run_at <= now()
    HAVING count(*) > 0;
    RETURN NULL;
END
$$;

CREATE VIEW /* schema */queue_stats AS
SELECT queue,
       count(*) FILTER (WHERE status = 'queued' AND run_at <= now())  AS queued,
       count(*) FILTER (WHERE status = 'queued' AND run_at > now())   AS scheduled,
       count(*) FILTER (WHERE status = 'running')                     AS running,
       count(*) FILTER (WHERE status = 'succeeded')                   AS succeeded,
       count(*) FILTER (WHERE status = 'failed')                      AS failed,
       count(*) FILTER (WHERE status = 'cancelled')                   AS cancelled,
       now() - min(run_at) FILTER (WHERE status = 'queued' AND run_at <= now()) AS oldest_queued_age,
       count(*) FILTER (WHERE status = 'succeeded' AND finished_at > now() - interval '1 minute')
           AS succeeded_last_minute,
       count(*) FILTER (WHERE status = 'failed' AND finished_at > now() - interval '1 minute')
           AS failed_last_minute
FROM /* schema */jobs
GROUP BY queue;

CREATE VIEW /* schema */runner_health AS
SELECT r.id,
       r.host,
       r.pid,
       r.queues,
       r.concurrency,
       r.state,
       r.state = 'running' AND now() - r.heartbeat_at < make_interval(secs => r.dead_after) AS alive,
       now() - r.heartbeat_at AS heartbeat_age,
       r.heartbeat_at,
       r.started_at,
       r.stopped_at,
       r.reason,
       (SELECT count(*) FROM /* schema */jobs AS j
        WHERE j.runner_id = r.id AND j.status = 'running') AS running_jobs,
       r.waiting,
       r.version,
       r.heartbeat_interval,
       r.dead_after
FROM /* schema */runners AS r;

CREATE TRIGGER jobs_wake_after_insert
    AFTER INSERT ON /* schema */jobs
    REFERENCING NEW TABLE AS inserted
    FOR EACH STATEMENT EXECUTE FUNCTION /* schema */jobs_after_insert();
