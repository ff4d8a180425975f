-- spillagg 0.1: exact, memory-bounded keyed aggregates.
\echo Use "CREATE EXTENSION spillagg" to load this file. \quit

-- Transition states are internal (a spilling hash table); final functions
-- consume them (FINALFUNC_MODIFY = READ_WRITE), so the aggregates are not
-- usable as window functions. Every aggregate has the same combine,
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
                                SFUNC = spillagg_%s_transfn, STYPE = internal,
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
