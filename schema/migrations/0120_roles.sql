-- 0120_roles.sql
--
-- Roles and privileges (schema/README.md, "Roles"). Four NOLOGIN group roles; a deployment grants
-- them to its login roles (GRANT stayler_producer TO orders_service):
--   stayler_producer     EXECUTE on the producer functions only; no table privilege at all
--   stayler_worker       the queue: its functions, and the tables its plain statements touch
--   stayler_operator_ro  SELECT on every table, the stats functions
--   stayler_admin        everything in the schema, the operator's audited cancel, the prunes
-- The functions a producer calls are SECURITY DEFINER with a pinned search_path, so they write
-- tables the caller cannot touch; their rules are the only way in.
--
-- Roles are cluster-wide: the DO block tolerates roles that exist already (several databases on one
-- server, several migrators at once).

DO $$
DECLARE
    r TEXT;
BEGIN
    FOREACH r IN ARRAY ARRAY['stayler_producer', 'stayler_worker', 'stayler_operator_ro', 'stayler_admin'] LOOP
        IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = r) THEN
            BEGIN
                EXECUTE format('CREATE ROLE %I NOLOGIN', r);
            EXCEPTION WHEN duplicate_object OR unique_violation THEN
                NULL;  -- created by a concurrent migration of another database
            END;
        END IF;
    END LOOP;
END;
$$;

-- Nothing by default: PostgreSQL grants EXECUTE on every new function to PUBLIC.
REVOKE EXECUTE ON ALL FUNCTIONS IN SCHEMA public FROM PUBLIC;
-- Without IN SCHEMA: a per-schema default can only add to the global one, never revoke from it.
ALTER DEFAULT PRIVILEGES REVOKE EXECUTE ON FUNCTIONS FROM PUBLIC;
REVOKE ALL ON ALL TABLES IN SCHEMA public FROM PUBLIC;
REVOKE CREATE ON SCHEMA public FROM PUBLIC;
GRANT USAGE ON SCHEMA public TO stayler_producer, stayler_worker, stayler_operator_ro, stayler_admin;

-- Producer functions: run as their owner, with a search_path nobody can shadow.
ALTER FUNCTION create_conversion(UUID, UUID, UUID, UUID, TEXT, TEXT, INTEGER, INTEGER, JSONB, TEXT)
    SECURITY DEFINER SET search_path = public, pg_temp;
ALTER FUNCTION register_image(UUID, TEXT, TEXT, TEXT, BIGINT, UUID, TEXT, TEXT, TEXT, TEXT, INTEGER, INTEGER, UUID,
                              BOOLEAN, BOOLEAN, TEXT[], JSONB)
    SECURITY DEFINER SET search_path = public, pg_temp;
ALTER FUNCTION record_image_usage(UUID, UUID, UUID, TEXT, INET, TEXT, UUID, TEXT, JSONB)
    SECURITY DEFINER SET search_path = public, pg_temp;
ALTER FUNCTION cancel_conversion(UUID, UUID, UUID)
    SECURITY DEFINER SET search_path = public, pg_temp;
-- Worker and operator entry points that write for others.
ALTER FUNCTION update_conversion_status(UUID, TEXT, UUID, INTEGER, TEXT, TEXT, TEXT, BIGINT, BIGINT, INTEGER)
    SECURITY DEFINER SET search_path = public, pg_temp;
ALTER FUNCTION operator_cancel_conversion(UUID, TEXT, TEXT)
    SECURITY DEFINER SET search_path = public, pg_temp;
ALTER FUNCTION prune_finished_jobs(INTERVAL, INTEGER) SECURITY DEFINER SET search_path = public, pg_temp;
ALTER FUNCTION prune_stopped_workers(INTERVAL, INTEGER) SECURITY DEFINER SET search_path = public, pg_temp;
ALTER FUNCTION prune_image_usage_history(INTERVAL, INTEGER) SECURITY DEFINER SET search_path = public, pg_temp;
ALTER FUNCTION prune_conversion_metrics(INTERVAL, INTEGER) SECURITY DEFINER SET search_path = public, pg_temp;
ALTER FUNCTION prune_operator_actions(INTERVAL, INTEGER) SECURITY DEFINER SET search_path = public, pg_temp;

-- stayler_producer: the producer functions, nothing else.
GRANT EXECUTE ON FUNCTION
    create_conversion(UUID, UUID, UUID, UUID, TEXT, TEXT, INTEGER, INTEGER, JSONB, TEXT),
    register_image(UUID, TEXT, TEXT, TEXT, BIGINT, UUID, TEXT, TEXT, TEXT, TEXT, INTEGER, INTEGER, UUID, BOOLEAN,
                   BOOLEAN, TEXT[], JSONB),
    image_storage_key(UUID, TEXT),
    record_image_usage(UUID, UUID, UUID, TEXT, INET, TEXT, UUID, TEXT, JSONB),
    cancel_conversion(UUID, UUID, UUID)
    TO stayler_producer;

-- stayler_worker: the queue functions (SECURITY INVOKER: they run with the grants below) and the
-- tables of the claim, heartbeat, registry, gauges and completion statements (schema/queries.sql).
-- SELECT … FOR UPDATE needs UPDATE on the locked table.
GRANT EXECUTE ON FUNCTION
    jobs_complete(JSONB),
    job_fail(UUID, INTEGER, TEXT, TEXT, BOOLEAN, DOUBLE PRECISION, DOUBLE PRECISION, INTEGER, TEXT),
    jobs_rescue(DOUBLE PRECISION, DOUBLE PRECISION, DOUBLE PRECISION, INTEGER),
    jobs_release(UUID[], INTEGER[]),
    job_backoff(INTEGER, DOUBLE PRECISION, DOUBLE PRECISION),
    update_conversion_status(UUID, TEXT, UUID, INTEGER, TEXT, TEXT, TEXT, BIGINT, BIGINT, INTEGER),
    prune_finished_jobs(INTERVAL, INTEGER),
    prune_stopped_workers(INTERVAL, INTEGER),
    prune_image_usage_history(INTERVAL, INTEGER),
    prune_conversion_metrics(INTERVAL, INTEGER),
    prune_operator_actions(INTERVAL, INTEGER)
    TO stayler_worker;
-- The queue's own functions (0030 onwards, named job_*, jobs_*, worker_*, workers_*, leader_*):
-- granted by name pattern, so functions the queue layer adds before this file are covered too.
DO $$
DECLARE
    f REGPROCEDURE;
BEGIN
    FOR f IN
        SELECT p.oid::regprocedure FROM pg_proc p
         WHERE p.pronamespace = 'public'::regnamespace AND p.prokind = 'f'
           AND p.proname ~ '^(jobs?|workers?|leader)_'
    LOOP
        EXECUTE format('GRANT EXECUTE ON FUNCTION %s TO stayler_worker', f);
    END LOOP;
    -- Bookkeeping tables of the queue layer, where present.
    IF to_regclass('public.leader_lease') IS NOT NULL THEN
        GRANT SELECT, INSERT, UPDATE, DELETE ON leader_lease TO stayler_worker;
    END IF;
    IF to_regclass('public.storage_cleanup') IS NOT NULL THEN
        GRANT SELECT, INSERT, UPDATE, DELETE ON storage_cleanup TO stayler_worker;
    END IF;
END;
$$;
GRANT SELECT, UPDATE ON conversion_jobs, conversions TO stayler_worker;
GRANT SELECT, INSERT ON images TO stayler_worker;
-- SELECT too: INSERT … RETURNING reads the returned columns.
GRANT SELECT, INSERT ON image_usage_history, conversion_metrics TO stayler_worker;
GRANT SELECT, INSERT, UPDATE ON workers TO stayler_worker;

-- stayler_operator_ro: read everything, the stats functions.
GRANT SELECT ON ALL TABLES IN SCHEMA public TO stayler_operator_ro;
GRANT EXECUTE ON FUNCTION
    get_conversion_stats(UUID, UUID, TIMESTAMPTZ, TIMESTAMPTZ),
    get_image_stats(UUID, TEXT, TEXT)
    TO stayler_operator_ro;

-- stayler_admin: the whole schema, including the audited operator path and the prunes.
GRANT ALL ON ALL TABLES IN SCHEMA public TO stayler_admin;
GRANT EXECUTE ON ALL FUNCTIONS IN SCHEMA public TO stayler_admin;
