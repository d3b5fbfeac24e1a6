-- 0025_functions.sql
--
-- The seed's five utility functions (create_conversion, update_conversion_status,
-- record_image_usage, get_conversion_stats, get_image_stats) with the seed's
-- parameter names, so the seed's own calls work as written.  They live after
-- 0020 because they use its columns (idempotency_key, run_after, attempt, …).
--
-- Every refusal raises a custom SQLSTATE of class 'SA' and a message that
-- starts with the refusal's name (e.g. "image_not_found: …"):
--   SA001 owner_required            neither user_id nor vendor_id given
--   SA002 owner_ambiguous           both user_id and vendor_id given
--   SA003 owner_not_found           the user / vendor row does not exist
--   SA004 argument_required         a required argument is NULL
--   SA005 invalid_argument          a value outside its allowed list or range
--   SA010 image_not_found           an image id that does not exist
--   SA011 image_wrong_type          an image of the wrong type (user/cloth/result)
--   SA012 image_not_accessible      an image the caller neither owns nor may use
--   SA020 conversion_not_found      a conversion id that does not exist
--   SA021 invalid_status_transition a status move the state machine forbids
--   SA022 result_image_required     status 'completed' without result_image_id
-- schema/errors.py maps these to Python exceptions.
--
-- PL/pgSQL parameter names equal column names (the seed's call syntax needs
-- them): every body uses "#variable_conflict use_column" and refers to
-- parameters as function_name.parameter, so nothing is ambiguous.

-- ---------------------------------------------------------------------------
-- create_conversion
-- ---------------------------------------------------------------------------
CREATE FUNCTION create_conversion(
    user_id UUID DEFAULT NULL,
    vendor_id UUID DEFAULT NULL,
    user_image_id UUID DEFAULT NULL,
    cloth_image_id UUID DEFAULT NULL,
    conversion_type TEXT DEFAULT 'free',
    style_name TEXT DEFAULT NULL,
    priority INTEGER DEFAULT 0,
    max_retries INTEGER DEFAULT 3,
    metadata JSONB DEFAULT '{}',
    idempotency_key TEXT DEFAULT NULL
) RETURNS UUID
LANGUAGE plpgsql AS $$
#variable_conflict use_column
DECLARE
    v_owner_id   UUID := COALESCE(create_conversion.user_id, create_conversion.vendor_id);
    v_owner_kind TEXT := CASE WHEN create_conversion.user_id IS NOT NULL THEN 'user' ELSE 'vendor' END;
    v_img        images%ROWTYPE;
    v_id         UUID;
BEGIN
    -- Owner: exactly one of user_id / vendor_id, and it exists.
    IF create_conversion.user_id IS NULL AND create_conversion.vendor_id IS NULL THEN
        RAISE EXCEPTION 'owner_required: one of user_id or vendor_id is required'
            USING ERRCODE = 'SA001';
    END IF;
    IF create_conversion.user_id IS NOT NULL AND create_conversion.vendor_id IS NOT NULL THEN
        RAISE EXCEPTION 'owner_ambiguous: give user_id or vendor_id, not both (user %, vendor %)',
                create_conversion.user_id, create_conversion.vendor_id
            USING ERRCODE = 'SA002';
    END IF;

    -- Arguments.
    IF create_conversion.conversion_type IS NULL
       OR create_conversion.conversion_type NOT IN ('free', 'paid') THEN
        RAISE EXCEPTION 'invalid_argument: conversion_type must be free or paid, got %',
                COALESCE(create_conversion.conversion_type, 'NULL')
            USING ERRCODE = 'SA005';
    END IF;
    IF create_conversion.priority IS NULL THEN
        RAISE EXCEPTION 'argument_required: priority is required' USING ERRCODE = 'SA004';
    END IF;
    IF create_conversion.max_retries IS NULL THEN
        RAISE EXCEPTION 'argument_required: max_retries is required' USING ERRCODE = 'SA004';
    END IF;
    IF create_conversion.max_retries < 0 THEN
        RAISE EXCEPTION 'invalid_argument: max_retries must be >= 0, got %', create_conversion.max_retries
            USING ERRCODE = 'SA005';
    END IF;

    IF v_owner_kind = 'user' THEN
        PERFORM 1 FROM users u WHERE u.id = v_owner_id;
    ELSE
        PERFORM 1 FROM vendors v WHERE v.id = v_owner_id;
    END IF;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'owner_not_found: % % does not exist', v_owner_kind, v_owner_id
            USING ERRCODE = 'SA003';
    END IF;

    -- Idempotency: a key this owner already used returns that conversion.
    IF create_conversion.idempotency_key IS NOT NULL THEN
        SELECT c.id INTO v_id
          FROM conversions c
         WHERE COALESCE(c.user_id, c.vendor_id) = v_owner_id
           AND c.idempotency_key = create_conversion.idempotency_key;
        IF FOUND THEN
            RETURN v_id;
        END IF;
    END IF;

    -- User image: exists, type 'user', belongs to the caller.
    IF create_conversion.user_image_id IS NULL THEN
        RAISE EXCEPTION 'argument_required: user_image_id is required' USING ERRCODE = 'SA004';
    END IF;
    IF create_conversion.cloth_image_id IS NULL THEN
        RAISE EXCEPTION 'argument_required: cloth_image_id is required' USING ERRCODE = 'SA004';
    END IF;

    SELECT i.* INTO v_img FROM images i WHERE i.id = create_conversion.user_image_id;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'image_not_found: user image % does not exist', create_conversion.user_image_id
            USING ERRCODE = 'SA010';
    END IF;
    IF v_img.type <> 'user' THEN
        RAISE EXCEPTION 'image_wrong_type: user image % has type %, expected user', v_img.id, v_img.type
            USING ERRCODE = 'SA011';
    END IF;
    IF v_img.owner_type <> v_owner_kind OR v_img.owner_id <> v_owner_id THEN
        RAISE EXCEPTION 'image_not_accessible: user image % does not belong to % %',
                v_img.id, v_owner_kind, v_owner_id
            USING ERRCODE = 'SA012';
    END IF;

    -- Cloth image: exists, type 'cloth', belongs to the caller or is public.
    SELECT i.* INTO v_img FROM images i WHERE i.id = create_conversion.cloth_image_id;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'image_not_found: cloth image % does not exist', create_conversion.cloth_image_id
            USING ERRCODE = 'SA010';
    END IF;
    IF v_img.type <> 'cloth' THEN
        RAISE EXCEPTION 'image_wrong_type: cloth image % has type %, expected cloth', v_img.id, v_img.type
            USING ERRCODE = 'SA011';
    END IF;
    IF NOT v_img.is_public AND (v_img.owner_type <> v_owner_kind OR v_img.owner_id <> v_owner_id) THEN
        RAISE EXCEPTION 'image_not_accessible: cloth image % is neither public nor owned by % %',
                v_img.id, v_owner_kind, v_owner_id
            USING ERRCODE = 'SA012';
    END IF;

    -- The conversion.  ON CONFLICT makes two concurrent calls with one key safe:
    -- the loser waits for the winner's commit, inserts nothing, and reads its id.
    INSERT INTO conversions AS c
        (user_id, vendor_id, user_image_id, cloth_image_id, conversion_type, style_name,
         metadata, idempotency_key)
    VALUES
        (create_conversion.user_id, create_conversion.vendor_id, create_conversion.user_image_id,
         create_conversion.cloth_image_id, create_conversion.conversion_type, create_conversion.style_name,
         COALESCE(create_conversion.metadata, '{}'::jsonb), create_conversion.idempotency_key)
    ON CONFLICT ((COALESCE(user_id, vendor_id)), idempotency_key) WHERE idempotency_key IS NOT NULL
    DO NOTHING
    RETURNING c.id INTO v_id;

    IF v_id IS NULL THEN
        SELECT c.id INTO v_id
          FROM conversions c
         WHERE COALESCE(c.user_id, c.vendor_id) = v_owner_id
           AND c.idempotency_key = create_conversion.idempotency_key;
        RETURN v_id;
    END IF;

    -- Its queued job.
    INSERT INTO conversion_jobs (conversion_id, priority, max_retries)
    VALUES (v_id, create_conversion.priority, create_conversion.max_retries);

    -- One usage row per input image.
    INSERT INTO image_usage_history (image_id, user_id, vendor_id, conversion_id, action)
    VALUES (create_conversion.user_image_id, create_conversion.user_id, create_conversion.vendor_id,
            v_id, 'use_in_conversion'),
           (create_conversion.cloth_image_id, create_conversion.user_id, create_conversion.vendor_id,
            v_id, 'use_in_conversion');

    RETURN v_id;
END;
$$;

COMMENT ON FUNCTION create_conversion(UUID, UUID, UUID, UUID, TEXT, TEXT, INTEGER, INTEGER, JSONB, TEXT) IS
    'Validates owner and images, then writes the pending conversion, its queued job and two use_in_conversion usage rows in one transaction; returns the conversion id (the existing one for a reused idempotency_key).';

-- ---------------------------------------------------------------------------
-- update_conversion_status
-- ---------------------------------------------------------------------------
CREATE FUNCTION update_conversion_status(
    conversion_id UUID,
    status TEXT,
    result_image_id UUID DEFAULT NULL,
    processing_time_ms INTEGER DEFAULT NULL,
    error_message TEXT DEFAULT NULL,
    error_type TEXT DEFAULT NULL,
    ai_model_version TEXT DEFAULT NULL,
    input_file_size_bytes BIGINT DEFAULT NULL,
    output_file_size_bytes BIGINT DEFAULT NULL
) RETURNS VOID
LANGUAGE plpgsql AS $$
#variable_conflict use_column
DECLARE
    v_status     TEXT := update_conversion_status.status;
    v_terminal   BOOLEAN := update_conversion_status.status IN ('completed', 'failed', 'cancelled');
    v_conv       conversions%ROWTYPE;
    v_job        conversion_jobs%ROWTYPE;
    v_result     images%ROWTYPE;
    v_job_target TEXT;
    v_time       INTEGER;
    v_input      BIGINT;
    v_error_type TEXT;
BEGIN
    IF update_conversion_status.conversion_id IS NULL THEN
        RAISE EXCEPTION 'argument_required: conversion_id is required' USING ERRCODE = 'SA004';
    END IF;
    IF v_status IS NULL THEN
        RAISE EXCEPTION 'argument_required: status is required' USING ERRCODE = 'SA004';
    END IF;
    IF v_status NOT IN ('pending', 'processing', 'completed', 'failed', 'cancelled') THEN
        RAISE EXCEPTION 'invalid_argument: unknown conversion status %', v_status
            USING ERRCODE = 'SA005';
    END IF;
    IF update_conversion_status.processing_time_ms < 0 THEN
        RAISE EXCEPTION 'invalid_argument: processing_time_ms must be >= 0, got %',
                update_conversion_status.processing_time_ms
            USING ERRCODE = 'SA005';
    END IF;

    -- Locks: job first, then conversion, the order every queue operation uses
    -- (0030_queue_operations.sql), so concurrent moves cannot deadlock.
    -- The job is the active one (at most one), else the most recent.
    SELECT j.* INTO v_job FROM conversion_jobs j
     WHERE j.conversion_id = update_conversion_status.conversion_id
     ORDER BY (j.status IN ('queued', 'processing')) DESC, j.created_at DESC
     LIMIT 1
       FOR UPDATE;
    SELECT c.* INTO v_conv FROM conversions c
     WHERE c.id = update_conversion_status.conversion_id
       FOR UPDATE;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'conversion_not_found: conversion % does not exist',
                update_conversion_status.conversion_id
            USING ERRCODE = 'SA020';
    END IF;

    -- The same terminal status again (a redelivered completion): no-op, unless
    -- it would give the conversion a second result.
    IF v_terminal AND v_conv.status = v_status THEN
        IF update_conversion_status.result_image_id IS NOT NULL
           AND update_conversion_status.result_image_id IS DISTINCT FROM v_conv.result_image_id THEN
            RAISE EXCEPTION 'invalid_status_transition: conversion % is already % with another result',
                    v_conv.id, v_conv.status
                USING ERRCODE = 'SA021';
        END IF;
        RETURN;
    END IF;

    IF v_conv.status <> v_status AND NOT (
           (v_conv.status = 'pending' AND v_status IN ('processing', 'failed', 'cancelled'))
        OR (v_conv.status = 'processing' AND v_status IN ('pending', 'completed', 'failed', 'cancelled'))
    ) THEN
        RAISE EXCEPTION 'invalid_status_transition: conversion % cannot move from % to %',
                v_conv.id, v_conv.status, v_status
            USING ERRCODE = 'SA021';
    END IF;

    IF v_status = 'completed' THEN
        IF update_conversion_status.result_image_id IS NULL THEN
            RAISE EXCEPTION 'result_image_required: conversion % cannot be completed without result_image_id',
                    v_conv.id
                USING ERRCODE = 'SA022';
        END IF;
        SELECT i.* INTO v_result FROM images i WHERE i.id = update_conversion_status.result_image_id;
        IF NOT FOUND THEN
            RAISE EXCEPTION 'image_not_found: result image % does not exist',
                    update_conversion_status.result_image_id
                USING ERRCODE = 'SA010';
        END IF;
        IF v_result.type <> 'result' THEN
            RAISE EXCEPTION 'image_wrong_type: result image % has type %, expected result',
                    v_result.id, v_result.type
                USING ERRCODE = 'SA011';
        END IF;
    ELSIF update_conversion_status.result_image_id IS NOT NULL THEN
        RAISE EXCEPTION 'invalid_argument: result_image_id is only accepted with status completed, got %',
                v_status
            USING ERRCODE = 'SA005';
    END IF;

    v_time := COALESCE(update_conversion_status.processing_time_ms, v_conv.processing_time_ms);
    IF v_time IS NULL AND v_terminal AND v_conv.status = 'processing' AND v_job.started_at IS NOT NULL THEN
        v_time := GREATEST(0, (EXTRACT(EPOCH FROM clock_timestamp() - v_job.started_at) * 1000))::INTEGER;
    END IF;

    UPDATE conversions c
       SET status = v_status,
           result_image_id = update_conversion_status.result_image_id,
           processing_time_ms = v_time,
           error_message = CASE WHEN v_status = 'completed'
                                THEN update_conversion_status.error_message
                                ELSE COALESCE(update_conversion_status.error_message, c.error_message) END
     WHERE c.id = v_conv.id;

    v_error_type := COALESCE(update_conversion_status.error_type,
                             CASE WHEN v_status = 'cancelled' THEN 'cancelled' END);

    -- Keep the job in step: pending <-> queued, processing <-> processing,
    -- terminal <-> the same terminal status.
    IF v_job.id IS NOT NULL THEN
        v_job_target := CASE WHEN v_status = 'pending' THEN 'queued' ELSE v_status END;
        IF v_job.status <> v_job_target AND v_job.status IN ('completed', 'failed', 'cancelled') THEN
            RAISE EXCEPTION 'invalid_status_transition: job % of conversion % is already %, cannot move to %',
                    v_job.id, v_conv.id, v_job.status, v_job_target
                USING ERRCODE = 'SA021';
        END IF;
        UPDATE conversion_jobs j
           SET status = v_job_target,
               worker_id = CASE WHEN v_job_target = 'queued' THEN NULL ELSE j.worker_id END,
               heartbeat_at = CASE
                                  WHEN v_job_target = 'queued' THEN NULL
                                  WHEN v_job_target = 'processing' AND j.status = 'queued' THEN now()
                                  ELSE j.heartbeat_at END,
               started_at = CASE WHEN v_job_target = 'processing' AND j.status = 'queued'
                                 THEN now() ELSE j.started_at END,
               attempt = CASE WHEN v_job_target = 'processing' AND j.status = 'queued'
                              THEN j.attempt + 1 ELSE j.attempt END,
               completed_at = CASE WHEN v_terminal THEN COALESCE(j.completed_at, now()) ELSE j.completed_at END,
               error_message = COALESCE(update_conversion_status.error_message, j.error_message),
               error_type = COALESCE(v_error_type, j.error_type)
         WHERE j.id = v_job.id
         RETURNING j.error_type INTO v_error_type;
    END IF;

    -- Terminal: exactly one metrics row (uq_conversion_metrics_conversion_id is the backstop).
    IF v_terminal THEN
        SELECT SUM(i.file_size)::BIGINT INTO v_input
          FROM images i
         WHERE i.id IN (v_conv.user_image_id, v_conv.cloth_image_id);
        INSERT INTO conversion_metrics
            (conversion_id, user_id, vendor_id, processing_time_ms, input_file_size_bytes,
             output_file_size_bytes, success, error_type, ai_model_version)
        VALUES
            (v_conv.id, v_conv.user_id, v_conv.vendor_id, COALESCE(v_time, 0),
             COALESCE(update_conversion_status.input_file_size_bytes, v_input),
             COALESCE(update_conversion_status.output_file_size_bytes, v_result.file_size),
             v_status = 'completed',
             CASE WHEN v_status = 'completed' THEN update_conversion_status.error_type ELSE v_error_type END,
             update_conversion_status.ai_model_version);
    END IF;
END;
$$;

COMMENT ON FUNCTION update_conversion_status(UUID, TEXT, UUID, INTEGER, TEXT, TEXT, TEXT, BIGINT, BIGINT) IS
    'Moves a conversion forward (pending -> processing -> completed|failed|cancelled, processing -> pending), keeps its job in step and writes the conversion_metrics row on a terminal status.';

-- ---------------------------------------------------------------------------
-- record_image_usage
-- ---------------------------------------------------------------------------
CREATE FUNCTION record_image_usage(
    image_id UUID,
    user_id UUID DEFAULT NULL,
    vendor_id UUID DEFAULT NULL,
    action TEXT DEFAULT 'view',
    ip_address INET DEFAULT NULL,
    user_agent TEXT DEFAULT NULL,
    conversion_id UUID DEFAULT NULL,
    session_id TEXT DEFAULT NULL,
    metadata JSONB DEFAULT '{}'
) RETURNS UUID
LANGUAGE plpgsql AS $$
#variable_conflict use_column
DECLARE
    v_id UUID;
BEGIN
    IF record_image_usage.image_id IS NULL THEN
        RAISE EXCEPTION 'argument_required: image_id is required' USING ERRCODE = 'SA004';
    END IF;
    IF record_image_usage.action IS NULL THEN
        RAISE EXCEPTION 'argument_required: action is required' USING ERRCODE = 'SA004';
    END IF;
    IF record_image_usage.action NOT IN
       ('upload', 'view', 'download', 'delete', 'update', 'share', 'convert', 'use_in_conversion') THEN
        RAISE EXCEPTION 'invalid_argument: unknown image usage action %', record_image_usage.action
            USING ERRCODE = 'SA005';
    END IF;
    PERFORM 1 FROM images i WHERE i.id = record_image_usage.image_id;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'image_not_found: image % does not exist', record_image_usage.image_id
            USING ERRCODE = 'SA010';
    END IF;
    IF record_image_usage.user_id IS NOT NULL THEN
        PERFORM 1 FROM users u WHERE u.id = record_image_usage.user_id;
        IF NOT FOUND THEN
            RAISE EXCEPTION 'owner_not_found: user % does not exist', record_image_usage.user_id
                USING ERRCODE = 'SA003';
        END IF;
    END IF;
    IF record_image_usage.vendor_id IS NOT NULL THEN
        PERFORM 1 FROM vendors v WHERE v.id = record_image_usage.vendor_id;
        IF NOT FOUND THEN
            RAISE EXCEPTION 'owner_not_found: vendor % does not exist', record_image_usage.vendor_id
                USING ERRCODE = 'SA003';
        END IF;
    END IF;
    IF record_image_usage.conversion_id IS NOT NULL THEN
        PERFORM 1 FROM conversions c WHERE c.id = record_image_usage.conversion_id;
        IF NOT FOUND THEN
            RAISE EXCEPTION 'conversion_not_found: conversion % does not exist', record_image_usage.conversion_id
                USING ERRCODE = 'SA020';
        END IF;
    END IF;

    INSERT INTO image_usage_history AS h
        (image_id, user_id, vendor_id, conversion_id, action, ip_address, user_agent, session_id, metadata)
    VALUES
        (record_image_usage.image_id, record_image_usage.user_id, record_image_usage.vendor_id,
         record_image_usage.conversion_id, record_image_usage.action, record_image_usage.ip_address,
         record_image_usage.user_agent, record_image_usage.session_id,
         COALESCE(record_image_usage.metadata, '{}'::jsonb))
    RETURNING h.id INTO v_id;
    RETURN v_id;
END;
$$;

COMMENT ON FUNCTION record_image_usage(UUID, UUID, UUID, TEXT, INET, TEXT, UUID, TEXT, JSONB) IS
    'Validates and writes one image_usage_history row; returns its id.';

-- ---------------------------------------------------------------------------
-- get_conversion_stats
-- ---------------------------------------------------------------------------
-- Filters: owner (user and/or vendor, NULL = any) and the half-open creation
-- window p_date_from <= created_at < p_date_to (NULL = unbounded).  Pass the
-- day after the last day you want: January 2025 is '2025-01-01' .. '2025-02-01'.
-- LANGUAGE sql + STABLE + a single SELECT: the planner inlines the call, folds
-- the NULL tests of constant or bound owner arguments away and uses the covering
-- indexes.  The window is written as a range over COALESCE(…, ±infinity), so it
-- stays an index range whatever the arguments are (now() - interval '1 day', …).
CREATE FUNCTION get_conversion_stats(
    p_user_id UUID DEFAULT NULL,
    p_vendor_id UUID DEFAULT NULL,
    p_date_from TIMESTAMPTZ DEFAULT NULL,
    p_date_to TIMESTAMPTZ DEFAULT NULL
) RETURNS TABLE (
    total_count BIGINT,
    pending_count BIGINT,
    processing_count BIGINT,
    completed_count BIGINT,
    failed_count BIGINT,
    cancelled_count BIGINT,
    success_rate NUMERIC,
    avg_processing_time_ms NUMERIC,
    p95_processing_time_ms DOUBLE PRECISION
)
LANGUAGE sql STABLE AS $$
    SELECT count(*),
           count(*) FILTER (WHERE c.status = 'pending'),
           count(*) FILTER (WHERE c.status = 'processing'),
           count(*) FILTER (WHERE c.status = 'completed'),
           count(*) FILTER (WHERE c.status = 'failed'),
           count(*) FILTER (WHERE c.status = 'cancelled'),
           round(count(*) FILTER (WHERE c.status = 'completed')::numeric
                 / NULLIF(count(*) FILTER (WHERE c.status IN ('completed', 'failed')), 0), 4),
           round(avg(c.processing_time_ms) FILTER (WHERE c.status = 'completed'), 2),
           percentile_cont(0.95) WITHIN GROUP (ORDER BY c.processing_time_ms)
               FILTER (WHERE c.status = 'completed')
      FROM conversions c
     WHERE (p_user_id IS NULL OR c.user_id = p_user_id)
       AND (p_vendor_id IS NULL OR c.vendor_id = p_vendor_id)
       AND c.created_at >= COALESCE(p_date_from, '-infinity'::timestamptz)
       AND c.created_at < COALESCE(p_date_to, 'infinity'::timestamptz)
$$;

COMMENT ON FUNCTION get_conversion_stats(UUID, UUID, TIMESTAMPTZ, TIMESTAMPTZ) IS
    'One row: counts per status, success_rate = completed / (completed + failed), avg and p95 processing_time_ms of completed conversions, over p_date_from <= created_at < p_date_to.';

-- ---------------------------------------------------------------------------
-- get_image_stats
-- ---------------------------------------------------------------------------
CREATE FUNCTION get_image_stats(
    p_owner_id UUID DEFAULT NULL,
    p_owner_type TEXT DEFAULT NULL,
    p_image_type TEXT DEFAULT NULL
) RETURNS TABLE (
    total_images BIGINT,
    total_bytes BIGINT,
    user_images BIGINT,
    cloth_images BIGINT,
    result_images BIGINT,
    user_bytes BIGINT,
    cloth_bytes BIGINT,
    result_bytes BIGINT,
    public_images BIGINT,
    private_images BIGINT,
    public_bytes BIGINT,
    private_bytes BIGINT,
    usage_total BIGINT,
    usage_upload BIGINT,
    usage_view BIGINT,
    usage_download BIGINT,
    usage_delete BIGINT,
    usage_update BIGINT,
    usage_share BIGINT,
    usage_convert BIGINT,
    usage_use_in_conversion BIGINT
)
LANGUAGE sql STABLE AS $$
    WITH img AS (
        SELECT i.id, i.type, i.is_public, i.file_size
          FROM images i
         WHERE (p_owner_id IS NULL OR i.owner_id = p_owner_id)
           AND (p_owner_type IS NULL OR i.owner_type = p_owner_type)
           AND (p_image_type IS NULL OR i.type = p_image_type)
    ), by_image AS (
        SELECT count(*) AS n,
               COALESCE(sum(img.file_size), 0)::bigint AS bytes,
               count(*) FILTER (WHERE img.type = 'user') AS n_user,
               count(*) FILTER (WHERE img.type = 'cloth') AS n_cloth,
               count(*) FILTER (WHERE img.type = 'result') AS n_result,
               COALESCE(sum(img.file_size) FILTER (WHERE img.type = 'user'), 0)::bigint AS b_user,
               COALESCE(sum(img.file_size) FILTER (WHERE img.type = 'cloth'), 0)::bigint AS b_cloth,
               COALESCE(sum(img.file_size) FILTER (WHERE img.type = 'result'), 0)::bigint AS b_result,
               count(*) FILTER (WHERE img.is_public) AS n_public,
               count(*) FILTER (WHERE NOT img.is_public) AS n_private,
               COALESCE(sum(img.file_size) FILTER (WHERE img.is_public), 0)::bigint AS b_public,
               COALESCE(sum(img.file_size) FILTER (WHERE NOT img.is_public), 0)::bigint AS b_private
          FROM img
    ), by_action AS (
        SELECT count(*) AS n,
               count(*) FILTER (WHERE h.action = 'upload') AS n_upload,
               count(*) FILTER (WHERE h.action = 'view') AS n_view,
               count(*) FILTER (WHERE h.action = 'download') AS n_download,
               count(*) FILTER (WHERE h.action = 'delete') AS n_delete,
               count(*) FILTER (WHERE h.action = 'update') AS n_update,
               count(*) FILTER (WHERE h.action = 'share') AS n_share,
               count(*) FILTER (WHERE h.action = 'convert') AS n_convert,
               count(*) FILTER (WHERE h.action = 'use_in_conversion') AS n_use_in_conversion
          FROM image_usage_history h
         WHERE h.image_id IN (SELECT img.id FROM img)
    )
    SELECT b.n, b.bytes, b.n_user, b.n_cloth, b.n_result, b.b_user, b.b_cloth, b.b_result,
           b.n_public, b.n_private, b.b_public, b.b_private,
           a.n, a.n_upload, a.n_view, a.n_download, a.n_delete, a.n_update, a.n_share,
           a.n_convert, a.n_use_in_conversion
      FROM by_image b CROSS JOIN by_action a
$$;

COMMENT ON FUNCTION get_image_stats(UUID, TEXT, TEXT) IS
    'One row: image counts and bytes in total, by type and by visibility, and usage-history counts by action, for the images matching the filters (NULL = any).';
