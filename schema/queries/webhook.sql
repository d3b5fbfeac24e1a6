-- Webhooks: endpoints, events, deliveries and attempts (0200, 0400).
-- Named queries: see schema/README.md ("The query layer") for the naming rule.

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

-- name: webhook_delivery_mark_delivered
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

-- name: webhook_fan_out
-- Deliveries for up to %(batch_size)s events not yet fanned out; returns how many events it fanned out.
SELECT webhook_fan_out(%(batch_size)s);

-- name: webhook_delivery_fail
-- A delivery whose message cannot be built fails for good (it would fail the same way again).
UPDATE webhook_deliveries SET status = 'failed', finished_at = now()
 WHERE id = %(delivery_id)s AND status = 'pending';

-- name: webhook_endpoint_list_secrets_to_rewrap
-- Endpoints whose stored secret is not under the key tagged %(prefix)s (plaintext or an older key).
SELECT id, secret FROM webhook_endpoints
 WHERE substring(secret FROM 1 FOR length(%(prefix)s::bytea)) <> %(prefix)s::bytea AND id > %(after)s
 ORDER BY id
 LIMIT %(limit)s;

-- name: webhook_endpoint_rewrap_secret
-- Store the re-encrypted secret unless the row changed meanwhile.
UPDATE webhook_endpoints SET secret = %(new)s WHERE id = %(id)s AND secret = %(old)s;

-- name: webhook_get_health
-- Deliveries waiting (the sender's pending index) and how many of them already failed an attempt;
-- endpoints failing or disabled (a small table).
SELECT (SELECT count(*) FROM webhook_deliveries WHERE status = 'pending') AS pending,
       (SELECT count(*) FROM webhook_deliveries WHERE status = 'pending' AND attempts > 0) AS retrying,
       (SELECT count(*) FROM webhook_endpoints WHERE failing_since IS NOT NULL AND disabled_at IS NULL)
           AS failing_endpoints,
       (SELECT count(*) FROM webhook_endpoints WHERE disabled_at IS NOT NULL) AS disabled_endpoints;
