-- The HTTP API (api/, docs/api.md): API keys stored hashed, webhook endpoints, the webhook outbox
-- written by a trigger in the same transaction as a conversion's terminal status, the log of every
-- delivery attempt, and the completion NOTIFY that `GET /v1/conversions/{id}?wait=` and
-- producer.wait() listen on.

-- A key is shown once; only its SHA-256 is kept (keys are 256-bit random, so a plain hash is enough:
-- there is nothing to brute-force). key_prefix is its first characters, to tell keys apart in lists.
CREATE TABLE api_keys (
    id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    key_hash bytea NOT NULL UNIQUE,
    key_prefix text NOT NULL,
    name text,
    scope text NOT NULL CHECK (scope IN ('read', 'producer', 'operator')),
    user_id uuid REFERENCES users(id) ON DELETE CASCADE,
    vendor_id uuid REFERENCES vendors(id) ON DELETE CASCADE,
    created_at timestamptz NOT NULL DEFAULT now(),
    last_used_at timestamptz,
    revoked_at timestamptz,
    CONSTRAINT api_keys_one_owner CHECK (num_nonnulls(user_id, vendor_id) = 1)
);
CREATE INDEX idx_api_keys_user_id ON api_keys (user_id) WHERE user_id IS NOT NULL;
CREATE INDEX idx_api_keys_vendor_id ON api_keys (vendor_id) WHERE vendor_id IS NOT NULL;

-- The secret signs deliveries (Standard Webhooks); it must be readable by the sender, so it is kept
-- as is, like the database password the sender also holds.
CREATE TABLE webhook_endpoints (
    id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    user_id uuid REFERENCES users(id) ON DELETE CASCADE,
    vendor_id uuid REFERENCES vendors(id) ON DELETE CASCADE,
    url text NOT NULL CHECK (length(url) <= 2048),
    events text[] NOT NULL CHECK (cardinality(events) > 0 AND events <@ ARRAY[
        'conversion.completed', 'conversion.failed', 'conversion.cancelled']::text[]),
    secret bytea NOT NULL,
    enabled boolean NOT NULL DEFAULT true,
    failing_since timestamptz,
    disabled_at timestamptz,
    disabled_reason text,
    created_at timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT webhook_endpoints_one_owner CHECK (num_nonnulls(user_id, vendor_id) = 1)
);
CREATE INDEX idx_webhook_endpoints_owner ON webhook_endpoints ((COALESCE(user_id, vendor_id))) WHERE enabled;
CREATE INDEX idx_webhook_endpoints_vendor_id ON webhook_endpoints (vendor_id) WHERE vendor_id IS NOT NULL;
CREATE INDEX idx_webhook_endpoints_user_id ON webhook_endpoints (user_id) WHERE user_id IS NOT NULL;

-- The outbox: one event per terminal conversion that at least one enabled endpoint subscribed to.
-- Its id is the Standard Webhooks message id (`webhook-id`), the receiver's idempotency key.
CREATE TABLE webhook_events (
    id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    type text NOT NULL CHECK (type IN ('conversion.completed', 'conversion.failed', 'conversion.cancelled')),
    conversion_id uuid NOT NULL REFERENCES conversions(id) ON DELETE CASCADE,
    created_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX idx_webhook_events_conversion_id ON webhook_events (conversion_id);

-- One delivery per (event, endpoint). next_attempt_at doubles as the sender's lease: a sender moves
-- it forward before it posts, so a sender that dies mid-post leaves the delivery due again later.
CREATE TABLE webhook_deliveries (
    id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    event_id uuid NOT NULL REFERENCES webhook_events(id) ON DELETE CASCADE,
    endpoint_id uuid NOT NULL REFERENCES webhook_endpoints(id) ON DELETE CASCADE,
    status text NOT NULL DEFAULT 'pending' CHECK (status IN ('pending', 'delivered', 'failed')),
    attempts integer NOT NULL DEFAULT 0 CHECK (attempts >= 0),
    next_attempt_at timestamptz NOT NULL DEFAULT now(),
    created_at timestamptz NOT NULL DEFAULT now(),
    finished_at timestamptz,
    CONSTRAINT webhook_deliveries_event_endpoint_key UNIQUE (event_id, endpoint_id)
);
CREATE INDEX idx_webhook_deliveries_due ON webhook_deliveries (next_attempt_at) WHERE status = 'pending';
CREATE INDEX idx_webhook_deliveries_endpoint ON webhook_deliveries (endpoint_id, created_at DESC);

CREATE TABLE webhook_attempts (
    id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    delivery_id uuid NOT NULL REFERENCES webhook_deliveries(id) ON DELETE CASCADE,
    attempt integer NOT NULL CHECK (attempt >= 1),
    attempted_at timestamptz NOT NULL DEFAULT now(),
    status_code integer,
    latency_ms integer,
    error text
);
CREATE INDEX idx_webhook_attempts_delivery ON webhook_attempts (delivery_id, attempt);

-- A conversion became terminal: wake waiters (payload: its id) and, in this same transaction, write
-- the webhook event and one delivery per subscribed endpoint of its owner, then wake the sender.
-- SECURITY DEFINER: whoever ends the conversion (a worker's role, a producer's SECURITY DEFINER
-- cancel) needs no privilege on the webhook tables.
CREATE OR REPLACE FUNCTION api_conversion_terminal() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = public, pg_temp AS $$
DECLARE
    v_type text := 'conversion.' || NEW.status;
    v_owner uuid := COALESCE(NEW.user_id, NEW.vendor_id);
    v_by_user boolean := NEW.user_id IS NOT NULL;
    v_event uuid;
BEGIN
    PERFORM pg_notify('stayler_conversion_done', NEW.id::text);
    IF EXISTS (SELECT 1 FROM webhook_endpoints e
                WHERE COALESCE(e.user_id, e.vendor_id) = v_owner AND e.enabled
                  AND (e.user_id IS NOT NULL) = v_by_user AND v_type = ANY (e.events)) THEN
        INSERT INTO webhook_events (type, conversion_id) VALUES (v_type, NEW.id) RETURNING id INTO v_event;
        INSERT INTO webhook_deliveries (event_id, endpoint_id)
        SELECT v_event, e.id FROM webhook_endpoints e
         WHERE COALESCE(e.user_id, e.vendor_id) = v_owner AND e.enabled
           AND (e.user_id IS NOT NULL) = v_by_user AND v_type = ANY (e.events);
        PERFORM pg_notify('stayler_webhooks', '');
    END IF;
    RETURN NULL;
END;
$$;

CREATE TRIGGER trg_conversions_api_terminal
    AFTER UPDATE OF status ON conversions
    FOR EACH ROW
    WHEN (NEW.status IN ('completed', 'failed', 'cancelled') AND OLD.status IS DISTINCT FROM NEW.status)
    EXECUTE FUNCTION api_conversion_terminal();

-- The roles of 0120: operators read everything, admins may do anything.
GRANT SELECT ON api_keys, webhook_endpoints, webhook_events, webhook_deliveries, webhook_attempts
    TO stayler_operator_ro;
GRANT ALL ON api_keys, webhook_endpoints, webhook_events, webhook_deliveries, webhook_attempts TO stayler_admin;
