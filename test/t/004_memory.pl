# Copyright: spillagg authors.
#
# Peak memory (VmHWM) of a backend stays within the budget + 16 MB above the
# scan floor: count_distinct over 5M distinct keys, and sum_map with 10,000
# groups (GROUP BY) of ~260 keys each. The budget is spillagg's default
# (spillagg.work_mem = -1), which resolves to work_mem * hash_mem_multiplier
# = 8 MB here. The "scan floor" of a table is the VmHWM of a fresh backend
# that has only run SELECT count(*) over it. Each measured query runs in a
# fresh backend and sends one row to the client. For the record (diag only):
# PostgreSQL's native equivalents, spillagg_stats() and timings. Afterwards
# no temporary file is left and the server log has no leak warning, WARNING
# or TRAP.
use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use FindBin;
use lib $FindBin::RealBin;
use SpillaggTest;
use Time::HiRes qw(gettimeofday tv_interval);

my $budget_kb = 8 * 1024;
my $slack_kb = 16 * 1024;

my $node = PostgreSQL::Test::Cluster->new('memory');
$node->init;
$node->append_conf(
	'postgresql.conf', q{
jit = off
max_parallel_workers_per_gather = 0
work_mem = '4MB'
hash_mem_multiplier = 2
});
$node->start;
my $datadir = $node->data_dir;

# mg: 3M rows, 10,000 groups g; k: 1000 pseudo-random keys, so each group
# has 300 rows over ~260 distinct keys. d5: 5M distinct keys.
$node->safe_psql('postgres', q{
CREATE EXTENSION spillagg;
CREATE TABLE mg AS
  SELECT (i % 10000)::int AS g,
         ((hashint4(i::int) & 2147483647) % 1000)::int AS k,
         (i % 97)::int AS v
  FROM generate_series(1, 3000000) AS i;
CREATE TABLE d5 AS SELECT i AS k FROM generate_series(1, 5000000) AS i;
VACUUM ANALYZE mg;
VACUUM ANALYZE d5;
});
is($node->safe_psql('postgres', "LOAD 'spillagg';\nSHOW spillagg.work_mem"), '-1',
	'spillagg.work_mem is the default (-1: work_mem * hash_mem_multiplier)');

###########################################################################
# Helpers
###########################################################################

# (A backend that just quit may still be removing its files.)
watch_temp_files(["$datadir/base/pgsql_tmp/*"], wait => 5);

# VmHWM of a fresh backend that ran SELECT count(*) FROM $table (twice, to
# warm it up).
sub scan_floor
{
	my ($table) = @_;
	my $s = $node->background_psql('postgres');
	my $pid = $s->query_safe('SELECT pg_backend_pid()');
	$s->query_safe("SELECT count(*) FROM $table") for 1 .. 2;
	my $hwm = vm_hwm_kb($pid);
	$s->quit;
	return $hwm;
}

# Run $sql in a fresh backend; returns (result, VmHWM in kB, ms, stats), the
# stats being spillagg_stats() after the query (if $with_stats).
sub measure
{
	my ($sql, $with_stats) = @_;
	my $s = $node->background_psql('postgres');
	my $pid = $s->query_safe('SELECT pg_backend_pid()');
	my $t0 = [gettimeofday()];
	my $out = $s->query_safe($sql);
	my $ms = int(1000 * tv_interval($t0));
	my $hwm = vm_hwm_kb($pid);
	my $stats = 'n/a';
	if ($with_stats)
	{
		$stats = $s->query_safe(
			q{SELECT 'states=' || states || ' spills=' || spills || ' runs=' || runs
			  || ' bytes_written=' || bytes_written || ' peak_bytes=' || peak_bytes
			  FROM spillagg_stats()});
	}
	$s->quit;
	return ($out, $hwm, $ms, $stats);
}

sub report
{
	my ($name, $hwm, $floor, $ms, $stats) = @_;
	diag(sprintf('%s: VmHWM %d kB, floor %d kB, delta %+d kB, %d ms, stats: %s',
		$name, $hwm, $floor, $hwm - $floor, $ms, $stats));
}

###########################################################################
# Correctness of sum_map with 10,000 groups (not measured)
###########################################################################
my $spill_groups = 'SELECT g, sum_map(k, v) AS m FROM mg GROUP BY g';
my $native_groups = 'SELECT g, jsonb_object_agg(k, s) AS m FROM (SELECT g, k, sum(v) AS s FROM mg GROUP BY g, k) x GROUP BY g';
{
	my $plan = $node->safe_psql('postgres', "EXPLAIN (COSTS OFF) $spill_groups");
	diag("plan of sum_map GROUP BY g:\n$plan");
	my $diff = $node->safe_psql('postgres',
		"SELECT count(*) FROM ($spill_groups) a FULL JOIN ($native_groups) b USING (g) WHERE a.m IS DISTINCT FROM b.m");
	is($diff, '0', 'sum_map GROUP BY g (10,000 groups) equals jsonb_object_agg over sum(v) GROUP BY g, k');
}
no_temp_files_left('after the correctness check');

# Parallel count_distinct: the leader merges each worker's partial state,
# which arrives in hash order. (A table layout that let such a stream pile
# into one cluster turned these 2 s into minutes: the timeout catches that.)
{
	my $par = $node->safe_psql('postgres', q{
SET max_parallel_workers_per_gather = 2;
SET parallel_setup_cost = 0;
SET parallel_tuple_cost = 0;
SET min_parallel_table_scan_size = 0;
SET statement_timeout = '180s';
SET spillagg.work_mem = '4MB';
SELECT count_distinct(k) FROM d5;
});
	is($par, '5000000', 'parallel count_distinct over d5 (partial states merged by the leader) is 5000000');
}
no_temp_files_left('after the parallel count_distinct');

###########################################################################
# Scan floors
###########################################################################
my $floor_d5 = scan_floor('d5');
my $floor_mg = scan_floor('mg');
ok(defined $floor_d5 && defined $floor_mg,
	"scan floors: d5 $floor_d5 kB, mg $floor_mg kB");

###########################################################################
# (a) count_distinct over 5M distinct keys
###########################################################################
my ($out, $hwm, $ms, $stats) = measure('SELECT count_distinct(k) FROM d5', 1);
is($out, '5000000', 'count_distinct over d5 is 5000000');
cmp_ok($hwm, '<=', $floor_d5 + $budget_kb + $slack_kb,
	"count_distinct(5M keys): VmHWM $hwm kB <= floor $floor_d5 kB + 8 MB budget + 16 MB");
report('count_distinct(k) FROM d5', $hwm, $floor_d5, $ms, $stats);
no_temp_files_left('(a) after count_distinct');

($out, $hwm, $ms) = measure('SELECT count(DISTINCT k) FROM d5', 0);
is($out, '5000000', 'native count(DISTINCT k) over d5 is 5000000');
report('native count(DISTINCT k) FROM d5', $hwm, $floor_d5, $ms, 'n/a');
no_temp_files_left('(a) after native count(DISTINCT)');

###########################################################################
# (b) sum_map with 10,000 groups; only one row goes to the client
###########################################################################
($out, $hwm, $ms, $stats) = measure(
	"SELECT count(*), sum(hashtext(m::text)) FROM ($spill_groups) s", 1);
like($out, qr/^10000\|-?\d+$/, "sum_map GROUP BY g: 10000 groups ($out)");
cmp_ok($hwm, '<=', $floor_mg + $budget_kb + $slack_kb,
	"sum_map(10,000 groups): VmHWM $hwm kB <= floor $floor_mg kB + 8 MB budget + 16 MB");
report('sum_map(k, v) FROM mg GROUP BY g', $hwm, $floor_mg, $ms, $stats);
no_temp_files_left('(b) after sum_map GROUP BY');

($out, $hwm, $ms) = measure(
	"SELECT count(*), sum(hashtext(m::text)) FROM ($native_groups) s", 0);
like($out, qr/^10000\|-?\d+$/, "native emulation: 10000 groups ($out)");
report('native jsonb_object_agg(k, sum(v)) FROM mg GROUP BY g', $hwm, $floor_mg, $ms, 'n/a');
no_temp_files_left('(b) after the native emulation');

###########################################################################
# The server log, after shutdown
###########################################################################
$node->stop;
my $log = slurp_file($node->logfile);
server_log_is_clean($log, 'whole run');
no_temp_files_left('after shutdown');

done_testing();
