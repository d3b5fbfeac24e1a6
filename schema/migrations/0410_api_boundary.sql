-- 0410_api_boundary.sql
--
-- Issue 19, the API's half:
--   * conversion_metadata_check(): metadata is a JSON object of at most 16 KiB (its text form) nesting
--     at most 32 levels; create_conversion() refuses anything else with SA031 metadata_too_large /
--     SA030 metadata_too_deep, so a plain-SQL producer cannot store what the API refuses
--     (STAYLER_API_MAX_METADATA_BYTES / _DEPTH may lower these bounds, never raise them);
--   * conversions.retry_of: the link from an operator's retry to the failed conversion it retries, a
--     column only operator_retry_conversion() writes (it was read from the customer's own metadata);
--   * operator_actions.outcome: every operator action writes its audit row with what really happened
--     (retried, already_retried, not_failed, cancelled, no_change, not_found, paused, resumed); the
--     operator functions no longer raise for a missing or unsuitable conversion (the raise would
--     roll the audit row back): they return NULL and say so in the audit row.

CREATE FUNCTION conversion_metadata_check(metadata JSONB) RETURNS VOID
LANGUAGE plpgsql IMMUTABLE
SET search_path = public, pg_temp
AS $$
DECLARE
    max_bytes CONSTANT INTEGER := 16384;
    max_depth CONSTANT INTEGER := 32;
    v_bytes INTEGER;
    v_depth INTEGER;
BEGIN
    IF conversion_metadata_check.metadata IS NULL THEN
        RETURN;
    END IF;
    IF jsonb_typeof(conversion_metadata_check.metadata) <> 'object' THEN
        RAISE EXCEPTION 'invalid_argument: metadata must be a JSON object' USING ERRCODE = 'SA005';
    END IF;
    -- The size first: it bounds the walk below.
    v_bytes := octet_length(conversion_metadata_check.metadata::text);
    IF v_bytes > max_bytes THEN
        RAISE EXCEPTION 'metadata_too_large: metadata is % bytes; at most % are allowed', v_bytes, max_bytes
            USING ERRCODE = 'SA031';
    END IF;
    WITH RECURSIVE walk(value, depth) AS (
        SELECT conversion_metadata_check.metadata, 1
        UNION ALL
        SELECT child.value, walk.depth + 1
          FROM walk,
               LATERAL (SELECT e.value FROM jsonb_each(CASE WHEN jsonb_typeof(walk.value) = 'object'
                                                           THEN walk.value ELSE '{}'::jsonb END) e
                        UNION ALL
                        SELECT a.value FROM jsonb_array_elements(CASE WHEN jsonb_typeof(walk.value) = 'array'
                                                                      THEN walk.value ELSE '[]'::jsonb END) a
                       ) child
         WHERE jsonb_typeof(child.value) IN ('object', 'array') AND walk.depth <= max_depth
    )
    SELECT max(walk.depth) INTO v_depth FROM walk;
    IF v_depth > max_depth THEN
        RAISE EXCEPTION 'metadata_too_deep: metadata nests more than % levels', max_depth
            USING ERRCODE = 'SA030';
    END IF;
END;
$$;
COMMENT ON FUNCTION conversion_metadata_check(JSONB) IS
    'Refuses metadata that is not an object (SA005), over 16 KiB as text (SA031) or nesting over 32 levels (SA030).';

ALTER TABLE conversions ADD COLUMN retry_of UUID;  -- no foreign key, like operator_actions: the link outlives an erased original
COMMENT ON COLUMN conversions.retry_of IS
    'Addition: the failed conversion an operator retried as this one (written only by operator_retry_conversion()).';
-- The link as the audit trail recorded it; a customer's metadata "retry_of" is theirs and means nothing.
UPDATE conversions c SET retry_of = a.conversion_id
  FROM operator_actions a
 WHERE a.action = 'retry' AND a.new_conversion_id = c.id AND c.retry_of IS NULL
   AND EXISTS (SELECT 1 FROM conversions o WHERE o.id = a.conversion_id);
DROP INDEX IF EXISTS idx_conversions_retry_of;
CREATE UNIQUE INDEX idx_conversions_retry_of ON conversions (retry_of) WHERE retry_of IS NOT NULL;

ALTER TABLE operator_actions ADD COLUMN outcome TEXT;
COMMENT ON COLUMN operator_actions.outcome IS
    'What the action did: retried, already_retried, not_failed, cancelled, no_change, not_found, paused, resumed.';

CREATE OR REPLACE FUNCTION create_conversion(user_id uuid DEFAULT NULL::uuid, vendor_id uuid DEFAULT NULL::uuid, user_image_id uuid DEFAULT NULL::uuid, cloth_image_id uuid DEFAULT NULL::uuid, conversion_type text DEFAULT 'free'::text, style_name text DEFAULT NULL::text, priority integer DEFAULT 0, max_retries integer DEFAULT 3, metadata jsonb DEFAULT '{}'::jsonb, idempotency_key text DEFAULT NULL::text)
 RETURNS uuid
 LANGUAGE plpgsql
 SECURITY DEFINER
 SET search_path TO 'public', 'pg_temp'
AS $function$
#variable_conflict use_column
DECLARE
    v_owner_id   UUID := COALESCE(create_conversion.user_id, create_conversion.vendor_id);
    v_owner_kind TEXT := CASE WHEN create_conversion.user_id IS NOT NULL THEN 'user' ELSE 'vendor' END;
    v_img        images%ROWTYPE;
    v_id         UUID;
    v_hash       TEXT;
    v_old_hash   TEXT;
BEGIN
    IF create_conversion.user_id IS NULL AND create_conversion.vendor_id IS NULL THEN
        RAISE EXCEPTION 'owner_required: one of user_id or vendor_id is required'
            USING ERRCODE = 'SA001';
    END IF;
    IF create_conversion.user_id IS NOT NULL AND create_conversion.vendor_id IS NOT NULL THEN
        RAISE EXCEPTION 'owner_ambiguous: give user_id or vendor_id, not both (user %, vendor %)',
                create_conversion.user_id, create_conversion.vendor_id
            USING ERRCODE = 'SA002';
    END IF;

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
    PERFORM conversion_metadata_check(create_conversion.metadata);

    IF v_owner_kind = 'user' THEN
        PERFORM 1 FROM users u WHERE u.id = v_owner_id;
    ELSE
        PERFORM 1 FROM vendors v WHERE v.id = v_owner_id;
    END IF;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'owner_not_found: % % does not exist', v_owner_kind, v_owner_id
            USING ERRCODE = 'SA003';
    END IF;

    -- Images first, then the idempotency key: a replay may not use an image the caller may not use.
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

    v_hash := conversion_request_hash(create_conversion.user_id, create_conversion.vendor_id,
                                      create_conversion.user_image_id, create_conversion.cloth_image_id,
                                      create_conversion.conversion_type, create_conversion.style_name,
                                      create_conversion.priority, create_conversion.max_retries,
                                      create_conversion.metadata);

    -- ON CONFLICT makes two concurrent calls with one key safe: the loser waits for the winner's
    -- commit, inserts nothing, and then compares its request with the winner's.
    INSERT INTO conversions AS c
        (user_id, vendor_id, user_image_id, cloth_image_id, conversion_type, style_name,
         metadata, idempotency_key, request_hash)
    VALUES
        (create_conversion.user_id, create_conversion.vendor_id, create_conversion.user_image_id,
         create_conversion.cloth_image_id, create_conversion.conversion_type, create_conversion.style_name,
         COALESCE(create_conversion.metadata, '{}'::jsonb), create_conversion.idempotency_key, v_hash)
    ON CONFLICT ((COALESCE(user_id, vendor_id)), idempotency_key) WHERE idempotency_key IS NOT NULL
    DO NOTHING
    RETURNING c.id INTO v_id;

    IF v_id IS NULL THEN
        SELECT c.id, c.request_hash INTO v_id, v_old_hash
          FROM conversions c
         WHERE COALESCE(c.user_id, c.vendor_id) = v_owner_id
           AND c.idempotency_key = create_conversion.idempotency_key;
        IF v_old_hash IS DISTINCT FROM v_hash THEN
            RAISE EXCEPTION 'idempotency_key_mismatch: idempotency key % was used for conversion % with another request',
                    create_conversion.idempotency_key, v_id
                USING ERRCODE = 'SA023',
                      HINT = 'a key names one request: use a new key for a different one';
        END IF;
        RETURN v_id;
    END IF;

    INSERT INTO conversion_jobs (conversion_id, priority, max_retries)
    VALUES (v_id, create_conversion.priority, create_conversion.max_retries);

    INSERT INTO image_usage_history (image_id, user_id, vendor_id, conversion_id, action)
    VALUES (create_conversion.user_image_id, create_conversion.user_id, create_conversion.vendor_id,
            v_id, 'use_in_conversion'),
           (create_conversion.cloth_image_id, create_conversion.user_id, create_conversion.vendor_id,
            v_id, 'use_in_conversion');

    RETURN v_id;
END;
$function$;

CREATE OR REPLACE FUNCTION operator_retry_conversion(conversion_id UUID, operator TEXT, reason TEXT)
RETURNS UUID
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = public, pg_temp
AS $$
DECLARE
    v_c conversions%ROWTYPE;
    v_job conversion_jobs%ROWTYPE;
    v_new UUID;
    v_outcome TEXT;
BEGIN
    IF operator_retry_conversion.conversion_id IS NULL THEN
        RAISE EXCEPTION 'argument_required: conversion_id is required' USING ERRCODE = 'SA004';
    END IF;
    IF length(btrim(COALESCE(operator_retry_conversion.operator, ''))) = 0
       OR length(btrim(COALESCE(operator_retry_conversion.reason, ''))) = 0 THEN
        RAISE EXCEPTION 'argument_required: an operator retry needs the operator''s name and a reason'
            USING ERRCODE = 'SA004';
    END IF;
    -- The row lock serialises two retries of one conversion: the second finds the first's.
    SELECT c.* INTO v_c FROM conversions c WHERE c.id = operator_retry_conversion.conversion_id FOR UPDATE;
    IF NOT FOUND THEN
        v_outcome := 'not_found';
    ELSIF v_c.status <> 'failed' THEN
        v_outcome := 'not_failed';
    ELSE
        SELECT c.id INTO v_new FROM conversions c WHERE c.retry_of = v_c.id;
        IF FOUND THEN
            v_outcome := 'already_retried';  -- the same answer again, nothing new
        ELSE
            SELECT j.* INTO v_job FROM conversion_jobs j WHERE j.conversion_id = v_c.id
             ORDER BY j.created_at DESC LIMIT 1;
            v_new := create_conversion(
                user_id := v_c.user_id, vendor_id := v_c.vendor_id,
                user_image_id := v_c.user_image_id, cloth_image_id := v_c.cloth_image_id,
                conversion_type := v_c.conversion_type, style_name := v_c.style_name,
                priority := COALESCE(v_job.priority, 0), max_retries := COALESCE(v_job.max_retries, 3),
                metadata := COALESCE(v_c.metadata, '{}'::jsonb));
            UPDATE conversions c SET retry_of = v_c.id WHERE c.id = v_new;
            v_outcome := 'retried';
        END IF;
    END IF;
    INSERT INTO operator_actions (operator, action, conversion_id, reason, status_before, status_after,
                                  new_conversion_id, outcome)
    VALUES (operator_retry_conversion.operator, 'retry', operator_retry_conversion.conversion_id,
            operator_retry_conversion.reason, v_c.status, v_c.status, v_new, v_outcome);
    RETURN CASE WHEN v_outcome IN ('retried', 'already_retried') THEN v_new END;
END;
$$;
COMMENT ON FUNCTION operator_retry_conversion(UUID, TEXT, TEXT) IS
    'Retry a failed conversion as a new one (same owner, images, style, priority, metadata; retry_of set), audited with its outcome; idempotent; NULL when nothing was retried.';

CREATE OR REPLACE FUNCTION operator_cancel_conversion(conversion_id UUID, operator TEXT, reason TEXT)
RETURNS TEXT
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = public, pg_temp
AS $$
#variable_conflict use_column
DECLARE
    v_before TEXT;
    v_after  TEXT;
BEGIN
    IF operator_cancel_conversion.conversion_id IS NULL THEN
        RAISE EXCEPTION 'argument_required: conversion_id is required' USING ERRCODE = 'SA004';
    END IF;
    IF length(btrim(COALESCE(operator_cancel_conversion.operator, ''))) = 0
       OR length(btrim(COALESCE(operator_cancel_conversion.reason, ''))) = 0 THEN
        RAISE EXCEPTION 'argument_required: an operator cancel needs the operator''s name and a reason'
            USING ERRCODE = 'SA004';
    END IF;
    SELECT c.status INTO v_before FROM conversions c WHERE c.id = operator_cancel_conversion.conversion_id;
    IF FOUND THEN
        v_after := conversion_cancel_locked(operator_cancel_conversion.conversion_id,
                                            format('cancelled by operator %s: %s', operator_cancel_conversion.operator,
                                                   operator_cancel_conversion.reason));
    END IF;
    INSERT INTO operator_actions (operator, action, conversion_id, reason, status_before, status_after, outcome)
    VALUES (operator_cancel_conversion.operator, 'cancel', operator_cancel_conversion.conversion_id,
            operator_cancel_conversion.reason, v_before, v_after,
            CASE WHEN v_before IS NULL THEN 'not_found' WHEN v_after = 'cancelled' AND v_before <> 'cancelled'
                 THEN 'cancelled' ELSE 'no_change' END);
    RETURN v_after;
END;
$$;
COMMENT ON FUNCTION operator_cancel_conversion(UUID, TEXT, TEXT) IS
    'Cancels anyone''s conversion as an operator, audited with its outcome; returns the status after the call (NULL: no such conversion).';

CREATE OR REPLACE FUNCTION operator_set_dispatch_paused(paused BOOLEAN, operator TEXT, reason TEXT)
RETURNS BOOLEAN
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = public, pg_temp
AS $$
DECLARE
    v_before BOOLEAN;
BEGIN
    IF operator_set_dispatch_paused.paused IS NULL THEN
        RAISE EXCEPTION 'argument_required: paused is required' USING ERRCODE = 'SA004';
    END IF;
    IF length(btrim(COALESCE(operator_set_dispatch_paused.operator, ''))) = 0
       OR length(btrim(COALESCE(operator_set_dispatch_paused.reason, ''))) = 0 THEN
        RAISE EXCEPTION 'argument_required: pausing or resuming dispatch needs the operator''s name and a reason'
            USING ERRCODE = 'SA004';
    END IF;
    SELECT f.dispatch_paused INTO v_before FROM fleet_controls f WHERE f.id FOR UPDATE;
    UPDATE fleet_controls f
       SET dispatch_paused = operator_set_dispatch_paused.paused, updated_at = now(),
           updated_by = operator_set_dispatch_paused.operator
     WHERE f.id;
    INSERT INTO operator_actions (operator, action, conversion_id, reason, status_before, status_after, outcome)
    VALUES (operator_set_dispatch_paused.operator,
            CASE WHEN operator_set_dispatch_paused.paused THEN 'pause_dispatch' ELSE 'resume_dispatch' END,
            NULL, operator_set_dispatch_paused.reason,
            CASE WHEN v_before THEN 'paused' ELSE 'running' END,
            CASE WHEN operator_set_dispatch_paused.paused THEN 'paused' ELSE 'running' END,
            CASE WHEN v_before IS NOT DISTINCT FROM operator_set_dispatch_paused.paused THEN 'no_change'
                 WHEN operator_set_dispatch_paused.paused THEN 'paused' ELSE 'resumed' END);
    RETURN operator_set_dispatch_paused.paused;
END;
$$;
COMMENT ON FUNCTION operator_set_dispatch_paused(BOOLEAN, TEXT, TEXT) IS
    'Pause (true) or resume (false) dispatch: the leader sends no claim messages and the claim takes nothing; audited with its outcome.';

REVOKE EXECUTE ON FUNCTION conversion_metadata_check(JSONB) FROM PUBLIC;
