-- Two-step aggregation: X_state(...) aggregates store a state of type
-- spillagg_state, rollup(spillagg_state) merges stored states, and
-- X_final(spillagg_state) finishes one.  X_final(rollup(states of the parts))
-- must equal X over all the parts' rows.
SET client_min_messages = warning;
SET max_parallel_workers_per_gather = 0;  -- parallel plans only where asked for below

-- Small, hand-checkable cases.
SELECT pg_typeof(count_distinct_state(x)), count_distinct_final(count_distinct_state(x)) AS cd,
       count_map_final(count_map_state(x)) AS cm, histogram_final(count_map_state(x)) AS h,
       top_k_final(top_k_state(x, 2), NULL::text) AS top2, pg_typeof(top_k_final(top_k_state(x, 2), NULL::text))
FROM (VALUES ('b'), ('a'), ('b'), ('c'), ('a'), (NULL)) v(x);          -- 3, {"a": 2, "b": 2, "c": 1} twice, {a,b}
SELECT top_k_final(top_k_state(x, 2), 0) FROM (VALUES (3), (3), (5), (7), (7), (7)) v(x);  -- {7,3}
SELECT sum_map_final(sum_map_state(k, v)) AS sum, avg_map_final(sum_map_state(k, v)) AS avg,
       min_map_final(min_map_state(k, v)) AS min, max_map_final(max_map_state(k, v)) AS max,
       count_distinct_final(sum_map_state(k, v)) AS keys   -- a key of only NULL values counts
FROM (VALUES ('a', 1), ('a', 2), ('b', NULL), (NULL, 5)) t(k, v);
-- One moments state, every variance and stddev finalizer; then the built-ins.
SELECT variance_map_final(s) ->> 'a' AS var_samp, var_pop_map_final(s) ->> 'a' AS var_pop,
       stddev_map_final(s) ->> 'a' AS stddev_samp, stddev_pop_map_final(s) ->> 'a' AS stddev_pop
FROM (SELECT var_pop_map_state(k, v) s FROM (VALUES ('a', 1), ('a', 2), ('a', 4)) t(k, v)) x;
SELECT var_samp(v), var_pop(v), stddev_samp(v), stddev_pop(v) FROM (VALUES (1), (2), (4)) t(v);

-- Test data: 91 days (January to March 2024), 20000 events; part is the
-- third of the month (days 1-10, 11-20, 21-).  Keys: user (int,
-- Zipf-like), url (text, 1000 values), country (text, 10 values).  Values of
-- every accepted type, each 3% NULL.
SELECT setseed(0.31);
CREATE TABLE events AS
SELECT e.day, date_trunc('month', e.day)::date + least((extract(day FROM e.day)::int - 1) / 10, 2) * 10 AS part,
       u, url, country, v2, v4, v8, vr, vd, vn
FROM (SELECT date '2024-01-01' + (i % 91) AS day,
             floor(exp(random() * ln(2000)))::int AS u,
             '/page/' || floor(random() * 1000) AS url,
             (ARRAY['DE', 'FR', 'US', 'JP', 'BR', 'IN', 'CN', 'GB', 'IT', 'ES'])[1 + floor(random() * 10)::int] AS country,
             CASE WHEN random() < 0.03 THEN NULL ELSE floor(random() * 2001 - 1000)::int2 END AS v2,
             CASE WHEN random() < 0.03 THEN NULL ELSE floor(random() * 2e9 - 1e9)::int4 END AS v4,
             CASE WHEN random() < 0.03 THEN NULL ELSE floor((random() * 2 - 1) * 9e18)::int8 END AS v8,
             CASE WHEN random() < 0.03 THEN NULL ELSE (random() * 100)::real END AS vr,
             CASE WHEN random() < 0.03 THEN NULL ELSE random() * 1e6 END AS vd,
             CASE WHEN random() < 0.03 THEN NULL ELSE round((random() * 1e4)::numeric, 2) END AS vn
      FROM generate_series(1, 20000) i) e;
ANALYZE events;

-- The documented use case, at 64 kB (the daily states and the monthly
-- rollups spill): per-day states stored in a table, rolled up per month.
SET spillagg.work_mem = 64;
CREATE TABLE daily AS
SELECT day,
       count_distinct_state(u) AS users,
       count_map_state(country) AS events_by_country,
       top_k_state(u, 5) AS top_users,
       sum_map_state(country, vn) AS revenue,
       avg_map_state(country, vd) AS avg_vd,
       max_map_state(url, v4) AS max_v4,
       stddev_map_state(url, v8) AS stddev_v8
FROM events GROUP BY day;

CREATE TEMP TABLE st0 AS SELECT * FROM spillagg_stats();
CREATE TABLE monthly AS
SELECT date_trunc('month', day)::date AS month,
       count_distinct_final(rollup(users)) AS users,
       count_map_final(rollup(events_by_country)) AS events_by_country,
       top_k_final(rollup(top_users), NULL::int) AS top_users,
       sum_map_final(rollup(revenue)) AS revenue,
       avg_map_final(rollup(avg_vd)) AS avg_vd,
       max_map_final(rollup(max_v4)) AS max_v4,
       stddev_map_final(rollup(stddev_v8)) AS stddev_v8
FROM daily GROUP BY 1;
SELECT s.spills - st0.spills > 0 AS rollup_spilled FROM spillagg_stats() s, st0;
SELECT to_char(month, 'YYYY-MM') AS month, users, top_users,
       events_by_country -> 'DE' AS de_events, revenue -> 'DE' AS de_revenue
FROM monthly ORDER BY 1;

-- The one-step answer (each aggregate over the month's rows) and the
-- native one.
CREATE TABLE monthly_one AS
SELECT date_trunc('month', day)::date AS month,
       count_distinct(u) AS users, count_map(country) AS events_by_country,
       top_k(u, 5) AS top_users, sum_map(country, vn) AS revenue,
       avg_map(country, vd) AS avg_vd, max_map(url, v4) AS max_v4,
       stddev_map(url, v8) AS stddev_v8
FROM events GROUP BY 1;
CREATE TABLE monthly_native AS
SELECT d.month, d.users, c.events_by_country, t.top_users, c.revenue, c.avg_vd, m.max_v4, m.stddev_v8
FROM (SELECT date_trunc('month', day)::date AS month, count(DISTINCT u) AS users FROM events GROUP BY 1) d
JOIN (SELECT month, jsonb_object_agg(country, n) AS events_by_country,
             jsonb_object_agg(country, s) AS revenue, jsonb_object_agg(country, a) AS avg_vd
      FROM (SELECT date_trunc('month', day)::date AS month, country, count(*) n, sum(vn) s, avg(vd) a
            FROM events GROUP BY 1, 2) x GROUP BY 1) c USING (month)
JOIN (SELECT month, array_agg(u ORDER BY n DESC, u) AS top_users
      FROM (SELECT month, u, n, row_number() OVER (PARTITION BY month ORDER BY n DESC, u) AS rn
            FROM (SELECT date_trunc('month', day)::date AS month, u, count(*) n FROM events GROUP BY 1, 2) x) y
      WHERE rn <= 5 GROUP BY 1) t USING (month)
JOIN (SELECT month, jsonb_object_agg(url, mx) AS max_v4, jsonb_object_agg(url, sd) AS stddev_v8
      FROM (SELECT date_trunc('month', day)::date AS month, url, max(v4) mx, stddev(v8) sd
            FROM events GROUP BY 1, 2) x GROUP BY 1) m USING (month);

-- Float maps are compared key by key within a relative tolerance; the
-- others exactly (the same jsonb text: same keys, same digits and scale).
CREATE FUNCTION ts_same(a jsonb, b jsonb, tol float8 DEFAULT 0) RETURNS bool LANGUAGE sql AS $$
  SELECT CASE
    WHEN a IS NULL OR b IS NULL THEN a IS NULL AND b IS NULL
    WHEN tol = 0 OR jsonb_typeof(a) <> 'object' THEN a::text = b::text
    ELSE NOT EXISTS (
      SELECT FROM jsonb_each(a) x FULL JOIN jsonb_each(b) y USING (key)
      WHERE x.value IS NULL OR y.value IS NULL
         OR NOT (x.value = y.value
                 OR (jsonb_typeof(x.value) = 'number' AND jsonb_typeof(y.value) = 'number'
                     AND abs(x.value::float8 - y.value::float8)
                         <= tol * greatest(abs(x.value::float8), abs(y.value::float8)))))
  END $$;
SELECT to_char(o.month, 'YYYY-MM') AS month,
       t.users = o.users AND t.users = n.users AS users,
       t.events_by_country = o.events_by_country AND t.events_by_country = n.events_by_country AS by_country,
       t.top_users = o.top_users AND t.top_users = n.top_users AS top_users,
       t.revenue::text = o.revenue::text AND t.revenue::text = n.revenue::text AS revenue,
       ts_same(t.avg_vd, o.avg_vd, 1e-12) AND ts_same(t.avg_vd, n.avg_vd, 1e-12) AS avg_vd,
       t.max_v4 = o.max_v4 AND t.max_v4 = n.max_v4 AS max_v4,
       t.stddev_v8::text = o.stddev_v8::text AND t.stddev_v8::text = n.stddev_v8::text AS stddev_v8
FROM monthly t FULL JOIN monthly_one o USING (month) FULL JOIN monthly_native n USING (month)
ORDER BY 1;

-- Round trips of every aggregate and value type, at 1GB and at 64 kB.  Per
-- part (third of the month) X_state(...) is stored; per month
-- X_final(rollup(state)) must equal X(...) over the month's rows (months_ok);
-- per part, through the text form, X_final(state::text::spillagg_state) must
-- equal X(...) over the part's rows (parts_ok).  The answers of X(...) are
-- computed once, at 1GB.  Keys: url (text) or u (int); values of all six
-- types.  Float answers are compared per key within tol (the summation order
-- differs), all others exactly.  The cross cases finalize a state with
-- another finalizer that accepts it (avg_map_final takes a sum_map_state,
-- any variance or stddev finalizer any moments state, ...); they run at 1GB
-- only.
CREATE TABLE ts_cases (ord serial, name text, state text, final text, one text, tol float8, cross_case bool);
INSERT INTO ts_cases (name, state, final, one, tol, cross_case)
SELECT a.name, format(a.state, k.k), format(a.final, '%s', k.t), format(a.one, k.k), 0, false
FROM (VALUES (1, 'count_distinct', 'count_distinct_state(%s)', 'count_distinct_final(%s)', 'count_distinct(%s)'),
             (2, 'count_map', 'count_map_state(%s)', 'count_map_final(%s)', 'count_map(%s)'),
             (3, 'histogram', 'count_map_state(%s)', 'histogram_final(%s)', 'histogram(%s)'),
             (4, 'top_k', 'top_k_state(%s, 7)', 'top_k_final(%s, NULL::%s)', 'top_k(%s, 7)')) a(n, name, state, final, one),
     (VALUES ('u', 'int'), ('url', 'text')) k(k, t)
ORDER BY a.n, k.k;
INSERT INTO ts_cases (name, state, final, one, tol, cross_case)
SELECT m.name, format('%s_state(%s, %s)', m.name, v.k, v.v), m.name || '_final(%s)',
       format('%s(%s, %s)', m.name, v.k, v.v),
       CASE WHEN v.t NOT IN ('real', 'double precision') OR m.kind = 'extreme' THEN 0
            WHEN m.kind = 'moments' THEN 1e-9
            WHEN v.t = 'real' AND m.name = 'sum_map' THEN 1e-5 ELSE 1e-12 END,
       false
FROM (VALUES (1, 'sum_map', 'sum'), (2, 'avg_map', 'sum'), (3, 'min_map', 'extreme'), (4, 'max_map', 'extreme'),
             (5, 'variance_map', 'moments'), (6, 'var_samp_map', 'moments'), (7, 'var_pop_map', 'moments'),
             (8, 'stddev_map', 'moments'), (9, 'stddev_samp_map', 'moments'), (10, 'stddev_pop_map', 'moments')) m(n, name, kind),
     (VALUES (1, 'smallint', 'url', 'v2'), (2, 'integer', 'u', 'v4'), (3, 'bigint', 'url', 'v8'),
             (4, 'real', 'u', 'vr'), (5, 'double precision', 'url', 'vd'), (6, 'numeric', 'u', 'vn')) v(n, t, k, v)
ORDER BY m.n, v.n;
-- Cross cases.
INSERT INTO ts_cases (name, state, final, one, tol, cross_case)
SELECT c.name, format(c.state, v.k, v.v), c.final, format(c.one, v.k, v.v),
       CASE WHEN v.v NOT IN ('vr', 'vd') THEN 0 WHEN c.final LIKE 'var%' OR c.final LIKE 'std%' THEN 1e-9
            WHEN v.v = 'vr' AND c.final LIKE 'sum%' THEN 1e-5 ELSE 1e-12 END,
       true
FROM (VALUES (1, 'avg_map_final(sum_map_state)', 'sum_map_state(%s, %s)', 'avg_map_final(%s)', 'avg_map(%s, %s)'),
             (2, 'sum_map_final(avg_map_state)', 'avg_map_state(%s, %s)', 'sum_map_final(%s)', 'sum_map(%s, %s)'),
             (3, 'stddev_pop_map_final(variance_map_state)', 'variance_map_state(%s, %s)', 'stddev_pop_map_final(%s)', 'stddev_pop_map(%s, %s)'),
             (4, 'variance_map_final(stddev_pop_map_state)', 'stddev_pop_map_state(%s, %s)', 'variance_map_final(%s)', 'variance_map(%s, %s)'),
             (5, 'var_pop_map_final(stddev_map_state)', 'stddev_map_state(%s, %s)', 'var_pop_map_final(%s)', 'var_pop_map(%s, %s)'),
             (6, 'stddev_samp_map_final(var_pop_map_state)', 'var_pop_map_state(%s, %s)', 'stddev_samp_map_final(%s)', 'stddev_samp_map(%s, %s)'),
             (7, 'count_distinct_final(min_map_state)', 'min_map_state(%s, %s)', 'count_distinct_final(%s)', 'count_distinct(%s)')) c(n, name, state, final, one),
     (VALUES (1, 'url', 'v2'), (2, 'u', 'v4'), (3, 'url', 'v8'), (4, 'u', 'vr'), (5, 'url', 'vd'), (6, 'u', 'vn')) v(n, k, v)
WHERE c.n IN (1, 2) OR (c.n + v.n) % 2 = 0   -- the variance/stddev crossings: three value types each
ORDER BY c.n, v.n;
INSERT INTO ts_cases (name, state, final, one, tol, cross_case) VALUES
  ('count_map_final(top_k_state)', 'top_k_state(url, 3)', 'count_map_final(%s)', 'count_map(url)', 0, true),
  ('count_map_final(top_k_state)', 'top_k_state(u, 3)', 'count_map_final(%s)', 'count_map(u)', 0, true),
  ('count_distinct_final(top_k_state)', 'top_k_state(url, 3)', 'count_distinct_final(%s)', 'count_distinct(url)', 0, true),
  ('count_distinct_final(count_map_state)', 'count_map_state(u)', 'count_distinct_final(%s)', 'count_distinct(u)', 0, true);
SELECT count(*) FILTER (WHERE NOT cross_case) AS cases, count(*) FILTER (WHERE cross_case) AS cross_cases FROM ts_cases;

CREATE TABLE ts_ref (one text, per text, grp date, r jsonb);  -- X(...) per month and per part
CREATE TABLE ts_results (budget text, ord int, months int, months_ok bool, parts int, parts_ok bool,
                         rollup_spilled bool);
CREATE FUNCTION ts_roundtrip(budget text, c ts_cases) RETURNS void LANGUAGE plpgsql AS $$
DECLARE
  r ts_results;
  spills0 bigint;
BEGIN
  r.budget := budget;
  r.ord := c.ord;
  IF NOT EXISTS (SELECT FROM ts_ref WHERE one = c.one) THEN
    EXECUTE format('INSERT INTO ts_ref
                    SELECT $1, ''month'', date_trunc(''month'', day), to_jsonb(%1$s) FROM events GROUP BY 3
                    UNION ALL
                    SELECT $1, ''part'', part, to_jsonb(%1$s) FROM events GROUP BY 3', c.one) USING c.one;
  END IF;
  DROP TABLE IF EXISTS ts_p;
  EXECUTE format('CREATE TEMP TABLE ts_p AS SELECT part, %s AS s FROM events GROUP BY part', c.state);
  SELECT spills INTO spills0 FROM spillagg_stats();
  DROP TABLE IF EXISTS ts_m;
  EXECUTE format('CREATE TEMP TABLE ts_m AS SELECT date_trunc(''month'', part) AS m, to_jsonb(%s) AS r
                  FROM ts_p GROUP BY 1', format(c.final, 'rollup(s)'));
  r.rollup_spilled := (SELECT spills FROM spillagg_stats()) > spills0;
  SELECT count(*), bool_and(ts_same(m.r, x.r, c.tol)) INTO r.months, r.months_ok
  FROM ts_m m JOIN ts_ref x ON x.one = c.one AND x.per = 'month' AND x.grp = m.m;
  EXECUTE format('SELECT count(*), bool_and(ts_same(to_jsonb(%s), x.r, $1))
                  FROM ts_p JOIN ts_ref x ON x.one = $2 AND x.per = ''part'' AND x.grp = ts_p.part',
                 format(c.final, 's::text::spillagg_state'))
    INTO r.parts, r.parts_ok USING c.tol, c.one;
  INSERT INTO ts_results SELECT r.*;
END $$;

SET spillagg.work_mem = '1GB';
SELECT count(ts_roundtrip('1GB', c)) FROM ts_cases c;
SET spillagg.work_mem = 64;
SELECT count(ts_roundtrip('64kB', c)) FROM ts_cases c WHERE NOT cross_case;

-- One row per aggregate: the number of cases (key and value types), how
-- many passed every check at each budget, and how many monthly rollups
-- spilled.
SELECT c.name, count(*) FILTER (WHERE r.budget = '1GB') AS cases,
       count(*) FILTER (WHERE r.budget = '1GB' AND r.months = 3 AND r.parts = 9
                        AND r.months_ok AND r.parts_ok) AS ok_1gb,
       count(*) FILTER (WHERE r.budget = '1GB' AND r.rollup_spilled) AS spilled_1gb,
       count(*) FILTER (WHERE r.budget = '64kB' AND r.months = 3 AND r.parts = 9
                        AND r.months_ok AND r.parts_ok) AS ok_64kb,
       count(*) FILTER (WHERE r.budget = '64kB' AND r.rollup_spilled) AS spilled_64kb
FROM ts_cases c JOIN ts_results r USING (ord)
WHERE NOT c.cross_case
GROUP BY c.name ORDER BY min(c.ord);
SELECT c.name AS cross_case, count(*) AS cases,
       count(*) FILTER (WHERE r.months = 3 AND r.parts = 9 AND r.months_ok AND r.parts_ok) AS ok_1gb
FROM ts_cases c JOIN ts_results r USING (ord)
WHERE c.cross_case
GROUP BY c.name ORDER BY min(c.ord);
-- The failures, if any (none expected).
SELECT r.budget, c.state, c.final, r.months, r.months_ok, r.parts, r.parts_ok
FROM ts_cases c JOIN ts_results r USING (ord)
WHERE NOT (r.months = 3 AND r.parts = 9 AND r.months_ok AND r.parts_ok)
ORDER BY r.budget, c.ord;

-- rollup over zero rows (or only NULLs) is NULL, and NULL states are
-- skipped.  count_distinct_final of it is 0, as count_distinct over no rows
-- (one_step); the other finalizers give NULL, as their aggregates do.
SELECT (SELECT rollup(users) FROM daily WHERE false) IS NULL AS zero_rows,
       (SELECT rollup(NULL::spillagg_state) FROM generate_series(1, 3)) IS NULL AS only_nulls,
       (SELECT count_distinct_final(rollup(users)) FROM daily WHERE false) AS count_distinct_of_nothing,
       (SELECT count_distinct(u) FROM events WHERE false) AS one_step;
SELECT count_map_final(NULL) IS NULL AS count_map, top_k_final(NULL, NULL::int) IS NULL AS top_k,
       sum_map_final(NULL) IS NULL AS sum_map, stddev_map_final(NULL) IS NULL AS stddev_map;
SELECT count_distinct_final(rollup(s)) = (SELECT count(DISTINCT u) FROM events WHERE day < '2024-01-04') AS users,
       count_map_final(rollup(c))::text = (SELECT count_map(country)::text FROM events WHERE day < '2024-01-04') AS by_country,
       count(*) AS rolled_up, count(s) AS non_null
FROM (SELECT users, events_by_country FROM daily WHERE day < '2024-01-04'
      UNION ALL SELECT NULL, NULL FROM generate_series(1, 3)) v(s, c);

-- Errors: each bad input or call raises an ERROR of the documented class
-- (caught by condition name), with its message.
CREATE FUNCTION ts_error(q text) RETURNS text LANGUAGE plpgsql AS $$
BEGIN
  EXECUTE q;
  RETURN 'no error';
EXCEPTION
  WHEN invalid_binary_representation THEN RETURN 'invalid_binary_representation: ' || SQLERRM;
  WHEN invalid_parameter_value THEN RETURN 'invalid_parameter_value: ' || SQLERRM;
  WHEN datatype_mismatch THEN RETURN 'datatype_mismatch: ' || SQLERRM;
  WHEN OTHERS THEN RETURN SQLSTATE || ': ' || SQLERRM;
END $$;
SELECT label, ts_error(q) AS outcome FROM (VALUES
  ('garbage text', $q$SELECT 'garbage'::spillagg_state$q$),
  ('two bytes', $q$SELECT '\x0102'::spillagg_state$q$),
  ('not hex', $q$SELECT '\xzz'::spillagg_state$q$),
  ('zeros', $q$SELECT ('\x' || repeat('00', 40))::spillagg_state$q$),
  ('format version', $q$SELECT overlay(users::text placing '09' from 11 for 2)::spillagg_state FROM daily$q$),
  ('unknown state kind', $q$SELECT overlay(revenue::text placing '7f' from 13 for 2)::spillagg_state FROM daily$q$),
  ('key type that does not exist', $q$SELECT overlay(users::text placing 'ffffff7f' from 15 for 8)::spillagg_state FROM daily$q$),
  ('collation that does not exist', $q$SELECT overlay(events_by_country::text placing 'ffffff7f' from 23 for 8)::spillagg_state FROM daily$q$),
  ('value type that does not exist', $q$SELECT overlay(revenue::text placing 'ffffff7f' from 31 for 8)::spillagg_state FROM daily$q$),
  ('truncated in a record', $q$SELECT substring(events_by_country::text, 1, 60)::spillagg_state FROM daily$q$),
  ('one byte short', $q$SELECT left(revenue::text, -2)::spillagg_state FROM daily$q$),
  ('sum_map_final(count_map_state)', $q$SELECT sum_map_final(events_by_country) FROM daily$q$),
  ('avg_map_final(stddev_map_state)', $q$SELECT avg_map_final(stddev_v8) FROM daily$q$),
  ('variance_map_final(sum_map_state)', $q$SELECT variance_map_final(revenue) FROM daily$q$),
  ('count_map_final(count_distinct_state)', $q$SELECT count_map_final(users) FROM daily$q$),
  ('top_k_final(count_map_state)', $q$SELECT top_k_final(events_by_country, NULL::text) FROM daily$q$),
  ('top_k_final(sum_map_state)', $q$SELECT top_k_final(revenue, NULL::text) FROM daily$q$),
  ('top_k_final, text for int keys', $q$SELECT top_k_final(top_users, NULL::text) FROM daily$q$),
  ('rollup: count_map + sum_map', $q$SELECT rollup(s) FROM daily, LATERAL (VALUES (events_by_country), (revenue)) v(s)$q$),
  ('rollup: count_distinct + top_k', $q$SELECT rollup(s) FROM daily, LATERAL (VALUES (users), (top_users)) v(s)$q$),
  ('rollup: int + text keys', $q$SELECT rollup(s) FROM daily, LATERAL (VALUES (users), ((SELECT count_distinct_state(url) FROM events))) v(s)$q$)
) v(label, q);

-- A rollup must not depend on the order of its inputs: states of one kind
-- that differ in value type, k or collation either merge the same way in
-- any order or are rejected in any order.
CREATE COLLATION ts_ci (provider = icu, locale = 'und-u-ks-level2', deterministic = false);
CREATE TABLE ts_mix AS SELECT
  (SELECT sum_map_state(x, 1::int) FROM (VALUES ('a')) v(x)) AS sum_int,
  (SELECT sum_map_state(x, 9000000000000000000::bigint) FROM (VALUES ('a'), ('a')) v(x)) AS sum_bigint,
  (SELECT sum_map_state(x, 0.1::real) FROM (VALUES ('a')) v(x)) AS sum_real,
  (SELECT sum_map_state(x, 0.1::float8) FROM (VALUES ('a')) v(x)) AS sum_float8,
  (SELECT count_map_state(x) FROM (VALUES ('a'), ('b')) v(x)) AS count_map,
  (SELECT top_k_state(x, 1) FROM (VALUES ('a'), ('b')) v(x)) AS top_1,
  (SELECT top_k_state(x, 3) FROM (VALUES ('a'), ('c')) v(x)) AS top_3,
  (SELECT count_map_state(x COLLATE ts_ci) FROM (VALUES ('a'), ('A')) v(x)) AS ci,
  (SELECT count_map_state(x COLLATE "C") FROM (VALUES ('a'), ('A')) v(x)) AS c;
CREATE FUNCTION ts_rollup_outcome(final text, a text, b text) RETURNS text LANGUAGE plpgsql AS $$
DECLARE
  res text;
BEGIN
  EXECUTE format('SELECT (%s)::text FROM (SELECT rollup(s ORDER BY o) AS st
                  FROM ts_mix, LATERAL (VALUES (1, %s), (2, %s)) v(o, s)) x', format(final, 'st'), a, b)
    INTO res;
  RETURN coalesce(res, 'NULL');
EXCEPTION WHEN OTHERS THEN
  RETURN 'ERROR ' || SQLSTATE;
END $$;
SELECT label, ts_rollup_outcome(final, a, b) = ts_rollup_outcome(final, b, a) AS same_in_both_orders
FROM (VALUES ('sum_map int + bigint', 'sum_map_final(%s)', 'sum_int', 'sum_bigint'),
             ('sum_map real + float8', 'sum_map_final(%s)', 'sum_real', 'sum_float8'),
             ('top_k k = 1 + k = 3', 'top_k_final(%s, NULL::text)', 'top_1', 'top_3'),
             ('count_map + top_k', 'top_k_final(%s, NULL::text)', 'count_map', 'top_3'),
             ('nondeterministic + "C" collation', 'count_map_final(%s)', 'ci', 'c')) v(label, final, a, b);

-- Corrupt states: every byte of the header, and evenly spaced bytes of the
-- records, flipped (xor 0xff) in the text form; each must be an ERROR or
-- finalize, never crash the backend.  Internal errors (XX000) would mean an
-- unchecked field.
CREATE FUNCTION ts_flips(st spillagg_state, final text,
                         OUT flips int, OUT internal_errors int) LANGUAGE plpgsql AS $$
DECLARE
  t text := st::text;
  nbytes int := (length(st::text) - 2) / 2;
  p int;
  flipped text;
BEGIN
  flips := 0;
  internal_errors := 0;
  FOR p IN SELECT DISTINCT q FROM (SELECT generate_series(0, 21) AS q
                                   UNION ALL
                                   SELECT 22 + (i * (nbytes - 23)) / 179 FROM generate_series(0, 179) i) s
           ORDER BY q LOOP
    flipped := overlay(t placing lpad(to_hex(('x' || substr(t, 3 + 2 * p, 2))::bit(8)::int # 255), 2, '0')
                       from 3 + 2 * p for 2);
    flips := flips + 1;
    BEGIN
      EXECUTE format('SELECT (%s)::text', format(final, quote_literal(flipped) || '::spillagg_state'));
    EXCEPTION WHEN OTHERS THEN
      IF SQLSTATE = 'XX000' THEN internal_errors := internal_errors + 1; END IF;
    END;
  END LOOP;
END $$;
CREATE TABLE ts_flip_states AS
SELECT 'count_map_state(url)' AS state, 'count_map_final(%s)' AS final, count_map_state(url) AS s FROM events WHERE day = '2024-01-01'
UNION ALL SELECT 'sum_map_state(u, vn)', 'sum_map_final(%s)', sum_map_state(u, vn) FROM events WHERE day = '2024-01-01'
UNION ALL SELECT 'variance_map_state(url, vd)', 'variance_map_final(%s)', variance_map_state(url, vd) FROM events WHERE day = '2024-01-01'
UNION ALL SELECT 'min_map_state(url, v2)', 'min_map_final(%s)', min_map_state(url, v2) FROM events WHERE day = '2024-01-01'
UNION ALL SELECT 'top_k_state(u, 5)', 'top_k_final(%s, NULL::int)', top_k_state(u, 5) FROM events WHERE day = '2024-01-01'
UNION ALL SELECT 'rollup(count_map_state(url))', 'count_map_final((SELECT rollup(x) FROM (VALUES (%s), (NULL)) v(x)))',
                 count_map_state(url) FROM events WHERE day = '2024-01-02';
SELECT state, f.flips, 0 AS crashes, f.internal_errors
FROM ts_flip_states, LATERAL ts_flips(s, final) f;

-- rollup in a parallel plan at 64 kB (its combine function merges rollup
-- states from the workers).
SET parallel_setup_cost = 0;
SET parallel_tuple_cost = 0;
SET min_parallel_table_scan_size = 0;
SET max_parallel_workers_per_gather = 2;
EXPLAIN (COSTS OFF) SELECT count_distinct_final(rollup(users)) FROM daily;
SELECT count_distinct_final(rollup(users)) = (SELECT count(DISTINCT u) FROM events) AS users,
       top_k_final(rollup(top_users), NULL::int) = (SELECT top_k(u, 5) FROM events) AS top_users,
       sum_map_final(rollup(revenue))::text = (SELECT sum_map(country, vn)::text FROM events) AS revenue,
       stddev_map_final(rollup(stddev_v8))::text = (SELECT stddev_map(url, v8)::text FROM events) AS stddev_v8
FROM daily;

-- Keys of types whose in-memory form does not validate itself (arrays,
-- jsonb): a stored state carries them in the type's binary send format and
-- reads them back through its receive function, so crafted bytes are an
-- ERROR or a value, never a crash.
DO $$
DECLARE
  r text;
BEGIN
  BEGIN
    SELECT count_map_final(overlay(s::text placing 'ff' from 87 for 2)::spillagg_state)::text INTO r
    FROM (SELECT count_map_state(ARRAY[1,2]) s) v;
  EXCEPTION WHEN OTHERS THEN r := 'error';
  END;
  BEGIN
    SELECT count_map_final(overlay(s::text placing 'ff' from 77 for 2)::spillagg_state)::text INTO r
    FROM (SELECT count_map_state(jsonb_build_object('a', 1)) s) v;
  EXCEPTION WHEN OTHERS THEN r := 'error';
  END;
  BEGIN
    SELECT count_map_final(overlay(s::text placing 'ffffff7f' from 61 for 8)::spillagg_state)::text INTO r
    FROM (SELECT count_map_state(ARRAY[1,2]) s) v;
  EXCEPTION WHEN OTHERS THEN r := 'error';
  END;
  RAISE NOTICE 'backend survived crafted array and jsonb keys';
END $$;

-- Large flat states (over 256 kB) are merged by appending their records as
-- runs, past the table: states of 50k text keys made in hash order (spilled
-- before they are flattened) and of 30k keys made in slot order (an
-- in-memory table under 32k keys, so appending falls back to the table
-- after 4 runs), rolled up with overlapping keys, per key against GROUP BY,
-- in the default and a small budget. At the default budget the two sorted
-- states are two appended runs, and nothing spills.
CREATE TEMP TABLE big_src AS
SELECT p, 'key-' || j AS k
FROM (VALUES (0, 0, 49999), (1, 25000, 74999), (2, 0, 29999), (3, 15000, 44999)) r(p, lo, hi),
     generate_series(lo, hi) j, generate_series(1, 1 + j % 2) twice;
CREATE TEMP TABLE big_states AS SELECT p, count_map_state(k) AS s FROM big_src GROUP BY p;
SELECT p, octet_length(spillagg_state_send(s)) > 256 * 1024 AS over_256k FROM big_states ORDER BY p;
CREATE TEMP TABLE big_native AS
SELECT g, jsonb_object_agg(k, c) AS m
FROM (SELECT p < 2 AS g, k, count(*) AS c FROM big_src GROUP BY 1, 2) x GROUP BY g;
CREATE TEMP TABLE st1 AS SELECT * FROM spillagg_stats();
SELECT count_map_final(rollup(s)) = (SELECT m FROM big_native WHERE g) AS same_sorted
FROM big_states WHERE p < 2;
SELECT s.runs - st1.runs AS runs, s.spills - st1.spills AS spills FROM spillagg_stats() s, st1;
SELECT count_map_final(rollup(s)) = (SELECT m FROM big_native WHERE NOT g) AS same_unsorted
FROM big_states WHERE p >= 2;
SET spillagg.work_mem = 64;
SELECT g, count_map_final(rollup(s)) = (SELECT m FROM big_native n WHERE n.g = b.g) AS same
FROM (SELECT p < 2 AS g, s FROM big_states) b GROUP BY g ORDER BY g;
RESET spillagg.work_mem;
