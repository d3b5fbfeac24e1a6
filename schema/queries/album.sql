-- Albums (an image's optional folder).
-- Named queries: see schema/README.md ("The query layer") for the naming rule.

-- name: album_check_owned
-- Whether an album belongs to an owner (an upload may only go into the uploader's own album).
SELECT EXISTS (SELECT 1 FROM albums WHERE id = %(id)s AND owner_id = %(owner_id)s AND owner_type = %(owner_type)s);
