-- Cron schedules: the sync of a runner's declarations at its start, the firing of due ticks in
-- the maintenance pass (exactly once: the cursor moves by compare-and-swap in the statement
-- that enqueues), retention of their history, and the operator's controls.

-- name: schedule_due
-- The schedules whose cursor has come (paused and orphaned ones are not in schedules_due_idx),
-- earliest first, with whether a live runner still declares each, and the time the pass plans
-- with: the database's now, or `now` when a test pins it. No lock: the fire re-checks the
-- cursor. When nothing is due this one index probe is the whole cost of a pass.
SELECT s.id, s.cron, s.timezone, s.next_run_at, s.catch_up,
       extract(epoch FROM s.catch_up_within)::float8 AS catch_up_within, s.resumed_at,
       /* schema */schedule_declared(s.id) AS declared, c.now
FROM (SELECT coalesce(%(now)s::timestamptz, now()) AS now) AS c
JOIN /* schema */schedules AS s ON s.next_run_at <= c.now
WHERE s.paused_at IS NULL AND s.orphaned_at IS NULL
ORDER BY s.next_run_at
LIMIT %(limit)s::int

-- name: schedule_fire
-- Fires the planned ticks of many schedules in one statement. For each schedule the cursor
-- moves from `expected` to its new value only if it still is `expected` (compare and swap; a
-- concurrent fire waits for the row, then finds the cursor moved and does nothing), and only
-- then are its ticks' jobs enqueued (enqueue_job: the same keys, locks and wake-up as any
-- enqueue; overlap skip is the active key 'pgqueue:schedule:<id>' with on_conflict skip) and
-- every tick recorded in schedule_events: fired, skipped (overlap) or missed. All of it
-- commits or none: a runner killed mid-fire leaves the cursor where it was. A schedule planned
-- as orphaned that no live runner declares is marked so instead.
WITH plan AS (
    SELECT p.id, p.expected, p.next_run_at, p.last_tick, p.orphan
    FROM unnest(%(ids)s::text[], %(expected)s::timestamptz[], %(next_run_at)s::timestamptz[],
                %(last_tick)s::timestamptz[], %(orphan)s::boolean[])
         AS p(id, expected, next_run_at, last_tick, orphan)
), advanced AS (
    UPDATE /* schema */schedules AS s
    SET next_run_at = CASE WHEN p.orphan THEN s.next_run_at ELSE p.next_run_at END,
        last_tick = CASE WHEN p.orphan THEN s.last_tick ELSE coalesce(p.last_tick, s.last_tick) END,
        orphaned_at = CASE WHEN p.orphan THEN now() END
    FROM plan AS p
    WHERE s.id = p.id AND s.next_run_at = p.expected AND s.paused_at IS NULL AND s.orphaned_at IS NULL
      AND (NOT p.orphan OR NOT /* schema */schedule_declared(s.id))
    RETURNING s.id, s.task, s.args, s.kwargs, s.queue, s.priority, s.max_attempts, s.overlap, p.orphan
), ticks AS (
    -- In tick order: with overlap skip, the first tick of a catch-up takes the key.
    SELECT a.id, a.task, a.args, a.kwargs, a.queue, a.priority, a.max_attempts, a.overlap,
           f.tick, f.late, f.reason, f.n
    FROM advanced AS a
    JOIN unnest(%(fire_ids)s::text[], %(fire_ticks)s::timestamptz[], %(fire_late)s::boolean[],
                %(fire_reasons)s::text[]) WITH ORDINALITY AS f(id, tick, late, reason, n)
      ON f.id = a.id
    WHERE NOT a.orphan
    ORDER BY f.n
), fired AS (
    SELECT t.id, t.tick, t.reason, e.id AS job_id, e.created
    FROM ticks AS t
    CROSS JOIN LATERAL /* schema */enqueue_job(
        task => t.task, args => t.args, kwargs => t.kwargs, queue => t.queue, priority => t.priority,
        max_attempts => t.max_attempts,
        key => CASE WHEN t.overlap = 'skip' THEN 'pgqueue:schedule:' || t.id END,
        on_conflict => 'skip',
        meta => jsonb_build_object('schedule', t.id, 'scheduled_for', /* schema */schedule_instant_text(t.tick),
                                   'late', t.late)) AS e
), events AS (
    INSERT INTO /* schema */schedule_events (schedule_id, kind, tick, job_id, runner_id, reason)
    -- Missed ticks first: they come before the fired ones, so ids follow the ticks.
    SELECT m.id, 'missed', m.tick, NULL, %(runner_id)s::bigint, m.reason
    FROM unnest(%(missed_ids)s::text[], %(missed_ticks)s::timestamptz[], %(missed_reasons)s::text[])
         AS m(id, tick, reason)
    JOIN advanced AS a ON a.id = m.id AND NOT a.orphan
    UNION ALL
    SELECT f.id, CASE WHEN f.created THEN 'fired' ELSE 'skipped' END, f.tick, f.job_id,
           %(runner_id)s::bigint,
           CASE WHEN f.created THEN f.reason
                ELSE 'overlap: ' || coalesce('job ' || (
                         SELECT h.id FROM /* schema */jobs AS h
                         WHERE h.key = 'pgqueue:schedule:' || f.id AND h.status IN ('queued', 'running')
                         LIMIT 1) || ' of an earlier tick', 'the job of an earlier tick')
                     || ' is still queued or running' END
    FROM fired AS f
    UNION ALL
    SELECT a.id, 'orphaned', NULL, NULL, %(runner_id)s::bigint,
           'its tick came and no live runner declares it any more: it stops firing until a runner '
           || 'declares it again'
    FROM advanced AS a WHERE a.orphan
    RETURNING schedule_id, kind
)
-- Per schedule whose cursor moved: what became of its ticks.
SELECT a.id, count(e.kind) FILTER (WHERE e.kind = 'fired') AS fired,
       count(e.kind) FILTER (WHERE e.kind = 'skipped') AS skipped,
       count(e.kind) FILTER (WHERE e.kind = 'missed') AS missed,
       count(e.kind) FILTER (WHERE e.kind = 'orphaned') AS orphaned
FROM advanced AS a
LEFT JOIN events AS e ON e.schedule_id = a.id
GROUP BY a.id

-- name: schedule_sync_lock
-- Serializes the syncs of runners starting at once; fires of this table wait for the few
-- milliseconds of a sync, then compare their cursor with the one it wrote.
LOCK TABLE /* schema */schedules IN SHARE ROW EXCLUSIVE MODE

-- name: schedule_sync_read
-- The stored schedules a runner declares (under the sync lock), and what other live runners
-- declare for them.
SELECT s.id, s.task, s.cron, s.timezone, s.args, s.kwargs, s.queue, s.priority, s.max_attempts,
       s.catch_up, extract(epoch FROM s.catch_up_within)::float8 AS catch_up_within, s.overlap,
       s.next_run_at, s.orphaned_at,
       (SELECT jsonb_agg(jsonb_build_object('runner_id', d.runner_id, 'definition', d.definition)
                         ORDER BY d.runner_id)
        FROM /* schema */schedule_declarations AS d
        JOIN /* schema */runners AS r ON r.id = d.runner_id
        WHERE d.schedule_id = s.id AND r.state = 'running' AND d.runner_id <> %(runner_id)s::bigint)
           AS others
FROM /* schema */schedules AS s
WHERE s.id = ANY (%(ids)s::text[])

-- name: schedule_sync
-- Writes what a runner's sync decided (new and redefined schedules, orphans declared again),
-- records this runner's declarations and each change as an event, and forgets declarations of
-- runners that no longer run. Never deletes a schedule.
WITH input AS (
    SELECT i.*
    FROM jsonb_to_recordset(%(schedules)s::jsonb) AS i(
        id text, task text, cron text, timezone text, args jsonb, kwargs jsonb, queue text,
        priority integer, max_attempts integer, catch_up text, catch_up_within float8, overlap text,
        next_run_at timestamptz, definition jsonb, write boolean, event text, reason text)
), written AS (
    INSERT INTO /* schema */schedules AS s (id, task, cron, timezone, args, kwargs, queue, priority,
                                            max_attempts, catch_up, catch_up_within, overlap,
                                            next_run_at)
    SELECT i.id, i.task, i.cron, i.timezone, i.args, i.kwargs, i.queue, i.priority, i.max_attempts,
           i.catch_up, make_interval(secs => i.catch_up_within), i.overlap, i.next_run_at
    FROM input AS i WHERE i.write
    ON CONFLICT (id) DO UPDATE
    SET task = excluded.task, cron = excluded.cron, timezone = excluded.timezone, args = excluded.args,
        kwargs = excluded.kwargs, queue = excluded.queue, priority = excluded.priority,
        max_attempts = excluded.max_attempts, catch_up = excluded.catch_up,
        catch_up_within = excluded.catch_up_within, overlap = excluded.overlap,
        next_run_at = excluded.next_run_at, orphaned_at = NULL,
        updated_at = CASE WHEN (s.task, s.cron, s.timezone, s.args, s.kwargs, s.queue, s.priority,
                                s.max_attempts, s.catch_up, s.catch_up_within, s.overlap)
                               IS DISTINCT FROM
                               (excluded.task, excluded.cron, excluded.timezone, excluded.args,
                                excluded.kwargs, excluded.queue, excluded.priority,
                                excluded.max_attempts, excluded.catch_up, excluded.catch_up_within,
                                excluded.overlap)
                          THEN now() ELSE s.updated_at END
    RETURNING s.id
), declared AS (
    INSERT INTO /* schema */schedule_declarations AS d (schedule_id, runner_id, definition)
    SELECT i.id, %(runner_id)s::bigint, i.definition FROM input AS i
    ON CONFLICT (schedule_id, runner_id) DO UPDATE
    SET definition = excluded.definition, declared_at = now()
    RETURNING d.schedule_id
), forgotten AS (
    DELETE FROM /* schema */schedule_declarations AS d
    WHERE d.runner_id <> %(runner_id)s::bigint
      AND NOT EXISTS (SELECT 1 FROM /* schema */runners AS r WHERE r.id = d.runner_id AND r.state = 'running')
    RETURNING d.schedule_id
), events AS (
    INSERT INTO /* schema */schedule_events (schedule_id, kind, runner_id, reason)
    SELECT i.id, i.event, %(runner_id)s::bigint, i.reason FROM input AS i WHERE i.event IS NOT NULL
    RETURNING id
)
SELECT (SELECT count(*) FROM written) AS written, (SELECT count(*) FROM declared) AS declared,
       (SELECT count(*) FROM forgotten) AS forgotten, (SELECT count(*) FROM events) AS events

-- name: schedule_event_prune_batch
-- Deletes up to `batch` schedule events recorded before `before`, oldest first (schedule_events_at_idx).
-- A schedule's latest run is kept however old (a yearly schedule's last run stays in
-- schedule_status): an event with a job goes only once a later one of its schedule has a job.
WITH gone AS (
    DELETE FROM /* schema */schedule_events AS e
    WHERE e.id = ANY (ARRAY(SELECT o.id FROM /* schema */schedule_events AS o
                            WHERE o.at < %(before)s::timestamptz
                              AND (o.job_id IS NULL OR EXISTS (
                                  SELECT 1 FROM /* schema */schedule_events AS later
                                  WHERE later.schedule_id = o.schedule_id AND later.job_id IS NOT NULL
                                    AND later.id > o.id))
                            ORDER BY o.at LIMIT %(batch)s::int))
    RETURNING 1
)
SELECT count(*) AS deleted FROM gone

-- name: schedule_list
-- Every schedule (the schedule_status view), by id.
SELECT * FROM /* schema */schedule_status ORDER BY id

-- name: schedule_get
-- One schedule (the schedule_status view).
SELECT * FROM /* schema */schedule_status WHERE id = %(id)s

-- name: schedule_history
-- A schedule's latest events, newest first.
SELECT id, at, kind, tick, job_id, runner_id, reason
FROM /* schema */schedule_events
WHERE schedule_id = %(id)s
ORDER BY id DESC
LIMIT %(limit)s::int

-- name: schedule_pause
-- Pauses a schedule (pause_schedule): true if it was running.
SELECT /* schema */pause_schedule(%(id)s, %(reason)s, %(by)s) AS changed

-- name: schedule_resume
-- Resumes a schedule (resume_schedule): true if it was paused.
SELECT /* schema */resume_schedule(%(id)s, %(by)s) AS changed

-- name: schedule_trigger
-- Enqueues one job of a schedule now (trigger_schedule), without moving its cursor.
SELECT job_id, created FROM /* schema */trigger_schedule(%(id)s, %(by)s)

-- name: schedule_remove
-- Deletes a schedule no live runner declares (remove_schedule).
SELECT /* schema */remove_schedule(%(id)s, %(by)s) AS removed
