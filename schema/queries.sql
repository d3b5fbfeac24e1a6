-- Every statement the producer, dispatcher and worker run, as named blocks. Names are entity +
-- verb. Parameters are bound (%(name)s), never formatted in. schema/queries.py loads this file.

-- name: job_claim_many
-- Claim up to %(limit)s available jobs in one short transaction (DESIGN invariant 2): pick with
-- SKIP LOCKED in a materialised CTE, mark them processing under a new attempt, move their
-- conversions to processing, write a 'convert' usage row, and return what the worker needs.
WITH picked AS MATERIALIZED (
    SELECT id FROM conversion_jobs
     WHERE status = 'queued' AND run_after <= now()
     ORDER BY priority DESC, created_at
     LIMIT %(limit)s
       FOR UPDATE SKIP LOCKED
), claimed AS (
    UPDATE conversion_jobs j
       SET status = 'processing', worker_id = %(worker_id)s, started_at = now(), heartbeat_at = now(),
           attempt = j.attempt + 1
      FROM picked
     WHERE j.id = picked.id
    RETURNING j.id, j.conversion_id, j.attempt, j.retry_count, j.max_retries, j.priority, j.created_at
), conv AS (
    UPDATE conversions c SET status = 'processing'
      FROM claimed
     WHERE c.id = claimed.conversion_id AND c.status IN ('pending', 'processing')
    RETURNING c.id, c.user_id, c.vendor_id, c.user_image_id, c.cloth_image_id, c.conversion_type, c.style_name
), usage AS (
    INSERT INTO image_usage_history (image_id, user_id, vendor_id, conversion_id, action)
    SELECT conv.user_image_id, conv.user_id, conv.vendor_id, conv.id, 'convert' FROM conv
)
SELECT claimed.id AS job_id, claimed.conversion_id, claimed.attempt, claimed.retry_count, claimed.max_retries,
       claimed.created_at AS enqueued_at, conv.conversion_type, conv.style_name,
       ui.file_path AS person_key, ui.file_size AS person_size,
       ci.file_path AS cloth_key, ci.file_size AS cloth_size
  FROM claimed
  JOIN conv ON conv.id = claimed.conversion_id
  JOIN images ui ON ui.id = conv.user_image_id
  JOIN images ci ON ci.id = conv.cloth_image_id
 ORDER BY claimed.priority DESC, claimed.created_at;

-- name: jobs_complete
-- Fenced completion of a batch (see jobs_complete() in 0030_queue_operations.sql).
SELECT job_id, result_image_id FROM jobs_complete(%(items)s::jsonb);

-- name: job_fail
SELECT job_fail(%(job_id)s, %(attempt)s, %(error_type)s, %(error_message)s, %(transient)s,
                %(backoff_base_s)s, %(backoff_max_s)s, %(processing_time_ms)s, %(ai_model_version)s);

-- name: jobs_rescue
SELECT job_id, conversion_id, attempt, new_status
  FROM jobs_rescue(%(stale_after_s)s, %(backoff_base_s)s, %(backoff_max_s)s, %(limit)s);

-- name: jobs_release
SELECT job_id FROM jobs_release(%(job_ids)s::uuid[], %(attempts)s::int[]);

-- name: job_heartbeat_many
-- Renew the lease of the claims this process holds; a claim missing from the result was
-- cancelled or rescued, and its work must stop before the result is written.
UPDATE conversion_jobs j SET heartbeat_at = now()
  FROM unnest(%(job_ids)s::uuid[], %(attempts)s::int[]) AS held(id, attempt)
 WHERE j.id = held.id AND j.attempt = held.attempt AND j.status = 'processing'
RETURNING j.id;

-- name: jobs_count_available
-- How many jobs a worker could claim now, counted no further than %(cap)s (cheap at any size).
SELECT count(*) FROM (
    SELECT 1 FROM conversion_jobs WHERE status = 'queued' AND run_after <= now() LIMIT %(cap)s
) AS available;

-- name: jobs_next_run_after
-- When the next job waiting for its backoff becomes available.
SELECT min(run_after) FROM conversion_jobs WHERE status = 'queued' AND run_after > now();

-- name: worker_register
INSERT INTO workers (id, hostname, pid, concurrency, model_name, model_version)
VALUES (%(id)s, %(hostname)s, %(pid)s, %(concurrency)s, %(model_name)s, %(model_version)s)
ON CONFLICT (id) DO UPDATE
   SET heartbeat_at = now(), stopped_at = NULL, model_name = EXCLUDED.model_name,
       model_version = EXCLUDED.model_version;

-- name: worker_heartbeat
UPDATE workers SET heartbeat_at = now() WHERE id = %(id)s;

-- name: worker_stop
UPDATE workers SET stopped_at = now(), heartbeat_at = now() WHERE id = %(id)s;

-- name: image_insert
INSERT INTO images (id, owner_id, owner_type, album_id, file_path, file_name, original_url, thumbnail_url,
                    file_size, mime_type, width, height, type, is_public, is_free, tags, metadata)
VALUES (%(id)s, %(owner_id)s, %(owner_type)s, %(album_id)s, %(file_path)s, %(file_name)s, %(original_url)s,
        %(thumbnail_url)s, %(file_size)s, %(mime_type)s, %(width)s, %(height)s, %(type)s, %(is_public)s,
        %(is_free)s, %(tags)s, %(metadata)s::jsonb)
RETURNING id;

-- name: image_usage_record
SELECT record_image_usage(image_id := %(image_id)s, user_id := %(user_id)s, vendor_id := %(vendor_id)s,
                          action := %(action)s, conversion_id := %(conversion_id)s,
                          metadata := %(metadata)s::jsonb);

-- name: conversion_create
SELECT create_conversion(user_id := %(user_id)s, vendor_id := %(vendor_id)s,
                         user_image_id := %(user_image_id)s, cloth_image_id := %(cloth_image_id)s,
                         conversion_type := %(conversion_type)s, style_name := %(style_name)s,
                         priority := %(priority)s, max_retries := %(max_retries)s,
                         metadata := %(metadata)s::jsonb, idempotency_key := %(idempotency_key)s);

-- name: conversion_cancel
SELECT cancel_conversion(%(conversion_id)s);

-- name: conversion_get
-- A conversion with its job's attempts and last error, for `stayler status`.
SELECT c.id, c.status, c.user_id, c.vendor_id, c.conversion_type, c.style_name, c.error_message,
       c.processing_time_ms, c.result_image_id, c.created_at, c.updated_at,
       j.id AS job_id, j.status AS job_status, j.attempt, j.retry_count, j.max_retries, j.error_type,
       j.error_message AS job_error_message, j.worker_id, j.run_after, j.started_at, j.completed_at,
       r.file_path AS result_key, r.original_url AS result_url
  FROM conversions c
  LEFT JOIN LATERAL (
      SELECT * FROM conversion_jobs j WHERE j.conversion_id = c.id ORDER BY j.created_at DESC LIMIT 1
  ) j ON true
  LEFT JOIN images r ON r.id = c.result_image_id
 WHERE c.id = ANY(%(ids)s::uuid[]);

-- name: conversion_owner_get
SELECT id, user_id, vendor_id, status FROM conversions WHERE id = %(conversion_id)s;

-- name: conversion_stats
SELECT * FROM get_conversion_stats(p_user_id := %(user_id)s, p_vendor_id := %(vendor_id)s,
                                   p_date_from := %(date_from)s, p_date_to := %(date_to)s);

-- name: image_stats
SELECT * FROM get_image_stats(p_owner_id := %(owner_id)s, p_owner_type := %(owner_type)s,
                              p_image_type := %(image_type)s);

-- name: user_create
INSERT INTO users (email, display_name) VALUES (%(email)s, %(display_name)s) RETURNING id;

-- name: vendor_create
INSERT INTO vendors (name) VALUES (%(name)s) RETURNING id;

-- name: queue_stats
-- The fleet's queue gauges, computed by the elected dispatcher every queue_stats_interval_s. Each
-- part reads a partial index whose size is the queued / processing / recently failed jobs, never
-- the finished history (cheap with 1,000,000 rows in the table). Priorities fold into three bands
-- (low < 0 = normal < high) so the label set stays bounded.
SELECT now() AS as_of,
       (SELECT coalesce(jsonb_object_agg(band, n), '{}'::jsonb) FROM (
            SELECT CASE WHEN priority > 0 THEN 'high' WHEN priority < 0 THEN 'low' ELSE 'normal' END AS band,
                   count(*) AS n
              FROM conversion_jobs WHERE status = 'queued' GROUP BY 1) AS q) AS queued_by_priority,
       (SELECT count(*) FROM conversion_jobs WHERE status = 'queued' AND run_after <= now()) AS available,
       (SELECT coalesce(extract(epoch FROM now() - min(run_after)), 0)::float8
          FROM conversion_jobs WHERE status = 'queued' AND run_after <= now()) AS oldest_available_age_s,
       (SELECT count(*) FROM conversion_jobs WHERE status = 'processing') AS processing,
       (SELECT coalesce(jsonb_object_agg(error_type, n), '{}'::jsonb) FROM (
            SELECT coalesce(error_type, 'unknown') AS error_type, count(*) AS n
              FROM conversion_jobs WHERE status = 'failed' AND completed_at > now() - interval '1 hour'
             GROUP BY 1) AS f) AS failed_last_hour,
       (SELECT count(*) FROM workers
         WHERE stopped_at IS NULL AND heartbeat_at > now() - make_interval(secs => %(alive_within_s)s)
       ) AS workers_alive;

-- name: jobs_cancelled_between
-- Jobs cancelled in (since, until], by conversion type: the leader turns these into a counter.
SELECT c.conversion_type, count(*)
  FROM conversion_jobs j JOIN conversions c ON c.id = j.conversion_id
 WHERE j.status = 'cancelled' AND j.completed_at > %(since)s AND j.completed_at <= %(until)s
 GROUP BY 1;

-- name: jobs_ended_without_result_between
-- Conversions whose job ended failed or cancelled in (since, until]: any result file a lost attempt
-- left under results/<conversion>/ must go (served by idx_conversion_jobs_failed_cancelled).
SELECT conversion_id FROM conversion_jobs
 WHERE status IN ('failed', 'cancelled') AND completed_at > %(since)s AND completed_at <= %(until)s;

-- name: clock_now
SELECT now();
