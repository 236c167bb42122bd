-- pgqueue migration 0005: cron schedules (leaderless, exactly once per tick, visible in SQL) and
-- what retention needs. Additive: workers of revision 0004 keep running on it (they neither
-- declare nor fire schedules).
-- (Written against the same schema placeholder as 0001.)

-- -------------------------------------------------------------------- schedules
-- One row per schedule. Its cursor, next_run_at, is the next tick not handled yet: a pass
-- fires (or records as missed) every tick up to now and moves the cursor past them in one
-- statement that compares and swaps the old value, so a tick fires once however many runners
-- race. The ticks themselves are computed by the runners (croniter, in the schedule's time
-- zone, from the database's clock); the database only keeps the cursor.
CREATE TABLE /* schema */schedules (
    id              text PRIMARY KEY CHECK (id <> '' AND length(id) <= 200),
    task            text NOT NULL CHECK (task <> '' AND length(task) <= 255),
    cron            text NOT NULL CHECK (cron <> '' AND length(cron) <= 200),
    timezone        text NOT NULL DEFAULT 'UTC' CHECK (timezone <> '' AND length(timezone) <= 64),
    args            jsonb NOT NULL DEFAULT '[]' CHECK (jsonb_typeof(args) = 'array'),
    kwargs          jsonb NOT NULL DEFAULT '{}' CHECK (jsonb_typeof(kwargs) = 'object'),
    queue           text NOT NULL DEFAULT 'default' CHECK (queue <> '' AND length(queue) <= 128),
    priority        integer NOT NULL DEFAULT 0,
    max_attempts    integer NOT NULL DEFAULT 3 CHECK (max_attempts > 0),
    catch_up        text NOT NULL DEFAULT 'latest' CHECK (catch_up IN ('skip', 'latest', 'all')),
    catch_up_within interval NOT NULL DEFAULT '1 hour' CHECK (catch_up_within >= interval '0'),
    overlap         text NOT NULL DEFAULT 'allow' CHECK (overlap IN ('allow', 'skip')),
    next_run_at     timestamptz NOT NULL,
    last_tick       timestamptz,
    paused_at       timestamptz,
    paused_by       text,
    pause_reason    text,
    resumed_at      timestamptz,
    orphaned_at     timestamptz,
    created_at      timestamptz NOT NULL DEFAULT now(),
    updated_at      timestamptz NOT NULL DEFAULT now()
);

-- What every maintenance pass reads: the earliest cursor of the schedules that may fire. When
-- none is due, one probe of this index is the whole cost.
CREATE INDEX schedules_due_idx ON /* schema */schedules (next_run_at)
    WHERE paused_at IS NULL AND orphaned_at IS NULL;

COMMENT ON TABLE /* schema */schedules IS
    'Cron schedules, declared in code (@app.periodic, app.schedule) and written by every runner at start (additively: a schedule no live runner declares stops firing and is marked orphaned, never deleted). Any runner fires due ticks in its maintenance pass; see schedule_status for a readable view and schedule_events for the history of every tick.';
COMMENT ON COLUMN /* schema */schedules.id IS 'The schedule''s permanent id (the task name when the task has one schedule).';
COMMENT ON COLUMN /* schema */schedules.task IS 'The task each tick enqueues a job of.';
COMMENT ON COLUMN /* schema */schedules.cron IS 'Cron expression: five fields, or six with seconds last (croniter''s order), or an alias such as @hourly.';
COMMENT ON COLUMN /* schema */schedules.timezone IS 'IANA time zone the cron expression is read in (UTC by default).';
COMMENT ON COLUMN /* schema */schedules.args IS 'Positional arguments of every job it enqueues (a JSON array).';
COMMENT ON COLUMN /* schema */schedules.kwargs IS 'Keyword arguments of every job it enqueues (a JSON object).';
COMMENT ON COLUMN /* schema */schedules.queue IS 'Queue of its jobs.';
COMMENT ON COLUMN /* schema */schedules.priority IS 'Priority of its jobs.';
COMMENT ON COLUMN /* schema */schedules.max_attempts IS 'max_attempts of its jobs.';
COMMENT ON COLUMN /* schema */schedules.catch_up IS
    'What runs after ticks were missed (no runner fired them within 10 s): skip (nothing), latest (the latest missed tick within catch_up_within, once, unless a tick on time fires anyway), all (every missed tick within catch_up_within, 100 per pass).';
COMMENT ON COLUMN /* schema */schedules.catch_up_within IS 'How old a missed tick may be and still run (latest, all).';
COMMENT ON COLUMN /* schema */schedules.overlap IS 'allow, or skip: a tick whose previous job is still queued or running enqueues nothing (recorded as skipped).';
COMMENT ON COLUMN /* schema */schedules.next_run_at IS 'The cursor: the next tick not yet fired nor recorded as missed. Moved by compare-and-swap only.';
COMMENT ON COLUMN /* schema */schedules.last_tick IS 'The latest tick that fired (or was skipped for overlap).';
COMMENT ON COLUMN /* schema */schedules.paused_at IS 'Set while paused (pause_schedule): its ticks are recorded as missed, nothing fires.';
COMMENT ON COLUMN /* schema */schedules.paused_by IS 'Who paused it (a user name, "sql", or "pgqueue" when a pass could not fire it).';
COMMENT ON COLUMN /* schema */schedules.pause_reason IS 'Why it was paused.';
COMMENT ON COLUMN /* schema */schedules.resumed_at IS 'When it was last resumed: ticks before this are recorded as missed (paused), not caught up.';
COMMENT ON COLUMN /* schema */schedules.orphaned_at IS 'Set by the pass that found a tick due and no live runner declaring the schedule: it stops firing until a runner declares it again (which resumes it under its catch-up policy).';
COMMENT ON COLUMN /* schema */schedules.created_at IS 'When a runner first declared it. It never fires a tick from before.';
COMMENT ON COLUMN /* schema */schedules.updated_at IS 'When its definition last changed.';

-- Which live runner declares which schedule (and how): written at each runner's start. A
-- schedule is live while a running runner declares it; rows of runners that are gone are
-- removed by the next start.
CREATE TABLE /* schema */schedule_declarations (
    schedule_id     text NOT NULL,
    runner_id       bigint NOT NULL,
    definition      jsonb NOT NULL,
    declared_at     timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (schedule_id, runner_id)
);

COMMENT ON TABLE /* schema */schedule_declarations IS
    'Which runner declares which schedule, with the definition its code gives (during a rolling deploy two versions may differ: the runner that started last wrote schedules).';
COMMENT ON COLUMN /* schema */schedule_declarations.schedule_id IS 'The schedule.';
COMMENT ON COLUMN /* schema */schedule_declarations.runner_id IS 'The runner (runners.id) whose code declares it.';
COMMENT ON COLUMN /* schema */schedule_declarations.definition IS 'The definition in that runner''s code (task, cron, timezone, args, ...).';
COMMENT ON COLUMN /* schema */schedule_declarations.declared_at IS 'When that runner declared it.';

-- The history of every schedule: each tick that fired, was missed or was skipped for overlap is
-- one row (at most one per tick: schedule_events_tick_idx), with the reason; and the
-- schedule's own changes.
CREATE TABLE /* schema */schedule_events (
    id              bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    schedule_id     text NOT NULL,
    at              timestamptz NOT NULL DEFAULT now(),
    kind            text NOT NULL CHECK (kind IN ('fired', 'missed', 'skipped', 'triggered', 'created',
                                                   'redefined', 'declared', 'orphaned', 'paused',
                                                   'resumed', 'removed')),
    tick            timestamptz,
    job_id          bigint,
    runner_id       bigint,
    reason          text NOT NULL
);
CREATE INDEX schedule_events_schedule_idx ON /* schema */schedule_events (schedule_id, id);
-- A tick has one outcome, ever: a second one would mean a second fire. Defence in depth behind
-- the cursor's compare-and-swap.
CREATE UNIQUE INDEX schedule_events_tick_idx ON /* schema */schedule_events (schedule_id, tick)
    WHERE kind IN ('fired', 'missed', 'skipped');
-- A schedule's latest run (the schedule_status view), without walking its missed ticks.
CREATE INDEX schedule_events_runs_idx ON /* schema */schedule_events (schedule_id, id)
    WHERE job_id IS NOT NULL;
-- Retention deletes the oldest first.
CREATE INDEX schedule_events_at_idx ON /* schema */schedule_events (at);

COMMENT ON TABLE /* schema */schedule_events IS
    'History of schedules: every tick fired (with its job), missed (nobody fired it in time, the schedule was paused, or the catch-up policy left it) or skipped (overlap), manual triggers, and changes (created, redefined, declared again, orphaned, paused, resumed, removed), each with the reason.';
COMMENT ON COLUMN /* schema */schedule_events.id IS 'Order of events (increasing).';
COMMENT ON COLUMN /* schema */schedule_events.schedule_id IS 'The schedule.';
COMMENT ON COLUMN /* schema */schedule_events.at IS 'When it was recorded (database clock).';
COMMENT ON COLUMN /* schema */schedule_events.kind IS
    'fired | missed | skipped (overlap) | triggered (by hand) | created | redefined | declared (again, after being orphaned) | orphaned | paused | resumed | removed';
COMMENT ON COLUMN /* schema */schedule_events.tick IS 'The tick (the instant the cron names) for fired, missed, skipped and triggered; NULL otherwise.';
COMMENT ON COLUMN /* schema */schedule_events.job_id IS 'The job it enqueued (fired, triggered).';
COMMENT ON COLUMN /* schema */schedule_events.runner_id IS 'The runner that recorded it (the firing one, or the one whose start changed the schedule).';
COMMENT ON COLUMN /* schema */schedule_events.reason IS 'Why, in words: "on time", "late by 42.0 s (catch-up latest)", "superseded by the tick at ...", "overlap: job 17 is still running", ...';

-- schedule_declared(id): whether a live runner declares the schedule (the one definition of a
-- schedule that is not orphaned).
CREATE FUNCTION /* schema */schedule_declared(p_id text) RETURNS boolean
LANGUAGE sql STABLE SET search_path = pg_catalog, pg_temp AS $$
    SELECT EXISTS (SELECT 1 FROM /* schema */schedule_declarations AS d
                   JOIN /* schema */runners AS r ON r.id = d.runner_id
                   WHERE d.schedule_id = p_id AND r.state = 'running')
$$;

COMMENT ON FUNCTION /* schema */schedule_declared(text) IS
    'Whether a running runner declares this schedule in its code (false: the schedule is orphaned).';

-- schedule_instant_text(at): an instant as ISO 8601 text in UTC, as ticks are written in a job's
-- meta ("scheduled_for"), whatever the session's time zone.
CREATE FUNCTION /* schema */schedule_instant_text(p_at timestamptz) RETURNS text
LANGUAGE sql STABLE SET search_path = pg_catalog, pg_temp AS $$
    SELECT to_char(p_at AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"+00:00"')
$$;

COMMENT ON FUNCTION /* schema */schedule_instant_text(timestamptz) IS
    'An instant as ISO 8601 text in UTC (how a job''s meta.scheduled_for is written).';

-- ------------------------------------------------------------------ controls
-- schedule_set_paused(id, paused, reason, by): the one definition of pausing and resuming.
CREATE FUNCTION /* schema */schedule_set_paused(p_id text, p_paused boolean, p_reason text, p_by text)
RETURNS boolean
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    UPDATE /* schema */schedules AS s
    SET paused_at = CASE WHEN p_paused THEN now() END,
        paused_by = CASE WHEN p_paused THEN p_by END,
        pause_reason = CASE WHEN p_paused THEN p_reason END,
        resumed_at = CASE WHEN p_paused THEN s.resumed_at ELSE now() END
    WHERE s.id = p_id AND (s.paused_at IS NULL) = p_paused;
    IF FOUND THEN
        INSERT INTO /* schema */schedule_events (schedule_id, kind, reason)
        VALUES (p_id, CASE WHEN p_paused THEN 'paused' ELSE 'resumed' END,
                CASE WHEN p_paused THEN 'paused' ELSE 'resumed' END || coalesce(' by ' || p_by, '')
                || CASE WHEN p_paused THEN coalesce(': ' || p_reason, '')
                        ELSE '; ticks while paused are not caught up' END);
        RETURN true;
    END IF;
    IF NOT EXISTS (SELECT 1 FROM /* schema */schedules AS s WHERE s.id = p_id) THEN
        RAISE EXCEPTION 'pgqueue.%_schedule: there is no schedule %',
            CASE WHEN p_paused THEN 'pause' ELSE 'resume' END, quote_literal(p_id) USING ERRCODE = 'P0002';
    END IF;
    RETURN false;
END
$$;

COMMENT ON FUNCTION /* schema */schedule_set_paused(text, boolean, text, text) IS
    'Used by pause_schedule and resume_schedule: pause or resume a schedule, with an event; false when it already was.';

CREATE FUNCTION /* schema */pause_schedule(schedule_id text, reason text DEFAULT NULL, by text DEFAULT NULL)
RETURNS boolean
LANGUAGE sql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
    SELECT /* schema */schedule_set_paused(pause_schedule.schedule_id, true, pause_schedule.reason, pause_schedule.by)
$$;

COMMENT ON FUNCTION /* schema */pause_schedule(text, text, text) IS
    'Pause a schedule: from its commit on its ticks are recorded as missed (paused) and nothing fires; a manual trigger still runs. Returns false when it was paused already.';

CREATE FUNCTION /* schema */resume_schedule(schedule_id text, by text DEFAULT NULL) RETURNS boolean
LANGUAGE sql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
    SELECT /* schema */schedule_set_paused(resume_schedule.schedule_id, false, NULL, resume_schedule.by)
$$;

COMMENT ON FUNCTION /* schema */resume_schedule(text, text) IS
    'Resume a paused schedule: the next tick after now fires; ticks that came while it was paused are recorded as missed, never caught up. Returns false when it was not paused.';

-- trigger_schedule(id): one job now, as a tick would enqueue it (its overlap policy holds: with
-- overlap skip, while its previous job is queued or running, that job is returned instead).
-- The cursor does not move; a paused or orphaned schedule can be triggered.
CREATE FUNCTION /* schema */trigger_schedule(schedule_id text, by text DEFAULT NULL)
RETURNS TABLE (job_id bigint, created boolean)
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
#variable_conflict use_column
DECLARE
    v_s record;
    v_job record;
BEGIN
    SELECT s.* INTO v_s FROM /* schema */schedules AS s WHERE s.id = trigger_schedule.schedule_id;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'pgqueue.trigger_schedule: there is no schedule %', quote_literal(trigger_schedule.schedule_id)
            USING ERRCODE = 'P0002';
    END IF;
    SELECT e.id, e.created INTO v_job
    FROM /* schema */enqueue_job(
        task => v_s.task, args => v_s.args, kwargs => v_s.kwargs, queue => v_s.queue,
        priority => v_s.priority, max_attempts => v_s.max_attempts,
        key => CASE WHEN v_s.overlap = 'skip' THEN 'pgqueue:schedule:' || v_s.id END,
        on_conflict => 'return',
        meta => jsonb_build_object('schedule', v_s.id, 'scheduled_for', /* schema */schedule_instant_text(now()),
                                   'late', false, 'triggered', true)) AS e;
    INSERT INTO /* schema */schedule_events (schedule_id, kind, tick, job_id, reason)
    VALUES (v_s.id, 'triggered', now(), CASE WHEN v_job.created THEN v_job.id END,
            CASE WHEN v_job.created
                 THEN 'triggered' || coalesce(' by ' || trigger_schedule.by, '')
                 ELSE 'triggered' || coalesce(' by ' || trigger_schedule.by, '') || ': nothing enqueued, job '
                      || v_job.id || ' of an earlier run is still queued or running (overlap skip)' END);
    RETURN QUERY SELECT v_job.id, v_job.created;
END
$$;

COMMENT ON FUNCTION /* schema */trigger_schedule(text, text) IS
    'Enqueue one job of a schedule now, as a tick would (args, queue, overlap policy), without moving its cursor; works while paused. Returns (job_id, created): created is false when overlap skip returned the job still queued or running.';

-- remove_schedule(id): deletes a schedule no live runner declares (one that is declared would
-- come back at the next start of its runners: remove it from the code first). Its history stays.
CREATE FUNCTION /* schema */remove_schedule(schedule_id text, by text DEFAULT NULL) RETURNS void
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
#variable_conflict use_column
DECLARE
    v_runners text;
BEGIN
    PERFORM 1 FROM /* schema */schedules AS s WHERE s.id = remove_schedule.schedule_id FOR UPDATE;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'pgqueue.remove_schedule: there is no schedule %', quote_literal(remove_schedule.schedule_id)
            USING ERRCODE = 'P0002';
    END IF;
    SELECT string_agg(d.runner_id::text, ', ' ORDER BY d.runner_id) INTO v_runners
    FROM /* schema */schedule_declarations AS d JOIN /* schema */runners AS r ON r.id = d.runner_id
    WHERE d.schedule_id = remove_schedule.schedule_id AND r.state = 'running';
    IF v_runners IS NOT NULL THEN
        RAISE EXCEPTION 'pgqueue.remove_schedule: schedule % is declared by live runner(s) %: remove it from the code and restart them first (it would come back)',
            quote_literal(remove_schedule.schedule_id), v_runners USING ERRCODE = '55000';
    END IF;
    DELETE FROM /* schema */schedule_declarations AS d WHERE d.schedule_id = remove_schedule.schedule_id;
    DELETE FROM /* schema */schedules AS s WHERE s.id = remove_schedule.schedule_id;
    INSERT INTO /* schema */schedule_events (schedule_id, kind, reason)
    VALUES (remove_schedule.schedule_id, 'removed', 'removed' || coalesce(' by ' || remove_schedule.by, ''));
END
$$;

COMMENT ON FUNCTION /* schema */remove_schedule(text, text) IS
    'Delete a schedule that no live runner declares (an orphaned one); its events stay. Refused, saying which runners, while a live runner declares it.';

-- The schedule controls run with their owner's rights, like the rest of the SQL API (0004):
-- nobody may call them but their owner and the roles granted to (`pgqueue grant`).
REVOKE ALL ON FUNCTION /* schema */schedule_set_paused(text, boolean, text, text) FROM PUBLIC;
REVOKE ALL ON FUNCTION /* schema */pause_schedule(text, text, text) FROM PUBLIC;
REVOKE ALL ON FUNCTION /* schema */resume_schedule(text, text) FROM PUBLIC;
REVOKE ALL ON FUNCTION /* schema */trigger_schedule(text, text) FROM PUBLIC;
REVOKE ALL ON FUNCTION /* schema */remove_schedule(text, text) FROM PUBLIC;

-- ------------------------------------------------------------------------ views
CREATE VIEW /* schema */schedule_status AS
SELECT s.id,
       s.task,
       s.cron,
       s.timezone,
       s.queue,
       s.next_run_at,
       r.at AS last_run_at,
       r.tick AS last_run_for,
       r.job_id AS last_job_id,
       j.status AS last_job_status,
       j.finished_at AS last_job_finished_at,
       s.paused_at IS NOT NULL AS paused,
       s.pause_reason,
       s.orphaned_at IS NOT NULL OR NOT /* schema */schedule_declared(s.id) AS orphaned,
       (SELECT count(*) FROM /* schema */schedule_declarations AS d
        JOIN /* schema */runners AS rr ON rr.id = d.runner_id
        WHERE d.schedule_id = s.id AND rr.state = 'running') AS declared_by,
       s.catch_up,
       s.catch_up_within,
       s.overlap,
       s.priority,
       s.args,
       s.kwargs,
       s.paused_at,
       s.paused_by,
       s.orphaned_at,
       s.created_at,
       s.updated_at
FROM /* schema */schedules AS s
LEFT JOIN LATERAL (
    SELECT e.at, e.tick, e.job_id FROM /* schema */schedule_events AS e
    WHERE e.schedule_id = s.id AND e.job_id IS NOT NULL
    ORDER BY e.id DESC LIMIT 1
) AS r ON true
LEFT JOIN /* schema */jobs AS j ON j.id = r.job_id;

COMMENT ON VIEW /* schema */schedule_status IS
    'One row per schedule: its definition, next tick, last run (when it was enqueued, the tick it ran for, its job and the job''s status: NULL once retention pruned the job), paused, orphaned (no live runner declares it) and how many live runners declare it.';
