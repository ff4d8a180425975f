-- Forced spills: with spillagg.work_mem = 64 (kB) the aggregates must write
-- runs to temp files, merge them (in several passes when there are more runs
-- than the merge fan-in) and still give exactly PostgreSQL's answers, the
-- same as with an unlimited budget.
SET client_min_messages = warning;
-- spillagg_stats() counts this backend only: keep all work out of parallel workers.
SET max_parallel_workers_per_gather = 0;

-- spillagg.work_mem exists once the module is loaded (by its first use in
-- this session); before that, SET would only create an unchecked placeholder.
SELECT count_distinct(x) FROM generate_series(1, 3) x;
SHOW spillagg.work_mem;
SET spillagg.work_mem = 63;      -- below the minimum
SET spillagg.work_mem = 64;
SHOW spillagg.work_mem;

-- 100000 rows: uniform int4 (~37000 keys), Zipf-like int8, NULL-laden text,
-- uuid, and numeric with each value spelled at scales 3, 4 and 5.  A second
-- table of 30000 rows has text whose case varies, so that a case-insensitive
-- collation makes one key of each value (ICU calls are slow: keep it small).
SELECT setseed(0.77);
CREATE TABLE sp_data AS
SELECT i, i % 5 AS g5, i % 500 AS g,
       floor(random() * 40000)::int4 AS a,
       floor(exp(random() * ln(100000)))::int8 AS z,
       CASE WHEN random() < 0.3 THEN NULL ELSE md5(floor(random() * 30000)::text) END AS t,
       md5(floor(random() * 30000)::text)::uuid AS u,
       round(floor(random() * 20000)::numeric / 8, i % 3 + 3) AS n
FROM generate_series(1, 100000) i;
ANALYZE sp_data;
CREATE COLLATION sp_ci (provider = icu, locale = 'und-u-ks-level2', deterministic = false);
CREATE TABLE sp_text AS
SELECT i, CASE WHEN random() < 0.5 THEN upper(h) ELSE h END COLLATE sp_ci AS c
FROM (SELECT i, md5(floor(random() * 10000)::text) AS h FROM generate_series(1, 30000) i) s;
ANALYZE sp_text;

-- PostgreSQL's answers.  Maps over numeric and case-insensitive text are
-- compared with their keys normalised (trim_scale / lower), since which
-- spelling of an equality class names the key is not specified.
CREATE TABLE sp_native AS
SELECT (SELECT count(DISTINCT a) FROM sp_data) AS cd_a,
       (SELECT count(DISTINCT z) FROM sp_data) AS cd_z,
       (SELECT count(DISTINCT t) FROM sp_data) AS cd_t,
       (SELECT count(DISTINCT u) FROM sp_data) AS cd_u,
       (SELECT count(DISTINCT n) FROM sp_data) AS cd_n,
       (SELECT count(DISTINCT c) FROM sp_text) AS cd_c,
       (SELECT jsonb_object_agg(x, k) FROM (SELECT a x, count(*) k FROM sp_data GROUP BY 1) s) AS m_a,
       (SELECT jsonb_object_agg(x, k) FROM (SELECT z x, count(*) k FROM sp_data GROUP BY 1) s) AS m_z,
       (SELECT jsonb_object_agg(x, k) FROM (SELECT t x, count(*) k FROM sp_data WHERE t IS NOT NULL GROUP BY 1) s) AS m_t,
       (SELECT jsonb_object_agg(x, k) FROM (SELECT u x, count(*) k FROM sp_data GROUP BY 1) s) AS m_u,
       (SELECT jsonb_object_agg(trim_scale(x), k) FROM (SELECT n x, count(*) k FROM sp_data GROUP BY 1) s) AS m_n,
       (SELECT jsonb_object_agg(lower(x), k) FROM (SELECT c x, count(*) k FROM sp_text GROUP BY 1) s) AS m_c;
SELECT cd_a, cd_z, cd_t, cd_u, cd_n, cd_c,
       (SELECT count(DISTINCT n::text) FROM sp_data) AS n_spellings,
       (SELECT count(DISTINCT c COLLATE "C") FROM sp_text) AS c_spellings
FROM sp_native;

-- The same aggregates at 64 kB; the stats deltas show that they spilled,
-- merged in extra passes (more runs than spills), and stayed in budget.
CREATE TEMP TABLE st0 AS SELECT * FROM spillagg_stats();
CREATE TEMP TABLE sp_low AS
SELECT d.*, c.*
FROM (SELECT count_distinct(a) AS cd_a, count_distinct(z) AS cd_z, count_distinct(t) AS cd_t,
             count_distinct(u) AS cd_u, count_distinct(n) AS cd_n,
             count_map(a) AS m_a, count_map(z) AS m_z, count_map(t) AS m_t, histogram(u) AS m_u,
             count_map(n) AS m_n
      FROM sp_data) d,
     (SELECT count_distinct(c) AS cd_c, count_map(c) AS m_c FROM sp_text) c;
SELECT s.states - st0.states AS states,
       s.spills - st0.spills > 0 AS spilled,
       s.runs - st0.runs > s.spills - st0.spills AS merge_passes,
       s.bytes_written - st0.bytes_written > 0 AS wrote_bytes,
       s.peak_bytes > 0 AND s.peak_bytes <= 64 * 1024 AS peak_within_budget
FROM spillagg_stats() s, st0;
SELECT count(*) AS leftover_temp_files FROM pg_ls_tmpdir();

CREATE FUNCTION sp_norm(m jsonb, f text) RETURNS jsonb LANGUAGE sql AS $$
  SELECT jsonb_object_agg(CASE f WHEN 'trim_scale' THEN trim_scale(key::numeric)::text
                                 WHEN 'lower' THEN lower(key) ELSE key END, value)
  FROM jsonb_each(m) $$;
SELECT l.cd_a = n.cd_a AS cd_a, l.cd_z = n.cd_z AS cd_z, l.cd_t = n.cd_t AS cd_t,
       l.cd_u = n.cd_u AS cd_u, l.cd_n = n.cd_n AS cd_n, l.cd_c = n.cd_c AS cd_c
FROM sp_low l, sp_native n;
SELECT l.m_a = n.m_a AS m_a, l.m_z = n.m_z AS m_z, l.m_t = n.m_t AS m_t, l.m_u = n.m_u AS m_u,
       sp_norm(l.m_n, 'trim_scale') = n.m_n AS m_n, sp_norm(l.m_c, 'lower') = n.m_c AS m_c,
       (SELECT count(*) FROM jsonb_object_keys(l.m_n)) = l.cd_n AS m_n_keys,
       (SELECT count(*) FROM jsonb_object_keys(l.m_c)) = l.cd_c AS m_c_keys
FROM sp_low l, sp_native n;

-- Unlimited budget: no spill, identical results.
SET spillagg.work_mem = 1048576;
CREATE TEMP TABLE st1 AS SELECT * FROM spillagg_stats();
CREATE TEMP TABLE sp_high AS
SELECT d.*, c.*
FROM (SELECT count_distinct(a) AS cd_a, count_distinct(z) AS cd_z, count_distinct(t) AS cd_t,
             count_distinct(u) AS cd_u, count_distinct(n) AS cd_n,
             count_map(a) AS m_a, count_map(z) AS m_z, count_map(t) AS m_t, histogram(u) AS m_u,
             count_map(n) AS m_n
      FROM sp_data) d,
     (SELECT count_distinct(c) AS cd_c, count_map(c) AS m_c FROM sp_text) c;
SELECT s.states - st1.states AS states, s.spills - st1.spills AS spills,
       s.runs - st1.runs AS runs, s.bytes_written - st1.bytes_written AS bytes_written
FROM spillagg_stats() s, st1;
SELECT h.cd_a = l.cd_a AND h.cd_z = l.cd_z AND h.cd_t = l.cd_t AND h.cd_u = l.cd_u
         AND h.cd_n = l.cd_n AND h.cd_c = l.cd_c AS counts_identical,
       h.m_a = l.m_a AND h.m_z = l.m_z AND h.m_t = l.m_t AND h.m_u = l.m_u AS maps_identical,
       sp_norm(h.m_n, 'trim_scale') = sp_norm(l.m_n, 'trim_scale')
         AND sp_norm(h.m_c, 'lower') = sp_norm(l.m_c, 'lower') AS normalised_maps_identical
FROM sp_high h, sp_low l;

-- Per group at 64 kB: 5 groups of 20000 rows (each state spills), sorted
-- and hashed grouping, against the native per-group answers.
SET spillagg.work_mem = 64;
CREATE TABLE sp_native_g5 AS
SELECT g5, d.cd_a, d.cd_t, d.cd_u, mz.m_z, mn.m_n
FROM (SELECT g5, count(DISTINCT a) AS cd_a, count(DISTINCT t) AS cd_t, count(DISTINCT u) AS cd_u
      FROM sp_data GROUP BY g5) d
JOIN (SELECT g5, jsonb_object_agg(z, k) AS m_z
      FROM (SELECT g5, z, count(*) k FROM sp_data GROUP BY 1, 2) s GROUP BY g5) mz USING (g5)
JOIN (SELECT g5, jsonb_object_agg(trim_scale(n), k) AS m_n
      FROM (SELECT g5, n, count(*) k FROM sp_data GROUP BY 1, 2) s GROUP BY g5) mn USING (g5);
SET enable_hashagg = off;
CREATE TEMP TABLE st2 AS SELECT * FROM spillagg_stats();
SELECT count(*) AS groups,
       count(*) FILTER (WHERE a.cd_a IS DISTINCT FROM b.cd_a OR a.cd_t IS DISTINCT FROM b.cd_t
                          OR a.cd_u IS DISTINCT FROM b.cd_u OR a.m_z IS DISTINCT FROM b.m_z
                          OR sp_norm(a.m_n, 'trim_scale') IS DISTINCT FROM b.m_n) AS mismatches
FROM (SELECT g5, count_distinct(a) cd_a, count_distinct(t) cd_t, count_distinct(u) cd_u,
             count_map(z) m_z, count_map(n) m_n
      FROM sp_data GROUP BY g5) a
FULL JOIN sp_native_g5 b USING (g5);
SELECT s.states - st2.states AS states, s.spills - st2.spills > 0 AS spilled,
       s.runs - st2.runs > s.spills - st2.spills AS merge_passes
FROM spillagg_stats() s, st2;
RESET enable_hashagg;
SET enable_sort = off;
CREATE TEMP TABLE st3 AS SELECT * FROM spillagg_stats();
SELECT count(*) AS groups,
       count(*) FILTER (WHERE a.cd_a IS DISTINCT FROM b.cd_a OR a.cd_t IS DISTINCT FROM b.cd_t
                          OR a.cd_u IS DISTINCT FROM b.cd_u OR a.m_z IS DISTINCT FROM b.m_z
                          OR sp_norm(a.m_n, 'trim_scale') IS DISTINCT FROM b.m_n) AS mismatches
FROM (SELECT g5, count_distinct(a) cd_a, count_distinct(t) cd_t, count_distinct(u) cd_u,
             count_map(z) m_z, count_map(n) m_n
      FROM sp_data GROUP BY g5) a
FULL JOIN sp_native_g5 b USING (g5);
SELECT s.states - st3.states AS states, s.spills - st3.spills > 0 AS spilled
FROM spillagg_stats() s, st3;
RESET enable_sort;

-- Many groups (500) at 64 kB, hashed and sorted.
CREATE TABLE sp_native_g AS
SELECT g, d.cd_u, ma.m_a
FROM (SELECT g, count(DISTINCT u) AS cd_u FROM sp_data GROUP BY g) d
JOIN (SELECT g, jsonb_object_agg(a, k) AS m_a
      FROM (SELECT g, a, count(*) k FROM sp_data GROUP BY 1, 2) s GROUP BY g) ma USING (g);
SET enable_hashagg = off;
SELECT count(*) AS groups,
       count(*) FILTER (WHERE a.cd_u IS DISTINCT FROM b.cd_u OR a.m_a IS DISTINCT FROM b.m_a) AS mismatches
FROM (SELECT g, count_distinct(u) cd_u, count_map(a) m_a FROM sp_data GROUP BY g) a
FULL JOIN sp_native_g b USING (g);
RESET enable_hashagg;
SET enable_sort = off;
SELECT count(*) AS groups,
       count(*) FILTER (WHERE a.cd_u IS DISTINCT FROM b.cd_u OR a.m_a IS DISTINCT FROM b.m_a) AS mismatches
FROM (SELECT g, count_distinct(u) cd_u, count_map(a) m_a FROM sp_data GROUP BY g) a
FULL JOIN sp_native_g b USING (g);
RESET enable_sort;

-- Rescans of a spilling aggregate.
SELECT count(*) AS outer_rows,
       count(*) FILTER (WHERE s.cd IS DISTINCT FROM b.cd_a) AS mismatches
FROM generate_series(0, 4) k
CROSS JOIN LATERAL (SELECT count_distinct(a) cd FROM sp_data WHERE g5 = k) s
JOIN sp_native_g5 b ON b.g5 = k;

-- Keys longer than the 8 kB I/O chunk, and keys longer than the whole budget.
CREATE TEMP TABLE sp_long AS
SELECT repeat(md5((i % 300)::text), 320) || i % 300 AS x FROM generate_series(1, 3000) i;
CREATE TEMP TABLE sp_huge AS
SELECT repeat(md5((i % 3)::text), 3200) || i % 3 AS x FROM generate_series(1, 9) i;
CREATE TEMP TABLE st4 AS SELECT * FROM spillagg_stats();
SELECT count_distinct(x) AS cd, count_distinct(x) = (SELECT count(DISTINCT x) FROM sp_long) AS cd_ok,
       count_map(x) = (SELECT jsonb_object_agg(x, k) FROM (SELECT x, count(*) k FROM sp_long GROUP BY 1) s) AS map_ok
FROM sp_long;
SELECT s.spills - st4.spills > 0 AS spilled FROM spillagg_stats() s, st4;
SELECT count_distinct(x) AS cd, count_distinct(x) = (SELECT count(DISTINCT x) FROM sp_huge) AS cd_ok,
       count_map(x) = (SELECT jsonb_object_agg(x, k) FROM (SELECT x, count(*) k FROM sp_huge GROUP BY 1) s) AS map_ok
FROM sp_huge;

-- An error in the middle of a spilling aggregation: the next query works
-- and no temp file is left behind.
CREATE TEMP TABLE st6 AS SELECT * FROM spillagg_stats();
SELECT count_distinct(CASE WHEN i = 90000 THEN 1 / (i - 90000) ELSE a END) FROM sp_data;
SELECT s.spills - st6.spills > 0 AS spilled_before_error FROM spillagg_stats() s, st6;
SELECT count(*) AS leftover_temp_files FROM pg_ls_tmpdir();
SELECT count_distinct(a) = (SELECT cd_a FROM sp_native) AS ok_after_error FROM sp_data;

-- The default budget (-1) is work_mem * hash_mem_multiplier: it spills
-- too when work_mem is small.
RESET spillagg.work_mem;
SET work_mem = '64kB';
CREATE TEMP TABLE st5 AS SELECT * FROM spillagg_stats();
SELECT count_distinct(a) = (SELECT cd_a FROM sp_native) AS cd_ok FROM sp_data;
SELECT s.states - st5.states AS states, s.spills - st5.spills > 0 AS spilled
FROM spillagg_stats() s, st5;
RESET work_mem;
SET spillagg.work_mem = 64;

-- Parallel plans at 64 kB: workers' partial states spill, are serialized and
-- combined in the leader (correctness only: the workers' counters are not
-- this backend's).
SET parallel_setup_cost = 0;
SET parallel_tuple_cost = 0;
SET min_parallel_table_scan_size = 0;
SET max_parallel_workers_per_gather = 2;
SELECT count_distinct(a) = (SELECT cd_a FROM sp_native) AS cd_ok,
       count_map(t) = (SELECT m_t FROM sp_native) AS map_ok
FROM sp_data;
SELECT count(*) AS groups,
       count(*) FILTER (WHERE a.cd_a IS DISTINCT FROM b.cd_a OR a.m_z IS DISTINCT FROM b.m_z
                          OR sp_norm(a.m_n, 'trim_scale') IS DISTINCT FROM b.m_n) AS mismatches
FROM (SELECT g5, count_distinct(a) cd_a, count_map(z) m_z, count_map(n) m_n
      FROM sp_data GROUP BY g5) a
FULL JOIN sp_native_g5 b USING (g5);
SELECT count_distinct(c) = (SELECT cd_c FROM sp_native) AS cd_ok,
       sp_norm(count_map(c), 'lower') = (SELECT m_c FROM sp_native) AS map_ok
FROM sp_text;
RESET parallel_setup_cost;
RESET parallel_tuple_cost;
RESET min_parallel_table_scan_size;
SET max_parallel_workers_per_gather = 0;
-- Batched inserts: a table holding 16k+ keys gathers rows 64 at a time
-- before inserting them (longer keys copied into the batch). At 4MB a
-- table holds ~49k int keys (a 2MB block), so 120k keys spill while
-- batched; per key against GROUP BY, serially and in a spilled parallel plan.
SET spillagg.work_mem = '4MB';
SELECT setseed(0.4321);
CREATE TABLE sp_batch AS
SELECT floor(random() * 120000)::int AS k,
       'batch-key-' || floor(random() * 80000) AS t,
       CASE WHEN random() < 0.02 THEN NULL ELSE floor(random() * 2001 - 1000)::int END AS v,
       CASE WHEN random() < 0.02 THEN NULL ELSE random() * 100 END AS f
FROM generate_series(1, 300000);
ANALYZE sp_batch;
CREATE TABLE sp_batch_native AS
SELECT (SELECT count(DISTINCT k) FROM sp_batch) AS cd_k,
       (SELECT count(DISTINCT t) FROM sp_batch) AS cd_t,
       (SELECT jsonb_object_agg(k, c) FROM (SELECT k, count(*) c FROM sp_batch GROUP BY k) x) AS m_k,
       (SELECT jsonb_object_agg(t, c) FROM (SELECT t, count(*) c FROM sp_batch GROUP BY t) x) AS m_t,
       (SELECT jsonb_object_agg(k, s) FROM (SELECT k, sum(v) s FROM sp_batch GROUP BY k) x) AS s_k,
       (SELECT jsonb_object_agg(t, m) FROM (SELECT t, min(v) m FROM sp_batch GROUP BY t) x) AS min_t,
       (SELECT jsonb_object_agg(k, m) FROM (SELECT k, max(f) m FROM sp_batch GROUP BY k) x) AS max_k;
SELECT spills AS s0 FROM spillagg_stats() \gset
SELECT count_distinct(k) = (SELECT cd_k FROM sp_batch_native) AS cd_k_ok,
       count_distinct(t) = (SELECT cd_t FROM sp_batch_native) AS cd_t_ok,
       count_map(k) = (SELECT m_k FROM sp_batch_native) AS m_k_ok,
       count_map(t) = (SELECT m_t FROM sp_batch_native) AS m_t_ok,
       sum_map(k, v) = (SELECT s_k FROM sp_batch_native) AS s_k_ok,
       min_map(t, v) = (SELECT min_t FROM sp_batch_native) AS min_t_ok,
       max_map(k, f) = (SELECT max_k FROM sp_batch_native) AS max_k_ok
FROM sp_batch;
SELECT spills > :s0 AS spilled FROM spillagg_stats();
-- float variance and avg, per key within 1e-9 relative
SELECT count(*) AS keys,
       count(*) FILTER (WHERE a.key IS NULL OR b.key IS NULL
                        OR (a.value #>> '{}') IS NULL <> (b.var IS NULL)
                        OR abs((a.value #>> '{}')::float8 - b.var) > 1e-9 * greatest(1, abs(b.var))) AS off
FROM jsonb_each((SELECT variance_map(k, f) FROM sp_batch)) a
FULL JOIN (SELECT k::text AS key, variance(f) AS var FROM sp_batch GROUP BY k) b USING (key);
SELECT count(*) AS keys,
       count(*) FILTER (WHERE a.key IS NULL OR b.key IS NULL
                        OR (a.value #>> '{}') IS NULL <> (b.av IS NULL)
                        OR abs((a.value #>> '{}')::float8 - b.av) > 1e-9 * greatest(1, abs(b.av))) AS off
FROM jsonb_each((SELECT avg_map(t, f) FROM sp_batch)) a
FULL JOIN (SELECT t AS key, avg(f) AS av FROM sp_batch GROUP BY t) b USING (key);
SET parallel_setup_cost = 0;
SET parallel_tuple_cost = 0;
SET min_parallel_table_scan_size = 0;
SET max_parallel_workers_per_gather = 2;
SELECT count_distinct(k) = (SELECT cd_k FROM sp_batch_native) AS cd_k_ok,
       count_map(t) = (SELECT m_t FROM sp_batch_native) AS m_t_ok,
       sum_map(k, v) = (SELECT s_k FROM sp_batch_native) AS s_k_ok
FROM sp_batch;
RESET parallel_setup_cost;
RESET parallel_tuple_cost;
RESET min_parallel_table_scan_size;
SET max_parallel_workers_per_gather = 0;
DROP TABLE sp_batch, sp_batch_native;
RESET spillagg.work_mem;
SELECT count(*) AS leftover_temp_files FROM pg_ls_tmpdir();
