-- conversion_metrics: one row per ended conversion, read by the console's overview.
-- Named queries: see schema/README.md ("The query layer") for the naming rule.

-- name: conversion_metric_count_per_minute
-- Completed and failed per minute over the last hour, from conversion_metrics' created_at index
-- (one row per conversion that ended; the last hour only, never the history).
SELECT date_trunc('minute', created_at) AS minute,
       count(*) FILTER (WHERE success) AS completed,
       count(*) FILTER (WHERE NOT success AND coalesce(error_type, '') <> 'cancelled') AS failed
  FROM conversion_metrics
 WHERE created_at > now() - interval '1 hour'
 GROUP BY 1 ORDER BY 1;

-- name: conversion_metric_count_errors_last_hour
-- Error types of the last hour (the same index; a cancellation is not an error).
SELECT coalesce(error_type, 'unknown') AS error_type, count(*) AS n
  FROM conversion_metrics
 WHERE created_at > now() - interval '1 hour' AND NOT success AND coalesce(error_type, '') <> 'cancelled'
 GROUP BY 1 ORDER BY 2 DESC, 1;

-- name: conversion_metric_get
SELECT processing_time_ms, input_file_size_bytes, output_file_size_bytes, success, error_type,
       ai_model_version, created_at
  FROM conversion_metrics WHERE conversion_id = %(id)s;

-- name: conversion_metric_summary_last_hour
-- Latency (submitted → ended) p50/p95 of the last hour's completions, and how the last hour's
-- conversions ended (conversion_metrics' created_at index, joined to conversions by primary key).
SELECT percentile_cont(0.5) WITHIN GROUP (ORDER BY extract(epoch FROM m.created_at - c.created_at) * 1000)
           FILTER (WHERE m.success) AS latency_p50_ms,
       percentile_cont(0.95) WITHIN GROUP (ORDER BY extract(epoch FROM m.created_at - c.created_at) * 1000)
           FILTER (WHERE m.success) AS latency_p95_ms,
       count(*) FILTER (WHERE m.success) AS completed,
       count(*) FILTER (WHERE NOT m.success AND coalesce(m.error_type, '') <> 'cancelled') AS failed,
       count(*) FILTER (WHERE m.error_type = 'cancelled') AS cancelled
  FROM conversion_metrics m JOIN conversions c ON c.id = m.conversion_id
 WHERE m.created_at > now() - interval '1 hour';
