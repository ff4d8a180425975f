-- The README's demo: a spilling query, its answer beside PostgreSQL's own,
-- and this backend's spillagg counters.
\pset footer off
CREATE EXTENSION spillagg;
CREATE TABLE events AS
  SELECT (random() * 300000)::int AS user_id, (ARRAY['view','click','buy'])[1 + (i % 3)] AS kind,
         (random() * 100)::numeric(6,2) AS amount
  FROM generate_series(1, 1000000) i;

SET spillagg.work_mem = 64;            -- 64 kB: forces spills to temp files
SET log_temp_files = 0;                -- show each temp file as it is removed
SET client_min_messages = log;

SELECT count_distinct(user_id) AS spillagg, count(DISTINCT user_id) AS native FROM events;
SELECT kind, sum_map(user_id % 5, amount) AS amount_by_bucket FROM events GROUP BY kind ORDER BY kind;
SELECT top_k(user_id, 3) AS busiest_users FROM events;
RESET client_min_messages;
SELECT * FROM spillagg_stats();
