-- The HTTP API's keys (api_keys): only the SHA-256 of a key is stored.
-- Named queries: see schema/README.md ("The query layer") for the naming rule.

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

-- name: api_key_get_scope
SELECT scope FROM api_keys WHERE id = %(key_id)s;

-- name: api_key_get_max_priority
-- The highest priority an API key may ask for.
SELECT max_priority FROM api_keys WHERE id = %(id)s;

-- name: api_key_set_max_priority
UPDATE api_keys SET max_priority = %(max_priority)s WHERE id = %(id)s RETURNING id;
