-- The fleet's switches (fleet_controls, 0300).
-- Named queries: see schema/README.md ("The query layer") for the naming rule.

-- name: fleet_control_get_paused
-- Whether an operator paused dispatch (fleet_controls, 0300); the leader's dispatch duty reads it each round.
SELECT dispatch_paused FROM fleet_controls WHERE id;

-- name: fleet_control_get
SELECT dispatch_paused, updated_at, updated_by FROM fleet_controls WHERE id;
