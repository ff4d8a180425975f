# Copyright: spillagg authors.
#
# Resource hygiene of spilling aggregates when queries do not end normally:
# cancel (mid-spill and during the final merge), pg_terminate_backend, ERROR
# inside transactions and subtransactions, cursors closed early or left open,
# kill -9 of a backend (crash restart), window use, canceled parallel query.
# After each scenario: the sessions still work, answers equal PostgreSQL's
# own, no file is left in pgsql_tmp, and the server log has no "temporary
# file leak", no WARNING and no TRAP. Finally the peak memory (VmHWM) of a
# backend running count_distinct over 2M keys in a 1 MB budget.
use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use FindBin;
use lib $FindBin::RealBin;
use SpillaggTest;
use Time::HiRes qw(usleep gettimeofday tv_interval);

my $node = PostgreSQL::Test::Cluster->new('hygiene');
$node->init;
$node->append_conf(
	'postgresql.conf', q{
log_temp_files = 0
# Rows must reach the aggregate in insertion order (the "late row" gates
# below rely on it) and in one process, except where a session asks for
# parallel query.
max_parallel_workers_per_gather = 0
synchronize_seqscans = off
# (f) kills a backend with SIGKILL: the postmaster must reinitialize.
restart_after_crash = on
remove_temp_files_after_crash = on
});
$node->start;

my $datadir = $node->data_dir;
my $tsdir = PostgreSQL::Test::Utils::tempdir('spill_ts');
my $gatedir = PostgreSQL::Test::Utils::tempdir('gate');
my $gate_file = "$gatedir/closed";

$node->safe_psql('postgres', qq{
CREATE TABLESPACE spill_ts LOCATION '$tsdir';
CREATE EXTENSION spillagg;
-- 300k rows, ~200k distinct non-NULL keys: (i * 7919) % 200000 is a bijection
-- on one period, so 100k keys appear twice; every 1000th key is NULL.
CREATE TABLE t AS
  SELECT i, i % 4 AS g,
         CASE WHEN i % 1000 = 0 THEN NULL ELSE ((i::bigint * 7919) % 200000)::int END AS k,
         (i % 1000) - 500 AS v,
         ((i % 1000) - 500) / 100.0 AS n
  FROM generate_series(1, 300000) AS i;
VACUUM ANALYZE t;
-- PostgreSQL's own answers.
CREATE TABLE native AS SELECT
  (SELECT count(DISTINCT k) FROM t) AS cd,
  (SELECT jsonb_object_agg(k, c) FROM (SELECT k, count(*) AS c FROM t WHERE k IS NOT NULL GROUP BY k) x) AS cm,
  (SELECT jsonb_object_agg(k, s) FROM (SELECT k, sum(v) AS s FROM t WHERE k IS NOT NULL GROUP BY k) x) AS sm;
CREATE TABLE native_g AS
  SELECT g, count(DISTINCT k) AS cd,
         (SELECT jsonb_object_agg(k100, s)
          FROM (SELECT k % 100 AS k100, sum(v) AS s FROM t AS t2
                WHERE t2.g = t1.g AND k IS NOT NULL GROUP BY 1) x) AS sm100
  FROM t AS t1 GROUP BY g;
-- Blocks while another session holds advisory lock 4242 exclusively.
CREATE FUNCTION wait_gate(v anyelement) RETURNS anyelement
LANGUAGE plpgsql AS \$\$
BEGIN
  PERFORM pg_advisory_lock_shared(4242);
  PERFORM pg_advisory_unlock_shared(4242);
  RETURN v;
END
\$\$;
-- The same for parallel workers (advisory locks are parallel restricted):
-- sleeps while the file exists.
CREATE FUNCTION wait_file_gate(v anyelement) RETURNS anyelement
LANGUAGE plpgsql PARALLEL SAFE AS \$\$
BEGIN
  WHILE (pg_stat_file('$gate_file', true)).size IS NOT NULL LOOP
    PERFORM pg_sleep(0.01);
  END LOOP;
  RETURN v;
END
\$\$;
});

my $native_cd = $node->safe_psql('postgres', 'SELECT cd FROM native');
cmp_ok($native_cd, '>=', 190000, "data set has ~200k distinct keys ($native_cd)");

###########################################################################
# Helpers
###########################################################################

watch_temp_files(["$datadir/base/pgsql_tmp/*", "$tsdir/PG_*/pgsql_tmp/*"]);

sub poll_temp_files
{
	for (my $i = 0; $i < 50; $i++)
	{
		my @f = temp_files();
		return @f if @f;
		usleep(100_000);
	}
	return ();
}

# The server log since $offset (returned) is clean (SpillaggTest).
sub log_clean
{
	my ($offset, $what) = @_;
	my $log = slurp_file($node->logfile, $offset);
	server_log_is_clean($log, $what);
	return $log;
}

# Run SQL in a background session; returns (stdout, stderr) and clears
# stderr for the next call.
sub run_sql
{
	my ($s, $sql) = @_;
	my ($out) = $s->query($sql);
	my $err = $s->{stderr};
	$s->{stderr} = '';
	return ($out, $err);
}

# Send SQL to a background session without waiting for its result.
sub start_sql
{
	my ($s, $sql) = @_;
	$s->query_until(qr/started/, "\\echo started\n$sql\n");
}

# Wait until a statement sent with start_sql either printed a line matching
# $ok_re or reported an error; returns (stdout, stderr, time seen) and clears
# stdout and stderr.
sub wait_outcome
{
	my ($s, $ok_re) = @_;
	until ($s->{stdout} =~ $ok_re
		  || $s->{stderr} =~ /ERROR:|FATAL:|server closed|connection to server/)
	{
		die "background psql timed out" if $s->{timeout}->is_expired;
		eval { $s->{run}->pump_nb; };
		last if $@;
		usleep(5_000);
	}
	my $seen = [gettimeofday()];
	# Let the rest of an error message (CONTEXT lines...) arrive.
	usleep(50_000);
	eval { $s->{run}->pump_nb; };
	my ($o, $e) = ($s->{stdout}, $s->{stderr});
	$s->{stdout} = '';
	$s->{stderr} = '';
	return ($o, $e, $seen);
}

sub wait_for_gate
{
	my ($pid) = @_;
	return $node->poll_query_until('postgres',
		"SELECT count(*) > 0 FROM pg_locks WHERE locktype = 'advisory' AND pid = $pid AND NOT granted"
	);
}

sub spills
{
	my ($s) = @_;
	my ($o) = run_sql($s, 'SELECT spills FROM spillagg_stats()');
	return $o + 0;
}

# Current RssAnon/RssFile/RssShmem, for the record.
sub rss_parts
{
	my ($pid) = @_;
	open my $fh, '<', "/proc/$pid/status" or return '?';
	my @p;
	while (<$fh>)
	{
		push @p, "$1 $2 kB" if /^(RssAnon|RssFile|RssShmem):\s+(\d+)\s+kB/;
	}
	return join(', ', @p);
}

my $answer_sql = q{SELECT 'result=' || (count_distinct(k) = (SELECT cd FROM native))::text
  || ',' || (sum_map(k, v) = (SELECT sm FROM native))::text FROM t;};

my $ctl = $node->background_psql('postgres');
my $worker = $node->background_psql('postgres', on_error_stop => 0);
run_sql($worker, 'SET spillagg.work_mem = 64');
my $wpid = $worker->query_safe('SELECT pg_backend_pid()');

# A second session must keep working (and get right answers) throughout.
sub other_session_ok
{
	my ($what) = @_;
	my ($ret, $out, $err) = $node->psql('postgres',
		"SET spillagg.work_mem = 64;\n$answer_sql");
	is($out, 'result=true,true', "$what: another session's spilling query is right")
	  or diag("ret=$ret stderr=$err");
}

###########################################################################
# (a) pg_cancel_backend mid-spill (held at a late row), then during the
# final merge; statement_timeout landing in the final merge.
###########################################################################
my $log_offset = -s $node->logfile;

$ctl->query_safe('SELECT pg_advisory_lock(4242)');
start_sql($worker, q{SELECT 'result=' || (sum_map(CASE WHEN i = 250001 THEN wait_gate(k) ELSE k END, v)
  = (SELECT sm FROM native))::text FROM t;});
ok(wait_for_gate($wpid), '(a) spilling query reached the late row and waits');
my @held_a = poll_temp_files();
cmp_ok(scalar(@held_a), '>', 0, '(a) spill files exist while the query is held');
# Meanwhile another session spills and gets the right answer.
other_session_ok('(a) while a spilled query is held');
$ctl->query_safe("SELECT pg_cancel_backend($wpid)");
my ($o, $e) = wait_outcome($worker, qr/result=/);
like($e, qr/ERROR:  canceling statement due to user request/, '(a) mid-spill query canceled');
is($o, '', '(a) canceled query returned no row');
$ctl->query_safe('SELECT pg_advisory_unlock(4242)');
($o, $e) = run_sql($worker, 'SELECT 1');
is($o, '1', '(a) session works after the cancel');
no_temp_files_left('(a) after cancel mid-spill');
($o, $e) = run_sql($worker, $answer_sql);
is($o, 'result=true,true', '(a) same session: spilling query right after the cancel');
no_temp_files_left('(a) after the next query');

# Final merge: hold the query at the very last row, so that on release only
# the final functions (k-way merges of the spilled runs, jsonb building) are
# left. First time the finalization once, uncanceled.
my $final_sql = q{SELECT 'result=' || (count_distinct(CASE WHEN i = 300000 THEN wait_gate(k) ELSE k END)
  = (SELECT cd FROM native))::text
  || ',' || (count_map(k) = (SELECT cm FROM native))::text
  || ',' || (sum_map(k, v) = (SELECT sm FROM native))::text FROM t;};
$ctl->query_safe('SELECT pg_advisory_lock(4242)');
start_sql($worker, $final_sql);
ok(wait_for_gate($wpid), '(a) query held at the last row');
my $t0 = [gettimeofday()];
$ctl->query_safe('SELECT pg_advisory_unlock(4242)');
my $seen;
($o, $e, $seen) = wait_outcome($worker, qr/result=\S+\n/);
my $final_ms = int(1000 * tv_interval($t0, $seen));
like($o, qr/^result=true,true,true$/m, "(a) uncanceled: right answers; finalization took $final_ms ms")
  or diag("stderr: $e");
diag("(a) final phase (3 final merges of ~200k keys) takes $final_ms ms");

# Now cancel a quarter of the way into the finalization.
my $delay = sprintf('%.3f', $final_ms / 4000);
$ctl->query_safe('SELECT pg_advisory_lock(4242)');
start_sql($worker, $final_sql);
ok(wait_for_gate($wpid), '(a) query held at the last row again');
$t0 = [gettimeofday()];
$ctl->query_safe("SELECT pg_advisory_unlock(4242), pg_sleep($delay), pg_cancel_backend($wpid)");
my $cancel_sent_ms = int(1000 * tv_interval($t0));
($o, $e, $seen) = wait_outcome($worker, qr/result=\S+\n/);
my $cancel_latency_ms = int(1000 * tv_interval($t0, $seen)) - $cancel_sent_ms;
if ($final_ms >= 200)
{
	like($e, qr/ERROR:  canceling statement due to user request/,
		"(a) cancel ${delay}s into the final merge is honored (after $cancel_latency_ms ms)")
	  or diag("stdout: $o");
}
else
{
	ok( $o =~ /^result=true,true,true$/m
		  || $e =~ /ERROR:  canceling statement due to user request/,
		'(a) final phase too short to aim at: right answer or clean cancel')
	  or diag("stdout: $o\nstderr: $e");
}
unlike($e, qr/ERROR:  (?!canceling statement)|WARNING|FATAL/, '(a) no other error than the cancel');
diag("(a) cancel during final merge: reported $cancel_latency_ms ms after pg_cancel_backend returned");
($o, $e) = run_sql($worker, 'SELECT 1');
is($o, '1', '(a) session works after the cancel in the final merge');
no_temp_files_left('(a) after cancel in the final merge');

# statement_timeout aimed at the final merge: total time minus half the
# finalization, plus two earlier points.
(my $total_sql = $final_sql) =~ s/wait_gate\(k\)/k/;
$t0 = [gettimeofday()];
($o, $e) = run_sql($worker, $total_sql);
my $total_ms = int(1000 * tv_interval($t0));
is($o, 'result=true,true,true', "(a) ungated three-aggregate query right ($total_ms ms)");
my $timeouts_hit = 0;
for my $ms (int($total_ms - $final_ms / 2), int($total_ms * 0.8), int($total_ms * 0.5))
{
	$ms = 1 if $ms < 1;
	($o, $e) = run_sql($worker,
		"SET statement_timeout = $ms;\n$total_sql\nRESET statement_timeout;");
	my $canceled = $e =~ /ERROR:  canceling statement due to statement timeout/;
	$timeouts_hit++ if $canceled;
	# A timeout firing in executor shutdown, after the row was sent, gives
	# the row and the cancel (plain PostgreSQL behaviour): the row, if any,
	# must still be right.
	ok( ($o eq 'result=true,true,true' && $e eq '')
		  || ($canceled
			&& ($o eq '' || $o eq 'result=true,true,true')
			&& $e !~ /(?:ERROR|WARNING|FATAL):  (?!canceling statement)/),
		"(a) statement_timeout $ms ms: right answer or a clean cancel ("
		  . ($canceled ? ($o eq '' ? 'canceled' : 'canceled after sending the row') : 'completed') . ')')
	  or diag("stdout: $o\nstderr: $e");
	run_sql($worker, 'RESET statement_timeout');
	no_temp_files_left("(a) after statement_timeout $ms ms");
}
cmp_ok($timeouts_hit, '>', 0, "(a) statement_timeout canceled $timeouts_hit of 3 queries");
log_clean($log_offset, '(a)');

###########################################################################
# (b) pg_terminate_backend mid-spill: the backend goes, the server stays.
###########################################################################
$log_offset = -s $node->logfile;
my $victim = $node->background_psql('postgres', on_error_stop => 0);
($o, $e) = run_sql($victim, "SET spillagg.work_mem = 64;\nSET temp_tablespaces = spill_ts, pg_default;");
is($e, '', '(b) spill files go to spill_ts and pg_default');
my $vpid = $victim->query_safe('SELECT pg_backend_pid()');
$ctl->query_safe('SELECT pg_advisory_lock(4242)');
start_sql($victim, q{SELECT 'result=' || count_distinct(CASE WHEN i = 250001 THEN wait_gate(k) ELSE k END),
  count_map(k) IS NOT NULL FROM t;});
ok(wait_for_gate($vpid), '(b) spilling query reached the late row');
my @files = poll_temp_files();
cmp_ok(scalar(@files), '>', 0, '(b) spill files exist before the terminate');
is($ctl->query_safe("SELECT pg_terminate_backend($vpid)"), 't', '(b) pg_terminate_backend');
($o, $e) = wait_outcome($victim, qr/result=/);
like($e, qr/FATAL:  terminating connection due to administrator command|server closed the connection|connection to server was lost/,
	'(b) the client sees its connection terminated');
eval { $victim->{run}->kill_kill; };
ok( $node->poll_query_until('postgres',
		"SELECT count(*) = 0 FROM pg_stat_activity WHERE pid = $vpid"),
	'(b) the terminated backend is gone');
$ctl->query_safe('SELECT pg_advisory_unlock(4242)');
no_temp_files_left('(b) after pg_terminate_backend', 10);
is($ctl->query_safe("SELECT 'alive'"), 'alive', '(b) server still accepts queries');
ok(kill(0, $node->{_pid}), '(b) postmaster still running');
other_session_ok('(b)');
($o, $e) = run_sql($worker, $answer_sql);
is($o, 'result=true,true', '(b) the other open session still works');
my $log_b = log_clean($log_offset, '(b)');
unlike($log_b, qr/all server processes terminated; reinitializing/, '(b) no server restart');

###########################################################################
# (c) ERROR at a late row inside a transaction, then ROLLBACK.
###########################################################################
$log_offset = -s $node->logfile;
run_sql($worker, 'BEGIN');
my $spills_before = spills($worker);
($o, $e) = run_sql($worker,
	'SELECT count_distinct(k), sum_map(k, CASE WHEN i = 250001 THEN v / (i - 250001) ELSE v END) IS NOT NULL FROM t;');
like($e, qr/ERROR:  division by zero/, '(c) mid-query ERROR inside a transaction');
is($o, '', '(c) no row from the failed query');
no_temp_files_left('(c) right after the ERROR, before ROLLBACK');
($o, $e) = run_sql($worker, 'SELECT 1');
like($e, qr/current transaction is aborted/, '(c) transaction is aborted');
run_sql($worker, 'ROLLBACK');
no_temp_files_left('(c) after ROLLBACK');
ok($node->log_contains(qr{temporary file: path "base/pgsql_tmp/pgsql_tmp$wpid\.\d+", size \d+}, $log_offset),
	'(c) the failed query had spilled (its temp files were logged)');
($o, $e) = run_sql($worker, $answer_sql);
is($o, 'result=true,true', '(c) session answers right after ROLLBACK');
cmp_ok(spills($worker), '>', $spills_before, '(c) and it spilled');
no_temp_files_left('(c) after the next query');
log_clean($log_offset, '(c)');

###########################################################################
# (d) SAVEPOINT; spilling query fails; ROLLBACK TO SAVEPOINT; a successful
# spilling query in the same transaction; COMMIT.
###########################################################################
$log_offset = -s $node->logfile;
$spills_before = spills($worker);
($o, $e) = run_sql($worker, "BEGIN;\nSAVEPOINT s;");
($o, $e) = run_sql($worker,
	'SELECT sum_map(k, CASE WHEN i = 250001 THEN v / (i - 250001) ELSE v END) IS NOT NULL FROM t;');
like($e, qr/ERROR:  division by zero/, '(d) spilling query fails inside the savepoint');
($o, $e) = run_sql($worker, 'ROLLBACK TO SAVEPOINT s');
is($e, '', '(d) ROLLBACK TO SAVEPOINT');
no_temp_files_left('(d) after ROLLBACK TO SAVEPOINT');
($o, $e) = run_sql($worker, $answer_sql);
is($o, 'result=true,true', '(d) spilling query after ROLLBACK TO SAVEPOINT is right') or diag($e);
($o, $e) = run_sql($worker, 'SELECT spills FROM spillagg_stats()');
cmp_ok($o, '>', $spills_before, '(d) spills happened in the transaction');
($o, $e) = run_sql($worker, 'COMMIT');
is($e, '', '(d) COMMIT');
no_temp_files_left('(d) after COMMIT');

# A cursor of the outer transaction keeps its unfinalized, spilled states
# across an aborted subtransaction and still gives the right answers.
run_sql($worker, "SET enable_sort = off;\nBEGIN;\nDECLARE c CURSOR FOR SELECT g, count_distinct(k), sum_map(k % 100, v) FROM t GROUP BY g;");
my ($first) = run_sql($worker, 'FETCH 1 FROM c');
my @held = temp_files();
cmp_ok(scalar(@held), '>', 0, '(d) open cursor holds spilled states (' . scalar(@held) . ' files)');
run_sql($worker, 'SAVEPOINT s');
($o, $e) = run_sql($worker,
	'SELECT count_distinct(CASE WHEN i = 250001 THEN k / (i - 250001) ELSE k END) FROM t;');
like($e, qr/ERROR:  division by zero/, '(d) failing spilling query in a savepoint while a cursor is open');
run_sql($worker, 'ROLLBACK TO SAVEPOINT s');
($o, $e) = run_sql($worker, 'FETCH ALL FROM c');
is($e, '', '(d) cursor still readable after ROLLBACK TO SAVEPOINT');
my @cursor_rows = grep { $_ ne '' } split /\n/, "$first\n$o";
is(scalar(@cursor_rows), 4, '(d) cursor returned all 4 groups');
my $cursor_bad = 0;
for my $row (@cursor_rows)
{
	my ($g, $cd, $sm) = split /\|/, $row, 3;
	$cursor_bad++ unless $ctl->query_safe(
		"SELECT cd = $cd AND sm100 = \$j\$$sm\$j\$::jsonb FROM native_g WHERE g = $g") eq 't';
}
is($cursor_bad, 0, '(d) cursor answers (before and after the subtransaction abort) are right');
run_sql($worker, "CLOSE c;\nCOMMIT;\nRESET enable_sort;");
no_temp_files_left('(d) after the cursor and COMMIT');
log_clean($log_offset, '(d)');

###########################################################################
# (e) Cursors stopped early: CLOSE, left open until COMMIT, ROLLBACK,
# WITH HOLD; with hashed and sorted grouping.
###########################################################################
$log_offset = -s $node->logfile;
my $cursor_sql = 'SELECT g, count_distinct(k), sum_map(k % 100, v) FROM t GROUP BY g';

sub check_rows
{
	my ($what, $out, $expect) = @_;
	my @rows = grep { $_ ne '' } split /\n/, $out;
	is(scalar(@rows), $expect, "$what: $expect rows fetched");
	my $bad = 0;
	for my $row (@rows)
	{
		my ($g, $cd, $sm) = split /\|/, $row, 3;
		$bad++ unless $ctl->query_safe(
			"SELECT cd = $cd AND sm100 = \$j\$$sm\$j\$::jsonb FROM native_g WHERE g = $g") eq 't';
	}
	is($bad, 0, "$what: fetched answers equal PostgreSQL's");
}

for my $plan (['default', ''], ['hashed', 'SET enable_sort = off;'],
	['sorted', 'SET enable_hashagg = off;'])
{
	my ($name, $set) = @$plan;
	run_sql($worker, "RESET enable_sort;\nRESET enable_hashagg;\n$set");
	my ($explain) = run_sql($worker, "EXPLAIN (COSTS OFF) $cursor_sql");
	my ($node_type) = $explain =~ /^(\w+Aggregate)/m;
	note("(e) $name plan: $node_type");

	# FETCH 2, CLOSE, COMMIT.
	run_sql($worker, "BEGIN;\nDECLARE c CURSOR FOR $cursor_sql;");
	($o, $e) = run_sql($worker, 'FETCH 2 FROM c');
	check_rows("(e) $name ($node_type) FETCH 2", $o, 2);
	($o, $e) = run_sql($worker, 'CLOSE c');
	is($e, '', "(e) $name: CLOSE");
	no_temp_files_left("(e) $name: after CLOSE, before COMMIT");
	($o, $e) = run_sql($worker, 'COMMIT');
	is($e, '', "(e) $name: COMMIT after CLOSE, no message");
	no_temp_files_left("(e) $name: after CLOSE and COMMIT");

	# Left open until COMMIT.
	run_sql($worker, "BEGIN;\nDECLARE c CURSOR FOR $cursor_sql;");
	($o, $e) = run_sql($worker, 'FETCH 2 FROM c');
	check_rows("(e) $name open cursor FETCH 2", $o, 2);
	($o, $e) = run_sql($worker, 'COMMIT');
	is($e, '', "(e) $name: COMMIT with the cursor still open, no message");
	no_temp_files_left("(e) $name: after COMMIT with an open cursor");

	# Left open, transaction rolled back.
	run_sql($worker, "BEGIN;\nDECLARE c CURSOR FOR $cursor_sql;");
	($o, $e) = run_sql($worker, 'FETCH 1 FROM c');
	check_rows("(e) $name FETCH 1 then ROLLBACK", $o, 1);
	($o, $e) = run_sql($worker, 'ROLLBACK');
	is($e, '', "(e) $name: ROLLBACK with an open cursor");
	no_temp_files_left("(e) $name: after ROLLBACK with an open cursor");

	# WITH HOLD: COMMIT runs the rest of the query into a tuplestore.
	run_sql($worker, "BEGIN;\nDECLARE c CURSOR WITH HOLD FOR $cursor_sql;");
	my ($o1) = run_sql($worker, 'FETCH 1 FROM c');
	($o, $e) = run_sql($worker, 'COMMIT');
	is($e, '', "(e) $name: COMMIT of a WITH HOLD cursor");
	no_temp_files_left("(e) $name: WITH HOLD cursor materialized");
	($o, $e) = run_sql($worker, 'FETCH ALL FROM c');
	check_rows("(e) $name WITH HOLD all rows", "$o1\n$o", 4);
	run_sql($worker, 'CLOSE c');
	no_temp_files_left("(e) $name: WITH HOLD cursor closed");
}
run_sql($worker, "RESET enable_sort;\nRESET enable_hashagg;");
log_clean($log_offset, '(e)');

###########################################################################
# (g) Window use: a clean ERROR 0A000, never rows or a crash.
###########################################################################
$log_offset = -s $node->logfile;
my @window_queries = (
	'SELECT sum_map(k, v) OVER (PARTITION BY g) FROM t',
	'SELECT sum_map(k, v) OVER (ORDER BY i ROWS BETWEEN 2 PRECEDING AND CURRENT ROW) FROM t',
	'SELECT count_distinct(k) OVER () FROM t',
	'SELECT count_map(k) OVER (PARTITION BY g ORDER BY i) FROM t',
	'SELECT top_k(k, 3) OVER (PARTITION BY g) FROM t',
	'SELECT avg_map(k, n) OVER (ORDER BY i ROWS BETWEEN 2 PRECEDING AND CURRENT ROW) FROM t',
	'SELECT count_distinct(k) FILTER (WHERE v > 0) OVER (PARTITION BY g) FROM t',
	'SELECT histogram(k) OVER w FROM t WINDOW w AS (ORDER BY i RANGE BETWEEN 10 PRECEDING AND 10 FOLLOWING)',
);
for my $wq (@window_queries)
{
	my ($ret, $out, $err) = $node->psql('postgres',
		"\\set VERBOSITY verbose\nSET spillagg.work_mem = 64;\n$wq;\nSELECT 'alive';",
		on_error_stop => 0);
	like($err, qr/ERROR:  0A000: aggregate function \w+\(.*\) does not support use as a window function/,
		"(g) $wq: ERROR 0A000");
	is($out, 'alive', "(g) $wq: no rows, session continues");
}
no_temp_files_left('(g) after window queries');
log_clean($log_offset, '(g)');

###########################################################################
# (h) Parallel spilling query canceled mid-way: the workers' files go too.
###########################################################################
$log_offset = -s $node->logfile;
my $par = $node->background_psql('postgres', on_error_stop => 0);
run_sql($par, q{SET spillagg.work_mem = 64;
SET parallel_setup_cost = 0;
SET parallel_tuple_cost = 0;
SET min_parallel_table_scan_size = 0;
SET max_parallel_workers_per_gather = 2;});
my $ppid = $par->query_safe('SELECT pg_backend_pid()');
($o, $e) = run_sql($par, "EXPLAIN (COSTS OFF) $answer_sql");
like($o, qr/Partial Aggregate/, '(h) EXPLAIN shows Partial Aggregate');
like($o, qr/Workers Planned: 2/, '(h) two workers planned');
($o, $e) = run_sql($par, 'EXPLAIN (ANALYZE, COSTS OFF, TIMING OFF, SUMMARY OFF) SELECT count_distinct(k), sum_map(k, v) FROM t');
like($o, qr/Workers Launched: 2/, '(h) two workers launched');
($o, $e) = run_sql($par, $answer_sql);
is($o, 'result=true,true', '(h) parallel spilling query gives the native answers') or diag($e);
($o, $e) = run_sql($par, "$cursor_sql ORDER BY g");
check_rows('(h) parallel GROUP BY', $o, 4);
no_temp_files_left('(h) after parallel queries');

# Every process (leader and both workers) stops at its first late row.
my $par_gated = q{SELECT 'result=' || count_distinct(CASE WHEN i > 150000 AND i % 1000 = 1 THEN wait_file_gate(k) ELSE k END),
  sum_map(k, v) IS NOT NULL FROM t;};
($o, $e) = run_sql($par, "EXPLAIN (COSTS OFF) $par_gated");
like($o, qr/Partial Aggregate/, '(h) the gated query is parallel too');
PostgreSQL::Test::Utils::append_to_file($gate_file, 'closed');
start_sql($par, $par_gated);
ok( $node->poll_query_until('postgres',
		"SELECT count(*) = 3 FROM pg_stat_activity WHERE (pid = $ppid OR leader_pid = $ppid) AND wait_event = 'PgSleep'"
	),
	'(h) the leader and both workers are held at late rows');
ok( $node->poll_query_until('postgres',
		"SELECT count(*) = 2 FROM pg_stat_activity WHERE leader_pid = $ppid AND backend_type = 'parallel worker'"
	),
	'(h) both workers are running');
my $worker_pids = $ctl->query_safe(
	"SELECT string_agg(pid::text, ',') FROM pg_stat_activity WHERE leader_pid = $ppid AND backend_type = 'parallel worker'");
my %is_worker = map { $_ => 1 } split /,/, $worker_pids;
# Wait until a worker has spilled.
my @worker_files;
for (my $i = 0; $i < 100 && !@worker_files; $i++)
{
	@worker_files = grep { m{/pgsql_tmp(\d+)\.\d+$} && $is_worker{$1} } temp_files();
	usleep(100_000) unless @worker_files;
}
cmp_ok(scalar(@worker_files), '>', 0,
	'(h) parallel workers have spill files (' . scalar(@worker_files) . ')')
  or diag('files: ' . join(' ', temp_files()) . "; workers: $worker_pids");
$ctl->query_safe("SELECT pg_cancel_backend($ppid)");
($o, $e) = wait_outcome($par, qr/result=/);
like($e, qr/ERROR:  canceling statement due to user request/, '(h) parallel query canceled');
unlink $gate_file;
($o, $e) = run_sql($par, 'SELECT 1');
is($o, '1', '(h) session works after the cancel');
is($ctl->query_safe("SELECT count(*) FROM pg_stat_activity WHERE leader_pid = $ppid"),
	'0', '(h) no parallel worker left');
no_temp_files_left('(h) after canceling the parallel query (leader and workers)');
($o, $e) = run_sql($par, $answer_sql);
is($o, 'result=true,true', '(h) parallel query right after the cancel');
no_temp_files_left('(h) after the next parallel query');
$par->quit;
log_clean($log_offset, '(h)');

###########################################################################
# (f) kill -9 of a backend mid-spill: crash restart removes its files.
###########################################################################
# The killed backend spills to base/pgsql_tmp; a second backend, held at the
# same gate, spills to the temp tablespace and is taken down by the crash
# (SIGQUIT: no cleanup either). Both sets of files must be gone after the
# restart.
$log_offset = -s $node->logfile;
my $bystander = $node->background_psql('postgres', on_error_stop => 0);
($o, $e) = run_sql($bystander, "SET spillagg.work_mem = 64;\nSET temp_tablespaces = spill_ts;");
is($e, '', '(f) second backend spills to spill_ts');
my $bpid = $bystander->query_safe('SELECT pg_backend_pid()');
$ctl->query_safe('SELECT pg_advisory_lock(4242)');
my $kill_sql = q{SELECT 'result=' || count_distinct(CASE WHEN i = 250001 THEN wait_gate(k) ELSE k END),
  count_map(k) IS NOT NULL, sum_map(k, v) IS NOT NULL FROM t;};
start_sql($worker, $kill_sql);
start_sql($bystander, $kill_sql);
ok(wait_for_gate($wpid), '(f) spilling query to be killed reached the late row');
ok(wait_for_gate($bpid), '(f) second spilling query reached the late row');
my (@killed_files, @bystander_files);
for (my $i = 0; $i < 50 && !(@killed_files && @bystander_files); $i++)
{
	usleep(100_000) if $i;
	@files = temp_files();
	@killed_files = grep { m{^\Q$datadir\E/base/pgsql_tmp/pgsql_tmp$wpid\.\d+$} } @files;
	@bystander_files = grep { m{^\Q$tsdir\E/.*/pgsql_tmp$bpid\.\d+$} } @files;
}
cmp_ok(scalar(@killed_files), '>', 0,
	'(f) the backend to be killed has spill files in base/pgsql_tmp (' . scalar(@killed_files) . ')')
  or diag("files: @files");
cmp_ok(scalar(@bystander_files), '>', 0,
	'(f) the second backend has spill files in the temp tablespace (' . scalar(@bystander_files) . ')')
  or diag("files: @files");
is(kill('KILL', $wpid), 1, "(f) SIGKILL sent to backend $wpid");
# Every session dies with the crash; drop their psql processes.
eval { $worker->{run}->kill_kill; };
eval { $bystander->{run}->kill_kill; };
eval { $ctl->{run}->kill_kill; };
# Wait for the restart itself, so that the poll below cannot connect before
# the postmaster noticed the crash.
ok($node->wait_for_log(qr/all server processes terminated; reinitializing/, $log_offset),
	'(f) postmaster reinitializes after the crash');
ok($node->poll_query_until('postgres', 'SELECT NOT pg_is_in_recovery()'),
	'(f) server is back after crash recovery');
ok(kill(0, $node->{_pid}), '(f) the same postmaster is still running');
my @after_crash = temp_files();
is(scalar(@after_crash), 0,
	'(f) base/pgsql_tmp and the tablespace pgsql_tmp are empty after the crash restart')
  or diag("left over: @after_crash");
# 15 logs "server process (PID n) was terminated", 18 "client backend (PID n) ...".
ok($node->log_contains(qr/(?:server process|client backend) \(PID $wpid\) was terminated by signal 9/, $log_offset),
	'(f) postmaster logged the killed backend');
{
	my $log = slurp_file($node->logfile, $log_offset);
	server_log_is_clean($log, '(f) only the killed backend crashed;', crashed => [$wpid, 'signal 9']);
}
$ctl = $node->background_psql('postgres');
$worker = $node->background_psql('postgres', on_error_stop => 0);
run_sql($worker, 'SET spillagg.work_mem = 64');
($o, $e) = run_sql($worker, $answer_sql);
is($o, 'result=true,true', '(f) spilling queries work after the restart') or diag($e);
cmp_ok(spills($worker), '>', 0, '(f) and spill');
no_temp_files_left('(f) after a query following the restart');

###########################################################################
# (i) Peak memory (VmHWM) of count_distinct over 2M keys, 1 MB budget,
# against an idle fresh backend and against count(DISTINCT).
###########################################################################
$log_offset = -s $node->logfile;
$node->safe_psql('postgres', q{
CREATE TABLE t2m AS
  SELECT ((i::bigint * 7919) % 2000000)::int AS k FROM generate_series(0, 1999999) AS i;
VACUUM ANALYZE t2m;
});

my $mem = $node->background_psql('postgres');
my $mpid = $mem->query_safe('SELECT pg_backend_pid()');
my $idle_hwm = vm_hwm_kb($mpid);
ok(defined $idle_hwm, "(i) VmHWM of an idle fresh backend: $idle_hwm kB");
$mem->query_safe('SET spillagg.work_mem = 1024');
$t0 = [gettimeofday()];
my $cd2m = $mem->query_safe('SELECT count_distinct(k) FROM t2m');
my $cd_ms = int(1000 * tv_interval($t0));
is($cd2m, '2000000', "(i) count_distinct over 2M distinct keys ($cd_ms ms)");
my $cd_hwm = vm_hwm_kb($mpid);
my $cd_rss = rss_parts($mpid);
my $stats = $mem->query_safe(
	"SELECT spills || ' spills, ' || runs || ' runs, ' || bytes_written || ' bytes written, peak ' || peak_bytes || ' bytes' FROM spillagg_stats()");
$mem->quit;
my $bound = $idle_hwm + 64 * 1024;
cmp_ok($cd_hwm, '<', $bound,
	"(i) count_distinct 2M keys, spillagg.work_mem = 1MB: VmHWM $cd_hwm kB < idle $idle_hwm kB + 64 MB");
diag(sprintf('(i) count_distinct(2M keys), spillagg.work_mem=1MB: VmHWM %d kB (idle fresh backend %d kB, +%d kB), %d ms; spillagg_stats: %s; now %s',
	$cd_hwm, $idle_hwm, $cd_hwm - $idle_hwm, $cd_ms, $stats, $cd_rss));

my $nat = $node->background_psql('postgres');
my $npid = $nat->query_safe('SELECT pg_backend_pid()');
my $nat_idle_hwm = vm_hwm_kb($npid);
$t0 = [gettimeofday()];
my $ncd = $nat->query_safe('SELECT count(DISTINCT k) FROM t2m');
my $ncd_ms = int(1000 * tv_interval($t0));
my $nat_hwm = vm_hwm_kb($npid);
my $nat_rss = rss_parts($npid);
my $nat_wm = $nat->query_safe('SHOW work_mem');
$nat->quit;
is($ncd, '2000000', '(i) native count(DISTINCT) agrees');
diag(sprintf('(i) native count(DISTINCT) (2M keys), work_mem=%s: VmHWM %d kB (idle fresh backend %d kB, +%d kB), %d ms; now %s',
	$nat_wm, $nat_hwm, $nat_idle_hwm, $nat_hwm - $nat_idle_hwm, $ncd_ms, $nat_rss));
no_temp_files_left('(i) after the 2M-key queries');
log_clean($log_offset, '(i)');

###########################################################################
# The whole log: no leak warning, WARNING or TRAP; one crash (the kill -9).
###########################################################################
$ctl->quit;
$worker->quit;
$node->stop;
my $full_log = slurp_file($node->logfile);
server_log_is_clean($full_log, 'whole run, but the backend killed in (f)', crashed => [$wpid, 'signal 9']);
no_temp_files_left('after shutdown');

done_testing();
