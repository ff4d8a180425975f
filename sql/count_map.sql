-- count_map(anyelement) / histogram(anyelement): differential tests against
-- jsonb_object_agg over a native GROUP BY count.
SET client_min_messages = warning;
SET max_parallel_workers_per_gather = 0;  -- parallel plans only where asked for below

-- Small, hand-checkable cases.
SELECT count_map(x % 3) FROM generate_series(1, 10) x;               -- {"0": 3, "1": 4, "2": 3}
SELECT histogram(x % 3) FROM generate_series(1, 10) x;               -- same
SELECT count_map(x) FROM (VALUES ('b'), ('a'), (NULL), ('b'), ('')) v(x);  -- {"": 1, "a": 1, "b": 2}
SELECT count_map(x) FROM (VALUES (-1), (NULL), (-1), (0)) v(x);      -- {"0": 1, "-1": 2} (jsonb key order)
SELECT count_map(7) FROM generate_series(1, 100000);                 -- {"7": 100000}
SELECT count_map(x) IS NULL AS empty_is_null FROM generate_series(1, 0) x;
SELECT count_map(NULL::text) IS NULL AS all_null_is_null FROM generate_series(1, 5);
SELECT histogram(NULL::int8) IS NULL AS all_null_is_null FROM generate_series(1, 5);
SELECT pg_typeof(count_map(1)), pg_typeof(histogram(1));
SELECT jsonb_typeof(count_map(x) -> '1') AS value_type FROM generate_series(1, 3) x;

-- Text keys that need JSON escaping.
CREATE TABLE cm_strings (s text);
INSERT INTO cm_strings VALUES
  ('"quoted"'), ('back\slash'), (E'new\nline'), (E'tab\there'), (E'ctl\x01'),
  (''), (' '), ('ünïcödé'), ('😀'), ('{"not": "json"}'), ('"quoted"'), (''),
  ('😀'), ('😀'), (NULL), ('null'), ('NULL');
SELECT count_map(s) FROM cm_strings;
SELECT count_map(s) = (SELECT jsonb_object_agg(s, c)
                       FROM (SELECT s, count(*) c FROM cm_strings
                             WHERE s IS NOT NULL GROUP BY s) r) AS ok
FROM cm_strings;

-- Test data: uniform random, Zipf-like skew, NULL-laden; int4/int8/text/uuid/numeric.
SELECT setseed(0.1234);
CREATE TABLE cm_data AS
SELECT i,
       i % 500 AS g,
       i % 7 AS g7,
       floor(random() * 40000)::int4 AS r_int4,
       floor(exp(random() * ln(100000)))::int8 AS z_int8,
       CASE WHEN random() < 0.4 OR i % 500 = 13 THEN NULL
            ELSE floor(random() * 30000)::int4 END AS n_int4,
       md5(floor(random() * 40000)::text) AS r_text,
       CASE WHEN random() < 0.2 THEN NULL
            ELSE md5(floor(exp(random() * ln(60000)))::text) END AS z_text,
       md5(floor(random() * 30000)::text)::uuid AS r_uuid,
       round((random() * 300)::numeric, 2) AS r_num
FROM generate_series(1, 100000) i;
ANALYZE cm_data;

-- Whole table: number of keys, total count, equality with the native map.
CREATE TABLE cm_whole AS
SELECT count_map(r_int4) AS r_int4, count_map(z_int8) AS z_int8,
       count_map(n_int4) AS n_int4, count_map(r_text) AS r_text,
       count_map(z_text) AS z_text, count_map(r_uuid) AS r_uuid,
       count_map(r_num) AS r_num, histogram(z_int8) AS h_z_int8
FROM cm_data;
SELECT 'r_int4' AS col, (SELECT count(*) FROM jsonb_object_keys(w.r_int4)) AS keys,
       w.r_int4 = (SELECT jsonb_object_agg(x, c) FROM (SELECT r_int4 x, count(*) c FROM cm_data WHERE r_int4 IS NOT NULL GROUP BY 1) s) AS ok
FROM cm_whole w
UNION ALL
SELECT 'z_int8', (SELECT count(*) FROM jsonb_object_keys(w.z_int8)),
       w.z_int8 = (SELECT jsonb_object_agg(x, c) FROM (SELECT z_int8 x, count(*) c FROM cm_data WHERE z_int8 IS NOT NULL GROUP BY 1) s)
FROM cm_whole w
UNION ALL
SELECT 'n_int4', (SELECT count(*) FROM jsonb_object_keys(w.n_int4)),
       w.n_int4 = (SELECT jsonb_object_agg(x, c) FROM (SELECT n_int4 x, count(*) c FROM cm_data WHERE n_int4 IS NOT NULL GROUP BY 1) s)
FROM cm_whole w
UNION ALL
SELECT 'r_text', (SELECT count(*) FROM jsonb_object_keys(w.r_text)),
       w.r_text = (SELECT jsonb_object_agg(x, c) FROM (SELECT r_text x, count(*) c FROM cm_data WHERE r_text IS NOT NULL GROUP BY 1) s)
FROM cm_whole w
UNION ALL
SELECT 'z_text', (SELECT count(*) FROM jsonb_object_keys(w.z_text)),
       w.z_text = (SELECT jsonb_object_agg(x, c) FROM (SELECT z_text x, count(*) c FROM cm_data WHERE z_text IS NOT NULL GROUP BY 1) s)
FROM cm_whole w
UNION ALL
SELECT 'r_uuid', (SELECT count(*) FROM jsonb_object_keys(w.r_uuid)),
       w.r_uuid = (SELECT jsonb_object_agg(x, c) FROM (SELECT r_uuid x, count(*) c FROM cm_data WHERE r_uuid IS NOT NULL GROUP BY 1) s)
FROM cm_whole w
UNION ALL
SELECT 'r_num', (SELECT count(*) FROM jsonb_object_keys(w.r_num)),
       w.r_num = (SELECT jsonb_object_agg(x, c) FROM (SELECT r_num x, count(*) c FROM cm_data WHERE r_num IS NOT NULL GROUP BY 1) s)
FROM cm_whole w
UNION ALL
SELECT 'histogram', (SELECT count(*) FROM jsonb_object_keys(w.h_z_int8)),
       w.h_z_int8 = w.z_int8
FROM cm_whole w;

-- Total of the counts equals the number of non-NULL rows.
SELECT (SELECT sum(value::bigint) FROM jsonb_each_text(w.n_int4)) AS n_int4_total,
       (SELECT count(n_int4) FROM cm_data) AS native_total
FROM cm_whole w;
-- The heaviest keys of the skewed column (visible sample).
SELECT key, value FROM cm_whole, jsonb_each(z_int8)
ORDER BY value::bigint DESC, key LIMIT 3;
SELECT z_int8 AS key, count(*) AS native FROM cm_data
GROUP BY z_int8 ORDER BY 2 DESC, 1 LIMIT 3;

-- Per group (500 groups; group 13 has only NULL n_int4 so its map is NULL
-- and the native query has no row for it).
CREATE TABLE cm_native_g AS
SELECT g, jsonb_object_agg(r_int4, c) AS r_int4 FROM
  (SELECT g, r_int4, count(*) c FROM cm_data WHERE r_int4 IS NOT NULL GROUP BY 1, 2) s GROUP BY g;
CREATE TABLE cm_native_gn AS
SELECT g, jsonb_object_agg(n_int4, c) AS n_int4 FROM
  (SELECT g, n_int4, count(*) c FROM cm_data WHERE n_int4 IS NOT NULL GROUP BY 1, 2) s GROUP BY g;
CREATE TABLE cm_native_gt AS
SELECT g, jsonb_object_agg(z_text, c) AS z_text FROM
  (SELECT g, z_text, count(*) c FROM cm_data WHERE z_text IS NOT NULL GROUP BY 1, 2) s GROUP BY g;

SET enable_hashagg = off;
EXPLAIN (COSTS OFF) SELECT g, count_map(r_int4) FROM cm_data GROUP BY g;
SELECT count(*) AS groups,
       count(*) FILTER (WHERE a.m IS DISTINCT FROM b.r_int4) AS mismatches
FROM (SELECT g, count_map(r_int4) m FROM cm_data GROUP BY g) a
FULL JOIN cm_native_g b USING (g);
SELECT count(*) AS groups, count(*) FILTER (WHERE a.m IS NULL) AS null_maps,
       count(*) FILTER (WHERE a.m IS DISTINCT FROM b.n_int4) AS mismatches
FROM (SELECT g, count_map(n_int4) m FROM cm_data GROUP BY g) a
FULL JOIN cm_native_gn b USING (g);
SELECT count(*) AS groups,
       count(*) FILTER (WHERE a.m IS DISTINCT FROM b.z_text) AS mismatches
FROM (SELECT g, histogram(z_text) m FROM cm_data GROUP BY g) a
FULL JOIN cm_native_gt b USING (g);
SELECT g, count_map(n_int4) FROM cm_data WHERE g = 13 GROUP BY g;
RESET enable_hashagg;
SET enable_sort = off;
EXPLAIN (COSTS OFF) SELECT g, count_map(r_int4) FROM cm_data GROUP BY g;
SELECT count(*) AS groups,
       count(*) FILTER (WHERE a.m IS DISTINCT FROM b.r_int4) AS mismatches
FROM (SELECT g, count_map(r_int4) m FROM cm_data GROUP BY g) a
FULL JOIN cm_native_g b USING (g);
SELECT count(*) AS groups, count(*) FILTER (WHERE a.m IS NULL) AS null_maps,
       count(*) FILTER (WHERE a.m IS DISTINCT FROM b.n_int4) AS mismatches
FROM (SELECT g, count_map(n_int4) m FROM cm_data GROUP BY g) a
FULL JOIN cm_native_gn b USING (g);
SELECT count(*) AS groups,
       count(*) FILTER (WHERE a.m IS DISTINCT FROM b.z_text) AS mismatches
FROM (SELECT g, histogram(z_text) m FROM cm_data GROUP BY g) a
FULL JOIN cm_native_gt b USING (g);
RESET enable_sort;

-- FILTER and several maps in one query.
SELECT count_map(r_int4) FILTER (WHERE g7 = 2)
         = (SELECT jsonb_object_agg(x, c) FROM (SELECT r_int4 x, count(*) c FROM cm_data WHERE g7 = 2 GROUP BY 1) s) AS filter_ok,
       count_map(g7) AS g7_map
FROM cm_data;

-- Rescans: the aggregate in a correlated subquery.
SELECT count(*) AS outer_rows,
       count(*) FILTER (WHERE s.m IS DISTINCT FROM b.r_int4) AS mismatches
FROM generate_series(0, 20) k
CROSS JOIN LATERAL (SELECT count_map(r_int4) m FROM cm_data WHERE g = k) s
LEFT JOIN cm_native_g b ON b.g = k;

-- Parallel plans: partial aggregation in the workers, states serialized,
-- deserialized and combined in the leader.
SET parallel_setup_cost = 0;
SET parallel_tuple_cost = 0;
SET min_parallel_table_scan_size = 0;
SET max_parallel_workers_per_gather = 2;
EXPLAIN (COSTS OFF) SELECT count_map(r_int4) FROM cm_data;
SELECT count_map(r_int4) = (SELECT r_int4 FROM cm_whole) AS ok_int4,
       count_map(z_text) = (SELECT z_text FROM cm_whole) AS ok_text
FROM cm_data;
SELECT count(*) AS groups,
       count(*) FILTER (WHERE a.m IS DISTINCT FROM b.m) AS mismatches
FROM (SELECT g7, count_map(z_int8) m FROM cm_data GROUP BY g7) a
FULL JOIN (SELECT g7, jsonb_object_agg(z_int8, c) m
           FROM (SELECT g7, z_int8, count(*) c FROM cm_data GROUP BY 1, 2) s GROUP BY g7) b
USING (g7);
RESET parallel_setup_cost;
RESET parallel_tuple_cost;
RESET min_parallel_table_scan_size;
SET max_parallel_workers_per_gather = 0;
