-- Parallel aggregation: every spillagg aggregate has combine, serialize and
-- deserialize functions and is PARALLEL SAFE.  Partial states are built (and,
-- at spillagg.work_mem = 64, spilled) in the workers and in the leader,
-- serialized, and combined in the leader, which spills again.  Every answer
-- must equal the serial answer and PostgreSQL's native one, at 64 kB and at
-- 1GB, over the whole table (Finalize Aggregate) and per group (Finalize
-- HashAggregate and Finalize GroupAggregate).
SET client_min_messages = warning;
SET max_parallel_workers_per_gather = 0;

-- 200000 rows; g splits them into 4 groups of 50000.  Keys: text (2000
-- values, 3% NULL), int (Zipf-like skew, 2999 values), numeric (1200
-- values, one spelling each).  Values: int (2% NULL), bigint (1% near the
-- int8 limits), numeric, float8 (all positive, so that sums do not cancel;
-- 2% NULL).
SELECT setseed(0.2468);
CREATE TABLE pa AS
SELECT i, i % 4 AS g,
       CASE WHEN random() < 0.03 THEN NULL ELSE 'key' || floor(random() * 2000) END AS kt,
       floor(exp(random() * ln(3000)))::int4 AS ki,
       round((floor(random() * 1200) - 600)::numeric / 8, 3) AS kn,
       CASE WHEN random() < 0.02 THEN NULL ELSE floor(random() * 2000001 - 1000000)::int4 END AS vi,
       CASE WHEN random() < 0.01 THEN floor((random() * 2 - 1) * 9.2e18)::int8
            ELSE floor(random() * 1e12)::int8 END AS vb,
       round((random() * 2e6 - 1e6)::numeric, 4) AS vn,
       CASE WHEN random() < 0.02 THEN NULL ELSE random() * 1000 + 1 END AS vf
FROM generate_series(1, 200000) i;
ANALYZE pa;

-- The calls under test: every aggregate, each map aggregate with int,
-- bigint, numeric and float8 values.  cmp says how two answers are compared:
-- 'exact' (same jsonb text: same keys, same digits and scale), 'float'
-- (relative 1e-12 per key) or 'var' (relative 1e-6 per key).  grouped: also
-- run per g (a subset with every state kind, key type and value type).
CREATE TABLE pa_aggs (ord serial, expr text, cmp text, grouped bool);
INSERT INTO pa_aggs (expr, cmp, grouped) VALUES
  ('count_distinct(kt)', 'exact', true), ('count_distinct(ki)', 'exact', false),
  ('count_distinct(kn)', 'exact', false), ('count_map(kt)', 'exact', false),
  ('histogram(ki)', 'exact', true), ('count_map(kn)', 'exact', false),
  ('top_k(kt, 10)', 'exact', false), ('top_k(ki, 10)', 'exact', false),
  ('top_k(kn, 10)', 'exact', true);
INSERT INTO pa_aggs (expr, cmp, grouped)
SELECT format('%s_map(%s, %s)', f, kv.k, kv.v),
       CASE WHEN kv.v <> 'vf' OR f IN ('min', 'max') THEN 'exact'
            WHEN f IN ('sum', 'avg') THEN 'float' ELSE 'var' END,
       (f, kv.v) IN (('sum', 'vi'), ('avg', 'vb'), ('min', 'vn'), ('max', 'vf'), ('variance', 'vn'),
                     ('var_pop', 'vf'), ('stddev', 'vb'), ('stddev_pop', 'vi'), ('sum', 'vf'))
FROM (VALUES (1, 'kt', 'vi'), (2, 'ki', 'vb'), (3, 'kn', 'vn'), (4, 'kt', 'vf')) kv(n, k, v),
     unnest(ARRAY['sum', 'avg', 'min', 'max', 'variance', 'var_pop', 'stddev', 'stddev_pop'])
       WITH ORDINALITY f(f, o)
ORDER BY kv.n, o;
SELECT count(*) AS calls, count(*) FILTER (WHERE grouped) AS grouped_calls FROM pa_aggs;

-- Answers: (run, g, expr, answer as jsonb); g = -1 for the whole table.
CREATE TABLE pa_res (run text, g int, expr text, val jsonb);

-- Runs the calls of pa_aggs (whole table, or the grouped ones GROUP BY g),
-- two per query over the whole table, one per query GROUP BY g (a query has
-- one spillagg.work_mem budget for all its states), stores the answers, and
-- returns the top node of each query's plan.
CREATE FUNCTION pa_run(run text, per_g bool) RETURNS text LANGUAGE plpgsql AS $$
DECLARE
  exprs text[];
  q text;
  top text;
  tops text[] := '{}';
BEGIN
  FOR exprs IN
    SELECT array_agg(expr ORDER BY ord)
    FROM (SELECT expr, ord, row_number() OVER (ORDER BY ord) - 1 AS n
          FROM pa_aggs WHERE grouped OR NOT per_g) a
    GROUP BY n / CASE WHEN per_g THEN 1 ELSE 2 END ORDER BY min(ord)
  LOOP
    SELECT format('SELECT %s AS g, ARRAY[%s] AS vals FROM pa %s',
                  CASE WHEN per_g THEN 'g' ELSE '-1' END,
                  string_agg(format('to_jsonb(%s)', e), ', '),
                  CASE WHEN per_g THEN 'GROUP BY g' ELSE '' END)
    INTO q FROM unnest(exprs) e;
    EXECUTE 'EXPLAIN (COSTS OFF) ' || q INTO top;
    IF NOT top = ANY (tops) THEN tops := tops || top; END IF;
    EXECUTE format('INSERT INTO pa_res SELECT %L, s.g, x.expr, x.val
                    FROM (%s) s, unnest(%L::text[], s.vals) x(expr, val)', run, q, exprs);
  END LOOP;
  RETURN array_to_string(tops, ', ');
END $$;

-- PostgreSQL's answers, whole table (g = -1) and per g: count(DISTINCT),
-- jsonb_object_agg over GROUP BY key of count(*) and the built-in
-- aggregates, ORDER BY count(*) DESC, key LIMIT 10.
CREATE FUNCTION pa_native() RETURNS void LANGUAGE plpgsql AS $$
DECLARE
  gx text;
  k text;
  kv record;
  fs text[] := ARRAY['sum', 'avg', 'min', 'max', 'variance', 'var_pop', 'stddev', 'stddev_pop'];
BEGIN
  FOREACH gx IN ARRAY ARRAY['-1', 'g'] LOOP
    FOREACH k IN ARRAY ARRAY['kt', 'ki', 'kn'] LOOP
      -- (per g, only the calls run per g: count_distinct(kt), histogram(ki), top_k(kn, 10))
      IF gx = '-1' OR k = 'kt' THEN
        EXECUTE format('INSERT INTO pa_res SELECT ''native'', %2$s, ''count_distinct(%1$s)'',
                               to_jsonb(count(DISTINCT %1$s))
                        FROM pa GROUP BY 2', k, gx);
      END IF;
      IF gx = '-1' OR k = 'ki' THEN
        EXECUTE format('INSERT INTO pa_res SELECT ''native'', g, %3$L, jsonb_object_agg(k, c)
                        FROM (SELECT %2$s AS g, %1$s AS k, count(*) c FROM pa
                              WHERE %1$s IS NOT NULL GROUP BY 1, 2) s
                        GROUP BY g', k, gx,
                       CASE k WHEN 'ki' THEN 'histogram(ki)' ELSE format('count_map(%s)', k) END);
      END IF;
      IF gx = '-1' OR k = 'kn' THEN
        EXECUTE format('INSERT INTO pa_res SELECT ''native'', g, ''top_k(%1$s, 10)'',
                               to_jsonb(array_agg(k ORDER BY c DESC, k))
                        FROM (SELECT g, k, c, row_number() OVER (PARTITION BY g ORDER BY c DESC, k) AS rn
                              FROM (SELECT %2$s AS g, %1$s AS k, count(*) c FROM pa
                                    WHERE %1$s IS NOT NULL GROUP BY 1, 2) s) r
                        WHERE rn <= 10 GROUP BY g', k, gx);
      END IF;
    END LOOP;
    FOR kv IN SELECT * FROM (VALUES ('kt', 'vi'), ('ki', 'vb'), ('kn', 'vn'), ('kt', 'vf')) v(k, v) LOOP
      EXECUTE format('INSERT INTO pa_res SELECT ''native'', s.g, x.expr, x.val
                      FROM (SELECT g, ARRAY[%1$s] AS vals
                            FROM (SELECT %2$s AS g, %3$s AS k, %4$s FROM pa
                                  WHERE %3$s IS NOT NULL GROUP BY 1, 2) t
                            GROUP BY g) s,
                           unnest(%5$L::text[], s.vals) x(expr, val)',
                     (SELECT string_agg(format('jsonb_object_agg(k, r%s)', o), ', ' ORDER BY o)
                      FROM unnest(fs) WITH ORDINALITY f(f, o)),
                     gx, kv.k,
                     (SELECT string_agg(format('%s(%s) AS r%s', f, kv.v, o), ', ' ORDER BY o)
                      FROM unnest(fs) WITH ORDINALITY f(f, o)),
                     (SELECT array_agg(format('%s_map(%s, %s)', f, kv.k, kv.v) ORDER BY o)
                      FROM unnest(fs) WITH ORDINALITY f(f, o)));
    END LOOP;
  END LOOP;
END $$;
SELECT pa_native();

-- Two answers agree: the same jsonb text, or (floats) the same keys with
-- values equal or within the relative tolerance.
CREATE FUNCTION pa_same(a jsonb, b jsonb, cmp text) RETURNS bool LANGUAGE sql AS $$
  SELECT CASE
    WHEN a IS NULL OR b IS NULL THEN a IS NULL AND b IS NULL
    WHEN cmp = 'exact' THEN a::text = b::text
    ELSE NOT EXISTS (
      SELECT FROM jsonb_each(a) x FULL JOIN jsonb_each(b) y USING (key)
      WHERE x.value IS NULL OR y.value IS NULL
         OR NOT (x.value = y.value
                 OR (jsonb_typeof(x.value) = 'number' AND jsonb_typeof(y.value) = 'number'
                     AND abs(x.value::float8 - y.value::float8)
                         <= CASE cmp WHEN 'float' THEN 1e-12 ELSE 1e-6 END
                            * greatest(abs(x.value::float8), abs(y.value::float8)))))
  END $$;

-- Compares the answers of run a with those of run b, for every call (and g)
-- run a should have.
CREATE FUNCTION pa_compare(a text, b text)
RETURNS TABLE (scope text, g int, expr text, ok bool) LANGUAGE sql AS $$
  WITH want AS (
    SELECT -1 AS g, expr, cmp FROM pa_aggs
    UNION ALL
    SELECT g, expr, cmp FROM pa_aggs, generate_series(0, 3) g WHERE grouped)
  SELECT CASE WHEN w.g = -1 THEN 'whole table' ELSE 'GROUP BY g' END, w.g, w.expr,
         x.run IS NOT NULL AND y.run IS NOT NULL AND pa_same(x.val, y.val, w.cmp)
  FROM want w
  LEFT JOIN pa_res x ON x.run = a AND x.g = w.g AND x.expr = w.expr
  LEFT JOIN pa_res y ON y.run = b AND y.g = w.g AND y.expr = w.expr $$;

-- Serial answers (no parallel plan), at 64 kB and 1GB.
SET spillagg.work_mem = 64;
SELECT pa_run('serial 64kB', false) AS whole, pa_run('serial 64kB', true) AS per_g;
SET spillagg.work_mem = '1GB';
SELECT pa_run('serial 1GB', false) AS whole, pa_run('serial 1GB', true) AS per_g;

-- Forced parallel plans: two workers and the leader.
SET parallel_setup_cost = 0;
SET parallel_tuple_cost = 0;
SET min_parallel_table_scan_size = 0;
SET max_parallel_workers_per_gather = 2;
SET parallel_leader_participation = on;
EXPLAIN (COSTS OFF) SELECT count_distinct(kt), sum_map(kn, vn), top_k(ki, 10) FROM pa;

-- The workers really run: EXPLAIN ANALYZE's worker lines.
CREATE FUNCTION pa_workers(q text) RETURNS SETOF text LANGUAGE plpgsql AS $$
DECLARE
  line text;
BEGIN
  FOR line IN EXECUTE 'EXPLAIN (ANALYZE, COSTS OFF, TIMING OFF, SUMMARY OFF) ' || q LOOP
    IF line ~ 'Workers (Planned|Launched)' THEN RETURN NEXT btrim(line); END IF;
  END LOOP;
END $$;
SET spillagg.work_mem = 64;
SELECT pa_workers('SELECT count_distinct(kt), histogram(ki) FROM pa');

-- Whole table, and per g hashed (Finalize HashAggregate <- Gather <- Partial
-- HashAggregate), at 64 kB: every partial state spills.  spillagg_stats()
-- counts the leader only: it spilled (its partial states and the combine).
CREATE TEMP TABLE pa_st0 AS SELECT * FROM spillagg_stats();
SET enable_sort = off;
EXPLAIN (COSTS OFF) SELECT g, count_distinct(kt), sum_map(kn, vn), top_k(ki, 10) FROM pa GROUP BY g;
SELECT pa_run('parallel 64kB', false) AS whole, pa_run('parallel 64kB', true) AS per_g;
RESET enable_sort;
SELECT s.spills - st.spills > 0 AS leader_spilled FROM spillagg_stats() s, pa_st0 st;

-- At 1GB nothing spills; per g sorted (Finalize GroupAggregate <- Gather
-- Merge <- Partial GroupAggregate <- Sort).
CREATE TEMP TABLE pa_st1 AS SELECT * FROM spillagg_stats();
SET spillagg.work_mem = '1GB';
SET enable_hashagg = off;
EXPLAIN (COSTS OFF) SELECT g, count_distinct(kt), sum_map(kn, vn), top_k(ki, 10) FROM pa GROUP BY g;
SELECT pa_run('parallel 1GB', false) AS whole, pa_run('parallel 1GB', true) AS per_g;
RESET enable_hashagg;
SELECT s.spills - st.spills AS leader_spills FROM spillagg_stats() s, pa_st1 st;

-- A few answers in the open (parallel, 64 kB).
SET spillagg.work_mem = 64;
SELECT count_distinct(kt) AS cd_kt, count_distinct(ki) AS cd_ki, count_distinct(kn) AS cd_kn,
       top_k(ki, 6) AS top6_ki, top_k(kn, 3) AS top3_kn
FROM pa;
SELECT count(DISTINCT kt) AS cd_kt, count(DISTINCT ki) AS cd_ki, count(DISTINCT kn) AS cd_kn,
       (SELECT array_agg(ki) FROM (SELECT ki FROM pa GROUP BY ki ORDER BY count(*) DESC, ki LIMIT 6) s) AS top6_ki,
       (SELECT array_agg(kn) FROM (SELECT kn FROM pa GROUP BY kn ORDER BY count(*) DESC, kn LIMIT 3) s) AS top3_kn
FROM pa;
SELECT sum_map(ki, vb) -> '1' AS sum_ki1, min_map(kn, vn) -> '0.000' AS min_kn0,
       max_map(kt, vf) -> 'key0' AS max_key0, avg_map(ki, vb) -> '2' AS avg_ki2
FROM pa;
SELECT (SELECT sum(vb) FROM pa WHERE ki = 1) AS sum_ki1, (SELECT min(vn) FROM pa WHERE kn = 0) AS min_kn0,
       (SELECT max(vf) FROM pa WHERE kt = 'key0') AS max_key0, (SELECT avg(vb) FROM pa WHERE ki = 2) AS avg_ki2;
RESET spillagg.work_mem;
SET max_parallel_workers_per_gather = 0;

-- Parallel vs serial and vs native: every call agrees (answers = equal).
CREATE TEMP TABLE pa_cmp AS
SELECT v.n, v.a, v.b, c.*
FROM (VALUES (1, 'parallel 64kB', 'serial 64kB'), (2, 'parallel 64kB', 'native'),
             (3, 'parallel 1GB', 'serial 1GB'), (4, 'parallel 1GB', 'native'),
             (5, 'serial 64kB', 'native'), (6, 'serial 1GB', 'native')) v(n, a, b),
     LATERAL pa_compare(v.a, v.b) c;
SELECT scope, a, b, count(*) AS answers, count(*) FILTER (WHERE ok) AS equal
FROM pa_cmp GROUP BY scope, n, a, b ORDER BY scope DESC, n;
-- The disagreements, if any (none expected).
SELECT a, b, g, expr FROM pa_cmp WHERE NOT ok ORDER BY n, g, expr;
-- No map is trivially small: each has its thousands of keys.
SELECT expr, (SELECT count(*) FROM jsonb_object_keys(val)) AS keys
FROM pa_res WHERE run = 'native' AND g = -1 AND jsonb_typeof(val) = 'object'
  AND expr IN ('count_map(kt)', 'histogram(ki)', 'count_map(kn)', 'sum_map(kt, vf)')
ORDER BY expr;

-- The workers' and the leader's temp files are all gone.
SELECT count(*) AS leftover_temp_files FROM pg_ls_tmpdir();

-- Keys without a concrete overload (float8, bytea) take the anyelement
-- aggregates, whose transition type is internal with serial functions
-- (spillagg_serialize / spillagg_deserialize): a parallel plan, spilled,
-- per key against GROUP BY.
SET parallel_setup_cost = 0;
SET parallel_tuple_cost = 0;
SET min_parallel_table_scan_size = 0;
SET max_parallel_workers_per_gather = 2;
SET spillagg.work_mem = 64;
EXPLAIN (COSTS OFF)
SELECT count_distinct(ki::float8), count_map(convert_to(kt, 'UTF8')), sum_map(ki::float8, vi) FROM pa;
SELECT count_distinct(ki::float8) AS cd, count_map(convert_to(kt, 'UTF8')) AS cm, sum_map(ki::float8, vi) AS sm
FROM pa \gset
SELECT :cd = (SELECT count(DISTINCT ki::float8) FROM pa) AS cd_same,
       :'cm'::jsonb = (SELECT jsonb_object_agg(b, c) FROM (SELECT convert_to(kt, 'UTF8') AS b, count(*) AS c
                                                          FROM pa WHERE kt IS NOT NULL GROUP BY 1) x) AS cm_same,
       :'sm'::jsonb = (SELECT jsonb_object_agg(f, s) FROM (SELECT ki::float8 AS f, sum(vi) AS s
                                                          FROM pa GROUP BY 1) x) AS sm_same;
RESET spillagg.work_mem;
RESET max_parallel_workers_per_gather;
RESET min_parallel_table_scan_size;
RESET parallel_tuple_cost;
RESET parallel_setup_cost;
