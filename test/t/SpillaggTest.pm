# Checks shared by the TAP tests in test/t: what every test asserts at its
# end (no temporary file left, a clean server log) and how it reads a
# backend's memory. Loaded with
#   use FindBin;
#   use lib $FindBin::RealBin;
#   use SpillaggTest;
package SpillaggTest;

use strict;
use warnings;
use Exporter 'import';
use Test::More;
use Time::HiRes qw(usleep);

our @EXPORT = qw(proc_status_kb vm_hwm_kb watch_temp_files temp_files no_temp_files_left
  server_log_is_clean);

# A "<field>: <n> kB" line of /proc/<pid>/status (VmHWM, RssAnon...), or
# undef once the process is gone.
sub proc_status_kb
{
	my ($pid, $field) = @_;
	open my $fh, '<', "/proc/$pid/status" or return undef;
	while (<$fh>)
	{
		return $1 + 0 if /^\Q$field\E:\s+(\d+)\s+kB/;
	}
	return undef;
}

sub vm_hwm_kb { return proc_status_kb($_[0], 'VmHWM'); }

my @watched_globs;
my $default_wait = 0;

# The temporary files a test watches (glob patterns), and how many seconds
# no_temp_files_left waits by default for an exiting backend to remove its
# own (0: none may be left at the moment of the check).
sub watch_temp_files
{
	my ($patterns, %opt) = @_;
	@watched_globs = @$patterns;
	$default_wait = $opt{wait} // 0;
	return;
}

sub temp_files { return map { glob($_) } @watched_globs; }

sub no_temp_files_left
{
	my ($what, $wait) = @_;
	my @left = temp_files();
	for (my $i = 0; @left && $i < 10 * ($wait // $default_wait); $i++)
	{
		usleep(100_000);
		@left = temp_files();
	}
	is(scalar(@left), 0, "$what: no temporary file left")
	  or diag("left over: @left");
	return;
}

# The server log text $log has no "temporary file leak" warning, no WARNING
# at all (resource and memory-context leaks are reported as such), no
# assertion failure, and no crashed process but those listed in
# crashed => [pid, 'signal 9', ...] (pairs, in order).
sub server_log_is_clean
{
	my ($log, $what, %opt) = @_;
	my @bad = grep { /temporary file leak|WARNING:|TRAP:/ } split /\n/, $log;
	is(scalar(@bad), 0, "$what: no leak warning, WARNING or TRAP in the server log")
	  or diag(join("\n", @bad));
	my @crashes = ($log =~ /\(PID (\d+)\) was terminated by ((?:signal|exception) \d+)/g);
	is_deeply(\@crashes, $opt{crashed} // [], "$what: no other process crashed")
	  or diag("crashed: @crashes");
	return;
}

1;
