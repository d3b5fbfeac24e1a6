-- The queue: conversion_jobs, its set-based jobs_* functions and conversion_job_attempts.
-- Named queries: see schema/README.md ("The query layer") for the naming rule.

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

-- name: jobs_complete
-- Fenced completion of a batch (jobs_complete(): the latest definition is listed in schema/README.md).
SELECT job_id, result_image_id FROM jobs_complete(%(items)s::jsonb);

-- name: job_get_outcomes
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

-- name: jobs_rescue
SELECT job_id, conversion_id, attempt, new_status, error
  FROM jobs_rescue(%(stale_after_s)s, %(backoff_base_s)s, %(backoff_max_s)s, %(limit)s);

-- name: jobs_end_orphaned
SELECT job_id, conversion_id, new_status FROM jobs_end_orphaned(%(limit)s);

-- name: jobs_promote_scheduled
SELECT jobs_promote_scheduled(%(limit)s);

-- name: jobs_release
SELECT job_id FROM jobs_release(%(job_ids)s::uuid[], %(attempts)s::int[]);

-- name: jobs_release_claim
-- Hand back whatever a claim took whose reply never arrived (connection dropped mid-claim).
SELECT job_id FROM jobs_release_claim(%(claim_token)s);

-- name: jobs_heartbeat
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

-- name: job_get_next_scheduled_in
-- Seconds (by the database's clock) until the next scheduled job becomes due; NULL when none.
-- (GREATEST would turn the NULL of an empty set into 0: the caller clamps negatives itself.)
SELECT date_part('epoch', min(run_after) - now())::float8
  FROM conversion_jobs WHERE status = 'queued' AND scheduled;

-- name: job_get_queue_stats
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

-- name: job_list_by_conversion
SELECT id, status, priority, attempt, retry_count, max_retries, worker_id, started_at, heartbeat_at,
       completed_at, run_after, scheduled, suspect, error_type, error_message, created_at
  FROM conversion_jobs WHERE conversion_id = %(id)s ORDER BY created_at;

-- name: job_attempt_list_by_conversion
-- Every ended attempt of the conversion's jobs (conversion_job_attempts, 0140), oldest first.
SELECT a.job_id, a.attempt, a.worker_id, a.started_at, a.ended_at, a.outcome, a.error_type, a.error_message
  FROM conversion_job_attempts a JOIN conversion_jobs j ON j.id = a.job_id
 WHERE j.conversion_id = %(id)s
 ORDER BY a.ended_at, a.attempt;

-- name: job_attempt_count_requeued_last_hour
-- Attempts of the last hour that went back to the queue: retried after an error, or rescued after
-- their worker was lost (conversion_job_attempts' ended_at index, 0450).
SELECT count(*) FILTER (WHERE error_type IS NOT NULL AND error_type <> 'worker_lost') AS retried,
       count(*) FILTER (WHERE error_type = 'worker_lost') AS rescued
  FROM conversion_job_attempts
 WHERE ended_at > now() - interval '1 hour' AND outcome = 'requeued';

-- name: jobs_stamp_unowned
-- Queued jobs inserted with triggers off get their fair-share stamp (the leader, each sweep).
SELECT jobs_stamp_unowned(%(limit)s);

-- name: jobs_note_subject
-- The dressed person of each completed result (box, mask share, other figures) into the result
-- image's metadata; run in the completion's transaction (jobs_note_subject(), migration 0500).
SELECT jobs_note_subject(%(items)s::jsonb);
