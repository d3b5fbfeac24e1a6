-- What operators do (the operator_* functions) and the audit trail they write (operator_actions).
-- Named queries: see schema/README.md ("The query layer") for the naming rule.

-- name: operator_cancel_conversion
-- The operator's cancel, written to operator_actions (0100).
SELECT operator_cancel_conversion(conversion_id := %(conversion_id)s, operator := %(operator)s,
                                  reason := %(reason)s);

-- name: operator_action_list_by_conversion
SELECT created_at, operator, action, reason, status_before, status_after, new_conversion_id, outcome
  FROM operator_actions WHERE conversion_id = %(id)s ORDER BY created_at, id;

-- name: operator_retry_conversion
SELECT operator_retry_conversion(conversion_id := %(id)s, operator := %(operator)s, reason := %(reason)s);

-- name: operator_set_dispatch_paused
SELECT operator_set_dispatch_paused(paused := %(paused)s, operator := %(operator)s, reason := %(reason)s);

-- name: operator_action_list_recent
-- The audit trail's newest rows (operator_actions' created_at index).
SELECT created_at, operator, action, conversion_id, new_conversion_id, reason, status_before, status_after
  FROM operator_actions ORDER BY created_at DESC, id DESC LIMIT %(limit)s;
