-- Reverts 0001_initial: drops every object it created (and all queue data with it).
DROP TRIGGER IF EXISTS jobs_wake_after_insert ON /* schema */jobs;
DROP FUNCTION IF EXISTS /* schema */jobs_after_insert();
DROP FUNCTION IF EXISTS /* schema */wake(text[]);
DROP FUNCTION IF EXISTS /* schema */due_soon(timestamptz);
DROP FUNCTION IF EXISTS /* schema */notify_finished(bigint[]);
DROP TABLE IF EXISTS /* schema */result_waiters;
DROP TABLE IF EXISTS /* schema */job_events;
DROP TABLE IF EXISTS /* schema */jobs;
DROP TABLE IF EXISTS /* schema */runners;
