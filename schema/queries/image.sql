-- Images and their usage history (image_usage_history).
-- Named queries: see schema/README.md ("The query layer") for the naming rule.

-- name: register_image
-- An uploaded person or garment image under the key the system issues for its id (0100: register_image()
-- refuses any other key with SA026 and writes the upload usage row).
SELECT register_image(image_id := %(image_id)s, owner_id := %(owner_id)s, owner_type := %(owner_type)s,
                      type := %(type)s, mime_type := %(mime_type)s, file_size := %(file_size)s,
                      file_path := %(file_path)s, file_name := %(file_name)s, original_url := %(original_url)s,
                      thumbnail_url := %(thumbnail_url)s, width := %(width)s, height := %(height)s,
                      album_id := %(album_id)s, is_public := %(is_public)s, is_free := %(is_free)s,
                      tags := %(tags)s, metadata := %(metadata)s::jsonb);

-- name: get_image_stats
SELECT * FROM get_image_stats(p_owner_id := %(owner_id)s, p_owner_type := %(owner_type)s,
                              p_image_type := %(image_type)s);

-- name: image_check_accessible
-- Whether an owner may use an image (its own, or a public garment): decides 404 vs 422 on a wrong type.
SELECT EXISTS (
    SELECT 1 FROM images
     WHERE id = %(id)s AND ((owner_id = %(owner_id)s AND owner_type = %(owner_type)s) OR (is_public AND type = 'cloth'))
);

-- name: image_usage_list_by_conversion
SELECT image_id, action, user_id, vendor_id, created_at
  FROM image_usage_history WHERE conversion_id = %(id)s ORDER BY created_at, id;

-- name: image_get_key
-- The storage key of an image (and its type), for the console's thumbnails.
SELECT id, file_path, mime_type, type, metadata ->> 'attempt' AS attempt FROM images WHERE id = %(id)s;

-- name: delete_image
-- DELETE /v1/images/{id}: returns the object keys marked for deletion.
SELECT delete_image(image_id := %(image_id)s, user_id := %(user_id)s, vendor_id := %(vendor_id)s);

-- name: image_list_keys
-- Images in id order, a page at a time, with the keys they claim (`stayler storage audit`).
SELECT id, image_object_keys(id, type, file_path) AS keys, thumbnail_url IS NOT NULL AS has_thumbnail
  FROM images WHERE id > %(after)s ORDER BY id LIMIT %(limit)s;

-- name: image_count
SELECT count(*) FROM images;
