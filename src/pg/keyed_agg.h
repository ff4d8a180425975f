// The transition state shared by every spillagg aggregate: a SpillingTable
// of State per key, living in the aggregate's memory context.
//
// Memory: one context per state ("spillagg state": this struct, the run list
// and the temp-file tape set) with a child ("spillagg table") that holds the
// hash table and is reset at every spill. Nothing here has a destructor, so
// an ERROR may abandon it at any point; the shutdown callback closes the temp
// file on the normal path and the resource owner on the error path.
#pragma once

#include "postgres_api.h"

#include <new>

#include "backend_stats.h"
#include "boundary.h"
#include "key_type.h"
#include "pg_memory.h"
#include "spilling_table.h"
#include "states.h"
#include "tape_store.h"

namespace spillagg {

size_t budget_bytes();  // spillagg.work_mem, resolved (module.cpp)

// The key type of the aggregate call site, cached in fn_extra.
KeyType* call_site_key_type(FunctionCallInfo fcinfo, int key_argno);

void close_tape_store(Datum store);  // shutdown callback

// The part of every state that does not depend on State, so a final
// function can read value_type before knowing which State it holds.
struct KeyedAggHeader {
  KeyType* key;
  Oid value_type;   // of the value argument, if the aggregate has one
  int32 limit;      // top_k's k
  uint8 state_tag;  // State::kTag
  bool serialized;  // a SerializedState (partial_states.cpp), not a KeyedAgg
};

template <class State>
struct KeyedAgg : KeyedAggHeader {
  ContextMemory table_mem;
  ContextMemory meta_mem;
  TapeStore store;
  SpillingTable<State> table;

  // The state in argument 0, created on the first call. PostgreSQL ERRORs
  // only; call outside run_core.
  static KeyedAgg* from_args(FunctionCallInfo fcinfo, int key_argno) {
    MemoryContext aggcxt;
    if (!AggCheckCallContext(fcinfo, &aggcxt))
      elog(ERROR, "spillagg transition function called in non-aggregate context");
    if (!PG_ARGISNULL(0)) return reinterpret_cast<KeyedAgg*>(PG_GETARG_POINTER(0));
    Oid value_type = PG_NARGS() > 2 ? get_fn_expr_argtype(fcinfo->flinfo, 2) : InvalidOid;
    return create(fcinfo, aggcxt, call_site_key_type(fcinfo, key_argno), value_type, 0);
  }

  // A new, empty state in aggcxt. PostgreSQL ERRORs only.
  static KeyedAgg* create(FunctionCallInfo fcinfo, MemoryContext aggcxt, KeyType* kt,
                          Oid value_type, int32 limit) {
    MemoryContext own = AllocSetContextCreate(aggcxt, "spillagg state", ALLOCSET_SMALL_SIZES);
    MemoryContext tab = AllocSetContextCreate(own, "spillagg table", ALLOCSET_SMALL_SIZES);
    KeyedAgg* s = new (MemoryContextAllocZero(own, sizeof(KeyedAgg))) KeyedAgg();
    s->key = kt;
    s->value_type = value_type;
    s->limit = limit;
    s->state_tag = State::kTag;
    s->serialized = false;
    s->table_mem.init(tab);
    s->meta_mem.init(own);
    s->store.init(own);
    s->table.init(&s->table_mem, &s->meta_mem, &s->store, budget_bytes(), kt->inline_keys(),
                  kt->equality());
    AggRegisterCallback(fcinfo, close_tape_store, PointerGetDatum(&s->store));
    backend_stats.states++;
    return s;
  }

  // Adds a row: the key (if not NULL) gets `update` applied to its state.
  // Call outside run_core: it reads the key through PostgreSQL.
  template <class Update>
  void add_row(FunctionCallInfo fcinfo, Update&& update) {
    if (PG_ARGISNULL(1)) return;
    KeyView k = key->bytes_of(PG_GETARG_DATUM(1));
    uint64 h = key->hash(k);
    run_core([&] { update(table.upsert(h, k)); });
  }

  // Starts the final pass over all distinct keys (inside run_core).
  void finish() {
    table.finish();
    backend_stats.peak_bytes = Max(backend_stats.peak_bytes, table.stats().peak_bytes);
  }
};

}  // namespace spillagg

namespace spillagg {

// The final step of the map aggregates: a jsonb object {key text: value}
// over every distinct key. value_of(state, &jsonb_value) runs outside C++
// exception scope and may call PostgreSQL. NULL when there are no keys.
template <class State, class ValueOf>
Datum build_json_map(KeyedAgg<State>* s, ValueOf&& value_of) {
  run_core([&] { s->finish(); });
  JsonbParseState* parse = nullptr;
  pushJsonbValue(&parse, WJB_BEGIN_OBJECT, nullptr);
  bool any = false;
  for (;;) {
    bool more = false;
    uint64 h;
    KeyView k;
    State st;
    run_core([&] { more = s->table.next(&h, &k, &st); });
    if (!more) break;
    any = true;
    char* text = s->key->output(k);
    JsonbValue key, value;
    key.type = jbvString;
    key.val.string.val = text;
    key.val.string.len = static_cast<int>(strlen(text));
    value_of(st, &value);
    pushJsonbValue(&parse, WJB_KEY, &key);
    pushJsonbValue(&parse, WJB_VALUE, &value);
  }
  if (!any) return (Datum)0;
  return JsonbPGetDatum(JsonbValueToJsonb(pushJsonbValue(&parse, WJB_END_OBJECT, nullptr)));
}

}  // namespace spillagg
