-- 0300_console.sql
--
-- The operations console (console/, docs/operations.md "The operations console"):
--   * console_grants: which API keys may log in to the console, as an operator or a viewer;
--   * console_sessions: server-side sessions (only a hash of the cookie's token is stored);
--   * fleet_controls: one row; dispatch_paused stops the leader's dispatch duty from sending messages;
--   * operator_actions gains 'retry', 'pause_dispatch' and 'resume_dispatch' (and new_conversion_id);
--   * operator_retry_conversion(): a failed conversion is retried as a NEW conversion linked to it
--     (metadata {"retry_of": <id>}), since statuses only move forward;
--   * operator_set_dispatch_paused(): pause or resume dispatch, audited;
--   * indexes that keep the console's filters cheap with 1,000,000 finished conversions.

CREATE TABLE console_grants (
    key_id UUID PRIMARY KEY REFERENCES api_keys(id) ON DELETE CASCADE,
    role TEXT NOT NULL CHECK (role IN ('operator', 'viewer')),
    granted_by TEXT NOT NULL DEFAULT session_user,
    created_at TIMESTAMPTZ NOT NULL DEFAULT now()
);
COMMENT ON TABLE console_grants IS
    'Console access of an API key: operator (sees everything, acts) or viewer (sees everything, changes nothing).';

CREATE TABLE console_sessions (
    token_hash BYTEA PRIMARY KEY,
    key_id UUID NOT NULL REFERENCES api_keys(id) ON DELETE CASCADE,
    csrf_token TEXT NOT NULL,
    created_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    expires_at TIMESTAMPTZ NOT NULL
);
CREATE INDEX idx_console_sessions_key_id ON console_sessions (key_id);
CREATE INDEX idx_console_sessions_expires_at ON console_sessions (expires_at);
COMMENT ON TABLE console_sessions IS
    'Console logins: the SHA-256 of the session cookie''s random token, its key and CSRF token, until expires_at.';

CREATE TABLE fleet_controls (
    id BOOLEAN PRIMARY KEY DEFAULT true CHECK (id),
    dispatch_paused BOOLEAN NOT NULL DEFAULT false,
    updated_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    updated_by TEXT
);
INSERT INTO fleet_controls (id, dispatch_paused) VALUES (true, false);
CREATE TRIGGER trg_fleet_controls_updated_at
    BEFORE UPDATE ON fleet_controls
    FOR EACH ROW EXECUTE FUNCTION set_updated_at();
COMMENT ON TABLE fleet_controls IS
    'One row of fleet-wide switches; dispatch_paused: the leader sends no claim messages (set by operator_set_dispatch_paused()).';

ALTER TABLE operator_actions DROP CONSTRAINT operator_actions_action_check;
ALTER TABLE operator_actions ADD CONSTRAINT operator_actions_action_check
    CHECK (action IN ('cancel', 'retry', 'pause_dispatch', 'resume_dispatch'));
ALTER TABLE operator_actions ALTER COLUMN conversion_id DROP NOT NULL;
ALTER TABLE operator_actions ADD COLUMN new_conversion_id UUID;
ALTER TABLE operator_actions ADD CONSTRAINT operator_actions_conversion_required
    CHECK (conversion_id IS NOT NULL OR action IN ('pause_dispatch', 'resume_dispatch'));
COMMENT ON COLUMN operator_actions.new_conversion_id IS 'retry: the new conversion made for the failed one.';

-- The console's filters on outcome, and the link from a conversion to its retries.
CREATE INDEX idx_conversion_metrics_error_created ON conversion_metrics (error_type, created_at)
    WHERE error_type IS NOT NULL;
CREATE INDEX idx_conversion_metrics_model_created ON conversion_metrics (ai_model_version, created_at);
CREATE INDEX idx_conversions_retry_of ON conversions ((metadata ->> 'retry_of'))
    WHERE metadata ? 'retry_of';

CREATE FUNCTION operator_retry_conversion(conversion_id UUID, operator TEXT, reason TEXT)
RETURNS UUID
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = public, pg_temp
AS $$
DECLARE
    v_c conversions%ROWTYPE;
    v_job conversion_jobs%ROWTYPE;
    v_new UUID;
BEGIN
    IF operator_retry_conversion.conversion_id IS NULL THEN
        RAISE EXCEPTION 'argument_required: conversion_id is required' USING ERRCODE = 'SA004';
    END IF;
    IF length(btrim(COALESCE(operator_retry_conversion.operator, ''))) = 0
       OR length(btrim(COALESCE(operator_retry_conversion.reason, ''))) = 0 THEN
        RAISE EXCEPTION 'argument_required: an operator retry needs the operator''s name and a reason'
            USING ERRCODE = 'SA004';
    END IF;
    -- The row lock serialises two retries of one conversion: the second finds the first's.
    SELECT c.* INTO v_c FROM conversions c WHERE c.id = operator_retry_conversion.conversion_id FOR UPDATE;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'conversion_not_found: conversion % does not exist', operator_retry_conversion.conversion_id
            USING ERRCODE = 'SA020';
    END IF;
    IF v_c.status <> 'failed' THEN
        RAISE EXCEPTION 'invalid_status_transition: only a failed conversion is retried; % is %',
                v_c.id, v_c.status USING ERRCODE = 'SA021';
    END IF;
    SELECT c.id INTO v_new FROM conversions c
     WHERE c.metadata ? 'retry_of' AND c.metadata ->> 'retry_of' = v_c.id::text
     ORDER BY c.created_at LIMIT 1;
    IF FOUND THEN
        RETURN v_new;  -- retried already: the same answer again, nothing new
    END IF;
    SELECT j.* INTO v_job FROM conversion_jobs j WHERE j.conversion_id = v_c.id ORDER BY j.created_at DESC LIMIT 1;
    v_new := create_conversion(
        user_id := v_c.user_id, vendor_id := v_c.vendor_id,
        user_image_id := v_c.user_image_id, cloth_image_id := v_c.cloth_image_id,
        conversion_type := v_c.conversion_type, style_name := v_c.style_name,
        priority := COALESCE(v_job.priority, 0), max_retries := COALESCE(v_job.max_retries, 3),
        metadata := COALESCE(v_c.metadata, '{}'::jsonb) || jsonb_build_object('retry_of', v_c.id::text));
    INSERT INTO operator_actions (operator, action, conversion_id, reason, status_before, status_after,
                                  new_conversion_id)
    VALUES (operator_retry_conversion.operator, 'retry', v_c.id, operator_retry_conversion.reason,
            v_c.status, v_c.status, v_new);
    RETURN v_new;
END;
$$;
COMMENT ON FUNCTION operator_retry_conversion(UUID, TEXT, TEXT) IS
    'Retry a failed conversion as a new one (same owner, images, style, priority; metadata retry_of), audited; idempotent.';

CREATE FUNCTION operator_set_dispatch_paused(paused BOOLEAN, operator TEXT, reason TEXT)
RETURNS BOOLEAN
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = public, pg_temp
AS $$
DECLARE
    v_before BOOLEAN;
BEGIN
    IF operator_set_dispatch_paused.paused IS NULL THEN
        RAISE EXCEPTION 'argument_required: paused is required' USING ERRCODE = 'SA004';
    END IF;
    IF length(btrim(COALESCE(operator_set_dispatch_paused.operator, ''))) = 0
       OR length(btrim(COALESCE(operator_set_dispatch_paused.reason, ''))) = 0 THEN
        RAISE EXCEPTION 'argument_required: pausing or resuming dispatch needs the operator''s name and a reason'
            USING ERRCODE = 'SA004';
    END IF;
    SELECT f.dispatch_paused INTO v_before FROM fleet_controls f WHERE f.id FOR UPDATE;
    UPDATE fleet_controls f
       SET dispatch_paused = operator_set_dispatch_paused.paused, updated_at = now(),
           updated_by = operator_set_dispatch_paused.operator
     WHERE f.id;
    INSERT INTO operator_actions (operator, action, conversion_id, reason, status_before, status_after)
    VALUES (operator_set_dispatch_paused.operator,
            CASE WHEN operator_set_dispatch_paused.paused THEN 'pause_dispatch' ELSE 'resume_dispatch' END,
            NULL, operator_set_dispatch_paused.reason,
            CASE WHEN v_before THEN 'paused' ELSE 'running' END,
            CASE WHEN operator_set_dispatch_paused.paused THEN 'paused' ELSE 'running' END);
    RETURN operator_set_dispatch_paused.paused;
END;
$$;
COMMENT ON FUNCTION operator_set_dispatch_paused(BOOLEAN, TEXT, TEXT) IS
    'Pause (true) or resume (false) dispatch: the leader sends no claim messages and the claim takes nothing; audited.';

-- Privileges, as 0120 does for the operator's cancel: nothing for PUBLIC, the operator path for
-- stayler_admin, reading for stayler_operator_ro, and the leader reads the switch.
REVOKE EXECUTE ON FUNCTION operator_retry_conversion(UUID, TEXT, TEXT),
                           operator_set_dispatch_paused(BOOLEAN, TEXT, TEXT) FROM PUBLIC;
REVOKE ALL ON console_grants, console_sessions, fleet_controls FROM PUBLIC;
GRANT EXECUTE ON FUNCTION operator_retry_conversion(UUID, TEXT, TEXT),
                          operator_set_dispatch_paused(BOOLEAN, TEXT, TEXT) TO stayler_admin;
GRANT ALL ON console_grants, console_sessions, fleet_controls TO stayler_admin;
GRANT SELECT ON console_grants, fleet_controls TO stayler_operator_ro;
GRANT SELECT ON fleet_controls TO stayler_worker;
