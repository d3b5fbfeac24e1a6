-- 0060_queue_for_real_networks.sql
--
-- The queue under the faults that networks and many hosts bring (docs/architecture.md, "Failure
-- model"). Each part is listed with its reason in schema/README.md, "Additions":
--   * scheduled jobs leave the claim's path: a job waiting on its backoff is flagged `scheduled`
--     and the claim reads an index that holds only ready jobs, so 100,000 jobs in backoff no longer
--     sit at the head of the index the claim walks;
--   * the claim skips jobs whose conversion already ended (the leader ends those jobs);
--   * a claim token per claim, so a worker whose claim reply was lost can hand those jobs back;
--   * suspect jobs: the first time a job is lost with its worker it goes back uncharged and marked
--     suspect; a suspect job is claimed alone, so only a job that kills its worker is charged;
--   * heartbeats lock jobs in id order, like every other multi-job statement (no deadlocks);
--   * the rescue handles each job on its own: one bad row no longer stops the round;
--   * durable cleanup markers instead of a time window;
--   * a leader lease (a row) instead of a session advisory lock.

-- ---------------------------------------------------------------------------
-- conversion_jobs: scheduled, suspect, claim token
-- ---------------------------------------------------------------------------

ALTER TABLE conversion_jobs
    ADD COLUMN scheduled BOOLEAN NOT NULL DEFAULT false,
    ADD COLUMN suspect BOOLEAN NOT NULL DEFAULT false,
    ADD COLUMN claim_token UUID;

COMMENT ON COLUMN conversion_jobs.scheduled IS
    'True while a queued job waits for run_after (set by trigger); the leader clears it when run_after passes. Ready jobs are queued and not scheduled.';
COMMENT ON COLUMN conversion_jobs.suspect IS
    'Set when the job was lost with its worker once: a suspect job is claimed alone and each further loss counts as an attempt.';
COMMENT ON COLUMN conversion_jobs.claim_token IS
    'Random token of the claim that holds the job; lets a worker release a claim whose reply it never received.';

-- Whoever writes the row (Python, plain SQL, the queue functions), `scheduled` follows run_after.
CREATE FUNCTION conversion_jobs_set_scheduled() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    NEW.scheduled := NEW.status = 'queued' AND NEW.run_after > now();
    RETURN NEW;
END;
$$;

CREATE TRIGGER trg_conversion_jobs_scheduled
    BEFORE INSERT OR UPDATE OF status, run_after, scheduled ON conversion_jobs
    FOR EACH ROW EXECUTE FUNCTION conversion_jobs_set_scheduled();

UPDATE conversion_jobs SET scheduled = true WHERE status = 'queued' AND run_after > now();

-- The claim's index: ready jobs only, in claim order.
CREATE INDEX idx_conversion_jobs_ready ON conversion_jobs (priority DESC, created_at)
    WHERE status = 'queued' AND NOT scheduled;

-- The leader's timer and promotion: scheduled jobs by run_after.
DROP INDEX IF EXISTS conversion_jobs_run_after_queued_idx;
CREATE INDEX idx_conversion_jobs_scheduled ON conversion_jobs (run_after)
    WHERE status = 'queued' AND scheduled;

-- Release by claim token.
CREATE INDEX idx_conversion_jobs_claim_token ON conversion_jobs (claim_token)
    WHERE status = 'processing';

-- Jobs whose run_after has passed become ready. Returns how many.
CREATE FUNCTION jobs_promote_scheduled(p_limit integer DEFAULT 10000)
RETURNS integer
LANGUAGE sql AS $$
    WITH due AS (
        SELECT id FROM conversion_jobs
         WHERE status = 'queued' AND scheduled AND run_after <= now()
         ORDER BY run_after
         LIMIT p_limit
           FOR UPDATE SKIP LOCKED
    ), promoted AS (
        UPDATE conversion_jobs j SET scheduled = false FROM due WHERE j.id = due.id RETURNING 1
    )
    SELECT count(*)::integer FROM promoted;
$$;

-- Queued jobs whose conversion already ended (an operator's re-run insert on a finished
-- conversion, for example) can never run: the claim skips them and this ends them, as
-- 'cancelled' when the conversion was cancelled and 'failed' otherwise, with error_type
-- 'conversion_ended'. Returns the jobs ended.
CREATE FUNCTION jobs_end_orphaned(p_limit integer DEFAULT 1000)
RETURNS TABLE (job_id uuid, conversion_id uuid, new_status text)
LANGUAGE sql AS $$
    WITH orphan AS (
        SELECT j.id, c.id AS conversion_id, c.status AS conversion_status
          FROM conversion_jobs j JOIN conversions c ON c.id = j.conversion_id
         WHERE j.status = 'queued' AND c.status IN ('completed', 'failed', 'cancelled')
         ORDER BY j.id
         LIMIT p_limit
           FOR UPDATE OF j SKIP LOCKED
    )
    UPDATE conversion_jobs j
       SET status = CASE WHEN o.conversion_status = 'cancelled' THEN 'cancelled' ELSE 'failed' END,
           error_type = 'conversion_ended',
           error_message = format('conversion %s had already ended (%s); the job never ran',
                                  o.conversion_id, o.conversion_status),
           completed_at = now(), worker_id = NULL, heartbeat_at = NULL
      FROM orphan o
     WHERE j.id = o.id
    RETURNING j.id, o.conversion_id, j.status;
$$;

-- ---------------------------------------------------------------------------
-- Heartbeat: jobs locked in id order (the order of jobs_complete and jobs_release)
-- ---------------------------------------------------------------------------

-- Renew the claims a worker holds; returns the jobs still held. A claim missing from the result
-- was cancelled or rescued, and its work must stop before the result is written.
CREATE FUNCTION jobs_heartbeat(p_job_ids uuid[], p_attempts integer[])
RETURNS TABLE (job_id uuid)
LANGUAGE sql AS $$
    WITH held AS (
        SELECT j.id FROM conversion_jobs j
          JOIN unnest(p_job_ids, p_attempts) AS x(id, attempt) ON x.id = j.id AND x.attempt = j.attempt
         WHERE j.status = 'processing'
         ORDER BY j.id
           FOR UPDATE OF j
    )
    UPDATE conversion_jobs j SET heartbeat_at = now() FROM held WHERE j.id = held.id RETURNING j.id;
$$;

-- Hand back, without penalty, the jobs a claim took when the worker never received the claim's
-- reply (the connection dropped after the server committed). Returns the jobs released.
CREATE FUNCTION jobs_release_claim(p_claim_token uuid)
RETURNS TABLE (job_id uuid)
LANGUAGE sql AS $$
    WITH held AS (
        SELECT j.id, j.conversion_id FROM conversion_jobs j
         WHERE j.claim_token = p_claim_token AND j.status = 'processing'
         ORDER BY j.id
           FOR UPDATE OF j
    ), released AS (
        UPDATE conversion_jobs j
           SET status = 'queued', worker_id = NULL, heartbeat_at = NULL, claim_token = NULL, run_after = now()
          FROM held WHERE j.id = held.id
        RETURNING j.id, j.conversion_id
    ), pending AS (
        UPDATE conversions c SET status = 'pending'
          FROM released WHERE c.id = released.conversion_id AND c.status = 'processing'
        RETURNING c.id
    )
    SELECT released.id FROM released;
$$;

-- ---------------------------------------------------------------------------
-- Durable cleanup markers
-- ---------------------------------------------------------------------------

-- Files that must go: attempt 0 = the whole result folder of a conversion that ended failed or
-- cancelled; attempt n = the files attempt n may have written before it was lost. Written in the
-- same transaction as the move that makes the files garbage, consumed by the leader's clean duty
-- (delete the files, then the marker), so a cleanup is never skipped whatever commits when.
CREATE TABLE storage_cleanup (
    conversion_id UUID NOT NULL,
    attempt INTEGER NOT NULL DEFAULT 0 CHECK (attempt >= 0),
    created_at TIMESTAMPTZ NOT NULL DEFAULT NOW(),
    PRIMARY KEY (conversion_id, attempt)
);

COMMENT ON TABLE storage_cleanup IS
    'Addition: storage files to delete (attempt 0 = the result folder of a failed/cancelled conversion, n = a lost attempt''s files).';

CREATE INDEX idx_storage_cleanup_created_at ON storage_cleanup (created_at);

CREATE FUNCTION conversion_jobs_mark_cleanup() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO storage_cleanup (conversion_id, attempt) VALUES (NEW.conversion_id, 0)
    ON CONFLICT DO NOTHING;
    RETURN NULL;
END;
$$;

CREATE TRIGGER trg_conversion_jobs_cleanup
    AFTER UPDATE OF status ON conversion_jobs
    FOR EACH ROW
    WHEN (NEW.status IN ('failed', 'cancelled') AND OLD.status IS DISTINCT FROM NEW.status)
    EXECUTE FUNCTION conversion_jobs_mark_cleanup();

-- ---------------------------------------------------------------------------
-- Rescue: each job on its own; suspects; cleanup markers
-- ---------------------------------------------------------------------------

-- Put back the jobs of workers whose heartbeat is older than p_stale_after_s.
--   * a job lost for the first time goes back at once, uncharged, marked suspect (it may have been
--     an innocent batch-mate of the job that killed the worker);
--   * a suspect job (it ran alone) is charged: back with backoff while retry_count < max_retries,
--     else failed with error_type 'worker_lost';
--   * a job whose conversion already ended is ended too (error_type 'conversion_ended').
-- Each job runs in its own subtransaction: a job that cannot be rescued is reported with
-- new_status 'error' (and a WARNING) and the others proceed. Every lost attempt leaves a cleanup
-- marker for the files it may have written.
DROP FUNCTION IF EXISTS jobs_rescue(double precision, double precision, double precision, integer);
CREATE FUNCTION jobs_rescue(
    p_stale_after_s double precision, p_backoff_base_s double precision DEFAULT 1,
    p_backoff_max_s double precision DEFAULT 300, p_limit integer DEFAULT 1000)
RETURNS TABLE (job_id uuid, conversion_id uuid, attempt integer, new_status text, error text)
LANGUAGE plpgsql AS $$
DECLARE
    v_job conversion_jobs%ROWTYPE;
    v_conversion_status text;
    v_message text;
BEGIN
    FOR v_job IN
        SELECT * FROM conversion_jobs j
         WHERE j.status = 'processing'
           AND COALESCE(j.heartbeat_at, j.started_at, j.updated_at) < now() - make_interval(secs => p_stale_after_s)
         ORDER BY j.id
         LIMIT p_limit
           FOR UPDATE SKIP LOCKED
    LOOP
        job_id := v_job.id;
        conversion_id := v_job.conversion_id;
        attempt := v_job.attempt;
        error := NULL;
        v_message := format('worker %s stopped sending heartbeats during attempt %s', v_job.worker_id, v_job.attempt);
        BEGIN
            SELECT c.status INTO v_conversion_status FROM conversions c WHERE c.id = v_job.conversion_id FOR UPDATE;
            IF v_conversion_status IS NULL OR v_conversion_status IN ('completed', 'failed', 'cancelled') THEN
                UPDATE conversion_jobs
                   SET status = CASE WHEN v_conversion_status = 'cancelled' THEN 'cancelled' ELSE 'failed' END,
                       error_type = 'conversion_ended',
                       error_message = format('conversion %s had already ended (%s)', v_job.conversion_id,
                                              coalesce(v_conversion_status, 'deleted')),
                       completed_at = now(), worker_id = NULL, heartbeat_at = NULL
                 WHERE id = v_job.id;
                new_status := 'ended';
            ELSIF NOT v_job.suspect THEN
                UPDATE conversion_jobs
                   SET status = 'queued', suspect = true, run_after = now(), error_message = v_message,
                       error_type = 'worker_lost', worker_id = NULL, heartbeat_at = NULL, claim_token = NULL
                 WHERE id = v_job.id;
                UPDATE conversions SET status = 'pending', error_message = v_message
                 WHERE id = v_job.conversion_id AND status = 'processing';
                new_status := 'queued';
            ELSIF v_job.retry_count < v_job.max_retries THEN
                UPDATE conversion_jobs
                   SET status = 'queued', retry_count = retry_count + 1,
                       run_after = now() + job_backoff(v_job.retry_count, p_backoff_base_s, p_backoff_max_s),
                       error_message = v_message, error_type = 'worker_lost', worker_id = NULL,
                       heartbeat_at = NULL, claim_token = NULL
                 WHERE id = v_job.id;
                UPDATE conversions SET status = 'pending', error_message = v_message
                 WHERE id = v_job.conversion_id AND status = 'processing';
                new_status := 'queued';
            ELSE
                PERFORM update_conversion_status(
                    conversion_id := v_job.conversion_id, status := 'failed',
                    error_message := v_message, error_type := 'worker_lost');
                new_status := 'failed';
            END IF;
            INSERT INTO storage_cleanup (conversion_id, attempt) VALUES (v_job.conversion_id, v_job.attempt)
            ON CONFLICT DO NOTHING;
        EXCEPTION WHEN OTHERS THEN
            new_status := 'error';
            error := format('%s (SQLSTATE %s)', SQLERRM, SQLSTATE);
            RAISE WARNING 'jobs_rescue: job % could not be rescued: %', v_job.id, error;
        END;
        RETURN NEXT;
    END LOOP;
END;
$$;

-- ---------------------------------------------------------------------------
-- Worker registry: workers whose heartbeat stopped show as stopped
-- ---------------------------------------------------------------------------

CREATE FUNCTION workers_mark_stopped(p_stale_after_s double precision)
RETURNS integer
LANGUAGE sql AS $$
    WITH stale AS (
        UPDATE workers SET stopped_at = heartbeat_at
         WHERE stopped_at IS NULL AND heartbeat_at < now() - make_interval(secs => p_stale_after_s)
        RETURNING 1
    )
    SELECT count(*)::integer FROM stale;
$$;

-- ---------------------------------------------------------------------------
-- The leader lease
-- ---------------------------------------------------------------------------

-- One row per elected role. The holder renews it well inside its ttl; a standby may take it only
-- once it has lapsed (by the database's clock: hosts' clocks never decide), which bumps the epoch
-- and ends the previous holder's backend when its pid is known, so a frozen leader that wakes up
-- finds its connection gone and its lease taken.
CREATE TABLE leader_lease (
    name TEXT PRIMARY KEY,
    holder TEXT,
    epoch BIGINT NOT NULL DEFAULT 0,
    backend_pid INTEGER,
    acquired_at TIMESTAMPTZ,
    renewed_at TIMESTAMPTZ,
    expires_at TIMESTAMPTZ NOT NULL DEFAULT '-infinity'
);

COMMENT ON TABLE leader_lease IS
    'Addition: the fleet leader''s lease (holder, epoch, expiry by the database clock); see leader_lease_acquire().';

INSERT INTO leader_lease (name) VALUES ('fleet');

-- Take or renew the lease `p_name` for `p_holder`. Returns acquired (the caller holds it now),
-- the epoch, the current holder, seconds until expiry, and the pid whose backend was ended.
CREATE FUNCTION leader_lease_acquire(p_name text, p_holder text, p_ttl_s double precision,
                                     p_backend_pid integer DEFAULT NULL)
RETURNS TABLE (acquired boolean, epoch bigint, holder text, expires_in_s double precision,
               terminated_pid integer)
LANGUAGE plpgsql AS $$
#variable_conflict use_column
DECLARE
    v_lease leader_lease%ROWTYPE;
BEGIN
    INSERT INTO leader_lease (name) VALUES (p_name) ON CONFLICT (name) DO NOTHING;
    SELECT * INTO v_lease FROM leader_lease l WHERE l.name = p_name FOR UPDATE;
    terminated_pid := NULL;
    IF v_lease.holder IS DISTINCT FROM p_holder AND v_lease.expires_at > now() THEN
        acquired := false;
        epoch := v_lease.epoch;
        holder := v_lease.holder;
        expires_in_s := date_part('epoch', v_lease.expires_at - now());
        RETURN NEXT;
        RETURN;
    END IF;
    IF v_lease.holder IS DISTINCT FROM p_holder THEN
        IF v_lease.backend_pid IS NOT NULL AND v_lease.backend_pid IS DISTINCT FROM pg_backend_pid()
           AND v_lease.backend_pid IS DISTINCT FROM p_backend_pid THEN
            BEGIN
                IF pg_terminate_backend(v_lease.backend_pid) THEN
                    terminated_pid := v_lease.backend_pid;
                END IF;
            EXCEPTION WHEN OTHERS THEN
                RAISE WARNING 'leader_lease_acquire: could not end the previous holder''s backend %: %',
                    v_lease.backend_pid, SQLERRM;
            END;
        END IF;
        UPDATE leader_lease l
           SET holder = p_holder, epoch = l.epoch + 1, backend_pid = p_backend_pid, acquired_at = now(),
               renewed_at = now(), expires_at = now() + make_interval(secs => p_ttl_s)
         WHERE l.name = p_name
        RETURNING * INTO v_lease;
    ELSE
        UPDATE leader_lease l
           SET renewed_at = now(), expires_at = now() + make_interval(secs => p_ttl_s),
               backend_pid = COALESCE(p_backend_pid, l.backend_pid)
         WHERE l.name = p_name
        RETURNING * INTO v_lease;
    END IF;
    acquired := true;
    epoch := v_lease.epoch;
    holder := v_lease.holder;
    expires_in_s := p_ttl_s;
    RETURN NEXT;
END;
$$;

-- Renew a held lease. Returns the seconds it now lasts, or NULL when it is no longer held under
-- this epoch (it lapsed and was taken): the caller must stop leading at once.
CREATE FUNCTION leader_lease_renew(p_name text, p_holder text, p_epoch bigint, p_ttl_s double precision)
RETURNS double precision
LANGUAGE sql AS $$
    UPDATE leader_lease
       SET renewed_at = now(), expires_at = now() + make_interval(secs => p_ttl_s)
     WHERE name = p_name AND holder = p_holder AND epoch = p_epoch AND expires_at > now()
    RETURNING p_ttl_s;
$$;

-- Give a held lease up (graceful shutdown): a standby may take it at once.
CREATE FUNCTION leader_lease_release(p_name text, p_holder text, p_epoch bigint)
RETURNS boolean
LANGUAGE sql AS $$
    WITH released AS (
        UPDATE leader_lease SET expires_at = now(), backend_pid = NULL
         WHERE name = p_name AND holder = p_holder AND epoch = p_epoch
        RETURNING 1
    )
    SELECT count(*) > 0 FROM released;
$$;
