# Copyright: spillagg authors.
#
# Parallel workers hand their large partial states to the leader through
# temp files (src/pg/parallel_exchange.h). Those files must behave like any
# other temp file: land in temp_tablespaces (in pgsql_tmp<leader pid>.spillagg),
# be reported by log_temp_files, obey temp_file_limit, and be gone after
# success, ERROR, cancel and the leader's termination.
use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use FindBin;
use lib $FindBin::RealBin;
use SpillaggTest;
use Time::HiRes qw(usleep);

my $node = PostgreSQL::Test::Cluster->new('exchange');
$node->init;
$node->append_conf(
	'postgresql.conf', q{
log_temp_files = 0
max_worker_processes = 8
max_parallel_workers = 8
max_parallel_workers_per_gather = 2
parallel_setup_cost = 0
parallel_tuple_cost = 0
min_parallel_table_scan_size = 0
# Only workers scan, so each one's partial state is large whatever the timing.
parallel_leader_participation = off
});
$node->start;

my $datadir = $node->data_dir;
my $tsdir = PostgreSQL::Test::Utils::tempdir('exchange_ts');

$node->safe_psql('postgres', qq{
CREATE TABLESPACE exchange_ts LOCATION '$tsdir';
CREATE EXTENSION spillagg;
-- 300k rows, ~200k distinct int keys, ~150k distinct text keys.
CREATE TABLE data AS
  SELECT i, ((i::bigint * 7919) % 200000)::int AS k, 'key-' || (i % 150000) AS t
  FROM generate_series(1, 300000) AS i;
ANALYZE data;
-- gate_on_combine(x): its combine function (run by the leader, for the first
-- partial row, before the spillagg aggregate listed after it reads that row's
-- file) waits while another session holds advisory lock 4242.
CREATE FUNCTION gate_false(bool, int) RETURNS bool LANGUAGE sql PARALLEL SAFE AS 'SELECT false';
CREATE FUNCTION gate_combine(a bool, b bool) RETURNS bool LANGUAGE plpgsql PARALLEL SAFE AS \$\$
BEGIN
  PERFORM pg_advisory_lock_shared(4242);
  PERFORM pg_advisory_unlock_shared(4242);
  RETURN a OR b;
END \$\$;
CREATE AGGREGATE gate_on_combine(int) (SFUNC = gate_false, STYPE = bool, INITCOND = 'false',
                                      COMBINEFUNC = gate_combine, PARALLEL = SAFE);
});

my $native_k = $node->safe_psql('postgres', 'SELECT count(DISTINCT k) FROM data');
my $native_t = $node->safe_psql('postgres', 'SELECT count(DISTINCT t) FROM data');
my $ts_oid = $node->safe_psql('postgres', "SELECT oid FROM pg_tablespace WHERE spcname = 'exchange_ts'");
my $setup = "SET temp_tablespaces = exchange_ts;\nSET spillagg.work_mem = '1MB';\n";

my @ts_glob = ("$tsdir/PG_*/pgsql_tmp/*", "$tsdir/PG_*/pgsql_tmp/*/*");
my @default_glob = ("$datadir/base/pgsql_tmp/*");
sub ts_files { return map { glob($_) } @ts_glob; }
sub default_files { return map { glob($_) } @default_glob; }
sub exchange_files { my ($pid) = @_; return glob("$tsdir/PG_*/pgsql_tmp/pgsql_tmp$pid.spillagg/*"); }
watch_temp_files([@ts_glob, @default_glob]);

###########################################################################
# (1) The answer; the workers' files logged under the tablespace, in the
# leader's directory, deleted by the leader; nothing under base/pgsql_tmp.
###########################################################################
my $log_offset = -s $node->logfile;
my $out = $node->safe_psql('postgres', $setup . q{
SELECT 'pid=' || pg_backend_pid();
SELECT 'k=' || count_distinct(k), 't=' || count_distinct(t) FROM data;
});
my ($pid) = $out =~ /pid=(\d+)/;
like($out, qr/k=$native_k\b/, "count_distinct(k) in parallel = native ($native_k)");
like($out, qr/t=$native_t\b/, "count_distinct(t) in parallel = native ($native_t)");
my $log = slurp_file($node->logfile, $log_offset);
my @exchanged = $log =~ m{\[(\d+)\][^\n]*temporary file: path "pg_tblspc/$ts_oid/PG_\d+_\d+/pgsql_tmp/pgsql_tmp$pid\.spillagg/(\d+)\.\d+"}g;
my %writers;
for (my $i = 0; $i < @exchanged; $i += 2) { $writers{$exchanged[$i + 1]} = 1 if $exchanged[$i] == $pid; }
cmp_ok(scalar(keys %writers), '>=', 2, 'files of two workers exchanged through the tablespace, deleted (logged) by the leader')
  or diag($log);
unlike($log, qr{path "base/pgsql_tmp/pgsql_tmp\d+\.spillagg}, 'no exchange file under base/pgsql_tmp');
no_temp_files_left('after a parallel query');

###########################################################################
# (2) The leader held at its first combine: the workers' files are there.
# Then: released (the answer), canceled, terminated; no file is left.
###########################################################################
my $ctl = $node->background_psql('postgres');
my $leader = $node->background_psql('postgres', on_error_stop => 0);
$leader->query_safe($setup);
my $lpid = $leader->query_safe('SELECT pg_backend_pid()');

# gate_on_combine and count_distinct in one Aggregate, the gate first (both
# selected: an unused aggregate of a subquery is planned away).
$leader->query_safe(q{CREATE TEMP VIEW held AS SELECT gate_on_combine(1), count_distinct(k) FROM data});

# Starts the held query; checks that the leader waits and a file is there.
sub start_held
{
	my ($what) = @_;
	$ctl->query_safe('SELECT pg_advisory_lock(4242)');
	$leader->query_until(qr/started/, q{\echo started
SELECT gate_on_combine, 'result=' || count_distinct FROM held;
});
	ok( $node->poll_query_until('postgres',
			"SELECT count(*) > 0 FROM pg_locks WHERE locktype = 'advisory' AND pid = $lpid AND NOT granted"),
		"$what: the leader waits in its first combine");
	my @f;
	for (my $i = 0; $i < 50 && !@f; $i++) { @f = exchange_files($lpid); usleep(100_000) unless @f; }
	cmp_ok(scalar(@f), '>', 0, "$what: a worker's file waits in pgsql_tmp$lpid.spillagg")
	  or diag('tablespace: ' . join(' ', ts_files()));
}

# (2a) released
start_held('released');
$ctl->query_safe('SELECT pg_advisory_unlock(4242)');
$out = $leader->query_until(qr/result=\d+/, '');
like($out, qr/result=$native_k\b/, 'released: the held query gives the native answer');
$leader->query_safe('SELECT 1');
no_temp_files_left('after the held parallel query');

# (2b) canceled
start_held('cancel');
$ctl->query_safe("SELECT pg_cancel_backend($lpid)");
ok( pump_until(
		$leader->{run}, $leader->{timeout},
		\$leader->{stderr}, qr/canceling statement due to user request/),
	'cancel: query canceled');
$leader->{stderr} = '';
$ctl->query_safe('SELECT pg_advisory_unlock(4242)');
$leader->query_safe('SELECT 1');
no_temp_files_left('after a cancel while files wait');

# (2c) the leader terminated: its exit removes the files.
start_held('terminate');
$ctl->query_safe("SELECT pg_terminate_backend($lpid)");
ok($node->poll_query_until('postgres', "SELECT count(*) = 0 FROM pg_stat_activity WHERE pid = $lpid OR leader_pid = $lpid"),
	'terminate: the leader and its workers are gone');
$ctl->query_safe('SELECT pg_advisory_unlock(4242)');
eval { $leader->quit };    # (its psql may have exited with the connection)
no_temp_files_left('after the leader was terminated while files wait');

###########################################################################
# (3) temp_file_limit applies to a worker's file: clean ERROR 53400.
# At the default budget nothing else spills; a worker's file is ~600 kB.
###########################################################################
my ($ret, $stdout, $stderr) = $node->psql(
	'postgres', q{
\set VERBOSITY verbose
SET temp_tablespaces = exchange_ts;
SET temp_file_limit = '256kB';
SELECT count_distinct(k) IS NOT NULL FROM data;
SELECT 'after-error';
}, on_error_stop => 0);
like($stderr, qr/ERROR:  53400: temporary file size exceeds "?temp_file_limit"? \(256kB\)/,
	'temp_file_limit exceeded by a worker gives ERROR 53400');
like($stdout, qr/after-error/, 'session continues after the temp_file_limit ERROR');
no_temp_files_left('after the temp_file_limit ERROR');

$ctl->quit;

###########################################################################
# (4) No leak warning, assertion failure or crash anywhere in the log.
###########################################################################
$node->stop;
my $full_log = slurp_file($node->logfile);
server_log_is_clean($full_log, 'whole run');
no_temp_files_left('after shutdown');

done_testing();
