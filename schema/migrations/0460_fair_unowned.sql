-- Jobs inserted with triggers off (a plain-SQL client under session_replication_role = replica, a
-- restore) carry no fair-share stamp: no owner, so the fair claim, which serves owners, would never
-- take them. The leader's dispatch duty stamps them each sweep as the insert trigger would have,
-- at the current virtual time, so such jobs are served like any other (docs/architecture.md,
-- "Fair share").

CREATE INDEX idx_conversion_jobs_unowned ON conversion_jobs (id)
    WHERE owner_id IS NULL AND status = 'queued';

CREATE FUNCTION jobs_stamp_unowned(p_limit INTEGER) RETURNS INTEGER
LANGUAGE plpgsql AS $$
DECLARE
    v_count INTEGER;
BEGIN
    WITH todo AS (
        SELECT j.id, COALESCE(c.user_id, c.vendor_id) AS owner_id,
               CASE WHEN c.vendor_id IS NOT NULL THEN 'vendor' ELSE 'user' END AS owner_kind,
               CASE WHEN c.vendor_id IS NOT NULL THEN 'vendor' ELSE c.conversion_type END AS plan
          FROM conversion_jobs j JOIN conversions c ON c.id = j.conversion_id
         WHERE j.owner_id IS NULL AND j.status = 'queued'
         ORDER BY j.id LIMIT p_limit
           FOR UPDATE OF j SKIP LOCKED
    ), lanes AS (
        INSERT INTO owner_lanes (owner_id, owner_kind, plan)
        SELECT DISTINCT t.owner_id, t.owner_kind, t.plan FROM todo t WHERE t.owner_id IS NOT NULL
        ON CONFLICT (owner_id) DO NOTHING
    ), loads AS (
        INSERT INTO owner_load (owner_id)
        SELECT DISTINCT t.owner_id FROM todo t WHERE t.owner_id IS NOT NULL
        ON CONFLICT (owner_id) DO NOTHING
    )
    UPDATE conversion_jobs j
       SET owner_id = t.owner_id, plan = t.plan, band = COALESCE(p.band, 0),
           vstart = COALESCE((SELECT f.vtime FROM fair_clock f LIMIT 1), 0)
      FROM todo t LEFT JOIN fair_plans p ON p.plan = t.plan
     WHERE j.id = t.id AND t.owner_id IS NOT NULL;
    GET DIAGNOSTICS v_count = ROW_COUNT;
    RETURN v_count;
END;
$$;

COMMENT ON FUNCTION jobs_stamp_unowned(INTEGER) IS
    'Addition: stamps up to p_limit queued jobs that carry no owner (inserted with triggers off) with their owner, plan, band and the current virtual time; the leader''s dispatch duty calls it each sweep.';

REVOKE ALL ON FUNCTION jobs_stamp_unowned(INTEGER) FROM PUBLIC;
DO $$
BEGIN
    IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'stayler_worker') THEN
        GRANT EXECUTE ON FUNCTION jobs_stamp_unowned(INTEGER) TO stayler_worker, stayler_admin;
    END IF;
END;
$$;
