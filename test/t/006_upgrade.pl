# Copyright: spillagg authors.
#
# Upgrade from 0.1 (transition type internal) to 0.2 (spillagg_state):
# - 0.1's install script still works with this library (the window between
#   installing the new library and ALTER EXTENSION UPDATE), serial and
#   parallel (0.1's serial/deserial functions);
# - a view over a 0.1 aggregate stops the update cleanly;
# - ALTER EXTENSION spillagg UPDATE gives exactly the catalog of a fresh 0.2
#   install (every object, definition and comment);
# - stored states written by the 0.1 release (test/t/data/states-0.1.copy,
#   every kind and value type) are read by 0.2: each X_final equals
#   PostgreSQL's own answer per key, alone and rolled up with a 0.2 state.
use strict;
use warnings;
use Cwd qw(abs_path);
use File::Basename qw(dirname);
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;

my $data = dirname(abs_path(__FILE__)) . '/data';

my $node = PostgreSQL::Test::Cluster->new('upgrade');
$node->init;
$node->append_conf('postgresql.conf', "max_parallel_workers = 4\n");
$node->start;

sub query { return $node->safe_psql('postgres', $_[0]); }

# What an extension is made of: every member with its definition and comment.
my $catalog_sql = q{
SELECT pg_describe_object(d.classid, d.objid, 0) AS object,
       CASE d.classid
         WHEN 'pg_proc'::regclass THEN
           CASE WHEN p.prokind = 'a' THEN
             format('aggregate sfunc=%s final=%s combine=%s serial=%s deserial=%s stype=%s space=%s extra=%s modify=%s init=%s parallel=%s',
                    a.aggtransfn::regprocedure, a.aggfinalfn::regprocedure, a.aggcombinefn::regprocedure,
                    a.aggserialfn, a.aggdeserialfn, a.aggtranstype::regtype, a.aggtransspace,
                    a.aggfinalextra, a.aggfinalmodify, a.agginitval, p.proparallel)
           ELSE pg_get_functiondef(p.oid) END
         WHEN 'pg_type'::regclass THEN
           (SELECT format('type in=%s out=%s recv=%s send=%s len=%s storage=%s align=%s', typinput, typoutput,
                          typreceive, typsend, typlen, typstorage, typalign) FROM pg_type WHERE oid = d.objid)
       END AS definition,
       obj_description(d.objid, (SELECT relname FROM pg_class WHERE oid = d.classid)) AS comment
FROM pg_depend d LEFT JOIN pg_proc p ON d.classid = 'pg_proc'::regclass AND p.oid = d.objid
LEFT JOIN pg_aggregate a ON a.aggfnoid = p.oid
WHERE d.refclassid = 'pg_extension'::regclass AND d.deptype = 'e'
  AND d.refobjid = (SELECT oid FROM pg_extension WHERE extname = 'spillagg')
ORDER BY 1;
};

# ---- 0.1's definitions with this library ---------------------------------------

query(q{CREATE EXTENSION spillagg VERSION '0.1'});
is(query(q{SELECT extversion FROM pg_extension WHERE extname = 'spillagg'}), '0.1', 'installed 0.1');
query(slurp_file("$data/states-0.1.sql"));    # upg_data, upg_value(), upg_states (made now)
query(qq{CREATE TABLE upg_fixture (LIKE upg_states); COPY upg_fixture FROM '$data/states-0.1.copy'});
is(query('SELECT count(*) FROM upg_fixture'), '63', 'the 0.1 release\'s states load (format 1)');

query(q{
CREATE TABLE upg_big AS SELECT i, (i * 7919) % 50000 AS k, i % 1000 - 500 AS v FROM generate_series(1, 200000) i;
ANALYZE upg_big;
CREATE TABLE upg_big_native AS SELECT
  (SELECT count(DISTINCT k) FROM upg_big) AS cd,
  (SELECT jsonb_object_agg(k % 100, s) FROM (SELECT k % 100 AS k, sum(v) AS s FROM upg_big GROUP BY 1) x) AS sm;
});
my $check_big = q{
SELECT (SELECT count_distinct(k) FROM upg_big) = cd, (SELECT sum_map(k % 100, v) FROM upg_big) = sm FROM upg_big_native;
};
is(query($check_big), 't|t', '0.1 aggregates answer serially');
my $parallel = q{
SET parallel_setup_cost = 0; SET parallel_tuple_cost = 0; SET min_parallel_table_scan_size = 0;
SET max_parallel_workers_per_gather = 2; SET spillagg.work_mem = 256;
};
like(query($parallel . 'EXPLAIN SELECT count_distinct(k) FROM upg_big'), qr/Partial Aggregate/,
	'0.1 aggregates: a parallel plan');
is(query($parallel . $check_big), 't|t', '0.1 aggregates answer in parallel, spilled (serial/deserial of 0.1)');

# ---- the update ------------------------------------------------------------------

query('CREATE VIEW upg_view AS SELECT count_distinct(k) FROM upg_data');
my ($rc, $out, $err) = $node->psql('postgres', 'ALTER EXTENSION spillagg UPDATE');
isnt($rc, 0, 'a view over a 0.1 aggregate stops the update');
like($err, qr/cannot drop .* because other objects depend on it/, '... with PostgreSQL\'s dependency error');
is(query(q{SELECT extversion FROM pg_extension WHERE extname = 'spillagg'}), '0.1', '... and nothing changed');
query('DROP VIEW upg_view');

query('ALTER EXTENSION spillagg UPDATE');
is(query(q{SELECT extversion FROM pg_extension WHERE extname = 'spillagg'}), '0.2', 'updated to 0.2');
query('CREATE DATABASE fresh');
$node->safe_psql('fresh', 'CREATE EXTENSION spillagg');
my $updated = query($catalog_sql);
my $fresh = $node->safe_psql('fresh', $catalog_sql);
cmp_ok(scalar(split /\n/, $fresh), '>', 1800, 'a fresh 0.2 install lists its objects');
is($updated, $fresh, 'the updated catalog equals a fresh 0.2 install (objects, definitions, comments)');
is(query($parallel . $check_big), 't|t', '0.2 aggregates answer in parallel, spilled');

# ---- stored states of 0.1 read by 0.2 --------------------------------------------

query(q{
-- PostgreSQL's answer for a state kind over a relation.
CREATE FUNCTION upg_native(agg text, vt text, rel text) RETURNS jsonb LANGUAGE plpgsql AS $$
DECLARE
  r jsonb;
  builtin text := CASE agg WHEN 'variance_map' THEN 'variance' WHEN 'stddev_map' THEN 'stddev'
                  ELSE replace(agg, '_map', '') END;
BEGIN
  IF agg = 'count_distinct' THEN
    EXECUTE format('SELECT to_jsonb(count(DISTINCT k)) FROM %s', rel) INTO r;
  ELSIF agg = 'count_map' THEN
    EXECUTE format('SELECT jsonb_object_agg(ks, c) FROM (SELECT ks, count(*) AS c FROM %s GROUP BY ks) x', rel) INTO r;
  ELSIF agg = 'top_k' THEN
    EXECUTE format('SELECT to_jsonb(array_agg(ks ORDER BY c DESC, ks)) FROM
                      (SELECT ks, count(*) AS c FROM %s GROUP BY ks ORDER BY c DESC, ks LIMIT 5) x', rel) INTO r;
  ELSE
    EXECUTE format('SELECT jsonb_object_agg(ks, r) FROM (SELECT ks, %s(%s) AS r FROM %s GROUP BY ks) x',
                   builtin, upg_value(vt), rel) INTO r;
  END IF;
  RETURN r;
END $$;
-- The state's answer.
CREATE FUNCTION upg_final(agg text, s spillagg_state) RETURNS jsonb LANGUAGE plpgsql AS $$
DECLARE r jsonb;
BEGIN
  IF agg = 'count_distinct' THEN r := to_jsonb(count_distinct_final(s));
  ELSIF agg = 'top_k' THEN r := to_jsonb(top_k_final(s, NULL::text));
  ELSE EXECUTE format('SELECT %I($1)', agg || '_final') USING s INTO r;
  END IF;
  RETURN r;
END $$;
-- Equal per key; floats (variance, stddev) within 1e-9 relative.
CREATE FUNCTION upg_same(a jsonb, b jsonb) RETURNS boolean LANGUAGE sql AS $$
  SELECT CASE WHEN jsonb_typeof(a) = 'object' AND jsonb_typeof(b) = 'object' THEN
    NOT EXISTS (SELECT FROM jsonb_each(a) x FULL JOIN jsonb_each(b) y USING (key)
                WHERE x.value IS NULL OR y.value IS NULL
                   OR NOT (x.value = y.value OR (jsonb_typeof(x.value) = 'number' AND jsonb_typeof(y.value) = 'number'
                           AND abs(x.value::numeric - y.value::numeric)
                               <= 1e-9 * greatest(abs(x.value::numeric), abs(y.value::numeric)))))
  ELSE a = b END
$$;
CREATE TABLE upg_data2 AS SELECT * FROM upg_data UNION ALL SELECT * FROM upg_data;
});

my $wrong = query(q{
SELECT string_agg(format('%s(%s) %s', f.agg, f.vt, f.what), ', ')
FROM (
  SELECT agg, vt, 'written by 0.1' AS what, upg_same(upg_final(agg, state), upg_native(agg, vt, 'upg_data')) AS ok
  FROM upg_fixture
  UNION ALL
  SELECT agg, vt, 'made by 0.1''s definitions with this library',
         upg_same(upg_final(agg, state), upg_native(agg, vt, 'upg_data'))
  FROM upg_states
  UNION ALL
  SELECT f.agg, f.vt, 'written by 0.1, rolled up with a 0.2 state',
         upg_same(upg_final(f.agg, (SELECT rollup(x) FROM (VALUES (f.state), (s.state)) v(x))),
                  upg_native(f.agg, f.vt, 'upg_data2'))
  FROM upg_fixture f JOIN upg_states s ON s.agg = f.agg AND s.vt IS NOT DISTINCT FROM f.vt
) f WHERE ok IS NOT TRUE;
});
is($wrong, '', 'every 0.1 state (63 kinds) finalizes to PostgreSQL\'s answer, alone and rolled up with 0.2 states');
is(query(q{SELECT count(*) FROM upg_fixture WHERE upg_final(agg, state) IS NULL}), '0', 'no 0.1 state reads as empty');

# A format-1 float sum state relabelled as format 2 (and the reverse) is refused.
($rc, $out, $err) = $node->psql('postgres', q{
SELECT sum_map_final(overlay(state::text placing '02' from 11 for 2)::spillagg_state)
FROM upg_fixture WHERE agg = 'sum_map' AND vt = 'real'});
like($err, qr/invalid spillagg state/, 'a format-1 float state read as format 2: clean ERROR');

$node->stop;
done_testing();
