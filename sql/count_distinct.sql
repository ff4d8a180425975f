-- count_distinct(anyelement): differential tests against count(DISTINCT x).
CREATE EXTENSION spillagg;
SET client_min_messages = warning;
SET max_parallel_workers_per_gather = 0;  -- parallel plans only where asked for below

-- Small, hand-checkable cases.
SELECT count_distinct(x) FROM generate_series(1, 10) x;              -- 10
SELECT count_distinct(x % 3) FROM generate_series(1, 10) x;          -- 3
SELECT count_distinct(x) FROM generate_series(1, 0) x;               -- 0 (no rows)
SELECT count_distinct(NULL::int4) FROM generate_series(1, 5);        -- 0 (all NULL)
SELECT count_distinct(x) FROM (VALUES (1), (NULL), (1), (2), (NULL)) v(x);  -- 2
SELECT count_distinct(x) FROM (VALUES ('a'), ('b'), ('a'), (''), (NULL)) v(x);  -- 3
SELECT pg_typeof(count_distinct(1));                                 -- bigint

-- Test data: uniform random, Zipf-like skew, NULL-laden; int4/int8/text/uuid/numeric.
SELECT setseed(0.4242);
CREATE TABLE cd_data AS
SELECT i,
       i % 500 AS g,
       i % 7 AS g7,
       floor(random() * 50000)::int4 AS r_int4,
       floor(exp(random() * ln(100000)))::int8 AS z_int8,
       CASE WHEN random() < 0.4 OR i % 500 = 13 THEN NULL
            ELSE floor(random() * 30000)::int4 END AS n_int4,
       md5(floor(random() * 40000)::text) AS r_text,
       CASE WHEN random() < 0.2 THEN NULL
            ELSE md5(floor(exp(random() * ln(60000)))::text) END AS z_text,
       md5(floor(random() * 30000)::text)::uuid AS r_uuid,
       round((random() * 300)::numeric, 2) AS r_num
FROM generate_series(1, 100000) i;
ANALYZE cd_data;

-- Whole-table: native count plus an equality flag per column.
SELECT count(DISTINCT r_int4) AS native, count_distinct(r_int4) = count(DISTINCT r_int4) AS ok FROM cd_data;
SELECT count(DISTINCT z_int8) AS native, count_distinct(z_int8) = count(DISTINCT z_int8) AS ok FROM cd_data;
SELECT count(DISTINCT n_int4) AS native, count_distinct(n_int4) = count(DISTINCT n_int4) AS ok FROM cd_data;
SELECT count(DISTINCT r_text) AS native, count_distinct(r_text) = count(DISTINCT r_text) AS ok FROM cd_data;
SELECT count(DISTINCT z_text) AS native, count_distinct(z_text) = count(DISTINCT z_text) AS ok FROM cd_data;
SELECT count(DISTINCT r_uuid) AS native, count_distinct(r_uuid) = count(DISTINCT r_uuid) AS ok FROM cd_data;
SELECT count(DISTINCT r_num) AS native, count_distinct(r_num) = count(DISTINCT r_num) AS ok FROM cd_data;

-- Several aggregates in one query, FILTER, DISTINCT and ORDER BY inside the call.
SELECT count_distinct(r_int4) = count(DISTINCT r_int4) AS a,
       count_distinct(r_text) = count(DISTINCT r_text) AS b,
       count_distinct(r_int4) FILTER (WHERE g7 = 3) = count(DISTINCT r_int4) FILTER (WHERE g7 = 3) AS c,
       count_distinct(DISTINCT z_int8) = count(DISTINCT z_int8) AS d,
       count_distinct(r_uuid ORDER BY r_uuid) = count(DISTINCT r_uuid) AS e
FROM cd_data;

-- Per group (500 groups; group 13 has only NULL n_int4), sort-based and hashed,
-- against the native per-group counts computed once.
CREATE TABLE cd_native_g AS
SELECT g, count(DISTINCT r_int4) AS r_int4, count(DISTINCT n_int4) AS n_int4,
       count(DISTINCT z_text) AS z_text, count(DISTINCT r_uuid) AS r_uuid
FROM cd_data GROUP BY g;
SET enable_hashagg = off;
EXPLAIN (COSTS OFF) SELECT g, count_distinct(r_int4) FROM cd_data GROUP BY g;
SELECT count(*) AS groups,
       count(*) FILTER (WHERE a.c IS DISTINCT FROM b.r_int4) AS mismatches
FROM (SELECT g, count_distinct(r_int4) c FROM cd_data GROUP BY g) a
FULL JOIN cd_native_g b USING (g);
SELECT count(*) AS groups,
       count(*) FILTER (WHERE a.c IS DISTINCT FROM b.n_int4) AS mismatches
FROM (SELECT g, count_distinct(n_int4) c FROM cd_data GROUP BY g) a
FULL JOIN cd_native_g b USING (g);
SELECT count(*) AS groups,
       count(*) FILTER (WHERE a.c IS DISTINCT FROM b.z_text) AS mismatches
FROM (SELECT g, count_distinct(z_text) c FROM cd_data GROUP BY g) a
FULL JOIN cd_native_g b USING (g);
SELECT g, count_distinct(n_int4) AS cd, count(DISTINCT n_int4) AS native
FROM cd_data WHERE g IN (12, 13) GROUP BY g ORDER BY g;
RESET enable_hashagg;
SET enable_sort = off;
EXPLAIN (COSTS OFF) SELECT g, count_distinct(r_int4) FROM cd_data GROUP BY g;
SELECT count(*) AS groups,
       count(*) FILTER (WHERE a.c IS DISTINCT FROM b.r_int4) AS mismatches
FROM (SELECT g, count_distinct(r_int4) c FROM cd_data GROUP BY g) a
FULL JOIN cd_native_g b USING (g);
SELECT count(*) AS groups,
       count(*) FILTER (WHERE a.c IS DISTINCT FROM b.n_int4) AS mismatches
FROM (SELECT g, count_distinct(n_int4) c FROM cd_data GROUP BY g) a
FULL JOIN cd_native_g b USING (g);
SELECT count(*) AS groups,
       count(*) FILTER (WHERE a.c IS DISTINCT FROM b.r_uuid) AS mismatches
FROM (SELECT g, count_distinct(r_uuid) c FROM cd_data GROUP BY g) a
FULL JOIN cd_native_g b USING (g);
RESET enable_sort;

-- Grouping sets (ROLLUP).
SELECT count(*) AS grouping_rows,
       count(*) FILTER (WHERE a.c IS DISTINCT FROM b.c) AS mismatches
FROM (SELECT g7, g % 3 AS g3, count_distinct(z_int8) c
      FROM cd_data GROUP BY ROLLUP (g7, g % 3)) a
FULL JOIN (SELECT g7, g % 3 AS g3, count(DISTINCT z_int8) c
      FROM cd_data GROUP BY ROLLUP (g7, g % 3)) b
  ON coalesce(a.g7, -1) = coalesce(b.g7, -1) AND coalesce(a.g3, -1) = coalesce(b.g3, -1);

-- Rescans: the aggregate in a correlated subquery.
SELECT count(*) AS outer_rows,
       count(*) FILTER (WHERE s.cd IS DISTINCT FROM s.native) AS mismatches
FROM generate_series(0, 20) k,
LATERAL (SELECT count_distinct(r_int4) cd, count(DISTINCT r_int4) native
         FROM cd_data WHERE g = k) s;

-- Parallel plans: partial aggregation in the workers, states serialized,
-- deserialized and combined in the leader.
SET parallel_setup_cost = 0;
SET parallel_tuple_cost = 0;
SET min_parallel_table_scan_size = 0;
SET max_parallel_workers_per_gather = 2;  -- forced parallel section
EXPLAIN (COSTS OFF) SELECT count_distinct(r_int4) FROM cd_data;
SELECT count_distinct(r_int4) = (SELECT count(DISTINCT r_int4) FROM cd_data) AS ok_int4,
       count_distinct(r_text) = (SELECT count(DISTINCT r_text) FROM cd_data) AS ok_text
FROM cd_data;
SELECT count(*) AS groups,
       count(*) FILTER (WHERE a.c IS DISTINCT FROM b.c) AS mismatches
FROM (SELECT g7, count_distinct(z_text) c FROM cd_data GROUP BY g7) a
FULL JOIN (SELECT g7, count(DISTINCT z_text) c FROM cd_data GROUP BY g7) b USING (g7);
RESET parallel_setup_cost;
RESET parallel_tuple_cost;
RESET min_parallel_table_scan_size;
SET max_parallel_workers_per_gather = 0;
