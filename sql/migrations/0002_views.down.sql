-- Reverts 0002_views.
DROP VIEW IF EXISTS /* schema */job_timeline;
DROP VIEW IF EXISTS /* schema */runner_health;
DROP VIEW IF EXISTS /* schema */queue_stats;
