-- 0130_conversion_status_function.sql
--
-- A plain-SQL producer (role stayler_producer) may only EXECUTE the producer functions, so it had
-- no way to read back what became of its conversion. get_conversion() is that way: the caller names
-- the owner (user_id or vendor_id, exactly as for cancel_conversion()), and reads its own conversion
-- with its job's attempts and last error and the result image's key; anyone else's is refused with
-- SA024 (not_owner) and a missing one with SA020.

CREATE FUNCTION get_conversion(conversion_id UUID, user_id UUID DEFAULT NULL, vendor_id UUID DEFAULT NULL)
RETURNS TABLE (id UUID, status TEXT, attempt INTEGER, retry_count INTEGER, max_retries INTEGER,
               error_type TEXT, error_message TEXT, result_image_id UUID, result_key TEXT,
               created_at TIMESTAMPTZ, updated_at TIMESTAMPTZ)
LANGUAGE plpgsql STABLE SECURITY DEFINER SET search_path = public, pg_temp AS $$
#variable_conflict use_column
DECLARE
    v_conv conversions%ROWTYPE;
BEGIN
    IF num_nonnulls(get_conversion.user_id, get_conversion.vendor_id) <> 1 THEN
        RAISE EXCEPTION 'owner_required: get_conversion needs exactly one of user_id or vendor_id'
            USING ERRCODE = 'SA001';
    END IF;
    SELECT c.* INTO v_conv FROM conversions c WHERE c.id = get_conversion.conversion_id;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'conversion_not_found: conversion % does not exist', get_conversion.conversion_id
            USING ERRCODE = 'SA020';
    END IF;
    IF v_conv.user_id IS DISTINCT FROM get_conversion.user_id
       OR v_conv.vendor_id IS DISTINCT FROM get_conversion.vendor_id THEN
        RAISE EXCEPTION 'not_owner: conversion % is not the caller''s', get_conversion.conversion_id
            USING ERRCODE = 'SA024';
    END IF;
    RETURN QUERY
    SELECT v_conv.id, v_conv.status, j.attempt, j.retry_count, j.max_retries, j.error_type,
           COALESCE(j.error_message, v_conv.error_message), v_conv.result_image_id, r.file_path,
           v_conv.created_at, v_conv.updated_at
      FROM (SELECT 1) AS one
      LEFT JOIN LATERAL (
          SELECT * FROM conversion_jobs cj WHERE cj.conversion_id = v_conv.id ORDER BY cj.created_at DESC LIMIT 1
      ) j ON true
      LEFT JOIN images r ON r.id = v_conv.result_image_id;
END;
$$;

COMMENT ON FUNCTION get_conversion(UUID, UUID, UUID) IS
    'The caller''s own conversion (owner named as for cancel_conversion): status, attempts, last error, result key; SA024 for anyone else''s.';

REVOKE ALL ON FUNCTION get_conversion(UUID, UUID, UUID) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION get_conversion(UUID, UUID, UUID) TO stayler_producer, stayler_admin;
