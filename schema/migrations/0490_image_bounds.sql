-- 0490_image_bounds.sql
--
-- Every field a customer gives register_image() is bounded, as create_conversion()'s metadata is
-- (0410): the metadata by conversion_metadata_check() (an object of at most 16 KiB nesting at most 32
-- levels), the tags to 32 of 1..64 characters each, the file name to 255 characters, the URLs to
-- 2,048 and the MIME type to 100. A plain-SQL producer cannot store what the API refuses, and no
-- customer can make one image row, or a listing of it, arbitrarily large.
--
-- register_image() and create_conversion() also take the owner's row FOR KEY SHARE, so one racing
-- erase_owner() (which holds it FOR UPDATE) waits for the erasure and then answers owner_not_found
-- (SA003): no foreign-key violation (an HTTP 500) and no image row left behind for an erased owner.

CREATE FUNCTION image_fields_check(tags TEXT[], file_name TEXT, original_url TEXT, thumbnail_url TEXT,
                                   mime_type TEXT) RETURNS VOID
LANGUAGE plpgsql IMMUTABLE
SET search_path = public, pg_temp
AS $$
DECLARE
    max_tags       CONSTANT INTEGER := 32;
    max_tag_chars  CONSTANT INTEGER := 64;
    max_name_chars CONSTANT INTEGER := 255;
    max_url_chars  CONSTANT INTEGER := 2048;
    max_mime_chars CONSTANT INTEGER := 100;
BEGIN
    IF cardinality(image_fields_check.tags) > max_tags THEN
        RAISE EXCEPTION 'invalid_argument: % tags; at most % are allowed', cardinality(image_fields_check.tags), max_tags
            USING ERRCODE = 'SA005';
    END IF;
    IF EXISTS (SELECT 1 FROM unnest(image_fields_check.tags) t
                WHERE t IS NULL OR char_length(t) NOT BETWEEN 1 AND max_tag_chars) THEN
        RAISE EXCEPTION 'invalid_argument: every tag must have 1 to % characters', max_tag_chars
            USING ERRCODE = 'SA005';
    END IF;
    IF char_length(image_fields_check.file_name) > max_name_chars THEN
        RAISE EXCEPTION 'invalid_argument: file_name has % characters; at most % are allowed',
                char_length(image_fields_check.file_name), max_name_chars
            USING ERRCODE = 'SA005';
    END IF;
    IF char_length(image_fields_check.original_url) > max_url_chars
       OR char_length(image_fields_check.thumbnail_url) > max_url_chars THEN
        RAISE EXCEPTION 'invalid_argument: a URL may have at most % characters', max_url_chars
            USING ERRCODE = 'SA005';
    END IF;
    IF char_length(image_fields_check.mime_type) > max_mime_chars THEN
        RAISE EXCEPTION 'invalid_argument: mime_type may have at most % characters', max_mime_chars
            USING ERRCODE = 'SA005';
    END IF;
END;
$$;
COMMENT ON FUNCTION image_fields_check(TEXT[], TEXT, TEXT, TEXT, TEXT) IS
    'Refuses (SA005) over 32 tags, a tag outside 1..64 characters, a file name over 255, a URL over 2,048 or a MIME type over 100.';

CREATE OR REPLACE FUNCTION register_image(owner_id uuid, owner_type text, type text, mime_type text, file_size bigint, image_id uuid DEFAULT NULL::uuid, file_path text DEFAULT NULL::text, file_name text DEFAULT NULL::text, original_url text DEFAULT NULL::text, thumbnail_url text DEFAULT NULL::text, width integer DEFAULT NULL::integer, height integer DEFAULT NULL::integer, album_id uuid DEFAULT NULL::uuid, is_public boolean DEFAULT false, is_free boolean DEFAULT true, tags text[] DEFAULT '{}'::text[], metadata jsonb DEFAULT '{}'::jsonb)
 RETURNS uuid
 LANGUAGE plpgsql
 SECURITY DEFINER
 SET search_path TO 'public', 'pg_temp'
AS $function$
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
    PERFORM conversion_metadata_check(register_image.metadata);
    PERFORM image_fields_check(register_image.tags, register_image.file_name, register_image.original_url,
                               register_image.thumbnail_url, register_image.mime_type);
    IF register_image.owner_type = 'user' THEN
        PERFORM 1 FROM users u WHERE u.id = register_image.owner_id FOR KEY SHARE;
    ELSE
        PERFORM 1 FROM vendors v WHERE v.id = register_image.owner_id FOR KEY SHARE;
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
$function$;
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
        PERFORM 1 FROM users u WHERE u.id = v_owner_id FOR KEY SHARE;
    ELSE
        PERFORM 1 FROM vendors v WHERE v.id = v_owner_id FOR KEY SHARE;
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

REVOKE EXECUTE ON FUNCTION image_fields_check(TEXT[], TEXT, TEXT, TEXT, TEXT) FROM PUBLIC;
