-- Job-queue operations: the state machine's moves as functions, so every worker (in any
-- language) finalises jobs the same way. Every move is fenced on the claim: it applies only to a
-- job that is still 'processing' under the attempt the caller holds, and returns NULL/no row
-- otherwise (a late or duplicate completion changes nothing). Locks are taken job first, then
-- conversion, on every path (claim, complete, retry, rescue, release, cancel).

-- Serves the dispatcher's timer: the earliest run_after among queued jobs waiting for backoff.
CREATE INDEX IF NOT EXISTS conversion_jobs_run_after_queued_idx
    ON conversion_jobs (run_after) WHERE status = 'queued';

-- Exponential backoff with "equal jitter": half fixed, half random, capped.
CREATE OR REPLACE FUNCTION job_backoff(p_retry_count integer, p_base_s double precision, p_max_s double precision)
RETURNS interval
LANGUAGE sql VOLATILE AS $$
    SELECT make_interval(secs => LEAST(p_max_s, p_base_s * power(2, p_retry_count)) * (0.5 + random() * 0.5));
$$;

-- Complete a batch of claimed jobs in one call. p_items is a JSON array of objects with keys:
-- job_id, attempt, file_path, file_name, original_url, thumbnail_url, file_size, mime_type, width,
-- height, processing_time_ms, ai_model_version. Returns one row per item: the result image id, or
-- NULL when the claim is no longer held (cancelled, rescued, already completed).
CREATE OR REPLACE FUNCTION jobs_complete(p_items jsonb)
RETURNS TABLE (job_id uuid, result_image_id uuid)
LANGUAGE plpgsql AS $$
DECLARE
    item record;
    v_conversion conversions%ROWTYPE;
    v_image_id uuid;
BEGIN
    FOR item IN
        SELECT * FROM jsonb_to_recordset(p_items) AS x(
            job_id uuid, attempt integer, file_path text, file_name text, original_url text,
            thumbnail_url text, file_size bigint, mime_type text, width integer, height integer,
            processing_time_ms integer, ai_model_version text)
        ORDER BY x.job_id
    LOOP
        job_id := item.job_id;
        result_image_id := NULL;
        SELECT c.* INTO v_conversion
          FROM conversion_jobs j JOIN conversions c ON c.id = j.conversion_id
         WHERE j.id = item.job_id AND j.status = 'processing' AND j.attempt = item.attempt
           FOR UPDATE OF j;
        IF FOUND THEN
            INSERT INTO images (owner_id, owner_type, file_path, file_name, original_url, thumbnail_url,
                                file_size, mime_type, width, height, type, is_public, is_free, metadata)
            VALUES (COALESCE(v_conversion.user_id, v_conversion.vendor_id),
                    CASE WHEN v_conversion.user_id IS NOT NULL THEN 'user' ELSE 'vendor' END,
                    item.file_path, item.file_name, item.original_url, item.thumbnail_url,
                    item.file_size, item.mime_type, item.width, item.height, 'result', false,
                    v_conversion.conversion_type = 'free',
                    jsonb_build_object('conversion_id', v_conversion.id, 'attempt', item.attempt))
            RETURNING id INTO v_image_id;
            PERFORM update_conversion_status(
                conversion_id := v_conversion.id, status := 'completed', result_image_id := v_image_id,
                processing_time_ms := item.processing_time_ms, ai_model_version := item.ai_model_version,
                output_file_size_bytes := item.file_size);
            result_image_id := v_image_id;
        END IF;
        RETURN NEXT;
    END LOOP;
END;
$$;

-- Record a failed attempt. Transient errors go back to 'queued' with backoff while retry_count <
-- max_retries; anything else ends 'failed' with its metrics row. Returns the job's new status, or
-- NULL when the claim is no longer held.
CREATE OR REPLACE FUNCTION job_fail(
    p_job_id uuid, p_attempt integer, p_error_type text, p_error_message text, p_transient boolean,
    p_backoff_base_s double precision DEFAULT 1, p_backoff_max_s double precision DEFAULT 300,
    p_processing_time_ms integer DEFAULT NULL, p_ai_model_version text DEFAULT NULL)
RETURNS text
LANGUAGE plpgsql AS $$
DECLARE
    v_job conversion_jobs%ROWTYPE;
BEGIN
    SELECT * INTO v_job FROM conversion_jobs
     WHERE id = p_job_id AND status = 'processing' AND attempt = p_attempt
       FOR UPDATE;
    IF NOT FOUND THEN
        RETURN NULL;
    END IF;
    IF p_transient AND v_job.retry_count < v_job.max_retries THEN
        UPDATE conversion_jobs
           SET status = 'queued', retry_count = retry_count + 1,
               run_after = now() + job_backoff(v_job.retry_count, p_backoff_base_s, p_backoff_max_s),
               error_message = p_error_message, error_type = p_error_type,
               worker_id = NULL, heartbeat_at = NULL
         WHERE id = p_job_id;
        UPDATE conversions SET status = 'pending', error_message = p_error_message
         WHERE id = v_job.conversion_id AND status = 'processing';
        RETURN 'queued';
    END IF;
    PERFORM update_conversion_status(
        conversion_id := v_job.conversion_id, status := 'failed',
        processing_time_ms := p_processing_time_ms, error_message := p_error_message,
        error_type := p_error_type, ai_model_version := p_ai_model_version);
    RETURN 'failed';
END;
$$;

-- Put back the jobs of workers whose heartbeat is older than p_stale_after_s. A rescue counts as an
-- attempt: past max_retries the job fails with error_type 'worker_lost', so a job that kills its
-- worker every time cannot loop. Returns what was rescued (the attempt is the one that was lost).
CREATE OR REPLACE FUNCTION jobs_rescue(
    p_stale_after_s double precision, p_backoff_base_s double precision DEFAULT 1,
    p_backoff_max_s double precision DEFAULT 300, p_limit integer DEFAULT 1000)
RETURNS TABLE (job_id uuid, conversion_id uuid, attempt integer, new_status text)
LANGUAGE plpgsql AS $$
DECLARE
    v_job conversion_jobs%ROWTYPE;
    v_message text;
BEGIN
    FOR v_job IN
        SELECT * FROM conversion_jobs j
         WHERE j.status = 'processing'
           AND COALESCE(j.heartbeat_at, j.started_at, j.updated_at) < now() - make_interval(secs => p_stale_after_s)
         ORDER BY j.heartbeat_at
         LIMIT p_limit
           FOR UPDATE SKIP LOCKED
    LOOP
        job_id := v_job.id;
        conversion_id := v_job.conversion_id;
        attempt := v_job.attempt;
        v_message := format('worker %s stopped sending heartbeats during attempt %s', v_job.worker_id, v_job.attempt);
        IF v_job.retry_count < v_job.max_retries THEN
            UPDATE conversion_jobs
               SET status = 'queued', retry_count = retry_count + 1,
                   run_after = now() + job_backoff(v_job.retry_count, p_backoff_base_s, p_backoff_max_s),
                   error_message = v_message, error_type = 'worker_lost', worker_id = NULL, heartbeat_at = NULL
             WHERE id = v_job.id;
            UPDATE conversions SET status = 'pending', error_message = v_message
             WHERE id = v_job.conversion_id AND status = 'processing';
            new_status := 'queued';
        ELSE
            PERFORM update_conversion_status(
                conversion_id := v_job.conversion_id, status := 'failed',
                error_message := v_message, error_type := 'worker_lost');
            new_status := 'failed';
        END IF;
        RETURN NEXT;
    END LOOP;
END;
$$;

-- Hand claimed jobs back without penalty (graceful shutdown): not counted as a retry, available at
-- once. Only claims still held under the given attempts are released.
CREATE OR REPLACE FUNCTION jobs_release(p_job_ids uuid[], p_attempts integer[])
RETURNS TABLE (job_id uuid)
LANGUAGE plpgsql AS $$
BEGIN
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
        RETURNING j.id, j.conversion_id
    ), pending AS (
        UPDATE conversions c SET status = 'pending'
          FROM released WHERE c.id = released.conversion_id AND c.status = 'processing'
        RETURNING c.id
    )
    SELECT released.id FROM released;
END;
$$;

-- Cancel a conversion on behalf of its owner. A queued job is cancelled at once; a running one is
-- cancelled in the database, so its worker's fenced completion finds nothing to complete and the
-- result is never written. Returns the conversion's status after the call.
CREATE OR REPLACE FUNCTION cancel_conversion(p_conversion_id uuid)
RETURNS text
LANGUAGE plpgsql AS $$
DECLARE
    v_status text;
BEGIN
    -- Job first, then conversion: the lock order every queue operation uses.
    PERFORM 1 FROM conversion_jobs j
     WHERE j.conversion_id = p_conversion_id AND j.status IN ('queued', 'processing')
       FOR UPDATE;
    SELECT c.status INTO v_status FROM conversions c WHERE c.id = p_conversion_id FOR UPDATE;
    IF NOT FOUND THEN
        RETURN NULL;
    END IF;
    IF v_status IN ('pending', 'processing') THEN
        PERFORM update_conversion_status(conversion_id := p_conversion_id, status := 'cancelled',
                                         error_message := 'cancelled on request');
        RETURN 'cancelled';
    END IF;
    RETURN v_status;
END;
$$;
