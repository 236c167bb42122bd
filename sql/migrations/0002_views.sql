-- pgqueue migration 0002: the documented views, the supported way to inspect from SQL.
-- (Written against the same schema placeholder as 0001.)
--
-- Views are an interface: add columns at the end, never rename or remove one.

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

COMMENT ON VIEW /* schema */queue_stats IS
    'Per queue: jobs by state (queued = runnable now, scheduled = run_at in the future), how long the oldest runnable job has waited (the queue''s lag), and jobs finished in the last minute. Scans the jobs table: prune finished jobs to keep it quick.';

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

COMMENT ON VIEW /* schema */runner_health IS
    'One row per runner (worker process start): alive is true while it runs and its last heartbeat is younger than its dead_after; running_jobs counts the jobs it holds.';

CREATE VIEW /* schema */job_timeline AS
SELECT e.job_id,
       e.id AS event_id,
       e.at,
       e.from_status,
       e.to_status,
       e.attempt,
       e.reason,
       e.runner_id,
       r.host AS runner_host,
       r.pid AS runner_pid,
       j.task,
       j.queue,
       e.at - lag(e.at) OVER (PARTITION BY e.job_id ORDER BY e.id) AS since_previous
FROM /* schema */job_events AS e
LEFT JOIN /* schema */jobs AS j ON j.id = e.job_id
LEFT JOIN /* schema */runners AS r ON r.id = e.runner_id;

COMMENT ON VIEW /* schema */job_timeline IS
    'One row per state change of a job, with the job''s task and queue and the runner''s host and pid: SELECT * FROM job_timeline WHERE job_id = 42 ORDER BY event_id.';
