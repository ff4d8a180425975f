-- Keys of every shape (TOASTed and compressed, every short length, lengths
-- around the varlena and TOAST limits, bpchar, nondeterministic collations,
-- numerics and floats spelled differently, composites, arrays, NULLs inside
-- composites and arrays), with forced spills (spillagg.work_mem = 64) and
-- without, checked key by key against PostgreSQL's own GROUP BY.
SET client_min_messages = warning;
CREATE EXTENSION IF NOT EXISTS spillagg;
SET max_parallel_workers_per_gather = 0;  -- spillagg_stats() counts this backend only
SET DateStyle = 'ISO, MDY';
SET extra_float_digits = 1;
SET bytea_output = 'hex';

-- ks_make(tbl, keys, reps, filler, storage) creates tbl(i, g, k, v): every
-- key of the query `keys` repeated reps times, and every row of the query
-- `filler` (more keys of the same type, so that 64 kB spills), in an order
-- scrambled by md5 so that the rows of one key meet in different runs;
-- g = i % 5 (the GROUP BY groups), v = a numeric of scale 2.  storage, if
-- given, is the k column's STORAGE, set before the rows are inserted.
CREATE FUNCTION ks_make(tbl text, keys text, reps int, filler text, storage text DEFAULT NULL)
RETURNS void LANGUAGE plpgsql AS $$
DECLARE
  q text := format($q$
    SELECT i, i %% 5 AS g, k, round((i %% 97) / 4.0, 2) AS v
    FROM (SELECT (row_number() OVER (ORDER BY md5(src || ':' || n)))::int AS i, k
          FROM (SELECT 'a' AS src, row_number() OVER () AS n, k
                FROM (SELECT k FROM (%1$s) a(k), generate_series(1, %2$s) r) x
                UNION ALL
                SELECT 'b', row_number() OVER (), k FROM (%3$s) b(k)) s) t
    ORDER BY i$q$, keys, reps, filler);
BEGIN
  EXECUTE format('CREATE TABLE %I AS %s WITH NO DATA', tbl, q);
  IF storage IS NOT NULL THEN
    EXECUTE format('ALTER TABLE %I ALTER COLUMN k SET STORAGE %s', tbl, storage);
  END IF;
  EXECUTE format('INSERT INTO %I %s', tbl, q);
  EXECUTE format('ANALYZE %I', tbl);
END $$;

-- ks_check(label, src, norm, two_step, n): src is a FROM item with columns
-- i, g, k, v.  For each mode (budget / how groups are formed: hash or sort
-- over GROUP BY g, or one plain aggregate over all rows), it runs in ONE
-- query count_distinct(k), count_map(k), sum_map(k, v) for numeric, float8
-- and int values, top_k(k, n), and compares every group and every key with
-- PostgreSQL's own answer (GROUP BY g, k): keys = the (group, key) pairs
-- compared, then per aggregate the number of mismatching keys (counts,
-- sums) or groups (count_distinct, top_k), missing and extra keys included;
-- an ERROR is shown as ERR and its SQLSTATE.  The two-step path
-- (X_state per group and third of the rows, the states through their text
-- form, rollup per group, X_final) is checked the same way: st_cd, st_cm,
-- st_sum, st_topk.  Keys are compared as their text output passed through
-- norm (a format() pattern over a text expression) when an equality class
-- has several spellings (1.0 / 1.00, -0 / 0, 'a' / 'a ', abc / ABC).
-- Array keys have no top_k (anyarray of an array type does not exist):
-- with_top_k => false, shown as '-'.
CREATE FUNCTION ks_check(label text, src text, norm text DEFAULT '%s', two_step bool DEFAULT true,
                         n int DEFAULT 7, modes text[] DEFAULT '{64/hash,64/sort,64/all,1GB/hash}',
                         with_top_k bool DEFAULT true)
RETURNS TABLE (check_label text, mode text, groups bigint, keys bigint, spilled bool,
               cd text, cm text, sum_n text, sum_f text, sum_i text, topk text,
               st_cd text, st_cm text, st_sum text, st_topk text)
LANGUAGE plpgsql AS $$
DECLARE
  gexpr text;
  grp text;
  spills0 bigint;
  keytype text;
  top_k_call text := CASE WHEN with_top_k THEN format('top_k(k, %s)', n) ELSE 'NULL::int[]' END;
  -- a top_k array (column t) as an array of normalized key texts
  tarr text := format('(SELECT array_agg(%s ORDER BY o) FROM generate_subscripts(t, 1) o)',
                      format(norm, 'format(''%s'', t[o])'));
  -- mismatching keys of map column c of ks_sp against native column c
  cmp text := $q$SELECT count(*) FILTER (WHERE s.v IS NULL OR x.v IS NULL OR s.v::text <> x.v::text)
                       + (SELECT count(*) - count(DISTINCT (g, %2$s)) FROM %3$s, jsonb_each(%1$s))
                  FROM (SELECT g, %2$s AS key, value AS v FROM %3$s, jsonb_each(%3$s.%1$s)) s
                  FULL JOIN (SELECT g, key, %4$s AS v FROM ks_nat) x USING (g, key)$q$;
BEGIN
  check_label := label;
  EXECUTE format('SELECT pg_typeof(k)::text FROM %s LIMIT 1', src) INTO keytype;
  FOREACH mode IN ARRAY modes LOOP
    PERFORM set_config('spillagg.work_mem', split_part(mode, '/', 1), false);
    PERFORM set_config('enable_hashagg', CASE WHEN mode LIKE '%/sort' THEN 'off' ELSE 'on' END, false);
    PERFORM set_config('enable_sort', CASE WHEN mode LIKE '%/hash' THEN 'off' ELSE 'on' END, false);
    IF mode LIKE '%/all' THEN gexpr := '0'; grp := ''; ELSE gexpr := 'g'; grp := 'GROUP BY g'; END IF;

    -- PostgreSQL's answer.
    DROP TABLE IF EXISTS ks_nat, ks_nat_top, ks_sp, ks_st, ks_st2;
    EXECUTE format($q$CREATE TEMP TABLE ks_nat AS
      SELECT g, %1$s AS key, to_jsonb(c) AS c, coalesce(to_jsonb(sn), 'null') AS sn,
             coalesce(to_jsonb(sf), 'null') AS sf, coalesce(to_jsonb(si), 'null') AS si
      FROM (SELECT g, format('%%s', k) AS kt, count(k) AS c, sum(v) AS sn, sum(v::float8) AS sf,
                   sum(v::int) AS si
            FROM (SELECT %2$s AS g, k, v FROM %3$s) s GROUP BY g, k HAVING count(k) > 0) x$q$,
      format(norm, 'kt'), gexpr, src);
    EXECUTE format($q$CREATE TEMP TABLE ks_nat_top AS
      SELECT g, array_agg(%1$s ORDER BY rn) AS t
      FROM (SELECT g, format('%%s', k) AS kt, row_number() OVER (PARTITION BY g ORDER BY count(k) DESC, k) AS rn
            FROM (SELECT %2$s AS g, k FROM %3$s) s GROUP BY g, k HAVING count(k) > 0) x
      WHERE rn <= %4$s GROUP BY g$q$, format(norm, 'kt'), gexpr, src, n);
    SELECT count(DISTINCT x.g), count(*) INTO groups, keys FROM ks_nat x;

    -- spillagg's, all aggregates in one query.
    SELECT s.spills INTO spills0 FROM spillagg_stats() s;
    BEGIN
      EXECUTE format($q$CREATE TEMP TABLE ks_sp AS
        SELECT g, cd, cm, sn, sf, si, %1$s AS t
        FROM (SELECT %2$s AS g, count_distinct(k) AS cd, count_map(k) AS cm, sum_map(k, v) AS sn,
                     sum_map(k, v::float8) AS sf, sum_map(k, v::int) AS si, %5$s AS t
              FROM %3$s %4$s) x$q$, tarr, gexpr, src, grp, top_k_call);
      SELECT s.spills > spills0 INTO spilled FROM spillagg_stats() s;
      -- a plain aggregate over no rows gives one row of NULLs: no group
      DELETE FROM ks_sp x WHERE x.cd = 0 AND x.cm IS NULL;
      EXECUTE format($q$SELECT count(*) FILTER (WHERE s.cd IS DISTINCT FROM x.c)
                        FROM ks_sp s FULL JOIN (SELECT g, count(*) AS c FROM ks_nat GROUP BY g) x USING (g)$q$)
        INTO cd;
      EXECUTE format(cmp, 'cm', format(norm, 'key'), 'ks_sp', 'c') INTO cm;
      EXECUTE format(cmp, 'sn', format(norm, 'key'), 'ks_sp', 'sn') INTO sum_n;
      EXECUTE format(cmp, 'sf', format(norm, 'key'), 'ks_sp', 'sf') INTO sum_f;
      EXECUTE format(cmp, 'si', format(norm, 'key'), 'ks_sp', 'si') INTO sum_i;
      SELECT count(*) FILTER (WHERE s.t IS DISTINCT FROM x.t) INTO topk
      FROM ks_sp s FULL JOIN ks_nat_top x USING (g);
      IF NOT with_top_k THEN topk := '-'; END IF;
    EXCEPTION WHEN OTHERS THEN
      cd := 'ERR ' || SQLSTATE; cm := cd; sum_n := cd; sum_f := cd; sum_i := cd; topk := cd;
    END;

    -- the two-step path
    IF two_step THEN
      BEGIN
        EXECUTE format($q$CREATE TEMP TABLE ks_st AS
          SELECT %1$s AS g, i %% 3 AS p, count_distinct_state(k) AS a, count_map_state(k) AS b,
                 sum_map_state(k, v) AS c, top_k_state(k, %4$s) AS d
          FROM %2$s GROUP BY 1, 2$q$, gexpr, src, grp, n);
        EXECUTE format($q$CREATE TEMP TABLE ks_st2 AS
          SELECT g, cd, cm, sn, %1$s AS t
          FROM (SELECT g, count_distinct_final(rollup(a::text::spillagg_state)) AS cd,
                       count_map_final(rollup(b::text::spillagg_state)) AS cm,
                       sum_map_final(rollup(c::text::spillagg_state)) AS sn,
                       %2$s AS t
                FROM ks_st GROUP BY g) x$q$, tarr,
          CASE WHEN with_top_k THEN format('top_k_final(rollup(d::text::spillagg_state), NULL::%s)', keytype)
               ELSE 'NULL::int[]' END);
        SELECT count(*) FILTER (WHERE s.cd IS DISTINCT FROM x.c) INTO st_cd
        FROM ks_st2 s FULL JOIN (SELECT g, count(*) AS c FROM ks_nat GROUP BY g) x USING (g);
        EXECUTE format(cmp, 'cm', format(norm, 'key'), 'ks_st2', 'c') INTO st_cm;
        EXECUTE format(cmp, 'sn', format(norm, 'key'), 'ks_st2', 'sn') INTO st_sum;
        SELECT count(*) FILTER (WHERE s.t IS DISTINCT FROM x.t) INTO st_topk
        FROM ks_st2 s FULL JOIN ks_nat_top x USING (g);
        IF NOT with_top_k THEN st_topk := '-'; END IF;
      EXCEPTION WHEN OTHERS THEN
        st_cd := 'ERR ' || SQLSTATE; st_cm := st_cd; st_sum := st_cd; st_topk := st_cd;
      END;
    ELSE
      st_cd := '-'; st_cm := '-'; st_sum := '-'; st_topk := '-';
    END IF;
    RETURN NEXT;
  END LOOP;
  PERFORM set_config('spillagg.work_mem', '-1', false);
  PERFORM set_config('enable_hashagg', 'on', false);
  PERFORM set_config('enable_sort', 'on', false);
  DROP TABLE IF EXISTS ks_nat, ks_nat_top, ks_sp, ks_st, ks_st2;
END $$;

-- Self-test of the checker: a check that finds a difference must show it.
-- The second source's keys shift by one after its first 500 rows, that is,
-- between PostgreSQL's pass (which sees the true keys) and spillagg's.
CREATE TABLE ks_self (i int, g int, k int, v numeric);
INSERT INTO ks_self SELECT i, i % 5, i % 50, 1 FROM generate_series(1, 500) i;
CREATE SEQUENCE ks_seq;
SELECT check_label, mode, groups, keys, cd, cm, sum_n, topk
FROM ks_check('self-test: same keys', 'ks_self', two_step => false, modes => '{1GB/hash}')
UNION ALL
SELECT check_label, mode, groups, keys, cd, cm, sum_n, topk
FROM ks_check('self-test: keys shifted', '(SELECT i, g, k + (nextval(''ks_seq'') > 500)::int AS k, v FROM ks_self) s',
              two_step => false, modes => '{1GB/hash}');

---------------------------------------------------------------------------
-- 1. TOASTed and compressed keys, mixed with short ones.
---------------------------------------------------------------------------
-- 200 rows, every 20th key 2100 bytes (compressed inline), the others 32
-- bytes; every key once.  Then every 3rd key long (100 rows).
CREATE TABLE ks_toast20 AS
SELECT i, i % 5 AS g, CASE WHEN i % 20 = 0 THEN rpad(md5(i::text), 2100, md5(i::text)) ELSE md5(i::text) END AS k,
       i::numeric AS v
FROM generate_series(1, 200) i;
CREATE TABLE ks_toast3 AS
SELECT i, i % 5 AS g, CASE WHEN i % 3 = 0 THEN rpad(md5(i::text), 2100, md5(i::text)) ELSE md5(i::text) END AS k,
       i::numeric AS v
FROM generate_series(1, 100) i;
-- The queries as a user writes them (four aggregates, GROUP BY g, 64 kB):
-- every group's map must hold exactly its own keys with their sums.
SET spillagg.work_mem = 64;
CREATE FUNCTION ks_direct(tbl text) RETURNS TABLE (groups bigint, keys bigint, mismatches bigint, outcome text)
LANGUAGE plpgsql AS $$
BEGIN
  EXECUTE format($q$
    WITH r AS (SELECT g, sum_map(k, v) AS a, sum_map(k, v::float8) AS b, sum_map(k, v::int) AS c,
                      count_map(k) AS d FROM %1$I GROUP BY g),
         nat AS (SELECT g, k, to_jsonb(sum(v)) AS a, to_jsonb(sum(v::float8)) AS b,
                        to_jsonb(sum(v::int)) AS c, to_jsonb(count(*)) AS d FROM %1$I GROUP BY g, k),
         sp AS (SELECT g, key AS k, a.value AS a, b.value AS b, c.value AS c, d.value AS d
                FROM r, jsonb_each(r.a) a
                LEFT JOIN jsonb_each(r.b) b USING (key) LEFT JOIN jsonb_each(r.c) c USING (key)
                LEFT JOIN jsonb_each(r.d) d USING (key))
    SELECT (SELECT count(*) FROM r), (SELECT count(*) FROM nat),
           count(*) FILTER (WHERE sp.g IS NULL OR nat.g IS NULL
                            OR (sp.a::text, sp.b::text, sp.c::text, sp.d::text)
                               IS DISTINCT FROM (nat.a::text, nat.b::text, nat.c::text, nat.d::text))
    FROM sp FULL JOIN nat USING (g, k)$q$, tbl) INTO groups, keys, mismatches;
  outcome := 'ok';
  RETURN NEXT;
EXCEPTION WHEN OTHERS THEN
  groups := NULL; keys := NULL; mismatches := NULL;
  outcome := 'ERROR ' || SQLSTATE;
  RETURN NEXT;
END $$;
SELECT 'every 20th key long' AS keys, * FROM ks_direct('ks_toast20')
UNION ALL SELECT 'every 3rd key long', * FROM ks_direct('ks_toast3');
RESET spillagg.work_mem;
SELECT * FROM ks_check('toast: every 20th long, 200 rows', 'ks_toast20');
SELECT * FROM ks_check('toast: every 3rd long, 100 rows', 'ks_toast3');
-- Larger: 3000 rows, 600 keys each 5 times; every 3rd key compressed
-- (2100 bytes of a repeated md5), every 7th out of line and incompressible
-- (2240 bytes of md5s of its own), the others 32 bytes.
CREATE TABLE ks_toast_big AS
SELECT i, i % 5 AS g,
       CASE WHEN j % 3 = 0 THEN rpad(md5(j::text), 2100, md5(j::text))
            WHEN j % 7 = 0 THEN (SELECT string_agg(md5(j::text || ':' || x), '') FROM generate_series(1, 70) x)
            ELSE md5(j::text) END AS k,
       round((i % 97) / 4.0, 2) AS v
FROM (SELECT i, (i * 7919) % 600 AS j FROM generate_series(1, 3000) i) s;
SELECT count(*) FILTER (WHERE pg_column_size(k) < 1000 AND octet_length(k) > 2000) AS compressed,
       count(*) FILTER (WHERE pg_column_size(k) > 2000) AS uncompressed_long,
       count(*) FILTER (WHERE octet_length(k) = 32) AS short
FROM ks_toast_big;
SELECT * FROM ks_check('toast: 3000 rows, 600 keys', 'ks_toast_big');
-- The same keys out of line and uncompressed (STORAGE EXTERNAL), and as
-- expressions (4-byte headers, detoasted).
CREATE TABLE ks_toast_ext (i int, g int, k text, v numeric);
ALTER TABLE ks_toast_ext ALTER COLUMN k SET STORAGE EXTERNAL;
INSERT INTO ks_toast_ext SELECT * FROM ks_toast_big;
SELECT count(*) FILTER (WHERE pg_column_size(k) >= 2100) AS external_long,
       count(*) FILTER (WHERE octet_length(k) = 32) AS short
FROM ks_toast_ext;
SELECT * FROM ks_check('toast: EXTERNAL storage', 'ks_toast_ext');
SELECT * FROM ks_check('toast: EXTERNAL, as expressions', '(SELECT i, g, k || '''' AS k, v FROM ks_toast_ext) s');
-- Both tables in one input: each key arrives compressed, external and short-header.
SELECT * FROM ks_check('toast: compressed + external',
  '(SELECT i, g, k, v FROM ks_toast_big UNION ALL SELECT i + 1, g, k, v FROM ks_toast_ext) s');
-- 1200 rows, every key long (6 kB, compressed) but for the last 40 bytes.
SELECT ks_make('ks_toast_all', $$SELECT repeat('ab', 3000) || md5(x::text) FROM generate_series(1, 200) x$$, 6,
               $$SELECT NULL::text WHERE false$$);
SELECT * FROM ks_check('toast: 200 long keys sharing a prefix', 'ks_toast_all');

---------------------------------------------------------------------------
-- 2. Every length from 0 to 9 bytes, and around 127 bytes (the 1-byte
--    varlena header limit), 8 bytes, and the 2 kB TOAST threshold.
---------------------------------------------------------------------------
CREATE TABLE ks_len (len int, long bool);
INSERT INTO ks_len SELECT len, len > 1000 FROM (SELECT generate_series(0, 9) UNION ALL VALUES (15), (16), (17), (125), (126), (127),
  (128), (129), (254), (255), (256), (2000), (2030), (2031), (2032), (2033), (2040), (2100), (4000), (8200)) v(len);
-- Text: for each length, 4 keys (one for length 0), from random hex digits;
-- the short lengths (up to 256) and the long ones (2000 and more) apart.
CREATE FUNCTION ks_len_keys(is_long bool, hex bool) RETURNS SETOF text LANGUAGE sql AS $$
  SELECT DISTINCT substr(repeat(md5(len || ':' || x), len / 16 + 1), 1, CASE WHEN hex THEN 2 * len ELSE len END)
  FROM ks_len, generate_series(1, 4) x WHERE long = is_long $$;
SELECT ks_make('ks_text_short', 'SELECT ks_len_keys(false, false)', 7,
               $$SELECT 'filler' || (x / 2) FROM generate_series(1, 6000) x$$);
SELECT ks_make('ks_text_long', 'SELECT ks_len_keys(true, false)', 7,
               $$SELECT 'filler' || (x / 2) FROM generate_series(1, 6000) x$$);
SELECT count(DISTINCT octet_length(k)) AS lengths, count(DISTINCT k) AS keys FROM ks_text_short
UNION ALL
SELECT count(DISTINCT octet_length(k)), count(DISTINCT k) FROM ks_text_long;
SELECT * FROM ks_check('text: lengths 0-9, 15-17, 125-129, 254-256', 'ks_text_short');
SELECT * FROM ks_check('text: same, as expressions', '(SELECT i, g, k || '''' AS k, v FROM ks_text_short) s');
SELECT * FROM ks_check('text: lengths 2000, 2030-2033, 2040, 2100, 4000, 8200', 'ks_text_long');
SELECT * FROM ks_check('text: same, as expressions', '(SELECT i, g, k || '''' AS k, v FROM ks_text_long) s');
-- bytea: random bytes (zero bytes included), same lengths.
SELECT ks_make('ks_bytea_short',
  $$SELECT decode(ks_len_keys(false, true), 'hex')
    UNION ALL SELECT '\x00'::bytea UNION ALL SELECT '\x0000' UNION ALL SELECT '\x00000000000000'
    UNION ALL SELECT '\x0000000000000000' UNION ALL SELECT '\xffffffffffffffff' UNION ALL SELECT '\xff'$$, 7,
  $$SELECT decode(md5((x / 2)::text), 'hex') FROM generate_series(1, 6000) x$$);
SELECT ks_make('ks_bytea_long', $$SELECT decode(ks_len_keys(true, true), 'hex')$$, 7,
  $$SELECT decode(md5((x / 2)::text), 'hex') FROM generate_series(1, 6000) x$$);
SELECT count(DISTINCT octet_length(k)) AS lengths, count(DISTINCT k) AS keys FROM ks_bytea_short
UNION ALL
SELECT count(DISTINCT octet_length(k)), count(DISTINCT k) FROM ks_bytea_long;
SELECT * FROM ks_check('bytea: lengths 0-9 ... 256, zero bytes', 'ks_bytea_short');
SELECT * FROM ks_check('bytea: same, as expressions', '(SELECT i, g, k || ''\x''::bytea AS k, v FROM ks_bytea_short) s');
SELECT * FROM ks_check('bytea: lengths 2000 ... 8200', 'ks_bytea_long');
-- Text keys that are prefixes of each other, or differ only in the last byte.
SELECT ks_make('ks_prefix',
  $$SELECT left('abcdefghij', x) FROM generate_series(0, 10) x
    UNION ALL SELECT repeat('z', 126) || c FROM unnest('{a,b,c}'::text[]) c
    UNION ALL SELECT repeat('z', 2031) || c FROM unnest('{a,b,c}'::text[]) c
    UNION ALL SELECT repeat('z', 126) UNION ALL SELECT repeat('z', 2031)$$, 9,
  $$SELECT 'p' || (x / 2) FROM generate_series(1, 6000) x$$);
SELECT * FROM ks_check('text: prefixes', 'ks_prefix');
-- Multibyte UTF-8 (the key text is the JSON key).
SELECT ks_make('ks_utf8',
  $$VALUES ('é'), ('e'), ('ß'), ('ss'), ('日本'), ('日本語'), ('🙂'), ('a🙂'), ('"quoted"'), ('back\slash'), (E'tab\there'), (E'nl\n')$$, 9,
  $$SELECT 'ü' || (x / 2) FROM generate_series(1, 6000) x$$);
SELECT * FROM ks_check('text: multibyte and JSON escapes', 'ks_utf8');

---------------------------------------------------------------------------
-- 3. bpchar: trailing blanks are insignificant ('a', 'a ', 'a  ' are one key).
---------------------------------------------------------------------------
SELECT ks_make('ks_bpchar',
  $$SELECT x::bpchar FROM (VALUES ('a'), ('a '), ('a  '), (' a'), ('b'), ('b   '), (''), (' '), ('   ')) v(x)$$, 8,
  $$SELECT ('f' || (x / 3) || repeat(' ', x % 3))::bpchar FROM generate_series(1, 6000) x$$);
SELECT count(DISTINCT k::text) AS classes, count(DISTINCT octet_length(k::bytea)) AS stored_lengths FROM ks_bpchar;
SELECT * FROM ks_check('bpchar', 'ks_bpchar', 'rtrim(%s)');
SELECT * FROM ks_check('char(4)', '(SELECT i, g, k::char(4) AS k, v FROM ks_bpchar) s', 'rtrim(%s)');

---------------------------------------------------------------------------
-- 4. Nondeterministic ICU collation: keys differing in case are one key.
---------------------------------------------------------------------------
SELECT EXISTS (SELECT FROM pg_collation WHERE collprovider = 'i') AS icu_available \gset
SELECT :'icu_available' AS icu_available;
\if :icu_available
CREATE COLLATION ks_ci (provider = icu, locale = 'und-u-ks-level2', deterministic = false);
SELECT ks_make('ks_ci_keys',
  $$SELECT x COLLATE ks_ci FROM (VALUES ('abc'), ('ABC'), ('Abc'), ('abd'), ('ABD'), (''), ('é'), ('É'),
                                        ('x' || repeat('Y', 130)), ('X' || repeat('y', 130)),
                                        (repeat('Q', 2100)), (repeat('q', 2100))) v(x)$$, 6,
  $$SELECT (CASE WHEN x % 2 = 0 THEN upper(md5((x / 2)::text)) ELSE md5((x / 2)::text) END) COLLATE ks_ci
    FROM generate_series(1, 6000) x$$);
SELECT count(DISTINCT k) AS ci_keys, count(DISTINCT k COLLATE "C") AS c_keys FROM ks_ci_keys;
SELECT * FROM ks_check('text COLLATE ks_ci (column)', 'ks_ci_keys', 'lower(%s)');
SELECT * FROM ks_check('text COLLATE "C" (expression)', '(SELECT i, g, k COLLATE "C" AS k, v FROM ks_ci_keys) s');
SELECT * FROM ks_check('text[] COLLATE ks_ci', '(SELECT i, g, ARRAY[k, ''z''] AS k, v FROM ks_ci_keys) s', 'lower(%s)', with_top_k => false);
\endif

---------------------------------------------------------------------------
-- 5. Numbers equal but spelled differently: numeric 1 / 1.0 / 1.00, NaN;
--    float -0 / 0, NaNs of different bits, infinities.
---------------------------------------------------------------------------
SELECT ks_make('ks_numeric',
  $$SELECT x::numeric FROM (VALUES ('1'), ('1.0'), ('1.00'), ('2.5'), ('2.50'), ('NaN'), ('0'), ('-0'), ('0.000'),
                                   ('-1.5'), ('-1.50'), ('1e3'), ('1000.0'), ('Infinity'), ('-Infinity'),
                                   ('123456789012345678901234567890.1'), ('123456789012345678901234567890.10'),
                                   ('0.000000000000000000001'), ('1e-21')) v(x)$$, 7,
  $$SELECT round(((x / 2) / 8.0)::numeric, x % 2 + 3) FROM generate_series(1, 6000) x$$);
SELECT count(DISTINCT k) AS keys, count(DISTINCT k::text) AS spellings FROM ks_numeric;
SELECT * FROM ks_check('numeric', 'ks_numeric', 'trim_scale((%s)::numeric)::text');
SELECT ks_make('ks_float8',
  $$SELECT x FROM (VALUES (0.0::float8), ('-0'), (-0.0::float8 * 1), ('NaN'), ('Infinity'::float8 - 'Infinity'::float8),
                          (0 * 'Infinity'::float8), ('Infinity'), ('-Infinity'), (0.3), (0.1::float8 + 0.2::float8),
                          (1e-320), (-1e-320), (1.7976931348623157e308)) v(x)$$, 7,
  $$SELECT CASE WHEN x % 2 = 0 THEN (x / 2) / 7.0::float8 ELSE -((x / 2) / 7.0::float8) END FROM generate_series(1, 6000) x$$);
SELECT count(DISTINCT k) AS keys, count(DISTINCT float8send(k)) AS bit_patterns FROM ks_float8;
SELECT * FROM ks_check('float8', 'ks_float8', $$CASE WHEN %1$s = '-0' THEN '0' ELSE %1$s END$$);
SELECT * FROM ks_check('float4', $$(SELECT i, g, k::float4 AS k, v FROM ks_float8
                                     WHERE k = 0 OR k IN ('NaN', 'Infinity', '-Infinity') OR abs(k) BETWEEN 1e-30 AND 1e30) s$$,
                       $$CASE WHEN %1$s = '-0' THEN '0' ELSE %1$s END$$);

---------------------------------------------------------------------------
-- 6. Composite and array keys; NULL fields and NULL elements make non-NULL
--    keys, which count; NULL keys do not.
---------------------------------------------------------------------------
CREATE TYPE ks_pair AS (a int4, b text);
SELECT ks_make('ks_comp',
  $$SELECT x::ks_pair FROM (VALUES ('(1,a)'), ('(1,b)'), ('(2,a)'), ('(1,)'), ('(,a)'), ('(,)'), ('(0,"")'),
                                   ('(10,"x y")'), (NULL)) v(x)
    UNION ALL SELECT ROW(7, repeat('w', 2100))::ks_pair UNION ALL SELECT ROW(NULL, repeat('w', 2100))::ks_pair$$, 7,
  $$SELECT ROW(x / 2, CASE WHEN x % 3 = 0 THEN NULL ELSE md5((x / 2)::text) END)::ks_pair FROM generate_series(1, 6000) x$$);
SELECT count(*) - count(k) AS null_keys, count(k) FILTER (WHERE (k).a IS NULL AND (k).b IS NULL) AS all_null_fields,
       count(k) FILTER (WHERE (k).a IS NULL OR (k).b IS NULL) AS some_null_field
FROM ks_comp;
SELECT * FROM ks_check('composite ks_pair', 'ks_comp');
-- The same as anonymous records built in the query (no two-step: a stored
-- state's keys go through the type's receive function, which anonymous
-- records lack).
SELECT * FROM ks_check('ROW(a, b)', '(SELECT i, g, ROW((k).a, (k).b) AS k, v FROM ks_comp WHERE k IS DISTINCT FROM NULL) s',
                       two_step => false);
-- A composite whose fields are numeric and float: equal by field equality
-- (1.0 = 1.00, -0 = 0), so they are one key.
CREATE TYPE ks_nf AS (a numeric, b float8);
CREATE FUNCTION ks_nf_norm(t text) RETURNS text LANGUAGE sql AS $$
  SELECT format('(%s,%s)', trim_scale((t::ks_nf).a), CASE WHEN (t::ks_nf).b = 0 THEN 0 ELSE (t::ks_nf).b END) $$;
SELECT ks_make('ks_comp_num',
  $$SELECT x::ks_nf FROM (VALUES ('(1,0)'), ('(1.0,-0)'), ('(1.00,0)'), ('(,NaN)'), ('(NaN,)'), ('(,)'), ('(2.50,1.5)'), ('(2.5,1.5)')) v(x)$$, 7,
  $$SELECT ROW(round((x / 2)::numeric / 4, x % 2 + 2), (x / 2) / 7.0::float8)::ks_nf FROM generate_series(1, 6000) x$$);
SELECT * FROM ks_check('composite (numeric, float8)', 'ks_comp_num', 'ks_nf_norm(%s)');
-- Arrays: element order, NULL elements, empty arrays, dimensions, lower bounds.
SELECT ks_make('ks_arr',
  $$SELECT x::int4[] FROM (VALUES ('{}'), ('{NULL}'), ('{NULL,NULL}'), ('{1,NULL}'), ('{NULL,1}'), ('{1,2}'), ('{2,1}'),
                                  ('{{1,2}}'), ('[0:1]={1,2}'), ('{{NULL}}'), (NULL)) v(x)$$, 7,
  $$SELECT ARRAY[x / 2, CASE WHEN x % 4 = 0 THEN NULL ELSE x / 2 + 1 END] FROM generate_series(1, 6000) x$$);
SELECT count(*) FILTER (WHERE k IS NULL) AS null_keys, count(*) FILTER (WHERE k = '{}') AS empty_arrays FROM ks_arr;
SELECT * FROM ks_check('int4[]', 'ks_arr', with_top_k => false);
SELECT ks_make('ks_tarr',
  $$SELECT x::text[] FROM (VALUES ('{}'), ('{NULL}'), ('{""}'), ('{"",""}'), ('{a,NULL}'), ('{NULL,a}'), ('{a,b}'), ('{ab}'),
                                  ('{"a,b"}'), ('{"NULL"}'), (NULL)) v(x)
    UNION ALL SELECT ARRAY[repeat('t', 2100), NULL]$$, 7,
  $$SELECT ARRAY[md5((x / 2)::text), NULL, 'x'] FROM generate_series(1, 6000) x$$);
SELECT * FROM ks_check('text[]', 'ks_tarr', with_top_k => false);
SELECT ks_make('ks_narr',
  $$SELECT x::numeric[] FROM (VALUES ('{1}'), ('{1.0}'), ('{1.00,NULL}'), ('{1,NULL}'), ('{}'), ('{NaN}')) v(x)$$, 7,
  $$SELECT ARRAY[round((x / 2)::numeric / 4, x % 2 + 2)] FROM generate_series(1, 6000) x$$);
CREATE FUNCTION ks_narr_norm(t text) RETURNS text LANGUAGE sql AS $$
  SELECT array(SELECT trim_scale(e) FROM unnest(t::numeric[]) WITH ORDINALITY u(e, o) ORDER BY o)::text $$;
SELECT * FROM ks_check('numeric[]', 'ks_narr', 'ks_narr_norm(%s)', with_top_k => false);
-- Arrays of composites with NULLs inside, and composites holding arrays.
CREATE TYPE ks_holder AS (tags text[], p ks_pair);
SELECT ks_make('ks_nested',
  $$SELECT x::ks_holder FROM (VALUES ('("{a,NULL}","(1,)")'), ('("{}",)'), ('(,)'), ('("{NULL}","(,)")'), ('("{a}","(1,a)")')) v(x)$$, 7,
  $$SELECT ROW(ARRAY[(x / 2)::text], ROW(x / 2, NULL))::ks_holder FROM generate_series(1, 6000) x$$);
SELECT * FROM ks_check('composite holding array and composite', 'ks_nested');
SELECT * FROM ks_check('array of composites', '(SELECT i, g, ARRAY[(k).p, NULL] AS k, v FROM ks_nested) s', with_top_k => false);

-- Anonymous records in a stored state: a clean outcome, not a crash.
SELECT count_map_final(count_map_state(ROW(x, 'a'::text))) AS anonymous_record_state
FROM generate_series(1, 2) x;

DROP FUNCTION ks_check, ks_make, ks_direct, ks_len_keys;
