-- The map family (sum_map, avg_map, min_map, max_map, variance_map /
-- var_samp_map, var_pop_map, stddev_map / stddev_samp_map, stddev_pop_map)
-- over smallint, integer, bigint, real, double precision and numeric values,
-- and top_k: differential tests against PostgreSQL's own aggregates, with
-- forced spills (spillagg.work_mem = 64) and without (1GB).
SET client_min_messages = warning;
CREATE EXTENSION IF NOT EXISTS spillagg;
SET max_parallel_workers_per_gather = 0;  -- spillagg_stats() counts this backend only

-- Small, hand-checkable cases.
SELECT sum_map(k, v), avg_map(k, v), min_map(k, v), max_map(k, v)
FROM (VALUES ('a', 1), ('a', 2), ('b', NULL), (NULL, 5), ('c', -3), ('c', 4)) t(k, v);
SELECT variance_map(k, v), var_pop_map(k, v), stddev_map(k, v), stddev_pop_map(k, v)
FROM (VALUES ('a', 1), ('a', 2), ('a', 4), ('b', 7), ('c', NULL)) t(k, v);
SELECT sum_map(k, v), avg_map(k, v), stddev_pop_map(k, v)
FROM (VALUES (1, 2.0::float8), (1, 4), (2, 0.5), (3, NULL)) t(k, v);
SELECT sum_map(k, v), min_map(k, v), var_samp_map(k, v)
FROM (VALUES (10, 1.50), (10, 2), (20, -0.001)) t(k, v);
-- Result value types: sum(int2/int4) is bigint, sum(int8) and avg/variance
-- of integers numeric, sum(real) real; all as to_jsonb renders them.
SELECT sum_map(1, 32767::int2) AS sum_int2, sum_map(1, 2147483647::int4) AS sum_int4,
       sum_map(1, 5::int8) AS sum_int8, avg_map(1, 5::int8) AS avg_int8,
       sum_map(1, 0.1::real) AS sum_real, avg_map(1, 0.1::real) AS avg_real,
       min_map(1, 0.1::real) AS min_real, max_map(1, 0.1::float8) AS max_float8;
-- No rows, only NULL keys: NULL. Only NULL values: JSON null per key.
SELECT sum_map(k, v) IS NULL AS sum, avg_map(k, v) IS NULL AS avg, min_map(k, v) IS NULL AS min,
       max_map(k, v) IS NULL AS max, variance_map(k, v) IS NULL AS variance,
       var_pop_map(k, v) IS NULL AS var_pop, stddev_map(k, v) IS NULL AS stddev,
       stddev_pop_map(k, v) IS NULL AS stddev_pop, top_k(k, 3) IS NULL AS top_k
FROM (SELECT 1 AS k, 1.5 AS v) t WHERE false;
SELECT sum_map(k, v) IS NULL AS sum_null_keys, top_k(k, 1) IS NULL AS top_k_null_keys
FROM (VALUES (NULL::text, 1), (NULL, 2)) t(k, v);
SELECT sum_map(k, v), avg_map(k, v), min_map(k, v), stddev_pop_map(k, v)
FROM (VALUES ('a', NULL::int8), ('a', NULL), ('b', NULL), ('b', 4)) t(k, v);
-- Values of other types do not match any aggregate.
SELECT sum_map(k, 'x'::text) FROM (VALUES (1)) t(k);
SELECT avg_map(k, true) FROM (VALUES (1)) t(k);

-- Comparison helpers.  Maps of integer and numeric results must equal
-- PostgreSQL's as text (jsonb = would take 1.0 for 1.00).  Float maps: same
-- keys, and per key both JSON null, equal strings ("NaN", "Infinity",
-- "-Infinity"), or numbers within tol (relative); min and max exactly.
CREATE FUNCTION fam_close(a jsonb, b jsonb, tol float8) RETURNS boolean LANGUAGE sql AS $$
  SELECT (a IS NULL) = (b IS NULL)
     AND coalesce(bool_and(CASE
           WHEN x.key IS NULL OR y.key IS NULL THEN false
           WHEN jsonb_typeof(x.value) <> 'number' OR jsonb_typeof(y.value) <> 'number'
             THEN x.value = y.value
           ELSE abs(x.value::numeric - y.value::numeric)
                  <= tol::numeric * greatest(abs(x.value::numeric), abs(y.value::numeric)) END), true)
  FROM jsonb_each(a) x FULL JOIN jsonb_each(b) y USING (key) $$;
CREATE FUNCTION fam_same(a jsonb, b jsonb, vtype regtype, fn text, tol float8) RETURNS boolean
LANGUAGE sql AS $$
  SELECT CASE WHEN vtype IN ('real', 'double precision') AND fn NOT IN ('min_map', 'max_map')
              THEN fam_close(a, b, tol) ELSE a::text IS NOT DISTINCT FROM b::text END $$;
CREATE TABLE fam_fns (ord int, fn text, builtin text);
INSERT INTO fam_fns VALUES (1, 'sum_map', 'sum'), (2, 'avg_map', 'avg'), (3, 'min_map', 'min'),
  (4, 'max_map', 'max'), (5, 'variance_map', 'var_samp'), (6, 'var_pop_map', 'var_pop'),
  (7, 'stddev_map', 'stddev_samp'), (8, 'stddev_pop_map', 'stddev_pop');
-- The comparisons are not vacuous.
SELECT fam_close('{"a": 1, "b": "NaN", "c": null}', '{"a": 1.0000000000001, "b": "NaN", "c": null}', 1e-12) AS close,
       fam_close('{"a": 1}', '{"a": 1.000000001}', 1e-12) AS far,
       fam_close('{"a": 1}', '{"a": 1, "b": 2}', 1e-12) AS extra_key,
       fam_close('{"a": null}', '{"a": 0}', 1e-12) AS null_vs_0,
       fam_close('{"a": "NaN"}', '{"a": "Infinity"}', 1e-12) AS nan_vs_inf,
       fam_same('{"a": 1.0}', '{"a": 1.00}', 'numeric', 'sum_map', 1e-12) AS scales;

-- Each function over a (k, v) table, beside PostgreSQL's
-- (SELECT jsonb_object_agg(k, r) FROM (SELECT k, builtin(v) r ... GROUP BY k) s).
CREATE FUNCTION fam_diff(src text, tol float8 DEFAULT 1e-12)
RETURNS TABLE (fn text, spillagg jsonb, ok boolean) LANGUAGE plpgsql AS $$
DECLARE f record; vtype regtype; n jsonb;
BEGIN
  EXECUTE format('SELECT pg_typeof(v) FROM %s LIMIT 1', src) INTO vtype;
  FOR f IN SELECT * FROM fam_fns ORDER BY ord LOOP
    EXECUTE format('SELECT %s(k, v) FROM %s', f.fn, src) INTO spillagg;
    EXECUTE format('SELECT jsonb_object_agg(k, r) FROM (SELECT k, %s(v) r FROM %s WHERE k IS NOT NULL GROUP BY k) s',
                   f.builtin, src) INTO n;
    fn := f.fn;
    ok := fam_same(spillagg, n, vtype, f.fn, tol);
    RETURN NEXT;
  END LOOP;
END $$;

-- Pairs 'column function' over the value columns of src (v2 smallint, v4
-- integer, v8 bigint, vr real, vf double precision, vn numeric), keyed by
-- key, per group grp ('0': the whole table).  fam_native stores PostgreSQL's
-- maps (one query per column); fam_check computes spillagg's (one query per
-- pair: each has the whole budget) and counts, per pair, the groups whose
-- maps differ; fam_report sums that up.
CREATE FUNCTION fam_pairs(cols text[], fns text[] DEFAULT NULL) RETURNS text[] LANGUAGE sql AS $$
  SELECT array_agg(c || ' ' || f.fn ORDER BY c, f.ord) FROM unnest(cols) c, fam_fns f
  WHERE fns IS NULL OR f.fn = ANY (fns) $$;
CREATE PROCEDURE fam_native(src text, key text, grp text, pairs text[]) LANGUAGE plpgsql AS $$
DECLARE c record; inner_list text; outer_list text;
BEGIN
  DROP TABLE IF EXISTS fam_nat;
  CREATE TEMP TABLE fam_nat (col text, fn text, g int, m jsonb);
  FOR c IN SELECT split_part(p, ' ', 1) AS col, array_agg(split_part(p, ' ', 2)) AS fns
           FROM unnest(pairs) p GROUP BY 1 LOOP
    SELECT string_agg(format('%s(%I) AS r%s', b.builtin, c.col, f.i), ', ' ORDER BY f.i),
           string_agg(format('jsonb_object_agg(k, r%s)', f.i), ', ' ORDER BY f.i)
      INTO inner_list, outer_list
      FROM unnest(c.fns) WITH ORDINALITY f(fn, i) JOIN fam_fns b USING (fn);
    EXECUTE format($q$
      INSERT INTO fam_nat SELECT %L, f.fn, s.g, s.r[f.i]
      FROM (SELECT g, ARRAY[%s] AS r
            FROM (SELECT %s AS g, %s AS k, %s FROM %s WHERE %s IS NOT NULL GROUP BY 1, 2) s0
            GROUP BY g) s, unnest(%L::text[]) WITH ORDINALITY f(fn, i)$q$,
      c.col, outer_list, grp, key, inner_list, src, key, c.fns);
  END LOOP;
END $$;
CREATE FUNCTION fam_check(src text, key text, grp text, pairs text[], tol float8)
RETURNS TABLE (col text, fn text, groups bigint, mismatches bigint) LANGUAGE plpgsql AS $$
DECLARE c text; f text; vtype regtype;
BEGIN
  DROP TABLE IF EXISTS fam_ext;
  CREATE TEMP TABLE fam_ext (col text, vtype regtype, fn text, g int, m jsonb);
  FOR c, f IN SELECT split_part(p, ' ', 1), split_part(p, ' ', 2) FROM unnest(pairs) p LOOP
    EXECUTE format('SELECT pg_typeof(%I) FROM %s LIMIT 1', c, src) INTO vtype;
    EXECUTE format('INSERT INTO fam_ext SELECT %L, %L, %L, %s, %s(%s, %I) FROM %s GROUP BY 4',
                   c, vtype, f, grp, f, key, c, src);
  END LOOP;
  RETURN QUERY
  SELECT b.col, b.fn, count(*), count(*) FILTER (WHERE NOT fam_same(a.m, b.m, t.vtype, b.fn, tol))
  FROM fam_ext a FULL JOIN fam_nat b USING (col, fn, g)
       JOIN (SELECT DISTINCT e.col, e.vtype FROM fam_ext e) t ON t.col = b.col
  GROUP BY 1, 2;
END $$;
-- Modes: spillagg.work_mem, then /sort or /hash for the grouping plan; set
-- for the rest of the transaction (the calling statement).
CREATE FUNCTION fam_set_mode(mode text) RETURNS bigint LANGUAGE sql AS $$
  SELECT set_config('spillagg.work_mem', split_part(mode, '/', 1), true),
         set_config('enable_hashagg', (split_part(mode, '/', 2) <> 'sort')::text, true),
         set_config('enable_sort', (split_part(mode, '/', 2) <> 'hash')::text, true);
  SELECT spills FROM spillagg_stats() $$;
CREATE FUNCTION fam_report(src text, key text, grp text, pairs text[], modes text[], tol float8 DEFAULT 1e-12)
RETURNS TABLE (mode text, checks bigint, maps numeric, mismatches numeric, failed text, spilled boolean)
LANGUAGE plpgsql AS $$
DECLARE spills0 bigint;
BEGIN
  FOREACH mode IN ARRAY modes LOOP
    spills0 := fam_set_mode(mode);
    SELECT count(*), sum(c.groups), sum(c.mismatches),
           string_agg(c.col || ' ' || c.fn, ', ' ORDER BY c.col, c.fn) FILTER (WHERE c.mismatches > 0)
      INTO checks, maps, mismatches, failed FROM fam_check(src, key, grp, pairs, tol) c;
    spilled := (SELECT spills FROM spillagg_stats()) > spills0;
    RETURN NEXT;
  END LOOP;
END $$;

-- Test data, 40000 rows: k is NULL (5%), Zipf-like (40%) or uniform (55%);
-- kt is text, NULL in 20% of the rows; values are NULL in ~10% of the rows
-- and in all rows of the keys k = 7 (mod 1000).  v4 sums leave int4's range,
-- v8 sums int8's; vr holds multiples of 1/8 (exact sums in real, as PostgreSQL
-- sums real in real), vf positive doubles, vn numerics of scales 0 to 4.
SELECT setseed(0.2024);
CREATE TABLE fam_data AS
SELECT i, i % 200 AS g, k, kt,
       CASE WHEN nul OR random() < 0.1 THEN NULL ELSE floor(random() * 65536 - 32768)::int2 END AS v2,
       CASE WHEN nul OR random() < 0.1 THEN NULL ELSE floor(random() * 4294967296 - 2147483648)::int4 END AS v4,
       CASE WHEN nul OR random() < 0.1 THEN NULL
            ELSE floor((random() - 0.5) * 1.8e19)::int8 + floor(random() * 1000)::int8 END AS v8,
       CASE WHEN nul OR random() < 0.1 THEN NULL ELSE ((floor(random() * 801) - 400) / 8)::real END AS vr,
       CASE WHEN nul OR random() < 0.1 THEN NULL ELSE random() * 1000 END AS vf,
       CASE WHEN nul OR random() < 0.1 THEN NULL ELSE round((random() * 2e6 - 1e6)::numeric, i % 5) END AS vn
FROM (SELECT i,
             CASE WHEN r < 0.05 THEN NULL
                  WHEN r < 0.45 THEN floor(exp(random() * ln(20000)))::int4
                  ELSE floor(random() * 12000)::int4 END AS k,
             CASE WHEN random() < 0.2 THEN NULL ELSE md5(floor(random() * 10000)::text) END AS kt,
             random() < 0.01 AS nul
      FROM (SELECT i, random() AS r FROM generate_series(1, 40000) i) s0) s;
UPDATE fam_data SET v2 = NULL, v4 = NULL, v8 = NULL, vr = NULL, vf = NULL, vn = NULL
WHERE k % 1000 = 7;
ANALYZE fam_data;
SELECT count(DISTINCT k) AS keys, max(c) AS top_count, count(*) FILTER (WHERE c = 1) AS singletons,
       (SELECT count(DISTINCT kt) FROM fam_data) AS text_keys,
       (SELECT count(*) FROM fam_data WHERE k IS NULL) AS null_keys,
       (SELECT count(*) - count(v4) FROM fam_data) AS null_v4
FROM (SELECT k, count(*) c FROM fam_data WHERE k IS NOT NULL GROUP BY k) s;

-- Whole table: 6 value types x 8 functions, at 64 kB (spills) and 1GB.
\set all 'fam_pairs(''{v2,v4,v8,vr,vf,vn}'')'
CALL fam_native('fam_data', 'k', '0', :all);
SELECT * FROM fam_report('fam_data', 'k', '0', :all, '{64,1GB}');
-- The aliases var_samp_map and stddev_samp_map.
SELECT variance_map(k, v4) = var_samp_map(k, v4) AS variance_int4,
       stddev_map(k, vf) = stddev_samp_map(k, vf) AS stddev_float8,
       variance_map(k, vn) = var_samp_map(k, vn) AS variance_numeric
FROM fam_data;

-- Text keys, NULL in 20% of the rows.
\set text_pairs 'ARRAY[''v2 max_map'', ''v8 sum_map'', ''vf variance_map'', ''vf avg_map'', ''vn stddev_pop_map'', ''vn avg_map'']'
CALL fam_native('fam_data', 'kt', '0', :text_pairs);
SELECT * FROM fam_report('fam_data', 'kt', '0', :text_pairs, '{64,1GB}');

-- Per group: GROUP BY g, 200 groups of 100 rows (the first 20000 rows),
-- sorted and hashed, each group's map against PostgreSQL's (FULL JOIN on
-- the group).  At 64 kB the 200 hashed states share the budget and spill.
CREATE VIEW fam_g AS SELECT * FROM fam_data WHERE i <= 40000;
\set group_pairs 'ARRAY[''v4 avg_map'', ''v8 sum_map'', ''vr max_map'', ''vf stddev_map'', ''vn variance_map'']'
CALL fam_native('fam_g', 'k', 'g', :group_pairs);
SELECT * FROM fam_report('fam_g', 'k', 'g', :group_pairs, '{64/sort,64/hash,1GB/sort,1GB/hash}');

-- Ill-conditioned: 400 keys of 50 values each, large mean and small spread
-- (1e9 + noise for double, 1e6 + noise for real, 1e15 + noise for bigint,
-- 1e20 + noise for numeric).  Floats within 1e-6.
SELECT setseed(0.33);
CREATE TABLE fam_ill AS
SELECT i % 400 AS k,
       (30000 + floor(random() * 500))::int2 AS v2,
       (1e15 + floor(random() * 1e6))::int8 AS v8,
       (1e6 + floor(random() * 1000) / 16)::real AS vr,
       1e9 + random() * 100 AS vf,
       round(1e20 + (random() * 100)::numeric, 6) AS vn
FROM generate_series(1, 20000) i;
\set ill 'fam_pairs(''{v2,v8,vr,vf,vn}'', ''{avg_map,variance_map,var_pop_map,stddev_map,stddev_pop_map}'')'
CALL fam_native('fam_ill', 'k', '0', :ill);
SELECT * FROM fam_report('fam_ill', 'k', '0', :ill, '{64,1GB}', 1e-6);

-- Extreme values (spillagg beside PostgreSQL's answer, per function).
-- int8 min and max in one key: sum(int8) is an exact numeric.
CREATE TABLE fam_x_int8 (k text, v int8);
INSERT INTO fam_x_int8 VALUES
  ('a', -9223372036854775808), ('a', 9223372036854775807),
  ('b', 9223372036854775807), ('b', 9223372036854775807), ('b', 9223372036854775807),
  ('c', -9223372036854775808), ('c', -9223372036854775808);
SELECT * FROM fam_diff('fam_x_int8');
-- int4 and int2 sums beyond their type's range (bigint results).
CREATE TABLE fam_x_int4 (k text, v int4);
INSERT INTO fam_x_int4 SELECT 'max', 2147483647 FROM generate_series(1, 3)
  UNION ALL SELECT 'min', -2147483648 FROM generate_series(1, 3)
  UNION ALL VALUES ('both', 2147483647), ('both', -2147483648);
SELECT fn, spillagg ->> 'max' AS max, spillagg ->> 'min' AS min, spillagg ->> 'both' AS both, ok
FROM fam_diff('fam_x_int4');
CREATE TABLE fam_x_int2 (k int, v int2);
INSERT INTO fam_x_int2 SELECT 1, 32767 FROM generate_series(1, 5)
  UNION ALL SELECT 2, -32768 FROM generate_series(1, 5) UNION ALL VALUES (3, 32767), (3, -32768);
SELECT count(*) FILTER (WHERE ok) AS ok, count(*) AS fns, (SELECT sum_map(k, v) FROM fam_x_int2) AS sum_map
FROM fam_diff('fam_x_int2');
-- Numerics of large scale and magnitude.
CREATE TABLE fam_x_num (k text, v numeric);
INSERT INTO fam_x_num VALUES
  ('a', 1e-30), ('a', 123456789012345678901234567890.123456789), ('a', -0.000000000000000000000000000001),
  ('b', 123456789012345678901234567890.123456789), ('b', 123456789012345678901234567890.123456788),
  ('c', 0.1), ('c', 0.2), ('c', 0.30),
  ('d', -99999999999999999999.99999999999999999999);
SELECT * FROM fam_diff('fam_x_num');
-- Numeric NaN and infinities: +Inf + -Inf is NaN; a sample stddev of one
-- value is NULL even when that value is Infinity; a population variance of
-- it is NaN.
CREATE TABLE fam_x_nspecial (k text, v numeric);
INSERT INTO fam_x_nspecial VALUES
  ('inf', 'Infinity'), ('inf', 1), ('ninf', '-Infinity'), ('ninf', 2.5),
  ('both', 'Infinity'), ('both', '-Infinity'), ('nan', 'NaN'), ('nan', 'Infinity'), ('nan', 3),
  ('inf1', 'Infinity'), ('nan1', 'NaN'), ('fin', 1.25), ('fin', 2), ('null', NULL);
SELECT * FROM fam_diff('fam_x_nspecial');
-- Float NaN, infinities, -0.0, and (compared, not shown) tiny and huge values.
CREATE TABLE fam_x_f8 (k text, v float8);
INSERT INTO fam_x_f8 VALUES
  ('inf', 'Infinity'), ('inf', 1), ('ninf', '-Infinity'), ('ninf', 2.5),
  ('both', 'Infinity'), ('both', '-Infinity'), ('nan', 'NaN'), ('nan', 'Infinity'), ('nan', 3),
  ('inf1', 'Infinity'), ('nan1', 'NaN'), ('zero', '-0'), ('zero', 0), ('nzero', '-0'),
  ('tiny', 4.9e-324), ('tiny', 1e-300), ('huge', 1e150), ('huge', -1e150), ('huge', 1e153),
  ('null', NULL);
SELECT fn, spillagg - '{tiny,huge}'::text[] AS spillagg, ok FROM fam_diff('fam_x_f8');
CREATE TABLE fam_x_f4 (k text, v real);
INSERT INTO fam_x_f4 SELECT k, v::real FROM fam_x_f8 WHERE k NOT IN ('tiny', 'huge');
INSERT INTO fam_x_f4 VALUES ('huge', 3e38), ('huge', -3e38), ('tiny', 1e-45), ('tiny', 1e-38);
SELECT count(*) FILTER (WHERE ok) AS ok, count(*) AS fns, string_agg(fn, ', ') FILTER (WHERE NOT ok) AS failed
FROM fam_diff('fam_x_f4');
-- Single values beside PostgreSQL's, errors included: overflow from finite
-- floats is an error; sum(real) accumulates in real (ten times 0.1 is
-- 1.0000001); min and max of equal numerics of different display scales
-- return the last of them in input order (numeric_smaller/numeric_larger).
CREATE FUNCTION fam_try(q text) RETURNS text LANGUAGE plpgsql AS $$
DECLARE r text;
BEGIN
  EXECUTE q INTO r;
  RETURN r;
EXCEPTION WHEN OTHERS THEN
  RETURN 'ERROR: ' || SQLERRM;
END $$;
SELECT f, src, fam_try(format('SELECT %s(v) FROM %s', f, src)) AS postgres,
       fam_try(format('SELECT %s_map(1, v) ->> ''1'' FROM %s', f, src)) AS spillagg
FROM (VALUES ('sum', '(VALUES (1e308::float8), (1e308)) t(v)'),
             ('sum', '(VALUES (3e38::real), (3e38)) t(v)'),
             ('avg', '(VALUES (1e308::float8), (1e308)) t(v)'),
             ('var_pop', '(VALUES (1e308::float8), (-1e308)) t(v)'),
             ('sum', '(SELECT 0.1::real FROM generate_series(1, 10)) t(v)'),
             ('min', '(VALUES (1.0), (1.00), (1)) t(v)'),
             ('max', '(VALUES (5.5), (5.50), (2)) t(v)')) x(f, src);

-- The extreme tables at 64 kB: the odd rows of each, then 6000 rows of 2000
-- other keys, then the even rows (so one key's values meet in different runs).
CREATE FUNCTION fam_mixed(tab text, filler text) RETURNS text LANGUAGE sql AS $$
  SELECT format('(SELECT k, v FROM (SELECT *, row_number() OVER () AS rn FROM %1$s) x WHERE rn %% 2 = 1
                  UNION ALL %2$s UNION ALL
                  SELECT k, v FROM (SELECT *, row_number() OVER () AS rn FROM %1$s) x WHERE rn %% 2 = 0) s',
                tab, filler) $$;
SET spillagg.work_mem = 64;
SELECT spills AS spills0 FROM spillagg_stats() \gset
SELECT 'int8' AS values, count(*) FILTER (WHERE ok) AS ok, count(*) AS fns
FROM fam_diff(fam_mixed('fam_x_int8', 'SELECT (i % 2000)::text, i::int8 FROM generate_series(1, 6000) i'))
UNION ALL
SELECT 'int4', count(*) FILTER (WHERE ok), count(*)
FROM fam_diff(fam_mixed('fam_x_int4', 'SELECT (i % 2000)::text, -i FROM generate_series(1, 6000) i'))
UNION ALL
SELECT 'numeric', count(*) FILTER (WHERE ok), count(*)
FROM fam_diff(fam_mixed('fam_x_num', 'SELECT (i % 2000)::text, i / 7.0 FROM generate_series(1, 6000) i'))
UNION ALL
SELECT 'numeric special', count(*) FILTER (WHERE ok), count(*)
FROM fam_diff(fam_mixed('fam_x_nspecial', 'SELECT (i % 2000)::text, i::numeric FROM generate_series(1, 6000) i'))
UNION ALL
SELECT 'float8 special', count(*) FILTER (WHERE ok), count(*)
FROM fam_diff(fam_mixed('fam_x_f8', 'SELECT (i % 2000)::text, i / 7.0::float8 FROM generate_series(1, 6000) i'))
UNION ALL
SELECT 'real special', count(*) FILTER (WHERE ok), count(*)
FROM fam_diff(fam_mixed('fam_x_f4', 'SELECT (i % 2000)::text, (i / 8.0)::real FROM generate_series(1, 6000) i'));
SELECT spills > :spills0 AS spilled FROM spillagg_stats();
RESET spillagg.work_mem;

-- top_k(key, k): the k most frequent keys, most frequent first, ties by the
-- key's order (its collation for text).
SELECT top_k(x, 2) FROM (VALUES ('b'), ('a'), ('b'), ('c'), ('a')) v(x);          -- {a,b}
SELECT top_k(x, 3) AS top3, top_k(x, 2) AS top2, top_k(x, 10) AS top10
FROM (VALUES (5), (3), (9), (3), (5), (9), (1), (NULL), (NULL), (NULL)) v(x);      -- {3,5,9} {3,5} {3,5,9,1}
SELECT top_k(x COLLATE "en-x-icu", 4) AS icu, top_k(x COLLATE "C", 4) AS c
FROM (VALUES ('b'), ('B'), ('a'), ('A'), ('c'), ('C'), ('c')) v(x);                -- {c,a,A,b} {c,A,B,C}
SELECT pg_typeof(top_k(1::int8, 1)) AS int8, pg_typeof(top_k('a'::text, 1)) AS text,
       pg_typeof(top_k(1.5, 1)) AS numeric;

-- Against SELECT array_agg(key ORDER BY c DESC, key) FROM (SELECT key,
-- count(*) c ... GROUP BY key ORDER BY c DESC, key LIMIT n) s, for n = 1, 7,
-- 1000 (the uniform keys tie a lot) and 100000 (more than there are keys).
CREATE FUNCTION fam_topk(src text, key text, modes text[])
RETURNS TABLE (mode text, elements int[], ok boolean, spilled boolean) LANGUAGE plpgsql AS $$
DECLARE ns int[] := '{1, 7, 1000, 100000}'; e text[]; nat text; spills0 bigint;
BEGIN
  FOREACH mode IN ARRAY modes LOOP
    spills0 := fam_set_mode(mode);
    EXECUTE format('SELECT ARRAY[%s] FROM %s',
                   (SELECT string_agg(format('top_k(%s, %s)::text', key, x), ', ') FROM unnest(ns) x), src) INTO e;
    spilled := (SELECT spills FROM spillagg_stats()) > spills0;
    ok := true;
    elements := '{}';
    FOR i IN 1 .. cardinality(ns) LOOP
      EXECUTE format('SELECT array_agg(k ORDER BY c DESC, k)::text FROM (SELECT %s AS k, count(*) c FROM %s
                      WHERE %s IS NOT NULL GROUP BY 1 ORDER BY c DESC, k LIMIT %s) s', key, src, key, ns[i]) INTO nat;
      elements := elements || cardinality(e[i]::text[]);
      ok := ok AND e[i] IS NOT DISTINCT FROM nat;
    END LOOP;
    RETURN NEXT;
  END LOOP;
END $$;
SELECT 'int' AS key, * FROM fam_topk('fam_data', 'k', '{64,1GB}')
UNION ALL SELECT 'text', * FROM fam_topk('fam_data', 'kt', '{64,1GB}');
SELECT top_k(k, 10) AS top10_int, top_k(kt, 2) AS top2_text FROM fam_data;

-- Per group (200 groups), sorted and hashed.
CREATE TABLE fam_topk_nat AS
SELECT g, array_agg(k ORDER BY c DESC, k) AS t
FROM (SELECT g, k, c, row_number() OVER (PARTITION BY g ORDER BY c DESC, k) AS rn
      FROM (SELECT g, k, count(*) c FROM fam_g WHERE k IS NOT NULL GROUP BY g, k) s) s
WHERE rn <= 3 GROUP BY g;
CREATE FUNCTION fam_modes(query text, modes text[])
RETURNS TABLE (mode text, result text, spilled boolean) LANGUAGE plpgsql AS $$
DECLARE spills0 bigint;
BEGIN
  FOREACH mode IN ARRAY modes LOOP
    spills0 := fam_set_mode(mode);
    EXECUTE query INTO result;
    spilled := (SELECT spills FROM spillagg_stats()) > spills0;
    RETURN NEXT;
  END LOOP;
END $$;
SELECT * FROM fam_modes($$
  SELECT format('%s groups, %s mismatches', count(*), count(*) FILTER (WHERE a.t IS DISTINCT FROM b.t))
  FROM (SELECT g, top_k(k, 3) t FROM fam_g GROUP BY g) a FULL JOIN fam_topk_nat b USING (g)$$,
  '{64/sort,64/hash,1GB/sort,1GB/hash}');

-- k <= 0 or NULL: ERROR 22023 (invalid_parameter_value).
\set VERBOSITY terse
SELECT top_k(x, 0) FROM generate_series(1, 3) x;
SELECT top_k(x, -1) FROM generate_series(1, 3) x;
SELECT top_k(x, NULL) FROM generate_series(1, 3) x;
\set VERBOSITY default
SET client_min_messages = notice;
DO $$ BEGIN PERFORM top_k(x, 0) FROM generate_series(1, 3) x; RAISE NOTICE 'no error';
   EXCEPTION WHEN invalid_parameter_value THEN RAISE NOTICE 'ok 22023'; END $$;
DO $$ BEGIN PERFORM top_k(x::text, NULL) FROM generate_series(1, 3) x; RAISE NOTICE 'no error';
   EXCEPTION WHEN invalid_parameter_value THEN RAISE NOTICE 'ok 22023'; END $$;
SET client_min_messages = warning;
-- Raised in the middle of a spilling aggregation: no temp file is left.
SET spillagg.work_mem = 64;
SELECT top_k(k, CASE WHEN i = 30000 THEN 0 ELSE 5 END) FROM fam_data;
SELECT count(*) AS leftover_temp_files FROM pg_ls_tmpdir();
RESET spillagg.work_mem;
