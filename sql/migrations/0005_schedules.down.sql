-- Reverts 0005_schedules: drops the schedules, their declarations and history, and the
-- functions and view over them. Jobs already enqueued by schedules stay.
DROP VIEW IF EXISTS /* schema */schedule_status;
DROP FUNCTION IF EXISTS /* schema */remove_schedule(text, text);
DROP FUNCTION IF EXISTS /* schema */trigger_schedule(text, text);
DROP FUNCTION IF EXISTS /* schema */resume_schedule(text, text);
DROP FUNCTION IF EXISTS /* schema */pause_schedule(text, text, text);
DROP FUNCTION IF EXISTS /* schema */schedule_set_paused(text, boolean, text, text);
DROP FUNCTION IF EXISTS /* schema */schedule_instant_text(timestamptz);
DROP FUNCTION IF EXISTS /* schema */schedule_declared(text);
DROP TABLE IF EXISTS /* schema */schedule_events;
DROP TABLE IF EXISTS /* schema */schedule_declarations;
DROP TABLE IF EXISTS /* schema */schedules;
