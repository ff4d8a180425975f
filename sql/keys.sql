-- Key-type semantics: the aggregates must use each type's own equality (and
-- collation), exactly as count(DISTINCT x) and GROUP BY x do.
SET client_min_messages = warning;
SET max_parallel_workers_per_gather = 0;
SET DateStyle = 'ISO, MDY';

-- check_keys(tbl, expr, norm): runs count_distinct(expr) and count_map(expr)
-- over tbl and compares them with PostgreSQL's own answers:
--   native   = count(DISTINCT expr)
--   cd_ok    = count_distinct(expr) = native
--   map_ok   = count_map(expr) equals the native map, built from
--              SELECT expr, count(expr) ... GROUP BY expr (count(expr), not
--              "WHERE expr IS NOT NULL", so that composite keys with NULL
--              fields, which are non-NULL values, are kept), with keys as the
--              type's text output (format('%s', key)).
--   map      = count_map(expr) as returned, or with its keys passed through
--              norm when one equality class has several spellings (1 / 1.0,
--              -0 / 0, abc / ABC): norm then maps every spelling of a class
--              to one text, on both sides, before comparing.
CREATE FUNCTION check_keys(tbl text, expr text, norm text DEFAULT NULL,
                           OUT native bigint, OUT cd_ok bool, OUT map_ok bool,
                           OUT map jsonb)
LANGUAGE plpgsql AS $$
DECLARE
  n text := coalesce(norm, '%s');
  native_map jsonb;
BEGIN
  EXECUTE format('SELECT count(DISTINCT %1$s), count_distinct(%1$s) = count(DISTINCT %1$s) FROM %2$s',
                 expr, tbl) INTO native, cd_ok;
  EXECUTE format('SELECT count_map(%1$s) FROM %2$s', expr, tbl) INTO map;
  EXECUTE format($q$SELECT jsonb_object_agg(%3$s, c)
                    FROM (SELECT format('%%s', k) AS k, c
                          FROM (SELECT %1$s AS k, count(%1$s) AS c FROM %2$s
                                GROUP BY 1 HAVING count(%1$s) > 0) s1) s2$q$,
                 expr, tbl, format(n, 'k')) INTO native_map;
  IF norm IS NOT NULL THEN
    EXECUTE format('SELECT jsonb_object_agg(%s, value) FROM jsonb_each($1)', format(n, 'key'))
      INTO map USING map;
  END IF;
  map_ok := map IS NOT DISTINCT FROM native_map;
END $$;

-- Empty input, all-NULL input, NULLs mixed in.
CREATE TABLE k_empty (x int4);
SELECT * FROM check_keys('k_empty', 'x');                               -- 0, NULL map
SELECT * FROM check_keys('generate_series(1, 4) i', 'NULL::text');      -- 0, NULL map
SELECT * FROM check_keys('(VALUES (1), (NULL), (2), (NULL), (1)) v(x)', 'x');
SELECT count_distinct(x), count_map(x) FROM k_empty GROUP BY x;         -- no groups, no rows

-- Integers, including extremes and zero.
CREATE TABLE k_int (x int8);
INSERT INTO k_int VALUES (0), (0), (1), (-1), (32767), (-32768), (2147483647),
  (-2147483648), (9223372036854775807), (-9223372036854775808), (-9223372036854775808), (NULL);
SELECT * FROM check_keys('k_int WHERE x BETWEEN -32768 AND 32767', 'x::int2');
SELECT * FROM check_keys('k_int WHERE x BETWEEN -2147483648 AND 2147483647', 'x::int4');
SELECT * FROM check_keys('k_int', 'x');

-- numeric: one key per value whatever the scale; NaN is one key; no -0.
CREATE TABLE k_num (x numeric);
INSERT INTO k_num VALUES ('1'), ('1.0'), ('1.00'), ('2.5'), ('2.50'), ('NaN'), ('NaN'),
  ('0'), ('-0'), ('0.000'), ('-1.5'), ('1e3'), ('1000.0'), (NULL);
SELECT * FROM check_keys('k_num', 'x', 'trim_scale((%s)::numeric)::text');
SELECT count(*) AS keys,
       bool_and(key IN ('1', '1.0', '1.00', '2.5', '2.50', 'NaN', '0', '0.000',
                        '-1.5', '1000', '1000.0')) AS keys_are_input_spellings
FROM jsonb_each((SELECT count_map(x) FROM k_num));
-- 20000 rows, 5000 values, each spelled with scales 2, 3 and 4 (0.25, 0.250, 0.2500).
CREATE TABLE k_num_big AS
SELECT round((i % 5000)::numeric / 4, i % 3 + 2) AS x FROM generate_series(1, 20000) i;
SELECT count(DISTINCT x::text) AS spellings FROM k_num_big;
SELECT native, cd_ok, map_ok FROM check_keys('k_num_big', 'x', 'trim_scale((%s)::numeric)::text');

-- float8: -0 = 0, every NaN is one key (also NaNs made by arithmetic, whose
-- bits may differ from 'NaN'), infinities, and 0.1+0.2 <> 0.3.
CREATE TABLE k_float (x float8);
INSERT INTO k_float VALUES (0.0), ('-0'), (-0.0::float8 * 1), ('NaN'),
  ('Infinity'::float8 - 'Infinity'::float8), (0 * 'Infinity'::float8),
  ('Infinity'), ('-Infinity'), (1.5), (1.5), (0.3), (0.1::float8 + 0.2::float8), (NULL);
SELECT count(*) AS zeros, count(DISTINCT float8send(x)) AS zero_bit_patterns
FROM k_float WHERE x = 0;
SELECT * FROM check_keys('k_float', 'x', $$CASE WHEN %1$s = '-0' THEN '0' ELSE %1$s END$$);
SELECT * FROM check_keys('k_float', 'x::float4', $$CASE WHEN %1$s = '-0' THEN '0' ELSE %1$s END$$);

-- Text: the key's collation decides equality.
CREATE COLLATION ci (provider = icu, locale = 'und-u-ks-level2', deterministic = false);
CREATE TABLE k_text (x text);
INSERT INTO k_text VALUES ('abc'), ('ABC'), ('Abc'), ('abd'), ('ABD'), ('é'), ('É'), ('e'),
  ('E'), (''), ('straße'), ('STRASSE'), ('strasse'), (NULL), ('abc');
SELECT * FROM check_keys('k_text', 'x COLLATE "C"');
SELECT * FROM check_keys('k_text', 'x COLLATE ci', 'lower(%s COLLATE ci)');
-- A column declared with the collation, no COLLATE clause in the call.
CREATE TABLE k_text_ci (x text COLLATE ci);
INSERT INTO k_text_ci SELECT x FROM k_text;
SELECT * FROM check_keys('k_text_ci', 'x', 'lower(%s COLLATE ci)');
SELECT count_distinct(x) AS ci_default, count_distinct(x COLLATE "C") AS c_explicit FROM k_text_ci;
-- bpchar: trailing blanks are insignificant; varchar and name are bytewise.
SELECT * FROM check_keys($$(VALUES ('a'::bpchar), ('a '), ('a  '), ('b'::char(3)), (' a')) v(x)$$, 'x', 'rtrim(%s)');
SELECT * FROM check_keys($$(VALUES ('a'::bpchar), ('A '), ('a  '), ('b'::char(3)), (' a')) v(x)$$, 'x COLLATE ci', 'lower(rtrim(%s))');
SELECT * FROM check_keys('k_text', 'x::varchar COLLATE "C"');
SELECT native, cd_ok, map_ok FROM check_keys('k_text', 'x::name');
SELECT * FROM check_keys($$(VALUES ('a'::"char"), ('b'), ('a'), (''), (NULL)) v(x)$$, 'x');
-- 20000 rows of 5000 hex strings, each randomly upper- or lower-cased.
SELECT setseed(0.5);
CREATE TABLE k_text_big AS
SELECT CASE WHEN random() < 0.5 THEN upper(md5((i % 5000)::text)) ELSE md5((i % 5000)::text) END AS x
FROM generate_series(1, 20000) i;
SELECT native, cd_ok, map_ok FROM check_keys('k_text_big', 'x COLLATE "C"');
SELECT native, cd_ok, map_ok FROM check_keys('k_text_big', 'x COLLATE ci', 'lower(%s)');

-- uuid
CREATE TABLE k_uuid (x uuid);
INSERT INTO k_uuid VALUES ('00000000-0000-0000-0000-000000000000'),
  ('a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11'), ('A0EEBC99-9C0B-4EF8-BB6D-6BB9BD380A11'),
  ('{a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a12}'), ('ffffffff-ffff-ffff-ffff-ffffffffffff'), (NULL);
SELECT * FROM check_keys('k_uuid', 'x');

-- date, including infinities and BC.
CREATE TABLE k_date (x date);
INSERT INTO k_date VALUES ('2020-01-01'), ('2020-01-01'), ('1999-12-31'), ('infinity'),
  ('-infinity'), ('4713-01-01 BC'), ('2000-02-29'), (NULL);
SELECT * FROM check_keys('k_date', 'x');

-- bool, date and timestamp keys are spelled as jsonb_object_agg spells
-- them (true/false, ISO 8601), so count_map equals the native map itself.
CREATE TABLE k_time (b bool, d date, ts timestamp, tz timestamptz);
INSERT INTO k_time VALUES (true, '2020-01-01', '2020-01-01 10:00', '2020-01-01 10:00+02'),
  (false, '2020-01-01', '2020-01-01 10:00', '2020-01-01 08:00Z'),
  (true, 'infinity', '1999-12-31 23:59:59.5', '-infinity'), (NULL, NULL, NULL, NULL);
SELECT count_map(b) AS bool_map,
       count_map(b) = (SELECT jsonb_object_agg(b, c) FROM (SELECT b, count(*) c FROM k_time WHERE b IS NOT NULL GROUP BY b) s) AS bool_ok,
       count_map(d) = (SELECT jsonb_object_agg(d, c) FROM (SELECT d, count(*) c FROM k_time WHERE d IS NOT NULL GROUP BY d) s) AS date_ok,
       count_map(ts) = (SELECT jsonb_object_agg(ts, c) FROM (SELECT ts, count(*) c FROM k_time WHERE ts IS NOT NULL GROUP BY ts) s) AS ts_ok,
       count_map(tz) = (SELECT jsonb_object_agg(tz, c) FROM (SELECT tz, count(*) c FROM k_time WHERE tz IS NOT NULL GROUP BY tz) s) AS tz_ok,
       count_map(ts) AS ts_map
FROM k_time;

-- interval: '1 day' = '24 hours' and '1 mon' = '30 days' under interval equality.
CREATE TABLE k_interval (x interval);
INSERT INTO k_interval VALUES ('1 day'), ('24 hours'), ('1 mon'), ('30 days'), ('720 hours'),
  ('1 hour'), ('60 minutes'), ('00:00'), (NULL);
SELECT native, cd_ok FROM check_keys('k_interval', 'x');
SELECT * FROM check_keys('k_interval', 'x', 'extract(epoch from (%s)::interval)::text');

-- jsonb: '1' = '1.0' and {"a": 1} = {"a": 1.00} under jsonb equality.
CREATE TABLE k_jsonb (x jsonb);
INSERT INTO k_jsonb VALUES ('1'), ('1.0'), ('{"a": 1}'), ('{"a": 1.00}'), ('[1, 2]'),
  ('[2, 1]'), ('"x"'), ('null'), (NULL);
SELECT * FROM check_keys('k_jsonb', 'x', $$regexp_replace(%s, '\.0+\M', '', 'g')$$);

-- Enum and domain keys.
CREATE TYPE k_mood AS ENUM ('sad', 'ok', 'happy');
SELECT * FROM check_keys($$(VALUES ('ok'::k_mood), ('sad'), ('ok'), (NULL)) v(x)$$, 'x');
CREATE DOMAIN k_posint AS int4 CHECK (VALUE > 0);
SELECT * FROM check_keys('(VALUES (1::k_posint), (2), (1)) v(x)', 'x');

-- Composite keys: named type, with NULL fields (non-NULL values) and NULLs.
CREATE TYPE k_pair AS (a int4, b text);
CREATE TABLE k_comp (x k_pair);
INSERT INTO k_comp VALUES (ROW(1, 'a')), (ROW(1, 'a')), (ROW(1, 'b')), (ROW(2, 'a')),
  (ROW(1, NULL)), (ROW(1, NULL)), (ROW(NULL, NULL)), (NULL), (ROW(NULL, NULL)), (ROW(10, 'x y'));
SELECT * FROM check_keys('k_comp', 'x');
-- Anonymous records built in the query.
CREATE TABLE k_ab (a int4, b text);
INSERT INTO k_ab VALUES (1, 'a'), (1, 'a'), (1, 'b'), (2, 'a'), (2, NULL), (NULL, NULL);
SELECT * FROM check_keys('k_ab', 'ROW(a, b)');
SELECT * FROM check_keys('k_ab', 'ROW(a, b)::k_pair');

-- Arrays: element order, NULL elements, dimensions and lower bounds all
-- matter ('{1,2}', '{{1,2}}' and '[0:1]={1,2}' are different keys that
-- share their hash).
CREATE TABLE k_arr (x int4[]);
INSERT INTO k_arr VALUES ('{1,2}'), ('{1,2}'), ('{2,1}'), ('{}'), ('{NULL}'), ('{NULL}'),
  ('{1,NULL}'), ('{{1,2}}'), ('[0:1]={1,2}'), (NULL);
SELECT * FROM check_keys('k_arr', 'x');
SELECT * FROM check_keys($$(VALUES ('{a,B}'::text[]), ('{A,b}'), ('{a,b,c}')) v(x)$$, 'x COLLATE ci', 'lower(%s)');

-- Varlena representations: short (1-byte) headers from a table vs 4-byte
-- headers from expressions, compressed inline values, out-of-line TOAST.
CREATE TABLE k_short (x text, n numeric);
INSERT INTO k_short SELECT 'key' || (i % 100), (i % 100)::numeric / 8 FROM generate_series(1, 1000) i;
SELECT count_distinct(x) AS text_keys, count_distinct(n) AS num_keys
FROM (SELECT x, n FROM k_short UNION ALL SELECT x || '', n + 0 FROM k_short) s;   -- 100, 100
SELECT count_map(x) = (SELECT jsonb_object_agg(x, 20) FROM (SELECT DISTINCT x FROM k_short) d) AS ok
FROM (SELECT x FROM k_short UNION ALL SELECT x || '' FROM k_short) s;
CREATE TABLE k_long_c (x text);           -- compressible: stored compressed inline
CREATE TABLE k_long_e (x text);           -- EXTERNAL: out of line, uncompressed
ALTER TABLE k_long_e ALTER COLUMN x SET STORAGE EXTERNAL;
INSERT INTO k_long_c SELECT repeat('ab', 3000) || (i % 50) FROM generate_series(1, 400) i;
INSERT INTO k_long_e SELECT repeat('ab', 3000) || (i % 50) FROM generate_series(1, 400) i;
SELECT (SELECT count(*) FROM k_long_c WHERE pg_column_size(x) < 1000) AS compressed_rows,
       (SELECT count(*) FROM k_long_e WHERE pg_column_size(x) > 6000) AS external_rows;
SELECT native, cd_ok, map_ok FROM check_keys('k_long_c', 'x');
SELECT native, cd_ok, map_ok FROM check_keys('k_long_e', 'x');
SELECT count_distinct(x) AS mixed_keys           -- 50
FROM (SELECT x FROM k_long_c UNION ALL SELECT x FROM k_long_e
      UNION ALL SELECT repeat('ab', 3000) || (i % 50) FROM generate_series(1, 100) i) s;

-- Types without a default hash opclass are rejected.
SELECT count_distinct(point(x, x)) FROM generate_series(1, 3) x;
SELECT count_map(x::json) FROM (VALUES ('1')) v(x);

-- Not usable as window functions.
SELECT count_distinct(x) OVER () FROM generate_series(1, 3) x;
SELECT count_map(x) OVER (ORDER BY x) FROM generate_series(1, 3) x;
SELECT histogram(x) OVER (PARTITION BY x % 2) FROM generate_series(1, 3) x;
