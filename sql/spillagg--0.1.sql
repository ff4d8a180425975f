-- spillagg 0.1: exact, memory-bounded keyed aggregates.
\echo Use "CREATE EXTENSION spillagg" to load this file. \quit

-- Transition states are internal (a spilling hash table); final functions
-- consume them (FINALFUNC_MODIFY = READ_WRITE), so the aggregates are not
-- usable as window functions. SSPACE is what one group costs the planner's
-- hash aggregate: the ~400-byte state; the tables of all groups together
-- are bounded by spillagg.work_mem, outside the hash table's memory. Every aggregate has the same combine,
-- serialize and deserialize functions, so parallel query can split it.

CREATE FUNCTION spillagg_combine(internal, internal)
RETURNS internal AS 'MODULE_PATHNAME' LANGUAGE C CALLED ON NULL INPUT PARALLEL SAFE;
COMMENT ON FUNCTION spillagg_combine(internal, internal)
IS 'combine function of every spillagg aggregate: merges partial states key by key';

CREATE FUNCTION spillagg_serialize(internal)
RETURNS bytea AS 'MODULE_PATHNAME' LANGUAGE C STRICT PARALLEL SAFE;
COMMENT ON FUNCTION spillagg_serialize(internal)
IS 'serial function of every spillagg aggregate: a partial state as bytea';

CREATE FUNCTION spillagg_deserialize(bytea, internal)
RETURNS internal AS 'MODULE_PATHNAME' LANGUAGE C STRICT PARALLEL SAFE;
COMMENT ON FUNCTION spillagg_deserialize(bytea, internal)
IS 'deserial function of every spillagg aggregate: checks and wraps a serialized partial state';

CREATE FUNCTION spillagg_count_distinct_transfn(internal, anyelement)
RETURNS internal AS 'MODULE_PATHNAME' LANGUAGE C CALLED ON NULL INPUT PARALLEL SAFE;
COMMENT ON FUNCTION spillagg_count_distinct_transfn(internal, anyelement)
IS 'transition function of count_distinct: adds a key to the spilling key set';

CREATE FUNCTION spillagg_count_distinct_finalfn(internal)
RETURNS bigint AS 'MODULE_PATHNAME' LANGUAGE C CALLED ON NULL INPUT PARALLEL SAFE;
COMMENT ON FUNCTION spillagg_count_distinct_finalfn(internal)
IS 'final function of count_distinct: merges spilled runs and counts the keys';

CREATE AGGREGATE count_distinct(anyelement) (
    SFUNC = spillagg_count_distinct_transfn,
    STYPE = internal,
    SSPACE = 1024,
    FINALFUNC = spillagg_count_distinct_finalfn,
    FINALFUNC_MODIFY = READ_WRITE,
    COMBINEFUNC = spillagg_combine,
    SERIALFUNC = spillagg_serialize,
    DESERIALFUNC = spillagg_deserialize,
    PARALLEL = SAFE
);
COMMENT ON AGGREGATE count_distinct(anyelement)
IS 'exact number of distinct non-NULL values, like count(DISTINCT x), in bounded memory';

CREATE FUNCTION spillagg_count_map_transfn(internal, anyelement)
RETURNS internal AS 'MODULE_PATHNAME' LANGUAGE C CALLED ON NULL INPUT PARALLEL SAFE;
COMMENT ON FUNCTION spillagg_count_map_transfn(internal, anyelement)
IS 'transition function of count_map: counts a key in the spilling table';

CREATE FUNCTION spillagg_count_map_finalfn(internal)
RETURNS jsonb AS 'MODULE_PATHNAME' LANGUAGE C CALLED ON NULL INPUT PARALLEL SAFE;
COMMENT ON FUNCTION spillagg_count_map_finalfn(internal)
IS 'final function of count_map: merges spilled runs into a jsonb {key: count}';

CREATE AGGREGATE count_map(anyelement) (
    SFUNC = spillagg_count_map_transfn,
    STYPE = internal,
    SSPACE = 1024,
    FINALFUNC = spillagg_count_map_finalfn,
    FINALFUNC_MODIFY = READ_WRITE,
    COMBINEFUNC = spillagg_combine,
    SERIALFUNC = spillagg_serialize,
    DESERIALFUNC = spillagg_deserialize,
    PARALLEL = SAFE
);
COMMENT ON AGGREGATE count_map(anyelement)
IS 'jsonb {key: number of rows} over the non-NULL keys, in bounded memory';

CREATE AGGREGATE histogram(anyelement) (
    SFUNC = spillagg_count_map_transfn,
    STYPE = internal,
    SSPACE = 1024,
    FINALFUNC = spillagg_count_map_finalfn,
    FINALFUNC_MODIFY = READ_WRITE,
    COMBINEFUNC = spillagg_combine,
    SERIALFUNC = spillagg_serialize,
    DESERIALFUNC = spillagg_deserialize,
    PARALLEL = SAFE
);
COMMENT ON AGGREGATE histogram(anyelement)
IS 'alias of count_map (DuckDB''s name): jsonb {key: number of rows}';

CREATE FUNCTION spillagg_stats(
    OUT states bigint, OUT spills bigint, OUT runs bigint,
    OUT bytes_written bigint, OUT peak_bytes bigint)
RETURNS record AS 'MODULE_PATHNAME' LANGUAGE C STRICT VOLATILE PARALLEL RESTRICTED;
COMMENT ON FUNCTION spillagg_stats()
IS 'this backend''s spillagg counters: states created, spills, runs written, bytes written to temp files, peak bytes of one table';

-- The Mergeable family: name_map(key anyelement, value) -> jsonb {key: value}
-- for smallint, integer, bigint, real, double precision and numeric values, each
-- value equal to the built-in aggregate over that key's rows.
-- Transition functions take "any" as the value and check its type; the
-- aggregates below are declared per value type so other types do not match.

CREATE FUNCTION spillagg_sum_transfn(internal, anyelement, "any")
RETURNS internal AS 'MODULE_PATHNAME' LANGUAGE C CALLED ON NULL INPUT PARALLEL SAFE;
COMMENT ON FUNCTION spillagg_sum_transfn(internal, anyelement, "any")
IS 'transition function of sum_map and avg_map: per-key (sum, count)';

CREATE FUNCTION spillagg_min_transfn(internal, anyelement, "any")
RETURNS internal AS 'MODULE_PATHNAME' LANGUAGE C CALLED ON NULL INPUT PARALLEL SAFE;
COMMENT ON FUNCTION spillagg_min_transfn(internal, anyelement, "any")
IS 'transition function of min_map: per-key smallest value';

CREATE FUNCTION spillagg_max_transfn(internal, anyelement, "any")
RETURNS internal AS 'MODULE_PATHNAME' LANGUAGE C CALLED ON NULL INPUT PARALLEL SAFE;
COMMENT ON FUNCTION spillagg_max_transfn(internal, anyelement, "any")
IS 'transition function of max_map: per-key largest value';

CREATE FUNCTION spillagg_moments_transfn(internal, anyelement, "any")
RETURNS internal AS 'MODULE_PATHNAME' LANGUAGE C CALLED ON NULL INPUT PARALLEL SAFE;
COMMENT ON FUNCTION spillagg_moments_transfn(internal, anyelement, "any")
IS 'transition function of the variance and stddev maps: per-key (n, sum, sum of squares) for integers, (n, mean, M2) for floats';

DO $$
DECLARE
    fn text;
    agg record;
    vt text;
BEGIN
    FOREACH fn IN ARRAY ARRAY['sum', 'avg', 'min', 'max', 'var_samp', 'var_pop',
                              'stddev_samp', 'stddev_pop'] LOOP
        EXECUTE format('CREATE FUNCTION spillagg_%s_finalfn(internal) RETURNS jsonb
                        AS %L LANGUAGE C CALLED ON NULL INPUT PARALLEL SAFE',
                       fn, 'MODULE_PATHNAME');
        EXECUTE format('COMMENT ON FUNCTION spillagg_%s_finalfn(internal) IS %L',
                       fn, 'final function of the ' || fn || ' maps: merges spilled runs into jsonb');
    END LOOP;

    FOR agg IN SELECT * FROM (VALUES
        ('sum_map',        'sum',    'sum',         'sum'),
        ('avg_map',        'sum',    'avg',         'avg'),
        ('min_map',        'min',    'min',         'min'),
        ('max_map',        'max',    'max',         'max'),
        ('variance_map',   'moments','var_samp',    'variance (sample)'),
        ('var_samp_map',   'moments','var_samp',    'var_samp'),
        ('var_pop_map',    'moments','var_pop',     'var_pop'),
        ('stddev_map',     'moments','stddev_samp', 'stddev (sample)'),
        ('stddev_samp_map','moments','stddev_samp', 'stddev_samp'),
        ('stddev_pop_map', 'moments','stddev_pop',  'stddev_pop')
    ) AS a(name, trans, final, builtin) LOOP
        FOREACH vt IN ARRAY ARRAY['smallint', 'integer', 'bigint', 'real', 'double precision', 'numeric'] LOOP
            EXECUTE format('CREATE AGGREGATE %s(anyelement, %s) (
                                SFUNC = spillagg_%s_transfn, STYPE = internal, SSPACE = 1024,
                                FINALFUNC = spillagg_%s_finalfn, FINALFUNC_MODIFY = READ_WRITE,
                                COMBINEFUNC = spillagg_combine, SERIALFUNC = spillagg_serialize,
                                DESERIALFUNC = spillagg_deserialize, PARALLEL = SAFE)',
                           agg.name, vt, agg.trans, agg.final);
            EXECUTE format('COMMENT ON AGGREGATE %s(anyelement, %s) IS %L', agg.name, vt,
                           'jsonb {key: ' || agg.builtin || '(value)} over each key''s rows, in bounded memory');
        END LOOP;
    END LOOP;
END
$$;

CREATE FUNCTION spillagg_top_k_transfn(internal, anyelement, integer)
RETURNS internal AS 'MODULE_PATHNAME' LANGUAGE C CALLED ON NULL INPUT PARALLEL SAFE;
COMMENT ON FUNCTION spillagg_top_k_transfn(internal, anyelement, integer)
IS 'transition function of top_k: counts a key in the spilling table';

CREATE FUNCTION spillagg_top_k_finalfn(internal, anyelement, integer)
RETURNS anyarray AS 'MODULE_PATHNAME' LANGUAGE C CALLED ON NULL INPUT PARALLEL SAFE;
COMMENT ON FUNCTION spillagg_top_k_finalfn(internal, anyelement, integer)
IS 'final function of top_k: streams the merged counts through a heap of the k best';

CREATE AGGREGATE top_k(anyelement, integer) (
    SFUNC = spillagg_top_k_transfn,
    STYPE = internal,
    SSPACE = 1024,
    FINALFUNC = spillagg_top_k_finalfn,
    FINALFUNC_EXTRA,
    FINALFUNC_MODIFY = READ_WRITE,
    COMBINEFUNC = spillagg_combine,
    SERIALFUNC = spillagg_serialize,
    DESERIALFUNC = spillagg_deserialize,
    PARALLEL = SAFE
);
COMMENT ON AGGREGATE top_k(anyelement, integer)
IS 'the k most frequent non-NULL keys, most frequent first, ties by key order; exact, in bounded memory';

-- Two-step aggregation: *_state aggregates store a state, rollup() merges
-- stored states, *_final functions finish one. A spillagg_state is the
-- serialized state (versioned header, key type, every key with its merged
-- state); its text form is bytea's hex form. Input is validated.

CREATE TYPE spillagg_state;

CREATE FUNCTION spillagg_state_in(cstring) RETURNS spillagg_state
AS 'MODULE_PATHNAME' LANGUAGE C STRICT IMMUTABLE PARALLEL SAFE;
COMMENT ON FUNCTION spillagg_state_in(cstring) IS 'input function of spillagg_state (hex, validated)';

CREATE FUNCTION spillagg_state_out(spillagg_state) RETURNS cstring
AS 'MODULE_PATHNAME' LANGUAGE C STRICT IMMUTABLE PARALLEL SAFE;
COMMENT ON FUNCTION spillagg_state_out(spillagg_state) IS 'output function of spillagg_state (hex)';

CREATE FUNCTION spillagg_state_recv(internal) RETURNS spillagg_state
AS 'MODULE_PATHNAME' LANGUAGE C STRICT IMMUTABLE PARALLEL SAFE;
COMMENT ON FUNCTION spillagg_state_recv(internal) IS 'binary input function of spillagg_state (validated)';

CREATE FUNCTION spillagg_state_send(spillagg_state) RETURNS bytea
AS 'MODULE_PATHNAME' LANGUAGE C STRICT IMMUTABLE PARALLEL SAFE;
COMMENT ON FUNCTION spillagg_state_send(spillagg_state) IS 'binary output function of spillagg_state';

CREATE TYPE spillagg_state (
    INPUT = spillagg_state_in, OUTPUT = spillagg_state_out,
    RECEIVE = spillagg_state_recv, SEND = spillagg_state_send,
    INTERNALLENGTH = VARIABLE, STORAGE = extended
);
COMMENT ON TYPE spillagg_state IS 'a stored spillagg aggregate state: every key with its mergeable state';

CREATE FUNCTION spillagg_to_state(internal) RETURNS spillagg_state
AS 'MODULE_PATHNAME', 'spillagg_to_state' LANGUAGE C STRICT PARALLEL SAFE;
COMMENT ON FUNCTION spillagg_to_state(internal) IS 'final function of the *_state aggregates and rollup';

CREATE FUNCTION spillagg_rollup_transfn(internal, spillagg_state) RETURNS internal
AS 'MODULE_PATHNAME' LANGUAGE C CALLED ON NULL INPUT PARALLEL SAFE;
COMMENT ON FUNCTION spillagg_rollup_transfn(internal, spillagg_state)
IS 'transition function of rollup: merges a stored state key by key';

CREATE AGGREGATE rollup(spillagg_state) (
    SFUNC = spillagg_rollup_transfn, STYPE = internal, SSPACE = 1024,
    FINALFUNC = spillagg_to_state, FINALFUNC_MODIFY = READ_WRITE,
    COMBINEFUNC = spillagg_combine, SERIALFUNC = spillagg_serialize,
    DESERIALFUNC = spillagg_deserialize, PARALLEL = SAFE
);
COMMENT ON AGGREGATE rollup(spillagg_state)
IS 'merges stored states of one kind (e.g. per-day states into a month) into one spillagg_state';

CREATE AGGREGATE count_distinct_state(anyelement) (
    SFUNC = spillagg_count_distinct_transfn, STYPE = internal, SSPACE = 1024,
    FINALFUNC = spillagg_to_state, FINALFUNC_MODIFY = READ_WRITE,
    COMBINEFUNC = spillagg_combine, SERIALFUNC = spillagg_serialize,
    DESERIALFUNC = spillagg_deserialize, PARALLEL = SAFE
);
COMMENT ON AGGREGATE count_distinct_state(anyelement) IS 'count_distinct as a stored state (finish with count_distinct_final)';

CREATE AGGREGATE count_map_state(anyelement) (
    SFUNC = spillagg_count_map_transfn, STYPE = internal, SSPACE = 1024,
    FINALFUNC = spillagg_to_state, FINALFUNC_MODIFY = READ_WRITE,
    COMBINEFUNC = spillagg_combine, SERIALFUNC = spillagg_serialize,
    DESERIALFUNC = spillagg_deserialize, PARALLEL = SAFE
);
COMMENT ON AGGREGATE count_map_state(anyelement) IS 'count_map / histogram as a stored state (finish with count_map_final)';

CREATE AGGREGATE top_k_state(anyelement, integer) (
    SFUNC = spillagg_top_k_transfn, STYPE = internal, SSPACE = 1024,
    FINALFUNC = spillagg_to_state, FINALFUNC_MODIFY = READ_WRITE,
    COMBINEFUNC = spillagg_combine, SERIALFUNC = spillagg_serialize,
    DESERIALFUNC = spillagg_deserialize, PARALLEL = SAFE
);
COMMENT ON AGGREGATE top_k_state(anyelement, integer) IS 'top_k as a stored state of all counts (finish with top_k_final)';

CREATE FUNCTION count_distinct_final(spillagg_state) RETURNS bigint
AS 'MODULE_PATHNAME', 'spillagg_count_distinct_finalfn' LANGUAGE C CALLED ON NULL INPUT IMMUTABLE PARALLEL SAFE;
COMMENT ON FUNCTION count_distinct_final(spillagg_state) IS 'number of distinct keys in a stored state (of any kind); 0 for NULL, as count_distinct over no rows';

CREATE FUNCTION count_map_final(spillagg_state) RETURNS jsonb
AS 'MODULE_PATHNAME', 'spillagg_count_map_finalfn' LANGUAGE C STRICT IMMUTABLE PARALLEL SAFE;
COMMENT ON FUNCTION count_map_final(spillagg_state) IS 'count_map''s result from a count_map_state or top_k_state';

CREATE FUNCTION histogram_final(spillagg_state) RETURNS jsonb
AS 'MODULE_PATHNAME', 'spillagg_count_map_finalfn' LANGUAGE C STRICT IMMUTABLE PARALLEL SAFE;
COMMENT ON FUNCTION histogram_final(spillagg_state) IS 'alias of count_map_final';

CREATE FUNCTION top_k_final(spillagg_state, anyelement) RETURNS anyarray
AS 'MODULE_PATHNAME', 'spillagg_top_k_finalfn' LANGUAGE C CALLED ON NULL INPUT IMMUTABLE PARALLEL SAFE;
COMMENT ON FUNCTION top_k_final(spillagg_state, anyelement)
IS 'top_k''s result from a top_k_state; the second argument names the key type, e.g. NULL::text';

DO $$
DECLARE
    agg record;
    vt text;
BEGIN
    FOR agg IN SELECT * FROM (VALUES
        ('sum_map', 'sum', 'sum'), ('avg_map', 'sum', 'avg'), ('min_map', 'min', 'min'),
        ('max_map', 'max', 'max'), ('variance_map', 'moments', 'var_samp'),
        ('var_samp_map', 'moments', 'var_samp'), ('var_pop_map', 'moments', 'var_pop'),
        ('stddev_map', 'moments', 'stddev_samp'), ('stddev_samp_map', 'moments', 'stddev_samp'),
        ('stddev_pop_map', 'moments', 'stddev_pop')
    ) AS a(name, trans, final) LOOP
        FOREACH vt IN ARRAY ARRAY['smallint', 'integer', 'bigint', 'real', 'double precision', 'numeric'] LOOP
            EXECUTE format('CREATE AGGREGATE %s_state(anyelement, %s) (
                                SFUNC = spillagg_%s_transfn, STYPE = internal, SSPACE = 1024,
                                FINALFUNC = spillagg_to_state, FINALFUNC_MODIFY = READ_WRITE,
                                COMBINEFUNC = spillagg_combine, SERIALFUNC = spillagg_serialize,
                                DESERIALFUNC = spillagg_deserialize, PARALLEL = SAFE)',
                           agg.name, vt, agg.trans);
            EXECUTE format('COMMENT ON AGGREGATE %s_state(anyelement, %s) IS %L', agg.name, vt,
                           agg.name || ' as a stored state (finish with ' || agg.name || '_final)');
        END LOOP;
        EXECUTE format('CREATE FUNCTION %s_final(spillagg_state) RETURNS jsonb
                        AS %L, %L LANGUAGE C STRICT IMMUTABLE PARALLEL SAFE',
                       agg.name, 'MODULE_PATHNAME', 'spillagg_' || agg.final || '_finalfn');
        EXECUTE format('COMMENT ON FUNCTION %s_final(spillagg_state) IS %L', agg.name,
                       agg.name || '''s result from a stored state');
    END LOOP;
END
$$;
