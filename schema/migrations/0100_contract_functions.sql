-- 0100_contract_functions.sql
--
-- The rules the README promises to every caller, plain SQL included (schema/README.md, "The SQL
-- contract"):
--   * update_conversion_status(): the result image must belong to the conversion's owner and to that
--     conversion; a job claimed by a worker is completed or requeued only with the current attempt
--     (new parameter `attempt`, SA025); a requeue counts as a retry;
--   * create_conversion(): the request is hashed; the same idempotency key with another payload is
--     refused (SA023) and a replay re-checks image access;
--   * cancel_conversion(conversion_id, user_id, vendor_id): only the owner (SA024);
--     operator_cancel_conversion(conversion_id, operator, reason): the audited operator path;
--   * register_image(): images registered under the key the system derives from the row id;
--     images.file_path unique; a key never points into another owner's space (SA026).
--
-- New SQLSTATEs: SA023 idempotency_key_mismatch, SA024 not_owner, SA025 attempt_not_held,
-- SA026 invalid_storage_key.

-- ---------------------------------------------------------------------------
-- Idempotency: a hash of the request
-- ---------------------------------------------------------------------------

ALTER TABLE conversions ADD COLUMN request_hash TEXT;

COMMENT ON COLUMN conversions.request_hash IS
    'SHA-256 (hex) of the create_conversion() request that created the row (conversion_request_hash()); a replay of its idempotency_key must carry the same hash.';

-- The canonical form is a JSON array (jsonb's text form is deterministic; metadata keys come out
-- sorted), so equal requests hash equal whatever the key order of their metadata.
CREATE FUNCTION conversion_request_hash(
    user_id UUID, vendor_id UUID, user_image_id UUID, cloth_image_id UUID, conversion_type TEXT,
    style_name TEXT, priority INTEGER, max_retries INTEGER, metadata JSONB
) RETURNS TEXT
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT encode(sha256(convert_to(jsonb_build_array(
        $1, $2, $3, $4, $5, $6, $7, $8, COALESCE($9, '{}'::jsonb))::text, 'UTF8')), 'hex')
$$;

COMMENT ON FUNCTION conversion_request_hash(UUID, UUID, UUID, UUID, TEXT, TEXT, INTEGER, INTEGER, JSONB) IS
    'SHA-256 (hex) of a create_conversion() request: owner, images, type, style, priority, max_retries, metadata.';

UPDATE conversions c
   SET request_hash = conversion_request_hash(c.user_id, c.vendor_id, c.user_image_id, c.cloth_image_id,
                                              c.conversion_type, c.style_name, j.priority, j.max_retries,
                                              c.metadata)
  FROM (SELECT DISTINCT ON (conversion_id) conversion_id, priority, max_retries
          FROM conversion_jobs ORDER BY conversion_id, created_at) AS j
 WHERE j.conversion_id = c.id AND c.idempotency_key IS NOT NULL;

-- ---------------------------------------------------------------------------
-- Storage keys
-- ---------------------------------------------------------------------------

-- The key of an uploaded image, exactly as storage/keys.py input_key() builds it:
-- images/<first two hex digits of the id>/<id>.<extension of the MIME type>.
CREATE FUNCTION image_storage_key(image_id UUID, mime_type TEXT) RETURNS TEXT
LANGUAGE plpgsql IMMUTABLE AS $$
DECLARE
    v_ext TEXT := CASE image_storage_key.mime_type
                      WHEN 'image/jpeg' THEN 'jpg' WHEN 'image/png' THEN 'png' WHEN 'image/webp' THEN 'webp' END;
BEGIN
    IF image_storage_key.image_id IS NULL THEN
        RAISE EXCEPTION 'argument_required: image_id is required' USING ERRCODE = 'SA004';
    END IF;
    IF v_ext IS NULL THEN
        RAISE EXCEPTION 'invalid_argument: mime_type must be image/jpeg, image/png or image/webp, got %',
                COALESCE(image_storage_key.mime_type, 'NULL')
            USING ERRCODE = 'SA005';
    END IF;
    RETURN 'images/' || left(replace(image_storage_key.image_id::text, '-', ''), 2) || '/'
           || image_storage_key.image_id::text || '.' || v_ext;
END;
$$;

COMMENT ON FUNCTION image_storage_key(UUID, TEXT) IS
    'The storage key the system issues for an uploaded image: images/<2 hex>/<id>.<ext>; write the file there, then register_image(image_id := id, …).';

-- One row per stored object: two rows never share a file.
CREATE UNIQUE INDEX uq_images_file_path ON images (file_path);

-- A key never points into another owner's space, whoever writes the row:
--   * no "." or ".." segment, no empty segment, no backslash (no way out of the storage root);
--   * images/… and thumbs/… (per-image keys) must name the row's own id;
--   * results/<conversion id>/… must be a result image of that conversion's owner (every owner's
--     space is named by a UUID: an image id or a conversion id).
-- Other forms (the seed's '/uploads/user.jpg' example) are not keys the system issues: the worker's
-- storage refuses to read them, so they reach nobody's file.
CREATE FUNCTION guard_image_storage_key() RETURNS trigger
LANGUAGE plpgsql AS $$
DECLARE
    v_conversion conversions%ROWTYPE;
    v_match TEXT[];
BEGIN
    IF NEW.file_path ~ '(^|/)\.{1,2}(/|$)' OR NEW.file_path ~ '//' OR strpos(NEW.file_path, E'\\') > 0 THEN
        RAISE EXCEPTION 'invalid_storage_key: % is not a storage key (dot segments, empty segments and backslashes are refused)',
                NEW.file_path
            USING ERRCODE = 'SA026';
    END IF;
    IF NEW.file_path ~ '^(images|thumbs)/' THEN
        IF NEW.file_path !~ ('^(images|thumbs)/([0-9a-f]{2}/)?' || NEW.id::text || '\.[a-z0-9]+$') THEN
            RAISE EXCEPTION 'invalid_storage_key: % does not name image %', NEW.file_path, NEW.id
                USING ERRCODE = 'SA026',
                      HINT = 'per-image keys are images/<2 hex>/<image id>.<ext>: see image_storage_key()';
        END IF;
    ELSIF NEW.file_path ~* '^results/[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}/' THEN
        v_match := regexp_match(NEW.file_path,
            '^results/([0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12})/[a-z0-9][a-z0-9_.-]*$');
        IF v_match IS NOT NULL THEN
            SELECT c.* INTO v_conversion FROM conversions c WHERE c.id = v_match[1]::uuid;
        END IF;
        IF v_match IS NULL OR v_conversion.id IS NULL OR NEW.type <> 'result'
           OR NEW.owner_id IS DISTINCT FROM COALESCE(v_conversion.user_id, v_conversion.vendor_id)
           OR NEW.owner_type <> (CASE WHEN v_conversion.user_id IS NOT NULL THEN 'user' ELSE 'vendor' END) THEN
            RAISE EXCEPTION 'invalid_storage_key: % is not a result key of a conversion of % %',
                    NEW.file_path, NEW.owner_type, NEW.owner_id
                USING ERRCODE = 'SA026';
        END IF;
    END IF;
    RETURN NEW;
END;
$$;

CREATE TRIGGER trg_images_storage_key_guard
    BEFORE INSERT OR UPDATE OF file_path, owner_id, owner_type, type ON images
    FOR EACH ROW EXECUTE FUNCTION guard_image_storage_key();

-- ---------------------------------------------------------------------------
-- register_image: the one safe way for a producer to add an image row
-- ---------------------------------------------------------------------------
CREATE FUNCTION register_image(
    owner_id UUID,
    owner_type TEXT,
    type TEXT,
    mime_type TEXT,
    file_size BIGINT,
    image_id UUID DEFAULT NULL,
    file_path TEXT DEFAULT NULL,
    file_name TEXT DEFAULT NULL,
    original_url TEXT DEFAULT NULL,
    thumbnail_url TEXT DEFAULT NULL,
    width INTEGER DEFAULT NULL,
    height INTEGER DEFAULT NULL,
    album_id UUID DEFAULT NULL,
    is_public BOOLEAN DEFAULT false,
    is_free BOOLEAN DEFAULT true,
    tags TEXT[] DEFAULT '{}',
    metadata JSONB DEFAULT '{}'
) RETURNS UUID
LANGUAGE plpgsql AS $$
#variable_conflict use_column
DECLARE
    v_id  UUID := COALESCE(register_image.image_id, gen_random_uuid());
    v_key TEXT;
BEGIN
    IF register_image.owner_id IS NULL OR register_image.owner_type IS NULL THEN
        RAISE EXCEPTION 'owner_required: owner_id and owner_type are required' USING ERRCODE = 'SA001';
    END IF;
    IF register_image.owner_type NOT IN ('user', 'vendor') THEN
        RAISE EXCEPTION 'invalid_argument: owner_type must be user or vendor, got %', register_image.owner_type
            USING ERRCODE = 'SA005';
    END IF;
    IF register_image.type IS NULL OR register_image.type NOT IN ('user', 'cloth') THEN
        RAISE EXCEPTION 'invalid_argument: type must be user or cloth (result images are written by the queue), got %',
                COALESCE(register_image.type, 'NULL')
            USING ERRCODE = 'SA005';
    END IF;
    IF register_image.file_size IS NULL OR register_image.file_size <= 0 THEN
        RAISE EXCEPTION 'invalid_argument: file_size must be > 0' USING ERRCODE = 'SA005';
    END IF;
    IF register_image.owner_type = 'user' THEN
        PERFORM 1 FROM users u WHERE u.id = register_image.owner_id;
    ELSE
        PERFORM 1 FROM vendors v WHERE v.id = register_image.owner_id;
    END IF;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'owner_not_found: % % does not exist', register_image.owner_type, register_image.owner_id
            USING ERRCODE = 'SA003';
    END IF;
    IF register_image.album_id IS NOT NULL THEN
        PERFORM 1 FROM albums a
         WHERE a.id = register_image.album_id AND a.owner_id = register_image.owner_id
           AND a.owner_type = register_image.owner_type;
        IF NOT FOUND THEN
            RAISE EXCEPTION 'invalid_argument: album % is not an album of % %', register_image.album_id,
                    register_image.owner_type, register_image.owner_id
                USING ERRCODE = 'SA005';
        END IF;
    END IF;

    v_key := image_storage_key(v_id, register_image.mime_type);
    IF register_image.file_path IS NOT NULL AND register_image.file_path <> v_key THEN
        RAISE EXCEPTION 'invalid_storage_key: % is not the key issued for image % (expected %)',
                register_image.file_path, v_id, v_key
            USING ERRCODE = 'SA026',
                  HINT = 'leave file_path out, or pass image_storage_key(image_id, mime_type)';
    END IF;

    INSERT INTO images (id, owner_id, owner_type, album_id, file_path, file_name, original_url, thumbnail_url,
                        file_size, mime_type, width, height, type, is_public, is_free, tags, metadata)
    VALUES (v_id, register_image.owner_id, register_image.owner_type, register_image.album_id, v_key,
            COALESCE(register_image.file_name, split_part(v_key, '/', 3)),
            COALESCE(register_image.original_url, v_key), register_image.thumbnail_url,
            register_image.file_size, register_image.mime_type, register_image.width, register_image.height,
            register_image.type, COALESCE(register_image.is_public, false), COALESCE(register_image.is_free, true),
            COALESCE(register_image.tags, '{}'), COALESCE(register_image.metadata, '{}'::jsonb));

    INSERT INTO image_usage_history (image_id, user_id, vendor_id, action, metadata)
    VALUES (v_id,
            CASE WHEN register_image.owner_type = 'user' THEN register_image.owner_id END,
            CASE WHEN register_image.owner_type = 'vendor' THEN register_image.owner_id END,
            'upload', jsonb_build_object('mime_type', register_image.mime_type));
    RETURN v_id;
END;
$$;

COMMENT ON FUNCTION register_image(UUID, TEXT, TEXT, TEXT, BIGINT, UUID, TEXT, TEXT, TEXT, TEXT, INTEGER, INTEGER, UUID, BOOLEAN, BOOLEAN, TEXT[], JSONB) IS
    'Registers an uploaded person or garment image under the key derived from its id (image_storage_key()) and writes its upload usage row; returns the id.';

-- ---------------------------------------------------------------------------
-- create_conversion: validation before the idempotency lookup, request hash
-- ---------------------------------------------------------------------------
CREATE OR REPLACE FUNCTION create_conversion(
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
$$;

-- ---------------------------------------------------------------------------
-- update_conversion_status: ownership of the result, the attempt fence, retries
-- ---------------------------------------------------------------------------

-- A result image is the result of at most one conversion.
CREATE UNIQUE INDEX uq_conversions_result_image_id ON conversions (result_image_id)
    WHERE result_image_id IS NOT NULL;
DROP INDEX idx_conversions_result_image_id;

-- The parameter list grows (attempt), so the old function goes: a second overload would make the
-- seed's named calls ambiguous. PL/pgSQL callers resolve the call when it runs.
DROP FUNCTION update_conversion_status(UUID, TEXT, UUID, INTEGER, TEXT, TEXT, TEXT, BIGINT, BIGINT);

CREATE FUNCTION update_conversion_status(
    conversion_id UUID,
    status TEXT,
    result_image_id UUID DEFAULT NULL,
    processing_time_ms INTEGER DEFAULT NULL,
    error_message TEXT DEFAULT NULL,
    error_type TEXT DEFAULT NULL,
    ai_model_version TEXT DEFAULT NULL,
    input_file_size_bytes BIGINT DEFAULT NULL,
    output_file_size_bytes BIGINT DEFAULT NULL,
    attempt INTEGER DEFAULT NULL
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

    -- Locks: job first, then conversion (the order of every queue operation).
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

    -- The same terminal status again (a redelivered completion): no-op, unless it would give the
    -- conversion a second result.
    IF v_terminal AND v_conv.status = v_status THEN
        IF update_conversion_status.result_image_id IS NOT NULL
           AND update_conversion_status.result_image_id IS DISTINCT FROM v_conv.result_image_id THEN
            RAISE EXCEPTION 'invalid_status_transition: conversion % is already % with another result',
                    v_conv.id, v_conv.status
                USING ERRCODE = 'SA021';
        END IF;
        RETURN;
    END IF;

    -- The attempt fence. A given attempt must be the one in progress. A job claimed by a worker
    -- (worker_id set) is completed or requeued only by the holder of its current attempt; failing
    -- and cancelling stay open to the queue's own operations (job_fail, jobs_rescue, cancel). A job
    -- this function moved to processing itself has no holder (worker_id NULL): its caller finishes
    -- it, with or without the attempt, as the seed's example calls do.
    IF update_conversion_status.attempt IS NOT NULL
       AND (v_job.id IS NULL OR v_job.status <> 'processing' OR v_job.attempt <> update_conversion_status.attempt) THEN
        RAISE EXCEPTION 'attempt_not_held: attempt % of conversion % is not in progress (job %, attempt %)',
                update_conversion_status.attempt, v_conv.id, COALESCE(v_job.status, 'none'), v_job.attempt
            USING ERRCODE = 'SA025';
    END IF;
    IF update_conversion_status.attempt IS NULL AND v_status IN ('completed', 'pending')
       AND v_job.status = 'processing' AND v_job.worker_id IS NOT NULL THEN
        RAISE EXCEPTION 'attempt_not_held: conversion % is held by worker % (attempt %); pass attempt := the claim''s attempt',
                v_conv.id, v_job.worker_id, v_job.attempt
            USING ERRCODE = 'SA025';
    END IF;

    IF v_conv.status <> v_status AND NOT (
           (v_conv.status = 'pending' AND v_status IN ('processing', 'failed', 'cancelled'))
        OR (v_conv.status = 'processing' AND v_status IN ('pending', 'completed', 'failed', 'cancelled'))
    ) THEN
        RAISE EXCEPTION 'invalid_status_transition: conversion % cannot move from % to %',
                v_conv.id, v_conv.status, v_status
            USING ERRCODE = 'SA021';
    END IF;

    -- A requeue is a retry: bounded by max_retries like job_fail's.
    IF v_status = 'pending' AND v_conv.status = 'processing' AND v_job.id IS NOT NULL
       AND v_job.retry_count >= v_job.max_retries THEN
        RAISE EXCEPTION 'invalid_status_transition: conversion % has used its % retries; it can only fail or be cancelled',
                v_conv.id, v_job.max_retries
            USING ERRCODE = 'SA021';
    END IF;

    IF v_status = 'completed' THEN
        IF update_conversion_status.result_image_id IS NULL THEN
            RAISE EXCEPTION 'result_image_required: conversion % cannot be completed without result_image_id',
                    v_conv.id
                USING ERRCODE = 'SA022';
        END IF;
        SELECT i.* INTO v_result FROM images i WHERE i.id = update_conversion_status.result_image_id
           FOR UPDATE;
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
        -- The result belongs to the conversion's owner and to this conversion: its metadata
        -- conversion_id (set by the queue's completion, or stamped here on first use) names it, and
        -- no other conversion has it.
        IF v_result.owner_id IS DISTINCT FROM COALESCE(v_conv.user_id, v_conv.vendor_id)
           OR v_result.owner_type <> (CASE WHEN v_conv.user_id IS NOT NULL THEN 'user' ELSE 'vendor' END) THEN
            RAISE EXCEPTION 'image_not_accessible: result image % does not belong to the owner of conversion %',
                    v_result.id, v_conv.id
                USING ERRCODE = 'SA012';
        END IF;
        IF (v_result.metadata ? 'conversion_id'
            AND v_result.metadata ->> 'conversion_id' IS DISTINCT FROM v_conv.id::text)
           OR EXISTS (SELECT 1 FROM conversions o WHERE o.result_image_id = v_result.id AND o.id <> v_conv.id) THEN
            RAISE EXCEPTION 'image_not_accessible: result image % belongs to another conversion', v_result.id
                USING ERRCODE = 'SA012';
        END IF;
        IF NOT (v_result.metadata ? 'conversion_id') THEN
            UPDATE images i SET metadata = i.metadata || jsonb_build_object('conversion_id', v_conv.id)
             WHERE i.id = v_result.id;
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

    -- Keep the job in step: pending <-> queued, processing <-> processing, terminal <-> the same.
    -- Moving a queued job to processing here is a claim without a worker (worker_id NULL).
    IF v_job.id IS NOT NULL THEN
        v_job_target := CASE WHEN v_status = 'pending' THEN 'queued' ELSE v_status END;
        IF v_job.status <> v_job_target AND v_job.status IN ('completed', 'failed', 'cancelled') THEN
            RAISE EXCEPTION 'invalid_status_transition: job % of conversion % is already %, cannot move to %',
                    v_job.id, v_conv.id, v_job.status, v_job_target
                USING ERRCODE = 'SA021';
        END IF;
        UPDATE conversion_jobs j
           SET status = v_job_target,
               worker_id = CASE WHEN v_job_target = 'queued' THEN NULL
                                WHEN v_job_target = 'processing' AND j.status = 'queued' THEN NULL
                                ELSE j.worker_id END,
               heartbeat_at = CASE
                                  WHEN v_job_target = 'queued' THEN NULL
                                  WHEN v_job_target = 'processing' AND j.status = 'queued' THEN now()
                                  ELSE j.heartbeat_at END,
               started_at = CASE WHEN v_job_target = 'processing' AND j.status = 'queued'
                                 THEN now() ELSE j.started_at END,
               attempt = CASE WHEN v_job_target = 'processing' AND j.status = 'queued'
                              THEN j.attempt + 1 ELSE j.attempt END,
               retry_count = CASE WHEN v_job_target = 'queued' AND j.status = 'processing'
                                  THEN j.retry_count + 1 ELSE j.retry_count END,
               run_after = CASE WHEN v_job_target = 'queued' AND j.status = 'processing'
                                THEN now() ELSE j.run_after END,
               completed_at = CASE WHEN v_terminal THEN COALESCE(j.completed_at, now()) ELSE j.completed_at END,
               error_message = COALESCE(update_conversion_status.error_message, j.error_message),
               error_type = COALESCE(v_error_type, j.error_type)
         WHERE j.id = v_job.id
         RETURNING j.error_type INTO v_error_type;
    END IF;

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

COMMENT ON FUNCTION update_conversion_status(UUID, TEXT, UUID, INTEGER, TEXT, TEXT, TEXT, BIGINT, BIGINT, INTEGER) IS
    'Moves a conversion forward, keeps its job in step and writes the conversion_metrics row on a terminal status; a worker-held job completes or requeues only with its current attempt; a requeue is a counted retry; the result image must be the owner''s and this conversion''s.';

-- ---------------------------------------------------------------------------
-- Cancel: the owner's path and the operator's audited path
-- ---------------------------------------------------------------------------

DROP FUNCTION cancel_conversion(UUID);

-- Shared body: lock (job first, then conversion), cancel if still running, return the status.
CREATE FUNCTION conversion_cancel_locked(p_conversion_id UUID, p_message TEXT) RETURNS TEXT
LANGUAGE plpgsql AS $$
DECLARE
    v_status TEXT;
BEGIN
    PERFORM 1 FROM conversion_jobs j
     WHERE j.conversion_id = p_conversion_id AND j.status IN ('queued', 'processing')
       FOR UPDATE;
    SELECT c.status INTO v_status FROM conversions c WHERE c.id = p_conversion_id FOR UPDATE;
    IF v_status IN ('pending', 'processing') THEN
        PERFORM update_conversion_status(conversion_id := p_conversion_id, status := 'cancelled',
                                         error_message := p_message);
        RETURN 'cancelled';
    END IF;
    RETURN v_status;
END;
$$;

COMMENT ON FUNCTION conversion_cancel_locked(UUID, TEXT) IS
    'Internal: cancels a pending or processing conversion (job, then conversion locked) and returns its status; callers check who may.';

CREATE FUNCTION cancel_conversion(
    conversion_id UUID,
    user_id UUID DEFAULT NULL,
    vendor_id UUID DEFAULT NULL
) RETURNS TEXT
LANGUAGE plpgsql AS $$
#variable_conflict use_column
DECLARE
    v_conv conversions%ROWTYPE;
BEGIN
    IF cancel_conversion.conversion_id IS NULL THEN
        RAISE EXCEPTION 'argument_required: conversion_id is required' USING ERRCODE = 'SA004';
    END IF;
    IF cancel_conversion.user_id IS NULL AND cancel_conversion.vendor_id IS NULL THEN
        RAISE EXCEPTION 'owner_required: cancel_conversion needs the caller''s user_id or vendor_id'
            USING ERRCODE = 'SA001',
                  HINT = 'operators use operator_cancel_conversion(conversion_id, operator, reason)';
    END IF;
    IF cancel_conversion.user_id IS NOT NULL AND cancel_conversion.vendor_id IS NOT NULL THEN
        RAISE EXCEPTION 'owner_ambiguous: give user_id or vendor_id, not both' USING ERRCODE = 'SA002';
    END IF;
    SELECT c.* INTO v_conv FROM conversions c WHERE c.id = cancel_conversion.conversion_id;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'conversion_not_found: conversion % does not exist', cancel_conversion.conversion_id
            USING ERRCODE = 'SA020';
    END IF;
    IF v_conv.user_id IS DISTINCT FROM cancel_conversion.user_id
       OR v_conv.vendor_id IS DISTINCT FROM cancel_conversion.vendor_id THEN
        RAISE EXCEPTION 'not_owner: conversion % belongs to someone else', v_conv.id
            USING ERRCODE = 'SA024';
    END IF;
    RETURN conversion_cancel_locked(v_conv.id, 'cancelled on request');
END;
$$;

COMMENT ON FUNCTION cancel_conversion(UUID, UUID, UUID) IS
    'Cancels a conversion on behalf of its owner (user_id or vendor_id, SA024 otherwise); a running job''s fenced completion then finds nothing. Returns the status after the call.';

CREATE TABLE operator_actions (
    id BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    created_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    operator TEXT NOT NULL CHECK (length(btrim(operator)) > 0),
    db_user TEXT NOT NULL DEFAULT session_user,
    action TEXT NOT NULL CHECK (action IN ('cancel')),
    conversion_id UUID NOT NULL,
    reason TEXT NOT NULL CHECK (length(btrim(reason)) > 0),
    status_before TEXT,
    status_after TEXT
);

COMMENT ON TABLE operator_actions IS
    'Addition: audit trail of operator actions on other people''s conversions (operator_cancel_conversion()); no foreign key, so the trail outlives the conversion.';

CREATE INDEX idx_operator_actions_conversion_id ON operator_actions (conversion_id);
CREATE INDEX idx_operator_actions_created_at ON operator_actions (created_at);

CREATE FUNCTION operator_cancel_conversion(conversion_id UUID, operator TEXT, reason TEXT) RETURNS TEXT
LANGUAGE plpgsql AS $$
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
    IF NOT FOUND THEN
        RAISE EXCEPTION 'conversion_not_found: conversion % does not exist', operator_cancel_conversion.conversion_id
            USING ERRCODE = 'SA020';
    END IF;
    v_after := conversion_cancel_locked(operator_cancel_conversion.conversion_id,
                                        format('cancelled by operator %s: %s', operator_cancel_conversion.operator,
                                               operator_cancel_conversion.reason));
    INSERT INTO operator_actions (operator, action, conversion_id, reason, status_before, status_after)
    VALUES (operator_cancel_conversion.operator, 'cancel', operator_cancel_conversion.conversion_id,
            operator_cancel_conversion.reason, v_before, v_after);
    RETURN v_after;
END;
$$;

COMMENT ON FUNCTION operator_cancel_conversion(UUID, TEXT, TEXT) IS
    'Operator path: cancels anyone''s conversion and writes an operator_actions row (operator, reason, session user, statuses); returns the status after the call.';
