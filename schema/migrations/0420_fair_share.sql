-- 0420_fair_share.sql
--
-- Fair share between customers (docs/architecture.md, "Fair share"). Each part is listed with its
-- reason in schema/README.md, "Additions":
--   * every job carries its owner (the conversion's user or vendor), its plan ('free' / 'paid' from
--     conversion_type for users, 'vendor' for vendors), a band (strict priority across owners, from
--     the plan or an operator) and a virtual start time stamped on insert (start-time fair queueing);
--   * fair_plans: weight, band and concurrency cap of each plan (the leader writes the fleet's
--     settings into it); owner_lanes: an owner's last virtual finish time and operator band;
--     owner_load: how many of an owner's jobs are processing (kept by a statement trigger);
--     fair_clock: the system virtual time, advanced by the claim;
--   * the claim's ready index orders by (band, virtual start); a customer's own priority orders only
--     its own jobs (idx_conversion_jobs_owner_ready);
--   * api_keys.max_priority: the highest priority a key may ask for.
--
-- Requires 0060 (scheduled, suspect, claim token) and 0200 (api_keys).

-- ---------------------------------------------------------------------------
-- Plans, owners, the virtual clock
-- ---------------------------------------------------------------------------

CREATE TABLE fair_plans (
    plan TEXT PRIMARY KEY CHECK (plan IN ('free', 'paid', 'vendor')),
    weight DOUBLE PRECISION NOT NULL CHECK (weight > 0),
    band INTEGER NOT NULL DEFAULT 0,
    max_processing INTEGER NOT NULL DEFAULT 0 CHECK (max_processing >= 0)
);

COMMENT ON TABLE fair_plans IS
    'Addition: per plan, the share weight, the band (higher bands are served first) and the cap on one owner''s processing jobs (0 = none).';

INSERT INTO fair_plans (plan, weight, band, max_processing) VALUES
    ('free', 1, 0, 0), ('paid', 4, 0, 0), ('vendor', 1, 0, 0);

CREATE TABLE owner_lanes (
    owner_id UUID PRIMARY KEY,
    owner_kind TEXT NOT NULL CHECK (owner_kind IN ('user', 'vendor')),
    plan TEXT NOT NULL REFERENCES fair_plans (plan),
    last_finish DOUBLE PRECISION NOT NULL DEFAULT 0,
    band INTEGER,
    changed_at TIMESTAMPTZ NOT NULL DEFAULT NOW()
);

COMMENT ON TABLE owner_lanes IS
    'Addition: one row per owner that ever queued a job: its plan (of its latest job), the virtual finish time of its latest job, and an operator''s band (NULL: the plan''s).';

CREATE TABLE owner_load (
    owner_id UUID PRIMARY KEY,
    processing INTEGER NOT NULL DEFAULT 0 CHECK (processing >= 0)
);

COMMENT ON TABLE owner_load IS
    'Addition: how many of the owner''s jobs are processing, kept by trigger; the claim locks these rows (in owner order) to hold the per-owner cap exactly.';

CREATE INDEX idx_owner_load_busy ON owner_load (owner_id) WHERE processing > 0;

CREATE TABLE fair_clock (
    id BOOLEAN PRIMARY KEY DEFAULT true CHECK (id),
    vtime DOUBLE PRECISION NOT NULL DEFAULT 0
);

COMMENT ON TABLE fair_clock IS
    'Addition: the system virtual time (the largest virtual start a claim took); a job''s virtual start is never below it.';

INSERT INTO fair_clock (id, vtime) VALUES (true, 0);

-- ---------------------------------------------------------------------------
-- conversion_jobs: owner, plan, band, virtual start
-- ---------------------------------------------------------------------------

ALTER TABLE conversion_jobs
    ADD COLUMN owner_id UUID,
    ADD COLUMN plan TEXT,
    ADD COLUMN band INTEGER NOT NULL DEFAULT 0,
    ADD COLUMN vstart DOUBLE PRECISION NOT NULL DEFAULT 0;

COMMENT ON COLUMN conversion_jobs.owner_id IS 'The conversion''s user or vendor (set on insert by trigger).';
COMMENT ON COLUMN conversion_jobs.plan IS 'free | paid | vendor (set on insert by trigger).';
COMMENT ON COLUMN conversion_jobs.band IS 'Across owners, higher bands are claimed first (the plan''s or an operator''s).';
COMMENT ON COLUMN conversion_jobs.vstart IS 'Virtual start time (start-time fair queueing): within a band the claim serves the smallest.';

-- Stamp owner, plan, band and virtual start: S = max(clock, owner's last finish); the owner's last
-- finish becomes S + 1/weight. The first job of an owner in a run of its jobs locks and reads its
-- lane; while the following rows are the same owner's, the running last finish is kept in one
-- transaction-local setting ('stayler_fair.lane' = owner|last finish|band) and written back when
-- another owner's row comes and at commit (trg_conversion_jobs_lane_insert). So a
-- bulk insert of n jobs of one owner costs O(n), not n updates of one row, and a session keeps one
-- setting whatever the number of owners. A loader that stamps rows itself (owner_id given) is
-- trusted: producers cannot insert jobs directly (roles: only create_conversion inserts them).
CREATE FUNCTION fair_lane_flush() RETURNS void
LANGUAGE plpgsql AS $$
DECLARE
    v_cached TEXT := current_setting('stayler_fair.lane', true);
BEGIN
    IF v_cached IS NOT NULL AND v_cached <> '' THEN
        UPDATE owner_lanes
           SET last_finish = GREATEST(last_finish, split_part(v_cached, '|', 2)::double precision)
         WHERE owner_id = split_part(v_cached, '|', 1)::uuid;
        PERFORM set_config('stayler_fair.lane', '', true);
    END IF;
END;
$$;

CREATE FUNCTION conversion_jobs_stamp_fair() RETURNS trigger
LANGUAGE plpgsql AS $$
DECLARE
    v_kind TEXT;
    v_plan TEXT;
    v_weight DOUBLE PRECISION;
    v_plan_band INTEGER;
    v_band INTEGER;
    v_last DOUBLE PRECISION;
    v_clock DOUBLE PRECISION;
    v_cached TEXT;
BEGIN
    IF NEW.owner_id IS NOT NULL THEN
        RETURN NEW;
    END IF;
    SELECT COALESCE(c.user_id, c.vendor_id),
           CASE WHEN c.vendor_id IS NOT NULL THEN 'vendor' ELSE 'user' END,
           CASE WHEN c.vendor_id IS NOT NULL THEN 'vendor' ELSE c.conversion_type END
      INTO NEW.owner_id, v_kind, v_plan
      FROM conversions c WHERE c.id = NEW.conversion_id;
    IF NEW.owner_id IS NULL THEN
        RETURN NEW;  -- the foreign key reports the missing conversion
    END IF;
    SELECT p.weight, p.band INTO v_weight, v_plan_band FROM fair_plans p WHERE p.plan = v_plan;
    SELECT vtime INTO v_clock FROM fair_clock;
    v_cached := current_setting('stayler_fair.lane', true);
    IF v_cached IS NOT NULL AND v_cached <> '' AND split_part(v_cached, '|', 1) = NEW.owner_id::text THEN
        v_last := split_part(v_cached, '|', 2)::double precision;
        v_band := NULLIF(split_part(v_cached, '|', 3), '')::integer;
    ELSE
        PERFORM fair_lane_flush();
        -- lock without writing a new row version (a lane written once per statement, not twice)
        SELECT l.last_finish, l.band INTO v_last, v_band FROM owner_lanes l WHERE l.owner_id = NEW.owner_id FOR UPDATE;
        IF NOT FOUND THEN
            INSERT INTO owner_lanes (owner_id, owner_kind, plan) VALUES (NEW.owner_id, v_kind, v_plan)
            ON CONFLICT (owner_id) DO NOTHING;
            INSERT INTO owner_load (owner_id) VALUES (NEW.owner_id) ON CONFLICT DO NOTHING;
            SELECT l.last_finish, l.band INTO v_last, v_band FROM owner_lanes l WHERE l.owner_id = NEW.owner_id FOR UPDATE;
        END IF;
        UPDATE owner_lanes SET plan = v_plan, changed_at = now() WHERE owner_id = NEW.owner_id AND plan <> v_plan;
    END IF;
    NEW.plan := v_plan;
    NEW.band := COALESCE(v_band, v_plan_band);
    NEW.vstart := GREATEST(v_last, COALESCE(v_clock, 0));
    PERFORM set_config('stayler_fair.lane', NEW.owner_id::text || '|' || (NEW.vstart + 1.0 / v_weight)::text
                                            || '|' || COALESCE(v_band::text, ''), true);
    RETURN NEW;
END;
$$;

CREATE TRIGGER trg_conversion_jobs_stamp_fair
    BEFORE INSERT ON conversion_jobs
    FOR EACH ROW EXECUTE FUNCTION conversion_jobs_stamp_fair();

CREATE FUNCTION conversion_jobs_lane_insert() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    PERFORM fair_lane_flush();
    RETURN NULL;
END;
$$;

-- At commit (deferred): the first event writes the lane back, the others find nothing to do. Not
-- at each statement's end: create_conversion() inserts one job per statement, and 20,000 of them in
-- one transaction would update one lane row 20,000 times (each update walking the versions before it).
CREATE CONSTRAINT TRIGGER trg_conversion_jobs_lane_insert
    AFTER INSERT ON conversion_jobs
    DEFERRABLE INITIALLY DEFERRED
    FOR EACH ROW EXECUTE FUNCTION conversion_jobs_lane_insert();

-- owner_load.processing follows the jobs: one statement-level trigger per kind of statement, the
-- owners' rows updated in owner order (after the jobs: the lock order of every queue statement).
-- An owner that drops below its cap may have ready jobs no claim message is left for (the claims
-- that found it at its cap were no-ops): its drop wakes the dispatcher like a new job does.
CREATE FUNCTION owner_load_apply(p_delta jsonb) RETURNS void
LANGUAGE plpgsql AS $$
DECLARE
    v_freed boolean;
BEGIN
    WITH d AS (
        SELECT key::uuid AS owner_id, value::integer AS delta FROM jsonb_each_text(p_delta)
    ), locked AS (
        SELECT o.owner_id FROM owner_load o JOIN d USING (owner_id) ORDER BY o.owner_id FOR UPDATE OF o
    ), moved AS (
        UPDATE owner_load o SET processing = GREATEST(o.processing + d.delta, 0)
          FROM d, locked WHERE o.owner_id = d.owner_id AND locked.owner_id = d.owner_id
        RETURNING o.owner_id, o.processing, d.delta
    )
    SELECT EXISTS (
        SELECT 1 FROM moved m
          JOIN owner_lanes l ON l.owner_id = m.owner_id
          JOIN fair_plans p ON p.plan = l.plan
         WHERE m.delta < 0 AND p.max_processing > 0
           AND m.processing < p.max_processing AND m.processing - m.delta >= p.max_processing
    ) INTO v_freed;
    IF v_freed THEN
        PERFORM pg_notify('stayler_jobs', '');
    END IF;
END;
$$;

CREATE FUNCTION conversion_jobs_count_load_update() RETURNS trigger
LANGUAGE plpgsql AS $$
DECLARE
    v_delta jsonb;
BEGIN
    SELECT jsonb_object_agg(owner_id, delta) INTO v_delta FROM (
        SELECT owner_id, sum(delta) AS delta FROM (
            SELECT n.owner_id, 1 AS delta FROM new_rows n
             WHERE n.status = 'processing' AND n.owner_id IS NOT NULL
            UNION ALL
            SELECT o.owner_id, -1 FROM old_rows o
             WHERE o.status = 'processing' AND o.owner_id IS NOT NULL
        ) x GROUP BY owner_id HAVING sum(delta) <> 0
    ) y;
    IF v_delta IS NOT NULL THEN
        PERFORM owner_load_apply(v_delta);
    END IF;
    RETURN NULL;
END;
$$;

CREATE FUNCTION conversion_jobs_count_load_insert() RETURNS trigger
LANGUAGE plpgsql AS $$
DECLARE
    v_delta jsonb;
BEGIN
    SELECT jsonb_object_agg(owner_id, n) INTO v_delta FROM (
        SELECT owner_id, count(*) AS n FROM new_rows
         WHERE status = 'processing' AND owner_id IS NOT NULL GROUP BY owner_id
    ) y;
    IF v_delta IS NOT NULL THEN
        INSERT INTO owner_load (owner_id)
        SELECT key::uuid FROM jsonb_each(v_delta) ON CONFLICT DO NOTHING;
        PERFORM owner_load_apply(v_delta);
    END IF;
    RETURN NULL;
END;
$$;

CREATE FUNCTION conversion_jobs_count_load_delete() RETURNS trigger
LANGUAGE plpgsql AS $$
DECLARE
    v_delta jsonb;
BEGIN
    SELECT jsonb_object_agg(owner_id, -n) INTO v_delta FROM (
        SELECT owner_id, count(*) AS n FROM old_rows
         WHERE status = 'processing' AND owner_id IS NOT NULL GROUP BY owner_id
    ) y;
    IF v_delta IS NOT NULL THEN
        PERFORM owner_load_apply(v_delta);
    END IF;
    RETURN NULL;
END;
$$;

CREATE TRIGGER trg_conversion_jobs_load_update
    AFTER UPDATE ON conversion_jobs
    REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION conversion_jobs_count_load_update();

CREATE TRIGGER trg_conversion_jobs_load_insert
    AFTER INSERT ON conversion_jobs
    REFERENCING NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION conversion_jobs_count_load_insert();

CREATE TRIGGER trg_conversion_jobs_load_delete
    AFTER DELETE ON conversion_jobs
    REFERENCING OLD TABLE AS old_rows
    FOR EACH STATEMENT EXECUTE FUNCTION conversion_jobs_count_load_delete();

-- Existing jobs: owner and plan from their conversion, virtual start 0 (served first, by age).
UPDATE conversion_jobs j
   SET owner_id = COALESCE(c.user_id, c.vendor_id),
       plan = CASE WHEN c.vendor_id IS NOT NULL THEN 'vendor' ELSE c.conversion_type END
  FROM conversions c WHERE c.id = j.conversion_id;

INSERT INTO owner_lanes (owner_id, owner_kind, plan)
SELECT DISTINCT ON (owner_id) owner_id, CASE WHEN plan = 'vendor' THEN 'vendor' ELSE 'user' END, plan
  FROM conversion_jobs WHERE owner_id IS NOT NULL ORDER BY owner_id, created_at DESC;

INSERT INTO owner_load (owner_id, processing)
SELECT owner_id, count(*) FILTER (WHERE status = 'processing')
  FROM conversion_jobs WHERE owner_id IS NOT NULL GROUP BY owner_id;

-- The claim walks ready jobs in fair order; a customer's priority orders only its own jobs.
DROP INDEX IF EXISTS idx_conversion_jobs_ready;
CREATE INDEX idx_conversion_jobs_ready ON conversion_jobs (band DESC, vstart, created_at)
    WHERE status = 'queued' AND NOT scheduled;
CREATE INDEX idx_conversion_jobs_owner_ready ON conversion_jobs (owner_id, priority DESC, vstart)
    WHERE status = 'queued' AND NOT scheduled;
-- Retention and owner deletes; the console's backlog by owner.
CREATE INDEX idx_conversion_jobs_owner_queued ON conversion_jobs (owner_id) WHERE status = 'queued';

-- Whether an owner is in a list (the claim's "is it at its cap"). A function the planner cannot see
-- into on purpose: written inline, `owner_id <> ALL(...)` is estimated from the column's statistics,
-- and with one owner queueing everything the planner expects no row to pass and sorts the whole
-- queue instead of reading the head of the ready index.
CREATE FUNCTION fair_owner_in(p_owner uuid, p_owners uuid[]) RETURNS boolean
LANGUAGE plpgsql IMMUTABLE PARALLEL SAFE AS $$
BEGIN
    RETURN p_owner = ANY (p_owners);
END;
$$;

-- An operator sets an owner's band (NULL: back to its plan's): new jobs and its queued jobs.
-- Returns how many queued jobs moved.
CREATE FUNCTION fair_owner_set_band(p_owner_id uuid, p_band integer)
RETURNS integer
LANGUAGE plpgsql AS $$
DECLARE
    v_moved integer;
BEGIN
    UPDATE owner_lanes SET band = p_band, changed_at = now() WHERE owner_id = p_owner_id;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'owner_not_found: % has never queued a job', p_owner_id USING ERRCODE = 'SA003';
    END IF;
    UPDATE conversion_jobs j SET band = COALESCE(p_band, p.band)
      FROM fair_plans p
     WHERE j.owner_id = p_owner_id AND j.status = 'queued' AND p.plan = j.plan;
    GET DIAGNOSTICS v_moved = ROW_COUNT;
    RETURN v_moved;
END;
$$;

-- ---------------------------------------------------------------------------
-- API keys: the highest priority a key may ask for
-- ---------------------------------------------------------------------------

ALTER TABLE api_keys
    ADD COLUMN max_priority INTEGER NOT NULL DEFAULT 10;

COMMENT ON COLUMN api_keys.max_priority IS
    'Highest priority this key may ask for (the API answers 422 priority_not_allowed above it).';

-- The load triggers write owner_load whoever runs the statement (worker, producer, operator); the
-- stamp keeps its running totals in transaction-local settings, which a SET clause would undo.
ALTER FUNCTION owner_load_apply(jsonb) SECURITY DEFINER SET search_path = public, pg_temp;
ALTER FUNCTION conversion_jobs_count_load_insert() SECURITY DEFINER SET search_path = public, pg_temp;
-- (A SET clause restores only the settings it names: the lane setting written inside survives.)
ALTER FUNCTION fair_lane_flush() SECURITY DEFINER SET search_path = public, pg_temp;

-- ---------------------------------------------------------------------------
-- Roles
-- ---------------------------------------------------------------------------

DO $$
BEGIN
    IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'stayler_worker') THEN
        GRANT SELECT, UPDATE ON fair_plans, fair_clock, owner_load TO stayler_worker;
        GRANT SELECT, INSERT, UPDATE ON owner_lanes TO stayler_worker;
        GRANT INSERT ON owner_load TO stayler_worker;
        GRANT SELECT ON fair_plans, owner_lanes, owner_load, fair_clock TO stayler_operator_ro;
        GRANT ALL ON fair_plans, owner_lanes, owner_load, fair_clock TO stayler_admin;
        GRANT EXECUTE ON FUNCTION fair_owner_set_band(uuid, integer) TO stayler_admin;
        -- called by the claim and from the triggers, as whoever runs the statement (or commits)
        GRANT EXECUTE ON FUNCTION fair_owner_in(uuid, uuid[]), owner_load_apply(jsonb), fair_lane_flush()
            TO stayler_worker, stayler_producer, stayler_admin, stayler_operator_ro;
    END IF;
END;
$$;
