-- Who was dressed: when a photo holds several people and one clearly dominates, the person stage
-- dresses that one (models/subject.py) and the worker records who in the result image's metadata,
-- as {"subject": {"box": [x0, y0, x1, y1], "mask_share": s, "other_figures": n}}. Called by the
-- worker in the same transaction as jobs_complete(), for the jobs it completed: the note lands
-- with the result or not at all. Bounded: only those three keys, at most 256 bytes, else nothing
-- is written. The worker role may not update images itself; this function, fenced on the job's
-- completed attempt and the result's own attempt stamp, is its one way to.

CREATE FUNCTION jobs_note_subject(p_items jsonb) RETURNS integer
LANGUAGE plpgsql SECURITY DEFINER SET search_path = public, pg_temp AS $$
DECLARE
    v_count integer;
BEGIN
    WITH items AS (
        SELECT x.job_id, x.attempt,
               jsonb_strip_nulls(jsonb_build_object('box', x.subject -> 'box',
                                                    'mask_share', x.subject -> 'mask_share',
                                                    'other_figures', x.subject -> 'other_figures')) AS subject
          FROM jsonb_to_recordset(p_items) AS x(job_id uuid, attempt integer, subject jsonb)
         WHERE jsonb_typeof(x.subject) = 'object'
    ), noted AS (
        UPDATE images i
           SET metadata = i.metadata || jsonb_build_object('subject', x.subject)
          FROM items x
          JOIN conversion_jobs j ON j.id = x.job_id AND j.attempt = x.attempt AND j.status = 'completed'
          JOIN conversions c ON c.id = j.conversion_id
         WHERE i.id = c.result_image_id
           AND i.metadata ->> 'attempt' = x.attempt::text
           AND x.subject <> '{}'::jsonb
           AND octet_length(x.subject::text) <= 256
        RETURNING i.id
    )
    SELECT count(*) INTO v_count FROM noted;
    RETURN v_count;
END;
$$;

DO $$
BEGIN
    IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'stayler_worker') THEN
        GRANT EXECUTE ON FUNCTION jobs_note_subject(jsonb) TO stayler_worker, stayler_admin;
    END IF;
END;
$$;
