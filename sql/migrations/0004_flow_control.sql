-- pgqueue migration 0004: flow control (unique-job scopes, debounce, per-key serial execution,
-- queue pause, concurrency and rate limits) and the SQL API: enqueue, cancel, retry and the
-- queue controls as functions, the one definition Python's calls go through too.
-- (Written against the same schema placeholder as 0001.)

-- Workers of revision 0003 would promote jobs held back by a lock: they must not run here.
UPDATE /* schema */schema_info SET value = '0004' WHERE key = 'compatible_since';

-- ------------------------------------------------------------------------- jobs
ALTER TABLE /* schema */jobs
    ADD COLUMN scoped_key text,
    ADD COLUMN key_scope text,
    ADD COLUMN key_until timestamptz,
    ADD COLUMN lock_key text,
    ADD COLUMN lock_limit integer,
    ADD COLUMN blocked boolean NOT NULL DEFAULT false,
    ADD COLUMN superseded_by bigint,
    ADD CONSTRAINT jobs_key_scope_valid CHECK (key_scope IN ('queued', 'period')),
    ADD CONSTRAINT jobs_scoped_key_has_a_scope CHECK ((scoped_key IS NULL) = (key_scope IS NULL)),
    ADD CONSTRAINT jobs_period_key_has_a_bucket CHECK ((key_scope = 'period') = (key_until IS NOT NULL)),
    ADD CONSTRAINT jobs_lock_limit_positive CHECK (lock_limit > 0),
    ADD CONSTRAINT jobs_only_queued_jobs_are_blocked CHECK (NOT blocked OR (status = 'queued' AND NOT due)),
    ADD CONSTRAINT jobs_blocked_jobs_have_a_lock CHECK (NOT blocked OR lock_key IS NOT NULL),
    ADD CONSTRAINT jobs_scoped_key_length CHECK (length(scoped_key) <= 512) NOT VALID,
    ADD CONSTRAINT jobs_lock_key_length CHECK (length(lock_key) <= 512) NOT VALID;

COMMENT ON COLUMN /* schema */jobs.key IS
    'Unique key of scope "active": at most one queued or running job holds a given key.';
COMMENT ON COLUMN /* schema */jobs.scoped_key IS
    'Unique key of another scope (key_scope): "queued" (at most one queued job per key: one may wait while another runs) or "period" (at most one job per key and period bucket, finished or not).';
COMMENT ON COLUMN /* schema */jobs.key_scope IS 'queued | period, with scoped_key; NULL for the active scope (key).';
COMMENT ON COLUMN /* schema */jobs.key_until IS
    'Scope "period": the end of the key''s period bucket. The job is kept (not pruned) until then, so the key stays taken.';
COMMENT ON COLUMN /* schema */jobs.lock_key IS
    'Per-key serial execution: at most lock_limit jobs with this lock hold its slots at once, cluster wide (a slot is held by a running job, or a queued one that may be claimed now); the others wait blocked, in priority then enqueue order. A job scheduled for later holds no slot: it is gated when its time comes.';
COMMENT ON COLUMN /* schema */jobs.lock_limit IS 'How many jobs of lock_key may hold its slots at once (default 1).';
COMMENT ON COLUMN /* schema */jobs.blocked IS
    'True while a job with a lock waits for a free slot of its lock (it is not due meanwhile). Set when it would be due (at enqueue, or when its run_at comes), cleared by the transition that frees a slot (release_lock_slots).';
COMMENT ON COLUMN /* schema */jobs.superseded_by IS
    'A job that went back to the queue (a retry, a crash) while another job of its "queued"-scope key was already queued was cancelled in favour of that job: its id.';

-- The queued scope: at most one queued job per key. The period scope: at most one job per key
-- and bucket, whatever its status (the job row is kept until the bucket ends).
CREATE UNIQUE INDEX jobs_queued_key_idx ON /* schema */jobs (scoped_key)
    WHERE key_scope = 'queued' AND status = 'queued';
CREATE UNIQUE INDEX jobs_period_key_idx ON /* schema */jobs (scoped_key, key_until)
    WHERE key_scope = 'period';
-- The slots of a lock: its holders (running, or queued and claimable now).
CREATE INDEX jobs_lock_holders_idx ON /* schema */jobs (lock_key)
    WHERE lock_key IS NOT NULL AND (status = 'running' OR (status = 'queued' AND due));
-- Its waiters, in the order they get a slot.
CREATE INDEX jobs_lock_waiters_idx ON /* schema */jobs (lock_key, priority DESC, id)
    WHERE status = 'queued' AND blocked;
-- Jobs scheduled for later, without the ones held back by a lock (those wait for a slot, not
-- for their time): what the promotion walks.
DROP INDEX /* schema */jobs_scheduled_idx;
CREATE INDEX jobs_scheduled_idx ON /* schema */jobs (run_at)
    WHERE status = 'queued' AND NOT due AND NOT blocked;

-- ----------------------------------------------------------------------- queues
CREATE TABLE /* schema */queues (
    name                text PRIMARY KEY CHECK (name <> '' AND length(name) <= 128),
    paused_at           timestamptz,
    paused_by           text,
    pause_reason        text,
    concurrency_limit   integer CHECK (concurrency_limit > 0),
    rate_limit          integer CHECK (rate_limit > 0),
    rate_period         interval CHECK (rate_period > interval '0'),
    recent_starts       timestamptz[] NOT NULL DEFAULT '{}',
    updated_at          timestamptz NOT NULL DEFAULT now(),
    updated_by          text,
    CONSTRAINT queues_rate_has_a_period CHECK ((rate_limit IS NULL) = (rate_period IS NULL))
) WITH (fillfactor = 70);

COMMENT ON TABLE /* schema */queues IS
    'Queues under control: paused, or limited (cluster-wide concurrency, starts per period). A queue without a row has no controls (every queue works without one).';
COMMENT ON COLUMN /* schema */queues.paused_at IS 'Set while the queue is paused: no claim takes its jobs (running ones finish, enqueues are accepted).';
COMMENT ON COLUMN /* schema */queues.paused_by IS 'Who paused it (a user name, "sql", "dashboard").';
COMMENT ON COLUMN /* schema */queues.pause_reason IS 'Why it was paused.';
COMMENT ON COLUMN /* schema */queues.concurrency_limit IS 'At most this many of its jobs run at once, over every runner.';
COMMENT ON COLUMN /* schema */queues.rate_limit IS 'At most this many of its jobs start per rate_period (attempts, retries included), over every runner.';
COMMENT ON COLUMN /* schema */queues.rate_period IS 'The window of rate_limit.';
COMMENT ON COLUMN /* schema */queues.recent_starts IS 'Start times of its latest attempts, kept for the rate limit (written only for rate-limited queues).';

CREATE TABLE /* schema */queue_events (
    id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    queue       text NOT NULL,
    at          timestamptz NOT NULL DEFAULT now(),
    action      text NOT NULL CHECK (action IN ('paused', 'resumed', 'limited')),
    by          text,
    reason      text,
    detail      jsonb
);
CREATE INDEX queue_events_queue_idx ON /* schema */queue_events (queue, id);

COMMENT ON TABLE /* schema */queue_events IS 'History of queue controls: who paused, resumed or limited which queue, when and why.';


-- Search paths. Every function of the SQL API runs as its owner (SECURITY DEFINER) and has a
-- fixed search_path, so no caller can slip objects of its own in front of pg_catalog's. The
-- internal functions of the hot path (claim_guard, queue_allowance, record_starts, and 0001's
-- wake, notify_finished and due_soon) run with their caller's rights and name every object by
-- its schema; they keep no SET clause, which would cost each claim and enqueue a search-path
-- switch (and stop due_soon from being inlined into the index predicates it serves).

-- ------------------------------------------------------------------ lock slots
-- release_lock_slots(keys): for each lock key, under its advisory lock (the one enqueue and
-- every release take, so slots are counted by one transaction at a time), gives free slots to
-- its first waiters, in priority then enqueue order, and wakes their
-- queues. Returns how many jobs it unblocked. Called by every transition that frees a slot.
CREATE FUNCTION /* schema */release_lock_slots(p_keys text[]) RETURNS integer
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    v_key text;
    v_holders integer;
    v_next record;
    v_unblocked integer := 0;
BEGIN
    FOR v_key IN SELECT DISTINCT k FROM unnest(p_keys) AS k WHERE k IS NOT NULL ORDER BY 1 LOOP
        PERFORM pg_advisory_xact_lock(/* lock_class */, hashtext(v_key));
        LOOP
            SELECT count(*) INTO v_holders FROM /* schema */jobs AS j
            WHERE j.lock_key = v_key AND (j.status = 'running' OR (j.status = 'queued' AND j.due));
            SELECT j.id, j.queue, coalesce(j.lock_limit, 1) AS lock_limit INTO v_next
            FROM /* schema */jobs AS j
            WHERE j.lock_key = v_key AND j.status = 'queued' AND j.blocked
            ORDER BY j.priority DESC, j.id
            LIMIT 1
            FOR UPDATE SKIP LOCKED;
            EXIT WHEN v_next.id IS NULL OR v_holders >= v_next.lock_limit;
            UPDATE /* schema */jobs SET blocked = false, due = true
            WHERE id = v_next.id AND status = 'queued' AND blocked;
            INSERT INTO /* schema */job_events (job_id, from_status, to_status, attempt, kind, reason)
            SELECT v_next.id, 'queued', 'queued', j.attempts, 'unblocked',
                   'lock ' || v_key || ': a slot is free'
            FROM /* schema */jobs AS j WHERE j.id = v_next.id;
            PERFORM /* schema */wake(ARRAY[v_next.queue]);
            v_unblocked := v_unblocked + 1;
        END LOOP;
    END LOOP;
    RETURN v_unblocked;
END
$$;

COMMENT ON FUNCTION /* schema */release_lock_slots(text[]) IS
    'Give the free slots of these lock keys to their first runnable waiters (in priority, then enqueue order) and wake their queues; returns how many jobs it unblocked.';

-- lock_must_wait(key, limit): whether a job of this lock that may run now must wait blocked
-- (called under the key's advisory lock, in a statement of its own so it sees every change
-- committed before the lock was granted).
CREATE FUNCTION /* schema */lock_must_wait(p_key text, p_limit integer) RETURNS boolean
LANGUAGE sql STABLE SET search_path = pg_catalog, pg_temp AS $$
    SELECT EXISTS (SELECT 1 FROM /* schema */jobs AS w
                   WHERE w.lock_key = p_key AND w.status = 'queued' AND w.blocked)
        OR (SELECT count(*) FROM /* schema */jobs AS h
            WHERE h.lock_key = p_key AND (h.status = 'running' OR (h.status = 'queued' AND h.due)))
           >= coalesce(p_limit, 1)
$$;

COMMENT ON FUNCTION /* schema */lock_must_wait(text, integer) IS
    'Whether a job of this lock that may run now must wait blocked: other jobs wait ahead of it, or every slot is held.';

-- ------------------------------------------------------------------- enqueue
-- enqueue_job: the one definition of an enqueue, for SQL callers and for pgqueue's Python.
CREATE FUNCTION /* schema */enqueue_job(
    task text,
    args jsonb DEFAULT '[]',
    kwargs jsonb DEFAULT '{}',
    queue text DEFAULT 'default',
    priority integer DEFAULT 0,
    run_at timestamptz DEFAULT NULL,
    delay interval DEFAULT NULL,
    max_attempts integer DEFAULT 3,
    key text DEFAULT NULL,
    key_scope text DEFAULT 'active',
    key_period interval DEFAULT NULL,
    on_conflict text DEFAULT 'return',
    debounce interval DEFAULT NULL,
    debounce_max interval DEFAULT NULL,
    lock text DEFAULT NULL,
    lock_limit integer DEFAULT 1,
    meta jsonb DEFAULT NULL
) RETURNS TABLE (id bigint, created boolean, replaced boolean)
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
#variable_conflict use_column
DECLARE
    v_run_at timestamptz;
    v_due boolean;
    v_blocked boolean := false;
    v_bucket timestamptz;
    v_id bigint;
    v_holder record;
    v_new_run_at timestamptz;
    v_reason text;
    v_scope text := coalesce(enqueue_job.key_scope, 'active');
    v_on_conflict text := coalesce(enqueue_job.on_conflict, 'return');
BEGIN
    -- Every argument is checked here, with an error that names it.
    IF enqueue_job.task IS NULL OR enqueue_job.task = '' OR length(enqueue_job.task) > 255 THEN
        RAISE EXCEPTION 'pgqueue.enqueue_job: task must be a task name of 1 to 255 characters, not %',
            coalesce(quote_literal(enqueue_job.task), 'NULL') USING ERRCODE = '22023';
    END IF;
    IF enqueue_job.args IS NULL OR jsonb_typeof(enqueue_job.args) <> 'array' THEN
        RAISE EXCEPTION 'pgqueue.enqueue_job: args must be a JSON array (the positional arguments), not %',
            coalesce(enqueue_job.args::text, 'NULL') USING ERRCODE = '22023';
    END IF;
    IF enqueue_job.kwargs IS NULL OR jsonb_typeof(enqueue_job.kwargs) <> 'object' THEN
        RAISE EXCEPTION 'pgqueue.enqueue_job: kwargs must be a JSON object (the keyword arguments), not %',
            coalesce(enqueue_job.kwargs::text, 'NULL') USING ERRCODE = '22023';
    END IF;
    IF enqueue_job.queue IS NULL OR btrim(enqueue_job.queue) = '' OR enqueue_job.queue <> btrim(enqueue_job.queue)
            OR length(enqueue_job.queue) > 128 THEN
        RAISE EXCEPTION 'pgqueue.enqueue_job: queue must be a name of 1 to 128 characters without surrounding spaces, not %',
            coalesce(quote_literal(enqueue_job.queue), 'NULL') USING ERRCODE = '22023';
    END IF;
    IF enqueue_job.priority IS NULL THEN
        RAISE EXCEPTION 'pgqueue.enqueue_job: priority must be a whole number, not NULL' USING ERRCODE = '22023';
    END IF;
    IF enqueue_job.max_attempts IS NULL OR enqueue_job.max_attempts < 1 THEN
        RAISE EXCEPTION 'pgqueue.enqueue_job: max_attempts must be at least 1, not %',
            coalesce(enqueue_job.max_attempts::text, 'NULL') USING ERRCODE = '22023';
    END IF;
    IF enqueue_job.run_at IS NOT NULL AND enqueue_job.delay IS NOT NULL THEN
        RAISE EXCEPTION 'pgqueue.enqueue_job: give run_at or delay, not both' USING ERRCODE = '22023';
    END IF;
    IF enqueue_job.delay < interval '0' THEN
        RAISE EXCEPTION 'pgqueue.enqueue_job: delay must not be negative, not %', enqueue_job.delay
            USING ERRCODE = '22023';
    END IF;
    IF enqueue_job.meta IS NOT NULL AND jsonb_typeof(enqueue_job.meta) <> 'object' THEN
        RAISE EXCEPTION 'pgqueue.enqueue_job: meta must be a JSON object, not %', enqueue_job.meta::text
            USING ERRCODE = '22023';
    END IF;
    IF v_scope NOT IN ('active', 'queued', 'period') THEN
        RAISE EXCEPTION 'pgqueue.enqueue_job: key_scope must be active, queued or period, not %',
            quote_literal(v_scope) USING ERRCODE = '22023';
    END IF;
    IF v_on_conflict NOT IN ('return', 'replace', 'skip') THEN
        RAISE EXCEPTION 'pgqueue.enqueue_job: on_conflict must be return, replace or skip, not %',
            quote_literal(v_on_conflict) USING ERRCODE = '22023';
    END IF;
    IF enqueue_job.key IS NOT NULL AND (enqueue_job.key = '' OR length(enqueue_job.key) > 512) THEN
        RAISE EXCEPTION 'pgqueue.enqueue_job: key must be 1 to 512 characters' USING ERRCODE = '22023';
    END IF;
    IF enqueue_job.debounce IS NOT NULL THEN
        IF enqueue_job.key IS NULL THEN
            RAISE EXCEPTION 'pgqueue.enqueue_job: debounce needs a key (the enqueues of one key are collapsed)'
                USING ERRCODE = '22023';
        END IF;
        IF enqueue_job.debounce <= interval '0' OR enqueue_job.run_at IS NOT NULL OR enqueue_job.delay IS NOT NULL THEN
            RAISE EXCEPTION 'pgqueue.enqueue_job: debounce must be positive and sets the run time itself (no run_at or delay)'
                USING ERRCODE = '22023';
        END IF;
        v_scope := 'queued';
        v_on_conflict := 'replace';
    ELSIF enqueue_job.debounce_max IS NOT NULL THEN
        RAISE EXCEPTION 'pgqueue.enqueue_job: debounce_max goes with debounce' USING ERRCODE = '22023';
    END IF;
    IF v_scope <> 'active' AND enqueue_job.key IS NULL THEN
        RAISE EXCEPTION 'pgqueue.enqueue_job: key_scope % needs a key', quote_literal(v_scope)
            USING ERRCODE = '22023';
    END IF;
    IF v_scope = 'period' THEN
        IF enqueue_job.key_period IS NULL OR enqueue_job.key_period <= interval '0' THEN
            RAISE EXCEPTION 'pgqueue.enqueue_job: key_scope period needs a positive key_period'
                USING ERRCODE = '22023';
        END IF;
        IF v_on_conflict = 'replace' THEN
            RAISE EXCEPTION 'pgqueue.enqueue_job: on_conflict replace does not go with key_scope period'
                USING ERRCODE = '22023';
        END IF;
    ELSIF enqueue_job.key_period IS NOT NULL THEN
        RAISE EXCEPTION 'pgqueue.enqueue_job: key_period goes with key_scope period' USING ERRCODE = '22023';
    END IF;
    IF enqueue_job.lock IS NOT NULL AND (enqueue_job.lock = '' OR length(enqueue_job.lock) > 512) THEN
        RAISE EXCEPTION 'pgqueue.enqueue_job: lock must be 1 to 512 characters' USING ERRCODE = '22023';
    END IF;
    IF enqueue_job.lock_limit IS NULL OR enqueue_job.lock_limit < 1 THEN
        RAISE EXCEPTION 'pgqueue.enqueue_job: lock_limit must be at least 1, not %',
            coalesce(enqueue_job.lock_limit::text, 'NULL') USING ERRCODE = '22023';
    END IF;

    v_run_at := coalesce(enqueue_job.run_at,
                         now() + coalesce(enqueue_job.debounce, enqueue_job.delay, interval '0'));
    IF v_scope = 'period' THEN
        v_bucket := to_timestamp((floor(extract(epoch FROM now()) / extract(epoch FROM enqueue_job.key_period)) + 1)
                                 * extract(epoch FROM enqueue_job.key_period));
    END IF;
    v_due := /* schema */due_soon(v_run_at);
    IF enqueue_job.lock IS NOT NULL AND v_due THEN
        -- Slots are counted by one transaction at a time, per key; the next statement sees
        -- every change committed before the lock was granted. (A job for later is gated when
        -- its time comes.)
        PERFORM pg_advisory_xact_lock(/* lock_class */, hashtext(enqueue_job.lock));
        v_blocked := /* schema */lock_must_wait(enqueue_job.lock, enqueue_job.lock_limit);
        v_due := NOT v_blocked;
    END IF;
    v_reason := 'enqueued'
        || CASE WHEN enqueue_job.key IS NOT NULL THEN ' with key ' || enqueue_job.key
                     || CASE WHEN v_scope <> 'active' THEN ' (' || v_scope || ')' ELSE '' END
                ELSE '' END
        || CASE WHEN enqueue_job.lock IS NOT NULL
                THEN CASE WHEN v_blocked THEN ', waiting for lock ' ELSE ', holding lock ' END || enqueue_job.lock
                ELSE '' END;

    FOR attempt IN 1..5 LOOP
        v_id := NULL;
        IF enqueue_job.key IS NULL THEN
            INSERT INTO /* schema */jobs AS j (queue, task, args, kwargs, priority, run_at, due, max_attempts,
                                               meta, lock_key, lock_limit, blocked)
            VALUES (enqueue_job.queue, enqueue_job.task, enqueue_job.args, enqueue_job.kwargs,
                    enqueue_job.priority, v_run_at, v_due, enqueue_job.max_attempts, enqueue_job.meta,
                    enqueue_job.lock, CASE WHEN enqueue_job.lock IS NOT NULL THEN enqueue_job.lock_limit END,
                    v_blocked)
            RETURNING j.id INTO v_id;
        ELSIF v_scope = 'active' THEN
            INSERT INTO /* schema */jobs AS j (queue, task, args, kwargs, priority, run_at, due, max_attempts,
                                               meta, key, lock_key, lock_limit, blocked)
            VALUES (enqueue_job.queue, enqueue_job.task, enqueue_job.args, enqueue_job.kwargs,
                    enqueue_job.priority, v_run_at, v_due, enqueue_job.max_attempts, enqueue_job.meta,
                    enqueue_job.key, enqueue_job.lock,
                    CASE WHEN enqueue_job.lock IS NOT NULL THEN enqueue_job.lock_limit END, v_blocked)
            ON CONFLICT (key) WHERE key IS NOT NULL AND status IN ('queued', 'running') DO NOTHING
            RETURNING j.id INTO v_id;
        ELSIF v_scope = 'queued' THEN
            INSERT INTO /* schema */jobs AS j (queue, task, args, kwargs, priority, run_at, due, max_attempts,
                                               meta, scoped_key, key_scope, lock_key, lock_limit, blocked)
            VALUES (enqueue_job.queue, enqueue_job.task, enqueue_job.args, enqueue_job.kwargs,
                    enqueue_job.priority, v_run_at, v_due, enqueue_job.max_attempts, enqueue_job.meta,
                    enqueue_job.key, 'queued', enqueue_job.lock,
                    CASE WHEN enqueue_job.lock IS NOT NULL THEN enqueue_job.lock_limit END, v_blocked)
            ON CONFLICT (scoped_key) WHERE key_scope = 'queued' AND status = 'queued' DO NOTHING
            RETURNING j.id INTO v_id;
        ELSE
            INSERT INTO /* schema */jobs AS j (queue, task, args, kwargs, priority, run_at, due, max_attempts,
                                               meta, scoped_key, key_scope, key_until, lock_key, lock_limit,
                                               blocked)
            VALUES (enqueue_job.queue, enqueue_job.task, enqueue_job.args, enqueue_job.kwargs,
                    enqueue_job.priority, v_run_at, v_due, enqueue_job.max_attempts, enqueue_job.meta,
                    enqueue_job.key, 'period', v_bucket, enqueue_job.lock,
                    CASE WHEN enqueue_job.lock IS NOT NULL THEN enqueue_job.lock_limit END, v_blocked)
            ON CONFLICT (scoped_key, key_until) WHERE key_scope = 'period' DO NOTHING
            RETURNING j.id INTO v_id;
        END IF;

        IF v_id IS NOT NULL THEN
            INSERT INTO /* schema */job_events (job_id, to_status, kind, reason)
            VALUES (v_id, 'queued', 'enqueued', v_reason);
            IF v_due THEN
                PERFORM /* schema */wake(ARRAY[enqueue_job.queue]);
            END IF;
            RETURN QUERY SELECT v_id, true, false;
            RETURN;
        END IF;

        -- The key is taken: by whom?
        SELECT h.id, h.status, h.enqueued_at, h.run_at, h.queue, h.lock_key, h.lock_limit INTO v_holder
        FROM /* schema */jobs AS h
        WHERE CASE v_scope
                WHEN 'active' THEN h.key = enqueue_job.key AND h.status IN ('queued', 'running')
                WHEN 'queued' THEN h.scoped_key = enqueue_job.key AND h.key_scope = 'queued'
                                   AND h.status = 'queued'
                ELSE h.scoped_key = enqueue_job.key AND h.key_scope = 'period' AND h.key_until = v_bucket
              END
        LIMIT 1;
        IF v_holder.id IS NULL THEN
            CONTINUE;  -- it finished (or appeared) between the insert and this look: again
        END IF;
        IF v_on_conflict = 'skip' THEN
            RETURN QUERY SELECT NULL::bigint, false, false;
            RETURN;
        END IF;
        IF v_on_conflict = 'replace' AND v_holder.status = 'queued' THEN
            v_new_run_at := CASE
                WHEN enqueue_job.debounce IS NOT NULL
                THEN least(now() + enqueue_job.debounce,
                           coalesce(v_holder.enqueued_at + enqueue_job.debounce_max, 'infinity'))
                WHEN enqueue_job.run_at IS NOT NULL OR enqueue_job.delay IS NOT NULL THEN v_run_at
                ELSE v_holder.run_at END;
            IF v_holder.lock_key IS NOT NULL THEN
                PERFORM pg_advisory_xact_lock(/* lock_class */, hashtext(v_holder.lock_key));
            END IF;
            -- A job with a lock is first taken out of its lock's slots (scheduled), then gated
            -- again if it may run now.
            UPDATE /* schema */jobs AS r
            SET args = enqueue_job.args, kwargs = enqueue_job.kwargs, priority = enqueue_job.priority,
                meta = coalesce(enqueue_job.meta, r.meta),
                run_at = v_new_run_at,
                due = r.lock_key IS NULL AND /* schema */due_soon(v_new_run_at),
                blocked = false
            WHERE r.id = v_holder.id AND r.status = 'queued'
            RETURNING r.id, r.due INTO v_id, v_due;
            IF v_id IS NOT NULL THEN
                IF v_holder.lock_key IS NOT NULL AND /* schema */due_soon(v_new_run_at) THEN
                    v_blocked := /* schema */lock_must_wait(v_holder.lock_key, v_holder.lock_limit);
                    UPDATE /* schema */jobs AS r SET due = NOT v_blocked, blocked = v_blocked WHERE r.id = v_id;
                    v_due := NOT v_blocked;
                END IF;
                INSERT INTO /* schema */job_events (job_id, from_status, to_status, attempt, kind, reason)
                SELECT r.id, 'queued', 'queued', r.attempts, 'replaced',
                       CASE WHEN enqueue_job.debounce IS NOT NULL
                            THEN 'debounced: arguments replaced, runs at ' || r.run_at
                            ELSE 'arguments replaced by a new enqueue with key ' || enqueue_job.key END
                FROM /* schema */jobs AS r WHERE r.id = v_id;
                IF v_holder.lock_key IS NOT NULL THEN
                    PERFORM /* schema */release_lock_slots(ARRAY[v_holder.lock_key]);
                END IF;
                IF v_due THEN
                    PERFORM /* schema */wake(ARRAY[v_holder.queue]);
                END IF;
                RETURN QUERY SELECT v_id, false, true;
                RETURN;
            END IF;
            CONTINUE;  -- it was claimed meanwhile: look again
        END IF;
        RETURN QUERY SELECT v_holder.id, false, false;
        RETURN;
    END LOOP;
    RAISE EXCEPTION 'pgqueue.enqueue_job: could not enqueue the job with key %: it kept changing hands',
        quote_literal(enqueue_job.key) USING ERRCODE = '40001';
END
$$;

COMMENT ON FUNCTION /* schema */enqueue_job(text, jsonb, jsonb, text, integer, timestamptz, interval, integer, text, text, interval, text, interval, interval, text, integer, jsonb) IS
    'Enqueue one job: (id, created, replaced). With a key already taken: the holder''s id (on_conflict return), the holder with its arguments replaced while it is queued (replace), or a NULL id (skip). debounce collapses the enqueues of a key into one run, later with each. lock holds the job back while lock_limit jobs of that lock hold its slots. Wakes a waiting runner when the job may run now.';

CREATE FUNCTION /* schema */enqueue(
    task text,
    args jsonb DEFAULT '[]',
    kwargs jsonb DEFAULT '{}',
    queue text DEFAULT 'default',
    priority integer DEFAULT 0,
    run_at timestamptz DEFAULT NULL,
    delay interval DEFAULT NULL,
    max_attempts integer DEFAULT 3,
    key text DEFAULT NULL,
    key_scope text DEFAULT 'active',
    key_period interval DEFAULT NULL,
    on_conflict text DEFAULT 'return',
    debounce interval DEFAULT NULL,
    debounce_max interval DEFAULT NULL,
    lock text DEFAULT NULL,
    lock_limit integer DEFAULT 1,
    meta jsonb DEFAULT NULL
) RETURNS bigint
LANGUAGE sql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
    SELECT e.id FROM /* schema */enqueue_job($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14,
                                             $15, $16, $17) AS e
$$;

COMMENT ON FUNCTION /* schema */enqueue(text, jsonb, jsonb, text, integer, timestamptz, interval, integer, text, text, interval, text, interval, interval, text, integer, jsonb) IS
    'Enqueue one job and return its id (see enqueue_job for every argument). E.g. SELECT pgqueue.enqueue(''tasks.send_welcome'', ''[42]'', queue => ''mail'', delay => interval ''5 minutes'').';

CREATE FUNCTION /* schema */enqueue_many(
    task text,
    args jsonb,
    kwargs jsonb DEFAULT NULL,
    queue text DEFAULT 'default',
    priority integer DEFAULT 0,
    run_at timestamptz DEFAULT NULL,
    delay interval DEFAULT NULL,
    max_attempts integer DEFAULT 3,
    meta jsonb DEFAULT NULL
) RETURNS SETOF bigint
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
#variable_conflict use_column
DECLARE
    v_run_at timestamptz;
    v_ids bigint[];
    v_constraint text;
BEGIN
    IF enqueue_many.task IS NULL OR enqueue_many.task = '' OR length(enqueue_many.task) > 255 THEN
        RAISE EXCEPTION 'pgqueue.enqueue_many: task must be a task name of 1 to 255 characters, not %',
            coalesce(quote_literal(enqueue_many.task), 'NULL') USING ERRCODE = '22023';
    END IF;
    IF enqueue_many.args IS NULL OR jsonb_typeof(enqueue_many.args) <> 'array' THEN
        RAISE EXCEPTION 'pgqueue.enqueue_many: args must be a JSON array with one array of arguments per job'
            USING ERRCODE = '22023';
    END IF;
    -- Each item's type is checked by the table's CHECK constraints as it is inserted (no
    -- separate pass over 20,000 items); a violation is turned into this function's message.
    IF enqueue_many.kwargs IS NOT NULL AND (jsonb_typeof(enqueue_many.kwargs) <> 'array'
            OR jsonb_array_length(enqueue_many.kwargs) <> jsonb_array_length(enqueue_many.args)) THEN
        RAISE EXCEPTION 'pgqueue.enqueue_many: kwargs must be NULL, or a JSON array of objects as long as args'
            USING ERRCODE = '22023';
    END IF;
    IF enqueue_many.queue IS NULL OR btrim(enqueue_many.queue) = '' OR enqueue_many.queue <> btrim(enqueue_many.queue)
            OR length(enqueue_many.queue) > 128 THEN
        RAISE EXCEPTION 'pgqueue.enqueue_many: queue must be a name of 1 to 128 characters without surrounding spaces, not %',
            coalesce(quote_literal(enqueue_many.queue), 'NULL') USING ERRCODE = '22023';
    END IF;
    IF enqueue_many.max_attempts IS NULL OR enqueue_many.max_attempts < 1 THEN
        RAISE EXCEPTION 'pgqueue.enqueue_many: max_attempts must be at least 1' USING ERRCODE = '22023';
    END IF;
    IF enqueue_many.run_at IS NOT NULL AND enqueue_many.delay IS NOT NULL THEN
        RAISE EXCEPTION 'pgqueue.enqueue_many: give run_at or delay, not both' USING ERRCODE = '22023';
    END IF;
    IF enqueue_many.delay < interval '0' THEN
        RAISE EXCEPTION 'pgqueue.enqueue_many: delay must not be negative' USING ERRCODE = '22023';
    END IF;
    IF enqueue_many.meta IS NOT NULL AND jsonb_typeof(enqueue_many.meta) <> 'object' THEN
        RAISE EXCEPTION 'pgqueue.enqueue_many: meta must be a JSON object' USING ERRCODE = '22023';
    END IF;
    v_run_at := coalesce(enqueue_many.run_at, now() + coalesce(enqueue_many.delay, interval '0'));
    BEGIN
        -- ROWS FROM zips the two lists (a NULL kwargs list yields NULLs); WITH ORDINALITY's
        -- order is the insert's, so the ids follow the items.
        WITH inserted AS (
            INSERT INTO /* schema */jobs (queue, task, args, kwargs, priority, run_at, due, max_attempts, meta)
            SELECT enqueue_many.queue, enqueue_many.task, call.args, coalesce(call.kwargs, '{}'),
                   enqueue_many.priority, v_run_at, /* schema */due_soon(v_run_at),
                   enqueue_many.max_attempts, enqueue_many.meta
            FROM ROWS FROM (jsonb_array_elements(enqueue_many.args),
                            jsonb_array_elements(enqueue_many.kwargs)) WITH ORDINALITY AS call(args, kwargs, n)
            RETURNING id
        ), events AS (
            INSERT INTO /* schema */job_events (job_id, to_status, kind, reason)
            SELECT i.id, 'queued', 'enqueued', 'enqueued' FROM inserted AS i
        )
        SELECT array_agg(i.id) INTO v_ids FROM inserted AS i;
    EXCEPTION WHEN check_violation THEN
        GET STACKED DIAGNOSTICS v_constraint = CONSTRAINT_NAME;
        IF v_constraint = 'jobs_args_is_array' THEN
            RAISE EXCEPTION 'pgqueue.enqueue_many: each item of args must be a JSON array (one job''s positional arguments)'
                USING ERRCODE = '22023';
        ELSIF v_constraint = 'jobs_kwargs_is_object' THEN
            RAISE EXCEPTION 'pgqueue.enqueue_many: kwargs must be NULL, or a JSON array of objects as long as args'
                USING ERRCODE = '22023';
        END IF;
        RAISE;
    END;
    IF /* schema */due_soon(v_run_at) AND v_ids IS NOT NULL THEN
        PERFORM /* schema */wake(ARRAY[enqueue_many.queue]);
    END IF;
    RETURN QUERY SELECT unnest(coalesce(v_ids, '{}'));
END
$$;

COMMENT ON FUNCTION /* schema */enqueue_many(text, jsonb, jsonb, text, integer, timestamptz, interval, integer, jsonb) IS
    'Enqueue many jobs of one task in one statement: args is a JSON array of argument arrays, kwargs NULL or a JSON array of objects of the same length; returns the ids in order.';

-- -------------------------------------------------------------- cancel, retry
-- cancel_jobs / retry_jobs: the one definition of each, for the SQL API, `pgqueue cancel` and
-- `retry`, job.cancel() and the dashboard's actions. Rows are locked in id order, the order
-- every finishing statement and the reaper lock in.
CREATE FUNCTION /* schema */cancel_jobs(job_ids bigint[], reason text DEFAULT 'cancelled')
RETURNS TABLE (id bigint, status text)
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
#variable_conflict use_column
DECLARE
    v_ids bigint[];
    v_statuses text[];
    v_keys text[];
    v_reason text := coalesce(cancel_jobs.reason, 'cancelled');
BEGIN
    PERFORM 1 FROM /* schema */jobs AS j
    WHERE j.id = ANY (cancel_jobs.job_ids)
      AND (j.status = 'queued' OR (j.status = 'running' AND NOT j.cancel_requested))
    ORDER BY j.id
    FOR UPDATE;
    WITH changed AS (
        UPDATE /* schema */jobs AS j
        SET status = CASE WHEN j.status = 'queued' THEN 'cancelled' ELSE j.status END,
            finished_at = CASE WHEN j.status = 'queued' THEN now() ELSE j.finished_at END,
            due = CASE WHEN j.status = 'queued' THEN false ELSE j.due END,
            blocked = false,
            cancel_requested = true
        WHERE j.id = ANY (cancel_jobs.job_ids)
          AND (j.status = 'queued' OR (j.status = 'running' AND NOT j.cancel_requested))
        RETURNING j.id, j.status, j.attempts, j.runner_id, j.lock_key
    ), events AS (
        INSERT INTO /* schema */job_events (job_id, from_status, to_status, attempt, runner_id, kind, reason)
        SELECT c.id, CASE WHEN c.status = 'cancelled' THEN 'queued' ELSE 'running' END, c.status,
               c.attempts, c.runner_id,
               CASE WHEN c.status = 'cancelled' THEN 'cancelled' ELSE 'cancel_requested' END,
               CASE WHEN c.status = 'cancelled' THEN v_reason ELSE 'cancellation requested: ' || v_reason END
        FROM changed AS c
    ), notified AS (
        SELECT /* schema */notify_finished(array_agg(c.id)) AS n
        FROM changed AS c WHERE c.status = 'cancelled' HAVING count(*) > 0
    )
    SELECT array_agg(c.id ORDER BY c.id), array_agg(c.status ORDER BY c.id),
           array_agg(c.lock_key) FILTER (WHERE c.status = 'cancelled' AND c.lock_key IS NOT NULL)
    INTO v_ids, v_statuses, v_keys
    FROM changed AS c
    WHERE (SELECT count(*) FROM notified) >= 0;
    IF v_keys IS NOT NULL THEN
        PERFORM /* schema */release_lock_slots(v_keys);
    END IF;
    RETURN QUERY SELECT t.id, t.status FROM unnest(v_ids, v_statuses) AS t(id, status);
END
$$;

COMMENT ON FUNCTION /* schema */cancel_jobs(bigint[], text) IS
    'Cancel these jobs: queued ones at once, running ones by requesting cancellation (the task is told; the job ends cancelled). Returns the jobs changed with their status now; finished jobs and jobs already cancelled are left as they are.';

CREATE FUNCTION /* schema */cancel(job_id bigint, reason text DEFAULT 'cancelled') RETURNS text
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    v_status text;
BEGIN
    SELECT c.status INTO v_status FROM /* schema */cancel_jobs(ARRAY[cancel.job_id], cancel.reason) AS c;
    IF v_status IS NOT NULL THEN
        RETURN v_status;
    END IF;
    SELECT j.status INTO v_status FROM /* schema */jobs AS j WHERE j.id = cancel.job_id;
    IF v_status IS NULL THEN
        RAISE EXCEPTION 'pgqueue.cancel: there is no job %', cancel.job_id USING ERRCODE = 'P0002';
    END IF;
    IF v_status IN ('cancelled', 'running') THEN
        RETURN v_status;  -- already cancelled, or its cancellation already requested
    END IF;
    RAISE EXCEPTION 'pgqueue.cancel: job % already %: a finished job cannot be cancelled', cancel.job_id, v_status
        USING ERRCODE = '55000';
END
$$;

COMMENT ON FUNCTION /* schema */cancel(bigint, text) IS
    'Cancel one job: returns cancelled (it was queued), or running (cancellation requested: the task is told, the job ends cancelled). Cancelling twice is harmless; a finished job cannot be cancelled (an error says so), nor a job that does not exist.';

CREATE FUNCTION /* schema */retry_jobs(job_ids bigint[], reason text DEFAULT 'retried',
                                       from_statuses text[] DEFAULT '{failed}')
RETURNS TABLE (id bigint, retried boolean)
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
#variable_conflict use_column
DECLARE
    v_reason text := coalesce(retry_jobs.reason, 'retried');
    v_ids bigint[];
    v_retried bigint[] := '{}';
    v_locked record;
    v_blocked boolean;
BEGIN
    IF retry_jobs.from_statuses IS NULL OR NOT (retry_jobs.from_statuses <@ ARRAY['failed', 'cancelled']) THEN
        RAISE EXCEPTION 'pgqueue.retry_jobs: from_statuses may hold failed and cancelled, not %',
            coalesce(retry_jobs.from_statuses::text, 'NULL') USING ERRCODE = '22023';
    END IF;
    -- The candidates, locked in id order; rows someone else holds are left (reported not retried).
    SELECT coalesce(array_agg(t.id ORDER BY t.id), '{}') INTO v_ids
    FROM (SELECT j.id FROM /* schema */jobs AS j
          WHERE j.id = ANY (retry_jobs.job_ids) AND j.status = ANY (retry_jobs.from_statuses)
          ORDER BY j.id
          FOR UPDATE SKIP LOCKED) AS t;

    -- Without a lock: at once. Of the jobs sharing a key, the first goes back, and none whose
    -- key an unfinished job holds (period keys stay with their own row: never in conflict).
    WITH target AS (
        SELECT c.id, c.status FROM /* schema */jobs AS c
        WHERE c.id = ANY (v_ids) AND c.lock_key IS NULL AND c.key IS NULL
          AND c.key_scope IS DISTINCT FROM 'queued'
        UNION ALL
        SELECT DISTINCT ON (c.key) c.id, c.status FROM /* schema */jobs AS c
        WHERE c.id = ANY (v_ids) AND c.lock_key IS NULL AND c.key IS NOT NULL AND NOT EXISTS (
            SELECT 1 FROM /* schema */jobs AS k WHERE k.key = c.key AND k.status IN ('queued', 'running'))
        UNION ALL
        SELECT DISTINCT ON (c.scoped_key) c.id, c.status FROM /* schema */jobs AS c
        WHERE c.id = ANY (v_ids) AND c.lock_key IS NULL AND c.key_scope = 'queued' AND NOT EXISTS (
            SELECT 1 FROM /* schema */jobs AS k
            WHERE k.scoped_key = c.scoped_key AND k.key_scope = 'queued' AND k.status = 'queued')
    ), moved AS (
        UPDATE /* schema */jobs AS j
        SET status = 'queued', run_at = now(), due = true, finished_at = NULL, failures = 0,
            crashes = 0, result = NULL, cancel_requested = false, superseded_by = NULL
        WHERE j.id = ANY (ARRAY(SELECT t.id FROM target AS t)) AND j.status = ANY (retry_jobs.from_statuses)
        RETURNING j.id, j.attempts, j.queue
    ), events AS (
        INSERT INTO /* schema */job_events (job_id, from_status, to_status, attempt, kind, reason)
        SELECT m.id, t.status, 'queued', m.attempts, 'retried', v_reason
        FROM moved AS m JOIN target AS t ON t.id = m.id
    ), woken AS (
        SELECT count(*) AS n FROM (
            SELECT /* schema */wake(array_agg(DISTINCT m.queue)) FROM moved AS m HAVING count(*) > 0
        ) AS w
    )
    -- (Data-modifying CTEs run whether read or not; reading woken is what runs it.)
    SELECT coalesce(array_agg(m.id), '{}') INTO v_retried FROM moved AS m
    WHERE (SELECT n FROM woken) >= 0;

    -- With a lock: one at a time, each under its lock's advisory lock, waiting blocked when
    -- the lock's slots are held.
    FOR v_locked IN SELECT c.id, c.status, c.key, c.scoped_key, c.key_scope, c.lock_key, c.lock_limit
                    FROM /* schema */jobs AS c WHERE c.id = ANY (v_ids) AND c.lock_key IS NOT NULL
                    ORDER BY c.id LOOP
        CONTINUE WHEN v_locked.key IS NOT NULL AND EXISTS (
            SELECT 1 FROM /* schema */jobs AS k WHERE k.key = v_locked.key AND k.status IN ('queued', 'running'));
        CONTINUE WHEN v_locked.key_scope = 'queued' AND EXISTS (
            SELECT 1 FROM /* schema */jobs AS k
            WHERE k.scoped_key = v_locked.scoped_key AND k.key_scope = 'queued' AND k.status = 'queued');
        PERFORM pg_advisory_xact_lock(/* lock_class */, hashtext(v_locked.lock_key));
        v_blocked := /* schema */lock_must_wait(v_locked.lock_key, v_locked.lock_limit);
        UPDATE /* schema */jobs AS j
        SET status = 'queued', run_at = now(), due = NOT v_blocked, blocked = v_blocked, finished_at = NULL,
            failures = 0, crashes = 0, result = NULL, cancel_requested = false, superseded_by = NULL
        WHERE j.id = v_locked.id AND j.status = v_locked.status;
        INSERT INTO /* schema */job_events (job_id, from_status, to_status, attempt, kind, reason)
        SELECT j.id, v_locked.status, 'queued', j.attempts, 'retried',
               v_reason || CASE WHEN v_blocked THEN ', waiting for lock ' || v_locked.lock_key ELSE '' END
        FROM /* schema */jobs AS j WHERE j.id = v_locked.id;
        IF NOT v_blocked THEN
            PERFORM /* schema */wake(ARRAY[(SELECT j.queue FROM /* schema */jobs AS j WHERE j.id = v_locked.id)]);
        END IF;
        v_retried := v_retried || v_locked.id;
    END LOOP;

    RETURN QUERY SELECT c.id, c.id = ANY (v_retried) FROM unnest(v_ids) AS c(id) ORDER BY c.id;
END
$$;

COMMENT ON FUNCTION /* schema */retry_jobs(bigint[], text, text[]) IS
    'Send these failed (or, with from_statuses, cancelled) jobs back to the queue now, with a fresh failure and crash budget (attempts keeps counting: it is the fencing token). Of jobs sharing a key only the first goes back, and none whose key an unfinished job holds. Returns each candidate with whether it was retried.';

CREATE FUNCTION /* schema */retry(job_id bigint, reason text DEFAULT 'retried') RETURNS text
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    v_status text;
    v_retried boolean;
BEGIN
    SELECT r.retried INTO v_retried FROM /* schema */retry_jobs(ARRAY[retry.job_id], retry.reason) AS r;
    IF v_retried THEN
        RETURN 'queued';
    END IF;
    SELECT j.status INTO v_status FROM /* schema */jobs AS j WHERE j.id = retry.job_id;
    IF v_status IS NULL THEN
        RAISE EXCEPTION 'pgqueue.retry: there is no job %', retry.job_id USING ERRCODE = 'P0002';
    END IF;
    IF v_status <> 'failed' THEN
        RAISE EXCEPTION 'pgqueue.retry: job % is %: only failed jobs can be retried', retry.job_id, v_status
            USING ERRCODE = '55000';
    END IF;
    IF v_retried IS NULL THEN
        RAISE EXCEPTION 'pgqueue.retry: job % is locked by another transaction: try again', retry.job_id
            USING ERRCODE = '55P03';
    END IF;
    RAISE EXCEPTION 'pgqueue.retry: job %''s key is held by an unfinished job: it stays failed', retry.job_id
        USING ERRCODE = '23505';
END
$$;

COMMENT ON FUNCTION /* schema */retry(bigint, text) IS
    'Send one failed job back to the queue (returns queued). Refused, with an error that says why, for a job that does not exist, is not failed, or whose key an unfinished job holds now.';

-- ---------------------------------------------------------------- queue controls
CREATE FUNCTION /* schema */pause_queue(queue text, reason text DEFAULT NULL, by text DEFAULT NULL)
RETURNS void
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
#variable_conflict use_column
BEGIN
    IF pause_queue.queue IS NULL OR pause_queue.queue = '' OR length(pause_queue.queue) > 128 THEN
        RAISE EXCEPTION 'pgqueue.pause_queue: queue must be a name of 1 to 128 characters' USING ERRCODE = '22023';
    END IF;
    -- Wait for the claims in flight (each holds this lock shared) and keep new ones out until
    -- this commits: no claim that started before the pause commits after it.
    PERFORM pg_advisory_xact_lock(/* claim_class */, 0);
    INSERT INTO /* schema */queues AS q (name, paused_at, paused_by, pause_reason, updated_by)
    VALUES (pause_queue.queue, now(), pause_queue.by, pause_queue.reason, pause_queue.by)
    ON CONFLICT (name) DO UPDATE
    SET paused_at = coalesce(q.paused_at, now()), paused_by = excluded.paused_by,
        pause_reason = excluded.pause_reason, updated_at = now(), updated_by = excluded.updated_by;
    INSERT INTO /* schema */queue_events (queue, action, by, reason)
    VALUES (pause_queue.queue, 'paused', pause_queue.by, pause_queue.reason);
END
$$;

COMMENT ON FUNCTION /* schema */pause_queue(text, text, text) IS
    'Pause a queue: from its commit on no claim takes its jobs, on any runner; running jobs finish, enqueues are accepted. Records who and why.';

CREATE FUNCTION /* schema */resume_queue(queue text, by text DEFAULT NULL) RETURNS void
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
#variable_conflict use_column
BEGIN
    UPDATE /* schema */queues AS q
    SET paused_at = NULL, paused_by = NULL, pause_reason = NULL, updated_at = now(), updated_by = resume_queue.by
    WHERE q.name = resume_queue.queue;
    INSERT INTO /* schema */queue_events (queue, action, by) VALUES (resume_queue.queue, 'resumed', resume_queue.by);
    PERFORM /* schema */wake(ARRAY[resume_queue.queue]);
END
$$;

COMMENT ON FUNCTION /* schema */resume_queue(text, text) IS 'Resume a paused queue (and wake the runners that serve it).';

CREATE FUNCTION /* schema */limit_queue(queue text, concurrency integer DEFAULT NULL, rate integer DEFAULT NULL,
                                        per interval DEFAULT NULL, by text DEFAULT NULL)
RETURNS void
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
#variable_conflict use_column
BEGIN
    IF limit_queue.queue IS NULL OR limit_queue.queue = '' OR length(limit_queue.queue) > 128 THEN
        RAISE EXCEPTION 'pgqueue.limit_queue: queue must be a name of 1 to 128 characters' USING ERRCODE = '22023';
    END IF;
    IF limit_queue.concurrency IS NOT NULL AND limit_queue.concurrency < 1 THEN
        RAISE EXCEPTION 'pgqueue.limit_queue: concurrency must be at least 1 (NULL: no limit), not %',
            limit_queue.concurrency USING ERRCODE = '22023';
    END IF;
    IF (limit_queue.rate IS NULL) <> (limit_queue.per IS NULL) THEN
        RAISE EXCEPTION 'pgqueue.limit_queue: give rate and per together (e.g. rate => 100, per => interval ''1 minute'')'
            USING ERRCODE = '22023';
    END IF;
    IF limit_queue.rate < 1 OR limit_queue.per <= interval '0' THEN
        RAISE EXCEPTION 'pgqueue.limit_queue: rate must be at least 1 and per positive' USING ERRCODE = '22023';
    END IF;
    INSERT INTO /* schema */queues AS q (name, concurrency_limit, rate_limit, rate_period, updated_by)
    VALUES (limit_queue.queue, limit_queue.concurrency, limit_queue.rate, limit_queue.per, limit_queue.by)
    ON CONFLICT (name) DO UPDATE
    SET concurrency_limit = excluded.concurrency_limit, rate_limit = excluded.rate_limit,
        rate_period = excluded.rate_period, updated_at = now(), updated_by = excluded.updated_by;
    INSERT INTO /* schema */queue_events (queue, action, by, detail)
    VALUES (limit_queue.queue, 'limited', limit_queue.by,
            jsonb_build_object('concurrency', limit_queue.concurrency, 'rate', limit_queue.rate,
                               'per', limit_queue.per::text));
    PERFORM /* schema */wake(ARRAY[limit_queue.queue]);
END
$$;

COMMENT ON FUNCTION /* schema */limit_queue(text, integer, integer, interval, text) IS
    'Limit a queue cluster-wide: at most concurrency of its jobs running at once, at most rate starts per period (NULLs remove a limit). Exact over many runners: its claims are serialized.';

-- ---------------------------------------------------------------- claims under control
-- claim_guard(): called once by every claim. Holds the claim guard (shared, in memory, released
-- at commit) and returns the queues no plain claim may take from: paused, and limited ones
-- (claimed only through queue_allowance). A pause takes the guard exclusively, so a claim
-- either commits before the pause or sees it: this function is VOLATILE, so its query reads a
-- snapshot taken after the guard is held. Returns NULLs while a pause is being committed (the
-- claim takes nothing and the runner tries again at once).
CREATE FUNCTION /* schema */claim_guard(OUT paused text[], OUT limited text[])
LANGUAGE plpgsql VOLATILE AS $$
BEGIN
    IF NOT pg_try_advisory_xact_lock_shared(/* claim_class */, 0) THEN
        RETURN;
    END IF;
    SELECT coalesce(array_agg(q.name) FILTER (WHERE q.paused_at IS NOT NULL), '{}'),
           coalesce(array_agg(q.name) FILTER (WHERE q.paused_at IS NULL
                                              AND (q.concurrency_limit IS NOT NULL OR q.rate_limit IS NOT NULL)), '{}')
    INTO paused, limited
    FROM /* schema */queues AS q;
END
$$;

COMMENT ON FUNCTION /* schema */claim_guard() IS
    'Used by every claim: the paused and the limited queues, read after taking the claim guard (so no claim commits after a pause). NULLs while a pause commits.';

-- queue_allowance(queue, wanted): how many of this limited queue's jobs a claim may start now,
-- at most `wanted`. Claims of one limited queue are serialized by its advisory lock (held to
-- commit); the counts are read after it is granted (VOLATILE: a fresh snapshot), so they see
-- every claim committed before. The rate window keeps the `rate` latest start times.
CREATE FUNCTION /* schema */queue_allowance(p_queue text, p_wanted integer) RETURNS integer
LANGUAGE plpgsql VOLATILE AS $$
DECLARE
    v_q record;
    v_allowed integer := greatest(p_wanted, 0);
    v_running integer;
    v_recent integer;
BEGIN
    PERFORM pg_advisory_xact_lock(/* queue_class */, hashtext(p_queue));
    SELECT q.paused_at, q.concurrency_limit, q.rate_limit, q.rate_period, q.recent_starts INTO v_q
    FROM /* schema */queues AS q WHERE q.name = p_queue;
    IF NOT FOUND THEN
        RETURN v_allowed;  -- no longer limited
    END IF;
    IF v_q.paused_at IS NOT NULL THEN
        RETURN 0;
    END IF;
    IF v_q.concurrency_limit IS NOT NULL THEN
        SELECT count(*) INTO v_running FROM /* schema */jobs AS j
        WHERE j.status = 'running' AND j.queue = p_queue;
        v_allowed := least(v_allowed, greatest(v_q.concurrency_limit - v_running, 0));
    END IF;
    IF v_q.rate_limit IS NOT NULL THEN
        SELECT count(*) INTO v_recent FROM unnest(v_q.recent_starts) AS s(at) WHERE s.at > now() - v_q.rate_period;
        v_allowed := least(v_allowed, greatest(v_q.rate_limit - v_recent, 0));
    END IF;
    RETURN v_allowed;
END
$$;

COMMENT ON FUNCTION /* schema */queue_allowance(text, integer) IS
    'Used by claims of a limited queue: how many of its jobs may start now (at most the number wanted), under the queue''s claim lock, from its running jobs and its recent starts.';

-- record_starts(queue, n): a limited queue's claim started n jobs (in the same statement, under
-- the lock queue_allowance took): keep the `rate_limit` latest start times.
CREATE FUNCTION /* schema */record_starts(p_queue text, p_started integer) RETURNS integer
LANGUAGE sql VOLATILE AS $$
    UPDATE /* schema */queues AS q
    SET recent_starts = ARRAY(SELECT s.at
                              FROM (SELECT unnest(q.recent_starts) AS at
                                    UNION ALL
                                    SELECT now() FROM generate_series(1, p_started)) AS s
                              ORDER BY s.at DESC
                              LIMIT q.rate_limit)
    WHERE q.name = p_queue AND q.rate_limit IS NOT NULL AND p_started > 0
    RETURNING p_started
$$;

COMMENT ON FUNCTION /* schema */record_starts(text, integer) IS
    'Used by claims of a rate-limited queue: remember the start times of the jobs it just started (the rate_limit latest are kept).';

-- promote_locked(batch): jobs with a lock whose run_at has come are gated like a new enqueue:
-- they take a free slot (due) or wait for one (blocked). job_promote leaves them to this.
CREATE FUNCTION /* schema */promote_locked(p_batch integer) RETURNS integer
LANGUAGE plpgsql VOLATILE SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    v_job record;
    v_blocked boolean;
    v_promoted integer := 0;
BEGIN
    FOR v_job IN
        SELECT s.id, s.queue, s.lock_key, s.lock_limit FROM /* schema */jobs AS s
        WHERE s.status = 'queued' AND NOT s.due AND NOT s.blocked AND s.lock_key IS NOT NULL
          AND /* schema */due_soon(s.run_at)
        ORDER BY s.run_at
        LIMIT p_batch
        FOR UPDATE SKIP LOCKED
    LOOP
        PERFORM pg_advisory_xact_lock(/* lock_class */, hashtext(v_job.lock_key));
        v_blocked := /* schema */lock_must_wait(v_job.lock_key, v_job.lock_limit);
        UPDATE /* schema */jobs AS j SET due = NOT v_blocked, blocked = v_blocked
        WHERE j.id = v_job.id AND j.status = 'queued' AND NOT j.due AND NOT j.blocked;
        IF NOT v_blocked THEN
            PERFORM /* schema */wake(ARRAY[v_job.queue]);
        END IF;
        v_promoted := v_promoted + 1;
    END LOOP;
    RETURN v_promoted;
END
$$;

COMMENT ON FUNCTION /* schema */promote_locked(integer) IS
    'Used by the maintenance pass: jobs with a lock whose time has come take a free slot of their lock, or wait blocked for one; returns how many it looked at.';

-- release_stuck_waiters(): the backstop for a release that never ran (its connection was lost
-- between a job's end and the release): every lock with waiters and a free slot gets it. A
-- loose scan of jobs_lock_waiters_idx: the cost grows with the locks that have waiters.
CREATE FUNCTION /* schema */release_stuck_waiters() RETURNS integer
LANGUAGE sql VOLATILE SET search_path = pg_catalog, pg_temp AS $$
    WITH RECURSIVE keys AS (
        (SELECT j.lock_key FROM /* schema */jobs AS j
         WHERE j.status = 'queued' AND j.blocked ORDER BY j.lock_key LIMIT 1)
        UNION ALL
        SELECT (SELECT j.lock_key FROM /* schema */jobs AS j
                WHERE j.status = 'queued' AND j.blocked AND j.lock_key > k.lock_key
                ORDER BY j.lock_key LIMIT 1)
        FROM keys AS k WHERE k.lock_key IS NOT NULL
    )
    SELECT coalesce(/* schema */release_lock_slots(ARRAY(
        SELECT k.lock_key FROM keys AS k
        WHERE k.lock_key IS NOT NULL
          AND (SELECT count(*) FROM /* schema */jobs AS h
               WHERE h.lock_key = k.lock_key AND (h.status = 'running' OR (h.status = 'queued' AND h.due)))
              < (SELECT coalesce(w.lock_limit, 1) FROM /* schema */jobs AS w
                 WHERE w.lock_key = k.lock_key AND w.status = 'queued' AND w.blocked
                 ORDER BY w.priority DESC, w.id LIMIT 1))), 0)
$$;

COMMENT ON FUNCTION /* schema */release_stuck_waiters() IS
    'Used by the maintenance sweep: gives every lock that has waiters and a free slot to its first waiters (the backstop for a release lost with its connection); returns how many jobs it unblocked.';

-- ------------------------------------------------------------------ requeue_attempts
-- As in 0003, plus: a job that goes back to the queue while a queued job of its "queued"-scope
-- key exists is superseded by it (cancelled, with superseded_by and an event naming it), never
-- left running; a job that ends (failed, cancelled, superseded) frees its lock's slot.
CREATE OR REPLACE FUNCTION /* schema */requeue_attempts(
    p_job_ids bigint[], p_runner_ids bigint[], p_attempts integer[], p_reasons text[],
    p_kind text, p_max_crashes integer, p_skip_locked boolean
) RETURNS TABLE (job_id bigint, status text, queue text)
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    v_ids bigint[];
    v_runners bigint[];
    v_reasons text[];
    v_siblings bigint[];
    r_ids bigint[];
    r_statuses text[];
    r_queues text[];
    r_keys text[];
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
    -- A sibling that commits between the look and the update makes the update fail on the
    -- unique index: look again (it is visible then).
    FOR v_round IN 1..3 LOOP
        SELECT array_agg((SELECT s.id FROM /* schema */jobs AS s
                          WHERE j.key_scope = 'queued' AND s.scoped_key = j.scoped_key
                            AND s.key_scope = 'queued' AND s.status = 'queued'
                          LIMIT 1) ORDER BY j.id)
        INTO v_siblings
        FROM /* schema */jobs AS j WHERE j.id = ANY (v_ids);
        BEGIN
            WITH target AS (
                SELECT * FROM unnest(v_ids, v_runners, v_reasons, v_siblings) AS t(id, runner_id, reason, sibling)
            ), moved AS (
                UPDATE /* schema */jobs AS j
                SET status = CASE WHEN j.cancel_requested THEN 'cancelled'
                                  WHEN p_max_crashes IS NOT NULL AND j.crashes + 1 >= p_max_crashes THEN 'failed'
                                  WHEN t.sibling IS NOT NULL THEN 'cancelled'
                                  ELSE 'queued' END,
                    superseded_by = CASE WHEN NOT j.cancel_requested
                                              AND NOT (p_max_crashes IS NOT NULL AND j.crashes + 1 >= p_max_crashes)
                                         THEN t.sibling END,
                    crashes = j.crashes + (p_max_crashes IS NOT NULL)::int,
                    runner_id = NULL,
                    due = NOT j.cancel_requested AND NOT (p_max_crashes IS NOT NULL AND j.crashes + 1 >= p_max_crashes)
                          AND t.sibling IS NULL,
                    finished_at = CASE WHEN j.cancel_requested OR t.sibling IS NOT NULL
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
                RETURNING j.id, j.status, j.attempts, j.crashes, j.queue, j.started_at, j.lock_key,
                          j.superseded_by, t.runner_id, t.reason
            ), events AS (
                INSERT INTO /* schema */job_events
                    (job_id, from_status, to_status, attempt, runner_id, kind, reason, error)
                SELECT m.id, 'running', m.status, m.attempts, m.runner_id,
                       CASE WHEN m.superseded_by IS NOT NULL THEN 'superseded' ELSE p_kind END,
                       CASE WHEN m.superseded_by IS NOT NULL
                            THEN 'superseded by job ' || m.superseded_by || ', queued with the same key ('
                                 || CASE WHEN p_kind = 'crashed' THEN 'runner ' || m.runner_id
                                         || ' declared dead: ' ELSE '' END || m.reason || ')'
                            WHEN m.status = 'failed'
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
            SELECT array_agg(m.id ORDER BY m.id), array_agg(m.status ORDER BY m.id),
                   array_agg(m.queue ORDER BY m.id),
                   array_agg(DISTINCT m.lock_key) FILTER (WHERE m.lock_key IS NOT NULL AND m.status <> 'queued')
            INTO r_ids, r_statuses, r_queues, r_keys
            FROM moved AS m
            -- Reading notified and woken is what runs them.
            WHERE (SELECT count(*) FROM notified) >= 0 AND (SELECT n FROM woken) >= 0;
            EXIT;
        EXCEPTION WHEN unique_violation THEN
            IF v_round = 3 THEN
                RAISE;
            END IF;
        END;
    END LOOP;
    IF r_keys IS NOT NULL THEN
        PERFORM /* schema */release_lock_slots(r_keys);
    END IF;
    RETURN QUERY SELECT t.id, t.status, t.queue FROM unnest(r_ids, r_statuses, r_queues) AS t(id, status, queue);
END
$$;

COMMENT ON FUNCTION /* schema */requeue_attempts(bigint[], bigint[], integer[], text[], text, integer, boolean) IS
    'The one definition of running attempts going back to the queue (hand-back by a live runner, or crash re-queue by the reaper), fenced on (runner, attempt); a job whose "queued"-scope key another queued job holds is superseded by it (cancelled). Writes events, wakes runners, notifies waiters, frees lock slots.';

-- ------------------------------------------------------------------------ views
CREATE OR REPLACE VIEW /* schema */queue_stats AS
WITH live AS (
    SELECT j.queue, count(*) AS queued, 0::bigint AS scheduled, 0::bigint AS running,
           0::bigint AS blocked, min(j.run_at) AS oldest
    FROM /* schema */jobs AS j WHERE j.status = 'queued' AND j.due GROUP BY j.queue
    UNION ALL
    SELECT j.queue, count(*) FILTER (WHERE j.run_at <= now()),
           count(*) FILTER (WHERE j.run_at > now()), 0, 0,
           min(j.run_at) FILTER (WHERE j.run_at <= now())
    FROM /* schema */jobs AS j WHERE j.status = 'queued' AND NOT j.due AND NOT j.blocked GROUP BY j.queue
    UNION ALL
    SELECT j.queue, 0, 0, 0, count(*), NULL
    FROM /* schema */jobs AS j WHERE j.status = 'queued' AND j.blocked GROUP BY j.queue
    UNION ALL
    SELECT j.queue, 0, 0, count(*), 0, NULL
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
           sum(l.running)::bigint AS running, sum(l.blocked)::bigint AS blocked, min(l.oldest) AS oldest
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
       coalesce(d.crashed_last_hour, 0)::bigint AS crashed_last_hour,
       coalesce(p.blocked, 0)::bigint AS blocked,
       q.paused_at IS NOT NULL AS paused,
       q.concurrency_limit,
       q.rate_limit,
       q.rate_period
FROM per_queue AS p
FULL JOIN done AS d ON d.queue = p.queue
LEFT JOIN /* schema */queues AS q ON q.name = coalesce(p.queue, d.queue);

COMMENT ON VIEW /* schema */queue_stats IS
    'Per queue: queued (runnable now), scheduled (run_at in the future), running and blocked (waiting for a lock''s slot) jobs, from the partial indexes; how long the oldest runnable job has waited (the queue''s lag); jobs finished, from the throughput rollup (the last 24 hours, per minute and hour); and its controls (paused, limits).';

-- ---------------------------------------------------------------- privileges
-- The SQL API's functions run with their owner's rights (SECURITY DEFINER, with a fixed
-- search_path), so a role may enqueue or cancel without any right on the tables themselves.
-- So nobody may call them but their owner and the roles granted to (`pgqueue grant`).
REVOKE ALL ON FUNCTION /* schema */enqueue_job(text, jsonb, jsonb, text, integer, timestamptz, interval, integer, text, text, interval, text, interval, interval, text, integer, jsonb) FROM PUBLIC;
REVOKE ALL ON FUNCTION /* schema */enqueue(text, jsonb, jsonb, text, integer, timestamptz, interval, integer, text, text, interval, text, interval, interval, text, integer, jsonb) FROM PUBLIC;
REVOKE ALL ON FUNCTION /* schema */enqueue_many(text, jsonb, jsonb, text, integer, timestamptz, interval, integer, jsonb) FROM PUBLIC;
REVOKE ALL ON FUNCTION /* schema */cancel_jobs(bigint[], text) FROM PUBLIC;
REVOKE ALL ON FUNCTION /* schema */cancel(bigint, text) FROM PUBLIC;
REVOKE ALL ON FUNCTION /* schema */retry_jobs(bigint[], text, text[]) FROM PUBLIC;
REVOKE ALL ON FUNCTION /* schema */retry(bigint, text) FROM PUBLIC;
REVOKE ALL ON FUNCTION /* schema */pause_queue(text, text, text) FROM PUBLIC;
REVOKE ALL ON FUNCTION /* schema */resume_queue(text, text) FROM PUBLIC;
REVOKE ALL ON FUNCTION /* schema */limit_queue(text, integer, integer, interval, text) FROM PUBLIC;
