-- The worker registry (workers).
-- Named queries: see schema/README.md ("The query layer") for the naming rule.

-- name: worker_register
INSERT INTO workers (id, hostname, pid, concurrency, model_name, model_version)
VALUES (%(id)s, %(hostname)s, %(pid)s, %(concurrency)s, %(model_name)s, %(model_version)s)
ON CONFLICT (id) DO UPDATE
   SET heartbeat_at = now(), stopped_at = NULL, model_name = EXCLUDED.model_name,
       model_version = EXCLUDED.model_version;

-- name: workers_renew
-- Alive now, even if the rescuer marked it stopped while it was silent; false when the row is gone.
SELECT workers_renew(%(id)s, %(services_down)s);

-- name: worker_stop
UPDATE workers SET stopped_at = now(), heartbeat_at = now() WHERE id = %(id)s;

-- name: workers_mark_stopped
-- Workers whose heartbeat stopped (SIGKILL, lost host) show as stopped.
SELECT workers_mark_stopped(%(stale_after_s)s);

-- name: worker_list_live
-- Live workers (the registry is small) and their in-flight jobs (the processing jobs' partial index).
SELECT w.id, w.hostname, w.pid, w.concurrency, w.model_name, w.model_version, w.started_at, w.heartbeat_at,
       extract(epoch FROM now() - w.heartbeat_at)::float8 AS heartbeat_age_s,
       coalesce(j.in_flight, 0) AS in_flight, w.services_down
  FROM workers w
  LEFT JOIN (SELECT worker_id, count(*) AS in_flight FROM conversion_jobs
              WHERE status = 'processing' GROUP BY worker_id) j ON j.worker_id = w.id
 WHERE w.stopped_at IS NULL
 ORDER BY w.hostname, w.pid;

-- name: worker_list_model_versions
-- Model versions of the live workers, for the filter's suggestions.
SELECT DISTINCT model_version FROM workers WHERE model_version IS NOT NULL ORDER BY 1;
