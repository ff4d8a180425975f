-- Security: what a role without superuser, but with CREATE on a schema, can
-- do with spillagg's SQL surface.  Every hostile value or definition must
-- end in a clean ERROR or a correct answer, never a crash or a read of
-- bytes as a live C++ object.
SET client_min_messages = warning;
CREATE EXTENSION IF NOT EXISTS spillagg;
SET max_parallel_workers_per_gather = 0;

-- 1. The install script's hygiene, from the catalog.
CREATE TEMP VIEW sec_ext_procs AS
SELECT p.* FROM pg_proc p
JOIN pg_depend d ON d.classid = 'pg_proc'::regclass AND d.objid = p.oid AND d.deptype = 'e'
                 AND d.refclassid = 'pg_extension'::regclass
JOIN pg_extension e ON e.oid = d.refobjid AND e.extname = 'spillagg';
SELECT count(*) > 40 AS has_functions,
       count(*) FILTER (WHERE prosecdef) = 0 AS no_security_definer,
       coalesce(bool_and(EXISTS (SELECT FROM unnest(proconfig) c WHERE c LIKE 'search_path=%'))
                FILTER (WHERE prolang IN (SELECT oid FROM pg_language WHERE lanname IN ('sql', 'plpgsql'))),
                true) AS sql_functions_set_search_path,
       count(*) FILTER (WHERE prolang NOT IN (SELECT oid FROM pg_language WHERE lanname IN ('c', 'internal', 'sql', 'plpgsql'))) = 0
         AS only_c_and_sql
FROM sec_ext_procs;
-- The finalizers render keys through their type's output (which depends on
-- TimeZone, DateStyle, extra_float_digits...), as to_jsonb does: STABLE.
SELECT proname, provolatile FROM sec_ext_procs WHERE proname LIKE '%\_final' ORDER BY 1;

-- 2. Every aggregate X has X_state: histogram too.
SELECT histogram_final(h) AS histogram_final,
       histogram_final(h)::text = (SELECT histogram(x)::text FROM (VALUES ('a'), ('b'), ('a'), (NULL)) v(x)) AS same_as_histogram,
       count_map_final((SELECT rollup(s) FROM (VALUES (h), (c)) w(s))) AS rolled_up_with_count_map_state
FROM (SELECT histogram_state(x) AS h, count_map_state(x) AS c FROM (VALUES ('a'), ('b'), ('a'), (NULL)) v(x)) s;

-- 3. The attacker.
DO $$ BEGIN
  IF EXISTS (SELECT FROM pg_roles WHERE rolname = 'regress_spillagg_attacker') THEN
    EXECUTE 'DROP OWNED BY regress_spillagg_attacker';
    EXECUTE 'DROP ROLE regress_spillagg_attacker';
  END IF;
END $$;
CREATE ROLE regress_spillagg_attacker;
GRANT CREATE ON SCHEMA public TO regress_spillagg_attacker;
SET SESSION AUTHORIZATION regress_spillagg_attacker;
SELECT current_user, rolsuper FROM pg_roles WHERE rolname = current_user;

-- sec_try(q): 'ok: ' and the result (text), or 'ERROR ' and the SQLSTATE.
CREATE FUNCTION sec_try(q text) RETURNS text LANGUAGE plpgsql AS $$
DECLARE r text;
BEGIN
  EXECUTE q INTO r;
  RETURN 'ok: ' || coalesce(r, 'NULL');
EXCEPTION WHEN OTHERS THEN
  RETURN 'ERROR ' || SQLSTATE;
END $$;
-- sec_ddl(q): 'ok', or 'ERROR ' and the SQLSTATE, for a statement without rows.
CREATE FUNCTION sec_ddl(q text) RETURNS text LANGUAGE plpgsql AS $$
BEGIN
  EXECUTE q;
  RETURN 'ok';
EXCEPTION WHEN OTHERS THEN
  RETURN 'ERROR ' || SQLSTATE;
END $$;
-- sec_le32(x): x as 8 hex digits, little-endian (the header's byte order).
CREATE FUNCTION sec_le32(x oid) RETURNS text LANGUAGE sql AS $$
  SELECT string_agg(lpad(to_hex((x::int8 >> (8 * b)) & 255), 2, '0'), '' ORDER BY b) FROM generate_series(0, 3) b $$;

-- Valid states of every kind, text keys (k0..k29) and int keys.
CREATE TABLE sec_src AS
SELECT i, 'k' || (i % 30) AS k, i % 30 AS ik, (i % 17)::numeric / 4 AS v FROM generate_series(1, 300) i;
CREATE TABLE sec_st AS
SELECT count_distinct_state(k) AS cd, count_map_state(k) AS cm, top_k_state(k, 3) AS tk,
       sum_map_state(k, v) AS sum_n, sum_map_state(k, v::int) AS sum_i, sum_map_state(k, v::float8) AS sum_f,
       avg_map_state(k, v) AS avg_n, min_map_state(k, v) AS min_n, max_map_state(k, v::int8) AS max_i,
       min_map_state(k, v::float4) AS min_f, variance_map_state(k, v) AS var_n,
       stddev_pop_map_state(k, v::float8) AS sd_f, var_pop_map_state(k, v::int2) AS var_i,
       count_map_state(ik) AS cm_int
FROM sec_src;
CREATE TABLE sec_finals (f text, call text);
INSERT INTO sec_finals VALUES
  ('count_distinct_final', 'count_distinct_final(%s)'), ('count_map_final', 'count_map_final(%s)'),
  ('histogram_final', 'histogram_final(%s)'), ('top_k_final', 'top_k_final(%s, NULL::text)'),
  ('sum_map_final', 'sum_map_final(%s)'), ('avg_map_final', 'avg_map_final(%s)'),
  ('min_map_final', 'min_map_final(%s)'), ('max_map_final', 'max_map_final(%s)'),
  ('variance_map_final', 'variance_map_final(%s)'), ('var_samp_map_final', 'var_samp_map_final(%s)'),
  ('var_pop_map_final', 'var_pop_map_final(%s)'), ('stddev_map_final', 'stddev_map_final(%s)'),
  ('stddev_samp_map_final', 'stddev_samp_map_final(%s)'), ('stddev_pop_map_final', 'stddev_pop_map_final(%s)'),
  ('rollup', 'count_distinct_final((SELECT rollup(x) FROM (VALUES (%s)) v(x)))');

-- 4. A valid state of one kind handed to every other kind's finalizer:
-- which kinds each accepts; every other is ERROR 22023.
SELECT f.f, string_agg(s, ' ' ORDER BY o) FILTER (WHERE r LIKE 'ok%') AS accepts,
       string_agg(DISTINCT r, ', ') FILTER (WHERE r NOT LIKE 'ok%') AS others
FROM sec_finals f,
     unnest('{cd,cm,tk,sum_n,sum_i,sum_f,avg_n,min_n,max_i,min_f,var_n,sd_f,var_i}'::text[]) WITH ORDINALITY u(s, o),
     LATERAL sec_try(format('SELECT (%s)::text FROM sec_st', format(f.call, s))) r
GROUP BY f.f ORDER BY f.f;
SELECT sec_try('SELECT top_k_final(cm_int, NULL::text)::text FROM sec_st') AS top_k_final_text_for_int_keys,
       sec_try('SELECT top_k_final(tk, NULL::int)::text FROM sec_st') AS top_k_final_int_for_text_keys;

-- 5. Hostile bytes.  The header: magic (bytes 0-3), version (4), state tag
-- (5), key type (6-9), collation (10-13), value type (14-17), k (18-21),
-- key format (22), then records (varint key length, varint state length,
-- 8-byte hash, key, state).  In the text form byte b is at 3 + 2b.
CREATE COLLATION sec_ci (provider = icu, locale = 'und-u-ks-level2', deterministic = false);
CREATE TABLE sec_hostile (n serial, label text, state text, final text DEFAULT 'count_map_final(%s)');
INSERT INTO sec_hostile (label, state, final)
SELECT label, state, coalesce(final, 'count_map_final(%s)') FROM (
  SELECT 'empty' AS label, '\x' AS state, NULL AS final
  UNION ALL SELECT 'magic only', '\x53504147', NULL
  UNION ALL SELECT 'header only, one byte short', left(cm::text, 2 + 2 * 22), NULL FROM sec_st
  UNION ALL SELECT 'header only (no keys)', left(cm::text, 2 + 2 * 23), NULL FROM sec_st
  UNION ALL SELECT 'wrong magic', overlay(cm::text placing '00000000' from 3 for 8), NULL FROM sec_st
  UNION ALL SELECT 'magic byte-swapped', overlay(cm::text placing '47415053' from 3 for 8), NULL FROM sec_st
  -- versions 01 and 02 are older formats (records with hashes, other float states): a current state labelled so is misread
  UNION ALL SELECT 'version ' || x, overlay(cm::text placing x from 11 for 2), NULL FROM sec_st, unnest('{00,01,02,04,ff}'::text[]) x
  UNION ALL SELECT 'float sum labelled format 01', overlay(sum_f::text placing '01' from 11 for 2), 'sum_map_final(%s)' FROM sec_st
  UNION ALL SELECT 'float moments labelled format 01', overlay(sd_f::text placing '01' from 11 for 2), 'stddev_pop_map_final(%s)' FROM sec_st
  UNION ALL SELECT 'state tag ' || x, overlay(cm::text placing x from 13 for 2), NULL FROM sec_st, unnest('{00,0f,7f,ff}'::text[]) x
  -- a tag of another kind whose value type fits: the records decode as that kind or fail
  UNION ALL SELECT 'int sum read as int moments', overlay(sum_i::text placing '0a' from 13 for 2), 'variance_map_final(%s)' FROM sec_st
  UNION ALL SELECT 'int moments read as int sum', overlay(var_i::text placing lpad(to_hex(3), 2, '0') from 13 for 2), 'sum_map_final(%s)' FROM sec_st
  UNION ALL SELECT 'numeric sum read as numeric moments', overlay(sum_n::text placing '0e' from 13 for 2), 'variance_map_final(%s)' FROM sec_st
  UNION ALL SELECT 'count read as presence', overlay(cm::text placing '01' from 13 for 2), 'count_distinct_final(%s)' FROM sec_st
  UNION ALL SELECT 'presence read as count', overlay(cd::text placing '02' from 13 for 2), NULL FROM sec_st
  -- key types
  UNION ALL SELECT 'key type ' || t, overlay(cm::text placing sec_le32(t::regtype::oid) from 15 for 8), NULL
  FROM sec_st, unnest('{int4,int8,bool,tid,point,json,aclitem,internal,cstring,record,void,anyelement,unknown,trigger}'::text[]) t
  UNION ALL SELECT 'int keys as type ' || t, overlay(cm_int::text placing sec_le32(t::regtype::oid) from 15 for 8), NULL
  FROM sec_st, unnest('{text,int8,int2,bool,oid,float4,date,tid,point,numeric,jsonb}'::text[]) t
  UNION ALL SELECT 'key type 0', overlay(cm::text placing '00000000' from 15 for 8), NULL FROM sec_st
  UNION ALL SELECT 'key type 2^31-1', overlay(cm::text placing 'ffffff7f' from 15 for 8), NULL FROM sec_st
  UNION ALL SELECT 'key type 2^32-1', overlay(cm::text placing 'ffffffff' from 15 for 8), NULL FROM sec_st
  -- collations
  UNION ALL SELECT 'collation 2^31-1', overlay(cm::text placing 'ffffff7f' from 23 for 8), NULL FROM sec_st
  UNION ALL SELECT 'keys a, A under "C", collation made ' || c, overlay(s::text placing sec_le32(c::regcollation::oid) from 23 for 8), f
  FROM (SELECT count_map_state(x COLLATE "C") AS s FROM (VALUES ('a'), ('A'), ('a')) v(x)) x, unnest('{sec_ci}'::text[]) c,
       unnest(ARRAY['count_map_final(%s)', 'count_map_final((SELECT rollup(x) FROM (VALUES (%s)) v(x)))']) f
  UNION ALL SELECT 'collation "C" on int keys', overlay(cm_int::text placing sec_le32(950) from 23 for 8), NULL FROM sec_st
  UNION ALL SELECT 'collation 0 on text keys', overlay(cm::text placing '00000000' from 23 for 8), NULL FROM sec_st
  -- value types
  UNION ALL SELECT 'value type 2^31-1', overlay(sum_n::text placing 'ffffff7f' from 31 for 8), 'sum_map_final(%s)' FROM sec_st
  UNION ALL SELECT 'numeric sum, value type int4', overlay(sum_n::text placing sec_le32(23) from 31 for 8), 'sum_map_final(%s)' FROM sec_st
  UNION ALL SELECT 'float sum, value type numeric', overlay(sum_f::text placing sec_le32(1700) from 31 for 8), 'sum_map_final(%s)' FROM sec_st
  UNION ALL SELECT 'count, value type text', overlay(cm::text placing sec_le32(25) from 31 for 8), NULL FROM sec_st
  -- k
  UNION ALL SELECT 'top_k k = -1', overlay(tk::text placing 'ffffffff' from 39 for 8), 'top_k_final(%s, NULL::text)' FROM sec_st
  UNION ALL SELECT 'top_k k = 0', overlay(tk::text placing '00000000' from 39 for 8), 'top_k_final(%s, NULL::text)' FROM sec_st
  UNION ALL SELECT 'top_k k = 2^31-1', overlay(tk::text placing 'ffffff7f' from 39 for 8), 'cardinality(top_k_final(%s, NULL::text))' FROM sec_st
  -- key format
  UNION ALL SELECT 'key format ' || x, overlay(cm::text placing x from 47 for 2), NULL FROM sec_st, unnest('{00,02,ff}'::text[]) x
  -- record lengths: the first record's key length varint replaced
  UNION ALL SELECT 'key length ' || x, overlay(cm::text placing x from 49 for 2), NULL
  FROM sec_st, unnest('{00,01,7f,ffffffff0f,ffffffffffffffff7f,ffffffffffffffffff01,ffffffffffffffffffff01}'::text[]) x
  UNION ALL SELECT 'state length ' || x, overlay(cm::text placing x from 51 for 2), NULL
  FROM sec_st, unnest('{00,7f,ffffffff0f,ffffffffffffffffff01}'::text[]) x
  -- duplicate keys: the records twice
  UNION ALL SELECT 'duplicate keys', cm::text || substr(cm::text, 49), NULL FROM sec_st
  UNION ALL SELECT 'duplicate keys, count_distinct_final', cm::text || substr(cm::text, 49), 'count_distinct_final(%s)' FROM sec_st
  UNION ALL SELECT 'duplicate keys, rollup', cm::text || substr(cm::text, 49), 'count_map_final((SELECT rollup(x) FROM (VALUES (%s)) v(x)))' FROM sec_st
  UNION ALL SELECT 'duplicate keys, sum', sum_n::text || substr(sum_n::text, 49), 'sum_map_final(%s)' FROM sec_st
  UNION ALL SELECT 'trailing byte', cm::text || '00', NULL FROM sec_st
) s;
SELECT n, label, left(sec_try(format('SELECT (%s)::text', format(final, quote_literal(state) || '::spillagg_state'))), 60) AS outcome
FROM sec_hostile ORDER BY n;

-- Every prefix of a state of each kind: only the cuts at record boundaries
-- (the header and 0..30 whole records) are states, of that many keys; every
-- other cut is ERROR 22P03.
CREATE FUNCTION sec_prefixes(st spillagg_state, OUT prefixes int, OUT accepted int, OUT accepted_are_boundaries bool,
                             OUT errors text) LANGUAGE plpgsql AS $$
DECLARE
  t text := st::text;
  nb int := (length(t) - 2) / 2;
  r text;
  keys bigint;
  last bigint := -1;
  codes text[] := '{}';
BEGIN
  prefixes := 0; accepted := 0; accepted_are_boundaries := true;
  FOR len IN 0 .. nb - 1 LOOP
    prefixes := prefixes + 1;
    BEGIN
      keys := count_distinct_final(left(t, 2 + 2 * len)::spillagg_state);
      accepted := accepted + 1;
      accepted_are_boundaries := accepted_are_boundaries AND keys = last + 1;
      last := keys;
    EXCEPTION WHEN OTHERS THEN
      IF NOT SQLSTATE = ANY (codes) THEN codes := codes || SQLSTATE::text; END IF;
    END;
  END LOOP;
  errors := array_to_string(codes, ',');
END $$;
SELECT s, p.* FROM sec_st, LATERAL (VALUES ('cd', cd), ('cm', cm), ('tk', tk), ('sum_n', sum_n), ('sum_i', sum_i),
                                           ('sum_f', sum_f), ('min_n', min_n), ('max_i', max_i), ('min_f', min_f),
                                           ('var_n', var_n), ('sd_f', sd_f), ('var_i', var_i), ('cm_int', cm_int)) v(s, st),
     LATERAL sec_prefixes(st) p;

-- Every byte flipped (xor 0xff, xor 0x01), each given to its finalizer and
-- to rollup: an ERROR or an answer; no internal error (XX000), no crash.
CREATE FUNCTION sec_flips(st spillagg_state, final text, OUT cases int, OUT answers int, OUT errors text)
LANGUAGE plpgsql AS $$
DECLARE
  t text := st::text;
  nb int := (length(t) - 2) / 2;
  m int;
  flipped text;
  codes text[] := '{}';
BEGIN
  cases := 0; answers := 0;
  FOR p IN 0 .. nb - 1 LOOP
    FOREACH m IN ARRAY '{255,1}'::int[] LOOP
      flipped := overlay(t placing lpad(to_hex(('x' || substr(t, 3 + 2 * p, 2))::bit(8)::int # m), 2, '0')
                         from 3 + 2 * p for 2);
      cases := cases + 1;
      BEGIN
        EXECUTE format('SELECT (%s)::text, (SELECT count_distinct_final(rollup(x)) FROM (VALUES ($1), ($1)) v(x))',
                       format(final, '$1'))
          USING flipped::spillagg_state;
        answers := answers + 1;
      EXCEPTION WHEN OTHERS THEN
        IF NOT SQLSTATE = ANY (codes) THEN codes := codes || SQLSTATE::text; END IF;
      END;
    END LOOP;
  END LOOP;
  SELECT string_agg(c, ',' ORDER BY c) INTO errors FROM unnest(codes) c;
END $$;
CREATE TABLE sec_small AS
SELECT count_map_state(k) AS cm, top_k_state(k, 2) AS tk, sum_map_state(k, v) AS sum_n, sum_map_state(k, v::int) AS sum_i,
       avg_map_state(k, v::float8) AS avg_f, min_map_state(k, v) AS min_n, max_map_state(k, v::float4) AS max_f,
       variance_map_state(k, v) AS var_n, var_pop_map_state(k, v::int8) AS var_i, stddev_map_state(k, v::float8) AS sd_f,
       count_distinct_state(ik) AS cd_int
FROM sec_src WHERE ik < 4;
SELECT s, f.* FROM sec_small, LATERAL (VALUES
  ('cm', cm, 'count_map_final(%s)'), ('tk', tk, 'top_k_final(%s, NULL::text)'), ('sum_n', sum_n, 'sum_map_final(%s)'),
  ('sum_i', sum_i, 'avg_map_final(%s)'), ('avg_f', avg_f, 'avg_map_final(%s)'), ('min_n', min_n, 'min_map_final(%s)'),
  ('max_f', max_f, 'max_map_final(%s)'), ('var_n', var_n, 'stddev_map_final(%s)'), ('var_i', var_i, 'var_pop_map_final(%s)'),
  ('sd_f', sd_f, 'variance_map_final(%s)'), ('cd_int', cd_int, 'count_distinct_final(%s)')) v(s, st, final),
  LATERAL sec_flips(st, final) f;

-- Keys whose type runs the attacker's code in its receive function: a
-- domain whose CHECK calls a PL/pgSQL function, which runs spillagg
-- aggregates itself (at 64 kB, spilling) or raises an ERROR, in the middle
-- of a finalizer's or rollup's merge.
CREATE TABLE sec_reentry (calls int);
INSERT INTO sec_reentry VALUES (0);
CREATE FUNCTION sec_reenter(t text) RETURNS bool LANGUAGE plpgsql AS $$
BEGIN
  UPDATE sec_reentry SET calls = calls + 1;
  IF current_setting('sec.boom', true) = t THEN
    RAISE EXCEPTION 'boom at %', t;
  END IF;
  IF right(t, 1) = '7' THEN
    PERFORM count_distinct(x), count_map(x::text), top_k(x % 100, 3) FROM generate_series(1, 2000) x;
  END IF;
  RETURN true;
END $$;
CREATE DOMAIN sec_dom AS text CHECK (sec_reenter(VALUE));
SET spillagg.work_mem = 64;
CREATE TABLE sec_dom_states AS
SELECT p, overlay(s::text placing sec_le32('sec_dom'::regtype::oid) from 15 for 8)::spillagg_state AS s
FROM (SELECT i % 2 AS p, count_map_state('key' || (i % 700)) AS s FROM generate_series(1, 4000) i GROUP BY 1) x;
SELECT (SELECT count(*) FROM jsonb_object_keys(count_map_final(rollup(s)))) AS keys,
       count_map_final(rollup(s))::text = (SELECT count_map('key' || (i % 700))::text FROM generate_series(1, 4000) i) AS same,
       (SELECT calls > 0 FROM sec_reentry) AS check_ran
FROM sec_dom_states;
SELECT (SELECT count(*) FROM jsonb_object_keys(count_map_final(s))) AS keys FROM sec_dom_states ORDER BY p;
SET sec.boom = 'key350';
\set VERBOSITY terse
SELECT count_map_final(rollup(s)) IS NOT NULL FROM sec_dom_states;
SELECT count_map_final(s) IS NOT NULL FROM sec_dom_states;
SELECT sec_try('SELECT count_distinct_final(s) FROM sec_dom_states WHERE p = 0') AS count_distinct_final_p0;
\set VERBOSITY default
RESET sec.boom;
SELECT count_distinct_final(rollup(s)) AS keys_after_errors FROM sec_dom_states;
RESET spillagg.work_mem;

-- 6. The support functions called from SQL: transition and combine
-- functions refuse to run outside an aggregate (0A000); final functions take
-- spillagg_state like the *_final functions (NULL in, NULL or 0 out); the
-- serial functions of the internal (anyelement) states take internal, which
-- SQL cannot pass (42883).
SELECT f, sec_try(q) AS outcome FROM (VALUES
  ('spillagg_count_distinct_transfn', 'SELECT spillagg_count_distinct_transfn(NULL, 1)::text'),
  ('spillagg_count_map_transfn', 'SELECT spillagg_count_map_transfn(NULL, ''a''::text)::text'),
  ('spillagg_sum_transfn', 'SELECT spillagg_sum_transfn(NULL, 1, 2)::text'),
  ('spillagg_min_transfn', 'SELECT spillagg_min_transfn(NULL, 1, 2.5)::text'),
  ('spillagg_max_transfn', 'SELECT spillagg_max_transfn(NULL, 1, 2.5::float8)::text'),
  ('spillagg_moments_transfn', 'SELECT spillagg_moments_transfn(NULL, 1, 2)::text'),
  ('spillagg_top_k_transfn', 'SELECT spillagg_top_k_transfn(NULL, 1, 3)::text'),
  ('spillagg_rollup_transfn', 'SELECT spillagg_rollup_transfn(NULL, cm)::text FROM sec_st'),
  ('spillagg_count_distinct_finalfn', 'SELECT spillagg_count_distinct_finalfn(NULL)::text'),
  ('spillagg_count_map_finalfn', 'SELECT spillagg_count_map_finalfn(NULL)::text'),
  ('spillagg_sum_finalfn', 'SELECT spillagg_sum_finalfn(NULL)::text'),
  ('spillagg_stddev_pop_finalfn', 'SELECT spillagg_stddev_pop_finalfn(NULL)::text'),
  ('spillagg_top_k_finalfn', 'SELECT spillagg_top_k_finalfn(NULL, 1, 3)::text'),
  ('spillagg_combine', 'SELECT spillagg_combine(NULL, NULL)::text'),
  ('spillagg_serialize', 'SELECT spillagg_serialize(NULL)::text'),
  ('spillagg_deserialize', 'SELECT spillagg_deserialize(cm::text::bytea, NULL)::text FROM sec_st'),
  ('spillagg_to_state', 'SELECT spillagg_to_state(NULL)::text'),
  ('spillagg_state_recv', 'SELECT spillagg_state_recv(NULL)::text'),
  ('spillagg_state_send', 'SELECT length(spillagg_state_send(cm))::text FROM sec_st'),
  ('spillagg_stats', 'SELECT states >= 0 FROM spillagg_stats()')) v(f, q);

-- 7. Definitions PostgreSQL refuses a non-superuser: internal transition
-- states, C functions, binary-coercible casts into spillagg_state. (With
-- spillagg_state as every aggregate's transition type, the extension's
-- FINALFUNC and COMBINEFUNC fit anyone's aggregate: section 9.)
CREATE FUNCTION sec_pick(spillagg_state, spillagg_state) RETURNS spillagg_state LANGUAGE sql AS 'SELECT coalesce($1, $2)';
SELECT label, sec_ddl(q) AS outcome FROM (VALUES
  ('STYPE internal, spillagg transfn', $q$CREATE AGGREGATE sec_bad_internal(anyelement) (SFUNC = spillagg_count_distinct_transfn,
     STYPE = internal, FINALFUNC = spillagg_count_distinct_finalfn)$q$),
  ('STYPE internal, rollup transfn', $q$CREATE AGGREGATE sec_bad_rollup(spillagg_state) (SFUNC = spillagg_rollup_transfn,
     STYPE = internal, FINALFUNC = spillagg_to_state)$q$),
  ('C function on the library', $q$CREATE FUNCTION sec_c(spillagg_state) RETURNS bigint AS 'spillagg',
     'spillagg_count_distinct_finalfn' LANGUAGE C$q$),
  ('binary cast from own range type', $q$CREATE TYPE sec_range AS RANGE (subtype = int4);
     CREATE CAST (sec_range AS spillagg_state) WITHOUT FUNCTION$q$),
  ('binary cast from bytea', 'CREATE CAST (bytea AS spillagg_state) WITHOUT FUNCTION'),
  -- with a spillagg_state transition state, the extension's final and combine functions fit
  ('FINALFUNC spillagg_to_state', $q$CREATE AGGREGATE sec_bad_to_state(spillagg_state) (SFUNC = sec_pick,
     STYPE = spillagg_state, FINALFUNC = spillagg_to_state)$q$),
  ('COMBINEFUNC spillagg_combine', $q$CREATE AGGREGATE sec_bad_combine(spillagg_state) (SFUNC = sec_pick,
     STYPE = spillagg_state, COMBINEFUNC = spillagg_combine)$q$),
  ('SERIALFUNC spillagg_serialize', $q$CREATE AGGREGATE sec_bad_serial(spillagg_state) (SFUNC = sec_pick,
     STYPE = spillagg_state, SERIALFUNC = spillagg_serialize, DESERIALFUNC = spillagg_deserialize)$q$),
  ('hostile INITCOND', $q$CREATE AGGREGATE sec_bad_init(spillagg_state) (SFUNC = sec_pick, STYPE = spillagg_state,
     INITCOND = '\x5350414701')$q$)) v(label, q);

-- 8. A finalizer of stored states as the FINALFUNC of the attacker's own
-- aggregate over spillagg_state: it gets the stored bytes inside an
-- aggregate call, and must read them as bytes.  The answer is the one the
-- finalizer gives called directly on the state the aggregate ends with
-- (sec_pick keeps the first non-NULL state), or a clean ERROR for a state
-- of the wrong kind.  Last in this file: today's build may crash here.
CREATE TABLE sec_rows (id int, cd spillagg_state, cm spillagg_state, tk spillagg_state, sum_i spillagg_state,
                       avg_n spillagg_state, min_f spillagg_state, max_i spillagg_state, var_n spillagg_state,
                       sd_f spillagg_state, var_i spillagg_state);
INSERT INTO sec_rows VALUES (1, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL);
INSERT INTO sec_rows SELECT 2, cd, cm, tk, sum_i, avg_n, min_f, max_i, var_n, sd_f, var_i FROM sec_st;
INSERT INTO sec_rows SELECT 3, count_distinct_state(k), count_map_state(k), top_k_state(k, 3), sum_map_state(k, v::int),
       avg_map_state(k, v), min_map_state(k, v::float4), max_map_state(k, v::int8), variance_map_state(k, v),
       stddev_pop_map_state(k, v::float8), var_pop_map_state(k, v::int2)
FROM sec_src WHERE ik < 5;
-- top_k_final's second argument names the key type: an aggregate over
-- that argument (FINALFUNC_EXTRA) whose transition function fetches the
-- stored state.
CREATE FUNCTION sec_fetch_tk(spillagg_state, anyelement) RETURNS spillagg_state LANGUAGE sql
AS 'SELECT coalesce($1, (SELECT tk FROM sec_st))';
CREATE TABLE sec_aggs (n serial, final text, col text);
INSERT INTO sec_aggs (final, col) VALUES
  ('count_distinct_final', 'cd'), ('count_map_final', 'cm'), ('histogram_final', 'tk'), ('sum_map_final', 'sum_i'),
  ('avg_map_final', 'avg_n'), ('min_map_final', 'min_f'), ('max_map_final', 'max_i'), ('variance_map_final', 'var_n'),
  ('var_samp_map_final', 'sd_f'), ('var_pop_map_final', 'var_i'), ('stddev_map_final', 'var_n'),
  ('stddev_samp_map_final', 'sd_f'), ('stddev_pop_map_final', 'var_i');
DO $$
DECLARE a record;
BEGIN
  FOR a IN SELECT * FROM sec_aggs LOOP
    EXECUTE format('CREATE AGGREGATE sec_agg_%1$s(spillagg_state) (SFUNC = sec_pick, STYPE = spillagg_state,
                    FINALFUNC = %1$s)', a.final);
  END LOOP;
END $$;
CREATE AGGREGATE sec_agg_top_k_final(anyelement) (SFUNC = sec_fetch_tk, STYPE = spillagg_state,
                                                  FINALFUNC = top_k_final, FINALFUNC_EXTRA);
SELECT a.final, sec_try(format('SELECT (SELECT sec_agg_%1$s(%2$s ORDER BY id)::text FROM sec_rows)
                                       IS NOT DISTINCT FROM (SELECT %1$s(%2$s)::text FROM sec_st)', a.final, a.col))
         AS same_as_direct
FROM sec_aggs a ORDER BY n;
SELECT sec_agg_top_k_final(NULL::text) = (SELECT top_k_final(tk, NULL::text) FROM sec_st) AS top_k_same_as_direct
FROM generate_series(1, 3);
-- States of the wrong kind: ERROR 22023, as called directly.
SELECT sec_try('SELECT sec_agg_sum_map_final(cm ORDER BY id)::text FROM sec_rows') AS sum_of_count_state,
       sec_try('SELECT sec_agg_count_map_final(var_i ORDER BY id)::text FROM sec_rows') AS count_of_moments_state,
       sec_try('SELECT sec_agg_histogram_final(cd ORDER BY id)::text FROM sec_rows') AS histogram_of_distinct_state;
-- Per group, as a window function (the finalizer runs again on the same
-- state), and from an INITCOND state over no state rows at all.
SELECT id, sec_agg_count_distinct_final(cd) OVER (ORDER BY id) AS running_count_distinct,
       sec_agg_count_map_final(cm) OVER (ORDER BY id)
         IS NOT DISTINCT FROM CASE WHEN id > 1 THEN (SELECT count_map_final(cm) FROM sec_st) END AS running_count_map_ok
FROM sec_rows ORDER BY id;
SELECT id % 2 AS grp, sec_agg_count_distinct_final(cd ORDER BY id) AS cd,
       sec_agg_stddev_pop_map_final(var_i ORDER BY id)::text
         = stddev_pop_map_final((array_agg(var_i ORDER BY id) FILTER (WHERE var_i IS NOT NULL))[1])::text AS stddev_same
FROM sec_rows GROUP BY 1 ORDER BY 1;
SELECT format('CREATE AGGREGATE sec_agg_init(int) (SFUNC = sec_keep, STYPE = spillagg_state, INITCOND = %L,
               FINALFUNC = count_map_final)', cm::text) AS ddl FROM sec_st \gset
CREATE FUNCTION sec_keep(spillagg_state, int) RETURNS spillagg_state LANGUAGE sql AS 'SELECT $1';
:ddl;
SELECT sec_agg_init(x)::text = (SELECT count_map_final(cm)::text FROM sec_st) AS initcond_same_as_direct
FROM generate_series(1, 3) x;
SELECT sec_agg_init(x)::text = (SELECT count_map_final(cm)::text FROM sec_st) AS initcond_no_rows
FROM generate_series(1, 3) x WHERE false;
-- In a parallel plan (the finalizer runs in the leader after combining).
CREATE AGGREGATE sec_agg_par(spillagg_state) (SFUNC = sec_pick, STYPE = spillagg_state, COMBINEFUNC = sec_pick,
                                             FINALFUNC = count_distinct_final, PARALLEL = SAFE);
CREATE TABLE sec_many AS SELECT i, CASE WHEN i = 1 THEN (SELECT cd FROM sec_st) END AS s FROM generate_series(1, 50000) i;
SET parallel_setup_cost = 0;
SET parallel_tuple_cost = 0;
SET min_parallel_table_scan_size = 0;
SET max_parallel_workers_per_gather = 2;
SELECT sec_agg_par(s) AS parallel_count_distinct, (SELECT count_distinct_final(cd) FROM sec_st) AS direct FROM sec_many;
SET max_parallel_workers_per_gather = 0;

-- 9. spillagg's transition, combine and final functions in the attacker's
-- own aggregates over spillagg_state: the live state (an expanded object)
-- reaches the attacker's final functions, PostgreSQL flattens it, flat
-- values (INITCOND, the attacker's transition results) reach spillagg's
-- transition and combine functions, which expand them (same kind, key type
-- and value type) or refuse them (22023); never a crash.
CREATE FUNCTION sec_as_text(spillagg_state) RETURNS text LANGUAGE sql AS 'SELECT $1::text';
CREATE FUNCTION sec_plpgsql_final(s spillagg_state) RETURNS jsonb LANGUAGE plpgsql AS $$
DECLARE copy spillagg_state := s;
BEGIN
  RETURN count_map_final(copy);
END $$;
CREATE AGGREGATE sec_raw(text) (SFUNC = spillagg_count_map_transfn, STYPE = spillagg_state);
CREATE AGGREGATE sec_text_final(text) (SFUNC = spillagg_count_map_transfn, STYPE = spillagg_state,
                                       FINALFUNC = sec_as_text);
CREATE AGGREGATE sec_plpgsql(text) (SFUNC = spillagg_count_map_transfn, STYPE = spillagg_state,
                                    FINALFUNC = sec_plpgsql_final);
CREATE AGGREGATE sec_wrong_final(text, int) (SFUNC = spillagg_sum_transfn, STYPE = spillagg_state,
                                             FINALFUNC = count_map_final);
CREATE AGGREGATE sec_cd_of_sum(text, int) (SFUNC = spillagg_sum_transfn, STYPE = spillagg_state,
                                           FINALFUNC = count_distinct_final);
SELECT string_agg(format('CREATE AGGREGATE sec_init_%s(%s) (SFUNC = spillagg_count_map_transfn, STYPE = spillagg_state,
               INITCOND = %L, FINALFUNC = count_map_final);', n, t, st::text), E'\n') AS ddl
FROM sec_st, LATERAL (VALUES ('cm', 'text', cm), ('cm_int', 'text', cm_int), ('sum_n', 'text', sum_n),
                             ('cm_on_int', 'int', cm)) v(n, t, st) \gset
:ddl
CREATE AGGREGATE sec_rollup_w(spillagg_state) (SFUNC = spillagg_rollup_transfn, STYPE = spillagg_state);
CREATE AGGREGATE sec_combine_par(text) (SFUNC = spillagg_count_map_transfn, STYPE = spillagg_state,
                                        COMBINEFUNC = sec_pick, FINALFUNC = count_map_final, PARALLEL = SAFE);
CREATE AGGREGATE sec_pick_combine(spillagg_state) (SFUNC = sec_pick, STYPE = spillagg_state,
                                                   COMBINEFUNC = spillagg_combine, FINALFUNC = count_map_final,
                                                   PARALLEL = SAFE);
SELECT label, sec_try(q) AS outcome FROM (VALUES
  ('no FINALFUNC: the flattened state',
   'SELECT count_map_final(sec_raw(k)) = (SELECT count_map(k) FROM sec_src) FROM sec_src'),
  ('no FINALFUNC, GROUP BY',
   'SELECT bool_and(count_map_final(m) = n) FROM (SELECT ik, sec_raw(k) AS m, count_map(k) AS n FROM sec_src GROUP BY ik) x'),
  ('FINALFUNC sql: state as text',
   'SELECT count_map_final(sec_text_final(k)::spillagg_state) = (SELECT count_map(k) FROM sec_src) FROM sec_src'),
  ('FINALFUNC plpgsql: state copied to a variable',
   'SELECT sec_plpgsql(k) = (SELECT count_map(k) FROM sec_src) FROM sec_src'),
  ('sum state to count_map_final', 'SELECT sec_wrong_final(k, ik)::text FROM sec_src'),
  ('sum state to count_distinct_final', 'SELECT sec_cd_of_sum(k, ik)::text FROM sec_src'),
  ('INITCOND count_map_state: merged with the rows',
   $q$SELECT sec_init_cm(k) = (SELECT count_map(k) FROM (SELECT k FROM sec_src UNION ALL SELECT k FROM sec_src) x) FROM sec_src$q$),
  ('INITCOND, no rows', 'SELECT sec_init_cm(k) = (SELECT count_map(k) FROM sec_src) FROM sec_src WHERE false'),
  ('INITCOND int keys, text rows', 'SELECT sec_init_cm_int(k)::text FROM sec_src'),
  ('INITCOND sum state, count rows', 'SELECT sec_init_sum_n(k)::text FROM sec_src'),
  ('INITCOND text keys, int rows', 'SELECT sec_init_cm_on_int(ik)::text FROM sec_src'),
  ('as a window function', 'SELECT count(*) FROM (SELECT sec_raw(k) OVER (ORDER BY i) AS w FROM sec_src) x WHERE w IS NOT NULL'),
  ('rollup transition as a window function',
   'SELECT count(*) FROM (SELECT sec_rollup_w(cm) OVER () AS w FROM sec_st) x WHERE w IS NOT NULL'),
  ('transition functions outside an aggregate', 'SELECT spillagg_count_map_transfn(cm, ''a''::text)::text FROM sec_st'),
  ('combine outside an aggregate', 'SELECT spillagg_combine(cm, cm)::text FROM sec_st'),
  ('spillagg_to_state of a stored state', 'SELECT spillagg_to_state(cm)::text = cm::text FROM sec_st'),
  ('top_k final with another key type', 'SELECT spillagg_top_k_finalfn(tk, NULL::int, 3)::text FROM sec_st'),
  ('top_k final, text keys', 'SELECT spillagg_top_k_finalfn(tk, NULL::text, 3) = top_k_final(tk, NULL::text) FROM sec_st')
) v(label, q);
-- In parallel plans: spillagg's partial states (flattened by the workers)
-- combined by the attacker's function, and the attacker's states combined
-- by spillagg's.
SET parallel_setup_cost = 0;
SET parallel_tuple_cost = 0;
SET min_parallel_table_scan_size = 0;
SET max_parallel_workers_per_gather = 2;
CREATE TABLE sec_big AS SELECT i, 'k' || (i % 30) AS k, CASE WHEN i = 7 THEN (SELECT cm FROM sec_st) END AS s
FROM generate_series(1, 60000) i;
ANALYZE sec_big;
EXPLAIN (COSTS OFF) SELECT sec_combine_par(k) FROM sec_big;
SELECT (SELECT count(*) FROM jsonb_object_keys(sec_combine_par(k))) AS keys_of_one_partial FROM sec_big;
SELECT sec_pick_combine(s) = (SELECT count_map_final(cm) FROM sec_st) AS combined_by_spillagg FROM sec_big;
SET max_parallel_workers_per_gather = 0;

-- The backend is still there.
SELECT count_distinct_final(cd) AS alive FROM sec_st;

RESET SESSION AUTHORIZATION;
DROP OWNED BY regress_spillagg_attacker;
DROP ROLE regress_spillagg_attacker;
