-- Every statement the producer, dispatcher and worker run, as named blocks. Names are entity +
-- verb. Parameters are bound (%(name)s), never formatted in. schema/queries.py loads this file.

-- name: job_claim_batch
-- Claim up to %(limit)s ready jobs in one short transaction, fairly between owners (docs/
-- architecture.md, "Fair share"). `capped`: the owners at their cap now (a few: the busy load
-- rows). `slots`: the head of the ready index in fair order (band, then virtual start) with SKIP
-- LOCKED, only jobs whose conversion can still run and whose owner is not capped. `owners`: the load
-- rows of those owners whose plan has a cap, locked in owner order and read as committed now, so
-- two claims never take one owner past its cap. `best`: each owner's own best jobs (its priority,
-- then its order: virtual start), as many as it got slots and has room for. A slot left queued takes the virtual start of
-- the job claimed in its place (`swapped`), so an owner spends its earliest virtual times whichever
-- of its jobs runs; the clock moves to the latest virtual start spent (written and locked only when it moves
-- forward: with many owners at one virtual time most claims leave it alone). The chosen jobs are marked
-- processing under a new attempt and the caller's claim token, their conversions move to
-- processing, a conversion's first attempt writes the 'convert' usage row (usage counts
-- conversions, not attempts), and the worker gets what it needs. A suspect job (lost with a worker
-- before) runs alone in its process: only a caller holding nothing (%(allow_suspect)s) may take one,
-- and then the batch is that job alone when it heads the claim; otherwise suspects are left for
-- later. While an operator has paused dispatch (fleet_controls, the console) nothing is claimed.
WITH capped AS MATERIALIZED (
    SELECT coalesce(array_agg(o.owner_id), '{}') AS ids FROM owner_load o
      JOIN owner_lanes l ON l.owner_id = o.owner_id
      JOIN fair_plans p ON p.plan = l.plan
     WHERE o.processing > 0 AND p.max_processing > 0 AND o.processing >= p.max_processing
), slots AS MATERIALIZED (
    SELECT j.id, j.owner_id, j.vstart,
           row_number() OVER (ORDER BY j.band DESC, j.vstart, j.created_at) AS pos
      FROM (SELECT j.id, j.owner_id, j.vstart, j.band, j.created_at FROM conversion_jobs j
             WHERE j.status = 'queued' AND NOT j.scheduled AND j.run_after <= now()
               AND EXISTS (SELECT 1 FROM conversions c WHERE c.id = j.conversion_id AND c.status IN ('pending', 'processing'))
               AND NOT EXISTS (SELECT 1 FROM fleet_controls f WHERE f.dispatch_paused)
               AND NOT fair_owner_in(j.owner_id, (SELECT ids FROM capped)::uuid[])
             ORDER BY j.band DESC, j.vstart, j.created_at
             LIMIT %(limit)s
               FOR UPDATE OF j SKIP LOCKED) AS j
), owners AS MATERIALIZED (
    SELECT o.owner_id, o.processing FROM owner_load o
     WHERE o.owner_id IN (SELECT s.owner_id FROM slots s
                            JOIN owner_lanes l ON l.owner_id = s.owner_id
                            JOIN fair_plans p ON p.plan = l.plan AND p.max_processing > 0)
     ORDER BY o.owner_id
       FOR UPDATE OF o
), room AS MATERIALIZED (
    SELECT s.owner_id, min(s.pos) AS first_pos,
           CASE WHEN coalesce(max(p.max_processing), 0) = 0 THEN count(*)
                ELSE LEAST(count(*), GREATEST(max(p.max_processing) - coalesce(max(o.processing), 0), 0))
           END AS room
      FROM slots s
      LEFT JOIN owners o ON o.owner_id = s.owner_id
      LEFT JOIN owner_lanes l ON l.owner_id = s.owner_id
      LEFT JOIN fair_plans p ON p.plan = l.plan
     GROUP BY s.owner_id
), best AS MATERIALIZED (
    SELECT b.id, b.suspect, b.owner_id, b.vstart, r.first_pos, b.rn
      FROM room r CROSS JOIN LATERAL (
        SELECT j.id, j.suspect, j.owner_id, j.vstart,
               row_number() OVER (ORDER BY j.priority DESC, j.vstart) AS rn
          FROM (SELECT j.id, j.suspect, j.owner_id, j.vstart, j.priority FROM conversion_jobs j
                 WHERE j.owner_id = r.owner_id AND j.status = 'queued' AND NOT j.scheduled AND j.run_after <= now()
                   AND EXISTS (SELECT 1 FROM conversions c WHERE c.id = j.conversion_id AND c.status IN ('pending', 'processing'))
                 ORDER BY j.priority DESC, j.vstart
                 LIMIT r.room
                   FOR UPDATE OF j SKIP LOCKED) AS j
      ) AS b
     WHERE b.rn <= r.room
     LIMIT %(limit)s
), ordered AS (
    SELECT b.*, row_number() OVER (ORDER BY b.first_pos, b.rn) AS pos FROM best b
), head AS (
    SELECT id, suspect FROM ordered WHERE pos = 1
), chosen AS (
    SELECT p.id, p.owner_id, p.vstart FROM ordered p, head h
     WHERE CASE WHEN h.suspect AND %(allow_suspect)s THEN p.id = h.id ELSE NOT p.suspect END
     LIMIT %(limit)s
), spent AS (
    SELECT s.id, s.owner_id, s.vstart,
           row_number() OVER (PARTITION BY s.owner_id ORDER BY s.vstart, s.id) AS k
      FROM slots s WHERE s.owner_id IN (SELECT owner_id FROM chosen)
), taken AS (
    SELECT owner_id, count(*) AS n FROM chosen GROUP BY owner_id
), swapped AS (
    UPDATE conversion_jobs j SET vstart = n.vstart
      FROM (SELECT s.id, s.owner_id, row_number() OVER (PARTITION BY s.owner_id ORDER BY s.vstart, s.id) AS k
              FROM spent s WHERE s.id NOT IN (SELECT id FROM chosen)) AS u
      JOIN (SELECT c.owner_id, c.vstart, row_number() OVER (PARTITION BY c.owner_id ORDER BY c.vstart, c.id) AS k
              FROM chosen c WHERE c.id NOT IN (SELECT id FROM slots)) AS n
        ON n.owner_id = u.owner_id AND n.k = u.k
     WHERE j.id = u.id
), clock AS (
    UPDATE fair_clock SET vtime = x.v
      FROM (SELECT max(s.vstart) AS v FROM spent s JOIN taken t ON t.owner_id = s.owner_id WHERE s.k <= t.n) AS x
     WHERE x.v > fair_clock.vtime
), claimed AS (
    UPDATE conversion_jobs j
       SET status = 'processing', worker_id = %(worker_id)s, started_at = now(), heartbeat_at = now(),
           attempt = j.attempt + 1, claim_token = %(claim_token)s
      FROM chosen
     WHERE j.id = chosen.id
    RETURNING j.id, j.conversion_id, j.attempt, j.retry_count, j.max_retries, j.priority, j.created_at, j.suspect
), conv AS (
    UPDATE conversions c SET status = 'processing'
      FROM claimed
     WHERE c.id = claimed.conversion_id AND c.status IN ('pending', 'processing')
    RETURNING c.id, c.user_id, c.vendor_id, c.user_image_id, c.cloth_image_id, c.conversion_type, c.style_name
), usage AS (
    INSERT INTO image_usage_history (image_id, user_id, vendor_id, conversion_id, action)
    SELECT conv.user_image_id, conv.user_id, conv.vendor_id, conv.id, 'convert'
      FROM conv JOIN claimed ON claimed.conversion_id = conv.id
     WHERE claimed.attempt = 1
)
SELECT claimed.id AS job_id, claimed.conversion_id, claimed.attempt, claimed.retry_count, claimed.max_retries,
       claimed.created_at AS enqueued_at, conv.conversion_type, conv.style_name,
       ui.file_path AS person_key, ui.file_size AS person_size,
       ci.file_path AS cloth_key, ci.file_size AS cloth_size, claimed.suspect
  FROM claimed
  JOIN conv ON conv.id = claimed.conversion_id
  JOIN images ui ON ui.id = conv.user_image_id
  JOIN images ci ON ci.id = conv.cloth_image_id
 ORDER BY claimed.priority DESC, claimed.created_at;

-- name: job_complete_batch
-- Fenced completion of a batch (jobs_complete(): the latest definition is listed in schema/README.md).
SELECT job_id, result_image_id FROM jobs_complete(%(items)s::jsonb);

-- name: job_outcome_batch
-- After an ambiguous commit (the connection dropped during a completion): what the database holds
-- for these jobs, so files are deleted only when their attempt did not complete.
SELECT j.id AS job_id, j.status, j.attempt, r.file_path AS result_key
  FROM conversion_jobs j
  JOIN conversions c ON c.id = j.conversion_id
  LEFT JOIN images r ON r.id = c.result_image_id
 WHERE j.id = ANY(%(job_ids)s::uuid[]);

-- name: job_fail
SELECT job_fail(%(job_id)s, %(attempt)s, %(error_type)s, %(error_message)s, %(transient)s,
                %(backoff_base_s)s, %(backoff_max_s)s, %(processing_time_ms)s, %(ai_model_version)s);

-- name: job_rescue_stale
SELECT job_id, conversion_id, attempt, new_status, error
  FROM jobs_rescue(%(stale_after_s)s, %(backoff_base_s)s, %(backoff_max_s)s, %(limit)s);

-- name: job_end_orphaned
SELECT job_id, conversion_id, new_status FROM jobs_end_orphaned(%(limit)s);

-- name: job_promote_scheduled
SELECT jobs_promote_scheduled(%(limit)s);

-- name: job_release_batch
SELECT job_id FROM jobs_release(%(job_ids)s::uuid[], %(attempts)s::int[]);

-- name: job_release_claim
-- Hand back whatever a claim took whose reply never arrived (connection dropped mid-claim).
SELECT job_id FROM jobs_release_claim(%(claim_token)s);

-- name: job_renew_batch
-- Renew the lease of the claims this process holds (jobs locked in id order); a claim missing
-- from the result was cancelled or rescued, and its work must stop before the result is written.
SELECT job_id FROM jobs_heartbeat(%(job_ids)s::uuid[], %(attempts)s::int[]);

-- name: job_count_ready
-- How many jobs a worker could claim now, counted no further than %(cap)s (cheap at any size).
SELECT count(*) FROM (
    SELECT 1 FROM conversion_jobs
     WHERE status = 'queued' AND NOT scheduled AND run_after <= now()
     LIMIT %(cap)s
) AS ready;

-- name: job_next_scheduled_in
-- Seconds (by the database's clock) until the next scheduled job becomes due; NULL when none.
-- (GREATEST would turn the NULL of an empty set into 0: the caller clamps negatives itself.)
SELECT date_part('epoch', min(run_after) - now())::float8
  FROM conversion_jobs WHERE status = 'queued' AND scheduled;

-- name: worker_register
INSERT INTO workers (id, hostname, pid, concurrency, model_name, model_version)
VALUES (%(id)s, %(hostname)s, %(pid)s, %(concurrency)s, %(model_name)s, %(model_version)s)
ON CONFLICT (id) DO UPDATE
   SET heartbeat_at = now(), stopped_at = NULL, model_name = EXCLUDED.model_name,
       model_version = EXCLUDED.model_version;

-- name: worker_renew
-- Alive now, even if the rescuer marked it stopped while it was silent; false when the row is gone.
SELECT workers_renew(%(id)s, %(services_down)s);

-- name: worker_stop
UPDATE workers SET stopped_at = now(), heartbeat_at = now() WHERE id = %(id)s;

-- name: worker_mark_stopped
-- Workers whose heartbeat stopped (SIGKILL, lost host) show as stopped.
SELECT workers_mark_stopped(%(stale_after_s)s);

-- name: leader_lease_acquire
SELECT acquired, epoch, holder, expires_in_s, terminated_pid
  FROM leader_lease_acquire(%(name)s, %(holder)s, %(ttl_s)s, %(backend_pid)s);

-- name: leader_lease_renew
SELECT leader_lease_renew(%(name)s, %(holder)s, %(epoch)s, %(ttl_s)s);

-- name: leader_lease_release
SELECT leader_lease_release(%(name)s, %(holder)s, %(epoch)s);

-- name: leader_lease_get
SELECT name, holder, epoch, backend_pid, acquired_at, renewed_at, expires_at,
       date_part('epoch', expires_at - now())::float8 AS expires_in_s
  FROM leader_lease WHERE name = %(name)s;

-- name: storage_cleanup_list
-- Pending cleanup markers, oldest first, with their conversion's status (NULL: deleted).
SELECT m.conversion_id, m.attempt, c.status AS conversion_status
  FROM storage_cleanup m LEFT JOIN conversions c ON c.id = m.conversion_id
 ORDER BY m.created_at
 LIMIT %(limit)s;

-- name: storage_cleanup_done
DELETE FROM storage_cleanup WHERE conversion_id = %(conversion_id)s AND attempt = %(attempt)s;

-- name: image_register
-- An uploaded person or garment image under the key the system issues for its id (0100: register_image()
-- refuses any other key with SA026 and writes the upload usage row).
SELECT register_image(image_id := %(image_id)s, owner_id := %(owner_id)s, owner_type := %(owner_type)s,
                      type := %(type)s, mime_type := %(mime_type)s, file_size := %(file_size)s,
                      file_path := %(file_path)s, file_name := %(file_name)s, original_url := %(original_url)s,
                      thumbnail_url := %(thumbnail_url)s, width := %(width)s, height := %(height)s,
                      album_id := %(album_id)s, is_public := %(is_public)s, is_free := %(is_free)s,
                      tags := %(tags)s, metadata := %(metadata)s::jsonb);

-- name: conversion_create
SELECT create_conversion(user_id := %(user_id)s, vendor_id := %(vendor_id)s,
                         user_image_id := %(user_image_id)s, cloth_image_id := %(cloth_image_id)s,
                         conversion_type := %(conversion_type)s, style_name := %(style_name)s,
                         priority := %(priority)s, max_retries := %(max_retries)s,
                         metadata := %(metadata)s::jsonb, idempotency_key := %(idempotency_key)s);

-- name: conversion_cancel
-- The owner's cancel: SA024 not_owner for anyone else (0100).
SELECT cancel_conversion(conversion_id := %(conversion_id)s, user_id := %(user_id)s, vendor_id := %(vendor_id)s);

-- name: conversion_cancel_operator
-- The operator's cancel, written to operator_actions (0100).
SELECT operator_cancel_conversion(conversion_id := %(conversion_id)s, operator := %(operator)s,
                                  reason := %(reason)s);

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

-- name: conversion_stats_get
SELECT * FROM get_conversion_stats(p_user_id := %(user_id)s, p_vendor_id := %(vendor_id)s,
                                   p_date_from := %(date_from)s, p_date_to := %(date_to)s);

-- name: image_stats_get
SELECT * FROM get_image_stats(p_owner_id := %(owner_id)s, p_owner_type := %(owner_type)s,
                              p_image_type := %(image_type)s);

-- name: retention_prune_jobs
-- Up to %(batch_size)s finished jobs completed more than %(older_than_s)s seconds ago (0110).
SELECT prune_finished_jobs(make_interval(secs => %(older_than_s)s), %(batch_size)s);

-- name: retention_prune_workers
SELECT prune_stopped_workers(make_interval(secs => %(older_than_s)s), %(batch_size)s);

-- name: retention_prune_usage_history
SELECT prune_image_usage_history(make_interval(secs => %(older_than_s)s), %(batch_size)s);

-- name: retention_prune_metrics
SELECT prune_conversion_metrics(make_interval(secs => %(older_than_s)s), %(batch_size)s);

-- name: retention_prune_operator_actions
SELECT prune_operator_actions(make_interval(secs => %(older_than_s)s), %(batch_size)s);

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
       (SELECT count(*) FROM conversion_jobs WHERE status = 'queued' AND NOT scheduled) AS available,
       (SELECT count(*) FROM conversion_jobs WHERE status = 'queued' AND scheduled) AS scheduled,
       (SELECT coalesce(extract(epoch FROM now() - min(run_after)), 0)::float8
          FROM conversion_jobs WHERE status = 'queued' AND NOT scheduled) AS oldest_available_age_s,
       (SELECT count(*) FROM conversion_jobs WHERE status = 'processing') AS processing,
       (SELECT coalesce(jsonb_object_agg(error_type, n), '{}'::jsonb) FROM (
            SELECT coalesce(error_type, 'unknown') AS error_type, count(*) AS n
              FROM conversion_jobs WHERE status = 'failed' AND completed_at > now() - interval '1 hour'
             GROUP BY 1) AS f) AS failed_last_hour,
       (SELECT count(*) FROM workers
         WHERE stopped_at IS NULL AND heartbeat_at > now() - make_interval(secs => %(alive_within_s)s)
       ) AS workers_alive;

-- name: job_count_cancelled_between
-- Jobs cancelled in (since, until], by conversion type: the leader turns these into a counter.
SELECT c.conversion_type, count(*)
  FROM conversion_jobs j JOIN conversions c ON c.id = j.conversion_id
 WHERE j.status = 'cancelled' AND j.completed_at > %(since)s AND j.completed_at <= %(until)s
 GROUP BY 1;

-- name: clock_now
SELECT now();

-- name: api_key_create
-- The HTTP API's keys (api/keys.py): only the SHA-256 of a key is stored.
INSERT INTO api_keys (key_hash, key_prefix, name, scope, user_id, vendor_id)
VALUES (%(key_hash)s, %(key_prefix)s, %(name)s, %(scope)s, %(user_id)s, %(vendor_id)s)
RETURNING id, created_at;

-- name: api_key_authenticate
-- The owner and scope of a live key; last_used_at is written at most once a minute per key.
WITH k AS (
    SELECT id, scope, user_id, vendor_id, last_used_at FROM api_keys
     WHERE key_hash = %(key_hash)s AND revoked_at IS NULL
), touched AS (
    UPDATE api_keys a SET last_used_at = now()
      FROM k
     WHERE a.id = k.id AND (k.last_used_at IS NULL OR k.last_used_at < now() - interval '1 minute')
)
SELECT id, scope, user_id, vendor_id FROM k;

-- name: api_key_list
SELECT id, key_prefix, name, scope, user_id, vendor_id, created_at, last_used_at, revoked_at
  FROM api_keys
 WHERE (%(user_id)s::uuid IS NULL OR user_id = %(user_id)s::uuid)
   AND (%(vendor_id)s::uuid IS NULL OR vendor_id = %(vendor_id)s::uuid)
 ORDER BY created_at, id;

-- name: api_key_revoke
UPDATE api_keys SET revoked_at = COALESCE(revoked_at, now()) WHERE id = %(id)s RETURNING id, revoked_at;

-- name: api_conversion_get
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

-- name: api_conversion_by_idempotency_key
-- The conversion an owner created with a key, with what the request asked for (to compare payloads).
SELECT c.id, c.user_image_id, c.cloth_image_id, c.conversion_type, c.style_name, c.metadata,
       j.priority, j.max_retries
  FROM conversions c
  LEFT JOIN LATERAL (
      SELECT priority, max_retries FROM conversion_jobs j WHERE j.conversion_id = c.id
       ORDER BY j.created_at LIMIT 1
  ) j ON true
 WHERE COALESCE(c.user_id, c.vendor_id) = %(owner_id)s AND c.idempotency_key = %(idempotency_key)s;

-- name: api_idempotency_lock
-- Held until the creating transaction ends: a second request with the same key meanwhile gets 409.
SELECT pg_try_advisory_xact_lock(%(lock_key)s);

-- name: api_image_accessible
-- Whether an owner may use an image (its own, or a public garment): decides 404 vs 422 on a wrong type.
SELECT EXISTS (
    SELECT 1 FROM images
     WHERE id = %(id)s AND ((owner_id = %(owner_id)s AND owner_type = %(owner_type)s) OR (is_public AND type = 'cloth'))
);

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

-- name: api_conversions_get_many
-- Several conversions of one owner (a page of conversion_list_*), same columns as api_conversion_get.
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

-- name: webhook_endpoint_create
-- A new endpoint unless the owner has %(max_endpoints)s already (SA040 webhook_limit_reached, 0400).
SELECT id, url, events, enabled, failing_since, disabled_at, disabled_reason, created_at
  FROM webhook_endpoint_create(%(user_id)s, %(vendor_id)s, %(url)s, %(events)s, %(secret)s, %(max_endpoints)s);

-- name: webhook_endpoint_list
SELECT id, url, events, enabled, failing_since, disabled_at, disabled_reason, created_at
  FROM webhook_endpoints
 WHERE user_id = %(user_id)s OR vendor_id = %(vendor_id)s
 ORDER BY created_at, id;

-- name: webhook_endpoint_get
SELECT id, url, events, enabled, failing_since, disabled_at, disabled_reason, created_at
  FROM webhook_endpoints
 WHERE id = %(id)s AND (user_id = %(user_id)s OR vendor_id = %(vendor_id)s);

-- name: webhook_endpoint_delete
DELETE FROM webhook_endpoints
 WHERE id = %(id)s AND (user_id = %(user_id)s OR vendor_id = %(vendor_id)s)
RETURNING id;

-- name: webhook_delivery_list
-- An endpoint's deliveries, newest first, each with its attempts.
SELECT d.id, d.event_id, e.type, e.conversion_id, d.status, d.attempts, d.next_attempt_at, d.created_at,
       d.finished_at,
       COALESCE((SELECT jsonb_agg(jsonb_build_object(
                     'attempt', a.attempt, 'attempted_at', a.attempted_at, 'status_code', a.status_code,
                     'latency_ms', a.latency_ms, 'error', a.error) ORDER BY a.attempt)
                   FROM webhook_attempts a WHERE a.delivery_id = d.id), '[]'::jsonb) AS attempt_log
  FROM webhook_deliveries d
  JOIN webhook_events e ON e.id = d.event_id
 WHERE d.endpoint_id = %(endpoint_id)s
 ORDER BY d.created_at DESC, d.id
 LIMIT %(limit)s;

-- name: webhook_delivery_claim
-- Take up to %(limit)s due deliveries, at most one per endpoint and none of the endpoints in %(busy)s
-- (the sender's in-flight ones): the attempt is counted and next_attempt_at moved %(lease_s)s ahead
-- before the POST, so a sender that dies mid-post leaves them due again (at least once).
WITH candidates AS (
    SELECT id, endpoint_id, next_attempt_at FROM webhook_deliveries
     WHERE status = 'pending' AND next_attempt_at <= now() AND endpoint_id <> ALL (%(busy)s::uuid[])
     ORDER BY next_attempt_at
     LIMIT %(limit)s * 4
       FOR UPDATE SKIP LOCKED
), due AS (
    SELECT id FROM (SELECT DISTINCT ON (endpoint_id) id, next_attempt_at FROM candidates
                     ORDER BY endpoint_id, next_attempt_at) one_each
     ORDER BY next_attempt_at
     LIMIT %(limit)s
)
UPDATE webhook_deliveries d
   SET attempts = d.attempts + 1, next_attempt_at = now() + make_interval(secs => %(lease_s)s)
  FROM due, webhook_endpoints e, webhook_events ev
 WHERE d.id = due.id AND e.id = d.endpoint_id AND ev.id = d.event_id
RETURNING d.id, d.attempts, d.created_at, e.id AS endpoint_id, e.url, e.secret, ev.id AS event_id, ev.type,
          ev.conversion_id, ev.created_at AS event_created_at;

-- name: webhook_attempt_record
-- Nothing when the delivery is gone (its endpoint was deleted while it was being sent).
INSERT INTO webhook_attempts (delivery_id, attempt, status_code, latency_ms, error)
SELECT %(delivery_id)s::uuid, %(attempt)s::integer, %(status_code)s::integer, %(latency_ms)s::integer, %(error)s::text
 WHERE EXISTS (SELECT 1 FROM webhook_deliveries WHERE id = %(delivery_id)s::uuid);

-- name: webhook_delivery_delivered
WITH d AS (
    UPDATE webhook_deliveries SET status = 'delivered', finished_at = now()
     WHERE id = %(delivery_id)s AND status = 'pending'
    RETURNING endpoint_id
)
UPDATE webhook_endpoints SET failing_since = NULL
 WHERE id = %(endpoint_id)s AND failing_since IS NOT NULL;

-- name: webhook_endpoint_mark_failing
-- An attempt failed: the endpoint is failing since its first failure after its last success; true
-- when that is the whole retry period ago (the endpoint is then disabled).
UPDATE webhook_endpoints SET failing_since = COALESCE(failing_since, now())
 WHERE id = %(endpoint_id)s
RETURNING failing_since <= now() - make_interval(secs => %(period_s)s) AS exhausted;

-- name: webhook_endpoint_disable
WITH e AS (
    UPDATE webhook_endpoints SET enabled = false, disabled_at = now(), disabled_reason = %(reason)s
     WHERE id = %(endpoint_id)s AND enabled
    RETURNING id
)
UPDATE webhook_deliveries SET status = 'failed', finished_at = now()
 WHERE endpoint_id = %(endpoint_id)s AND status = 'pending';

-- name: webhook_delivery_retry
-- Due again after %(delay_s)s, or failed for good once it is older than the retry period.
UPDATE webhook_deliveries
   SET status = CASE WHEN created_at <= now() - make_interval(secs => %(period_s)s) THEN 'failed' ELSE 'pending' END,
       finished_at = CASE WHEN created_at <= now() - make_interval(secs => %(period_s)s) THEN now() END,
       next_attempt_at = now() + make_interval(secs => %(delay_s)s)
 WHERE id = %(delivery_id)s AND status = 'pending';

-- name: conversion_list_statuses
-- The status of each conversion found (producer.wait, api waiting).
SELECT id, status FROM conversions WHERE id = ANY(%(ids)s::uuid[]);

-- name: api_album_owned
-- Whether an album belongs to an owner (an upload may only go into the uploader's own album).
SELECT EXISTS (SELECT 1 FROM albums WHERE id = %(id)s AND owner_id = %(owner_id)s AND owner_type = %(owner_type)s);

-- name: webhook_conversion_owner
SELECT user_id, vendor_id FROM conversions WHERE id = %(conversion_id)s;

-- name: console_dispatch_paused
-- Whether an operator paused dispatch (fleet_controls, 0300); the leader's dispatch duty reads it each round.
SELECT dispatch_paused FROM fleet_controls WHERE id;

-- name: console_fleet_controls
SELECT dispatch_paused, updated_at, updated_by FROM fleet_controls WHERE id;

-- name: console_grant_upsert
-- Console access for an API key (console/access.py checks that an operator grant has an operator key).
INSERT INTO console_grants (key_id, role) VALUES (%(key_id)s, %(role)s)
ON CONFLICT (key_id) DO UPDATE SET role = EXCLUDED.role, created_at = now()
RETURNING key_id, role;

-- name: console_grant_revoke
DELETE FROM console_grants WHERE key_id = %(key_id)s RETURNING key_id;

-- name: console_key_scope
SELECT scope FROM api_keys WHERE id = %(key_id)s;

-- name: console_login_grant
-- The console role of a live key, with its label for the audit trail.
SELECT g.role, k.key_prefix, k.name
  FROM api_keys k JOIN console_grants g ON g.key_id = k.id
 WHERE k.id = %(key_id)s AND k.revoked_at IS NULL;

-- name: console_session_create
INSERT INTO console_sessions (token_hash, key_id, csrf_token, expires_at)
VALUES (%(token_hash)s, %(key_id)s, %(csrf_token)s, now() + make_interval(secs => %(ttl_s)s));

-- name: console_session_prune
-- Expired sessions, a bounded batch at each login.
DELETE FROM console_sessions WHERE token_hash = ANY (ARRAY(
    SELECT token_hash FROM console_sessions WHERE expires_at < now() ORDER BY expires_at LIMIT 100));

-- name: console_session_get
-- A live session: its key still live and still granted (a revoked key or grant ends it at once).
SELECT s.key_id, s.csrf_token, g.role, k.key_prefix, k.name
  FROM console_sessions s
  JOIN api_keys k ON k.id = s.key_id AND k.revoked_at IS NULL
  JOIN console_grants g ON g.key_id = s.key_id
 WHERE s.token_hash = %(token_hash)s AND s.expires_at > now();

-- name: console_session_delete
DELETE FROM console_sessions WHERE token_hash = %(token_hash)s;

-- name: console_throughput
-- Completed and failed per minute over the last hour, from conversion_metrics' created_at index
-- (one row per conversion that ended; the last hour only, never the history).
SELECT date_trunc('minute', created_at) AS minute,
       count(*) FILTER (WHERE success) AS completed,
       count(*) FILTER (WHERE NOT success AND coalesce(error_type, '') <> 'cancelled') AS failed
  FROM conversion_metrics
 WHERE created_at > now() - interval '1 hour'
 GROUP BY 1 ORDER BY 1;

-- name: console_errors_last_hour
-- Error types of the last hour (the same index; a cancellation is not an error).
SELECT coalesce(error_type, 'unknown') AS error_type, count(*) AS n
  FROM conversion_metrics
 WHERE created_at > now() - interval '1 hour' AND NOT success AND coalesce(error_type, '') <> 'cancelled'
 GROUP BY 1 ORDER BY 2 DESC, 1;

-- name: console_workers
-- Live workers (the registry is small) and their in-flight jobs (the processing jobs' partial index).
SELECT w.id, w.hostname, w.pid, w.concurrency, w.model_name, w.model_version, w.started_at, w.heartbeat_at,
       extract(epoch FROM now() - w.heartbeat_at)::float8 AS heartbeat_age_s,
       coalesce(j.in_flight, 0) AS in_flight, w.services_down
  FROM workers w
  LEFT JOIN (SELECT worker_id, count(*) AS in_flight FROM conversion_jobs
              WHERE status = 'processing' GROUP BY worker_id) j ON j.worker_id = w.id
 WHERE w.stopped_at IS NULL
 ORDER BY w.hostname, w.pid;

-- name: console_leader
-- (a lease never taken expires at -infinity: shown as lapsed)
SELECT name, holder, epoch, acquired_at, renewed_at, CASE WHEN isfinite(expires_at) THEN expires_at END AS expires_at,
       CASE WHEN isfinite(expires_at) THEN extract(epoch FROM expires_at - now())::float8 END AS expires_in_s
  FROM leader_lease ORDER BY name;

-- name: console_conversion_page
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

-- name: console_conversion_page_by_outcome
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

-- name: console_conversion_rows
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

-- name: console_owner_kind
SELECT EXISTS (SELECT 1 FROM users WHERE id = %(id)s) AS is_user,
       EXISTS (SELECT 1 FROM vendors WHERE id = %(id)s) AS is_vendor;

-- name: console_model_versions
-- Model versions of the live workers, for the filter's suggestions.
SELECT DISTINCT model_version FROM workers WHERE model_version IS NOT NULL ORDER BY 1;

-- name: console_conversion_get
SELECT c.*, c.retry_of,
       r.file_path AS result_key, r.mime_type AS result_mime_type, r.metadata ->> 'attempt' AS result_attempt
  FROM conversions c
  LEFT JOIN images r ON r.id = c.result_image_id
 WHERE c.id = %(id)s;

-- name: console_conversion_jobs
SELECT id, status, priority, attempt, retry_count, max_retries, worker_id, started_at, heartbeat_at,
       completed_at, run_after, scheduled, suspect, error_type, error_message, created_at
  FROM conversion_jobs WHERE conversion_id = %(id)s ORDER BY created_at;

-- name: console_conversion_attempts
-- Every ended attempt of the conversion's jobs (conversion_job_attempts, 0140), oldest first.
SELECT a.job_id, a.attempt, a.worker_id, a.started_at, a.ended_at, a.outcome, a.error_type, a.error_message
  FROM conversion_job_attempts a JOIN conversion_jobs j ON j.id = a.job_id
 WHERE j.conversion_id = %(id)s
 ORDER BY a.ended_at, a.attempt;

-- name: console_conversion_metrics
SELECT processing_time_ms, input_file_size_bytes, output_file_size_bytes, success, error_type,
       ai_model_version, created_at
  FROM conversion_metrics WHERE conversion_id = %(id)s;

-- name: console_conversion_usage
SELECT image_id, action, user_id, vendor_id, created_at
  FROM image_usage_history WHERE conversion_id = %(id)s ORDER BY created_at, id;

-- name: console_conversion_actions
SELECT created_at, operator, action, reason, status_before, status_after, new_conversion_id, outcome
  FROM operator_actions WHERE conversion_id = %(id)s ORDER BY created_at, id;

-- name: console_conversion_retries
SELECT id, status, created_at FROM conversions WHERE retry_of = %(id)s ORDER BY created_at;

-- name: console_image_key
-- The storage key of an image (and its type), for the console's thumbnails.
SELECT id, file_path, mime_type, type, metadata ->> 'attempt' AS attempt FROM images WHERE id = %(id)s;

-- name: console_operator_cancel
SELECT operator_cancel_conversion(conversion_id := %(id)s, operator := %(operator)s, reason := %(reason)s);

-- name: console_operator_retry
SELECT operator_retry_conversion(conversion_id := %(id)s, operator := %(operator)s, reason := %(reason)s);

-- name: console_set_dispatch_paused
SELECT operator_set_dispatch_paused(paused := %(paused)s, operator := %(operator)s, reason := %(reason)s);

-- name: console_recent_actions
-- The audit trail's newest rows (operator_actions' created_at index).
SELECT created_at, operator, action, conversion_id, new_conversion_id, reason, status_before, status_after
  FROM operator_actions ORDER BY created_at DESC, id DESC LIMIT %(limit)s;

-- ---------------------------------------------------------------------------
-- Outages of shared services (issue 26)
-- ---------------------------------------------------------------------------

-- name: db_ping
-- The worker's database health probe: one round trip, nothing read.
SELECT 1;

-- name: conversion_by_idempotency_key
-- The conversion an owner created with an idempotency key (a batch row's outcome, read back after
-- its connection broke, or found when the same CSV is submitted again).
SELECT id FROM conversions
 WHERE COALESCE(user_id, vendor_id) = %(owner_id)s AND idempotency_key = %(idempotency_key)s;
-- Fair share between customers (docs/architecture.md, "Fair share"; migration 0420).

-- name: fair_plans_configure
-- The fleet's settings into fair_plans (the leader, each gauges interval); rows only change when a
-- value differs, so an unchanged fleet writes nothing.
UPDATE fair_plans p SET weight = x.weight, max_processing = x.max_processing
  FROM (VALUES ('free', %(weight_free)s::float8, %(cap_free)s::int),
               ('paid', %(weight_paid)s::float8, %(cap_paid)s::int),
               ('vendor', %(weight_vendor)s::float8, %(cap_vendor)s::int)) AS x (plan, weight, max_processing)
 WHERE p.plan = x.plan AND (p.weight, p.max_processing) IS DISTINCT FROM (x.weight, x.max_processing);

-- name: fair_plan_stats
-- Per plan (never per owner: the label set stays bounded): queued and processing jobs, and owners
-- throttled now (at their cap with ready jobs waiting). Reads the queued / processing partial
-- indexes and the busy owners' load rows.
SELECT p.plan,
       (SELECT count(*) FROM conversion_jobs j WHERE j.status = 'queued' AND j.plan = p.plan) AS queued,
       (SELECT count(*) FROM conversion_jobs j WHERE j.status = 'processing' AND j.plan = p.plan) AS processing,
       (SELECT count(*) FROM owner_load o JOIN owner_lanes l ON l.owner_id = o.owner_id
         WHERE o.processing > 0 AND l.plan = p.plan AND p.max_processing > 0 AND o.processing >= p.max_processing
           AND EXISTS (SELECT 1 FROM conversion_jobs j
                        WHERE j.owner_id = o.owner_id AND j.status = 'queued' AND NOT j.scheduled)) AS throttled
  FROM fair_plans p
 ORDER BY p.plan;

-- name: fair_owner_backlog
-- The owners with the largest backlog (queued jobs), with what they have processing, their cap and
-- whether the cap holds them back now (the console's fair-share page).
SELECT b.owner_id, l.owner_kind, l.plan, b.queued, coalesce(o.processing, 0) AS processing,
       p.max_processing, coalesce(l.band, p.band) AS band,
       (p.max_processing > 0 AND coalesce(o.processing, 0) >= p.max_processing) AS throttled
  FROM (SELECT owner_id, count(*) AS queued FROM conversion_jobs
         WHERE status = 'queued' AND owner_id IS NOT NULL
         GROUP BY owner_id ORDER BY count(*) DESC LIMIT %(limit)s) AS b
  JOIN owner_lanes l ON l.owner_id = b.owner_id
  JOIN fair_plans p ON p.plan = l.plan
  LEFT JOIN owner_load o ON o.owner_id = b.owner_id
 ORDER BY b.queued DESC, b.owner_id;

-- name: fair_owner_set_band
-- An operator moves an owner to a band (NULL: its plan's); returns the queued jobs moved.
SELECT fair_owner_set_band(%(owner_id)s, %(band)s);

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

-- name: api_key_max_priority
-- The highest priority an API key may ask for.
SELECT max_priority FROM api_keys WHERE id = %(id)s;

-- name: api_key_set_max_priority
UPDATE api_keys SET max_priority = %(max_priority)s WHERE id = %(id)s RETURNING id;

-- name: fair_plans_list
-- Each plan's weight, band and per-owner cap (the console's fair-share page).
SELECT plan, weight, band, max_processing FROM fair_plans ORDER BY plan;
-- Webhooks at the boundary (0400): the sender's fan-out, a delivery that cannot be built, secrets
-- re-encrypted under the first key, and retention.

-- name: webhook_fan_out
-- Deliveries for up to %(batch_size)s events not yet fanned out; returns how many events it fanned out.
SELECT webhook_fan_out(%(batch_size)s);

-- name: webhook_delivery_fail
-- A delivery whose message cannot be built fails for good (it would fail the same way again).
UPDATE webhook_deliveries SET status = 'failed', finished_at = now()
 WHERE id = %(delivery_id)s AND status = 'pending';

-- name: webhook_secrets_to_rewrap
-- Endpoints whose stored secret is not under the key tagged %(prefix)s (plaintext or an older key).
SELECT id, secret FROM webhook_endpoints
 WHERE substring(secret FROM 1 FOR length(%(prefix)s::bytea)) <> %(prefix)s::bytea AND id > %(after)s
 ORDER BY id
 LIMIT %(limit)s;

-- name: webhook_secret_rewrap
-- Store the re-encrypted secret unless the row changed meanwhile.
UPDATE webhook_endpoints SET secret = %(new)s WHERE id = %(id)s AND secret = %(old)s;

-- name: retention_prune_webhook_deliveries
SELECT prune_webhook_deliveries(make_interval(secs => %(older_than_s)s), %(batch_size)s);

-- name: retention_prune_webhook_events
SELECT prune_webhook_events(make_interval(secs => %(older_than_s)s), %(batch_size)s);
-- Deletion, erasure, retention and orphaned objects (0440_erasure.sql; docs/operations.md).

-- name: storage_marker_add
-- An upload's markers, committed before its first byte is written (due after the grace period).
SELECT storage_markers_add(%(keys)s::text[], %(grace_s)s);

-- name: storage_marker_take
-- Taken back in the registering transaction: the count says whether the sweep got there first.
SELECT storage_markers_take(%(keys)s::text[]);

-- name: storage_marker_due
-- Due markers, oldest first, locked: a late registration of one of them waits and then finds it gone.
SELECT key FROM storage_key_cleanup WHERE due_at <= now() ORDER BY due_at LIMIT %(limit)s FOR UPDATE SKIP LOCKED;

-- name: storage_marker_due_among
-- The due markers among some keys (a deletion's own, swept right after its commit), locked.
SELECT key FROM storage_key_cleanup WHERE key = ANY(%(keys)s::text[]) AND due_at <= now()
 ORDER BY key FOR UPDATE SKIP LOCKED;

-- name: storage_marker_unclaimed
-- The keys no row claims (an image's file or thumbnail, an attempt in flight).
SELECT storage_keys_unclaimed(%(keys)s::text[]);

-- name: storage_marker_done
DELETE FROM storage_key_cleanup WHERE key = ANY(%(keys)s::text[]);

-- name: storage_marker_count
SELECT count(*) FILTER (WHERE due_at <= now()) AS due, count(*) AS total FROM storage_key_cleanup;

-- name: image_delete
-- DELETE /v1/images/{id}: returns the object keys marked for deletion.
SELECT delete_image(image_id := %(image_id)s, user_id := %(user_id)s, vendor_id := %(vendor_id)s);

-- name: conversion_delete
-- DELETE /v1/conversions/{id}: returns the object keys marked for deletion.
SELECT delete_conversion(conversion_id := %(conversion_id)s, user_id := %(user_id)s, vendor_id := %(vendor_id)s);

-- name: owner_erase_preview
SELECT erase_owner_preview(owner_type := %(owner_type)s, owner_id := %(owner_id)s);

-- name: owner_erase
SELECT erase_owner(owner_type := %(owner_type)s, owner_id := %(owner_id)s);

-- name: retention_expire_images
SELECT retention_expire_images(%(type)s, %(older_than_s)s, %(batch_size)s);

-- name: storage_audit_images
-- Images in id order, a page at a time, with the keys they claim (`stayler storage audit`).
SELECT id, image_object_keys(id, type, file_path) AS keys, thumbnail_url IS NOT NULL AS has_thumbnail
  FROM images WHERE id > %(after)s ORDER BY id LIMIT %(limit)s;

-- name: storage_audit_image_count
SELECT count(*) FROM images;

-- name: storage_marker_mark_due
-- Objects found without a row (`stayler storage audit --fix`): due now, swept like any deletion.
SELECT storage_markers_due_now(%(keys)s::text[]);
-- Console: what the operator on call looks at first (issue 23) ------------------------------------

-- name: console_oncall_last_hour
-- Latency (submitted → ended) p50/p95 of the last hour's completions, and how the last hour's
-- conversions ended (conversion_metrics' created_at index, joined to conversions by primary key).
SELECT percentile_cont(0.5) WITHIN GROUP (ORDER BY extract(epoch FROM m.created_at - c.created_at) * 1000)
           FILTER (WHERE m.success) AS latency_p50_ms,
       percentile_cont(0.95) WITHIN GROUP (ORDER BY extract(epoch FROM m.created_at - c.created_at) * 1000)
           FILTER (WHERE m.success) AS latency_p95_ms,
       count(*) FILTER (WHERE m.success) AS completed,
       count(*) FILTER (WHERE NOT m.success AND coalesce(m.error_type, '') <> 'cancelled') AS failed,
       count(*) FILTER (WHERE m.error_type = 'cancelled') AS cancelled
  FROM conversion_metrics m JOIN conversions c ON c.id = m.conversion_id
 WHERE m.created_at > now() - interval '1 hour';

-- name: console_attempts_last_hour
-- Attempts of the last hour that went back to the queue: retried after an error, or rescued after
-- their worker was lost (conversion_job_attempts' ended_at index, 0450).
SELECT count(*) FILTER (WHERE error_type IS NOT NULL AND error_type <> 'worker_lost') AS retried,
       count(*) FILTER (WHERE error_type = 'worker_lost') AS rescued
  FROM conversion_job_attempts
 WHERE ended_at > now() - interval '1 hour' AND outcome = 'requeued';

-- name: console_queue_trend
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

-- name: console_webhook_health
-- Deliveries waiting (the sender's pending index) and how many of them already failed an attempt;
-- endpoints failing or disabled (a small table).
SELECT (SELECT count(*) FROM webhook_deliveries WHERE status = 'pending') AS pending,
       (SELECT count(*) FROM webhook_deliveries WHERE status = 'pending' AND attempts > 0) AS retrying,
       (SELECT count(*) FROM webhook_endpoints WHERE failing_since IS NOT NULL AND disabled_at IS NULL)
           AS failing_endpoints,
       (SELECT count(*) FROM webhook_endpoints WHERE disabled_at IS NOT NULL) AS disabled_endpoints;

-- name: job_stamp_unowned
-- Queued jobs inserted with triggers off get their fair-share stamp (the leader, each sweep).
SELECT jobs_stamp_unowned(%(limit)s);
