-- pgqueue migration 0003: a core that stays correct under stalls and hostile rows, detects a
-- dead worker process from the database's side, and keeps its cost flat as queues, runners
-- and tables grow. Additive: workers of revision 0002 keep running on it.
-- (Written against the same schema placeholder as 0001.)

-- ------------------------------------------------------------------ compatibility
-- Which worker code may run on this schema: code whose head revision is at least
-- compatible_since. A migration that breaks older workers raises it; additive ones leave it.
CREATE TABLE /* schema */schema_info (
    key             text PRIMARY KEY,
    value           text NOT NULL
);
INSERT INTO /* schema */schema_info (key, value) VALUES ('compatible_since', '0002');

COMMENT ON TABLE /* schema */schema_info IS
    'Facts about the schema itself. compatible_since: the oldest code revision that may run on it (a rolling deploy keeps older workers running until then).';

-- ------------------------------------------------------------------------ runners
-- A hand-written row with a NaN, infinite or absurd lease would make every reaper pass of every
-- runner fail (make_interval overflows): such rows are repaired, and refused from now on.
UPDATE /* schema */runners SET heartbeat_interval = 2
WHERE NOT (heartbeat_interval BETWEEN 0.1 AND 3600);
UPDATE /* schema */runners SET dead_after = greatest(10, heartbeat_interval * 2)
WHERE NOT (dead_after BETWEEN 0.5 AND 86400);

ALTER TABLE /* schema */runners
    ADD CONSTRAINT runners_heartbeat_interval_sane CHECK (heartbeat_interval BETWEEN 0.1 AND 3600),
    ADD CONSTRAINT runners_dead_after_sane CHECK (dead_after BETWEEN 0.5 AND 86400),
    ADD COLUMN liveness boolean NOT NULL DEFAULT false,
    ADD COLUMN lost_reason text,
    ADD COLUMN max_crashes integer CHECK (max_crashes > 0);

COMMENT ON COLUMN /* schema */runners.liveness IS
    'True when the runner holds its liveness lock (a session advisory lock, see the README) on direct connections: when no session holds it any more, its process is gone and the reaper declares it dead at once. False behind a connection pooler: the lease alone decides.';
COMMENT ON COLUMN /* schema */runners.max_crashes IS
    'The runner''s max_crashes setting: when it dies, each of its jobs that has died this many times with its runner is failed instead of re-queued.';
COMMENT ON COLUMN /* schema */runners.lost_reason IS
    'Set with state = dead: "process gone" (its sessions ended) or "no heartbeat" (its lease ran out).';

-- --------------------------------------------------------------- the maintenance pass
-- One row: when the last maintenance pass ran, and since when passes have run without a
-- gap. Passes are elected (one per interval for the whole cluster) by locking this row with
-- SKIP LOCKED; a pass that follows a long gap (every heartbeat stopped at once: a lock on a
-- table, a failover, a paused VM) grants every runner a fresh lease from resumed_at.
CREATE TABLE /* schema */maintenance (
    id              boolean PRIMARY KEY DEFAULT true CHECK (id),
    last_pass_at    timestamptz NOT NULL DEFAULT '-infinity',
    resumed_at      timestamptz NOT NULL DEFAULT '-infinity',
    passes          bigint NOT NULL DEFAULT 0,
    runner_id       bigint,
    last_sweep_at   timestamptz NOT NULL DEFAULT '-infinity'
) WITH (fillfactor = 50);
INSERT INTO /* schema */maintenance DEFAULT VALUES;

COMMENT ON TABLE /* schema */maintenance IS
    'State of the elected maintenance pass (reaping, promotion): one row. A pass after a gap longer than the lease''s half gives every runner a new lease from resumed_at.';
COMMENT ON COLUMN /* schema */maintenance.last_pass_at IS 'When the last pass committed (database clock).';
COMMENT ON COLUMN /* schema */maintenance.resumed_at IS 'Start of the current unbroken run of passes: no heartbeat counts as older than this.';
COMMENT ON COLUMN /* schema */maintenance.passes IS 'Passes run since the schema was created.';
COMMENT ON COLUMN /* schema */maintenance.runner_id IS 'The runner that ran the last pass.';
COMMENT ON COLUMN /* schema */maintenance.last_sweep_at IS 'When the last sweep for orphaned running jobs ran.';

-- An unlogged row: gone after a crash restart and on a promoted standby (unlogged tables
-- start empty there). The first pass after such an event re-creates it: the liveness locks
-- of every runner vanished with the old server, and are not trusted until every runner had
-- a lease to take them again.
CREATE UNLOGGED TABLE /* schema */server_epoch (
    id              boolean PRIMARY KEY DEFAULT true CHECK (id),
    noticed_at      timestamptz NOT NULL DEFAULT now()
);
-- Created with the schema: no runner existed before, so none lost its lock to an earlier event.
INSERT INTO /* schema */server_epoch (noticed_at) VALUES ('-infinity');

COMMENT ON TABLE /* schema */server_epoch IS
    'Unlogged marker: empty after a crash restart or a failover; the maintenance pass notes when it found it empty (liveness locks taken before that moment vanished with the old server).';

-- ------------------------------------------------------------------------- jobs
-- Length limits (btree entries are limited to about 2.7 kB; a longer queue or key would fail
-- only some inserts) and the claim order for runners that serve every queue. NOT VALID:
-- existing rows are not scanned under the migration's lock; new and updated rows are checked.
ALTER TABLE /* schema */jobs
    ADD COLUMN meta jsonb,
    ADD CONSTRAINT jobs_meta_is_object CHECK (jsonb_typeof(meta) = 'object'),
    ADD CONSTRAINT jobs_queue_length CHECK (length(queue) <= 128) NOT VALID,
    ADD CONSTRAINT jobs_task_length CHECK (length(task) <= 255) NOT VALID,
    ADD CONSTRAINT jobs_key_length CHECK (length(key) <= 512) NOT VALID;

-- A runner serving every queue claims in one ordered scan of this index, at the same cost as
-- a runner serving one queue, however many queues hold jobs.
CREATE INDEX jobs_ready_idx ON /* schema */jobs (priority DESC, run_at, id)
    WHERE status = 'queued' AND due;
-- Finished jobs by state and time: retention deletes the oldest first without walking the
-- table; dashboards list recent failures.
CREATE INDEX jobs_finished_idx ON /* schema */jobs (status, finished_at)
    WHERE status IN ('succeeded', 'failed', 'cancelled');

-- A queue table churns: every job is inserted, updated twice and deleted, and no update is
-- HOT. Vacuum it after a fixed number of dead rows rather than a fraction of the table, at
-- full speed.
ALTER TABLE /* schema */jobs SET (
    autovacuum_vacuum_scale_factor = 0.01,
    autovacuum_vacuum_threshold = 1000,
    autovacuum_analyze_scale_factor = 0.02,
    autovacuum_analyze_threshold = 1000,
    autovacuum_vacuum_cost_delay = 0
);

COMMENT ON COLUMN /* schema */jobs.meta IS
    'Metadata carried with the job, a JSON object (a trace context, tags): set at enqueue, given to the task as current_job().meta, never interpreted by pgqueue. NULL: none.';
COMMENT ON COLUMN /* schema */jobs.due IS
    'True for a queued job whose run_at has come: only due jobs are in the claim indexes. A job scheduled for later waits with due = false until the maintenance pass promotes it (within maintenance_interval of its run_at), so a large schedule never slows claims.';

-- due_soon(run_at): whether a queued job with this run_at belongs in the claim indexes now.
-- Only jobs that may run now: a claim never walks jobs it cannot take yet.
CREATE OR REPLACE FUNCTION /* schema */due_soon(run_at timestamptz) RETURNS boolean
LANGUAGE sql STABLE AS $$
    SELECT run_at <= now()
$$;

COMMENT ON FUNCTION /* schema */due_soon(timestamptz) IS
    'True when a queued job with this run_at must be in the claim indexes now (it may run now).';

-- Waking moves into the enqueue statements themselves (one call of wake() with the queue),
-- and the statement-level insert trigger goes: capturing every inserted row in a transition
-- table cost a bulk enqueue more than its events did. A row inserted by other means (by hand,
-- COPY) now starts with due = false, so the maintenance pass promotes it when its run_at has
-- come, and wakes the runners of its queue: within maintenance_interval, and never walked by
-- claims before its time.
DROP TRIGGER jobs_wake_after_insert ON /* schema */jobs;
DROP FUNCTION /* schema */jobs_after_insert();
ALTER TABLE /* schema */jobs ALTER COLUMN due SET DEFAULT false;

-- -------------------------------------------------------------------- job history
ALTER TABLE /* schema */job_events
    ADD COLUMN kind text,
    ADD COLUMN error jsonb;

-- Time-window reads of the history (what happened in the last hour, a runner's timeline)
-- without a btree to maintain on every insert: the table is appended in time order.
CREATE INDEX job_events_at_brin ON /* schema */job_events USING brin (at);

ALTER TABLE /* schema */job_events SET (
    autovacuum_vacuum_insert_scale_factor = 0.05,
    autovacuum_analyze_scale_factor = 0.05
);

COMMENT ON COLUMN /* schema */job_events.kind IS
    'What happened: enqueued, claimed, succeeded, retry_scheduled, failed, cancelled, cancel_requested, crashed (its runner died: process gone or no heartbeat), handed_back (a live runner gave the attempt back: stopping, lost lease, unknown attempt), retried (by an operator), promoted is not an event. NULL for events written before revision 0003.';
COMMENT ON COLUMN /* schema */job_events.error IS
    'The attempt''s error ({"type", "message", "traceback"}) on events that end an attempt with one: retry_scheduled, failed, crashed.';

-- ----------------------------------------------------------------------- throughput
-- Jobs finished per queue and minute, one row per writer (each runner writes its own rows,
-- so concurrent finishers never wait on each other); readers sum. Counts for the last hour or
-- day without scanning jobs, and kept after the jobs themselves are pruned.
CREATE TABLE /* schema */throughput (
    queue           text NOT NULL,
    minute          timestamptz NOT NULL,
    runner_id       bigint NOT NULL,
    succeeded       integer NOT NULL DEFAULT 0,
    failed          integer NOT NULL DEFAULT 0,
    retried         integer NOT NULL DEFAULT 0,
    cancelled       integer NOT NULL DEFAULT 0,
    crashed         integer NOT NULL DEFAULT 0,
    run_seconds     float8 NOT NULL DEFAULT 0,
    PRIMARY KEY (queue, minute, runner_id)
) WITH (fillfactor = 70);

COMMENT ON TABLE /* schema */throughput IS
    'Attempts that ended, per queue, minute (database clock) and writing runner: sum over runners for cluster totals. Pruned with the job retention.';
COMMENT ON COLUMN /* schema */throughput.succeeded IS 'Jobs that succeeded.';
COMMENT ON COLUMN /* schema */throughput.failed IS 'Jobs that failed for good (attempts or crash budget spent, not retryable).';
COMMENT ON COLUMN /* schema */throughput.retried IS 'Attempts that failed and were scheduled to run again.';
COMMENT ON COLUMN /* schema */throughput.cancelled IS 'Running jobs that ended cancelled.';
COMMENT ON COLUMN /* schema */throughput.crashed IS 'Attempts lost because their runner died (re-queued, or failed at the crash budget).';
COMMENT ON COLUMN /* schema */throughput.run_seconds IS 'Total running time of the attempts that ended (claim to outcome).';

-- ---------------------------------------------------------------- one definition of a hand-back
-- requeue_attempts: the one definition of "these running attempts go back". A live runner
-- hands back what it will not finish (stopping, lost lease, an attempt it never knew), and
-- the reaper re-queues the attempts of dead runners, counting a crash. Fenced on (runner,
-- attempt, running) like every write; locks in id order, as every finishing statement does.
-- A job whose cancellation was requested ends cancelled; with p_max_crashes (a crash), a job
-- whose crash budget is spent ends failed. Writes the events, wakes waiting runners, notifies
-- result waiters. p_skip_locked: leave rows that someone else holds (the reaper must never wait
-- on an operator's open transaction; a later sweep takes them).
CREATE FUNCTION /* schema */requeue_attempts(
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

-- --------------------------------------------------------------------------- views
-- queue_stats no longer scans the jobs table: queued, scheduled and running come from the
-- partial indexes, finished counts from the throughput rollup (the last 24 hours).
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

CREATE OR REPLACE VIEW /* schema */runner_health AS
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
       r.dead_after,
       r.liveness,
       CASE WHEN r.liveness AND r.state = 'running' THEN EXISTS (
           SELECT 1 FROM pg_catalog.pg_locks AS l
           WHERE l.locktype = 'advisory' AND l.granted AND l.objsubid = 2
             AND l.database = (SELECT d.oid FROM pg_catalog.pg_database AS d
                               WHERE d.datname = current_database())
             AND l.classid = (/* runner_lock_class */)::oid
             AND l.objid = ((r.id % 2147483648)::integer)::oid)
       END AS session_alive,
       r.lost_reason
FROM /* schema */runners AS r;

COMMENT ON VIEW /* schema */runner_health IS
    'One row per runner (worker process start): alive is true while it runs and its last heartbeat is younger than its dead_after; running_jobs counts the jobs it holds; session_alive says whether its liveness lock is held (NULL when it runs behind a pooler, where only the lease counts).';

-- health: one row about the queue's own health, for `pgqueue status`, dashboards and alerts.
-- The xmin horizon is what decides whether dead job rows can be cleaned up: while a transaction
-- (or a replication slot, or a prepared transaction) holds it, every claimed job leaves a dead
-- entry where claims start scanning, and claims slow down until it ends.
CREATE VIEW /* schema */health AS
SELECT current_setting('autovacuum')::boolean AS autovacuum,
       jt.n_live_tup AS jobs_live_rows,
       jt.n_dead_tup AS jobs_dead_rows,
       greatest(jt.last_autovacuum, jt.last_vacuum) AS jobs_last_vacuum,
       et.n_live_tup AS events_live_rows,
       et.n_dead_tup AS events_dead_rows,
       x.age AS oldest_transaction_age,
       x.pid AS oldest_transaction_pid,
       x.state AS oldest_transaction_state,
       x.query AS oldest_transaction_query,
       (SELECT max(age) FROM (
            SELECT now() - a.xact_start AS age FROM pg_catalog.pg_stat_activity AS a
            WHERE a.backend_xmin IS NOT NULL AND a.pid <> pg_catalog.pg_backend_pid()
            UNION ALL
            SELECT now() - p.prepared FROM pg_catalog.pg_prepared_xacts AS p) AS h) AS horizon_held_for,
       (SELECT count(*) FROM pg_catalog.pg_replication_slots AS s
        WHERE s.xmin IS NOT NULL OR s.catalog_xmin IS NOT NULL) AS slots_holding_horizon,
       (SELECT now() - min(j.run_at) FROM /* schema */jobs AS j
        WHERE j.status = 'queued' AND j.due) AS oldest_queued_age,
       (SELECT count(*) FROM /* schema */jobs AS j
        JOIN /* schema */runners AS r ON r.id = j.runner_id
        WHERE j.status = 'running'
          AND (r.state <> 'running' OR now() - r.heartbeat_at > make_interval(secs => r.dead_after)))
           AS running_on_dead_runners
FROM (SELECT 1) AS one
LEFT JOIN pg_catalog.pg_stat_user_tables AS jt
       ON jt.relid = '/* schema */jobs'::regclass
LEFT JOIN pg_catalog.pg_stat_user_tables AS et
       ON et.relid = '/* schema */job_events'::regclass
LEFT JOIN LATERAL (
    SELECT now() - a.xact_start AS age, a.pid, a.state, left(a.query, 200) AS query
    FROM pg_catalog.pg_stat_activity AS a
    WHERE a.xact_start IS NOT NULL AND a.pid <> pg_catalog.pg_backend_pid()
    ORDER BY a.xact_start
    LIMIT 1) AS x ON true;

COMMENT ON VIEW /* schema */health IS
    'The queue''s own health in one row: autovacuum, dead rows of jobs and job_events, the oldest open transaction and how long the xmin horizon has been held (dead rows cannot be cleaned up meanwhile, and claims slow down), the oldest runnable job, and jobs still running on runners that look dead.';
