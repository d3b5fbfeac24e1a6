-- Fair share between customers (docs/architecture.md, "Fair share"; 0420).
-- Named queries: see schema/README.md ("The query layer") for the naming rule.

-- name: fair_plan_configure
-- The fleet's settings into fair_plans (the leader, each gauges interval); rows only change when a
-- value differs, so an unchanged fleet writes nothing.
UPDATE fair_plans p SET weight = x.weight, max_processing = x.max_processing
  FROM (VALUES ('free', %(weight_free)s::float8, %(cap_free)s::int),
               ('paid', %(weight_paid)s::float8, %(cap_paid)s::int),
               ('vendor', %(weight_vendor)s::float8, %(cap_vendor)s::int)) AS x (plan, weight, max_processing)
 WHERE p.plan = x.plan AND (p.weight, p.max_processing) IS DISTINCT FROM (x.weight, x.max_processing);

-- name: fair_plan_get_stats
-- Per plan (never per owner: the label set stays bounded): queued and processing jobs, and owners
-- throttled now (at their cap with ready jobs waiting). Reads the queued / processing partial
-- indexes and the busy owners' load rows.
SELECT p.plan,
       (SELECT count(*) FROM conversion_jobs j WHERE j.status = 'queued' AND j.plan = p.plan) AS queued,
       (SELECT count(*) FROM conversion_jobs j WHERE j.status = 'processing' AND j.plan = p.plan) AS processing,
       (SELECT count(*) FROM owner_load o JOIN owner_lanes l ON l.owner_id = o.owner_id
         WHERE o.processing > 0 AND l.plan = p.plan AND p.max_processing > 0 AND o.processing >= p.max_processing
           AND EXISTS (SELECT 1 FROM conversion_jobs j
                        WHERE j.owner_id = o.owner_id AND j.status = 'queued' AND NOT j.scheduled)) AS throttled
  FROM fair_plans p
 ORDER BY p.plan;

-- name: fair_owner_list_backlog
-- The owners with the largest backlog (queued jobs), with what they have processing, their cap and
-- whether the cap holds them back now (the console's fair-share page).
SELECT b.owner_id, l.owner_kind, l.plan, b.queued, coalesce(o.processing, 0) AS processing,
       p.max_processing, coalesce(l.band, p.band) AS band,
       (p.max_processing > 0 AND coalesce(o.processing, 0) >= p.max_processing) AS throttled
  FROM (SELECT owner_id, count(*) AS queued FROM conversion_jobs
         WHERE status = 'queued' AND owner_id IS NOT NULL
         GROUP BY owner_id ORDER BY count(*) DESC LIMIT %(limit)s) AS b
  JOIN owner_lanes l ON l.owner_id = b.owner_id
  JOIN fair_plans p ON p.plan = l.plan
  LEFT JOIN owner_load o ON o.owner_id = b.owner_id
 ORDER BY b.queued DESC, b.owner_id;

-- name: fair_owner_set_band
-- An operator moves an owner to a band (NULL: its plan's); returns the queued jobs moved.
SELECT fair_owner_set_band(%(owner_id)s, %(band)s);

-- name: fair_plan_list
-- Each plan's weight, band and per-owner cap (the console's fair-share page).
SELECT plan, weight, band, max_processing FROM fair_plans ORDER BY plan;
