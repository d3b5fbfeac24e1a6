-- Object-store bookkeeping: storage_cleanup (an attempt's files) and storage_key_cleanup (markers, 0440).
-- Named queries: see schema/README.md ("The query layer") for the naming rule.

-- name: storage_cleanup_list
-- Pending cleanup markers, oldest first, with their conversion's status (NULL: deleted).
SELECT m.conversion_id, m.attempt, c.status AS conversion_status
  FROM storage_cleanup m LEFT JOIN conversions c ON c.id = m.conversion_id
 ORDER BY m.created_at
 LIMIT %(limit)s;

-- name: storage_cleanup_delete
DELETE FROM storage_cleanup WHERE conversion_id = %(conversion_id)s AND attempt = %(attempt)s;

-- name: storage_markers_add
-- An upload's markers, committed before its first byte is written (due after the grace period).
SELECT storage_markers_add(%(keys)s::text[], %(grace_s)s);

-- name: storage_markers_take
-- Taken back in the registering transaction: the count says whether the sweep got there first.
SELECT storage_markers_take(%(keys)s::text[]);

-- name: storage_marker_lock_due
-- Due markers, oldest first, locked: a late registration of one of them waits and then finds it gone.
SELECT key FROM storage_key_cleanup WHERE due_at <= now() ORDER BY due_at LIMIT %(limit)s FOR UPDATE SKIP LOCKED;

-- name: storage_marker_lock_due_among
-- The due markers among some keys (a deletion's own, swept right after its commit), locked.
SELECT key FROM storage_key_cleanup WHERE key = ANY(%(keys)s::text[]) AND due_at <= now()
 ORDER BY key FOR UPDATE SKIP LOCKED;

-- name: storage_keys_unclaimed
-- The keys no row claims (an image's file or thumbnail, an attempt in flight).
SELECT storage_keys_unclaimed(%(keys)s::text[]);

-- name: storage_marker_delete
DELETE FROM storage_key_cleanup WHERE key = ANY(%(keys)s::text[]);

-- name: storage_marker_count
SELECT count(*) FILTER (WHERE due_at <= now()) AS due, count(*) AS total FROM storage_key_cleanup;

-- name: storage_markers_due_now
-- Objects found without a row (`stayler storage audit --fix`): due now, swept like any deletion.
SELECT storage_markers_due_now(%(keys)s::text[]);
