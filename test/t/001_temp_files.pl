# Copyright: spillagg authors.
#
# Spilled aggregate states go through PostgreSQL's temp-file machinery
# (LogicalTapeSet/BufFile), so they must behave like any other temp file:
# land in temp_tablespaces, be reported by log_temp_files and
# pg_stat_database, obey temp_file_limit, and be removed after success,
# ERROR and cancel without "temporary file leak" warnings.
use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use FindBin;
use lib $FindBin::RealBin;
use SpillaggTest;
use Time::HiRes qw(usleep gettimeofday tv_interval);

my $node = PostgreSQL::Test::Cluster->new('main');
$node->init;
$node->append_conf(
	'postgresql.conf', q{
log_temp_files = 0
# Rows must reach the aggregate in insertion order (the "late row" tricks
# below rely on it) and in one process.
max_parallel_workers_per_gather = 0
synchronize_seqscans = off
});
$node->start;

my $datadir = $node->data_dir;
my $tsdir = PostgreSQL::Test::Utils::tempdir('spill_ts');

$node->safe_psql('postgres', qq{
CREATE TABLESPACE spill_ts LOCATION '$tsdir';
CREATE EXTENSION spillagg;
-- 300k rows, ~200k distinct non-NULL keys: (i * 7919) % 200000 is a bijection
-- on one period (7919 is prime to 200000), so 100k keys appear twice.
CREATE TABLE data AS
  SELECT i,
         CASE WHEN i % 1000 = 0 THEN NULL ELSE kk END AS k,
         CASE WHEN i % 1000 = 0 THEN NULL
              WHEN kk % 5000 = 0 THEN 'k"\\é ' || kk
              ELSE 'key-' || kk || repeat('x', kk % 7)
         END AS t
  FROM (SELECT i, ((i::bigint * 7919) % 200000)::int AS kk
        FROM generate_series(1, 300000) AS i) AS s;
ANALYZE data;
-- Blocks while another session holds advisory lock 4242 exclusively.
CREATE FUNCTION wait_gate(v anyelement) RETURNS anyelement
LANGUAGE plpgsql AS \$\$
BEGIN
  PERFORM pg_advisory_lock_shared(4242);
  PERFORM pg_advisory_unlock_shared(4242);
  RETURN v;
END
\$\$;
});

my $ts_oid = $node->safe_psql('postgres',
	"SELECT oid FROM pg_tablespace WHERE spcname = 'spill_ts'");
# The tablespace's directory for this server: PG_<major>_<catversion>.
my $ts_rel_re = qr{pg_tblspc/$ts_oid/PG_\d+_\d+/pgsql_tmp/pgsql_tmp};

my $setup = "SET temp_tablespaces = spill_ts;\nSET spillagg.work_mem = 64;\n";

# Temp files in the tablespace's pgsql_tmp and in the default base/pgsql_tmp.
my @ts_glob = ("$tsdir/PG_*/pgsql_tmp/*");
my @default_glob = ("$datadir/base/pgsql_tmp/*");
sub ts_files { return map { glob($_) } @ts_glob; }
sub default_files { return map { glob($_) } @default_glob; }
watch_temp_files([@ts_glob, @default_glob]);

sub temp_stats
{
	my $r = $node->safe_psql('postgres',
		"SELECT temp_files || ',' || temp_bytes FROM pg_stat_database WHERE datname = current_database()"
	);
	return split /,/, $r;
}

my $native_distinct_k = $node->safe_psql('postgres', 'SELECT count(DISTINCT k) FROM data');
my $native_distinct_t = $node->safe_psql('postgres', 'SELECT count(DISTINCT t) FROM data');
cmp_ok($native_distinct_k, '>=', 190000, "data set has ~200k distinct int keys ($native_distinct_k)");

###########################################################################
# (1) + (2) + (4) + (9): spilling queries give the native answers, log their
# temp files under the tablespace, bump pg_stat_database, leave nothing
# behind, and spillagg_stats() sees the spills.
###########################################################################
my ($files_before, $bytes_before) = temp_stats();
my $log_offset = -s $node->logfile;

my ($ret, $stdout, $stderr) = $node->psql('postgres', $setup . q{
SELECT 'cd_int=' || count_distinct(k) FROM data;
SELECT 'cd_text=' || count_distinct(t) FROM data;
SELECT 'cm_int=' || ((SELECT count_map(k) FROM data) =
       (SELECT jsonb_object_agg(k, c) FROM (SELECT k, count(*) AS c FROM data WHERE k IS NOT NULL GROUP BY k) g));
SELECT 'cm_text=' || ((SELECT count_map(t) FROM data) =
       (SELECT jsonb_object_agg(t, c) FROM (SELECT t, count(*) AS c FROM data WHERE t IS NOT NULL GROUP BY t) g));
SELECT 'hist_int=' || ((SELECT histogram(k) FROM data) = (SELECT count_map(k) FROM data));
SELECT 'stats=' || states || ',' || spills || ',' || runs || ',' || bytes_written FROM spillagg_stats();
SELECT pg_stat_force_next_flush();
});
is($ret, 0, 'spilling queries succeed') or diag($stderr);
like($stdout, qr/^cd_int=$native_distinct_k$/m, 'count_distinct(int) = count(DISTINCT int) while spilling');
like($stdout, qr/^cd_text=$native_distinct_t$/m, 'count_distinct(text) = count(DISTINCT text) while spilling');
like($stdout, qr/^cm_int=true$/m, 'count_map(int) = jsonb_object_agg of GROUP BY count(*) while spilling');
like($stdout, qr/^cm_text=true$/m, 'count_map(text) = jsonb_object_agg of GROUP BY count(*) while spilling');
like($stdout, qr/^hist_int=true$/m, 'histogram(int) = count_map(int)');
if ($stdout =~ /^stats=(\d+),(\d+),(\d+),(\d+)$/m)
{
	my ($states, $spills, $runs, $bytes) = ($1, $2, $3, $4);
	cmp_ok($states, '>', 0, "spillagg_stats(): states > 0 ($states)");
	cmp_ok($spills, '>', 0, "spillagg_stats(): spills > 0 ($spills)");
	cmp_ok($runs, '>', 0, "spillagg_stats(): runs > 0 ($runs)");
	cmp_ok($bytes, '>', 0, "spillagg_stats(): bytes_written > 0 ($bytes)");
}
else
{
	fail("spillagg_stats() returned a row: $stdout");
}

my $log = slurp_file($node->logfile, $log_offset);
my @ts_lines = ($log =~ /(temporary file: path "$ts_rel_re[^"]*", size \d+)/g);
cmp_ok(scalar(@ts_lines), '>', 0,
	'log_temp_files reports spill files under the temp tablespace ('
	  . scalar(@ts_lines) . ' lines)')
  or diag("temporary file lines:\n"
	  . join("\n", $log =~ /(temporary file: path[^\n]*)/g));
unlike($log, qr{temporary file: path "base/pgsql_tmp},
	'no spill file in base/pgsql_tmp while temp_tablespaces is set');

ok( $node->poll_query_until('postgres',
		"SELECT temp_files > $files_before AND temp_bytes > $bytes_before FROM pg_stat_database WHERE datname = current_database()"
	),
	'pg_stat_database temp_files and temp_bytes grew');

no_temp_files_left('after successful spilling queries');

###########################################################################
# (2b) Without temp_tablespaces the spill files go to base/pgsql_tmp.
###########################################################################
$log_offset = -s $node->logfile;
$node->safe_psql('postgres',
	"SET spillagg.work_mem = 64; SELECT count_distinct(k) FROM data;");
ok($node->log_contains(qr{temporary file: path "base/pgsql_tmp/pgsql_tmp\d+\.\d+", size \d+}, $log_offset),
	'without temp_tablespaces, spill files are logged under base/pgsql_tmp');
no_temp_files_left('after a spill to the default location');

###########################################################################
# (1b) Several spilling states in one query (GROUP BY, two aggregates):
# each group's state has its own temp file; all answers exact, all removed.
###########################################################################
($ret, $stdout, $stderr) = $node->psql('postgres', $setup . q{
SET enable_hashagg = off;
SELECT 'grp_sort_bad=' || count(*) FROM (
  SELECT i % 3 AS g, count_distinct(k) AS cd, count_map(t) AS cm FROM data GROUP BY 1) a
  FULL JOIN (
  SELECT g, cd, cm
  FROM (SELECT i % 3 AS g, count(DISTINCT k) AS cd FROM data GROUP BY 1) n1
  JOIN (SELECT g, jsonb_object_agg(t, c) AS cm
        FROM (SELECT i % 3 AS g, t, count(*) AS c FROM data WHERE t IS NOT NULL GROUP BY 1, 2) x
        GROUP BY g) n2 USING (g)) b USING (g)
  WHERE a.cd IS DISTINCT FROM b.cd OR a.cm IS DISTINCT FROM b.cm;
SET enable_hashagg = on;
SET enable_sort = off;
SELECT 'grp_hash_bad=' || count(*) FROM (
  SELECT i % 3 AS g, count_distinct(k) AS cd FROM data GROUP BY 1) a
  FULL JOIN (SELECT i % 3 AS g, count(DISTINCT k) AS cd FROM data GROUP BY 1) b USING (g)
  WHERE a.cd IS DISTINCT FROM b.cd;
});
is($ret, 0, 'grouped spilling queries succeed') or diag($stderr);
like($stdout, qr/^grp_sort_bad=0$/m, 'GROUP BY (sorted): count_distinct and count_map per group are exact');
like($stdout, qr/^grp_hash_bad=0$/m, 'GROUP BY (hashed): count_distinct per group is exact');
no_temp_files_left('after grouped spilling queries');

###########################################################################
# (3) Temp files exist in the tablespace's pgsql_tmp while a spilling query
# runs; it is held at a late row (i = 250001) by an advisory lock.
###########################################################################
my $ctl = $node->background_psql('postgres');
my $worker = $node->background_psql('postgres', on_error_stop => 0);
$worker->query_safe($setup);
my $wpid = $worker->query_safe('SELECT pg_backend_pid()');

sub wait_for_gate
{
	my ($pid) = @_;
	return $node->poll_query_until('postgres',
		"SELECT count(*) > 0 FROM pg_locks WHERE locktype = 'advisory' AND pid = $pid AND NOT granted"
	);
}

sub poll_ts_files
{
	# The query is already blocked after spilling, so the files should be
	# there; allow a little slack anyway.
	for (my $i = 0; $i < 50; $i++)
	{
		my @f = ts_files();
		return @f if @f;
		usleep(100_000);
	}
	return ();
}

$ctl->query_safe('SELECT pg_advisory_lock(4242)');
$worker->query_until(qr/started/, q{\echo started
SELECT 'result=' || count_distinct(CASE WHEN i = 250001 THEN wait_gate(k) ELSE k END) FROM data;
});
ok(wait_for_gate($wpid), 'spilling query reached the late row and is waiting');
my @running = poll_ts_files();
cmp_ok(scalar(@running), '>', 0,
	'temp files exist in the tablespace pgsql_tmp while the query runs')
  or diag('tablespace: ' . join(' ', glob("$tsdir/*/*")) . '; base/pgsql_tmp: ' . join(' ', default_files()));
$ctl->query_safe('SELECT pg_advisory_unlock(4242)');
my $out = $worker->query_until(qr/result=\d+/, '');
like($out, qr/result=$native_distinct_k\b/, 'held query completes with the native answer');
$worker->query_safe('SELECT 1');    # the previous statement is fully done
no_temp_files_left('after the held query completed');

###########################################################################
# (5) ERROR in the aggregate argument at a late row, after spilling.
###########################################################################
$log_offset = -s $node->logfile;
($ret, $stdout, $stderr) = $node->psql(
	'postgres', $setup . q{
SELECT count_distinct(CASE WHEN i = 250001 THEN k / (i - 250001) ELSE k END) FROM data;
SELECT 'after-error';
}, on_error_stop => 0);
like($stderr, qr/division by zero/, 'mid-query ERROR is reported');
like($stdout, qr/after-error/, 'session continues after the ERROR');
ok($node->log_contains(qr/temporary file: path "$ts_rel_re/, $log_offset),
	'the failed query had spilled (temp file logged)');
no_temp_files_left('after a mid-query ERROR');

# The same with count_map over text keys.
($ret, $stdout, $stderr) = $node->psql(
	'postgres', $setup . q{
SELECT count_map(CASE WHEN i = 250001 THEN t || (1 / (i - 250001))::text ELSE t END) FROM data;
SELECT 'after-error';
}, on_error_stop => 0);
like($stderr, qr/division by zero/, 'count_map: mid-query ERROR is reported');
no_temp_files_left('count_map: after a mid-query ERROR');

###########################################################################
# (6) temp_file_limit exceeded: clean ERROR 53400, no file left.
###########################################################################
for my $agg ('count_distinct(k)', 'count_map(t)')
{
	($ret, $stdout, $stderr) = $node->psql(
		'postgres', $setup . qq{
\\set VERBOSITY verbose
SET temp_file_limit = '64kB';
SELECT $agg IS NOT NULL FROM data;
SELECT 'after-error';
}, on_error_stop => 0);
	like(
		$stderr,
		qr/ERROR:  53400: temporary file size exceeds "?temp_file_limit"? \(64kB\)/,  # 18 quotes the name
		"$agg: temp_file_limit exceeded gives ERROR 53400");
	like($stdout, qr/after-error/, "$agg: session continues after the temp_file_limit ERROR");
	no_temp_files_left("$agg: after the temp_file_limit ERROR");
}

###########################################################################
# (7) Cancel while the spilled query is held at a late row.
###########################################################################
$ctl->query_safe('SELECT pg_advisory_lock(4242)');
$worker->query_until(qr/started/, q{\echo started
SELECT 'result=' || count_distinct(CASE WHEN i = 250001 THEN wait_gate(t) ELSE t END) FROM data;
});
ok(wait_for_gate($wpid), 'query to be canceled reached the late row');
@running = poll_ts_files();
cmp_ok(scalar(@running), '>', 0, 'temp files exist before the cancel');
$ctl->query_safe("SELECT pg_cancel_backend($wpid)");
ok( pump_until(
		$worker->{run}, $worker->{timeout},
		\$worker->{stderr}, qr/canceling statement due to user request/),
	'query canceled');
$worker->{stderr} = '';
$ctl->query_safe('SELECT pg_advisory_unlock(4242)');
$worker->query_safe('SELECT 1');    # abort processing is over
no_temp_files_left('after a cancel mid-query');

###########################################################################
# (7b) statement_timeout at varying points: the cancel may land in the scan,
# in a spill or in the final merge; either the answer is right or the
# statement is canceled, and no file is left either way.
###########################################################################
# Time the statement once, then cancel it at 10%, 20%, ... 120% of that.
my $t0 = [Time::HiRes::gettimeofday()];
my $base_out = $worker->query_safe("SELECT 'result=' || count_distinct(t) FROM data");
my $base_ms = int(1000 * Time::HiRes::tv_interval($t0));
like($base_out, qr/result=$native_distinct_t\b/, "uncanceled statement ($base_ms ms) gives the native answer");
my $timeouts_hit = 0;
for my $pct (map { 10 * $_ } 1 .. 12)
{
	my $ms = int($base_ms * $pct / 100) || 1;
	my ($o) = $worker->query("SET statement_timeout = $ms;\n"
		  . "SELECT 'result=' || count_distinct(t) FROM data;\n"
		  . "RESET statement_timeout;");
	my $err = $worker->{stderr};
	$worker->{stderr} = '';
	my $canceled = $err =~ /canceling statement due to statement timeout/;
	$timeouts_hit++ if $canceled;
	ok( ($o =~ /result=$native_distinct_t\b/ && $err eq '')
		  || ($canceled && $err !~ /(?:ERROR|WARNING):  (?!canceling statement)/),
		"statement_timeout $ms ms: right answer or a clean cancel")
	  or diag("stdout: $o\nstderr: $err");
	$worker->query_safe('SELECT 1');
	no_temp_files_left("after statement_timeout $ms ms");
}
cmp_ok($timeouts_hit, '>', 0, "statement_timeout canceled $timeouts_hit spilling queries");

$worker->quit;
$ctl->quit;

###########################################################################
# (8) No leak warning, assertion failure or crash anywhere in the log.
###########################################################################
$node->stop;
my $full_log = slurp_file($node->logfile);
server_log_is_clean($full_log, 'whole run');
no_temp_files_left('after shutdown');

done_testing();
