-- The console overview's last-hour counts of retried and rescued attempts read
-- conversion_job_attempts by the time they ended: without this index that is a scan of the
-- whole attempt history (issue 23).
CREATE INDEX IF NOT EXISTS idx_conversion_job_attempts_ended_at ON conversion_job_attempts (ended_at);
