-- Webhooks against hostile customers (issue 19, docs/api.md "Webhook limits"):
--
-- * The terminal transaction writes one event row, never one row per endpoint: the sender fans the
--   event out into deliveries afterwards (webhook_fan_out), so an owner with many endpoints does
--   not lengthen a worker's completion or a cancel.
-- * An owner has at most a configured number of endpoints (webhook_endpoint_create, SA040).
-- * Delivered and failed deliveries, and events with no delivery left, are pruned by the leader's
--   retention duty (prune_webhook_deliveries, prune_webhook_events).
-- * The read-only role no longer reads signing secrets (column privileges); the secrets themselves
--   are encrypted by the application (api/webhooks/secretbox.py), which this file cannot see.

-- NULL until the sender wrote the event's deliveries. Events written before this migration were fanned
-- out by the old trigger.
ALTER TABLE webhook_events ADD COLUMN fanned_out_at timestamptz;
UPDATE webhook_events SET fanned_out_at = created_at;
CREATE INDEX idx_webhook_events_unfanned ON webhook_events (created_at) WHERE fanned_out_at IS NULL;
CREATE INDEX idx_webhook_events_fanned ON webhook_events (fanned_out_at) WHERE fanned_out_at IS NOT NULL;
CREATE INDEX idx_webhook_deliveries_finished ON webhook_deliveries (finished_at) WHERE status <> 'pending';
CREATE INDEX idx_webhook_deliveries_event ON webhook_deliveries (event_id);

-- A conversion became terminal: wake waiters and, when its owner has a subscribed enabled endpoint,
-- write one event and wake the sender. The deliveries are the sender's to write (webhook_fan_out).
CREATE OR REPLACE FUNCTION api_conversion_terminal() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = public, pg_temp AS $$
DECLARE
    v_type text := 'conversion.' || NEW.status;
    v_owner uuid := COALESCE(NEW.user_id, NEW.vendor_id);
    v_by_user boolean := NEW.user_id IS NOT NULL;
BEGIN
    PERFORM pg_notify('stayler_conversion_done', NEW.id::text);
    IF EXISTS (SELECT 1 FROM webhook_endpoints e
                WHERE COALESCE(e.user_id, e.vendor_id) = v_owner AND e.enabled
                  AND (e.user_id IS NOT NULL) = v_by_user AND v_type = ANY (e.events)) THEN
        INSERT INTO webhook_events (type, conversion_id) VALUES (v_type, NEW.id);
        PERFORM pg_notify('stayler_webhooks', '');
    END IF;
    RETURN NULL;
END;
$$;

-- Write the deliveries of up to batch_size events not yet fanned out (oldest first, skipping events
-- another sender holds): one per enabled endpoint of the event's owner subscribed to its type at this
-- moment. Returns the number of events fanned out (batch_size: there may be more).
CREATE FUNCTION webhook_fan_out(batch_size INTEGER DEFAULT 100) RETURNS INTEGER
LANGUAGE plpgsql SET search_path = public, pg_temp AS $$
DECLARE
    v_events uuid[];
BEGIN
    SELECT array_agg(id) INTO v_events FROM (
        SELECT id FROM webhook_events
         WHERE fanned_out_at IS NULL
         ORDER BY created_at
         LIMIT batch_size
           FOR UPDATE SKIP LOCKED) due;
    IF v_events IS NULL THEN
        RETURN 0;
    END IF;
    INSERT INTO webhook_deliveries (event_id, endpoint_id)
    SELECT ev.id, e.id
      FROM webhook_events ev
      JOIN conversions c ON c.id = ev.conversion_id
      JOIN webhook_endpoints e ON COALESCE(e.user_id, e.vendor_id) = COALESCE(c.user_id, c.vendor_id)
                              AND (e.user_id IS NOT NULL) = (c.user_id IS NOT NULL)
     WHERE ev.id = ANY (v_events) AND e.enabled AND ev.type = ANY (e.events)
    ON CONFLICT ON CONSTRAINT webhook_deliveries_event_endpoint_key DO NOTHING;
    UPDATE webhook_events SET fanned_out_at = now() WHERE id = ANY (v_events);
    RETURN cardinality(v_events);
END;
$$;

COMMENT ON FUNCTION webhook_fan_out(INTEGER) IS
    'Writes the deliveries of up to batch_size events not yet fanned out (the webhook sender calls it); returns the events fanned out.';

-- A new endpoint, unless its owner already has max_endpoints (SA040 webhook_limit_reached). The
-- owner's advisory lock makes concurrent creates count one after the other.
CREATE FUNCTION webhook_endpoint_create(p_user_id uuid, p_vendor_id uuid, p_url text, p_events text[],
                                        p_secret bytea, p_max_endpoints integer)
RETURNS SETOF webhook_endpoints
LANGUAGE plpgsql SET search_path = public, pg_temp AS $$
DECLARE
    v_owner uuid := COALESCE(p_user_id, p_vendor_id);
    v_count integer;
BEGIN
    PERFORM pg_advisory_xact_lock(hashtextextended('stayler_webhook_endpoints:' || v_owner::text, 0));
    SELECT count(*) INTO v_count FROM webhook_endpoints
     WHERE (p_user_id IS NOT NULL AND user_id = p_user_id) OR (p_vendor_id IS NOT NULL AND vendor_id = p_vendor_id);
    IF v_count >= p_max_endpoints THEN
        RAISE EXCEPTION 'webhook_limit_reached: an owner may have at most % webhook endpoints', p_max_endpoints
            USING ERRCODE = 'SA040';
    END IF;
    RETURN QUERY
    INSERT INTO webhook_endpoints (user_id, vendor_id, url, events, secret)
    VALUES (p_user_id, p_vendor_id, p_url, p_events, p_secret)
    RETURNING *;
END;
$$;

COMMENT ON FUNCTION webhook_endpoint_create(uuid, uuid, text, text[], bytea, integer) IS
    'Adds a webhook endpoint unless the owner has p_max_endpoints already (SA040).';

-- Finished deliveries (delivered or failed) whose finished_at is older than older_than, with their
-- attempts (ON DELETE CASCADE); served by idx_webhook_deliveries_finished.
CREATE FUNCTION prune_webhook_deliveries(older_than INTERVAL, batch_size INTEGER DEFAULT 1000) RETURNS INTEGER
LANGUAGE sql AS $$
    WITH gone AS (
        DELETE FROM webhook_deliveries d
         WHERE d.id = ANY (ARRAY(
            SELECT d.id FROM webhook_deliveries d
             WHERE d.status <> 'pending'
               AND d.finished_at < now() - older_than
               AND older_than > interval '0'
             ORDER BY d.finished_at
             LIMIT batch_size
               FOR UPDATE SKIP LOCKED))
        RETURNING 1
    )
    SELECT count(*)::integer FROM gone
$$;

COMMENT ON FUNCTION prune_webhook_deliveries(INTERVAL, INTEGER) IS
    'Deletes up to batch_size delivered or failed webhook deliveries finished more than older_than ago; returns the count.';

-- Events fanned out more than older_than ago that no delivery names any more.
CREATE FUNCTION prune_webhook_events(older_than INTERVAL, batch_size INTEGER DEFAULT 1000) RETURNS INTEGER
LANGUAGE sql AS $$
    WITH gone AS (
        DELETE FROM webhook_events ev
         WHERE ev.id = ANY (ARRAY(
            SELECT ev.id FROM webhook_events ev
             WHERE ev.fanned_out_at < now() - older_than
               AND older_than > interval '0'
               AND NOT EXISTS (SELECT 1 FROM webhook_deliveries d WHERE d.event_id = ev.id)
             ORDER BY ev.fanned_out_at
             LIMIT batch_size
               FOR UPDATE SKIP LOCKED))
        RETURNING 1
    )
    SELECT count(*)::integer FROM gone
$$;

COMMENT ON FUNCTION prune_webhook_events(INTERVAL, INTEGER) IS
    'Deletes up to batch_size fanned-out webhook events with no delivery left, older than older_than; returns the count.';

-- The read-only role reads every endpoint column but the signing secret.
REVOKE SELECT ON webhook_endpoints FROM stayler_operator_ro;
GRANT SELECT (id, user_id, vendor_id, url, events, enabled, failing_since, disabled_at, disabled_reason, created_at)
    ON webhook_endpoints TO stayler_operator_ro;

GRANT EXECUTE ON FUNCTION webhook_fan_out(INTEGER), webhook_endpoint_create(uuid, uuid, text, text[], bytea, integer),
    prune_webhook_deliveries(INTERVAL, INTEGER), prune_webhook_events(INTERVAL, INTEGER) TO stayler_admin;
