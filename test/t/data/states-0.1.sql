-- The data of test/t/006_upgrade.pl and the stored states spillagg 0.1 made
-- of it (states-0.1.copy, written by a build of the 0.1 release, commit
-- f6fbd29, on PostgreSQL 15):
--   psql -X -f test/t/data/states-0.1.sql -c 'COPY upg_states TO STDOUT' > test/t/data/states-0.1.copy
CREATE TABLE upg_data AS
SELECT i, i % 37 AS k, 'k' || (i % 37) AS ks,
       CASE WHEN i % 13 = 0 THEN NULL ELSE i % 101 - 50 END AS v
FROM generate_series(1, 3000) i;

-- The value of each value type: small multiples of 1/4 for floats, so sums
-- are exact in any order.
CREATE FUNCTION upg_value(vt text) RETURNS text LANGUAGE sql IMMUTABLE AS $$
  SELECT CASE vt WHEN 'real' THEN '(v * 0.25)::real' WHEN 'double precision' THEN '(v * 0.25)::float8'
                 WHEN 'numeric' THEN '(v * 1.25)::numeric' ELSE format('v::%s', vt) END
$$;

CREATE TABLE upg_states (agg text, vt text, state spillagg_state);
INSERT INTO upg_states SELECT 'count_distinct', NULL, count_distinct_state(k) FROM upg_data;
INSERT INTO upg_states SELECT 'count_map', NULL, count_map_state(ks) FROM upg_data;
INSERT INTO upg_states SELECT 'top_k', NULL, top_k_state(ks, 5) FROM upg_data;
DO $$
DECLARE
  a text;
  vt text;
BEGIN
  FOREACH a IN ARRAY ARRAY['sum_map', 'avg_map', 'min_map', 'max_map', 'variance_map', 'var_samp_map',
                           'var_pop_map', 'stddev_map', 'stddev_samp_map', 'stddev_pop_map'] LOOP
    FOREACH vt IN ARRAY ARRAY['smallint', 'integer', 'bigint', 'real', 'double precision', 'numeric'] LOOP
      EXECUTE format('INSERT INTO upg_states SELECT %L, %L, %I(ks, %s) FROM upg_data',
                     a, vt, a || '_state', upg_value(vt));
    END LOOP;
  END LOOP;
END
$$;
