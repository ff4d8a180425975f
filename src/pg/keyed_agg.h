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

template <class State>
struct KeyedAgg {
  KeyType* key;
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
    KeyType* kt = call_site_key_type(fcinfo, key_argno);
    MemoryContext own = AllocSetContextCreate(aggcxt, "spillagg state", ALLOCSET_SMALL_SIZES);
    MemoryContext tab = AllocSetContextCreate(own, "spillagg table", ALLOCSET_SMALL_SIZES);
    KeyedAgg* s = new (MemoryContextAllocZero(own, sizeof(KeyedAgg))) KeyedAgg();
    s->key = kt;
    s->table_mem.init(tab);
    s->meta_mem.init(own);
    s->store.init(own);
    s->table.init(&s->table_mem, &s->meta_mem, &s->store, budget_bytes(), kt->inline_keys(),
                  kt->equality());
    AggRegisterCallback(fcinfo, close_tape_store, PointerGetDatum(&s->store));
    backend_stats.states++;
    return s;
  }

  // Adds one key (not NULL) and returns its state for the caller to update.
  // Call inside run_core; `k` comes from key->bytes_of.
  State& upsert(KeyView k, uint64 hash) { return table.upsert(hash, k); }

  // Starts the final pass over all distinct keys (inside run_core).
  void finish() {
    table.finish();
    backend_stats.peak_bytes = Max(backend_stats.peak_bytes, table.stats().peak_bytes);
  }
};

}  // namespace spillagg
