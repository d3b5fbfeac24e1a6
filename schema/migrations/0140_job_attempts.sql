-- 0140_job_attempts.sql
--
-- Every attempt of a job, kept. A conversion_jobs row is updated in place (claim, retry, rescue,
-- release, completion), so it only ever shows its latest attempt; operators asked for each one: who
-- ran it, when it started and ended, and how it ended. A trigger records an attempt when its job
-- leaves 'processing', in the same transaction, whoever moves it (the queue functions, plain SQL).
-- Rows go with their job (ON DELETE CASCADE), so the retention of finished jobs bounds them too.

CREATE TABLE conversion_job_attempts (
    job_id UUID NOT NULL REFERENCES conversion_jobs(id) ON DELETE CASCADE,
    attempt INTEGER NOT NULL CHECK (attempt >= 1),
    worker_id TEXT,
    started_at TIMESTAMPTZ,
    ended_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    outcome TEXT NOT NULL CHECK (outcome IN ('completed', 'failed', 'cancelled', 'requeued')),
    error_type TEXT,
    error_message TEXT,
    PRIMARY KEY (job_id, attempt)
);

COMMENT ON TABLE conversion_job_attempts IS
    'Addition: one row per ended attempt of a job (worker, start, end, outcome, error); written by trg_conversion_jobs_attempt_ended.';

-- SECURITY DEFINER: the worker role needs no privilege on the history to move its jobs.
CREATE FUNCTION conversion_jobs_record_attempt() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = public, pg_temp AS $$
BEGIN
    INSERT INTO conversion_job_attempts (job_id, attempt, worker_id, started_at, outcome, error_type, error_message)
    VALUES (OLD.id, OLD.attempt, OLD.worker_id, OLD.started_at,
            CASE WHEN NEW.status = 'queued' THEN 'requeued' ELSE NEW.status END,
            CASE WHEN NEW.status = 'completed' THEN NULL ELSE NEW.error_type END,
            CASE WHEN NEW.status = 'completed' THEN NULL ELSE NEW.error_message END)
    ON CONFLICT (job_id, attempt) DO NOTHING;
    RETURN NULL;
END;
$$;

REVOKE ALL ON FUNCTION conversion_jobs_record_attempt() FROM PUBLIC;

CREATE TRIGGER trg_conversion_jobs_attempt_ended
    AFTER UPDATE OF status ON conversion_jobs
    FOR EACH ROW
    WHEN (OLD.status = 'processing' AND NEW.status <> 'processing' AND OLD.attempt >= 1)
    EXECUTE FUNCTION conversion_jobs_record_attempt();

REVOKE ALL ON conversion_job_attempts FROM PUBLIC;
GRANT SELECT ON conversion_job_attempts TO stayler_operator_ro, stayler_admin;
