-- 0001_users_vendors.sql
--
-- The owners the seed schema references (conversions.user_id → users(id),
-- conversions.vendor_id → vendors(id), …) but never defines.  Kept minimal on
-- purpose: identity lives in the upstream account service; these rows exist so
-- the foreign keys of 0010 hold.  See schema/README.md, "Additions".
--
-- Plain SQL, no psql meta-commands: apply with
--   psql -v ON_ERROR_STOP=1 -1 -f schema/migrations/0001_users_vendors.sql
-- or with `stayler migrate` (yoyo-migrations bookkeeping).

-- Shared trigger function: keeps updated_at current on every table that has it.
CREATE FUNCTION set_updated_at() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    NEW.updated_at := now();
    RETURN NEW;
END;
$$;

COMMENT ON FUNCTION set_updated_at() IS
    'BEFORE UPDATE row trigger: sets NEW.updated_at to now() (transaction time).';

CREATE TABLE users (
    id UUID PRIMARY KEY DEFAULT gen_random_uuid(),
    email TEXT UNIQUE,
    display_name TEXT,
    created_at TIMESTAMPTZ NOT NULL DEFAULT NOW(),
    updated_at TIMESTAMPTZ NOT NULL DEFAULT NOW()
);

COMMENT ON TABLE users IS
    'Addition (the seed references users(id) without defining it): minimal user owner.';

CREATE TABLE vendors (
    id UUID PRIMARY KEY DEFAULT gen_random_uuid(),
    name TEXT NOT NULL,
    created_at TIMESTAMPTZ NOT NULL DEFAULT NOW(),
    updated_at TIMESTAMPTZ NOT NULL DEFAULT NOW()
);

COMMENT ON TABLE vendors IS
    'Addition (the seed references vendors(id) without defining it): minimal vendor owner.';

CREATE TRIGGER trg_users_updated_at
    BEFORE UPDATE ON users
    FOR EACH ROW EXECUTE FUNCTION set_updated_at();

CREATE TRIGGER trg_vendors_updated_at
    BEFORE UPDATE ON vendors
    FOR EACH ROW EXECUTE FUNCTION set_updated_at();
