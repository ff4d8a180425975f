// count_distinct(anyelement) and count_map(anyelement) / histogram.
#include "postgres_api.h"

#include "keyed_agg.h"

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

Datum spillagg_count_distinct_finalfn(PG_FUNCTION_ARGS) {
  if (PG_ARGISNULL(0)) PG_RETURN_INT64(0);
  DistinctAgg* s = reinterpret_cast<DistinctAgg*>(PG_GETARG_POINTER(0));
  int64 n = 0;
  run_core([&] {
    s->finish();
    uint64 h;
    KeyView k;
    Presence p;
    while (s->table.next(&h, &k, &p)) ++n;
  });
  PG_RETURN_INT64(n);
}

Datum spillagg_count_map_transfn(PG_FUNCTION_ARGS) {
  CountAgg* s = CountAgg::from_args(fcinfo, 1);
  s->add_row(fcinfo, [](Count& c) { c.add_one(); });
  PG_RETURN_POINTER(s);
}

Datum spillagg_count_map_finalfn(PG_FUNCTION_ARGS) {
  if (PG_ARGISNULL(0)) PG_RETURN_NULL();
  Datum map = build_json_map(reinterpret_cast<CountAgg*>(PG_GETARG_POINTER(0)),
                             [](const Count& c, JsonbValue* v) {
                               v->type = jbvNumeric;
                               v->val.numeric = int64_to_numeric(c.n);
                             });
  if (!map) PG_RETURN_NULL();
  PG_RETURN_DATUM(map);
}
