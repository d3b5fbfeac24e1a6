-- 0010_conversions_images_schema.sql
--
-- The seed's schema ("Database Schema: Conversions & Images"), column for
-- column: tables with their types, defaults, NOT NULL, CHECK value lists and
-- foreign keys with the seed's ON DELETE; the unique album name per owner; the
-- triggers that keep albums.image_count and updated_at right; every index the
-- seed lists (single-column, composite, GIN, partial, covering).
--
-- Everything the seed is silent about (job-queue columns, extra constraints,
-- status guards, the worker registry) is in 0020_job_queue.sql; the five
-- utility functions are in 0025_functions.sql because their bodies use those
-- additions.  schema/README.md lists every addition with its reason.
--
-- Requires 0001_users_vendors.sql (users, vendors, set_updated_at()).

-- ---------------------------------------------------------------------------
-- Tables (order: each table after the tables it references)
-- ---------------------------------------------------------------------------

-- 4. Albums
CREATE TABLE albums (
    id UUID PRIMARY KEY DEFAULT gen_random_uuid(),
    owner_id UUID NOT NULL,
    owner_type TEXT NOT NULL CHECK (owner_type IN ('user', 'vendor')),
    name TEXT NOT NULL,
    description TEXT,
    is_public BOOLEAN NOT NULL DEFAULT false,
    image_count INTEGER NOT NULL DEFAULT 0,
    created_at TIMESTAMPTZ NOT NULL DEFAULT NOW(),
    updated_at TIMESTAMPTZ NOT NULL DEFAULT NOW()
);

-- "Unique Names: Album names unique per owner".  An owner is (owner_type, owner_id).
-- The index also serves "list the albums of owner X" (owner_id first).
ALTER TABLE albums
    ADD CONSTRAINT albums_owner_name_key UNIQUE (owner_id, owner_type, name);

-- 2. Images
CREATE TABLE images (
    id UUID PRIMARY KEY DEFAULT gen_random_uuid(),
    owner_id UUID NOT NULL, -- Can be user_id or vendor_id
    owner_type TEXT NOT NULL CHECK (owner_type IN ('user', 'vendor')),
    album_id UUID REFERENCES albums(id) ON DELETE SET NULL,
    file_path TEXT NOT NULL,
    file_name TEXT NOT NULL,
    original_url TEXT NOT NULL,
    thumbnail_url TEXT,
    file_size BIGINT NOT NULL,
    mime_type TEXT NOT NULL,
    width INTEGER,
    height INTEGER,
    type TEXT NOT NULL CHECK (type IN ('user', 'cloth', 'result')),
    is_public BOOLEAN NOT NULL DEFAULT false,
    is_free BOOLEAN NOT NULL DEFAULT true,
    tags TEXT[] DEFAULT '{}',
    metadata JSONB DEFAULT '{}',
    created_at TIMESTAMPTZ NOT NULL DEFAULT NOW(),
    updated_at TIMESTAMPTZ NOT NULL DEFAULT NOW()
);

-- 1. Conversions
CREATE TABLE conversions (
    id UUID PRIMARY KEY DEFAULT gen_random_uuid(),
    user_id UUID REFERENCES users(id) ON DELETE CASCADE,
    vendor_id UUID REFERENCES vendors(id) ON DELETE CASCADE,
    user_image_id UUID NOT NULL REFERENCES images(id) ON DELETE CASCADE,
    cloth_image_id UUID NOT NULL REFERENCES images(id) ON DELETE CASCADE,
    result_image_id UUID REFERENCES images(id) ON DELETE SET NULL,
    status TEXT NOT NULL DEFAULT 'pending' CHECK (status IN ('pending', 'processing', 'completed', 'failed', 'cancelled')),
    error_message TEXT,
    processing_time_ms INTEGER,
    conversion_type TEXT NOT NULL DEFAULT 'free' CHECK (conversion_type IN ('free', 'paid')),
    style_name TEXT,
    metadata JSONB DEFAULT '{}',
    created_at TIMESTAMPTZ NOT NULL DEFAULT NOW(),
    updated_at TIMESTAMPTZ NOT NULL DEFAULT NOW()
);

-- 3. Image usage history
CREATE TABLE image_usage_history (
    id UUID PRIMARY KEY DEFAULT gen_random_uuid(),
    image_id UUID NOT NULL REFERENCES images(id) ON DELETE CASCADE,
    user_id UUID REFERENCES users(id) ON DELETE SET NULL,
    vendor_id UUID REFERENCES vendors(id) ON DELETE SET NULL,
    conversion_id UUID REFERENCES conversions(id) ON DELETE SET NULL,
    action TEXT NOT NULL CHECK (action IN ('upload', 'view', 'download', 'delete', 'update', 'share', 'convert', 'use_in_conversion')),
    ip_address INET,
    user_agent TEXT,
    session_id TEXT,
    metadata JSONB DEFAULT '{}',
    created_at TIMESTAMPTZ NOT NULL DEFAULT NOW()
);

-- 5. Conversion jobs
CREATE TABLE conversion_jobs (
    id UUID PRIMARY KEY DEFAULT gen_random_uuid(),
    conversion_id UUID NOT NULL REFERENCES conversions(id) ON DELETE CASCADE,
    status TEXT NOT NULL DEFAULT 'queued' CHECK (status IN ('queued', 'processing', 'completed', 'failed', 'cancelled')),
    worker_id TEXT,
    priority INTEGER NOT NULL DEFAULT 0,
    retry_count INTEGER NOT NULL DEFAULT 0,
    max_retries INTEGER NOT NULL DEFAULT 3,
    error_message TEXT,
    started_at TIMESTAMPTZ,
    completed_at TIMESTAMPTZ,
    created_at TIMESTAMPTZ NOT NULL DEFAULT NOW(),
    updated_at TIMESTAMPTZ NOT NULL DEFAULT NOW()
);

-- 6. Conversion metrics
CREATE TABLE conversion_metrics (
    id UUID PRIMARY KEY DEFAULT gen_random_uuid(),
    conversion_id UUID NOT NULL REFERENCES conversions(id) ON DELETE CASCADE,
    user_id UUID REFERENCES users(id) ON DELETE CASCADE,
    vendor_id UUID REFERENCES vendors(id) ON DELETE CASCADE,
    processing_time_ms INTEGER NOT NULL,
    input_file_size_bytes BIGINT,
    output_file_size_bytes BIGINT,
    success BOOLEAN NOT NULL,
    error_type TEXT,
    ai_model_version TEXT,
    created_at TIMESTAMPTZ NOT NULL DEFAULT NOW()
);

-- ---------------------------------------------------------------------------
-- Indexes listed by the seed ("Indexes and Performance")
-- ---------------------------------------------------------------------------

-- Primary (single-column) indexes
CREATE INDEX idx_conversions_user_id ON conversions (user_id);          -- conversions of user X
CREATE INDEX idx_conversions_vendor_id ON conversions (vendor_id);      -- conversions of vendor X
CREATE INDEX idx_conversions_status ON conversions (status);            -- conversions by status
CREATE INDEX idx_conversions_created_at ON conversions (created_at);    -- get_conversion_stats(p_date_from, p_date_to) without owner

CREATE INDEX idx_images_owner_id ON images (owner_id);                  -- images of owner X
CREATE INDEX idx_images_owner_type ON images (owner_type);              -- images by owner kind
CREATE INDEX idx_images_type ON images (type);                          -- images by type
CREATE INDEX idx_images_is_public ON images (is_public);                -- images by visibility

CREATE INDEX idx_image_usage_history_image_id ON image_usage_history (image_id);     -- usage of image X; FK cascade
CREATE INDEX idx_image_usage_history_user_id ON image_usage_history (user_id);       -- usage by user X; FK SET NULL
CREATE INDEX idx_image_usage_history_vendor_id ON image_usage_history (vendor_id);   -- usage by vendor X; FK SET NULL
CREATE INDEX idx_image_usage_history_action ON image_usage_history (action);         -- usage by action
CREATE INDEX idx_image_usage_history_created_at ON image_usage_history (created_at); -- usage in a time window

-- Composite indexes
CREATE INDEX idx_conversions_user_status ON conversions (user_id, status);       -- "my conversions in status S"
CREATE INDEX idx_conversions_vendor_status ON conversions (vendor_id, status);   -- "vendor's conversions in status S"
CREATE INDEX idx_conversions_status_created_at ON conversions (status, created_at); -- oldest conversions in status S

CREATE INDEX idx_images_owner_type_owner_id ON images (owner_type, owner_id);    -- images of (kind, owner)
CREATE INDEX idx_images_type_is_public ON images (type, is_public);              -- catalogue by type and visibility
CREATE INDEX idx_images_owner_album ON images (owner_id, owner_type, album_id);  -- images of owner X in album A

-- (image_id, action) also INCLUDEs created_at so the seed's analytics query
--   SELECT action, COUNT(*), DATE(created_at) FROM image_usage_history
--   WHERE image_id = $1 GROUP BY action, DATE(created_at)
-- and the usage part of get_image_stats() are index-only scans.
CREATE INDEX idx_image_usage_history_image_action ON image_usage_history (image_id, action) INCLUDE (created_at);
CREATE INDEX idx_image_usage_history_user_action ON image_usage_history (user_id, action);        -- "what user X did"
CREATE INDEX idx_image_usage_history_action_created ON image_usage_history (action, created_at);  -- action A over time

-- Specialized: GIN on tags and metadata
CREATE INDEX idx_images_tags_gin ON images USING GIN (tags);          -- tags @> ARRAY['summer'], tags && …
CREATE INDEX idx_images_metadata_gin ON images USING GIN (metadata);  -- metadata @> '{"k": …}', metadata ? 'k'

-- Specialized: partial indexes, active records
-- Job claim (the queue's hot path):
--   SELECT id FROM conversion_jobs WHERE status = 'queued' AND run_after <= now()
--   ORDER BY priority DESC, created_at LIMIT $n FOR UPDATE SKIP LOCKED
-- The index order equals the ORDER BY, so the claim reads the first rows of
-- the index and stops; it only holds queued rows, so it stays small however
-- large the finished-job history grows.
CREATE INDEX idx_conversion_jobs_claim ON conversion_jobs (priority DESC, created_at)
    WHERE status = 'queued';
-- In-flight conversions, oldest first (dashboards, "stuck" alerts).
CREATE INDEX idx_conversions_active ON conversions (status, created_at)
    WHERE status IN ('pending', 'processing');

-- Specialized: partial indexes, public content
-- Public catalogue: "public cloth images, newest first".
CREATE INDEX idx_images_public_catalogue ON images (type, created_at DESC)
    WHERE is_public;
-- Public albums, newest first.
CREATE INDEX idx_albums_public ON albums (created_at DESC)
    WHERE is_public;

-- Specialized: covering indexes (frequently accessed columns)
-- get_conversion_stats(p_user_id := …, p_date_from := …, p_date_to := …) and
-- "my conversions, newest first": index-only over the user's range.
CREATE INDEX idx_conversions_user_created_cover ON conversions (user_id, created_at)
    INCLUDE (status, processing_time_ms) WHERE user_id IS NOT NULL;
-- get_conversion_stats(p_vendor_id := …, …) and the vendor's history.
CREATE INDEX idx_conversions_vendor_created_cover ON conversions (vendor_id, created_at)
    INCLUDE (status, processing_time_ms) WHERE vendor_id IS NOT NULL;
-- get_image_stats(p_owner_id := …, p_owner_type := …, p_image_type := …):
-- counts and bytes by type and visibility, and the ids it joins to the usage
-- history, without visiting the heap.
CREATE INDEX idx_images_owner_stats_cover ON images (owner_id, owner_type, type)
    INCLUDE (id, is_public, file_size);

-- ---------------------------------------------------------------------------
-- Triggers: updated_at and albums.image_count
-- ---------------------------------------------------------------------------

CREATE TRIGGER trg_albums_updated_at
    BEFORE UPDATE ON albums
    FOR EACH ROW EXECUTE FUNCTION set_updated_at();
CREATE TRIGGER trg_images_updated_at
    BEFORE UPDATE ON images
    FOR EACH ROW EXECUTE FUNCTION set_updated_at();
CREATE TRIGGER trg_conversions_updated_at
    BEFORE UPDATE ON conversions
    FOR EACH ROW EXECUTE FUNCTION set_updated_at();
CREATE TRIGGER trg_conversion_jobs_updated_at
    BEFORE UPDATE ON conversion_jobs
    FOR EACH ROW EXECUTE FUNCTION set_updated_at();

-- Keeps albums.image_count equal to the number of images whose album_id points
-- at the album: +1 on insert into an album, -1 on delete, -1/+1 on a move
-- (including album_id set to NULL by ON DELETE SET NULL, which is a no-op
-- because the album row is already gone).  Relative updates take the album
-- row lock, so concurrent inserts into one album count correctly.
CREATE FUNCTION maintain_album_image_count() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'INSERT' THEN
        IF NEW.album_id IS NOT NULL THEN
            UPDATE albums SET image_count = image_count + 1 WHERE id = NEW.album_id;
        END IF;
    ELSIF TG_OP = 'DELETE' THEN
        IF OLD.album_id IS NOT NULL THEN
            UPDATE albums SET image_count = image_count - 1 WHERE id = OLD.album_id;
        END IF;
    ELSIF NEW.album_id IS DISTINCT FROM OLD.album_id THEN
        -- One statement for both rows of a move.
        UPDATE albums
           SET image_count = image_count + CASE WHEN id = NEW.album_id THEN 1 ELSE -1 END
         WHERE id IN (OLD.album_id, NEW.album_id);
    END IF;
    RETURN NULL;
END;
$$;

CREATE TRIGGER trg_images_album_image_count
    AFTER INSERT OR DELETE OR UPDATE OF album_id ON images
    FOR EACH ROW EXECUTE FUNCTION maintain_album_image_count();
