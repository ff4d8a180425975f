-- Parallel partial states through temp files (src/pg/parallel_exchange.h):
-- a Partial Aggregate's state of 16k+ records leaves its process as a file in
-- pgsql_tmp<leader pid>.spillagg, which the leader's combine reads and the
-- plan's end deletes.  Answers per key against GROUP BY, with the files proven to be there
-- (saw_exchange), and nothing left after a query, a LIMIT that stops the
-- leader early, or an ERROR while files wait.
SET extra_float_digits = 0;
SELECT setseed(0.2718);
-- 300000 rows: ~150k distinct int keys, ~100k text keys (2% NULL), 4 groups;
-- each of two workers sees far more than 16k keys, overall and per group.
CREATE TABLE ex AS
SELECT floor(random() * 150000)::int AS k,
       CASE WHEN random() < 0.02 THEN NULL ELSE 'ex-' || floor(random() * 100000) END AS t,
       CASE WHEN random() < 0.02 THEN NULL ELSE floor(random() * 2001 - 1000)::int END AS v,
       random() * 100 AS f,
       i % 4 AS g
FROM generate_series(1, 300000) i;
ANALYZE ex;
CREATE TABLE ex_native AS
SELECT (SELECT count(DISTINCT k) FROM ex) AS cd_k,
       (SELECT count(DISTINCT t) FROM ex) AS cd_t,
       (SELECT jsonb_object_agg(t, c) FROM (SELECT t, count(*) c FROM ex WHERE t IS NOT NULL GROUP BY t) x) AS m_t,
       (SELECT jsonb_object_agg(k, s) FROM (SELECT k, sum(v) s FROM ex GROUP BY k) x) AS s_k,
       (SELECT jsonb_object_agg(k, m) FROM (SELECT k, max(f) m FROM ex GROUP BY k) x) AS max_k;

-- The leader's directory, and whether it holds any file now.
CREATE FUNCTION ex_dir() RETURNS text LANGUAGE sql PARALLEL SAFE
AS $$ SELECT 'base/pgsql_tmp/pgsql_tmp' || pg_backend_pid() || '.spillagg' $$;
CREATE FUNCTION ex_files_waiting() RETURNS bool LANGUAGE sql PARALLEL SAFE
AS $$ SELECT count(*) > 0 FROM pg_ls_dir(ex_dir(), true, false) $$;
-- Exchange directories of any backend left in the default temp location.
CREATE FUNCTION ex_leftovers() RETURNS bigint LANGUAGE sql
AS $$ SELECT count(*) FROM pg_ls_dir('base/pgsql_tmp', true, false) d WHERE d LIKE '%.spillagg' $$;

-- saw_exchange(x): true if, when the leader combined a partial row, its
-- directory held a file.  Listed before the spillagg aggregates, its combine
-- runs first for each partial row, while that row's own file still exists.
CREATE FUNCTION ex_false(bool, int) RETURNS bool LANGUAGE sql PARALLEL SAFE AS $$ SELECT false $$;
CREATE FUNCTION ex_saw(a bool, b bool) RETURNS bool LANGUAGE sql PARALLEL SAFE
AS $$ SELECT a OR b OR ex_files_waiting() $$;
CREATE AGGREGATE saw_exchange(int) (SFUNC = ex_false, STYPE = bool, INITCOND = 'false',
                                   COMBINEFUNC = ex_saw, PARALLEL = SAFE);
-- fail_on_combine(x): raises at the leader's first combine, saying whether
-- files were waiting then.
CREATE FUNCTION ex_fail(a bool, b bool) RETURNS bool LANGUAGE plpgsql PARALLEL SAFE AS $$
BEGIN
  RAISE EXCEPTION 'combine failed on purpose (files waiting: %)', ex_files_waiting();
END $$;
CREATE AGGREGATE fail_on_combine(int) (SFUNC = ex_false, STYPE = bool, INITCOND = 'false',
                                      COMBINEFUNC = ex_fail, PARALLEL = SAFE);

SET parallel_setup_cost = 0;
SET parallel_tuple_cost = 0;
SET min_parallel_table_scan_size = 0;
SET max_parallel_workers_per_gather = 2;

-- Whole table, at 1MB (every partial state spills first) and at the default
-- budget.  The files are looked for with the leader out of the scan: how
-- many rows it takes when it takes part depends on timing (then its own
-- partial state goes through a file in PostgreSQL 15, when large enough).
SET parallel_leader_participation = off;
SET spillagg.work_mem = '1MB';
EXPLAIN (COSTS OFF)
SELECT saw_exchange(1), count_distinct(k) FROM ex;
SELECT saw_exchange(1) AS saw_files,
       count_distinct(k) = (SELECT cd_k FROM ex_native) AS cd_k_ok,
       count_distinct(t) = (SELECT cd_t FROM ex_native) AS cd_t_ok,
       count_map(t) = (SELECT m_t FROM ex_native) AS m_t_ok,
       sum_map(k, v) = (SELECT s_k FROM ex_native) AS s_k_ok,
       max_map(k, f) = (SELECT max_k FROM ex_native) AS max_k_ok
FROM ex;
SELECT ex_leftovers() AS leftovers;
RESET spillagg.work_mem;
SELECT saw_exchange(1) AS saw_files,
       count_distinct(k) = (SELECT cd_k FROM ex_native) AS cd_k_ok,
       count_map(t) = (SELECT m_t FROM ex_native) AS m_t_ok,
       sum_map(k, v) = (SELECT s_k FROM ex_native) AS s_k_ok
FROM ex;
SELECT ex_leftovers() AS leftovers;
-- The leader taking part: answers only.
RESET parallel_leader_participation;
SET spillagg.work_mem = '1MB';
SELECT count_distinct(k) = (SELECT cd_k FROM ex_native) AS cd_k_ok,
       sum_map(k, v) = (SELECT s_k FROM ex_native) AS s_k_ok,
       count_map(t) = (SELECT m_t FROM ex_native) AS m_t_ok
FROM ex;
SELECT ex_leftovers() AS leftovers;

-- Per group, hashed and sorted: each group's partial states are large too.
SET parallel_leader_participation = off;
SET spillagg.work_mem = '1MB';
CREATE TABLE ex_native_g AS
SELECT g, count(DISTINCT k) AS cd_k,
       (SELECT jsonb_object_agg(k, s) FROM (SELECT k, sum(v) s FROM ex e WHERE e.g = o.g GROUP BY k) x) AS s_k
FROM ex o GROUP BY g;
-- (Answers are compared outside the aggregating query: a correlated subquery
-- in its target list would make the planner choose a serial plan.)
CREATE VIEW ex_by_g AS
SELECT g, saw_exchange(1) AS saw, count_distinct(k) AS cd_k, sum_map(k, v) AS s_k FROM ex GROUP BY g;
EXPLAIN (COSTS OFF)
SELECT r.g, r.saw, r.cd_k = n.cd_k, r.s_k = n.s_k FROM ex_by_g r JOIN ex_native_g n USING (g) ORDER BY g;
SELECT r.g, r.saw AS saw_files, r.cd_k = n.cd_k AS cd_k_ok, r.s_k = n.s_k AS s_k_ok
FROM ex_by_g r JOIN ex_native_g n USING (g) ORDER BY g;
SET enable_hashagg = off;
EXPLAIN (COSTS OFF)
SELECT r.g, r.saw, r.cd_k = n.cd_k, r.s_k = n.s_k FROM ex_by_g r JOIN ex_native_g n USING (g) ORDER BY g;
SELECT r.g, r.saw AS saw_files, r.cd_k = n.cd_k AS cd_k_ok, r.s_k = n.s_k AS s_k_ok
FROM ex_by_g r JOIN ex_native_g n USING (g) ORDER BY g;
-- LIMIT 1: the leader stops after the first group; the other groups' files
-- were written but never read, and go when the plan ends (not only when
-- the transaction does).
EXPLAIN (COSTS OFF)
SELECT g, count_distinct(k) FROM ex GROUP BY g ORDER BY g LIMIT 1;
BEGIN;
SELECT g, count_distinct(k) AS cd_k FROM ex GROUP BY g ORDER BY g LIMIT 1 \gset first_
SELECT :first_g AS g, :first_cd_k = cd_k AS cd_k_ok FROM ex_native_g WHERE g = :first_g;
SELECT ex_leftovers() AS leftovers_before_commit;
COMMIT;
RESET enable_hashagg;
RESET parallel_leader_participation;

-- A rescan that replays the partial rows: a non-hashed subplan (> ANY) runs
-- again for every outer row without a parameter change, so the Sort above
-- the Gather rewinds and the Finalize Aggregate reads each file again.
SET parallel_leader_participation = off;
SET enable_hashagg = off;
SET enable_gathermerge = off;
SET enable_material = off;
EXPLAIN (COSTS OFF)
SELECT count(*) FILTER (WHERE s.i > ANY (SELECT count_distinct(k) - 58900 FROM ex GROUP BY g))
FROM generate_series(-200, 300, 10) s(i);
SELECT count(*) FILTER (WHERE s.i > ANY (SELECT count_distinct(k) - 58900 FROM ex GROUP BY g)) AS spillagg,
       count(*) FILTER (WHERE s.i > ANY (SELECT count(DISTINCT k) - 58900 FROM ex GROUP BY g)) AS native
FROM generate_series(-200, 300, 10) s(i);
RESET enable_hashagg;
RESET enable_gathermerge;
RESET enable_material;
RESET parallel_leader_participation;
SELECT ex_leftovers() AS leftovers;

-- An ERROR while files wait (the first combine fails, before any spillagg
-- state was read): the abort removes them.
SET parallel_leader_participation = off;
SELECT fail_on_combine(1), count_distinct(k) FROM ex;
SELECT ex_leftovers() AS leftovers;
-- ... and inside a subtransaction, which the outer transaction survives.
BEGIN;
DO $$
BEGIN
  PERFORM fail_on_combine(1), count_distinct(k) FROM ex;
EXCEPTION WHEN raise_exception THEN
  RAISE NOTICE 'caught: %', SQLERRM;
END $$;
SELECT ex_leftovers() AS leftovers_after_subxact;
SELECT count_distinct(k) = (SELECT cd_k FROM ex_native) AS cd_k_ok FROM ex;
COMMIT;
SELECT ex_leftovers() AS leftovers;
RESET parallel_leader_participation;

-- A Finalize Aggregate inside a parallel worker: debug_parallel_query (15:
-- force_parallel_mode) puts the whole plan of a partitionwise aggregation
-- under a single-copy Gather, so the worker reads the files it wrote itself.
CREATE TABLE ex_parted (k int, g int) PARTITION BY LIST ((k % 2));
CREATE TABLE ex_parted_0 PARTITION OF ex_parted FOR VALUES IN (0);
CREATE TABLE ex_parted_1 PARTITION OF ex_parted FOR VALUES IN (1);
INSERT INTO ex_parted SELECT k, g FROM ex;
ANALYZE ex_parted;
SET enable_partitionwise_aggregate = on;
SET parallel_setup_cost = 1e10;
SELECT set_config(CASE WHEN current_setting('server_version_num')::int >= 160000
                       THEN 'debug_parallel_query' ELSE 'force_parallel_mode' END, 'on', false) AS forced;
EXPLAIN (COSTS OFF)
SELECT r.g, r.cd_k = n.cd_k AS cd_k_ok
FROM (SELECT g, count_distinct(k) AS cd_k FROM ex_parted GROUP BY g) r JOIN ex_native_g n USING (g) ORDER BY g;
SELECT r.g, r.cd_k = n.cd_k AS cd_k_ok
FROM (SELECT g, count_distinct(k) AS cd_k FROM ex_parted GROUP BY g) r JOIN ex_native_g n USING (g) ORDER BY g;
SELECT set_config(CASE WHEN current_setting('server_version_num')::int >= 160000
                       THEN 'debug_parallel_query' ELSE 'force_parallel_mode' END, 'off', false) AS forced;
RESET parallel_setup_cost;
RESET enable_partitionwise_aggregate;
SELECT ex_leftovers() AS leftovers;

-- A reference is not a value: input refuses one (key format 2), whatever it
-- names.  Header: "SPAG", format 3, Presence (tag 1), int4 keys, no
-- collation, no value type, k 0, key format 2; then the reference.
SELECT ('\x53504147' || '03' || '01' || '17000000' || '00000000' || '00000000' || '00000000' || '02'
        || repeat('00', 28))::spillagg_state;
SELECT ex_leftovers() AS leftovers;

RESET spillagg.work_mem;
RESET parallel_setup_cost;
RESET parallel_tuple_cost;
RESET min_parallel_table_scan_size;
RESET max_parallel_workers_per_gather;
DROP VIEW ex_by_g;
DROP AGGREGATE saw_exchange(int);
DROP AGGREGATE fail_on_combine(int);
DROP FUNCTION ex_false(bool, int), ex_saw(bool, bool), ex_fail(bool, bool), ex_files_waiting(), ex_dir(),
              ex_leftovers();
DROP TABLE ex, ex_native, ex_native_g, ex_parted;
SELECT count(*) AS leftover_temp_files FROM pg_ls_tmpdir();
