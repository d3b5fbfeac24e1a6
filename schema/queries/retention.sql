-- Retention: the batched prune functions (0110, 0400) and the expiry of images (0440).
-- Named queries: see schema/README.md ("The query layer") for the naming rule.

-- name: prune_finished_jobs
-- Up to %(batch_size)s finished jobs completed more than %(older_than_s)s seconds ago (0110).
SELECT prune_finished_jobs(make_interval(secs => %(older_than_s)s), %(batch_size)s);

-- name: prune_stopped_workers
SELECT prune_stopped_workers(make_interval(secs => %(older_than_s)s), %(batch_size)s);

-- name: prune_image_usage_history
SELECT prune_image_usage_history(make_interval(secs => %(older_than_s)s), %(batch_size)s);

-- name: prune_conversion_metrics
SELECT prune_conversion_metrics(make_interval(secs => %(older_than_s)s), %(batch_size)s);

-- name: prune_operator_actions
SELECT prune_operator_actions(make_interval(secs => %(older_than_s)s), %(batch_size)s);

-- name: prune_webhook_deliveries
SELECT prune_webhook_deliveries(make_interval(secs => %(older_than_s)s), %(batch_size)s);

-- name: prune_webhook_events
SELECT prune_webhook_events(make_interval(secs => %(older_than_s)s), %(batch_size)s);

-- name: retention_expire_images
SELECT retention_expire_images(%(type)s, %(older_than_s)s, %(batch_size)s);
