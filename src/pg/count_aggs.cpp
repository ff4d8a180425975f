// count_distinct(anyelement) and count_map(anyelement) / histogram, and
// their finalizers of stored states.
#include "postgres_api.h"

#include "stored_state.h"

using namespace spillagg;

using DistinctAgg = KeyedAgg<Presence>;
using CountAgg = KeyedAgg<Count>;

SPILLAGG_FUNCTION(spillagg_count_distinct_transfn) {
  DistinctAgg* s = DistinctAgg::from_args(fcinfo, 1);
  s->add_row(fcinfo, [](Presence&) {});
  return s->datum();
}

// The number of keys of a state; a stored state may be of any kind.
static Datum count_distinct_result(FunctionCallInfo fcinfo, KeyedAggHeader* h) {
  if (!h) PG_RETURN_INT64(0);
  return with_state_type(h->state_tag, [&](auto t) -> Datum {
    using State = typename decltype(t)::type;
    KeyStream<State> keys(fcinfo, h, "count_distinct_final");
    int64 n = 0;
    uint64 hash;
    KeyView k;
    State st;
    while (keys.next(&hash, &k, &st)) ++n;
    keys.close();
    PG_RETURN_INT64(n);
  });
}

// Also count_distinct_final(spillagg_state).
SPILLAGG_FUNCTION(spillagg_count_distinct_finalfn) {
  return count_distinct_result(fcinfo, state_arg(fcinfo, 0));
}

SPILLAGG_FUNCTION(spillagg_count_map_transfn) {
  CountAgg* s = CountAgg::from_args(fcinfo, 1);
  s->add_row(fcinfo, [](Count& c) { c.add_one(); });
  return s->datum();
}

static Datum count_map_result(FunctionCallInfo fcinfo, KeyedAggHeader* h) {
  if (!h) PG_RETURN_NULL();
  KeyStream<Count> keys(fcinfo, h, "count_map_final");
  Datum map = build_json_map(keys, [](const Count& c, JsonbValue* v) {
    v->type = jbvNumeric;
    v->val.numeric = int64_to_numeric(c.n);
  });
  if (!map) PG_RETURN_NULL();
  PG_RETURN_DATUM(map);
}

// Also count_map_final and histogram_final(spillagg_state).
SPILLAGG_FUNCTION(spillagg_count_map_finalfn) { return count_map_result(fcinfo, state_arg(fcinfo, 0)); }
