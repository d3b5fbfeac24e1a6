-- Conversions: created, cancelled, deleted and read by owners, the API, the console and the CLI.
-- Named queries: see schema/README.md ("The query layer") for the naming rule.

-- name: create_conversion
SELECT create_conversion(user_id := %(user_id)s, vendor_id := %(vendor_id)s,
                         user_image_id := %(user_image_id)s, cloth_image_id := %(cloth_image_id)s,
                         conversion_type := %(conversion_type)s, style_name := %(style_name)s,
                         priority := %(priority)s, max_retries := %(max_retries)s,
                         metadata := %(metadata)s::jsonb, idempotency_key := %(idempotency_key)s);

-- name: cancel_conversion
-- The owner's cancel: SA024 not_owner for anyone else (0100).
SELECT cancel_conversion(conversion_id := %(conversion_id)s, user_id := %(user_id)s, vendor_id := %(vendor_id)s);

-- name: conversion_get_many
-- Conversions with their job's attempts and last error, for `stayler status`.
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

-- name: get_conversion_stats
SELECT * FROM get_conversion_stats(p_user_id := %(user_id)s, p_vendor_id := %(vendor_id)s,
                                   p_date_from := %(date_from)s, p_date_to := %(date_to)s);

-- name: conversion_get_owned
-- One conversion of one owner (another owner's reads as missing), with its latest job and result.
SELECT c.id, c.status, c.user_id, c.vendor_id, c.user_image_id, c.cloth_image_id, c.conversion_type,
       c.style_name, c.metadata, c.error_message, c.processing_time_ms, c.result_image_id, c.created_at,
       c.updated_at, j.priority, j.attempt, j.retry_count, j.max_retries, j.error_type, j.started_at,
       j.completed_at, r.file_path AS result_key, r.mime_type AS result_mime_type,
       r.metadata ->> 'attempt' AS result_attempt
  FROM conversions c
  LEFT JOIN LATERAL (
      SELECT * FROM conversion_jobs j WHERE j.conversion_id = c.id ORDER BY j.created_at DESC LIMIT 1
  ) j ON true
  LEFT JOIN images r ON r.id = c.result_image_id
 WHERE c.id = %(id)s AND (c.user_id = %(user_id)s OR c.vendor_id = %(vendor_id)s);

-- name: conversion_get_request_by_idempotency_key
-- The conversion an owner created with a key, with what the request asked for (to compare payloads).
SELECT c.id, c.user_image_id, c.cloth_image_id, c.conversion_type, c.style_name, c.metadata,
       j.priority, j.max_retries
  FROM conversions c
  LEFT JOIN LATERAL (
      SELECT priority, max_retries FROM conversion_jobs j WHERE j.conversion_id = c.id
       ORDER BY j.created_at LIMIT 1
  ) j ON true
 WHERE COALESCE(c.user_id, c.vendor_id) = %(owner_id)s AND c.idempotency_key = %(idempotency_key)s;

-- name: conversion_list_user
-- A user's conversions, newest first, keyset-paginated on (created_at, id).
SELECT id FROM conversions
 WHERE user_id = %(owner_id)s AND (%(status)s::text IS NULL OR status = %(status)s::text)
   AND (%(after_created_at)s::timestamptz IS NULL
        OR (created_at, id) < (%(after_created_at)s::timestamptz, %(after_id)s::uuid))
 ORDER BY created_at DESC, id DESC
 LIMIT %(limit)s;

-- name: conversion_list_vendor
SELECT id FROM conversions
 WHERE vendor_id = %(owner_id)s AND (%(status)s::text IS NULL OR status = %(status)s::text)
   AND (%(after_created_at)s::timestamptz IS NULL
        OR (created_at, id) < (%(after_created_at)s::timestamptz, %(after_id)s::uuid))
 ORDER BY created_at DESC, id DESC
 LIMIT %(limit)s;

-- name: conversion_get_many_owned
-- Several conversions of one owner (a page of conversion_list_*), same columns as conversion_get_owned.
SELECT c.id, c.status, c.user_id, c.vendor_id, c.user_image_id, c.cloth_image_id, c.conversion_type,
       c.style_name, c.metadata, c.error_message, c.processing_time_ms, c.result_image_id, c.created_at,
       c.updated_at, j.priority, j.attempt, j.retry_count, j.max_retries, j.error_type, j.started_at,
       j.completed_at, r.file_path AS result_key, r.mime_type AS result_mime_type,
       r.metadata ->> 'attempt' AS result_attempt
  FROM conversions c
  LEFT JOIN LATERAL (
      SELECT * FROM conversion_jobs j WHERE j.conversion_id = c.id ORDER BY j.created_at DESC LIMIT 1
  ) j ON true
  LEFT JOIN images r ON r.id = c.result_image_id
 WHERE c.id = ANY(%(ids)s::uuid[]) AND (c.user_id = %(user_id)s OR c.vendor_id = %(vendor_id)s)
 ORDER BY c.created_at DESC, c.id DESC;

-- name: conversion_list_statuses
-- The status of each conversion found (producer.wait, api waiting).
SELECT id, status FROM conversions WHERE id = ANY(%(ids)s::uuid[]);

-- name: conversion_get_owner
SELECT user_id, vendor_id FROM conversions WHERE id = %(conversion_id)s;

-- name: conversion_list_page
-- One page of conversions, newest first, keyset on (created_at, id). Every filter is optional: the
-- caller runs it unprepared, so the planner sees the values and drops the absent ones, and picks
-- (status, created_at), (user_id, created_at), (vendor_id, created_at) or (created_at).
SELECT c.id, c.created_at AS sort_at
  FROM conversions c
 WHERE (%(status)s::text IS NULL OR c.status = %(status)s::text)
   AND (%(user_id)s::uuid IS NULL OR c.user_id = %(user_id)s::uuid)
   AND (%(vendor_id)s::uuid IS NULL OR c.vendor_id = %(vendor_id)s::uuid)
   AND (%(since)s::timestamptz IS NULL OR c.created_at >= %(since)s::timestamptz)
   AND (%(until)s::timestamptz IS NULL OR c.created_at < %(until)s::timestamptz)
   AND (%(after_at)s::timestamptz IS NULL OR (c.created_at, c.id) < (%(after_at)s::timestamptz, %(after_id)s::uuid))
 ORDER BY c.created_at DESC, c.id DESC
 LIMIT %(limit)s;

-- name: conversion_list_page_by_outcome
-- A page filtered on the outcome (error type or model version): driven by conversion_metrics'
-- (error_type, created_at) or (ai_model_version, created_at) index, newest end first, keyset on
-- (metrics.created_at, conversion id).
SELECT m.conversion_id AS id, m.created_at AS sort_at
  FROM conversion_metrics m
  JOIN conversions c ON c.id = m.conversion_id
 WHERE (%(error_type)s::text IS NULL OR m.error_type = %(error_type)s::text)
   AND (%(model_version)s::text IS NULL OR m.ai_model_version = %(model_version)s::text)
   AND (%(status)s::text IS NULL OR c.status = %(status)s::text)
   AND (%(user_id)s::uuid IS NULL OR c.user_id = %(user_id)s::uuid)
   AND (%(vendor_id)s::uuid IS NULL OR c.vendor_id = %(vendor_id)s::uuid)
   AND (%(since)s::timestamptz IS NULL OR m.created_at >= %(since)s::timestamptz)
   AND (%(until)s::timestamptz IS NULL OR m.created_at < %(until)s::timestamptz)
   AND (%(after_at)s::timestamptz IS NULL
        OR (m.created_at, m.conversion_id) < (%(after_at)s::timestamptz, %(after_id)s::uuid))
 ORDER BY m.created_at DESC, m.conversion_id DESC
 LIMIT %(limit)s;

-- name: conversion_get_rows
-- The list's columns for a page of ids (primary key, the jobs' conversion_id index, the metrics' unique index).
SELECT c.id, c.status, c.user_id, c.vendor_id, c.style_name, c.conversion_type, c.created_at, c.updated_at,
       c.processing_time_ms, c.error_message, c.retry_of,
       j.priority, j.attempt, j.error_type, j.worker_id, m.ai_model_version
  FROM conversions c
  LEFT JOIN LATERAL (
      SELECT priority, attempt, error_type, worker_id FROM conversion_jobs j
       WHERE j.conversion_id = c.id ORDER BY j.created_at DESC LIMIT 1
  ) j ON true
  LEFT JOIN conversion_metrics m ON m.conversion_id = c.id
 WHERE c.id = ANY(%(ids)s::uuid[]);

-- name: conversion_get_detail
SELECT c.*, c.retry_of,
       r.file_path AS result_key, r.mime_type AS result_mime_type, r.metadata ->> 'attempt' AS result_attempt
  FROM conversions c
  LEFT JOIN images r ON r.id = c.result_image_id
 WHERE c.id = %(id)s;

-- name: conversion_list_retries
SELECT id, status, created_at FROM conversions WHERE retry_of = %(id)s ORDER BY created_at;

-- name: conversion_get_id_by_idempotency_key
-- The conversion an owner created with an idempotency key (a batch row's outcome, read back after
-- its connection broke, or found when the same CSV is submitted again).
SELECT id FROM conversions
 WHERE COALESCE(user_id, vendor_id) = %(owner_id)s AND idempotency_key = %(idempotency_key)s;

-- name: conversion_count_owner_today
-- Conversions an owner created on a plan since the start of the UTC day (its daily quota; the
-- per-owner (user_id|vendor_id, created_at) indexes of conversions), counted no further than %(cap)s.
-- A vendor's plan is 'vendor' whatever its conversions' type; a user's is the conversion_type.
SELECT count(*) FROM (
    SELECT 1 FROM conversions c
     WHERE (c.user_id = %(user_id)s::uuid OR c.vendor_id = %(vendor_id)s::uuid)
       AND c.created_at >= date_trunc('day', now() AT TIME ZONE 'UTC') AT TIME ZONE 'UTC'
       AND (%(vendor_id)s::uuid IS NOT NULL OR c.conversion_type = %(conversion_type)s)
     LIMIT %(cap)s
) AS today;

-- name: delete_conversion
-- DELETE /v1/conversions/{id}: returns the object keys marked for deletion.
SELECT delete_conversion(conversion_id := %(conversion_id)s, user_id := %(user_id)s, vendor_id := %(vendor_id)s);

-- name: conversion_count_trend
-- Submitted and ended per 10 minutes over the last hour (conversions' and conversion_metrics'
-- created_at indexes): more in than out is a growing queue.
WITH buckets AS (
    SELECT generate_series(date_bin('10 minutes', now() - interval '50 minutes', 'epoch'::timestamptz),
                           date_bin('10 minutes', now(), 'epoch'::timestamptz), interval '10 minutes') AS bucket
), submitted AS (
    SELECT date_bin('10 minutes', created_at, 'epoch'::timestamptz) AS bucket, count(*) AS n
      FROM conversions WHERE created_at >= date_bin('10 minutes', now() - interval '50 minutes', 'epoch'::timestamptz)
     GROUP BY 1
), ended AS (
    SELECT date_bin('10 minutes', created_at, 'epoch'::timestamptz) AS bucket, count(*) AS n
      FROM conversion_metrics
     WHERE created_at >= date_bin('10 minutes', now() - interval '50 minutes', 'epoch'::timestamptz)
     GROUP BY 1
)
SELECT b.bucket, coalesce(s.n, 0) AS submitted, coalesce(e.n, 0) AS ended
  FROM buckets b LEFT JOIN submitted s USING (bucket) LEFT JOIN ended e USING (bucket)
 ORDER BY b.bucket;
