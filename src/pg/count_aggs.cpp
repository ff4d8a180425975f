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
  if (!PG_ARGISNULL(1)) {
    KeyView k = s->key->bytes_of(PG_GETARG_DATUM(1));
    uint64 h = s->key->hash(k);
    run_core([&] { s->upsert(k, h); });
  }
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
  if (!PG_ARGISNULL(1)) {
    KeyView k = s->key->bytes_of(PG_GETARG_DATUM(1));
    uint64 h = s->key->hash(k);
    run_core([&] { s->upsert(k, h).add_one(); });
  }
  PG_RETURN_POINTER(s);
}

Datum spillagg_count_map_finalfn(PG_FUNCTION_ARGS) {
  if (PG_ARGISNULL(0)) PG_RETURN_NULL();
  CountAgg* s = reinterpret_cast<CountAgg*>(PG_GETARG_POINTER(0));
  run_core([&] { s->finish(); });
  JsonbParseState* parse = nullptr;
  pushJsonbValue(&parse, WJB_BEGIN_OBJECT, nullptr);
  bool any = false;
  for (;;) {
    bool more = false;
    uint64 h;
    KeyView k;
    Count c;
    run_core([&] { more = s->table.next(&h, &k, &c); });
    if (!more) break;
    any = true;
    char* text = s->key->output(k);
    JsonbValue key, value;
    key.type = jbvString;
    key.val.string.val = text;
    key.val.string.len = static_cast<int>(strlen(text));
    value.type = jbvNumeric;
    value.val.numeric = int64_to_numeric(c.n);
    pushJsonbValue(&parse, WJB_KEY, &key);
    pushJsonbValue(&parse, WJB_VALUE, &value);
  }
  if (!any) PG_RETURN_NULL();
  JsonbValue* result = pushJsonbValue(&parse, WJB_END_OBJECT, nullptr);
  PG_RETURN_JSONB_P(JsonbValueToJsonb(result));
}
