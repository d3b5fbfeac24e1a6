-- Console access: grants and sessions (0300).
-- Named queries: see schema/README.md ("The query layer") for the naming rule.

-- name: console_grant_upsert
-- Console access for an API key (console/access.py checks that an operator grant has an operator key).
INSERT INTO console_grants (key_id, role) VALUES (%(key_id)s, %(role)s)
ON CONFLICT (key_id) DO UPDATE SET role = EXCLUDED.role, created_at = now()
RETURNING key_id, role;

-- name: console_grant_revoke
DELETE FROM console_grants WHERE key_id = %(key_id)s RETURNING key_id;

-- name: console_grant_get_live
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
