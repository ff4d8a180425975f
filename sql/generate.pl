#!/usr/bin/perl
# Writes spillagg's install script and its upgrade script from one table of
# aggregates, so every object is listed explicitly (grep finds each one) and
# each has a COMMENT:
#
#   perl sql/generate.pl install        > sql/spillagg--0.2.sql
#   perl sql/generate.pl upgrade-0.1    > sql/spillagg--0.1--0.2.sql
#
# The Makefile runs both at build time. The upgrade script drops what 0.1
# defined over the internal transition type and creates the rest exactly as
# the install script does (test/t/006_upgrade.pl compares the two catalogs).
use strict;
use warnings;

my $mode = shift // '';
die "usage: $0 install|upgrade-0.1\n" unless $mode eq 'install' || $mode eq 'upgrade-0.1';
my $upgrade = $mode eq 'upgrade-0.1';

# ---- the table ---------------------------------------------------------------

my @value_types = ('smallint', 'integer', 'bigint', 'real', 'double precision', 'numeric');

# Key types that get an overload of every aggregate (transition type
# spillagg_state): Citus pushes an aggregate down only when its declared
# argument types are the actual ones, which anyelement never is. PostgreSQL
# picks the exact overload; other key types use the anyelement aggregate
# (transition type internal, computed on the Citus coordinator).
my @key_types = ('smallint', 'integer', 'bigint', 'text', 'character varying', 'character', 'uuid', 'date',
                 'timestamp without time zone', 'timestamp with time zone', 'numeric', 'name', '"char"');

# The Mergeable family: name, final function (spillagg_X_finalfn), what
# each key's value equals, and the transition function per value type
# (avg of floats keeps (n, mean, M2, sum) as float8_accum does, so it
# raises where that raises).
my @maps = (
  ['sum_map',         'sum',         'sum(value)',             sub { 'sum' }],
  ['avg_map',         'avg',         'avg(value)',             sub { $_[0] =~ /real|double/ ? 'moments' : 'sum' }],
  ['min_map',         'min',         'min(value)',             sub { 'min' }],
  ['max_map',         'max',         'max(value)',             sub { 'max' }],
  ['variance_map',    'var_samp',    'variance(value)',        sub { 'moments' }],
  ['var_samp_map',    'var_samp',    'var_samp(value)',        sub { 'moments' }],
  ['var_pop_map',     'var_pop',     'var_pop(value)',         sub { 'moments' }],
  ['stddev_map',      'stddev_samp', 'stddev(value)',          sub { 'moments' }],
  ['stddev_samp_map', 'stddev_samp', 'stddev_samp(value)',     sub { 'moments' }],
  ['stddev_pop_map',  'stddev_pop',  'stddev_pop(value)',      sub { 'moments' }],
);

# Every aggregate over a key: name, argument types after the key, transition
# function, final function, FINALFUNC_EXTRA, comment. In creation order.
my @aggs;
sub agg { push @aggs, {name => $_[0], rest => $_[1], sfunc => $_[2], ffunc => $_[3], extra => $_[4], comment => $_[5]} }
agg('count_distinct', [], 'count_distinct', 'spillagg_count_distinct_finalfn', 0,
    'exact number of distinct non-NULL values, like count(DISTINCT x), in bounded memory');
agg('count_map', [], 'count_map', 'spillagg_count_map_finalfn', 0,
    'jsonb {key: number of rows} over the non-NULL keys, in bounded memory');
agg('histogram', [], 'count_map', 'spillagg_count_map_finalfn', 0,
    "alias of count_map (DuckDB's name): jsonb {key: number of rows}");
for my $m (@maps) {
  my ($name, $final, $equals, $trans) = @$m;
  agg($name, [$_], $trans->($_), "spillagg_${final}_finalfn", 0,
      "jsonb {key: $equals} over each key's rows, in bounded memory") for @value_types;
}
agg('top_k', ['integer'], 'top_k', 'spillagg_top_k_finalfn', 1,
    'the k most frequent non-NULL keys, most frequent first, ties by key order; exact, in bounded memory');
agg('count_distinct_state', [], 'count_distinct', 'spillagg_to_state', 0,
    'count_distinct as a stored state (finish with count_distinct_final)');
agg('count_map_state', [], 'count_map', 'spillagg_to_state', 0,
    'count_map / histogram as a stored state (finish with count_map_final)');
agg('histogram_state', [], 'count_map', 'spillagg_to_state', 0,
    'alias of count_map_state (finish with histogram_final)');
agg('top_k_state', ['integer'], 'top_k', 'spillagg_to_state', 0,
    'top_k as a stored state of all counts (finish with top_k_final)');
for my $m (@maps) {
  my ($name, $final, $equals, $trans) = @$m;
  agg("${name}_state", [$_], $trans->($_), 'spillagg_to_state', 0,
      "$name as a stored state (finish with ${name}_final)") for @value_types;
}

# ---- output ------------------------------------------------------------------

sub lit { my $s = shift; $s =~ s/'/''/g; "'$s'" }

sub function {
  my ($sig, $returns, %o) = @_;
  my $as = $o{symbol} ? "'MODULE_PATHNAME', '$o{symbol}'" : "'MODULE_PATHNAME'";
  my $attrs = $o{attrs} // 'CALLED ON NULL INPUT PARALLEL SAFE';
  "CREATE FUNCTION $sig RETURNS $returns\nAS $as LANGUAGE C $attrs;\n"
    . "COMMENT ON FUNCTION $sig IS " . lit($o{comment}) . ";\n";
}

# An aggregate over a concrete key type has the transition type
# spillagg_state; over anyelement, internal (with serial functions for
# parallel query). The support functions exist for both, under the same
# names: PostgreSQL resolves them by the transition type (and top_k's final
# function by the key type: its overloads return the key type's array, which
# Citus checks too).
sub aggregate {
  my ($a, $key) = @_;
  my $sig = "$a->{name}(" . join(', ', $key, @{$a->{rest}}) . ")";
  my $extra = $a->{extra} ? ' FINALFUNC_EXTRA,' : '';
  my ($stype, $serial) = $key eq 'anyelement'
    ? ('internal', ' SERIALFUNC = spillagg_serialize, DESERIALFUNC = spillagg_deserialize,')
    : ('spillagg_state', '');
  "CREATE AGGREGATE $sig (SFUNC = spillagg_$a->{sfunc}_transfn, STYPE = $stype, SSPACE = 1024,\n"
    . "    FINALFUNC = $a->{ffunc},$extra FINALFUNC_MODIFY = READ_WRITE, COMBINEFUNC = spillagg_combine,$serial PARALLEL = SAFE);\n"
    . "COMMENT ON AGGREGATE $sig IS " . lit($a->{comment}) . ";\n";
}

my @out;
sub emit { push @out, @_ }

if ($upgrade) {
  emit(<<'SQL');
-- spillagg 0.1 -> 0.2. The aggregates gain overloads for concrete key types
-- whose transition type is spillagg_state (a real type: Citus can push the
-- aggregation down); live states are expanded objects. Aggregate
-- definitions cannot be altered, so the 0.1 aggregates and their
-- internal-typed functions are dropped and 0.2's created; the type spillagg_state, its I/O
-- functions, spillagg_stats and the *_final functions stay (stored states
-- written by 0.1 are read by 0.2). Views or functions that use a 0.1
-- aggregate make this update fail: drop them first, re-create them after.
\echo Use "ALTER EXTENSION spillagg UPDATE TO '0.2'" to load this file. \quit

SQL
  for my $a (@aggs) {
    next if $a->{name} eq 'histogram_state';  # new in 0.2
    emit("DROP AGGREGATE $a->{name}(" . join(', ', 'anyelement', @{$a->{rest}}) . ");\n");
  }
  emit("DROP AGGREGATE rollup(spillagg_state);\n\n");
  emit("DROP FUNCTION $_;\n") for (
    'spillagg_combine(internal, internal)', 'spillagg_serialize(internal)', 'spillagg_deserialize(bytea, internal)',
    'spillagg_count_distinct_transfn(internal, anyelement)', 'spillagg_count_distinct_finalfn(internal)',
    'spillagg_count_map_transfn(internal, anyelement)', 'spillagg_count_map_finalfn(internal)',
    (map { "spillagg_${_}_transfn(internal, anyelement, \"any\")" } qw(sum min max moments)),
    (map { "spillagg_${_}_finalfn(internal)" } qw(sum avg min max var_samp var_pop stddev_samp stddev_pop)),
    'spillagg_top_k_transfn(internal, anyelement, integer)', 'spillagg_top_k_finalfn(internal, anyelement, integer)',
    'spillagg_to_state(internal)', 'spillagg_rollup_transfn(internal, spillagg_state)');
  emit("\n");
} else {
  emit(<<'SQL');
-- spillagg 0.2: exact, memory-bounded keyed aggregates.
-- Generated by sql/generate.pl from its table of aggregates; edit that.
\echo Use "CREATE EXTENSION spillagg" to load this file. \quit

-- Every aggregate exists for common concrete key types (listed below) with
-- the transition type spillagg_state, a real type, so Citus can push the
-- partial aggregation down to its workers and ship states through the type's
-- text form; and for any key type (anyelement) with the transition type
-- internal: Citus checks an aggregate's declared argument types, which a
-- polymorphic aggregate never passes, and with an internal state it computes
-- the aggregate on the coordinator instead of failing. Either way, while an
-- aggregate runs its state is a PostgreSQL expanded object that holds the
-- spilling hash table and is updated in place; its bytes (every key with its
-- mergeable state) are made only when the value is stored, sent to another
-- process (the tuple queue of parallel query: spillagg_serialize for the
-- internal states) or printed. Final
-- functions leave the state readable (PostgreSQL may run them twice on one
-- state) but reorganize it (spill, merge runs), hence FINALFUNC_MODIFY =
-- READ_WRITE: no state sharing, no window use. SSPACE is what one group
-- costs the planner's hash aggregate: the state's header; the tables of all
-- groups together are bounded by spillagg.work_mem, outside the hash table's
-- memory. Every aggregate has the same combine function, so parallel query
-- and Citus can split it.

CREATE TYPE spillagg_state;

SQL
  emit(function('spillagg_state_in(cstring)', 'spillagg_state', attrs => 'STRICT IMMUTABLE PARALLEL SAFE',
                comment => 'input function of spillagg_state (hex, validated)'));
  emit(function('spillagg_state_out(spillagg_state)', 'cstring', attrs => 'STRICT IMMUTABLE PARALLEL SAFE',
                comment => 'output function of spillagg_state (hex)'));
  emit(function('spillagg_state_recv(internal)', 'spillagg_state', attrs => 'STRICT IMMUTABLE PARALLEL SAFE',
                comment => 'binary input function of spillagg_state (validated)'));
  emit(function('spillagg_state_send(spillagg_state)', 'bytea', attrs => 'STRICT IMMUTABLE PARALLEL SAFE',
                comment => 'binary output function of spillagg_state'));
  emit(<<'SQL');
CREATE TYPE spillagg_state (
    INPUT = spillagg_state_in, OUTPUT = spillagg_state_out,
    RECEIVE = spillagg_state_recv, SEND = spillagg_state_send,
    INTERNALLENGTH = VARIABLE, STORAGE = extended
);
SQL
}
emit("COMMENT ON TYPE spillagg_state IS "
     . lit('a spillagg aggregate state: every key with its mergeable state (the transition type of every spillagg aggregate)')
     . ";\n\n");

unless ($upgrade) {
  emit(<<'SQL');
CREATE FUNCTION spillagg_stats(
    OUT states bigint, OUT spills bigint, OUT runs bigint,
    OUT bytes_written bigint, OUT peak_bytes bigint)
RETURNS record AS 'MODULE_PATHNAME' LANGUAGE C STRICT VOLATILE PARALLEL RESTRICTED;
COMMENT ON FUNCTION spillagg_stats()
IS 'this backend''s spillagg counters: states created, spills, runs written, bytes written to temp files, peak bytes of one table';

SQL
}

emit("-- Support functions: one combine function for every aggregate, the transition\n"
     . "-- functions (the value argument is \"any\", checked at run time; the aggregates\n"
     . "-- are declared per value type), and the final functions.\n\n");
for my $st ('spillagg_state', 'internal') {
  emit(function("spillagg_combine($st, $st)", $st,
                comment => 'combine function of every spillagg aggregate: merges partial states key by key'));
}
emit(function('spillagg_serialize(internal)', 'bytea', attrs => 'STRICT PARALLEL SAFE',
              comment => 'serial function of the anyelement aggregates: a live state as its flat spillagg_state bytes'));
emit(function('spillagg_deserialize(bytea, internal)', 'internal', attrs => 'STRICT PARALLEL SAFE',
              comment => 'deserial function of the anyelement aggregates: the flat bytes, checked when combined'));
my %transfn = (
  count_distinct => ['anyelement', 'adds a key to the spilling key set (count_distinct)'],
  count_map      => ['anyelement', 'counts a key in the spilling table (count_map, histogram)'],
  sum            => ['anyelement, "any"', 'per-key (sum, count) (sum_map, avg_map of integers and numerics)'],
  min            => ['anyelement, "any"', 'per-key smallest value (min_map)'],
  max            => ['anyelement, "any"', 'per-key largest value (max_map)'],
  moments        => ['anyelement, "any"',
                     'per-key (n, sum, sum of squares) for integers and numerics, (n, mean, M2, sum) for floats (variance and stddev maps, avg_map of floats)'],
  top_k          => ['anyelement, integer', 'counts a key in the spilling table (top_k)'],
);
for my $st ('spillagg_state', 'internal') {
  for my $t (qw(count_distinct count_map sum min max moments top_k)) {
    emit(function("spillagg_${t}_transfn($st, $transfn{$t}[0])", $st,
                  comment => "transition function: $transfn{$t}[1]"));
  }
}
emit(function('spillagg_rollup_transfn(spillagg_state, spillagg_state)', 'spillagg_state',
              comment => 'transition function of rollup: merges a stored state key by key'));
for my $st ('spillagg_state', 'internal') {
  emit(function("spillagg_count_distinct_finalfn($st)", 'bigint',
                comment => 'final function of count_distinct: merges spilled runs and counts the keys'));
  emit(function("spillagg_count_map_finalfn($st)", 'jsonb',
                comment => 'final function of count_map: merges spilled runs into a jsonb {key: count}'));
  for my $f (qw(sum avg min max var_samp var_pop stddev_samp stddev_pop)) {
    emit(function("spillagg_${f}_finalfn($st)", 'jsonb',
                  comment => "final function of the $f maps: merges spilled runs into jsonb"));
  }
  emit(function("spillagg_to_state($st)", 'spillagg_state', symbol => 'spillagg_to_state',
                attrs => 'STRICT PARALLEL SAFE', comment => 'final function of the *_state aggregates and rollup'));
}
emit(function('spillagg_top_k_finalfn(internal, anyelement, integer)', 'anyarray',
              comment => 'final function of top_k: streams the merged counts through a heap of the k best'));
for my $kt (@key_types) {
  emit(function("spillagg_top_k_finalfn(spillagg_state, $kt, integer)", "${kt}[]", symbol => 'spillagg_top_k_finalfn',
                comment => "final function of top_k($kt, integer)"));
}
emit("\n");

# The *_final functions of stored states share the aggregates' final
# functions, which read a flat value or a verified expanded object (never a
# raw pointer). STABLE: key text depends on TimeZone, DateStyle and
# extra_float_digits, as to_jsonb's does. 0.1 had them IMMUTABLE.
my @finals = (
  ['count_distinct_final(spillagg_state)', 'bigint', 'spillagg_count_distinct_finalfn', 'CALLED ON NULL INPUT',
   'number of distinct keys in a stored state (of any kind); 0 for NULL, as count_distinct over no rows'],
  ['count_map_final(spillagg_state)', 'jsonb', 'spillagg_count_map_finalfn', 'STRICT',
   "count_map's result from a count_map_state or top_k_state"],
  ['histogram_final(spillagg_state)', 'jsonb', 'spillagg_count_map_finalfn', 'STRICT', 'alias of count_map_final'],
  ['top_k_final(spillagg_state, anyelement)', 'anyarray', 'spillagg_top_k_finalfn', 'CALLED ON NULL INPUT',
   "top_k's result from a top_k_state; the second argument names the key type, e.g. NULL::text"],
  (map { ["$_->[0]_final(spillagg_state)", 'jsonb', "spillagg_$_->[1]_finalfn", 'STRICT',
          "$_->[0]'s result from a stored state"] } @maps),
);
emit("-- Two-step aggregation: the *_state aggregates keep a state as a value, rollup\n"
     . "-- merges stored states, the *_final functions finish one. A stored\n"
     . "-- spillagg_state is the flat state (versioned header, key type, every key\n"
     . "-- with its merged state); its text form is bytea's hex form. Input is\n"
     . "-- validated.\n\n");
for my $f (@finals) {
  my ($sig, $returns, $symbol, $strict, $comment) = @$f;
  if ($upgrade) {
    emit("ALTER FUNCTION $sig STABLE;\nCOMMENT ON FUNCTION $sig IS " . lit($comment) . ";\n");
  } else {
    emit(function($sig, $returns, symbol => $symbol, attrs => "$strict STABLE PARALLEL SAFE", comment => $comment));
  }
}
emit("\n");

emit("-- The aggregates over any key type (anyelement; transition type internal).\n\n");
emit(aggregate($_, 'anyelement')) for @aggs;
emit("CREATE AGGREGATE rollup(spillagg_state) (SFUNC = spillagg_rollup_transfn, STYPE = spillagg_state, SSPACE = 1024,\n"
     . "    FINALFUNC = spillagg_to_state, FINALFUNC_MODIFY = READ_WRITE, COMBINEFUNC = spillagg_combine, PARALLEL = SAFE);\n"
     . "COMMENT ON AGGREGATE rollup(spillagg_state) IS "
     . lit('merges stored states of one kind (e.g. per-day states into a month) into one spillagg_state') . ";\n\n");

for my $kt (@key_types) {
  emit("-- Key type $kt (transition type spillagg_state).\n\n");
  emit(aggregate($_, $kt)) for @aggs;
  emit("\n");
}

print @out;
