-- 0050_jobs_complete_set_based.sql
--
-- jobs_complete() with a set-based fast path. The 0030 version looped over the batch and called
-- update_conversion_status() once per job: about 0.7 ms of server time per conversion, the largest
-- PostgreSQL cost of a conversion (the claim is ~0.15 ms), measured with `stayler bench queue`
-- (docs/benchmarks.md). Same signature, same result rows, same fencing, same effects:
--
-- 1. Lock, in job id order, the jobs still 'processing' under the attempt the caller holds (the
--    fence); then lock their conversions (job first, then conversion: the order every queue
--    operation uses). Items that are not held return NULL, as before.
-- 2. Held jobs whose conversion is 'processing' (every normal completion) are completed with one
--    statement: the result image rows, the conversions (completed, result, processing time,
--    error_message cleared), the jobs (completed, completed_at) and one conversion_metrics row each,
--    with exactly the values update_conversion_status() writes for status 'completed'. The status
--    guard triggers still check every row.
-- 3. Anything else that is held (a conversion in an unexpected state) goes through the 0030 per-job
--    path, update_conversion_status() included, so its rules and errors apply unchanged.

CREATE OR REPLACE FUNCTION jobs_complete(p_items jsonb)
RETURNS TABLE (job_id uuid, result_image_id uuid)
LANGUAGE plpgsql AS $$
DECLARE
    item record;
    v_conversion conversions%ROWTYPE;
    v_image_id uuid;
    v_held uuid[];
    v_fast_jobs uuid[] := '{}';
    v_fast_images uuid[] := '{}';
BEGIN
    -- 1. the fence: lock the held jobs (job id order), then their conversions (conversion id order)
    SELECT coalesce(array_agg(h.id), '{}') INTO v_held FROM (
        SELECT j.id
          FROM conversion_jobs j
          JOIN jsonb_to_recordset(p_items) AS x(job_id uuid, attempt integer)
            ON x.job_id = j.id AND x.attempt = j.attempt
         WHERE j.status = 'processing'
         ORDER BY j.id
           FOR UPDATE OF j) AS h;
    IF cardinality(v_held) > 0 THEN
        PERFORM 1 FROM conversions c
          JOIN conversion_jobs j ON j.conversion_id = c.id
         WHERE j.id = ANY(v_held)
         ORDER BY c.id
           FOR UPDATE OF c;

        -- 2. the normal case, set-based
        WITH items AS (
            SELECT * FROM jsonb_to_recordset(p_items) AS x(
                job_id uuid, attempt integer, file_path text, file_name text, original_url text,
                thumbnail_url text, file_size bigint, mime_type text, width integer, height integer,
                processing_time_ms integer, ai_model_version text)
        ), fast AS MATERIALIZED (
            SELECT x.*, gen_random_uuid() AS image_id, c.id AS conversion_id, c.user_id, c.vendor_id,
                   c.conversion_type, c.user_image_id, c.cloth_image_id,
                   COALESCE(x.processing_time_ms, c.processing_time_ms,
                            GREATEST(0, (EXTRACT(EPOCH FROM clock_timestamp() - j.started_at) * 1000))::integer
                   ) AS time_ms
              FROM items x
              JOIN conversion_jobs j ON j.id = x.job_id
              JOIN conversions c ON c.id = j.conversion_id
             WHERE j.id = ANY(v_held) AND c.status = 'processing'
        ), new_images AS (
            INSERT INTO images (id, owner_id, owner_type, file_path, file_name, original_url, thumbnail_url,
                                file_size, mime_type, width, height, type, is_public, is_free, metadata)
            SELECT f.image_id, COALESCE(f.user_id, f.vendor_id),
                   CASE WHEN f.user_id IS NOT NULL THEN 'user' ELSE 'vendor' END,
                   f.file_path, f.file_name, f.original_url, f.thumbnail_url, f.file_size, f.mime_type,
                   f.width, f.height, 'result', false, f.conversion_type = 'free',
                   jsonb_build_object('conversion_id', f.conversion_id, 'attempt', f.attempt)
              FROM fast f
            RETURNING id
        ), done_conversions AS (
            UPDATE conversions c
               SET status = 'completed', result_image_id = f.image_id, processing_time_ms = f.time_ms,
                   error_message = NULL
              FROM fast f
             WHERE c.id = f.conversion_id
            RETURNING c.id
        ), done_jobs AS (
            UPDATE conversion_jobs j
               SET status = 'completed', completed_at = COALESCE(j.completed_at, now())
              FROM fast f
             WHERE j.id = f.job_id
            RETURNING j.id
        ), metrics AS (
            INSERT INTO conversion_metrics
                (conversion_id, user_id, vendor_id, processing_time_ms, input_file_size_bytes,
                 output_file_size_bytes, success, error_type, ai_model_version)
            SELECT f.conversion_id, f.user_id, f.vendor_id, COALESCE(f.time_ms, 0),
                   (SELECT SUM(i.file_size)::bigint FROM images i WHERE i.id IN (f.user_image_id, f.cloth_image_id)),
                   f.file_size, true, NULL, f.ai_model_version
              FROM fast f
            RETURNING conversion_id
        )
        SELECT coalesce(array_agg(f.job_id), '{}'), coalesce(array_agg(f.image_id), '{}')
          INTO v_fast_jobs, v_fast_images
          FROM fast f;
    END IF;

    -- 3. one row per item, in job id order; anything held but not done above takes the 0030 path
    FOR item IN
        SELECT x.*, done.image_id AS fast_image_id
          FROM jsonb_to_recordset(p_items) AS x(
               job_id uuid, attempt integer, file_path text, file_name text, original_url text,
               thumbnail_url text, file_size bigint, mime_type text, width integer, height integer,
               processing_time_ms integer, ai_model_version text)
          LEFT JOIN unnest(v_fast_jobs, v_fast_images) AS done(job_id, image_id) ON done.job_id = x.job_id
         ORDER BY x.job_id
    LOOP
        job_id := item.job_id;
        result_image_id := NULL;
        IF item.fast_image_id IS NOT NULL THEN
            result_image_id := item.fast_image_id;
            RETURN NEXT;
            CONTINUE;
        END IF;
        IF NOT (item.job_id = ANY(v_held)) THEN
            RETURN NEXT;  -- fenced out: the claim is no longer held
            CONTINUE;
        END IF;
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
            -- attempt: the claim's fence (update_conversion_status takes it from 0100 on).
            PERFORM update_conversion_status(
                conversion_id := v_conversion.id, status := 'completed', result_image_id := v_image_id,
                processing_time_ms := item.processing_time_ms, ai_model_version := item.ai_model_version,
                output_file_size_bytes := item.file_size, attempt := item.attempt);
            result_image_id := v_image_id;
        END IF;
        RETURN NEXT;
    END LOOP;
END;
$$;
