// count_distinct(anyelement) and count_map(anyelement) / histogram, and
// their finalizers of stored states.
#include "postgres_api.h"

#include "stored_state.h"

extern "C" {
PG_FUNCTION_INFO_V1(spillagg_count_distinct_transfn);
PG_FUNCTION_INFO_V1(spillagg_count_distinct_finalfn);
PG_FUNCTION_INFO_V1(spillagg_count_map_transfn);
PG_FUNCTION_INFO_V1(spillagg_count_map_finalfn);
}

using namespace spillagg;

using DistinctAgg = KeyedAgg<Presence>;
using CountAgg = KeyedAgg<Count>;

Datum spillagg_count_distinct_transfn(PG_FUNCTION_ARGS) {
  DistinctAgg* s = DistinctAgg::from_args(fcinfo, 1);
  s->add_row(fcinfo, [](Presence&) {});
  PG_RETURN_POINTER(s);
}

// Also count_distinct_final(spillagg_state): the number of keys of a stored
// state of any kind.
Datum spillagg_count_distinct_finalfn(PG_FUNCTION_ARGS) {
  if (PG_ARGISNULL(0)) PG_RETURN_INT64(0);
  KeyedAggHeader* h = state_argument(fcinfo);
  uint8 tag = h->serialized ? h->state_tag : Presence::kTag;
  return with_state_type(tag, [&](auto t) -> Datum {
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

Datum spillagg_count_map_transfn(PG_FUNCTION_ARGS) {
  CountAgg* s = CountAgg::from_args(fcinfo, 1);
  s->add_row(fcinfo, [](Count& c) { c.add_one(); });
  PG_RETURN_POINTER(s);
}

Datum spillagg_count_map_finalfn(PG_FUNCTION_ARGS) {
  if (PG_ARGISNULL(0)) PG_RETURN_NULL();
  KeyStream<Count> keys(fcinfo, state_argument(fcinfo), "count_map_final");
  Datum map = build_json_map(keys, [](const Count& c, JsonbValue* v) {
    v->type = jbvNumeric;
    v->val.numeric = int64_to_numeric(c.n);
  });
  if (!map) PG_RETURN_NULL();
  PG_RETURN_DATUM(map);
}
