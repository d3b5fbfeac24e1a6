-- 0110_retention.sql
--
-- Bounded growth (schema/README.md, "Retention"): every prune deletes at most batch_size rows older
-- than its age, oldest first, through an index on the age column, skipping rows another
-- transaction holds. The victims are collected into an array first (id = ANY(ARRAY(…))): these
-- bodies are planned without knowing batch_size, and a join from the victims to the table would
-- then be planned for many rows (a hash join over a sequential scan of the whole table). The leader's retention duty (leader/duties/retention.py) calls them in a loop
-- with the ages from the settings; an age of NULL or <= 0 prunes nothing. Each returns the number of
-- rows deleted.
--
-- Queue bookkeeping (finished jobs, stopped workers) is pruned by default. User data and audit
-- trail (usage history, metrics, operator actions) only when a setting asks for it. Conversions and
-- images are never pruned here: their rows name stored files, which must go first.

-- Stopped workers by stop time (the live ones are served by idx_workers_live_heartbeat).
CREATE INDEX idx_workers_stopped_at ON workers (stopped_at) WHERE stopped_at IS NOT NULL;

-- Finished jobs (completed, failed, cancelled) whose completed_at is older than older_than; served
-- by idx_conversion_jobs_finished. The conversion row keeps its status, result and error message.
CREATE FUNCTION prune_finished_jobs(older_than INTERVAL, batch_size INTEGER DEFAULT 1000) RETURNS INTEGER
LANGUAGE sql AS $$
    WITH gone AS (
        DELETE FROM conversion_jobs j
         WHERE j.id = ANY (ARRAY(
            SELECT j.id FROM conversion_jobs j
             WHERE j.status IN ('completed', 'failed', 'cancelled')
               AND j.completed_at < now() - older_than
               AND older_than > interval '0'
             ORDER BY j.completed_at
             LIMIT batch_size
               FOR UPDATE SKIP LOCKED))
        RETURNING 1
    )
    SELECT count(*)::integer FROM gone
$$;

COMMENT ON FUNCTION prune_finished_jobs(INTERVAL, INTEGER) IS
    'Deletes up to batch_size finished conversion_jobs rows completed more than older_than ago (oldest first); returns the count.';

-- Workers stopped more than older_than ago, and workers that died without stopping (no heartbeat
-- for older_than) and hold no processing job.
CREATE FUNCTION prune_stopped_workers(older_than INTERVAL, batch_size INTEGER DEFAULT 1000) RETURNS INTEGER
LANGUAGE sql AS $$
    WITH doomed AS (
        (SELECT w.id FROM workers w
          WHERE w.stopped_at IS NOT NULL AND w.stopped_at < now() - older_than AND older_than > interval '0'
          ORDER BY w.stopped_at
          LIMIT batch_size)
        UNION
        (SELECT w.id FROM workers w
          WHERE w.stopped_at IS NULL AND w.heartbeat_at < now() - older_than AND older_than > interval '0'
          ORDER BY w.heartbeat_at
          LIMIT batch_size)
    ), locked AS (
        SELECT w.id FROM workers w JOIN doomed d ON d.id = w.id
         WHERE NOT EXISTS (SELECT 1 FROM conversion_jobs j WHERE j.worker_id = w.id AND j.status = 'processing')
         LIMIT batch_size
           FOR UPDATE OF w SKIP LOCKED
    ), gone AS (
        DELETE FROM workers w WHERE w.id = ANY (ARRAY(SELECT locked.id FROM locked)) RETURNING 1
    )
    SELECT count(*)::integer FROM gone
$$;

COMMENT ON FUNCTION prune_stopped_workers(INTERVAL, INTEGER) IS
    'Deletes up to batch_size workers rows stopped (or silent) for more than older_than and holding no processing job; returns the count.';

-- Usage history older than older_than (idx_image_usage_history_created_at). User data: off unless
-- STAYLER_RETENTION_USAGE_HISTORY_AFTER_S is set.
CREATE FUNCTION prune_image_usage_history(older_than INTERVAL, batch_size INTEGER DEFAULT 1000) RETURNS INTEGER
LANGUAGE sql AS $$
    WITH gone AS (
        DELETE FROM image_usage_history h
         WHERE h.id = ANY (ARRAY(
            SELECT h.id FROM image_usage_history h
             WHERE h.created_at < now() - older_than AND older_than > interval '0'
             ORDER BY h.created_at
             LIMIT batch_size
               FOR UPDATE SKIP LOCKED))
        RETURNING 1
    )
    SELECT count(*)::integer FROM gone
$$;

COMMENT ON FUNCTION prune_image_usage_history(INTERVAL, INTEGER) IS
    'Deletes up to batch_size image_usage_history rows older than older_than (oldest first); returns the count.';

-- Metrics older than older_than (idx_conversion_metrics_created_at). Audit data: off by default.
CREATE FUNCTION prune_conversion_metrics(older_than INTERVAL, batch_size INTEGER DEFAULT 1000) RETURNS INTEGER
LANGUAGE sql AS $$
    WITH gone AS (
        DELETE FROM conversion_metrics m
         WHERE m.id = ANY (ARRAY(
            SELECT m.id FROM conversion_metrics m
             WHERE m.created_at < now() - older_than AND older_than > interval '0'
             ORDER BY m.created_at
             LIMIT batch_size
               FOR UPDATE SKIP LOCKED))
        RETURNING 1
    )
    SELECT count(*)::integer FROM gone
$$;

COMMENT ON FUNCTION prune_conversion_metrics(INTERVAL, INTEGER) IS
    'Deletes up to batch_size conversion_metrics rows older than older_than (oldest first); returns the count.';

-- Operator audit rows older than older_than. Audit data: off by default.
CREATE FUNCTION prune_operator_actions(older_than INTERVAL, batch_size INTEGER DEFAULT 1000) RETURNS INTEGER
LANGUAGE sql AS $$
    WITH gone AS (
        DELETE FROM operator_actions a
         WHERE a.id = ANY (ARRAY(
            SELECT a.id FROM operator_actions a
             WHERE a.created_at < now() - older_than AND older_than > interval '0'
             ORDER BY a.created_at
             LIMIT batch_size
               FOR UPDATE SKIP LOCKED))
        RETURNING 1
    )
    SELECT count(*)::integer FROM gone
$$;

COMMENT ON FUNCTION prune_operator_actions(INTERVAL, INTEGER) IS
    'Deletes up to batch_size operator_actions rows older than older_than (oldest first); returns the count.';
