# Copyright: spillagg authors.
#
# Load: 8 concurrent pgbench clients for ~40 s run spilling queries
# (spillagg.work_mem 64..256 kB, serial and parallel) and check every answer
# against PostgreSQL's own query: a wrong answer divides by zero, which
# aborts the client and makes pgbench exit non-zero. Afterwards: no temp file
# left, no leak warning, WARNING, TRAP or crash in the log. While it runs,
# the peak memory (VmHWM) of the pgbench backends is sampled from /proc.
use strict;
use warnings;
use POSIX ();
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use FindBin;
use lib $FindBin::RealBin;
use SpillaggTest;
use Time::HiRes qw(usleep gettimeofday tv_interval);

my $duration = 40;
my $clients = 8;

my $node = PostgreSQL::Test::Cluster->new('load');
$node->init;
$node->append_conf(
	'postgresql.conf', q{
max_connections = 40
max_worker_processes = 16
max_parallel_workers = 8
});
$node->start;
my $datadir = $node->data_dir;

# 200k rows, 50 groups of 4000. k: each key once or twice per group (and in
# one group only), every 997th NULL; s: text keys; z: a skewed key (0..100)
# for top_k; v, n: int and numeric values.
$node->safe_psql('postgres', q{
CREATE EXTENSION spillagg;
CREATE TABLE t AS
  SELECT i, i % 50 AS g,
         CASE WHEN i % 997 = 0 THEN NULL ELSE ((i::bigint * 7919) % 150000)::int END AS k,
         'key-' || ((i::bigint * 7919) % 150000) || repeat('x', (i % 7)::int) AS s,
         (i % 1000) - 500 AS v,
         ((i % 1000) - 500) / 100.0 AS n,
         floor(sqrt((i::bigint * 7919) % 10007))::int AS z
  FROM generate_series(1, 200000) AS i;
CREATE INDEX ON t (g);
VACUUM ANALYZE t;
});

# Each script: a random range of 1..8 groups (4k..32k rows), a random budget;
# the SELECT divides by zero when spillagg's answer differs from PostgreSQL's.
my $prelude = q{\set g random(0, 49)
\set w random(1, 8)
\set wm random(64, 256)
SET spillagg.work_mem = :wm;
};
my $where = 'WHERE g >= :g AND g < :g + :w';
my %scripts = (
	'cd.sql' => $prelude . qq{SELECT 1 / coalesce((a = b AND c = d)::int, 0)
FROM (SELECT count_distinct(k) AS a, count_distinct(s) AS c FROM t $where) x,
     (SELECT count(DISTINCT k) AS b, count(DISTINCT s) AS d FROM t $where) y;
},
	'cm.sql' => $prelude . qq{SELECT 1 / coalesce((a = b AND c = d)::int, 0)
FROM (SELECT count_map(k) AS a, count_map(s) AS c FROM t $where) x,
     (SELECT jsonb_object_agg(k, n) AS b FROM (SELECT k, count(*) AS n FROM t $where AND k IS NOT NULL GROUP BY k) q) y,
     (SELECT jsonb_object_agg(s, n) AS d FROM (SELECT s, count(*) AS n FROM t $where GROUP BY s) q) z;
},
	'sm.sql' => $prelude . qq{SELECT 1 / coalesce((a = b AND c = d)::int, 0)
FROM (SELECT sum_map(k % 1000, v) AS a, sum_map(s, n) AS c FROM t $where) x,
     (SELECT jsonb_object_agg(kk, sv) AS b FROM (SELECT k % 1000 AS kk, sum(v) AS sv FROM t $where AND k IS NOT NULL GROUP BY 1) q) y,
     (SELECT jsonb_object_agg(s, sn) AS d FROM (SELECT s, sum(n) AS sn FROM t $where GROUP BY s) q) z;
},
	'topk.sql' => $prelude . qq{SELECT 1 / coalesce((a = b AND c = d AND e = f)::int, 0)
FROM (SELECT top_k(z, 5) AS a, top_k(k, 10) AS c, top_k(s, 5) AS e FROM t $where) x,
     (SELECT array_agg(z ORDER BY n DESC, z) AS b FROM (SELECT z, count(*) AS n FROM t $where GROUP BY z ORDER BY n DESC, z LIMIT 5) q) y,
     (SELECT array_agg(k ORDER BY n DESC, k) AS d FROM (SELECT k, count(*) AS n FROM t $where AND k IS NOT NULL GROUP BY k ORDER BY n DESC, k LIMIT 10) q) z,
     (SELECT array_agg(s ORDER BY n DESC, s) AS f FROM (SELECT s, count(*) AS n FROM t $where GROUP BY s ORDER BY n DESC, s LIMIT 5) q) u;
},
	# Parallel: partial states of workers, serialized and combined.
	'par.sql' => $prelude . qq{SET parallel_setup_cost = 0;
SET parallel_tuple_cost = 0;
SET min_parallel_table_scan_size = 0;
SET max_parallel_workers_per_gather = 2;
SET enable_indexscan = off;
SET enable_bitmapscan = off;
SELECT 1 / coalesce((a = b AND c = d)::int, 0)
FROM (SELECT count_distinct(k) AS a, sum_map(k % 1000, v) AS c FROM t $where) x,
     (SELECT count(DISTINCT k) AS b FROM t $where) y,
     (SELECT jsonb_object_agg(kk, sv) AS d FROM (SELECT k % 1000 AS kk, sum(v) AS sv FROM t $where AND k IS NOT NULL GROUP BY 1) q) z;
RESET max_parallel_workers_per_gather;
RESET enable_indexscan;
RESET enable_bitmapscan;
},
);

# Sanity: each check query passes once by hand and spills at 64 kB; the
# parallel one is a Partial Aggregate.
for my $name (sort keys %scripts)
{
	my $sql = $scripts{$name};
	$sql =~ s/^\\set .*\n//mg;
	$sql =~ s/:wm/64/g;
	$sql =~ s/:g\b/10/g;
	$sql =~ s/:w\b/4/g;
	my ($ret, $out, $err) = $node->psql('postgres',
		$sql . "SELECT 'spills=' || spills FROM spillagg_stats();");
	is($ret, 0, "$name passes once by hand") or diag($err);
	like($out, qr/^1$/m, "$name: spillagg equals PostgreSQL");
	like($out, qr/^spills=[1-9]\d*$/m, "$name: spills at spillagg.work_mem = 64");
}
{
	(my $par = $scripts{'par.sql'}) =~ s/^\\set .*\n//mg;
	$par =~ s/:wm/64/g;
	$par =~ s/:g\b/10/g;
	$par =~ s/:w\b/4/g;
	$par =~ s/^SELECT 1 \/ coalesce/EXPLAIN (COSTS OFF) SELECT 1 \/ coalesce/m;
	my ($ret, $out, $err) = $node->psql('postgres', $par);
	like($out, qr/Partial Aggregate/, 'par.sql: parallel plan (Partial Aggregate)') or diag($err);
}

my $idle = $node->background_psql('postgres');
my $idle_pid = $idle->query_safe('SELECT pg_backend_pid()');

my $idle_hwm = vm_hwm_kb($idle_pid);

# Current anonymous (private) RSS: the sampled maximum approximates the
# backend's own peak memory, without the shared buffers counted in VmHWM.
sub rss_anon_kb { return proc_status_kb($_[0], 'RssAnon'); }

my ($temp_files_before) = $node->safe_psql('postgres',
	'SELECT temp_files FROM pg_stat_database WHERE datname = current_database()');
my $log_offset = -s $node->logfile;

# Sampler: a child process reads VmHWM of every pgbench backend about once
# a second and writes the per-pid maxima to a file. It leaves with _exit, so
# no END block (Test::More, node teardown) runs in it.
my $samples_file = $node->basedir . '/vmhwm_samples';
my $stop_file = $node->basedir . '/vmhwm_stop';
my $connstr = $node->connstr('postgres');
my $sampler = fork();
die "fork: $!" unless defined $sampler;
if ($sampler == 0)
{
	my (%max, %anon, %rounds);
	my $n = 0;
	my $deadline = time() + $duration + 30;
	while (!-e $stop_file && time() < $deadline)
	{
		my @pids;
		if (open(my $ph, '-|', 'psql', '-XAtq', '-d', $connstr, '-c',
				"SELECT pid FROM pg_stat_activity WHERE application_name = 'pgbench' AND backend_type = 'client backend'"))
		{
			@pids = grep { /^\d+$/ } map { chomp; $_ } <$ph>;
			close $ph;
		}
		for my $pid (@pids)
		{
			my $h = vm_hwm_kb($pid);
			next unless defined $h;
			$max{$pid} = $h if !defined $max{$pid} || $h > $max{$pid};
			my $ra = rss_anon_kb($pid) // 0;
			$anon{$pid} = $ra if !defined $anon{$pid} || $ra > $anon{$pid};
			$rounds{$pid}++;
		}
		$n++ if @pids;
		if (open(my $fh, '>', "$samples_file.tmp"))
		{
			print $fh "rounds $n\n";
			print $fh "$_ $max{$_} $anon{$_} $rounds{$_}\n" for sort keys %max;
			close $fh;
			rename "$samples_file.tmp", $samples_file;
		}
		usleep(1_000_000);
	}
	POSIX::_exit(0);
}

my $pgbench_log_prefix = $node->basedir . '/pgbench_log';
my $t0 = [gettimeofday()];
my $weights = { map { my $w = ($_ eq 'par.sql') ? 1 : 2; ("$_\@$w" => $scripts{$_}) } keys %scripts };
{
	# The TAP framework sets PGAPPNAME to the test's name; the sampler
	# looks for application_name = 'pgbench'.
	local $ENV{PGAPPNAME} = 'pgbench';
	$node->pgbench(
		"--no-vacuum --client=$clients --jobs=$clients --time=$duration --log --log-prefix=$pgbench_log_prefix",
		0,
		[
			qr{number of failed transactions: 0 \(0\.000%\)},
			qr{number of transactions actually processed: [1-9]\d*},
			map { qr{SQL script \d+: \S+/\Q$_\E\n - weight: \d+ \(targets [\d.]+% of total\)\n - [1-9]\d* transactions} }
			  sort keys %scripts
		],
		[qr{^(?!.*(?:error|ERROR|abort))}s],
		"pgbench: $clients clients x ${duration}s of checked spilling queries, all right",
		$weights);
}
my $elapsed = tv_interval($t0);

PostgreSQL::Test::Utils::append_to_file($stop_file, 'stop');
waitpid($sampler, 0);

# Transactions per script, from pgbench's per-transaction logs (-l): lines
# "client_id transaction_no time script_no ...", scripts numbered in the
# order of their (sorted) file names.
my @script_names = sort keys %scripts;
my %per_script;
my $logged = 0;
for my $f (glob("$pgbench_log_prefix.*"))
{
	open my $fh, '<', $f or next;
	while (<$fh>)
	{
		my @c = split;
		next unless @c >= 4;
		$per_script{ $script_names[ $c[3] ] // "script $c[3]" }++;
		$logged++;
	}
}
cmp_ok($logged, '>', 0, "pgbench logged $logged transactions");
diag(sprintf('pgbench ran %.1f s, %d transactions: %s', $elapsed, $logged,
	join(', ', map { "$_ " . ($per_script{$_} // 0) } @script_names)));

# VmHWM of the pgbench backends.
my (%max, %anon);
my $rounds = 0;
if (open my $fh, '<', $samples_file)
{
	while (<$fh>)
	{
		$rounds = $1 if /^rounds (\d+)/;
		($max{$1}, $anon{$1}) = ($2, $3) if /^(\d+) (\d+) (\d+) (\d+)$/;
	}
}
is(scalar(keys %max), $clients, "VmHWM sampled for all $clients pgbench backends ($rounds rounds)");
my ($top) = sort { $b <=> $a } values %max;
my ($top_anon) = sort { $b <=> $a } values %anon;
diag(sprintf('VmHWM of the pgbench backends: max %d kB, all: %s; an idle fresh backend: %d kB',
	$top // 0, join(' ', map { $max{$_} } sort keys %max), $idle_hwm // 0));
diag(sprintf('RssAnon of the pgbench backends (max over samples): max %d kB, all: %s; an idle fresh backend: %d kB',
	$top_anon // 0, join(' ', map { $anon{$_} } sort keys %anon), rss_anon_kb($idle_pid) // 0));
$idle->quit;

# Spill files were written (and are now gone), nothing left, nothing logged.
ok( $node->poll_query_until('postgres',
		"SELECT temp_files > $temp_files_before + 100 FROM pg_stat_database WHERE datname = current_database()"),
	'the load spilled (pg_stat_database.temp_files grew by > 100)');
my $temp_files = $node->safe_psql('postgres',
	'SELECT temp_files FROM pg_stat_database WHERE datname = current_database()');
diag('temp files written during the load: ' . ($temp_files - $temp_files_before));

my @left = glob("$datadir/base/pgsql_tmp/*");
is(scalar(@left), 0, 'no temporary file left after the load') or diag("left over: @left");
is($node->safe_psql('postgres', "SELECT 'alive'"), 'alive', 'server alive after the load');

$node->stop;
my $log = slurp_file($node->logfile, $log_offset);
server_log_is_clean($log, 'the load');
unlike($log, qr/ERROR:/, 'no ERROR in the server log (no wrong answer)');
@left = glob("$datadir/base/pgsql_tmp/*");
is(scalar(@left), 0, 'no temporary file left after shutdown');

done_testing();
