-- The fleet leader's lease (leader_lease and its functions, 0060).
-- Named queries: see schema/README.md ("The query layer") for the naming rule.

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

-- name: leader_lease_list
-- (a lease never taken expires at -infinity: shown as lapsed)
SELECT name, holder, epoch, acquired_at, renewed_at, CASE WHEN isfinite(expires_at) THEN expires_at END AS expires_at,
       CASE WHEN isfinite(expires_at) THEN extract(epoch FROM expires_at - now())::float8 END AS expires_in_s
  FROM leader_lease ORDER BY name;
