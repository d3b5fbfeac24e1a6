-- 0430_outages.sql
--
-- Outages of shared services are the fleet's problem, not the customer's (docs/operations.md
-- "Outages of shared services"):
--   * a graceful hand-back (jobs_release, jobs_release_claim) is recorded in the attempt log as
--     'released', without the previous attempt's error: the releasing function sets the
--     transaction-local flag stayler.releasing, which conversion_jobs_record_attempt() reads;
--   * a released attempt gets a cleanup marker (as a rescued one does): a hand-back during a storage
--     outage may leave a file the worker could not delete, and the clean duty removes it later;
--   * workers_renew(): a heartbeat clears stopped_at, so a worker the rescuer marked stopped while
--     it was frozen or cut off is listed live again as soon as it heartbeats (the registry, the
--     workers-alive gauge, the console and the 7-day prune read the truth), and records the shared
--     services the worker finds down (workers.services_down, shown by the console).

ALTER TABLE conversion_job_attempts DROP CONSTRAINT IF EXISTS conversion_job_attempts_outcome_check;
ALTER TABLE conversion_job_attempts ADD CONSTRAINT conversion_job_attempts_outcome_check
    CHECK (outcome IN ('completed', 'failed', 'cancelled', 'requeued', 'released'));

CREATE OR REPLACE FUNCTION conversion_jobs_record_attempt() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = public, pg_temp AS $$
DECLARE
    v_released boolean := NEW.status = 'queued' AND current_setting('stayler.releasing', true) = 'on';
BEGIN
    INSERT INTO conversion_job_attempts (job_id, attempt, worker_id, started_at, outcome, error_type, error_message)
    VALUES (OLD.id, OLD.attempt, OLD.worker_id, OLD.started_at,
            CASE WHEN v_released THEN 'released' WHEN NEW.status = 'queued' THEN 'requeued' ELSE NEW.status END,
            CASE WHEN NEW.status = 'completed' OR v_released THEN NULL ELSE NEW.error_type END,
            CASE WHEN NEW.status = 'completed' OR v_released THEN NULL ELSE NEW.error_message END)
    ON CONFLICT (job_id, attempt) DO NOTHING;
    RETURN NULL;
END;
$$;

-- Hand claimed jobs back without penalty (graceful shutdown, a shared service down): not counted
-- as a retry, available at once, logged as 'released'. Only claims still held under the given
-- attempts are released.
CREATE OR REPLACE FUNCTION jobs_release(p_job_ids uuid[], p_attempts integer[])
RETURNS TABLE (job_id uuid)
LANGUAGE plpgsql AS $$
BEGIN
    PERFORM set_config('stayler.releasing', 'on', true);
    RETURN QUERY
    WITH held AS (
        SELECT j.id, j.conversion_id FROM conversion_jobs j
          JOIN unnest(p_job_ids, p_attempts) AS x(id, attempt) ON x.id = j.id AND x.attempt = j.attempt
         WHERE j.status = 'processing'
         ORDER BY j.id
           FOR UPDATE OF j
    ), released AS (
        UPDATE conversion_jobs j SET status = 'queued', worker_id = NULL, heartbeat_at = NULL, run_after = now()
          FROM held WHERE j.id = held.id
        RETURNING j.id, j.conversion_id, j.attempt
    ), pending AS (
        UPDATE conversions c SET status = 'pending'
          FROM released WHERE c.id = released.conversion_id AND c.status = 'processing'
        RETURNING c.id
    ), marked AS (
        INSERT INTO storage_cleanup (conversion_id, attempt)
        SELECT released.conversion_id, released.attempt FROM released
        ON CONFLICT DO NOTHING
        RETURNING 1
    )
    SELECT released.id FROM released;
    PERFORM set_config('stayler.releasing', '', true);
END;
$$;

-- Hand back, without penalty, the jobs a claim took when the worker never received the claim's
-- reply (the connection dropped after the server committed). Returns the jobs released.
CREATE OR REPLACE FUNCTION jobs_release_claim(p_claim_token uuid)
RETURNS TABLE (job_id uuid)
LANGUAGE plpgsql AS $$
BEGIN
    PERFORM set_config('stayler.releasing', 'on', true);
    RETURN QUERY
    WITH held AS (
        SELECT j.id, j.conversion_id FROM conversion_jobs j
         WHERE j.claim_token = p_claim_token AND j.status = 'processing'
         ORDER BY j.id
           FOR UPDATE OF j
    ), released AS (
        UPDATE conversion_jobs j
           SET status = 'queued', worker_id = NULL, heartbeat_at = NULL, claim_token = NULL, run_after = now()
          FROM held WHERE j.id = held.id
        RETURNING j.id, j.conversion_id, j.attempt
    ), pending AS (
        UPDATE conversions c SET status = 'pending'
          FROM released WHERE c.id = released.conversion_id AND c.status = 'processing'
        RETURNING c.id
    ), marked AS (
        INSERT INTO storage_cleanup (conversion_id, attempt)
        SELECT released.conversion_id, released.attempt FROM released
        ON CONFLICT DO NOTHING
        RETURNING 1
    )
    SELECT released.id FROM released;
    PERFORM set_config('stayler.releasing', '', true);
END;
$$;

ALTER TABLE workers ADD COLUMN services_down TEXT;
COMMENT ON COLUMN workers.services_down IS
    'Addition: the shared services (database, storage, redis) this worker process found down at its last heartbeat; NULL when all are up.';

-- A worker's heartbeat: alive now, whatever the rescuer concluded while it was silent, and the
-- shared services it finds down. Returns false when the row is gone (pruned), so it registers again.
CREATE FUNCTION workers_renew(p_id text, p_services_down text DEFAULT NULL)
RETURNS boolean
LANGUAGE sql AS $$
    WITH renewed AS (
        UPDATE workers SET heartbeat_at = now(), stopped_at = NULL, services_down = p_services_down
         WHERE id = p_id RETURNING 1
    )
    SELECT count(*) > 0 FROM renewed;
$$;

GRANT EXECUTE ON FUNCTION workers_renew(text, text) TO stayler_worker;
