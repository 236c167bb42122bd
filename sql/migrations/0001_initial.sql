-- pgqueue migration 0001: jobs, runners, job history, the wake-up trigger.
--
-- Written against a placeholder for the schema, replaced by the quoted schema name and
-- a dot when the file is applied (`pgqueue migrate`) or printed (`pgqueue schema`).

CREATE TABLE /* schema */runners (
    id              bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    host            text NOT NULL,
    pid             integer NOT NULL,
    queues          text[],
    concurrency     integer NOT NULL CHECK (concurrency > 0),
    version         text NOT NULL,
    heartbeat_interval float8 NOT NULL DEFAULT 2 CHECK (heartbeat_interval > 0),
    dead_after      float8 NOT NULL DEFAULT 10 CHECK (dead_after > 0),
    state           text NOT NULL DEFAULT 'running'
                    CHECK (state IN ('running', 'stopped', 'dead')),
    waiting         boolean NOT NULL DEFAULT false,
    started_at      timestamptz NOT NULL DEFAULT now(),
    heartbeat_at    timestamptz NOT NULL DEFAULT now(),
    stopped_at      timestamptz,
    reason          text
);

-- Live runners: what wake() and the reaper look at. The table keeps a row per process start.
CREATE INDEX runners_running_idx ON /* schema */runners (id) WHERE state = 'running';

COMMENT ON TABLE /* schema */runners IS
    'One row per worker process start. A runner keeps its row alive with heartbeats; the reaper declares it dead when they stop.';
COMMENT ON COLUMN /* schema */runners.id IS 'New at every process start; never reused.';
COMMENT ON COLUMN /* schema */runners.host IS 'Host name of the worker process (for people; never an identity).';
COMMENT ON COLUMN /* schema */runners.pid IS 'Process id of the worker process.';
COMMENT ON COLUMN /* schema */runners.concurrency IS 'Jobs the runner runs at once.';
COMMENT ON COLUMN /* schema */runners.version IS 'pgqueue version of the runner.';
COMMENT ON COLUMN /* schema */runners.started_at IS 'When the runner registered (database clock).';
COMMENT ON COLUMN /* schema */runners.stopped_at IS 'When it stopped or was declared dead.';
COMMENT ON COLUMN /* schema */runners.queues IS 'Queues the runner serves; NULL means every queue.';
COMMENT ON COLUMN /* schema */runners.state IS 'running | stopped (clean exit) | dead (declared dead by the reaper or by itself after losing its lease)';
COMMENT ON COLUMN /* schema */runners.waiting IS 'True while the runner has free slots and sleeps until notified; enqueues send NOTIFY only when some runner is waiting.';
COMMENT ON COLUMN /* schema */runners.heartbeat_at IS 'Database time of the last heartbeat.';
COMMENT ON COLUMN /* schema */runners.heartbeat_interval IS 'Seconds between this runner''s heartbeats (its setting).';
COMMENT ON COLUMN /* schema */runners.dead_after IS 'Seconds of silence after which this runner counts as dead (its setting).';
COMMENT ON COLUMN /* schema */runners.reason IS 'Why the runner stopped or was declared dead.';

CREATE TABLE /* schema */jobs (
    id              bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    queue           text NOT NULL DEFAULT 'default',
    task            text NOT NULL,
    args            jsonb NOT NULL DEFAULT '[]',
    kwargs          jsonb NOT NULL DEFAULT '{}',
    priority        integer NOT NULL DEFAULT 0,
    run_at          timestamptz NOT NULL DEFAULT now(),
    status          text NOT NULL DEFAULT 'queued',
    due             boolean NOT NULL DEFAULT true,
    attempts        integer NOT NULL DEFAULT 0,
    failures        integer NOT NULL DEFAULT 0,
    crashes         integer NOT NULL DEFAULT 0,
    max_attempts    integer NOT NULL DEFAULT 3,
    key             text,
    runner_id       bigint,
    result          jsonb,
    error           jsonb,
    cancel_requested boolean NOT NULL DEFAULT false,
    enqueued_at     timestamptz NOT NULL DEFAULT now(),
    started_at      timestamptz,
    finished_at     timestamptz,
    CONSTRAINT jobs_status_valid
        CHECK (status IN ('queued', 'running', 'succeeded', 'failed', 'cancelled')),
    CONSTRAINT jobs_runner_iff_running CHECK ((status = 'running') = (runner_id IS NOT NULL)),
    CONSTRAINT jobs_args_is_array CHECK (jsonb_typeof(args) = 'array'),
    CONSTRAINT jobs_kwargs_is_object CHECK (jsonb_typeof(kwargs) = 'object'),
    CONSTRAINT jobs_queue_not_empty CHECK (queue <> ''),
    CONSTRAINT jobs_task_not_empty CHECK (task <> ''),
    CONSTRAINT jobs_max_attempts_positive CHECK (max_attempts > 0),
    CONSTRAINT jobs_counters_valid CHECK (attempts >= 0 AND failures >= 0 AND crashes >= 0)
);

COMMENT ON TABLE /* schema */jobs IS
    'One row per requested execution of a task. States: queued -> running -> succeeded | failed | cancelled; running -> queued on retry, crash or hand-back.';
COMMENT ON COLUMN /* schema */jobs.id IS 'The job''s id (job.id in Python).';
COMMENT ON COLUMN /* schema */jobs.queue IS 'The queue (lane) the job waits in; workers serve named queues or all.';
COMMENT ON COLUMN /* schema */jobs.status IS 'queued | running | succeeded | failed | cancelled';
COMMENT ON COLUMN /* schema */jobs.task IS 'Registered task name (default module.qualname).';
COMMENT ON COLUMN /* schema */jobs.args IS 'Positional arguments, a JSON array.';
COMMENT ON COLUMN /* schema */jobs.kwargs IS 'Keyword arguments, a JSON object.';
COMMENT ON COLUMN /* schema */jobs.priority IS 'Higher runs first; ties run in run_at, then id order.';
COMMENT ON COLUMN /* schema */jobs.run_at IS 'Earliest time the job may start (database clock).';
COMMENT ON COLUMN /* schema */jobs.due IS 'False while a queued job''s run_at is further away than due_soon() looks; the reaper tick sets it true in time. Only due jobs are in the claim index, so a large schedule never slows claims.';
COMMENT ON COLUMN /* schema */jobs.attempts IS 'How many times the job was started. The fencing token: every write about a running job names it.';
COMMENT ON COLUMN /* schema */jobs.failures IS 'Attempts that raised or timed out; the job fails for good when failures reaches max_attempts.';
COMMENT ON COLUMN /* schema */jobs.crashes IS 'Attempts whose runner died under them; kept apart from failures.';
COMMENT ON COLUMN /* schema */jobs.max_attempts IS 'How many failed attempts the job may have before it is failed for good.';
COMMENT ON COLUMN /* schema */jobs.key IS 'Unique key: at most one queued or running job holds a given key.';
COMMENT ON COLUMN /* schema */jobs.runner_id IS 'The runner executing the job; set exactly while status is running.';
COMMENT ON COLUMN /* schema */jobs.result IS 'JSON return value of the successful attempt.';
COMMENT ON COLUMN /* schema */jobs.error IS 'Last error: {"type", "message", "traceback"}.';
COMMENT ON COLUMN /* schema */jobs.cancel_requested IS 'Set when cancellation of a running job was asked for.';
COMMENT ON COLUMN /* schema */jobs.enqueued_at IS 'When the job was enqueued (the enqueuing transaction''s start).';
COMMENT ON COLUMN /* schema */jobs.started_at IS 'When its latest attempt was claimed.';
COMMENT ON COLUMN /* schema */jobs.finished_at IS 'When it succeeded, failed for good or was cancelled.';

-- Claim order index: only queued jobs that are due (or nearly), in the order the claim
-- statement reads them. Per queue, so a runner serving a quiet queue never walks another
-- queue's backlog; without the jobs scheduled for later, so a claim never walks those.
CREATE INDEX jobs_claim_idx ON /* schema */jobs (queue, priority DESC, run_at, id)
    WHERE status = 'queued' AND due;
-- Jobs scheduled for later, in the order they come due (read by the promoter).
CREATE INDEX jobs_scheduled_idx ON /* schema */jobs (run_at) WHERE status = 'queued' AND NOT due;
-- Unique jobs: a key is held by at most one job that has not finished.
CREATE UNIQUE INDEX jobs_key_idx ON /* schema */jobs (key)
    WHERE key IS NOT NULL AND status IN ('queued', 'running');
-- The reaper, hand-back and fencing checks look up running jobs by runner.
CREATE INDEX jobs_running_idx ON /* schema */jobs (runner_id) WHERE status = 'running';

CREATE TABLE /* schema */job_events (
    job_id          bigint NOT NULL,
    id              bigint GENERATED ALWAYS AS IDENTITY,
    at              timestamptz NOT NULL DEFAULT now(),
    from_status     text,
    to_status       text NOT NULL,
    attempt         integer NOT NULL DEFAULT 0,
    runner_id       bigint,
    reason          text NOT NULL,
    PRIMARY KEY (job_id, id)
);

COMMENT ON TABLE /* schema */job_events IS
    'A job''s history: one row per state change, written by the same statement as the change.';
COMMENT ON COLUMN /* schema */job_events.job_id IS 'The job (no foreign key, to keep writes cheap; prune deletes a job with its events).';
COMMENT ON COLUMN /* schema */job_events.id IS 'Order of events (increasing).';
COMMENT ON COLUMN /* schema */job_events.at IS 'When the change happened (the changing transaction''s start, database clock).';
COMMENT ON COLUMN /* schema */job_events.to_status IS 'State after the change.';
COMMENT ON COLUMN /* schema */job_events.from_status IS 'State before the change; NULL for the enqueue.';
COMMENT ON COLUMN /* schema */job_events.attempt IS 'The job''s attempts counter after the change.';
COMMENT ON COLUMN /* schema */job_events.runner_id IS 'The runner concerned (the claimer, the finisher, or the dead runner).';
COMMENT ON COLUMN /* schema */job_events.reason IS 'Human-readable cause, e.g. "claimed", "retry in 4.2 s: ValueError: ...", "runner 7 declared dead".';

-- due_soon(run_at): whether a job with this run_at belongs in the claim index now. Jobs due
-- within the next seconds go straight in (a short retry backoff is claimed on time); the
-- others are promoted by the reaper tick (every runner runs one), ahead of their time.
CREATE FUNCTION /* schema */due_soon(run_at timestamptz) RETURNS boolean
LANGUAGE sql STABLE AS $$
    SELECT run_at <= now() + interval '5 seconds'
$$;

COMMENT ON FUNCTION /* schema */due_soon(timestamptz) IS
    'True when a job with this run_at must be in the claim index now (due within 5 s).';

-- Waiters of job.result(). A statement that finishes jobs calls notify_finished(ids), which
-- deletes the waiters of those jobs and notifies each job once; when nobody waits, the
-- statement skips it after one look at this (then empty) table. The waiters never lock job
-- rows, so they cannot make a claim skip a job. Unlogged: a waiter's LISTEN does not
-- survive a server restart either, and waiters re-check on their own.
CREATE UNLOGGED TABLE /* schema */result_waiters (
    id              bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    job_id          bigint NOT NULL,
    since           timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX result_waiters_job_idx ON /* schema */result_waiters (job_id);

COMMENT ON COLUMN /* schema */result_waiters.job_id IS 'The job waited on.';

COMMENT ON TABLE /* schema */result_waiters IS
    'Callers waiting in job.result(); finishing one of these jobs sends NOTIFY "<schema>.done" with its id.';

CREATE FUNCTION /* schema */notify_finished(job_ids bigint[]) RETURNS integer
LANGUAGE plpgsql AS $$
DECLARE
    notified integer;
BEGIN
    WITH woken AS (
        DELETE FROM /* schema */result_waiters WHERE job_id = ANY (job_ids) RETURNING job_id
    )
    SELECT count(pg_notify('/* channel */done', job_id::text))::integer INTO notified
    FROM (SELECT DISTINCT job_id FROM woken) AS w;
    RETURN notified;
END
$$;

COMMENT ON FUNCTION /* schema */notify_finished(bigint[]) IS
    'Wake the job.result() waiters of these (finished) jobs.';

-- wake(queues): NOTIFY "<schema>.jobs" once per queue, only when a runner that serves the
-- queue is waiting. NOTIFY serialises committing transactions on a global lock, so a
-- busy system (no runner waiting) must not pay for it. PL/pgSQL rather than SQL: its
-- plans are cached per session, where a SQL function's would be made at every call.
CREATE FUNCTION /* schema */wake(queues text[]) RETURNS void
LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('/* channel */jobs', q.queue)
    FROM (SELECT DISTINCT unnest(queues) AS queue) AS q
    WHERE EXISTS (
        SELECT 1 FROM /* schema */runners AS r
        WHERE r.state = 'running' AND r.waiting
          AND (r.queues IS NULL OR q.queue = ANY (r.queues))
    );
END
$$;

COMMENT ON FUNCTION /* schema */wake(text[]) IS
    'Notify waiting runners that jobs are ready in the given queues (one NOTIFY per queue).';

-- One statement-level trigger: a bulk enqueue of 20,000 jobs notifies once per queue.
-- Jobs scheduled for later are not announced; runners poll for them. When no runner
-- waits at all (a busy system), it stops after one probe of runners_running_idx.
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

COMMENT ON FUNCTION /* schema */jobs_after_insert() IS
    'Trigger function: NOTIFY waiting runners once per inserting statement and queue.';

CREATE TRIGGER jobs_wake_after_insert
    AFTER INSERT ON /* schema */jobs
    REFERENCING NEW TABLE AS inserted
    FOR EACH STATEMENT EXECUTE FUNCTION /* schema */jobs_after_insert();
