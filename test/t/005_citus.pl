# Copyright: spillagg authors.
#
# Citus pushes spillagg's partial aggregation down to its workers. A Citus
# coordinator and two workers on localhost; spillagg on every node; a
# distributed table of 1M rows whose keys are not the distribution column.
# For every spillagg aggregate, whole table and GROUP BY:
#   - EXPLAIN VERBOSE shows worker_partial_agg on the workers and
#     coord_combine_agg on the coordinator (no raw rows pulled);
#   - answers equal PostgreSQL's native query on the distributed table and on
#     a local copy, per key, with spills forced on the workers
#     (spillagg.work_mem = 64 on every node; the workers log temp files);
#   - the coordinator's peak memory (VmHWM of its backend) stays within
#     budget + 16 MB plus one partial state being read;
#   - the two-step path across nodes: X_state per shard combined on the
#     coordinator, states stored in a distributed table, rollup pushed down;
#   - no temporary file is left on any node.
# Skips when Citus is not installed (test/build-citus.sh builds it).
use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use FindBin;
use lib $FindBin::RealBin;
use SpillaggTest;
use Time::HiRes qw(usleep gettimeofday tv_interval);

my $pkglibdir = `pg_config --pkglibdir`;
chomp $pkglibdir;
if (!-f "$pkglibdir/citus.so")
{
	plan skip_all => "Citus is not installed in $pkglibdir (run test/build-citus.sh CITUS_TARBALL)";
}

my $budget_kb = 64;
my $slack_kb = 16 * 1024;

my @nodes;
for my $name ('coordinator', 'worker1', 'worker2')
{
	my $node = PostgreSQL::Test::Cluster->new($name);
	$node->init;
	$node->append_conf(
		'postgresql.conf', qq{
shared_preload_libraries = 'citus'
max_prepared_transactions = 20
listen_addresses = '127.0.0.1'
citus.node_conninfo = 'sslmode=disable'
jit = off
max_parallel_workers_per_gather = 0
spillagg.work_mem = 64
log_temp_files = 0
});
	$node->append_conf('pg_hba.conf', "host all all 127.0.0.1/32 trust\n");
	$node->start;
	$node->safe_psql('postgres', 'CREATE EXTENSION citus; CREATE EXTENSION spillagg;');
	push @nodes, $node;
}
my ($coord, @workers) = @nodes;
$coord->safe_psql('postgres', "SELECT citus_set_coordinator_host('127.0.0.1', " . $coord->port . ")");
$coord->safe_psql('postgres', "SELECT citus_add_node('127.0.0.1', " . $_->port . ")") for @workers;
is($coord->safe_psql('postgres', 'SELECT count(*) FROM citus_get_active_worker_nodes()'), '2', 'two Citus workers');

# t: 1M rows, distributed by id over 4 shards; k: ~100,000 int keys, s:
# ~50,000 text keys (neither is the distribution column), g: 7 groups.
my $rows = q{
  SELECT i AS id,
         ((hashint4(i) & 2147483647) % 100000)::int AS k,
         'key' || ((hashint4(i + 7) & 2147483647) % 50000) AS s,
         (i % 7)::int AS g,
         (i % 1000 - 500)::int AS v,
         ((i % 997)::numeric / 8) AS n,
         ((i % 1009) / 7.0)::float8 AS f
  FROM generate_series(1, 1000000) AS i};
$coord->safe_psql('postgres', qq{
SET citus.shard_count = 4;
CREATE TABLE t (id int, k int, s text, g int, v int, n numeric, f float8);
SELECT create_distributed_table('t', 'id');
INSERT INTO t $rows;
CREATE TABLE t_local AS $rows;
ANALYZE t; ANALYZE t_local;
});
is($coord->safe_psql('postgres', 'SELECT count(*) FROM t'), '1000000', 'distributed table has 1M rows');

# Map results are compared key by key: same keys, each value equal (numbers
# within 1e-12 relative: sum_map over float8).
$coord->safe_psql('postgres', q{
CREATE FUNCTION map_same(a jsonb, b jsonb) RETURNS bool LANGUAGE sql IMMUTABLE AS $$
  SELECT CASE WHEN a IS NULL OR b IS NULL THEN a IS NOT DISTINCT FROM b ELSE
    (SELECT count(*) FROM jsonb_object_keys(a)) = (SELECT count(*) FROM jsonb_object_keys(b))
    AND (SELECT count(*) FILTER (WHERE CASE
           WHEN jsonb_typeof(x.value) = 'number' AND jsonb_typeof(y.value) = 'number'
           THEN abs(x.value::text::float8 - y.value::text::float8) <= 1e-12 * greatest(1, abs(y.value::text::float8))
           ELSE x.value = y.value END) = count(*) AND count(*) = (SELECT count(*) FROM jsonb_object_keys(b))
         FROM jsonb_each(a) x JOIN jsonb_each(b) y USING (key)) END $$;
});

# Every aggregate: [label, spillagg expression, native query over a table
# %T with grouping columns %G (a subquery giving one row per group)].
my @aggs = (
	[ 'count_distinct(k)', 'count_distinct(k)', 'SELECT %G count(DISTINCT k) AS r FROM %T GROUP BY %G0' ],
	[ 'count_distinct(s)', 'count_distinct(s)', 'SELECT %G count(DISTINCT s) AS r FROM %T GROUP BY %G0' ],
	[ 'count_map(k)', 'count_map(k)',
	  'SELECT %G jsonb_object_agg(k, c) AS r FROM (SELECT %G k, count(*) AS c FROM %T GROUP BY %G k) x GROUP BY %G0' ],
	[ 'histogram(s)', 'histogram(s)',
	  'SELECT %G jsonb_object_agg(s, c) AS r FROM (SELECT %G s, count(*) AS c FROM %T GROUP BY %G s) x GROUP BY %G0' ],
	[ 'sum_map(k, v)', 'sum_map(k, v)',
	  'SELECT %G jsonb_object_agg(k, a) AS r FROM (SELECT %G k, sum(v) AS a FROM %T GROUP BY %G k) x GROUP BY %G0' ],
	[ 'sum_map(s, f)', 'sum_map(s, f)',
	  'SELECT %G jsonb_object_agg(s, a) AS r FROM (SELECT %G s, sum(f) AS a FROM %T GROUP BY %G s) x GROUP BY %G0' ],
	[ 'avg_map(k, v)', 'avg_map(k, v)',
	  'SELECT %G jsonb_object_agg(k, a) AS r FROM (SELECT %G k, avg(v) AS a FROM %T GROUP BY %G k) x GROUP BY %G0' ],
	[ 'min_map(k, n)', 'min_map(k, n)',
	  'SELECT %G jsonb_object_agg(k, a) AS r FROM (SELECT %G k, min(n) AS a FROM %T GROUP BY %G k) x GROUP BY %G0' ],
	[ 'max_map(s, v)', 'max_map(s, v)',
	  'SELECT %G jsonb_object_agg(s, a) AS r FROM (SELECT %G s, max(v) AS a FROM %T GROUP BY %G s) x GROUP BY %G0' ],
	[ 'variance_map(k, n)', 'variance_map(k, n)',
	  'SELECT %G jsonb_object_agg(k, a) AS r FROM (SELECT %G k, variance(n) AS a FROM %T GROUP BY %G k) x GROUP BY %G0' ],
	[ 'stddev_map(k, v)', 'stddev_map(k, v)',
	  'SELECT %G jsonb_object_agg(k, a) AS r FROM (SELECT %G k, stddev(v) AS a FROM %T GROUP BY %G k) x GROUP BY %G0' ],
	[ 'top_k(k, 5)', 'top_k(k, 5)',
	  'SELECT %G (array_agg(k ORDER BY c DESC, k))[1:5] AS r FROM (SELECT %G k, count(*) AS c FROM %T GROUP BY %G k) x GROUP BY %G0' ],
);

sub native_sql
{
	my ($tmpl, $table, $grouped) = @_;
	my $sql = $tmpl;
	$sql =~ s/%T/$table/g;
	if ($grouped)
	{
		$sql =~ s/%G0/g/g;
		$sql =~ s/%G /g, /g;
	}
	else
	{
		$sql =~ s/ GROUP BY %G0//g;
		$sql =~ s/%G //g;
	}
	return $sql;
}

sub compare_expr
{
	my ($label) = @_;
	return $label =~ /^(count_distinct|top_k)/ ? 'a.r IS NOT DISTINCT FROM b.r' : 'map_same(a.r, b.r)';
}

my $worker_log_pos = [ map { -s $_->logfile } @workers ];
for my $grouped (0, 1)
{
	my $mode = $grouped ? 'GROUP BY g' : 'whole table';
	my $sel = $grouped ? 'g,' : '';
	my $grp = $grouped ? ' GROUP BY g' : '';
	my $join = $grouped ? 'FULL JOIN r_local b USING (g)' : 'CROSS JOIN r_local b';
	for my $a (@aggs)
	{
		my ($label, $expr, $tmpl) = @$a;
		my $q = "SELECT $sel $expr AS r FROM t$grp";
		my $plan = $coord->safe_psql('postgres', "EXPLAIN (VERBOSE, COSTS OFF) $q");
		ok($plan =~ /coord_combine_agg/ && $plan =~ /worker_partial_agg/,
			"$label, $mode: pushed down (worker_partial_agg, coord_combine_agg)")
		  or diag($plan);
		my $nat_dist = native_sql($tmpl, 't', $grouped);
		my $nat_local = native_sql($tmpl, 't_local', $grouped);
		my $cmp = compare_expr($label);
		my $t0 = [gettimeofday()];
		my $res = $coord->safe_psql('postgres', qq{
CREATE TEMP TABLE r_spill AS $q;
CREATE TEMP TABLE r_dist AS $nat_dist;
CREATE TEMP TABLE r_local AS $nat_local;
SELECT (SELECT count(*) FROM r_spill) || ' groups, '
    || (SELECT count(*) FROM r_spill a $join WHERE NOT coalesce($cmp, false)) || ' differ from local, '
    || (SELECT count(*) FROM r_dist a $join WHERE NOT coalesce($cmp, false)) || ' native differ';
});
		my $ms = int(1000 * tv_interval($t0));
		my $groups = $grouped ? 7 : 1;
		is($res, "$groups groups, 0 differ from local, 0 native differ",
			"$label, $mode: equals native on the distributed table and on the local copy ($ms ms)");
	}
}

# Other key types (here bytea and inet) take the anyelement aggregates, whose
# transition type is internal: Citus does not push them down (it could not
# check their polymorphic argument types) and computes them on the
# coordinator over the rows, with the same answers.
for my $grouped (0, 1)
{
	my $mode = $grouped ? 'GROUP BY g' : 'whole table';
	my $sel = $grouped ? 'g,' : '';
	my $grp = $grouped ? ' GROUP BY g' : '';
	my $join = $grouped ? 'FULL JOIN r_local b USING (g)' : 'CROSS JOIN r_local b';
	for my $a (
		[ 'count_distinct(bytea)', 'count_distinct(s::bytea)', 'SELECT %G count(DISTINCT s::bytea) AS r FROM %T GROUP BY %G0' ],
		[ 'sum_map(inet, v)', q{sum_map('10.0.0.0'::inet + (k % 1000), v)},
		  q{SELECT %G jsonb_object_agg(a, c) AS r FROM (SELECT %G '10.0.0.0'::inet + (k % 1000) AS a, sum(v) AS c FROM %T GROUP BY %G a) x GROUP BY %G0} ])
	{
		my ($label, $expr, $tmpl) = @$a;
		my $q = "SELECT $sel $expr AS r FROM t$grp";
		my $plan = $coord->safe_psql('postgres', "EXPLAIN (VERBOSE, COSTS OFF) $q");
		ok($plan !~ /worker_partial_agg/, "$label, $mode: computed on the coordinator (not pushed down)")
		  or diag($plan);
		my $cmp = compare_expr($label);
		my $res = $coord->safe_psql('postgres', qq{
CREATE TEMP TABLE r_spill AS $q;
CREATE TEMP TABLE r_dist AS @{[ native_sql($tmpl, 't', $grouped) ]};
CREATE TEMP TABLE r_local AS @{[ native_sql($tmpl, 't_local', $grouped) ]};
SELECT (SELECT count(*) FROM r_spill) || ' groups, '
    || (SELECT count(*) FROM r_spill a $join WHERE NOT coalesce($cmp, false)) || ' differ from local, '
    || (SELECT count(*) FROM r_dist a $join WHERE NOT coalesce($cmp, false)) || ' native differ';
});
		my $groups = $grouped ? 7 : 1;
		is($res, "$groups groups, 0 differ from local, 0 native differ", "$label, $mode: equals native");
	}
}

# Citus hands the read-write state to the aggregate's final function, which
# may be anyone's: a PL/pgSQL final that assigns it to a variable takes the
# object over and deletes its context on exit; the state lives on (a new
# context replaces the deleted one) and answers stay right. (Citus
# propagates the function and the aggregate to the workers.)
$coord->safe_psql('postgres', q{
CREATE FUNCTION takeover_final(s spillagg_state) RETURNS bigint LANGUAGE plpgsql AS $$
DECLARE v spillagg_state;
BEGIN
  v := s;
  RETURN count_distinct_final(v) + count_distinct_final(s);
END $$;
CREATE AGGREGATE takeover_cd(integer) (SFUNC = spillagg_count_distinct_transfn, STYPE = spillagg_state,
  COMBINEFUNC = spillagg_combine, FINALFUNC = takeover_final);
});
{
	my $q = 'SELECT g, takeover_cd(k) AS r FROM t GROUP BY g';
	my $plan = $coord->safe_psql('postgres', "EXPLAIN (VERBOSE, COSTS OFF) $q");
	ok($plan =~ /worker_partial_agg/ && $plan =~ /coord_combine_agg/, 'a user aggregate with a PL/pgSQL final is pushed down')
	  or diag($plan);
	is($coord->safe_psql('postgres', qq{
SELECT count(*) FROM ($q) a JOIN (SELECT g, 2 * count(DISTINCT k) AS r FROM t_local GROUP BY g) b USING (g) WHERE a.r = b.r}),
		'7', 'a final that takes the state over: right answers, no crash');
}

# Spills were forced on the workers: their logs show temporary files of the
# worker_partial_agg queries.
for my $i (0 .. $#workers)
{
	my $log = slurp_file($workers[$i]->logfile, $worker_log_pos->[$i]);
	my $n = () = $log =~ /temporary file: path/g;
	cmp_ok($n, '>', 0, "worker " . ($i + 1) . " spilled ($n temporary files logged)");
}

###########################################################################
# Two-step aggregation across nodes
###########################################################################
{
	my $res = $coord->safe_psql('postgres', q{
CREATE TEMP TABLE st AS SELECT g, count_map_state(k) AS s, top_k_state(k, 5) AS tk, sum_map_state(s, v) AS sm FROM t GROUP BY g;
CREATE TABLE st_dist (g int, s spillagg_state, sm spillagg_state);
SELECT create_distributed_table('st_dist', 'g');
INSERT INTO st_dist SELECT g, s, sm FROM st;
SELECT
  (SELECT count(*) FROM st a JOIN (SELECT g, count_map(k) AS r FROM t_local GROUP BY g) b USING (g)
   WHERE map_same(count_map_final(a.s), b.r)) || ' ' ||
  map_same((SELECT count_map_final(rollup(s)) FROM st), (SELECT count_map(k) FROM t_local)) || ' ' ||
  map_same((SELECT count_map_final(rollup(s)) FROM st_dist), (SELECT count_map(k) FROM t_local)) || ' ' ||
  map_same((SELECT sum_map_final(rollup(sm)) FROM st_dist), (SELECT sum_map(s, v) FROM t_local)) || ' ' ||
  ((SELECT top_k_final(rollup(tk), NULL::int) FROM st) = (SELECT top_k(k, 5) FROM t_local))::text;
});
	$res =~ s/^\s+//;    # create_distributed_table's empty row
	is($res, '7 true true true true',
		'two-step: X_state per group across nodes, stored in a distributed table, rollup pushed down, equal to local');
	my $plan = $coord->safe_psql('postgres', 'EXPLAIN (VERBOSE, COSTS OFF) SELECT count_map_final(rollup(s)) FROM st_dist');
	ok($plan =~ /worker_partial_agg/ && $plan =~ /coord_combine_agg/, 'rollup over a distributed table is pushed down')
	  or diag($plan);
}

###########################################################################
# Coordinator memory
###########################################################################
sub measure
{
	my ($sql) = @_;
	my $s = $coord->background_psql('postgres');
	my $pid = $s->query_safe('SELECT pg_backend_pid()');
	my $out = $s->query_safe($sql);
	my $hwm = vm_hwm_kb($pid);
	$s->quit;
	return ($out, $hwm);
}

# The coordinator reads the shards' partial states concurrently, one
# connection per shard; each connection's libpq buffer holds a whole row (the
# state's hex text), the executor a copy of it, and the input function the
# decoded bytes: Citus's own cost of shipping states as text, which the 16 MB
# of slack must cover beside one partial state (the diagnostics print it).
my $shards = $coord->safe_psql('postgres',
	q{SELECT shard_name, nodeport FROM citus_shards WHERE table_name = 't'::regclass});
my @shards = map { [ split /\|/ ] } split /\n/, $shards;
my (undef, $floor) = measure(
	'SELECT count(*) FROM t; SELECT count_distinct(x), top_k(x, 1) FROM (VALUES (1)) v(x)');
for my $q ([ 'count_distinct(k)', 'count_distinct_state(k)', qr/^99994$/ ],
	[ 'top_k(k, 5)', 'top_k_state(k, 5)', qr/^\{51805,61698,15990,1303,6998\}$/ ])
{
	my ($expr, $state, $expect) = @$q;
	my $partial = 0;
	for my $sh (@shards)
	{
		my ($w) = grep { $_->port == $sh->[1] } @workers;
		my $bytes = $w->safe_psql('postgres', "SELECT octet_length(spillagg_state_send($state)) FROM $sh->[0]");
		$partial = $bytes if $bytes > $partial;
	}
	my $allow_kb = $budget_kb + $slack_kb + int($partial / 1024);
	my ($out, $hwm) = measure("SELECT $expr FROM t");
	like($out, $expect, "coordinator: $expr = $out");
	cmp_ok($hwm, '<=', $floor + $allow_kb,
		"coordinator: $expr: VmHWM $hwm kB <= floor $floor kB + 64 kB budget + 16 MB + $partial bytes (largest partial state)");
	diag(sprintf('coordinator, %s: VmHWM %d kB, floor %d kB, delta %+d kB, allowed %d kB (%d shards, largest partial state %d bytes)',
		$expr, $hwm, $floor, $hwm - $floor, $allow_kb, scalar(@shards), $partial));
}

###########################################################################
# No temporary file left; no leak warning, WARNING or TRAP in the logs
###########################################################################
$coord->safe_psql('postgres', 'DROP TABLE st_dist');
for my $node (@nodes)
{
	my @left = glob($node->data_dir . '/base/pgsql_tmp/*');
	for (my $i = 0; @left && $i < 50; $i++)
	{
		usleep(100_000);
		@left = glob($node->data_dir . '/base/pgsql_tmp/*');
	}
	is(scalar(@left), 0, $node->name . ': no temporary file left') or diag("left over: @left");
}
# (Read before any node stops: a stopping node makes the others' Citus
# connections to it log WARNINGs.)
for my $node (@nodes)
{
	server_log_is_clean(slurp_file($node->logfile), $node->name);
}
$_->stop for @nodes;

done_testing();
