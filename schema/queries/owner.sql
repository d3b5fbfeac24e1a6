-- Owners (users, vendors) and their erasure (0440).
-- Named queries: see schema/README.md ("The query layer") for the naming rule.

-- name: user_create
INSERT INTO users (email, display_name) VALUES (%(email)s, %(display_name)s) RETURNING id;

-- name: vendor_create
INSERT INTO vendors (name) VALUES (%(name)s) RETURNING id;

-- name: owner_get_kind
SELECT EXISTS (SELECT 1 FROM users WHERE id = %(id)s) AS is_user,
       EXISTS (SELECT 1 FROM vendors WHERE id = %(id)s) AS is_vendor;

-- name: erase_owner_preview
SELECT erase_owner_preview(owner_type := %(owner_type)s, owner_id := %(owner_id)s);

-- name: erase_owner
SELECT erase_owner(owner_type := %(owner_type)s, owner_id := %(owner_id)s);
