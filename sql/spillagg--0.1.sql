-- spillagg 0.1: exact, memory-bounded keyed aggregates.
\echo Use "CREATE EXTENSION spillagg" to load this file. \quit

-- Transition states are internal (a spilling hash table); final functions
-- consume them (FINALFUNC_MODIFY = READ_WRITE), so the aggregates are not
-- usable as window functions.

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
    PARALLEL = SAFE
);
COMMENT ON AGGREGATE count_map(anyelement)
IS 'jsonb {key: number of rows} over the non-NULL keys, in bounded memory';

CREATE AGGREGATE histogram(anyelement) (
    SFUNC = spillagg_count_map_transfn,
    STYPE = internal,
    FINALFUNC = spillagg_count_map_finalfn,
    FINALFUNC_MODIFY = READ_WRITE,
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
