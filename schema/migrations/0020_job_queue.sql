-- 0020_job_queue.sql
--
-- Additions where the seed is silent (each listed with its reason in
-- schema/README.md, "Additions"):
--   * conversion_jobs: availability (run_after), lease (heartbeat_at), fencing
--     token (attempt), stable error code (error_type), retry bounds, at most
--     one active job per conversion, rescue index;
--   * conversions: exactly one owner, idempotency key, a result only when
--     completed;
--   * conversion_metrics: one row per conversion;
--   * indexes behind every foreign key (ON DELETE CASCADE / SET NULL must not
--     scan the referencing table) and behind the queue's maintenance queries;
--   * the worker registry;
--   * status guards (statuses move forward only, SQLSTATE SA021) and the
--     NOTIFY that wakes the dispatcher.
--
-- Requires 0010_conversions_images_schema.sql.

-- ---------------------------------------------------------------------------
-- conversion_jobs: availability, lease, fencing
-- ---------------------------------------------------------------------------

ALTER TABLE conversion_jobs
    ADD COLUMN run_after TIMESTAMPTZ NOT NULL DEFAULT NOW(),
    ADD COLUMN attempt INTEGER NOT NULL DEFAULT 0,
    ADD COLUMN heartbeat_at TIMESTAMPTZ,
    ADD COLUMN error_type TEXT;

COMMENT ON COLUMN conversion_jobs.run_after IS
    'Earliest time the job may be claimed (retry backoff). The claim filters run_after <= now().';
COMMENT ON COLUMN conversion_jobs.attempt IS
    'Number of claims so far; fencing token: a completion must match status = ''processing'' AND attempt.';
COMMENT ON COLUMN conversion_jobs.heartbeat_at IS
    'Lease renewal by the claim holder; a processing job whose heartbeat is too old is rescued.';
COMMENT ON COLUMN conversion_jobs.error_type IS
    'Stable code of the last error (documented list), error_message is the readable text.';

ALTER TABLE conversion_jobs
    ADD CONSTRAINT conversion_jobs_retry_count_check
        CHECK (retry_count >= 0 AND retry_count <= max_retries),
    ADD CONSTRAINT conversion_jobs_max_retries_check
        CHECK (max_retries >= 0),
    ADD CONSTRAINT conversion_jobs_attempt_check
        CHECK (attempt >= 0);

-- At most one active (queued or processing) job per conversion; also the
-- "active jobs of conversion X" lookup of update_conversion_status().
CREATE UNIQUE INDEX uq_conversion_jobs_active_conversion ON conversion_jobs (conversion_id)
    WHERE status IN ('queued', 'processing');

-- All jobs of conversion X (latest job lookup; FK ON DELETE CASCADE from conversions).
CREATE INDEX idx_conversion_jobs_conversion_id ON conversion_jobs (conversion_id);

-- Rescue: SELECT … FROM conversion_jobs WHERE status = 'processing'
--         AND heartbeat_at < now() - $lease FOR UPDATE SKIP LOCKED
CREATE INDEX idx_conversion_jobs_rescue ON conversion_jobs (heartbeat_at)
    WHERE status = 'processing';

-- Jobs held by worker W (release on graceful shutdown, "what is W doing").
CREATE INDEX idx_conversion_jobs_worker ON conversion_jobs (worker_id)
    WHERE status = 'processing';

-- Retention purge of finished jobs: DELETE … WHERE status IN (terminal) AND completed_at < $cutoff.
CREATE INDEX idx_conversion_jobs_finished ON conversion_jobs (completed_at)
    WHERE status IN ('completed', 'failed', 'cancelled');

-- ---------------------------------------------------------------------------
-- conversions: owner, idempotency, result
-- ---------------------------------------------------------------------------

ALTER TABLE conversions
    ADD COLUMN idempotency_key TEXT;

COMMENT ON COLUMN conversions.idempotency_key IS
    'Caller-chosen key: create_conversion() with a key the same owner already used returns the existing conversion.';

ALTER TABLE conversions
    ADD CONSTRAINT conversions_one_owner_check
        CHECK (num_nonnulls(user_id, vendor_id) = 1),
    ADD CONSTRAINT conversions_result_only_when_completed_check
        CHECK (result_image_id IS NULL OR status = 'completed');

-- create_conversion(idempotency_key := …): INSERT … ON CONFLICT DO NOTHING target.
CREATE UNIQUE INDEX uq_conversions_owner_idempotency_key
    ON conversions ((COALESCE(user_id, vendor_id)), idempotency_key)
    WHERE idempotency_key IS NOT NULL;

-- Foreign-key support: deleting an image cascades to / nulls conversions.
CREATE INDEX idx_conversions_user_image_id ON conversions (user_image_id);
CREATE INDEX idx_conversions_cloth_image_id ON conversions (cloth_image_id);
CREATE INDEX idx_conversions_result_image_id ON conversions (result_image_id)
    WHERE result_image_id IS NOT NULL;

-- ---------------------------------------------------------------------------
-- images, image_usage_history, conversion_metrics: foreign-key support
-- ---------------------------------------------------------------------------

-- "Images in album A"; FK ON DELETE SET NULL when an album is deleted.
CREATE INDEX idx_images_album_id ON images (album_id)
    WHERE album_id IS NOT NULL;

-- FK ON DELETE SET NULL when a conversion is deleted; "usage rows of conversion X".
CREATE INDEX idx_image_usage_history_conversion_id ON image_usage_history (conversion_id)
    WHERE conversion_id IS NOT NULL;

-- One metrics row per terminal conversion (update_conversion_status() writes it
-- once; this is the backstop against a second terminal write).
CREATE UNIQUE INDEX uq_conversion_metrics_conversion_id ON conversion_metrics (conversion_id);
-- Per-owner metrics over time; FK ON DELETE CASCADE from users / vendors.
CREATE INDEX idx_conversion_metrics_user_created ON conversion_metrics (user_id, created_at)
    WHERE user_id IS NOT NULL;
CREATE INDEX idx_conversion_metrics_vendor_created ON conversion_metrics (vendor_id, created_at)
    WHERE vendor_id IS NOT NULL;
-- Metrics in a time window (dashboards, model-version comparisons).
CREATE INDEX idx_conversion_metrics_created_at ON conversion_metrics (created_at);

-- ---------------------------------------------------------------------------
-- Worker registry
-- ---------------------------------------------------------------------------

CREATE TABLE workers (
    id TEXT PRIMARY KEY,
    hostname TEXT NOT NULL,
    pid INTEGER NOT NULL,
    concurrency INTEGER,
    model_name TEXT,
    model_version TEXT,
    started_at TIMESTAMPTZ NOT NULL DEFAULT NOW(),
    heartbeat_at TIMESTAMPTZ NOT NULL DEFAULT NOW(),
    stopped_at TIMESTAMPTZ
);

COMMENT ON TABLE workers IS
    'Addition: registry of worker processes (id = conversion_jobs.worker_id), with heartbeat for liveness.';

-- Live workers whose heartbeat is old (dead-worker detection).
CREATE INDEX idx_workers_live_heartbeat ON workers (heartbeat_at)
    WHERE stopped_at IS NULL;

-- ---------------------------------------------------------------------------
-- Status guards: statuses move forward only (docs/architecture.md, invariant 6)
-- ---------------------------------------------------------------------------

-- conversions: pending    -> processing | failed | cancelled
--              processing -> pending (retry/rescue) | completed | failed | cancelled
--              completed, failed, cancelled -> nothing;  same -> same allowed.
-- A terminal conversion's result_image_id can only be cleared (ON DELETE SET NULL).
CREATE FUNCTION guard_conversion_status() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    IF NEW.status IS DISTINCT FROM OLD.status AND NOT (
           (OLD.status = 'pending' AND NEW.status IN ('processing', 'failed', 'cancelled'))
        OR (OLD.status = 'processing' AND NEW.status IN ('pending', 'completed', 'failed', 'cancelled'))
    ) THEN
        RAISE EXCEPTION 'invalid_status_transition: conversion % cannot move from % to %',
                OLD.id, OLD.status, NEW.status
            USING ERRCODE = 'SA021',
                  HINT = 'pending -> processing|failed|cancelled; processing -> pending|completed|failed|cancelled; terminal statuses are final';
    END IF;
    IF NEW.result_image_id IS NOT NULL
       AND NEW.result_image_id IS DISTINCT FROM OLD.result_image_id
       AND OLD.status IN ('completed', 'failed', 'cancelled') THEN
        RAISE EXCEPTION 'invalid_status_transition: conversion % is % and its result cannot change',
                OLD.id, OLD.status
            USING ERRCODE = 'SA021';
    END IF;
    RETURN NEW;
END;
$$;

CREATE TRIGGER trg_conversions_status_guard
    BEFORE UPDATE OF status, result_image_id ON conversions
    FOR EACH ROW
    WHEN (OLD.status IS DISTINCT FROM NEW.status
          OR OLD.result_image_id IS DISTINCT FROM NEW.result_image_id)
    EXECUTE FUNCTION guard_conversion_status();

-- conversion_jobs: queued     -> processing | failed | cancelled
--                  processing -> queued (retry/rescue) | completed | failed | cancelled
--                  completed, failed, cancelled -> nothing;  same -> same allowed.
CREATE FUNCTION guard_conversion_job_status() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    IF NOT (
           (OLD.status = 'queued' AND NEW.status IN ('processing', 'failed', 'cancelled'))
        OR (OLD.status = 'processing' AND NEW.status IN ('queued', 'completed', 'failed', 'cancelled'))
    ) THEN
        RAISE EXCEPTION 'invalid_status_transition: job % cannot move from % to %',
                OLD.id, OLD.status, NEW.status
            USING ERRCODE = 'SA021',
                  HINT = 'queued -> processing|failed|cancelled; processing -> queued|completed|failed|cancelled; terminal statuses are final';
    END IF;
    RETURN NEW;
END;
$$;

CREATE TRIGGER trg_conversion_jobs_status_guard
    BEFORE UPDATE OF status ON conversion_jobs
    FOR EACH ROW
    WHEN (OLD.status IS DISTINCT FROM NEW.status)
    EXECUTE FUNCTION guard_conversion_job_status();

-- ---------------------------------------------------------------------------
-- Dispatch wake-up
-- ---------------------------------------------------------------------------

-- A constant empty payload lets PostgreSQL fold the notifications of one
-- transaction (e.g. a bulk insert) into one; NOTIFY is delivered on commit.
-- The dispatcher LISTENs on stayler_jobs and also sweeps periodically, so a
-- lost notification delays a job but never loses it.
CREATE FUNCTION notify_job_queued() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('stayler_jobs', '');
    RETURN NULL;
END;
$$;

CREATE TRIGGER trg_conversion_jobs_notify
    AFTER INSERT OR UPDATE OF status ON conversion_jobs
    FOR EACH ROW
    WHEN (NEW.status = 'queued')
    EXECUTE FUNCTION notify_job_queued();
