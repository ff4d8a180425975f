-- Where the built-in aggregates answer, spillagg answers the same; where they
-- raise, spillagg raises with the same SQLSTATE. Each pair runs the built-in
-- and the spillagg aggregate over the same rows through parity(), which
-- prints both outcomes side by side (the value, or ERROR and its SQLSTATE),
-- in memory and with forced spills, serially and in parallel plans.
SET client_min_messages = warning;
CREATE EXTENSION IF NOT EXISTS spillagg;

-- The outcome of one query: its single value as text, or its SQLSTATE.
CREATE FUNCTION outcome(q text) RETURNS text LANGUAGE plpgsql AS $$
DECLARE r text;
BEGIN
  EXECUTE q INTO r;
  RETURN coalesce(r, 'NULL');
EXCEPTION WHEN OTHERS THEN
  RETURN 'ERROR ' || SQLSTATE;
END $$;

-- builtin: a built-in aggregate call over column v; mine: the spillagg map
-- call over (1, v), whose key "1" is compared with the built-in's answer.
CREATE FUNCTION parity(builtin text, mine text, rows text)
RETURNS TABLE (budget text, builtin_result text, spillagg_result text, same boolean)
LANGUAGE plpgsql AS $$
BEGIN
  FOREACH budget IN ARRAY ARRAY['64', '1GB'] LOOP
    PERFORM set_config('spillagg.work_mem', budget, true);
    builtin_result := outcome(format('SELECT (%s)::text FROM (%s) t(v)', builtin, rows));
    spillagg_result := outcome(format('SELECT (%s) ->> ''1'' FROM (%s) t(v)', mine, rows));
    same := builtin_result = spillagg_result
            OR (builtin_result !~ '^ERROR' AND spillagg_result !~ '^ERROR'
                AND builtin_result::float8 = spillagg_result::float8);
    RETURN NEXT;
  END LOOP;
END $$;

-- Floats: overflow of finite values raises 22003 where float4pl, float8pl
-- and float8_accum raise; an Infinity among the inputs does not.
SELECT * FROM parity('sum(v)', 'sum_map(1, v)', $$VALUES (3.4e38::real), (3.4e38), ('Infinity')$$);
SELECT * FROM parity('sum(v)', 'sum_map(1, v)', $$VALUES (3.4e38::real), (-3.4e38), (1)$$);
SELECT * FROM parity('sum(v)', 'sum_map(1, v)', $$VALUES (1e308::float8), (1e308)$$);
SELECT * FROM parity('sum(v)', 'sum_map(1, v)', $$VALUES (1e308::float8), ('Infinity')$$);
SELECT * FROM parity('avg(v)', 'avg_map(1, v)', $$VALUES (1e160::float8), (0)$$);
SELECT * FROM parity('avg(v)', 'avg_map(1, v)', $$VALUES (1e160::real::float8), ('Infinity')$$);
SELECT * FROM parity('avg(v)', 'avg_map(1, v)', $$VALUES (3e38::real), (3e38)$$);
SELECT * FROM parity('avg(v)', 'avg_map(1, v)', $$VALUES (1.5::float8), (2), (4)$$);
SELECT * FROM parity('variance(v)', 'variance_map(1, v)', $$VALUES (1e308::float8), (1e308)$$);
SELECT * FROM parity('var_pop(v)', 'var_pop_map(1, v)', $$VALUES (1e200::float8), (-1e200)$$);
SELECT * FROM parity('stddev(v)', 'stddev_map(1, v)', $$VALUES ('NaN'::float8), (1)$$);
-- min and max do no arithmetic.
SELECT * FROM parity('min(v)', 'min_map(1, v)', $$VALUES (1e300::float8), (-1e300), ('-Infinity')$$);
SELECT * FROM parity('max(v)', 'max_map(1, v)', $$VALUES (32767::int2), (-32768)$$);
SELECT * FROM parity('max(v)', 'max_map(1, v)', $$VALUES (1e153::numeric), (2)$$);
-- Numeric states start at about 154 significant digits and widen as needed,
-- up to numeric's whole range (README): beyond 154 digits they answer as
-- PostgreSQL does (these raised 22003 before).
SELECT * FROM parity('max(v)', 'max_map(1, v)', $$VALUES (1e154::numeric)$$);
SELECT * FROM parity('min(v)', 'min_map(1, v)', $$VALUES (1e100::numeric), (1e-100)$$);
SELECT * FROM parity('max(v)', 'max_map(1, v)', $$VALUES (-1e100::numeric), (1e-100), (-1e-100)$$);
SELECT * FROM parity('variance(v)', 'variance_map(1, v)', $$VALUES (1e100::numeric), (3e100)$$);
SELECT * FROM parity('sum(v)', 'sum_map(1, v)', $$VALUES (1e300::numeric), (1)$$);
SELECT * FROM parity('avg(v)', 'avg_map(1, v)', $$VALUES (1e300::numeric), (1), (1e-300)$$);

-- 100 to 1000 digits (shown by length and a prefix; same compares them whole).
CREATE FUNCTION parity_long(builtin text, mine text, rows text)
RETURNS TABLE (budget text, builtin_prefix text, builtin_length int, spillagg_length int, same boolean)
LANGUAGE sql AS $$
  SELECT budget, left(builtin_result, 24), length(builtin_result), length(spillagg_result), same
  FROM parity(builtin, mine, rows)
$$;
CREATE TABLE long_values AS
  SELECT i, (repeat('123456789', 11 + i) || '.' || repeat('7', i))::numeric * (i - 7) AS v100,
         (repeat('98765', 20 + 7 * i) || '.' || repeat('31', 5 * i))::numeric * (1 - 2 * (i % 2)) AS v1000
  FROM generate_series(1, 25) i;
SELECT * FROM parity_long('sum(v)', 'sum_map(1, v)', 'SELECT v100 FROM long_values');
SELECT * FROM parity_long('avg(v)', 'avg_map(1, v)', 'SELECT v100 FROM long_values');
SELECT * FROM parity_long('var_samp(v)', 'variance_map(1, v)', 'SELECT v100 FROM long_values');
SELECT * FROM parity_long('var_pop(v)', 'var_pop_map(1, v)', 'SELECT v100 FROM long_values');
SELECT * FROM parity_long('stddev_samp(v)', 'stddev_map(1, v)', 'SELECT v100 FROM long_values');
SELECT * FROM parity_long('stddev_pop(v)', 'stddev_pop_map(1, v)', 'SELECT v100 FROM long_values');
SELECT * FROM parity_long('sum(v)', 'sum_map(1, v)', 'SELECT v1000 FROM long_values');
SELECT * FROM parity_long('avg(v)', 'avg_map(1, v)', 'SELECT v1000 FROM long_values');
SELECT * FROM parity_long('min(v)', 'min_map(1, v)', 'SELECT v1000 FROM long_values');
SELECT * FROM parity_long('max(v)', 'max_map(1, v)', 'SELECT v1000 FROM long_values');
SELECT * FROM parity_long('var_samp(v)', 'variance_map(1, v)', 'SELECT v1000 FROM long_values');
SELECT * FROM parity_long('var_pop(v)', 'var_pop_map(1, v)', 'SELECT v1000 FROM long_values');
SELECT * FROM parity_long('stddev_samp(v)', 'stddev_map(1, v)', 'SELECT v1000 FROM long_values');
SELECT * FROM parity_long('stddev_pop(v)', 'stddev_pop_map(1, v)', 'SELECT v1000 FROM long_values');
-- Near the limits of numeric's range: 131072 digits before the point, 16383
-- after. A sum beyond the range raises 22003, as sum() does.
SELECT * FROM parity_long('sum(v)', 'sum_map(1, v)',
  $$SELECT ('4' || repeat('0', 131071))::numeric + i FROM generate_series(1, 2) i$$);
SELECT * FROM parity_long('sum(v)', 'sum_map(1, v)',
  $$SELECT ('6' || repeat('0', 131071))::numeric FROM generate_series(1, 2) i$$);
SELECT * FROM parity_long('avg(v)', 'avg_map(1, v)',
  $$VALUES (('9' || repeat('0', 131071))::numeric), (('0.' || repeat('0', 16382) || '1')::numeric)$$);
SELECT * FROM parity_long('min(v)', 'min_map(1, v)',
  $$VALUES (('9' || repeat('0', 131071))::numeric), (('-0.' || repeat('0', 16382) || '1')::numeric)$$);
SELECT * FROM parity_long('max(v)', 'max_map(1, v)',
  $$VALUES (('-9' || repeat('0', 131071))::numeric), (('0.' || repeat('0', 16382) || '1')::numeric)$$);
SELECT * FROM parity_long('var_samp(v)', 'variance_map(1, v)',
  $$VALUES (('1' || repeat('0', 65000))::numeric), (('3' || repeat('0', 65000))::numeric)$$);
SELECT * FROM parity_long('stddev_pop(v)', 'stddev_pop_map(1, v)',
  $$VALUES (('1' || repeat('0', 65000))::numeric), (('3' || repeat('0', 65000))::numeric)$$);
SELECT * FROM parity_long('var_pop(v)', 'var_pop_map(1, v)',
  $$VALUES (('0.' || repeat('0', 16382) || '1')::numeric), (('0.' || repeat('0', 16382) || '3')::numeric)$$);
SELECT * FROM parity_long('stddev_samp(v)', 'stddev_map(1, v)',
  $$VALUES (('0.' || repeat('0', 9000) || '1')::numeric), (2.5)$$);

-- The same float rules across spilled runs and parallel partial states: the
-- overflowing values sit under many keys' rows.
CREATE TABLE par_f AS
  SELECT i % 50 AS k, CASE WHEN i IN (7, 5007) THEN 3e38::real ELSE (i % 13)::real END AS r,
         CASE WHEN i IN (11, 5011) THEN 1e308::float8 ELSE (i % 17)::float8 END AS d
  FROM generate_series(1, 20000) i;
ALTER TABLE par_f SET (parallel_workers = 2);
ANALYZE par_f;
SET parallel_setup_cost = 0; SET parallel_tuple_cost = 0;
SET min_parallel_table_scan_size = 0; SET max_parallel_workers_per_gather = 2;
SET spillagg.work_mem = 64;
SELECT outcome('SELECT sum(r)::text FROM par_f') AS builtin_real,
       outcome('SELECT sum_map(k, r)::text FROM par_f') AS spillagg_real,
       outcome('SELECT sum(d)::text FROM par_f') AS builtin_double,
       outcome('SELECT avg_map(k, d)::text FROM par_f') AS spillagg_double_avg,
       outcome('SELECT var_pop_map(k, d)::text FROM par_f') AS spillagg_double_var;
-- Per key, where no key overflows: every key equal to the built-in.
SELECT count(*) AS keys, count(*) FILTER (WHERE abs(s.v::float8 - b.v) > 1e-12 * abs(b.v)) AS mismatched
FROM (SELECT key::int AS k, value AS v FROM jsonb_each((SELECT avg_map(k, d) FROM par_f WHERE d < 1e300))) s
JOIN (SELECT k, avg(d) AS v FROM par_f WHERE d < 1e300 GROUP BY k) b USING (k);
RESET max_parallel_workers_per_gather;

-- top_k: one k per group, in every plan; a k that changes within a group is
-- an error (which k would apply would otherwise depend on the plan).
SELECT top_k(x, k) FROM (VALUES (1, 2), (1, 2), (2, 2)) t(x, k);
SELECT top_k(x, k) FROM (VALUES (1, 2), (1, 3)) t(x, k);
SELECT g, top_k(x, g) FROM (VALUES (1, 1), (1, 2), (2, 2), (3, 2)) t(g, x) GROUP BY g ORDER BY g;
SET max_parallel_workers_per_gather = 2;
SELECT outcome('SELECT top_k(k, CASE WHEN r > 12 THEN 3 ELSE 2 END)::text FROM par_f') AS varying_k_parallel;
SELECT top_k(k, 3) = ARRAY(SELECT k FROM par_f GROUP BY k ORDER BY count(*) DESC, k LIMIT 3) AS top3_parallel
FROM par_f;
RESET max_parallel_workers_per_gather;

-- Numeric per key in 64 kB, spilled, serially and in parallel: most keys
-- hold small values, some 300- to 1000-digit ones (their states widen
-- while other keys are in memory or in runs); every key equal to the
-- built-in over GROUP BY.
CREATE TABLE par_n AS
  SELECT i % 700 AS k,
         CASE WHEN i % 700 IN (3, 77, 500) AND i % 3 = 0
              THEN (repeat('8', 300 + i % 700) || '.' || (i % 89))::numeric * (1 - 2 * (i % 2))
              ELSE (i % 1000 - 400) / 8.0 END AS v
  FROM generate_series(1, 20000) i;
ALTER TABLE par_n SET (parallel_workers = 2);
ANALYZE par_n;
CREATE FUNCTION per_key(builtin text, mine text)
RETURNS TABLE (keys bigint, mismatched bigint) LANGUAGE plpgsql AS $$
BEGIN
  RETURN QUERY EXECUTE format($q$
    SELECT count(*), count(*) FILTER (WHERE s.v IS DISTINCT FROM b.v)
    FROM (SELECT key::int AS k, value #>> '{}' AS v FROM jsonb_each((SELECT %s FROM par_n))) s
    FULL JOIN (SELECT k, (%s)::text AS v FROM par_n GROUP BY k) b USING (k)$q$, mine, builtin);
END $$;
SELECT f.*, p.* FROM (VALUES ('sum(v)', 'sum_map(k, v)'), ('avg(v)', 'avg_map(k, v)'),
                             ('min(v)', 'min_map(k, v)'), ('max(v)', 'max_map(k, v)'),
                             ('var_samp(v)', 'variance_map(k, v)'), ('var_pop(v)', 'var_pop_map(k, v)'),
                             ('stddev_samp(v)', 'stddev_map(k, v)'), ('stddev_pop(v)', 'stddev_pop_map(k, v)')) f(builtin, mine),
     LATERAL per_key(f.builtin, f.mine) p;
SET max_parallel_workers_per_gather = 2;
SELECT f.*, p.* FROM (VALUES ('sum(v)', 'sum_map(k, v)'), ('max(v)', 'max_map(k, v)'),
                             ('var_samp(v)', 'variance_map(k, v)')) f(builtin, mine),
     LATERAL per_key(f.builtin, f.mine) p;
-- Stored states of any width: rollup and the *_final of stored states.
SELECT count(*) AS keys, count(*) FILTER (WHERE s.v IS DISTINCT FROM b.v) AS mismatched
FROM (SELECT key::int AS k, value #>> '{}' AS v
      FROM jsonb_each((SELECT variance_map_final(rollup(st)) FROM (
        SELECT variance_map_state(k, v) FROM par_n GROUP BY k % 3) z(st)))) s
FULL JOIN (SELECT k, var_samp(v)::text AS v FROM par_n GROUP BY k) b USING (k);
RESET max_parallel_workers_per_gather;
RESET spillagg.work_mem;

-- histogram has a state form like every other aggregate.
SELECT histogram_final(histogram_state(x)) = histogram(x) AS same FROM (VALUES ('a'), ('b'), ('a')) v(x);
SELECT histogram_final(rollup(s)) FROM (
  SELECT histogram_state(x) FROM (VALUES ('a'), ('b')) v(x)
  UNION ALL SELECT histogram_state(y) FROM (VALUES ('a')) w(y)) z(s);
