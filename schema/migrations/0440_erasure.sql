-- 0440_erasure.sql
--
-- Personal photos' lifecycle (docs/operations.md "Deletion, erasure and retention"):
--   * storage_key_cleanup: durable markers naming single storage keys. An upload writes its two
--     markers (due after a grace period) before it writes any byte and takes them back in the
--     transaction that registers the row; a deletion writes a marker (due at once) for every key of
--     every row it deletes, in the same transaction. The leader's orphans duty (or the deleting
--     process right after its commit) deletes the objects of due markers that no row claims, then
--     the markers. So a crash between any storage write or delete and its row never leaves an
--     object for ever.
--   * image_object_keys(), storage_key_claimed(), storage_keys_unclaimed(): which keys a row claims.
--   * delete_image() and delete_conversion() for owners (DELETE /v1/images/{id},
--     DELETE /v1/conversions/{id}); erase_owner() and erase_owner_preview() for admins
--     (`stayler users|vendors erase`), audited in erasures without personal data.
--   * retention_expire_images(): the leader's expiry duty deletes person photos and results older
--     than their settings, in bounded batches.

CREATE TABLE storage_key_cleanup (
    key TEXT PRIMARY KEY CHECK (length(key) BETWEEN 1 AND 512),
    due_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    created_at TIMESTAMPTZ NOT NULL DEFAULT now()
);
CREATE INDEX idx_storage_key_cleanup_due_at ON storage_key_cleanup (due_at);
COMMENT ON TABLE storage_key_cleanup IS
    'Addition: storage keys whose objects go once due_at has passed unless a row claims them (uploads in flight, deleted rows).';

CREATE TABLE erasures (
    id BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    created_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    db_user TEXT NOT NULL DEFAULT session_user,
    owner_kind TEXT NOT NULL CHECK (owner_kind IN ('user', 'vendor')),
    counts JSONB NOT NULL
);
COMMENT ON TABLE erasures IS
    'Addition: one row per owner erasure (erase_owner()): when, by which database role, the owner''s kind and the counts deleted; never the owner''s id or any other personal data.';

-- Retention reads images by type and age, oldest first.
CREATE INDEX idx_images_type_created_at ON images (type, created_at);

-- Every storage key a row of images names: the image and its thumbnail.
CREATE FUNCTION image_object_keys(p_id UUID, p_type TEXT, p_file_path TEXT) RETURNS TEXT[]
LANGUAGE sql IMMUTABLE AS $$
    SELECT CASE WHEN p_type = 'result'
                THEN ARRAY[p_file_path, regexp_replace(p_file_path, '\.[a-z]+\Z', '') || '.thumb.jpg']
                ELSE ARRAY[p_file_path, 'thumbs/' || left(replace(p_id::text, '-', ''), 2) || '/' || p_id || '.jpg']
           END
$$;
COMMENT ON FUNCTION image_object_keys(UUID, TEXT, TEXT) IS
    'The storage keys of an images row: its file_path and its thumbnail (thumbs/<2 hex>/<id>.jpg, or <result>.thumb.jpg).';

-- Whether a row claims a key: an image's file or thumbnail, or a result file of an attempt in flight.
CREATE FUNCTION storage_key_claimed(p_key TEXT) RETURNS BOOLEAN
LANGUAGE plpgsql STABLE AS $$
DECLARE
    v_uuid CONSTANT TEXT := '[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}';
    v_match TEXT[];
BEGIN
    IF EXISTS (SELECT 1 FROM images i WHERE i.file_path = p_key) THEN
        RETURN true;
    END IF;
    v_match := regexp_match(p_key, '^thumbs/[0-9a-f]{2}/(' || v_uuid || ')\.jpg\Z');
    IF v_match IS NOT NULL THEN
        RETURN EXISTS (SELECT 1 FROM images i WHERE i.id = v_match[1]::uuid AND i.type <> 'result');
    END IF;
    v_match := regexp_match(p_key, '^(results/(' || v_uuid || ')/a([0-9]{1,9}))\.(thumb\.jpg|[a-z]+)\Z');
    IF v_match IS NOT NULL THEN
        RETURN EXISTS (SELECT 1 FROM images i
                        WHERE i.file_path IN (v_match[1] || '.jpg', v_match[1] || '.png', v_match[1] || '.webp'))
            OR EXISTS (SELECT 1 FROM conversion_jobs j
                        WHERE j.conversion_id = v_match[2]::uuid AND j.status = 'processing'
                          AND j.attempt = v_match[3]::integer);
    END IF;
    RETURN false;
END;
$$;

CREATE FUNCTION storage_keys_unclaimed(p_keys TEXT[]) RETURNS SETOF TEXT
LANGUAGE sql STABLE AS $$
    SELECT k FROM unnest(p_keys) AS k WHERE NOT storage_key_claimed(k)
$$;

-- An upload's markers, written (and committed) before its first byte is stored.
CREATE FUNCTION storage_markers_add(p_keys TEXT[], p_grace_s DOUBLE PRECISION) RETURNS VOID
LANGUAGE sql SECURITY DEFINER SET search_path = public, pg_temp AS $$
    INSERT INTO storage_key_cleanup (key, due_at)
    SELECT k, now() + make_interval(secs => GREATEST(p_grace_s, 0)) FROM unnest(p_keys) AS k
    ON CONFLICT (key) DO NOTHING
$$;

-- Taken back in the registering transaction; returns how many were still there (the sweep may have
-- taken a marker whose upload outlived the grace period, and then deleted its object).
CREATE FUNCTION storage_markers_take(p_keys TEXT[]) RETURNS INTEGER
LANGUAGE sql SECURITY DEFINER SET search_path = public, pg_temp AS $$
    WITH gone AS (DELETE FROM storage_key_cleanup WHERE key = ANY (p_keys) RETURNING 1)
    SELECT count(*)::integer FROM gone
$$;

-- Deletion markers: due at once; an older marker of the same key becomes due at once too.
CREATE FUNCTION storage_markers_due_now(p_keys TEXT[]) RETURNS VOID
LANGUAGE sql AS $$
    INSERT INTO storage_key_cleanup (key, due_at)
    SELECT DISTINCT k, now() FROM unnest(p_keys) AS k WHERE k IS NOT NULL
    ON CONFLICT (key) DO UPDATE SET due_at = LEAST(storage_key_cleanup.due_at, EXCLUDED.due_at)
$$;

-- The core of every deletion. Deletes the conversions p_conversions and the images p_images, and
-- with them: every conversion that uses one of those images (whoever owns it: the seed's cascade),
-- every result of those conversions, their usage rows; writes a due marker for every object key of
-- every deleted image. Conversions still pending or processing are cancelled first (their jobs and
-- conversions locked in the queue's order: jobs by id, then conversions), so a worker's fenced
-- completion arriving later finds no job and deletes its files, and the cancel's folder marker
-- (storage_cleanup) covers whatever an attempt wrote. Returns the keys marked.
CREATE FUNCTION content_delete_locked(p_conversions UUID[], p_images UUID[], OUT keys TEXT[],
                                      OUT conversions_deleted INTEGER, OUT images_deleted INTEGER)
LANGUAGE plpgsql AS $$
DECLARE
    v_images UUID[] := COALESCE(p_images, '{}');
    v_convs UUID[];
    v_results UUID[];
    v_id UUID;
BEGIN
    PERFORM 1 FROM images i WHERE i.id = ANY (v_images) ORDER BY i.id FOR UPDATE;
    v_convs := ARRAY(
        SELECT c.id FROM conversions c WHERE c.id = ANY (COALESCE(p_conversions, '{}'))
        UNION SELECT c.id FROM conversions c WHERE c.user_image_id = ANY (v_images)
        UNION SELECT c.id FROM conversions c WHERE c.cloth_image_id = ANY (v_images));
    PERFORM 1 FROM conversion_jobs j WHERE j.conversion_id = ANY (v_convs) ORDER BY j.id FOR UPDATE;
    PERFORM 1 FROM conversions c WHERE c.id = ANY (v_convs) ORDER BY c.id FOR UPDATE;
    FOR v_id IN SELECT c.id FROM conversions c
                 WHERE c.id = ANY (v_convs) AND c.status IN ('pending', 'processing') ORDER BY c.id LOOP
        PERFORM conversion_cancel_locked(v_id, 'cancelled: deleted on request');
    END LOOP;
    -- A result row is written and linked in one transaction (jobs_complete), so result_image_id finds them all.
    v_results := ARRAY(
        SELECT c.result_image_id FROM conversions c WHERE c.id = ANY (v_convs) AND c.result_image_id IS NOT NULL);
    v_images := ARRAY(SELECT DISTINCT x FROM unnest(v_images || v_results) AS x);
    keys := ARRAY(SELECT DISTINCT k FROM images i, unnest(image_object_keys(i.id, i.type, i.file_path)) AS k
                   WHERE i.id = ANY (v_images));
    PERFORM storage_markers_due_now(keys);
    DELETE FROM image_usage_history h WHERE h.conversion_id = ANY (v_convs);
    DELETE FROM conversions c WHERE c.id = ANY (v_convs);
    GET DIAGNOSTICS conversions_deleted = ROW_COUNT;
    DELETE FROM images i WHERE i.id = ANY (v_images);
    GET DIAGNOSTICS images_deleted = ROW_COUNT;
END;
$$;

-- DELETE /v1/images/{id}: the owner's person photo or garment, its files, every conversion using it
-- and their results. Another owner's image reads as missing (SA012 like SA010: 404); a result image
-- is deleted through its conversion (delete_conversion()).
CREATE FUNCTION delete_image(image_id UUID, user_id UUID DEFAULT NULL, vendor_id UUID DEFAULT NULL)
RETURNS SETOF TEXT
LANGUAGE plpgsql SECURITY DEFINER SET search_path = public, pg_temp AS $$
#variable_conflict use_column
DECLARE
    v_img images%ROWTYPE;
    v_result RECORD;
BEGIN
    IF num_nonnulls(delete_image.user_id, delete_image.vendor_id) <> 1 THEN
        RAISE EXCEPTION 'owner_required: delete_image needs exactly one of user_id or vendor_id'
            USING ERRCODE = 'SA001';
    END IF;
    SELECT i.* INTO v_img FROM images i WHERE i.id = delete_image.image_id FOR UPDATE;
    IF NOT FOUND OR v_img.type = 'result' THEN
        RAISE EXCEPTION 'image_not_found: image % does not exist', delete_image.image_id USING ERRCODE = 'SA010';
    END IF;
    IF v_img.owner_id <> COALESCE(delete_image.user_id, delete_image.vendor_id)
       OR v_img.owner_type <> (CASE WHEN delete_image.user_id IS NOT NULL THEN 'user' ELSE 'vendor' END) THEN
        RAISE EXCEPTION 'image_not_accessible: image % is not the caller''s', v_img.id USING ERRCODE = 'SA012';
    END IF;
    v_result := content_delete_locked(NULL, ARRAY[v_img.id]);
    RETURN QUERY SELECT unnest(v_result.keys);
END;
$$;

-- DELETE /v1/conversions/{id}: the conversion (cancelled first if it runs), its result and thumbnail.
CREATE FUNCTION delete_conversion(conversion_id UUID, user_id UUID DEFAULT NULL, vendor_id UUID DEFAULT NULL)
RETURNS SETOF TEXT
LANGUAGE plpgsql SECURITY DEFINER SET search_path = public, pg_temp AS $$
#variable_conflict use_column
DECLARE
    v_conv conversions%ROWTYPE;
    v_result RECORD;
BEGIN
    IF num_nonnulls(delete_conversion.user_id, delete_conversion.vendor_id) <> 1 THEN
        RAISE EXCEPTION 'owner_required: delete_conversion needs exactly one of user_id or vendor_id'
            USING ERRCODE = 'SA001';
    END IF;
    SELECT c.* INTO v_conv FROM conversions c WHERE c.id = delete_conversion.conversion_id;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'conversion_not_found: conversion % does not exist', delete_conversion.conversion_id
            USING ERRCODE = 'SA020';
    END IF;
    IF v_conv.user_id IS DISTINCT FROM delete_conversion.user_id
       OR v_conv.vendor_id IS DISTINCT FROM delete_conversion.vendor_id THEN
        RAISE EXCEPTION 'not_owner: conversion % is not the caller''s', v_conv.id USING ERRCODE = 'SA024';
    END IF;
    v_result := content_delete_locked(ARRAY[v_conv.id], NULL);
    RETURN QUERY SELECT unnest(v_result.keys);
END;
$$;

-- What erase_owner() would delete, by table (cascaded rows included).
CREATE FUNCTION erase_owner_preview(owner_type TEXT, owner_id UUID) RETURNS JSONB
LANGUAGE plpgsql STABLE SECURITY DEFINER SET search_path = public, pg_temp AS $$
#variable_conflict use_column
DECLARE
    v_user UUID := CASE WHEN erase_owner_preview.owner_type = 'user' THEN erase_owner_preview.owner_id END;
    v_vendor UUID := CASE WHEN erase_owner_preview.owner_type = 'vendor' THEN erase_owner_preview.owner_id END;
    v_images UUID[];
    v_convs UUID[];
    v_keys UUID[];
BEGIN
    IF erase_owner_preview.owner_type IS NULL OR erase_owner_preview.owner_type NOT IN ('user', 'vendor') THEN
        RAISE EXCEPTION 'invalid_argument: owner_type must be user or vendor' USING ERRCODE = 'SA005';
    END IF;
    v_images := ARRAY(SELECT i.id FROM images i
                       WHERE i.owner_id = erase_owner_preview.owner_id AND i.owner_type = erase_owner_preview.owner_type);
    v_convs := ARRAY(SELECT c.id FROM conversions c WHERE c.user_id = v_user
                     UNION SELECT c.id FROM conversions c WHERE c.vendor_id = v_vendor
                     UNION SELECT c.id FROM conversions c WHERE c.user_image_id = ANY (v_images)
                     UNION SELECT c.id FROM conversions c WHERE c.cloth_image_id = ANY (v_images));
    v_keys := ARRAY(SELECT k.id FROM api_keys k WHERE k.user_id = v_user OR k.vendor_id = v_vendor);
    RETURN jsonb_build_object(
        'owner', (SELECT count(*) FROM users u WHERE u.id = v_user)
                 + (SELECT count(*) FROM vendors v WHERE v.id = v_vendor),
        'images', cardinality(v_images)
                  + (SELECT count(*) FROM images i, conversions c
                      WHERE c.id = ANY (v_convs) AND i.id = c.result_image_id AND NOT (i.id = ANY (v_images))),
        'object_keys', 2 * (cardinality(v_images)
                        + (SELECT count(*) FROM images i, conversions c
                            WHERE c.id = ANY (v_convs) AND i.id = c.result_image_id AND NOT (i.id = ANY (v_images)))),
        'conversions', cardinality(v_convs),
        'conversions_of_others', (SELECT count(*) FROM conversions c WHERE c.id = ANY (v_convs)
                                   AND COALESCE(c.user_id, c.vendor_id) <> erase_owner_preview.owner_id),
        'conversion_jobs', (SELECT count(*) FROM conversion_jobs j WHERE j.conversion_id = ANY (v_convs)),
        'conversion_metrics', (SELECT count(*) FROM conversion_metrics m WHERE m.conversion_id = ANY (v_convs)),
        'image_usage_history', (SELECT count(*) FROM image_usage_history h
                                 WHERE h.user_id = v_user OR h.vendor_id = v_vendor OR h.image_id = ANY (v_images)
                                    OR h.conversion_id = ANY (v_convs)),
        'albums', (SELECT count(*) FROM albums a
                    WHERE a.owner_id = erase_owner_preview.owner_id AND a.owner_type = erase_owner_preview.owner_type),
        'api_keys', cardinality(v_keys),
        'console_grants', (SELECT count(*) FROM console_grants g WHERE g.key_id = ANY (v_keys)),
        'console_sessions', (SELECT count(*) FROM console_sessions s WHERE s.key_id = ANY (v_keys)),
        'webhook_endpoints', (SELECT count(*) FROM webhook_endpoints e WHERE e.user_id = v_user OR e.vendor_id = v_vendor),
        'webhook_deliveries', (SELECT count(*) FROM webhook_deliveries d
                                WHERE d.endpoint_id IN (SELECT e.id FROM webhook_endpoints e
                                                         WHERE e.user_id = v_user OR e.vendor_id = v_vendor)
                                   OR d.event_id IN (SELECT ev.id FROM webhook_events ev
                                                      WHERE ev.conversion_id = ANY (v_convs))),
        'operator_actions', (SELECT count(*) FROM operator_actions o
                              WHERE o.conversion_id = ANY (v_convs) OR o.new_conversion_id = ANY (v_convs)));
END;
$$;

-- `stayler users|vendors erase`: every row of the owner and every stored object (through due
-- markers), in one transaction; safe while workers hold the owner's jobs (they are locked and
-- cancelled first). Idempotent: an owner already erased deletes nothing and writes no audit row.
-- The audit row (erasures) keeps the owner's kind and the counts only.
CREATE FUNCTION erase_owner(owner_type TEXT, owner_id UUID) RETURNS JSONB
LANGUAGE plpgsql SECURITY DEFINER SET search_path = public, pg_temp AS $$
#variable_conflict use_column
DECLARE
    v_user UUID := CASE WHEN erase_owner.owner_type = 'user' THEN erase_owner.owner_id END;
    v_vendor UUID := CASE WHEN erase_owner.owner_type = 'vendor' THEN erase_owner.owner_id END;
    v_counts JSONB;
    v_images UUID[];
    v_convs UUID[];
    v_result RECORD;
BEGIN
    IF erase_owner.owner_id IS NULL THEN
        RAISE EXCEPTION 'argument_required: owner_id is required' USING ERRCODE = 'SA004';
    END IF;
    -- The owner row first: a concurrent create_conversion() or upload (foreign key check) waits.
    PERFORM 1 FROM users u WHERE u.id = v_user FOR UPDATE;
    PERFORM 1 FROM vendors v WHERE v.id = v_vendor FOR UPDATE;
    v_counts := erase_owner_preview(erase_owner.owner_type, erase_owner.owner_id);
    v_images := ARRAY(SELECT i.id FROM images i
                       WHERE i.owner_id = erase_owner.owner_id AND i.owner_type = erase_owner.owner_type);
    v_convs := ARRAY(SELECT c.id FROM conversions c WHERE c.user_id = v_user
                     UNION SELECT c.id FROM conversions c WHERE c.vendor_id = v_vendor);
    DELETE FROM operator_actions o
     WHERE o.conversion_id = ANY (v_convs) OR o.new_conversion_id = ANY (v_convs)
        OR o.conversion_id IN (SELECT c.id FROM conversions c
                                WHERE c.user_image_id = ANY (v_images) OR c.cloth_image_id = ANY (v_images));
    v_result := content_delete_locked(v_convs, v_images);
    DELETE FROM image_usage_history h WHERE h.user_id = v_user OR h.vendor_id = v_vendor;
    DELETE FROM albums a WHERE a.owner_id = erase_owner.owner_id AND a.owner_type = erase_owner.owner_type;
    DELETE FROM api_keys k WHERE k.user_id = v_user OR k.vendor_id = v_vendor;  -- grants and sessions cascade
    DELETE FROM webhook_endpoints e WHERE e.user_id = v_user OR e.vendor_id = v_vendor;  -- deliveries cascade
    -- The fair-share bookkeeping of the owner (0420) names its id too.
    DELETE FROM owner_load l WHERE l.owner_id = erase_owner.owner_id;
    DELETE FROM owner_lanes l WHERE l.owner_id = erase_owner.owner_id;
    DELETE FROM users u WHERE u.id = v_user;
    DELETE FROM vendors v WHERE v.id = v_vendor;
    IF EXISTS (SELECT 1 FROM jsonb_each(v_counts) kv WHERE kv.value::text <> '0') THEN
        INSERT INTO erasures (owner_kind, counts) VALUES (erase_owner.owner_type, v_counts);
    END IF;
    RETURN v_counts;
END;
$$;

-- Retention of personal pictures: up to p_batch_size images of type p_type ('user': person photos,
-- 'result': results) created more than p_older_than_s ago, oldest first, skipping rows another
-- transaction holds, are deleted with everything made from them (content_delete_locked()). A person
-- photo that a pending or processing conversion uses waits for the next run. Returns the images
-- deleted (results of the photos' conversions included).
CREATE FUNCTION retention_expire_images(p_type TEXT, p_older_than_s DOUBLE PRECISION, p_batch_size INTEGER)
RETURNS INTEGER
LANGUAGE plpgsql SECURITY DEFINER SET search_path = public, pg_temp AS $$
DECLARE
    v_ids UUID[];
    v_result RECORD;
BEGIN
    IF p_type NOT IN ('user', 'result') OR p_older_than_s IS NULL OR p_older_than_s <= 0 THEN
        RETURN 0;
    END IF;
    v_ids := ARRAY(
        SELECT i.id FROM images i
         WHERE i.type = p_type AND i.created_at < now() - make_interval(secs => p_older_than_s)
           AND NOT EXISTS (SELECT 1 FROM conversions c
                            WHERE c.user_image_id = i.id AND c.status IN ('pending', 'processing'))
         ORDER BY i.created_at
         LIMIT p_batch_size
           FOR UPDATE SKIP LOCKED);
    IF cardinality(v_ids) = 0 THEN
        RETURN 0;
    END IF;
    IF p_type = 'result' THEN
        -- A result goes with its conversion (a completed conversion always has its result).
        v_result := content_delete_locked(ARRAY(SELECT c.id FROM conversions c WHERE c.result_image_id = ANY (v_ids)),
                                          v_ids);
    ELSE
        v_result := content_delete_locked(NULL, v_ids);
    END IF;
    RETURN v_result.images_deleted;
END;
$$;

REVOKE ALL ON FUNCTION image_object_keys(UUID, TEXT, TEXT), storage_key_claimed(TEXT),
    storage_keys_unclaimed(TEXT[]), storage_markers_add(TEXT[], DOUBLE PRECISION), storage_markers_take(TEXT[]),
    storage_markers_due_now(TEXT[]), content_delete_locked(UUID[], UUID[]), delete_image(UUID, UUID, UUID),
    delete_conversion(UUID, UUID, UUID), erase_owner_preview(TEXT, UUID), erase_owner(TEXT, UUID),
    retention_expire_images(TEXT, DOUBLE PRECISION, INTEGER) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION storage_markers_add(TEXT[], DOUBLE PRECISION), storage_markers_take(TEXT[]),
    delete_image(UUID, UUID, UUID), delete_conversion(UUID, UUID, UUID) TO stayler_producer;
GRANT EXECUTE ON FUNCTION image_object_keys(UUID, TEXT, TEXT), storage_key_claimed(TEXT),
    storage_keys_unclaimed(TEXT[]), retention_expire_images(TEXT, DOUBLE PRECISION, INTEGER) TO stayler_worker;
GRANT SELECT, DELETE, UPDATE ON storage_key_cleanup TO stayler_worker;
GRANT EXECUTE ON FUNCTION image_object_keys(UUID, TEXT, TEXT), storage_key_claimed(TEXT),
    storage_keys_unclaimed(TEXT[]), storage_markers_add(TEXT[], DOUBLE PRECISION), storage_markers_take(TEXT[]),
    storage_markers_due_now(TEXT[]), content_delete_locked(UUID[], UUID[]), delete_image(UUID, UUID, UUID),
    delete_conversion(UUID, UUID, UUID), erase_owner_preview(TEXT, UUID), erase_owner(TEXT, UUID),
    retention_expire_images(TEXT, DOUBLE PRECISION, INTEGER) TO stayler_admin;
GRANT ALL ON storage_key_cleanup, erasures TO stayler_admin;
GRANT SELECT ON storage_key_cleanup, erasures TO stayler_operator_ro;
