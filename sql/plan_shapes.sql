-- Plan shapes: every aggregate (count_distinct, count_map, histogram, top_k,
-- the ten map aggregates over all six value types, and the two-step path
-- X_final(X_state(...)) / X_final(rollup(...))) inside plans that rescan,
-- share, re-read, scroll, re-execute or split an aggregation: LATERAL
-- subqueries rescanned with the outer parameter only in HAVING or the target
-- list (a hashed Agg then keeps its hash table and runs the final functions
-- again on the same states), correlated subqueries, GROUPING SETS / ROLLUP /
-- CUBE, a CTE read twice, UNION ALL, SCROLL cursors, prepared statements
-- (custom and generic plans), FILTER, DISTINCT and ORDER BY inside the call,
-- parallel plans, partitionwise aggregation and PostgreSQL's own HashAggregate
-- spilling to disk; each at spillagg.work_mem = 64 (spills) and at the
-- default budget.  Every answer is compared, per group and per key, with
-- PostgreSQL's own (GROUP BY + the built-in aggregate + jsonb_object_agg).
-- Plan shapes are asserted from EXPLAIN (FORMAT JSON) as booleans.
SET client_min_messages = warning;
CREATE EXTENSION IF NOT EXISTS spillagg;
SET max_parallel_workers_per_gather = 0;  -- parallel plans only where asked for below
SET jit = off;
SET enable_memoize = off;
-- The default budget (-1) is work_mem x hash_mem_multiplier: pinned here so
-- that nothing spills at the default (checked by "spilled" below).
SET work_mem = '32MB';
SET hash_mem_multiplier = 2;

-- The known bug in its smallest form: the hashed Agg under the Nested Loop is
-- rescanned for each o.lim; its input does not change, so PostgreSQL keeps the
-- hash table and only runs the final functions again.  cd must be 10 in every
-- row (as count(DISTINCT x), which cannot be in the same query: an aggregate
-- with DISTINCT rules out hashing).
CREATE TABLE ps_r AS SELECT i % 3 AS g, i AS x FROM generate_series(1, 30) i;
CREATE TABLE ps_lim AS SELECT i AS lim FROM generate_series(1, 3) i;
ANALYZE ps_r;
ANALYZE ps_lim;
SET enable_sort = off;
SELECT o.lim, s.* FROM ps_lim o,
  LATERAL (SELECT g, count_distinct(x) AS cd, count(*) AS c
           FROM ps_r GROUP BY g HAVING count(*) > o.lim) s ORDER BY 1, 2;
SELECT o.lim, s.* FROM ps_lim o,
  LATERAL (SELECT g, count_map(x % 2) AS cm, sum_map(x % 2, x) AS sm, top_k(x % 4, 1) AS top1
           FROM ps_r GROUP BY g HAVING count(*) > o.lim) s ORDER BY 1, 2;
RESET enable_sort;

-- Plan helpers: every node of a plan as the path from the root, each step
-- 'Node Type[Strategy/Partial Mode]', '{SubPlan}' or '{InitPlan}' appended
-- for subplans; ps_has(q, regex)
-- is true if some path matches.  ps_analyze returns EXPLAIN ANALYZE's nodes.
CREATE FUNCTION ps_step(n jsonb) RETURNS text LANGUAGE sql IMMUTABLE AS $$
  SELECT (n ->> 'Node Type')
         || coalesce('[' || (n ->> 'Strategy') || coalesce('/' || (n ->> 'Partial Mode'), '') || ']', '')
         || CASE WHEN n ->> 'Parent Relationship' IN ('SubPlan', 'InitPlan')
                 THEN '{' || (n ->> 'Parent Relationship') || '}' ELSE '' END $$;
CREATE FUNCTION ps_nodes(q text, do_analyze boolean DEFAULT false)
RETURNS TABLE (path text, node jsonb) LANGUAGE plpgsql AS $$
DECLARE p jsonb;
BEGIN
  EXECUTE format('EXPLAIN (FORMAT JSON, COSTS OFF%s) %s',
                 CASE WHEN do_analyze THEN ', ANALYZE, TIMING OFF, SUMMARY OFF' ELSE '' END, q) INTO p;
  RETURN QUERY WITH RECURSIVE n(path, node) AS (
    SELECT ps_step(p -> 0 -> 'Plan'), p -> 0 -> 'Plan'
    UNION ALL
    SELECT n.path || '>' || ps_step(c), c FROM n, jsonb_array_elements(n.node -> 'Plans') c)
  SELECT n.path, n.node - 'Plans' FROM n;
END $$;
CREATE FUNCTION ps_has(q text, pattern text) RETURNS boolean LANGUAGE sql AS $$
  SELECT EXISTS (SELECT FROM ps_nodes(q) n WHERE n.path ~ pattern) $$;

-- Test data, 2500 rows.  g: 4 groups of skewed sizes (45%, 25%, 20%, 10%),
-- h = i % 3, m = i % 50.  k: int keys, power-law (key 1 the most frequent),
-- 5% NULL; kt: text keys (md5, 500 values), 10% NULL.  Values of the six
-- types, each ~8% NULL, and NULL in every row of the keys k % 100 = 7:
-- v2 smallint, v4 int, v8 bigint (sums beyond int8), vr real (multiples of
-- 1/8: exact sums), vf positive double precision, vn numeric of scales 0-3.
SELECT setseed(0.5151);
CREATE TABLE ps AS
SELECT i, g, i % 3 AS h, i % 50 AS m, k, kt,
       CASE WHEN nul OR random() < 0.08 THEN NULL ELSE floor(random() * 65536 - 32768)::int2 END AS v2,
       CASE WHEN nul OR random() < 0.08 THEN NULL ELSE floor(random() * 4294967296 - 2147483648)::int4 END AS v4,
       CASE WHEN nul OR random() < 0.08 THEN NULL ELSE floor((random() - 0.5) * 1.8e19)::int8 END AS v8,
       CASE WHEN nul OR random() < 0.08 THEN NULL ELSE ((floor(random() * 801) - 400) / 8)::real END AS vr,
       CASE WHEN nul OR random() < 0.08 THEN NULL ELSE random() * 1000 + 1 END AS vf,
       CASE WHEN nul OR random() < 0.08 THEN NULL ELSE round((random() * 2e6 - 1e6)::numeric, i % 4) END AS vn
FROM (SELECT i,
             CASE WHEN r < 0.45 THEN 0 WHEN r < 0.70 THEN 1 WHEN r < 0.90 THEN 2 ELSE 3 END AS g,
             CASE WHEN random() < 0.05 THEN NULL ELSE floor(exp(random() * ln(1500)))::int4 END AS k,
             CASE WHEN random() < 0.10 THEN NULL ELSE md5(floor(random() * 500)::text) END AS kt,
             false AS nul
      FROM (SELECT i, random() AS r FROM generate_series(1, 2500) i) s0) s;
UPDATE ps SET v2 = NULL, v4 = NULL, v8 = NULL, vr = NULL, vf = NULL, vn = NULL WHERE k % 100 = 7;
ANALYZE ps;
SELECT g, count(*) AS rows, count(DISTINCT k) AS keys, count(DISTINCT kt) AS text_keys,
       count(*) - count(k) AS null_k, count(*) - count(kt) AS null_kt, count(*) - count(v4) AS null_v4
FROM ps GROUP BY ROLLUP (g) ORDER BY g;
-- HAVING count(*) > lim keeps 4, 3 and 1 of the groups g.
CREATE TABLE ps_o AS SELECT * FROM (VALUES (0), (450), (900)) v(lim);
ANALYZE ps_o;

-- The calls under test.  e names the call; base is the call itself; kind:
-- cd (count_distinct), cm (count_map / histogram), tk (top_k), map; tol: 0
-- (ints, numerics, min/max: same JSON text) or a relative tolerance per key
-- (sum/avg of floats 1e-12, variance/stddev of floats 1e-9).  Names 'D:...'
-- are the same calls with DISTINCT (their own answers, per g only).
CREATE TABLE ps_e (ord int, e text PRIMARY KEY, base text, fn text, kind text, key text, ktype text,
                   val text, n int, builtin text, tol float8, dist boolean);
INSERT INTO ps_e (ord, e, base, fn, kind, key, ktype, val, n, builtin, tol, dist) VALUES
  (1, 'count_distinct(k)', 'count_distinct(k)', 'count_distinct', 'cd', 'k', 'int', NULL, NULL, NULL, 0, false),
  (2, 'count_distinct(kt)', 'count_distinct(kt)', 'count_distinct', 'cd', 'kt', 'text', NULL, NULL, NULL, 0, false),
  (3, 'count_map(k)', 'count_map(k)', 'count_map', 'cm', 'k', 'int', NULL, NULL, NULL, 0, false),
  (4, 'histogram(kt)', 'histogram(kt)', 'histogram', 'cm', 'kt', 'text', NULL, NULL, NULL, 0, false),
  (5, 'top_k(k, 5)', 'top_k(k, 5)', 'top_k', 'tk', 'k', 'int', NULL, 5, NULL, 0, false),
  (6, 'top_k(kt, 3)', 'top_k(kt, 3)', 'top_k', 'tk', 'kt', 'text', NULL, 3, NULL, 0, false);
INSERT INTO ps_e (ord, e, base, fn, kind, key, ktype, val, n, builtin, tol, dist)
SELECT 6 + (f.i - 1) * 6 + v.j, format('%s(%s, %s)', f.fn, kk.key, v.val), format('%s(%s, %s)', f.fn, kk.key, v.val),
       f.fn, 'map', kk.key, kk.ktype, v.val, NULL, f.builtin,
       CASE WHEN v.val NOT IN ('vr', 'vf') OR f.fn IN ('min_map', 'max_map') THEN 0
            WHEN f.fn IN ('sum_map', 'avg_map') THEN 1e-12 ELSE 1e-9 END, false
FROM (VALUES (1, 'sum_map', 'sum'), (2, 'avg_map', 'avg'), (3, 'min_map', 'min'), (4, 'max_map', 'max'),
             (5, 'variance_map', 'var_samp'), (6, 'var_samp_map', 'var_samp'), (7, 'var_pop_map', 'var_pop'),
             (8, 'stddev_map', 'stddev_samp'), (9, 'stddev_samp_map', 'stddev_samp'),
             (10, 'stddev_pop_map', 'stddev_pop')) f(i, fn, builtin),
     (VALUES (1, 'v2'), (2, 'v4'), (3, 'v8'), (4, 'vr'), (5, 'vf'), (6, 'vn')) v(j, val),
     LATERAL (SELECT CASE WHEN (f.i + (v.j - 1) / 3) % 2 = 0 THEN 'k' ELSE 'kt' END AS key,
                     CASE WHEN (f.i + (v.j - 1) / 3) % 2 = 0 THEN 'int' ELSE 'text' END AS ktype) kk;
-- Keys: int or text, by function and value type.  Sets of calls: all (66),
-- core (16: every function, every value type, both key types), dcore (core
-- with DISTINCT).
CREATE TABLE ps_set (setname text, pos int, e text, PRIMARY KEY (setname, pos));
INSERT INTO ps_set SELECT 'all', row_number() OVER (ORDER BY ord), e FROM ps_e;
INSERT INTO ps_set
SELECT 'core', row_number() OVER (ORDER BY ord), e FROM ps_e
WHERE kind <> 'map' OR (ord - 7) % 6 = ((ord - 7) / 6) % 6;
INSERT INTO ps_e (ord, e, base, fn, kind, key, ktype, val, n, builtin, tol, dist)
SELECT 100 + ord, 'D:' || e, base, fn, kind, key, ktype, val, n, builtin, tol, true
FROM ps_e WHERE e IN (SELECT e FROM ps_set WHERE setname = 'core');
INSERT INTO ps_set SELECT 'dcore', pos, 'D:' || e FROM ps_set WHERE setname = 'core';
SELECT setname, count(*) AS calls, string_agg(e, ', ' ORDER BY pos) FILTER (WHERE setname <> 'all') AS e
FROM ps_set GROUP BY 1 ORDER BY 1;

-- Comparison.  ps_size: keys of a map, elements of an array, 1 for a number.
-- ps_diff: the number of keys on which two answers differ (a missing key, or
-- a different value: the same JSON text, or within tol relative for numbers).
CREATE FUNCTION ps_size(a jsonb) RETURNS int LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
  SELECT CASE jsonb_typeof(a) WHEN 'object' THEN (SELECT count(*)::int FROM jsonb_object_keys(a))
                              WHEN 'array' THEN jsonb_array_length(a) WHEN 'null' THEN 0
                              ELSE coalesce(sign(length(a::text)), 0)::int END $$;
CREATE FUNCTION ps_diff(a jsonb, b jsonb, tol float8) RETURNS int LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
  SELECT CASE
    WHEN a IS NULL AND b IS NULL THEN 0
    WHEN a IS NULL OR b IS NULL THEN greatest(ps_size(a), ps_size(b), 1)
    WHEN a::text = b::text THEN 0
    WHEN jsonb_typeof(a) <> 'object' OR jsonb_typeof(b) <> 'object' THEN 1
    ELSE (SELECT count(*)::int FROM jsonb_each(a) x FULL JOIN jsonb_each(b) y USING (key)
          WHERE x.key IS NULL OR y.key IS NULL
             OR NOT (x.value::text = y.value::text
                     OR (tol > 0 AND jsonb_typeof(x.value) = 'number' AND jsonb_typeof(y.value) = 'number'
                         AND abs(x.value::numeric - y.value::numeric)
                             <= tol::numeric * greatest(abs(x.value::numeric), abs(y.value::numeric)))))
  END $$;
-- PostgreSQL's answers, per label: 'g0'..'g3' and '*' (the whole table);
-- for the core calls also 'h0'..'h2', 'g0h0'..'g3h2' and 'm0'..'m49'; the
-- DISTINCT calls per g only.
CREATE TABLE ps_ref (e text, lbl text, val jsonb, nkeys int, PRIMARY KEY (e, lbl));
DO $$
DECLARE c record; src text; sets text; lbl text; agg text; inner_q text; outer_q text;
BEGIN
  FOR c IN SELECT * FROM ps_e LOOP
    IF c.dist THEN
      src := format('(SELECT DISTINCT g, %s%s FROM ps) d', c.key, coalesce(', ' || c.val, ''));
      sets := format('(g, %s)', c.key);
      lbl := $l$'g' || g$l$;
    ELSE
      src := 'ps';
      -- per g and the whole table; per g and h, h and m only for the core calls
      sets := format('(g, %1$s), (%1$s)', c.key);
      lbl := $l$CASE grouping(g) WHEN 0 THEN 'g' || g ELSE '*' END$l$;
      IF c.e IN (SELECT e FROM ps_set WHERE setname = 'core') THEN
        sets := format('(g, h, %1$s), (g, %1$s), (h, %1$s), (%1$s), (m, %1$s)', c.key);
        lbl := $l$CASE grouping(g, h, m) WHEN 1 THEN 'g' || g || 'h' || h WHEN 3 THEN 'g' || g
                   WHEN 5 THEN 'h' || h WHEN 6 THEN 'm' || m ELSE '*' END$l$;
      END IF;
    END IF;
    agg := CASE WHEN c.kind = 'map' THEN format('%s(%s)', c.builtin, c.val) ELSE 'count(*)' END;
    inner_q := format('SELECT %s AS lbl, %s AS key, %s AS r FROM %s WHERE %s IS NOT NULL GROUP BY GROUPING SETS (%s)',
                      lbl, c.key, agg, src, c.key, sets);
    outer_q := CASE c.kind
      WHEN 'cd' THEN 'SELECT lbl, to_jsonb(count(*)) FROM (%s) s GROUP BY lbl'
      WHEN 'tk' THEN 'SELECT lbl, to_jsonb(array_agg(key ORDER BY r DESC, key)) FROM
                        (SELECT *, row_number() OVER (PARTITION BY lbl ORDER BY r DESC, key) AS rn FROM (%s) s0) s
                      WHERE rn <= ' || c.n || ' GROUP BY lbl'
      ELSE 'SELECT lbl, jsonb_object_agg(key, r) FROM (%s) s GROUP BY lbl' END;
    EXECUTE format('INSERT INTO ps_ref SELECT %L, q.*, ps_size(q.val) FROM (' || outer_q || ') q(lbl, val)', c.e, inner_q);
  END LOOP;
END $$;
SELECT count(*) AS answers, count(DISTINCT lbl) AS labels, sum(nkeys) AS values FROM ps_ref;

-- Two-step: states per (g, h) in a table, one column per call (c1..c66).
SELECT 'CREATE TABLE ps_st AS SELECT g, h, count(*) AS n, '
       || string_agg(format('%s AS c%s', regexp_replace(replace(base, 'histogram(', 'count_map('), '^(\w+)\(', '\1_state('), ord),
                     ', ' ORDER BY ord)
       || ' FROM ps GROUP BY g, h' AS ddl
FROM ps_e WHERE NOT dist \gset
:ddl;
ANALYZE ps_st;

-- The select list of a set of calls, as one jsonb[] (position = ps_set.pos):
-- form 'one' (the calls), 'filter' (FILTER (WHERE h = 1)), 'orderby' (ORDER
-- BY inside the call), 'distinct', 'state' (X_final(X_state(...))) or
-- 'rollup' (X_final(rollup(cN)) over ps_st).
CREATE FUNCTION ps_list(setname text, form text) RETURNS text LANGUAGE sql STABLE AS $$
  SELECT 'ARRAY[' || string_agg(
           CASE WHEN e.kind IN ('cd', 'tk') THEN 'to_jsonb(' || x.expr || ')' ELSE x.expr END,
           ', ' ORDER BY s.pos) || ']::jsonb[]'
  FROM ps_set s JOIN ps_e e USING (e),
       LATERAL (SELECT CASE e.kind WHEN 'cd' THEN 'count_distinct_final(%s)'
                                   WHEN 'cm' THEN e.fn || '_final(%s)'
                                   WHEN 'tk' THEN 'top_k_final(%s, NULL::' || e.ktype || ')'
                                   ELSE e.fn || '_final(%s)' END AS fin,
                       regexp_replace(replace(e.base, 'histogram(', 'count_map('), '^(\w+)\(', '\1_state(') AS st,
                       (SELECT p.ord FROM ps_e p WHERE p.e = e.base) AS base_ord) f,
       LATERAL (SELECT CASE form
                  WHEN 'one' THEN e.base
                  WHEN 'filter' THEN e.base || ' FILTER (WHERE h = 1)'
                  WHEN 'orderby' THEN regexp_replace(e.base, '\)$',
                                        ' ORDER BY ' || e.key || ' DESC' || coalesce(', ' || e.val, '') || ')')
                  WHEN 'distinct' THEN regexp_replace(e.base, '^(\w+)\(', '\1(DISTINCT ')
                  WHEN 'state' THEN format(f.fin, f.st)
                  WHEN 'rollup' THEN format(f.fin, 'rollup(c' || f.base_ord || ')') END AS expr) x
  WHERE s.setname = ps_list.setname $$;

-- One row of answers (label, set, jsonb[]) against ps_ref: calls compared,
-- keys compared (PostgreSQL's), keys that differ, the calls that differ.
CREATE FUNCTION ps_cmp(lbl text, setname text, r jsonb[])
RETURNS TABLE (aggs int, keys bigint, bad bigint, failed text[]) LANGUAGE sql STABLE PARALLEL RESTRICTED AS $$
  SELECT count(*)::int, coalesce(sum(f.nkeys), 0)::bigint, coalesce(sum(d.n), 0)::bigint,
         coalesce(array_agg(s.e ORDER BY s.pos) FILTER (WHERE d.n > 0), '{}')
  FROM unnest(r) WITH ORDINALITY x(val, pos)
       LEFT JOIN ps_set s ON s.setname = ps_cmp.setname AND s.pos = x.pos
       LEFT JOIN ps_e e ON e.e = s.e
       LEFT JOIN ps_ref f ON f.e = s.e AND f.lbl = ps_cmp.lbl,
       LATERAL (SELECT CASE WHEN s.e IS NULL THEN 1
                            ELSE ps_diff(nullif(x.val, 'null'), f.val, e.tol) END) d(n) $$;
-- The verdict of a query, an aggregate over its rows: rows, calls and keys
-- compared, keys that differ, the calls that differ (the first 4), and
-- whether spillagg spilled during the query (stats delta since s0).
CREATE TYPE ps_acc AS (rows int, aggs int, keys bigint, bad bigint, failed text[], s0 bigint);
CREATE TYPE ps_verdict AS (budget text, rows int, aggs int, keys bigint, bad bigint, failed text, spilled boolean);
CREATE FUNCTION ps_acc_add(st ps_acc, lbl text, r jsonb[], setname text, s0 bigint) RETURNS ps_acc
LANGUAGE sql STABLE PARALLEL RESTRICTED AS $$
  SELECT ROW(st.rows + 1, st.aggs + c.aggs, st.keys + c.keys, st.bad + c.bad,
             ARRAY(SELECT DISTINCT x FROM unnest(st.failed || c.failed) x ORDER BY 1), s0)::ps_acc
  FROM ps_cmp(lbl, setname, r) c $$;
CREATE FUNCTION ps_acc_final(st ps_acc) RETURNS ps_verdict LANGUAGE sql STABLE PARALLEL RESTRICTED AS $$
  SELECT ROW(current_setting('spillagg.work_mem'), st.rows, st.aggs, st.keys, st.bad,
             array_to_string(st.failed[1:4], ', ')
               || CASE WHEN cardinality(st.failed) > 4 THEN ' +' || (cardinality(st.failed) - 4) || ' more' ELSE '' END,
             (SELECT spills FROM spillagg_stats()) > st.s0)::ps_verdict $$;
CREATE AGGREGATE ps_verdict(text, jsonb[], text, bigint) (
  SFUNC = ps_acc_add, STYPE = ps_acc, FINALFUNC = ps_acc_final, INITCOND = '(0,0,0,0,{},)',
  PARALLEL = RESTRICTED);
-- The comparison is not vacuous.
SELECT ps_diff('{"a": 1, "b": 2.50}', '{"a": 1, "b": 2.5}', 0) AS scale,
       ps_diff('{"a": 1, "b": 2}', '{"a": 1}', 0) AS missing,
       ps_diff('{"a": 1.0000000000001}', '{"a": 1}', 1e-12) AS close,
       ps_diff('{"a": 1.000001}', '{"a": 1}', 1e-9) AS far,
       ps_diff(NULL, '{"a": 1, "b": 2}', 0) AS null_vs_map,
       ps_diff('[1, 2]', '[2, 1]', 0) AS top_k_order;
-- PostgreSQL's own answers pass; shifted by one call, they fail.
SELECT (v).* FROM (SELECT ps_verdict('g0', ARRAY(SELECT f.val FROM ps_set s JOIN ps_ref f ON f.e = s.e AND f.lbl = 'g0'
                                                WHERE s.setname = 'core' ORDER BY s.pos), 'core', NULL) v) x;
SELECT (v).* FROM (SELECT ps_verdict('g0', ARRAY(SELECT f.val FROM ps_set s JOIN ps_ref f ON f.e = s.e AND f.lbl = 'g0'
                                                WHERE s.setname = 'core' ORDER BY s.pos DESC), 'core', NULL) v) x;

-- Checks.  Each query below returns (lbl, r, st): a label of ps_ref, the
-- answers as jsonb[] and the set of calls; ps_verdict compares every row.
-- "rows" counts the rows compared (a rescanned LATERAL subquery yields a row
-- per outer row and group), "keys" the keys compared, "bad" the keys that
-- differ (0), "spilled" whether spillagg spilled (at 64 kB only).

-- A. LATERAL subqueries rescanned for each of 3 outer rows; the outer
-- parameter only in HAVING (lim: 4 + 3 + 1 groups pass) or the target list.
-- Hashed: the Agg keeps its hash table and finalizes the same states again.
-- The plan checks require the Agg right under the Nested Loop (no
-- Materialize in between).
-- A1: HAVING; hashed with all 66 calls, sorted with the 16 core calls.
SELECT format($q$SELECT 'g' || s.g AS lbl, s.r, 'all' AS st FROM ps_o o,
  LATERAL (SELECT g, %s AS r FROM ps GROUP BY g HAVING count(*) > o.lim) s$q$, ps_list('all', 'one')) AS q \gset
SET enable_sort = off;
SELECT ps_has(:'q', 'Nested Loop>(Subquery Scan>)?Aggregate\[Hashed') AS hashed_rescan;
SET spillagg.work_mem = 64;
SELECT spills AS s0 FROM spillagg_stats() \gset
SELECT (v).* FROM (SELECT ps_verdict(lbl, r, st, :s0) v FROM (:q) s) x;
RESET spillagg.work_mem;
SELECT spills AS s0 FROM spillagg_stats() \gset
SELECT (v).* FROM (SELECT ps_verdict(lbl, r, st, :s0) v FROM (:q) s) x;
RESET spillagg.work_mem;
RESET enable_sort;
SELECT format($q$SELECT 'g' || s.g AS lbl, s.r, 'core' AS st FROM ps_o o,
  LATERAL (SELECT g, %s AS r FROM ps GROUP BY g HAVING count(*) > o.lim) s$q$, ps_list('core', 'one')) AS q \gset
SET enable_hashagg = off;
SELECT ps_has(:'q', 'Nested Loop>(Subquery Scan>)?Aggregate\[Sorted') AS sorted_rescan;
SET spillagg.work_mem = 64;
SELECT spills AS s0 FROM spillagg_stats() \gset
SELECT (v).* FROM (SELECT ps_verdict(lbl, r, st, :s0) v FROM (:q) s) x;
RESET spillagg.work_mem;
SELECT spills AS s0 FROM spillagg_stats() \gset
SELECT (v).* FROM (SELECT ps_verdict(lbl, r, st, :s0) v FROM (:q) s) x;
RESET spillagg.work_mem;
RESET enable_hashagg;
-- A2: the parameter only in the target list (12 rows), hashed then sorted.
SELECT format($q$SELECT CASE WHEN s.lim >= 0 THEN 'g' || s.g END AS lbl, s.r, 'core' AS st FROM ps_o o,
  LATERAL (SELECT g, o.lim AS lim, %s AS r FROM ps GROUP BY g) s$q$, ps_list('core', 'one')) AS q \gset
SET enable_sort = off;
SELECT ps_has(:'q', 'Nested Loop>(Subquery Scan>)?Aggregate\[Hashed') AS hashed_rescan;
SET spillagg.work_mem = 64;
SELECT spills AS s0 FROM spillagg_stats() \gset
SELECT (v).* FROM (SELECT ps_verdict(lbl, r, st, :s0) v FROM (:q) s) x;
RESET spillagg.work_mem;
SELECT spills AS s0 FROM spillagg_stats() \gset
SELECT (v).* FROM (SELECT ps_verdict(lbl, r, st, :s0) v FROM (:q) s) x;
RESET spillagg.work_mem;
RESET enable_sort;
SET enable_hashagg = off;
SELECT ps_has(:'q', 'Nested Loop>(Subquery Scan>)?Aggregate\[Sorted') AS sorted_rescan;
SET spillagg.work_mem = 64;
SELECT spills AS s0 FROM spillagg_stats() \gset
SELECT (v).* FROM (SELECT ps_verdict(lbl, r, st, :s0) v FROM (:q) s) x;
RESET spillagg.work_mem;
SELECT spills AS s0 FROM spillagg_stats() \gset
SELECT (v).* FROM (SELECT ps_verdict(lbl, r, st, :s0) v FROM (:q) s) x;
RESET spillagg.work_mem;
RESET enable_hashagg;
-- A3: no GROUP BY (a plain Agg is recomputed on rescan), HAVING.
SELECT format($q$SELECT '*' AS lbl, s.r, 'core' AS st FROM ps_o o,
  LATERAL (SELECT %s AS r FROM ps HAVING count(*) > o.lim) s$q$, ps_list('core', 'one')) AS q \gset
SELECT ps_has(:'q', 'Nested Loop>(Subquery Scan>)?Aggregate\[Plain') AS plain_rescan;
SET spillagg.work_mem = 64;
SELECT spills AS s0 FROM spillagg_stats() \gset
SELECT (v).* FROM (SELECT ps_verdict(lbl, r, st, :s0) v FROM (:q) s) x;
RESET spillagg.work_mem;
SELECT spills AS s0 FROM spillagg_stats() \gset
SELECT (v).* FROM (SELECT ps_verdict(lbl, r, st, :s0) v FROM (:q) s) x;
RESET spillagg.work_mem;
-- A4: two-step, X_final(rollup(state)) over the stored states, HAVING,
-- hashed then sorted; then X_final(X_state(...)) over the rows, hashed.
SELECT format($q$SELECT 'g' || s.g AS lbl, s.r, 'core' AS st FROM ps_o o,
  LATERAL (SELECT g, %s AS r FROM ps_st GROUP BY g HAVING sum(n) > o.lim) s$q$, ps_list('core', 'rollup')) AS q \gset
SET enable_sort = off;
SELECT ps_has(:'q', 'Nested Loop>(Subquery Scan>)?Aggregate\[Hashed') AS hashed_rescan;
SET spillagg.work_mem = 64;
SELECT spills AS s0 FROM spillagg_stats() \gset
SELECT (v).* FROM (SELECT ps_verdict(lbl, r, st, :s0) v FROM (:q) s) x;
RESET spillagg.work_mem;
SELECT spills AS s0 FROM spillagg_stats() \gset
SELECT (v).* FROM (SELECT ps_verdict(lbl, r, st, :s0) v FROM (:q) s) x;
RESET spillagg.work_mem;
RESET enable_sort;
SET enable_hashagg = off;
SELECT ps_has(:'q', 'Nested Loop>(Subquery Scan>)?Aggregate\[Sorted') AS sorted_rescan;
SET spillagg.work_mem = 64;
SELECT spills AS s0 FROM spillagg_stats() \gset
SELECT (v).* FROM (SELECT ps_verdict(lbl, r, st, :s0) v FROM (:q) s) x;
RESET spillagg.work_mem;
SELECT spills AS s0 FROM spillagg_stats() \gset
SELECT (v).* FROM (SELECT ps_verdict(lbl, r, st, :s0) v FROM (:q) s) x;
RESET spillagg.work_mem;
RESET enable_hashagg;
SELECT format($q$SELECT 'g' || s.g AS lbl, s.r, 'core' AS st FROM ps_o o,
  LATERAL (SELECT g, %s AS r FROM ps GROUP BY g HAVING count(*) > o.lim) s$q$, ps_list('core', 'state')) AS q \gset
SET enable_sort = off;
SELECT ps_has(:'q', 'Nested Loop>(Subquery Scan>)?Aggregate\[Hashed') AS hashed_rescan;
SET spillagg.work_mem = 64;
SELECT spills AS s0 FROM spillagg_stats() \gset
SELECT (v).* FROM (SELECT ps_verdict(lbl, r, st, :s0) v FROM (:q) s) x;
RESET spillagg.work_mem;
SELECT spills AS s0 FROM spillagg_stats() \gset
SELECT (v).* FROM (SELECT ps_verdict(lbl, r, st, :s0) v FROM (:q) s) x;
RESET spillagg.work_mem;
RESET enable_sort;
-- A5: hashed GROUPING SETS ((g), (h)) rescanned (two hash tables kept),
-- HAVING: 14 rows.
SELECT format($q$SELECT s.lbl, s.r, 'core' AS st FROM ps_o o,
  LATERAL (SELECT CASE grouping(g, h) WHEN 1 THEN 'g' || g ELSE 'h' || h END AS lbl, %s AS r
           FROM ps GROUP BY GROUPING SETS ((g), (h)) HAVING count(*) > o.lim) s$q$, ps_list('core', 'one')) AS q \gset
SET enable_sort = off;
SELECT ps_has(:'q', 'Nested Loop>(Subquery Scan>)?Aggregate\[Hashed') AS hashed_rescan;
SET spillagg.work_mem = 64;
SELECT spills AS s0 FROM spillagg_stats() \gset
SELECT (v).* FROM (SELECT ps_verdict(lbl, r, st, :s0) v FROM (:q) s) x;
RESET spillagg.work_mem;
SELECT spills AS s0 FROM spillagg_stats() \gset
SELECT (v).* FROM (SELECT ps_verdict(lbl, r, st, :s0) v FROM (:q) s) x;
RESET spillagg.work_mem;
RESET enable_sort;
-- A6: per m (50 groups of 50 rows), HAVING, with PostgreSQL's HashAggregate
-- spilling to disk (work_mem = 64kB), so each rescan aggregates again: 50 +
-- 50 + 0 rows.  The default budget is 128 kB here (work_mem x 2): it spills
-- too.
SELECT format($q$SELECT 'm' || s.m AS lbl, s.r, 'core' AS st FROM ps_o o,
  LATERAL (SELECT m, %s AS r FROM ps GROUP BY m HAVING count(*) > o.lim / 18) s$q$, ps_list('core', 'one')) AS q \gset
SET work_mem = '64kB';
SET enable_sort = off;
SELECT ps_has(:'q', 'Nested Loop>(Subquery Scan>)?Aggregate\[Hashed') AS hashed_rescan;
SET spillagg.work_mem = 64;
SELECT bool_or((node ->> 'HashAgg Batches')::int > 1) AS hashagg_spilled FROM ps_nodes(:'q', true);
SET spillagg.work_mem = 64;
SELECT spills AS s0 FROM spillagg_stats() \gset
SELECT (v).* FROM (SELECT ps_verdict(lbl, r, st, :s0) v FROM (:q) s) x;
RESET spillagg.work_mem;
SELECT spills AS s0 FROM spillagg_stats() \gset
SELECT (v).* FROM (SELECT ps_verdict(lbl, r, st, :s0) v FROM (:q) s) x;
RESET spillagg.work_mem;
RESET enable_sort;
SET work_mem = '32MB';

-- B. Correlated subqueries in the target list.  B1: the parameter in WHERE
-- (the aggregate's input changes; g = 1 twice).  B2: only in HAVING, so a
-- hashed Agg keeps its table across the 4 executions of the subplan (each
-- finalizes all 4 groups), hashed then sorted.
SELECT format($q$SELECT 'g' || og.g AS lbl, (SELECT %s FROM ps WHERE ps.g = og.g) AS r, 'core' AS st
  FROM (VALUES (0), (1), (2), (3), (1)) og(g)$q$, ps_list('core', 'one')) AS q \gset
SELECT ps_has(:'q', 'Aggregate\[Plain[^>]*\{SubPlan\}$') AS subplan;
SET spillagg.work_mem = 64;
SELECT spills AS s0 FROM spillagg_stats() \gset
SELECT (v).* FROM (SELECT ps_verdict(lbl, r, st, :s0) v FROM (:q) s) x;
RESET spillagg.work_mem;
SELECT spills AS s0 FROM spillagg_stats() \gset
SELECT (v).* FROM (SELECT ps_verdict(lbl, r, st, :s0) v FROM (:q) s) x;
RESET spillagg.work_mem;
SELECT format($q$SELECT 'g' || og.g AS lbl,
       (SELECT s.r FROM (SELECT %s AS r FROM ps GROUP BY g HAVING min(g) = og.g) s) AS r, 'core' AS st
  FROM (VALUES (0), (1), (2), (3)) og(g)$q$, ps_list('core', 'one')) AS q \gset
SET enable_sort = off;
SELECT ps_has(:'q', '\{SubPlan\}>(.*>)?Aggregate\[Hashed|Aggregate\[Hashed[^>]*\{SubPlan\}') AS hashed_subplan;
SET spillagg.work_mem = 64;
SELECT spills AS s0 FROM spillagg_stats() \gset
SELECT (v).* FROM (SELECT ps_verdict(lbl, r, st, :s0) v FROM (:q) s) x;
RESET spillagg.work_mem;
SELECT spills AS s0 FROM spillagg_stats() \gset
SELECT (v).* FROM (SELECT ps_verdict(lbl, r, st, :s0) v FROM (:q) s) x;
RESET spillagg.work_mem;
RESET enable_sort;
SET enable_hashagg = off;
SELECT ps_has(:'q', '\{SubPlan\}>(.*>)?Aggregate\[Sorted|Aggregate\[Sorted[^>]*\{SubPlan\}') AS sorted_subplan;
SET spillagg.work_mem = 64;
SELECT spills AS s0 FROM spillagg_stats() \gset
SELECT (v).* FROM (SELECT ps_verdict(lbl, r, st, :s0) v FROM (:q) s) x;
RESET spillagg.work_mem;
SELECT spills AS s0 FROM spillagg_stats() \gset
SELECT (v).* FROM (SELECT ps_verdict(lbl, r, st, :s0) v FROM (:q) s) x;
RESET spillagg.work_mem;
RESET enable_hashagg;

-- C. GROUPING SETS (19 groups), ROLLUP (17) and CUBE (20 groups): hashed
-- (several hash tables in one Agg; Mixed with the empty set) and sorted (a
-- chain of sorts).
-- GROUPING SETS ((g), (h), (g, h))
SELECT format($q$SELECT CASE grouping(g, h) WHEN 0 THEN 'g' || g || 'h' || h WHEN 1 THEN 'g' || g WHEN 2 THEN 'h' || h ELSE '*' END AS lbl, %s AS r, 'core' AS st
  FROM ps GROUP BY GROUPING SETS ((g), (h), (g, h))$q$, ps_list('core', 'one')) AS q \gset
SET enable_sort = off;
SELECT ps_has(:'q', '^Aggregate\[Hashed') AS hashed;
SET spillagg.work_mem = 64;
SELECT spills AS s0 FROM spillagg_stats() \gset
SELECT (v).* FROM (SELECT ps_verdict(lbl, r, st, :s0) v FROM (:q) s) x;
RESET spillagg.work_mem;
SELECT spills AS s0 FROM spillagg_stats() \gset
SELECT (v).* FROM (SELECT ps_verdict(lbl, r, st, :s0) v FROM (:q) s) x;
RESET spillagg.work_mem;
RESET enable_sort;
SET enable_hashagg = off;
SELECT ps_has(:'q', '^Aggregate\[Sorted') AS sorted;
SET spillagg.work_mem = 64;
SELECT spills AS s0 FROM spillagg_stats() \gset
SELECT (v).* FROM (SELECT ps_verdict(lbl, r, st, :s0) v FROM (:q) s) x;
RESET spillagg.work_mem;
SELECT spills AS s0 FROM spillagg_stats() \gset
SELECT (v).* FROM (SELECT ps_verdict(lbl, r, st, :s0) v FROM (:q) s) x;
RESET spillagg.work_mem;
RESET enable_hashagg;
-- ROLLUP (g, h)
SELECT format($q$SELECT CASE grouping(g, h) WHEN 0 THEN 'g' || g || 'h' || h WHEN 1 THEN 'g' || g WHEN 2 THEN 'h' || h ELSE '*' END AS lbl, %s AS r, 'core' AS st
  FROM ps GROUP BY ROLLUP (g, h)$q$, ps_list('core', 'one')) AS q \gset
SET enable_sort = off;
SELECT ps_has(:'q', '^Aggregate\[Mixed') AS mixed;
SET spillagg.work_mem = 64;
SELECT spills AS s0 FROM spillagg_stats() \gset
SELECT (v).* FROM (SELECT ps_verdict(lbl, r, st, :s0) v FROM (:q) s) x;
RESET spillagg.work_mem;
SELECT spills AS s0 FROM spillagg_stats() \gset
SELECT (v).* FROM (SELECT ps_verdict(lbl, r, st, :s0) v FROM (:q) s) x;
RESET spillagg.work_mem;
RESET enable_sort;
SET enable_hashagg = off;
SELECT ps_has(:'q', '^Aggregate\[Sorted') AS sorted;
SET spillagg.work_mem = 64;
SELECT spills AS s0 FROM spillagg_stats() \gset
SELECT (v).* FROM (SELECT ps_verdict(lbl, r, st, :s0) v FROM (:q) s) x;
RESET spillagg.work_mem;
SELECT spills AS s0 FROM spillagg_stats() \gset
SELECT (v).* FROM (SELECT ps_verdict(lbl, r, st, :s0) v FROM (:q) s) x;
RESET spillagg.work_mem;
RESET enable_hashagg;
-- CUBE (g, h)
SELECT format($q$SELECT CASE grouping(g, h) WHEN 0 THEN 'g' || g || 'h' || h WHEN 1 THEN 'g' || g WHEN 2 THEN 'h' || h ELSE '*' END AS lbl, %s AS r, 'core' AS st
  FROM ps GROUP BY CUBE (g, h)$q$, ps_list('core', 'one')) AS q \gset
SET enable_sort = off;
SELECT ps_has(:'q', '^Aggregate\[Mixed') AS mixed;
SET spillagg.work_mem = 64;
SELECT spills AS s0 FROM spillagg_stats() \gset
SELECT (v).* FROM (SELECT ps_verdict(lbl, r, st, :s0) v FROM (:q) s) x;
RESET spillagg.work_mem;
SELECT spills AS s0 FROM spillagg_stats() \gset
SELECT (v).* FROM (SELECT ps_verdict(lbl, r, st, :s0) v FROM (:q) s) x;
RESET spillagg.work_mem;
RESET enable_sort;
SET enable_hashagg = off;
SELECT ps_has(:'q', '^Aggregate\[Sorted') AS sorted;
SET spillagg.work_mem = 64;
SELECT spills AS s0 FROM spillagg_stats() \gset
SELECT (v).* FROM (SELECT ps_verdict(lbl, r, st, :s0) v FROM (:q) s) x;
RESET spillagg.work_mem;
SELECT spills AS s0 FROM spillagg_stats() \gset
SELECT (v).* FROM (SELECT ps_verdict(lbl, r, st, :s0) v FROM (:q) s) x;
RESET spillagg.work_mem;
RESET enable_hashagg;
-- Two-step: GROUPING SETS ((g), (h), ()) over the stored states, rollup.
SELECT format($q$SELECT CASE grouping(g, h) WHEN 0 THEN 'g' || g || 'h' || h WHEN 1 THEN 'g' || g WHEN 2 THEN 'h' || h ELSE '*' END AS lbl, %s AS r, 'core' AS st
  FROM ps_st GROUP BY GROUPING SETS ((g), (h), ())$q$, ps_list('core', 'rollup')) AS q \gset
SET enable_sort = off;
SELECT ps_has(:'q', '^Aggregate\[Mixed') AS mixed;
SET spillagg.work_mem = 64;
SELECT spills AS s0 FROM spillagg_stats() \gset
SELECT (v).* FROM (SELECT ps_verdict(lbl, r, st, :s0) v FROM (:q) s) x;
RESET spillagg.work_mem;
SELECT spills AS s0 FROM spillagg_stats() \gset
SELECT (v).* FROM (SELECT ps_verdict(lbl, r, st, :s0) v FROM (:q) s) x;
RESET spillagg.work_mem;
RESET enable_sort;
SET enable_hashagg = off;
SELECT ps_has(:'q', '^Aggregate\[Sorted') AS sorted;
SET spillagg.work_mem = 64;
SELECT spills AS s0 FROM spillagg_stats() \gset
SELECT (v).* FROM (SELECT ps_verdict(lbl, r, st, :s0) v FROM (:q) s) x;
RESET spillagg.work_mem;
SELECT spills AS s0 FROM spillagg_stats() \gset
SELECT (v).* FROM (SELECT ps_verdict(lbl, r, st, :s0) v FROM (:q) s) x;
RESET spillagg.work_mem;
RESET enable_hashagg;

-- D. A MATERIALIZED CTE read twice (8 rows).
SELECT format($q$WITH c AS MATERIALIZED (SELECT g, %s AS r FROM ps GROUP BY g)
  SELECT 'g' || g AS lbl, r, 'core' AS st FROM c UNION ALL SELECT 'g' || g, r, 'core' FROM c$q$, ps_list('core', 'one')) AS q \gset
SELECT count(*) FILTER (WHERE path ~ 'CTE Scan[^>]*$') AS cte_scans FROM ps_nodes(:'q');
SET spillagg.work_mem = 64;
SELECT spills AS s0 FROM spillagg_stats() \gset
SELECT (v).* FROM (SELECT ps_verdict(lbl, r, st, :s0) v FROM (:q) s) x;
RESET spillagg.work_mem;
SELECT spills AS s0 FROM spillagg_stats() \gset
SELECT (v).* FROM (SELECT ps_verdict(lbl, r, st, :s0) v FROM (:q) s) x;
RESET spillagg.work_mem;

-- E. UNION ALL of three aggregations (per g, per h, whole table) sharing
-- one query's budget.
SELECT format($q$SELECT 'g' || g AS lbl, %1$s AS r, 'core' AS st FROM ps GROUP BY g
  UNION ALL SELECT 'h' || h, %1$s, 'core' FROM ps GROUP BY h
  UNION ALL SELECT '*', %1$s, 'core' FROM ps$q$, ps_list('core', 'one')) AS q \gset
SELECT count(*) FILTER (WHERE path ~ '^Append>([^>]*>)?Aggregate[^>]*$') AS aggs_under_append FROM ps_nodes(:'q');
SET spillagg.work_mem = 64;
SELECT spills AS s0 FROM spillagg_stats() \gset
SELECT (v).* FROM (SELECT ps_verdict(lbl, r, st, :s0) v FROM (:q) s) x;
RESET spillagg.work_mem;
SELECT spills AS s0 FROM spillagg_stats() \gset
SELECT (v).* FROM (SELECT ps_verdict(lbl, r, st, :s0) v FROM (:q) s) x;
RESET spillagg.work_mem;

-- F. SCROLL cursors: FETCH forward, BACKWARD and ABSOLUTE re-read rows that
-- the plan computed once (a Sort, or a Materialize over a GroupAggregate);
-- each row shows its own comparison.
SELECT format($q$SELECT CASE grouping(g, h) WHEN 1 THEN 'g' || g ELSE 'h' || h END AS lbl, %s AS r, 'core' AS st
  FROM ps GROUP BY GROUPING SETS ((g), (h))$q$, ps_list('core', 'one')) AS q \gset
SET enable_sort = off;
SELECT ps_has('DECLARE ps_c SCROLL CURSOR FOR SELECT * FROM (' || :'q' || ') s ORDER BY lbl', '^Sort>(.*>)?Aggregate\[Hashed') AS sort_over_hashed;
BEGIN;
SET LOCAL spillagg.work_mem = 64;
DECLARE ps_c SCROLL CURSOR FOR
  SELECT s.lbl, c.aggs, c.keys, c.bad, c.failed FROM (:q) s, LATERAL ps_cmp(s.lbl, s.st, s.r) c ORDER BY s.lbl;
FETCH 3 FROM ps_c;
FETCH BACKWARD 2 FROM ps_c;
FETCH ABSOLUTE 6 FROM ps_c;
FETCH ABSOLUTE -1 FROM ps_c;
FETCH BACKWARD ALL FROM ps_c;
FETCH ABSOLUTE 2 FROM ps_c;
COMMIT;
BEGIN;
SET LOCAL spillagg.work_mem = -1;
DECLARE ps_c SCROLL CURSOR FOR
  SELECT s.lbl, c.aggs, c.keys, c.bad, c.failed FROM (:q) s, LATERAL ps_cmp(s.lbl, s.st, s.r) c ORDER BY s.lbl;
FETCH 3 FROM ps_c;
FETCH BACKWARD 2 FROM ps_c;
FETCH ABSOLUTE 6 FROM ps_c;
FETCH ABSOLUTE -1 FROM ps_c;
FETCH BACKWARD ALL FROM ps_c;
FETCH ABSOLUTE 2 FROM ps_c;
COMMIT;
RESET enable_sort;
SELECT format($q$SELECT 'g' || g || 'h' || h AS lbl, %s AS r, 'core' AS st FROM ps GROUP BY g, h$q$, ps_list('core', 'one')) AS q \gset
SET enable_hashagg = off;
SELECT ps_has('DECLARE ps_c SCROLL CURSOR FOR SELECT s.lbl, c.* FROM (' || :'q' || ') s, LATERAL ps_cmp(s.lbl, s.st, s.r) c', '^Materialize>(.*>)?Aggregate\[Sorted') AS material_over_sorted;
BEGIN;
SET LOCAL spillagg.work_mem = 64;
DECLARE ps_c SCROLL CURSOR FOR
  SELECT s.lbl, c.aggs, c.keys, c.bad, c.failed FROM (:q) s, LATERAL ps_cmp(s.lbl, s.st, s.r) c;
FETCH ABSOLUTE 12 FROM ps_c;
FETCH BACKWARD 3 FROM ps_c;
FETCH ABSOLUTE 1 FROM ps_c;
FETCH FORWARD 2 FROM ps_c;
FETCH RELATIVE 5 FROM ps_c;
MOVE LAST IN ps_c;
FETCH BACKWARD 1 FROM ps_c;
COMMIT;
RESET enable_hashagg;

-- G. Prepared statements executed 8 times, the budget alternating (custom
-- plans, then the cached generic plan), and a LATERAL rescan with a plan
-- forced generic (plan_cache_mode = force_generic_plan), 7 times.
SELECT format($q$SELECT 'g' || g AS lbl, %s AS r, 'core' AS st FROM ps GROUP BY g HAVING count(*) > $1$q$, ps_list('core', 'one')) AS q \gset
PREPARE ps_p(int) AS SELECT (v).* FROM (SELECT ps_verdict(lbl, r, st, NULL) v FROM (:q) s) x;
SET spillagg.work_mem = 64;
EXECUTE ps_p(0);
SET spillagg.work_mem = -1;
EXECUTE ps_p(0);
SET spillagg.work_mem = 64;
EXECUTE ps_p(450);
SET spillagg.work_mem = -1;
EXECUTE ps_p(900);
SET spillagg.work_mem = 64;
EXECUTE ps_p(0);
SET spillagg.work_mem = -1;
EXECUTE ps_p(450);
SET spillagg.work_mem = 64;
EXECUTE ps_p(900);
SET spillagg.work_mem = 64;
EXECUTE ps_p(0);
RESET spillagg.work_mem;
SELECT ps_has('EXECUTE ps_p(0)', 'Aggregate\[Hashed') AS hashed_plan;
DEALLOCATE ps_p;
SET plan_cache_mode = force_generic_plan;
SET enable_sort = off;
SELECT format($q$SELECT 'g' || s.g AS lbl, s.r, 'core' AS st FROM ps_o o,
  LATERAL (SELECT g, %s AS r FROM ps GROUP BY g HAVING count(*) > o.lim + $1) s$q$, ps_list('core', 'one')) AS q \gset
PREPARE ps_p(int) AS SELECT (v).* FROM (SELECT ps_verdict(lbl, r, st, NULL) v FROM (:q) s) x;
SELECT ps_has('EXECUTE ps_p(0)', 'Nested Loop>(Subquery Scan>)?Aggregate\[Hashed') AS generic_hashed_rescan;
SET spillagg.work_mem = 64;
EXECUTE ps_p(0);
SET spillagg.work_mem = -1;
EXECUTE ps_p(0);
SET spillagg.work_mem = 64;
EXECUTE ps_p(100);
SET spillagg.work_mem = -1;
EXECUTE ps_p(-100);
SET spillagg.work_mem = 64;
EXECUTE ps_p(0);
SET spillagg.work_mem = 64;
EXECUTE ps_p(500);
SET spillagg.work_mem = -1;
EXECUTE ps_p(0);
RESET spillagg.work_mem;
DEALLOCATE ps_p;
RESET enable_sort;
RESET plan_cache_mode;

-- H. FILTER (WHERE h = 1) on every call, per g: hashed, then sorted.
SELECT format($q$SELECT 'g' || g || 'h1' AS lbl, %s AS r, 'core' AS st FROM ps GROUP BY g$q$, ps_list('core', 'filter')) AS q \gset
SET enable_sort = off;
SELECT ps_has(:'q', '^Aggregate\[Hashed') AS hashed;
SET spillagg.work_mem = 64;
SELECT spills AS s0 FROM spillagg_stats() \gset
SELECT (v).* FROM (SELECT ps_verdict(lbl, r, st, :s0) v FROM (:q) s) x;
RESET spillagg.work_mem;
SELECT spills AS s0 FROM spillagg_stats() \gset
SELECT (v).* FROM (SELECT ps_verdict(lbl, r, st, :s0) v FROM (:q) s) x;
RESET spillagg.work_mem;
RESET enable_sort;
SET enable_hashagg = off;
SELECT ps_has(:'q', '^Aggregate\[Sorted') AS sorted;
SET spillagg.work_mem = 64;
SELECT spills AS s0 FROM spillagg_stats() \gset
SELECT (v).* FROM (SELECT ps_verdict(lbl, r, st, :s0) v FROM (:q) s) x;
RESET spillagg.work_mem;
SELECT spills AS s0 FROM spillagg_stats() \gset
SELECT (v).* FROM (SELECT ps_verdict(lbl, r, st, :s0) v FROM (:q) s) x;
RESET spillagg.work_mem;
RESET enable_hashagg;

-- I. ORDER BY inside every call (same answers), then DISTINCT (answers over
-- the distinct arguments: count_map(DISTINCT k) is 1 per key, sum_map(DISTINCT
-- k, v) sums the distinct (k, v) pairs, top_k(DISTINCT k, n) the n smallest
-- keys), per g (sorted: PostgreSQL does not hash aggregates with DISTINCT
-- or ORDER BY; it sorts each group's input for them), and DISTINCT without
-- GROUP BY over g = 0.
SELECT format($q$SELECT 'g' || g AS lbl, %s AS r, 'core' AS st FROM ps GROUP BY g$q$, ps_list('core', 'orderby')) AS q \gset
SELECT ps_has(:'q', '^Aggregate\[Sorted') AS sorted;
SET spillagg.work_mem = 64;
SELECT spills AS s0 FROM spillagg_stats() \gset
SELECT (v).* FROM (SELECT ps_verdict(lbl, r, st, :s0) v FROM (:q) s) x;
RESET spillagg.work_mem;
SELECT spills AS s0 FROM spillagg_stats() \gset
SELECT (v).* FROM (SELECT ps_verdict(lbl, r, st, :s0) v FROM (:q) s) x;
RESET spillagg.work_mem;
SELECT format($q$SELECT 'g' || g AS lbl, %s AS r, 'dcore' AS st FROM ps GROUP BY g$q$, ps_list('dcore', 'distinct')) AS q \gset
SELECT ps_has(:'q', '^Aggregate\[Sorted') AS sorted;
SET spillagg.work_mem = 64;
SELECT spills AS s0 FROM spillagg_stats() \gset
SELECT (v).* FROM (SELECT ps_verdict(lbl, r, st, :s0) v FROM (:q) s) x;
RESET spillagg.work_mem;
SELECT spills AS s0 FROM spillagg_stats() \gset
SELECT (v).* FROM (SELECT ps_verdict(lbl, r, st, :s0) v FROM (:q) s) x;
RESET spillagg.work_mem;
SELECT format($q$SELECT 'g0' AS lbl, %s AS r, 'dcore' AS st FROM ps WHERE g = 0$q$, ps_list('dcore', 'distinct')) AS q \gset
SELECT ps_has(:'q', '^Aggregate\[Plain') AS plain;
SET spillagg.work_mem = 64;
SELECT spills AS s0 FROM spillagg_stats() \gset
SELECT (v).* FROM (SELECT ps_verdict(lbl, r, st, :s0) v FROM (:q) s) x;
RESET spillagg.work_mem;
SELECT spills AS s0 FROM spillagg_stats() \gset
SELECT (v).* FROM (SELECT ps_verdict(lbl, r, st, :s0) v FROM (:q) s) x;
RESET spillagg.work_mem;

-- J. Parallel plans: partial states in two workers and the leader, serialized,
-- combined in the leader (Finalize).  spilled counts the leader only.
SET parallel_setup_cost = 0;
SET parallel_tuple_cost = 0;
SET min_parallel_table_scan_size = 0;
SET max_parallel_workers_per_gather = 2;
-- J1: whole table, all 66 calls.
SELECT format($q$SELECT '*' AS lbl, %s AS r, 'all' AS st FROM ps$q$, ps_list('all', 'one')) AS q \gset
SELECT ps_has(:'q', '^Aggregate\[Plain/Finalize\]>Gather>(.*>)?Aggregate\[Plain/Partial') AS parallel_plain;
SET spillagg.work_mem = 64;
SELECT spills AS s0 FROM spillagg_stats() \gset
SELECT (v).* FROM (SELECT ps_verdict(lbl, r, st, :s0) v FROM (:q) s) x;
RESET spillagg.work_mem;
SELECT spills AS s0 FROM spillagg_stats() \gset
SELECT (v).* FROM (SELECT ps_verdict(lbl, r, st, :s0) v FROM (:q) s) x;
RESET spillagg.work_mem;
-- J2: per g, hashed (Finalize HashAggregate) then sorted (Gather Merge).
SELECT format($q$SELECT 'g' || g AS lbl, %s AS r, 'core' AS st FROM ps GROUP BY g$q$, ps_list('core', 'one')) AS q \gset
SET enable_sort = off;
SELECT ps_has(:'q', '^Aggregate\[Hashed/Finalize\]>Gather>(.*>)?Aggregate\[Hashed/Partial') AS parallel_hashed;
SET spillagg.work_mem = 64;
SELECT bool_or((node ->> 'Workers Launched')::int > 0) AS workers_launched FROM ps_nodes(:'q', true);
SET spillagg.work_mem = 64;
SELECT spills AS s0 FROM spillagg_stats() \gset
SELECT (v).* FROM (SELECT ps_verdict(lbl, r, st, :s0) v FROM (:q) s) x;
RESET spillagg.work_mem;
SELECT spills AS s0 FROM spillagg_stats() \gset
SELECT (v).* FROM (SELECT ps_verdict(lbl, r, st, :s0) v FROM (:q) s) x;
RESET spillagg.work_mem;
RESET enable_sort;
SET enable_hashagg = off;
SELECT ps_has(:'q', '^Aggregate\[Sorted/Finalize\]>(.*>)?Gather Merge>(.*>)?Aggregate\[Sorted/Partial') AS parallel_sorted;
SET spillagg.work_mem = 64;
SELECT spills AS s0 FROM spillagg_stats() \gset
SELECT (v).* FROM (SELECT ps_verdict(lbl, r, st, :s0) v FROM (:q) s) x;
RESET spillagg.work_mem;
SELECT spills AS s0 FROM spillagg_stats() \gset
SELECT (v).* FROM (SELECT ps_verdict(lbl, r, st, :s0) v FROM (:q) s) x;
RESET spillagg.work_mem;
RESET enable_hashagg;
-- J3: two-step in parallel: X_final(X_state(...)) over ps, then
-- X_final(rollup(...)) over ps_st.
SELECT format($q$SELECT '*' AS lbl, %s AS r, 'core' AS st FROM ps$q$, ps_list('core', 'state')) AS q \gset
SELECT ps_has(:'q', 'Gather>(.*>)?Aggregate\[Plain/Partial') AS parallel_state;
SET spillagg.work_mem = 64;
SELECT spills AS s0 FROM spillagg_stats() \gset
SELECT (v).* FROM (SELECT ps_verdict(lbl, r, st, :s0) v FROM (:q) s) x;
RESET spillagg.work_mem;
SELECT spills AS s0 FROM spillagg_stats() \gset
SELECT (v).* FROM (SELECT ps_verdict(lbl, r, st, :s0) v FROM (:q) s) x;
RESET spillagg.work_mem;
SELECT format($q$SELECT '*' AS lbl, %s AS r, 'all' AS st FROM ps_st$q$, ps_list('all', 'rollup')) AS q \gset
SELECT ps_has(:'q', 'Gather>(.*>)?Aggregate\[Plain/Partial') AS parallel_rollup;
SET spillagg.work_mem = 64;
SELECT spills AS s0 FROM spillagg_stats() \gset
SELECT (v).* FROM (SELECT ps_verdict(lbl, r, st, :s0) v FROM (:q) s) x;
RESET spillagg.work_mem;
SELECT spills AS s0 FROM spillagg_stats() \gset
SELECT (v).* FROM (SELECT ps_verdict(lbl, r, st, :s0) v FROM (:q) s) x;
RESET spillagg.work_mem;
-- J4: a LATERAL rescan (HAVING, hashed) of an aggregation over a Gather.
SELECT format($q$SELECT 'g' || s.g AS lbl, s.r, 'core' AS st FROM ps_o o,
  LATERAL (SELECT g, %s AS r FROM ps GROUP BY g HAVING count(*) > o.lim) s$q$, ps_list('core', 'one')) AS q \gset
SET enable_sort = off;
SELECT ps_has(:'q', 'Nested Loop>(Subquery Scan>)?Aggregate\[Hashed[^>]*>(.*>)?Gather') AS rescan_over_gather;
SET spillagg.work_mem = 64;
SELECT spills AS s0 FROM spillagg_stats() \gset
SELECT (v).* FROM (SELECT ps_verdict(lbl, r, st, :s0) v FROM (:q) s) x;
RESET spillagg.work_mem;
SELECT spills AS s0 FROM spillagg_stats() \gset
SELECT (v).* FROM (SELECT ps_verdict(lbl, r, st, :s0) v FROM (:q) s) x;
RESET spillagg.work_mem;
RESET enable_sort;
RESET parallel_setup_cost;
RESET parallel_tuple_cost;
RESET min_parallel_table_scan_size;
SET max_parallel_workers_per_gather = 0;

-- K. Partitionwise aggregation over ps partitioned by h (3 partitions), one
-- process: per g (not the partition key) a Partial Aggregate per partition
-- and a Finalize above the Append (serialize, deserialize, combine); per h a
-- whole aggregation per partition; the whole table.
CREATE TABLE ps_part (LIKE ps) PARTITION BY LIST (h);
CREATE TABLE ps_part0 PARTITION OF ps_part FOR VALUES IN (0);
CREATE TABLE ps_part1 PARTITION OF ps_part FOR VALUES IN (1);
CREATE TABLE ps_part2 PARTITION OF ps_part FOR VALUES IN (2);
INSERT INTO ps_part SELECT * FROM ps;
ANALYZE ps_part;
SET enable_partitionwise_aggregate = on;
SELECT format($q$SELECT 'g' || g AS lbl, %s AS r, 'core' AS st FROM ps_part GROUP BY g$q$, ps_list('core', 'one')) AS q \gset
SELECT ps_has(:'q', '^Aggregate\[\w+/Finalize\]>(.*>)?Append>(.*>)?Aggregate\[\w+/Partial') AS partial_per_partition,
       ps_has(:'q', 'Gather') AS parallel;
SET spillagg.work_mem = 64;
SELECT spills AS s0 FROM spillagg_stats() \gset
SELECT (v).* FROM (SELECT ps_verdict(lbl, r, st, :s0) v FROM (:q) s) x;
RESET spillagg.work_mem;
SELECT spills AS s0 FROM spillagg_stats() \gset
SELECT (v).* FROM (SELECT ps_verdict(lbl, r, st, :s0) v FROM (:q) s) x;
RESET spillagg.work_mem;
SET enable_sort = off;
SELECT ps_has(:'q', '^Aggregate\[Hashed/Finalize\]>(.*>)?Append>(.*>)?Aggregate\[Hashed/Partial') AS hashed_partial_per_partition;
SET spillagg.work_mem = 64;
SELECT spills AS s0 FROM spillagg_stats() \gset
SELECT (v).* FROM (SELECT ps_verdict(lbl, r, st, :s0) v FROM (:q) s) x;
RESET spillagg.work_mem;
RESET enable_sort;
SET enable_hashagg = off;
SELECT ps_has(:'q', '^Aggregate\[Sorted/Finalize\]>(.*>)?(Merge )?Append>(.*>)?Aggregate\[Sorted/Partial') AS sorted_partial_per_partition;
SET spillagg.work_mem = 64;
SELECT spills AS s0 FROM spillagg_stats() \gset
SELECT (v).* FROM (SELECT ps_verdict(lbl, r, st, :s0) v FROM (:q) s) x;
RESET spillagg.work_mem;
RESET enable_hashagg;
SELECT format($q$SELECT 'h' || h AS lbl, %s AS r, 'core' AS st FROM ps_part GROUP BY h$q$, ps_list('core', 'one')) AS q \gset
SELECT ps_has(:'q', '^Append>(.*>)?Aggregate\[\w+/Simple') AS aggregate_per_partition;
SET spillagg.work_mem = 64;
SELECT spills AS s0 FROM spillagg_stats() \gset
SELECT (v).* FROM (SELECT ps_verdict(lbl, r, st, :s0) v FROM (:q) s) x;
RESET spillagg.work_mem;
SELECT spills AS s0 FROM spillagg_stats() \gset
SELECT (v).* FROM (SELECT ps_verdict(lbl, r, st, :s0) v FROM (:q) s) x;
RESET spillagg.work_mem;
SELECT format($q$SELECT '*' AS lbl, %s AS r, 'core' AS st FROM ps_part$q$, ps_list('core', 'one')) AS q \gset
SELECT ps_has(:'q', '^Aggregate\[Plain/Finalize\]>(.*>)?Append>(.*>)?Aggregate\[Plain/Partial') AS partial_per_partition;
SET spillagg.work_mem = 64;
SELECT spills AS s0 FROM spillagg_stats() \gset
SELECT (v).* FROM (SELECT ps_verdict(lbl, r, st, :s0) v FROM (:q) s) x;
RESET spillagg.work_mem;
SELECT spills AS s0 FROM spillagg_stats() \gset
SELECT (v).* FROM (SELECT ps_verdict(lbl, r, st, :s0) v FROM (:q) s) x;
RESET spillagg.work_mem;
RESET enable_partitionwise_aggregate;

-- L. PostgreSQL's own HashAggregate spilling to disk (work_mem = 64kB: its
-- hash table holds a few of the 50 groups m; the rest of the input goes to
-- batches read back later, the table emptied in between), then sorted
-- (50 GroupAggregate groups one after the other).  The default budget is
-- work_mem x hash_mem_multiplier = 128 kB here, so spillagg spills too.
SELECT format($q$SELECT 'm' || m AS lbl, %s AS r, 'core' AS st FROM ps GROUP BY m$q$, ps_list('core', 'one')) AS q \gset
SET work_mem = '64kB';
SET enable_sort = off;
SELECT bool_or((node ->> 'HashAgg Batches')::int > 1) AS hashagg_spilled FROM ps_nodes(:'q', true);
SET spillagg.work_mem = 64;
SELECT spills AS s0 FROM spillagg_stats() \gset
SELECT (v).* FROM (SELECT ps_verdict(lbl, r, st, :s0) v FROM (:q) s) x;
RESET spillagg.work_mem;
SELECT spills AS s0 FROM spillagg_stats() \gset
SELECT (v).* FROM (SELECT ps_verdict(lbl, r, st, :s0) v FROM (:q) s) x;
RESET spillagg.work_mem;
RESET enable_sort;
SET enable_hashagg = off;
SELECT ps_has(:'q', '^Aggregate\[Sorted') AS sorted;
SET spillagg.work_mem = 64;
SELECT spills AS s0 FROM spillagg_stats() \gset
SELECT (v).* FROM (SELECT ps_verdict(lbl, r, st, :s0) v FROM (:q) s) x;
RESET spillagg.work_mem;
SELECT spills AS s0 FROM spillagg_stats() \gset
SELECT (v).* FROM (SELECT ps_verdict(lbl, r, st, :s0) v FROM (:q) s) x;
RESET spillagg.work_mem;
RESET enable_hashagg;
SET work_mem = '32MB';

-- No temp file is left behind.
SELECT count(*) AS leftover_temp_files FROM pg_ls_tmpdir();
