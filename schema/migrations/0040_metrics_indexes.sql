-- 0040_metrics_indexes.sql
--
-- Addition (the seed is silent): the index behind the fleet's queue gauges (dispatcher/gauges.py,
-- queries queue_stats and jobs_cancelled_between). "Failed in the last hour" and "cancelled since
-- the last refresh" read only failed and cancelled jobs by completion time, instead of every
-- finished job of the window (idx_conversion_jobs_finished also holds the completed ones, which at
-- high throughput are most of the table). The other gauges use idx_conversion_jobs_claim,
-- conversion_jobs_run_after_queued_idx and idx_conversion_jobs_rescue.

CREATE INDEX IF NOT EXISTS idx_conversion_jobs_failed_cancelled ON conversion_jobs (completed_at)
    WHERE status IN ('failed', 'cancelled');
