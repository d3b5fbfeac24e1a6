-- The server itself: no table.
-- Named queries: see schema/README.md ("The query layer") for the naming rule.

-- name: db_now
SELECT now();

-- name: db_lock_idempotency_key
-- Held until the creating transaction ends: a second request with the same key meanwhile gets 409.
SELECT pg_try_advisory_xact_lock(%(lock_key)s);

-- name: db_ping
-- The worker's database health probe: one round trip, nothing read.
SELECT 1;
