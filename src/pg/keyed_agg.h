// The transition state shared by every spillagg aggregate: a SpillingTable
// of State per key.
//
// Memory: the KeyedAgg, its run list and its hash table live in the
// aggregate's context; the table is charged to the query's budget
// (query_budget.h) and freed when it spills or the aggregate shuts down
// (a final function does not consume the state). Nothing here has a destructor,
// so an ERROR may abandon it at any point: the query context then goes, and
// the resource owner closes the temp file. On the normal path the shutdown
// callback frees the table and runs, and the last state closes the file.
#pragma once

#include "postgres_api.h"

#include <new>

#include "backend_stats.h"
#include "boundary.h"
#include "expanded_state.h"
#include "key_type.h"
#include "parallel_exchange.h"
#include "pg_memory.h"
#include "query_budget.h"
#include "spilling_table.h"
#include "states.h"

namespace spillagg {

size_t budget_bytes();  // spillagg.work_mem, resolved (module.cpp)

// KeyedAggHeader::magic of an aggregate's live state and of a parsed
// serialized state (SerializedState). A live state is only ever reached
// through its expanded object, whose methods pointer is checked first
// (expanded_state.h); the magic is a second check.
constexpr uint32 kLiveStateMagic = 0x5350474B;    // "KGPS"
constexpr uint32 kParsedStateMagic = 0x53504750;  // "PGPS"

// A new live state holding the keys of `other` (a flat value, or a live
// state that may not be changed) for the call site's key type and value
// type, which `other` must have (else an ERROR). partial_states.cpp.
KeyedAggHeader* expand_state(FunctionCallInfo fcinfo, MemoryContext aggcxt, KeyedAggHeader* other,
                             uint8 state_tag, KeyType* kt, Oid value_type);

// The part of every state that does not depend on State, so a final
// function can read value_type before knowing which State it holds.
struct KeyedAggHeader {
  uint32 magic;     // kLiveStateMagic or kParsedStateMagic: checked before use
  KeyType* key;
  Oid value_type;   // of the value argument, if the aggregate has one
  int32 limit;      // top_k's k
  uint8 state_tag;  // State::kTag
  bool serialized;  // a SerializedState (partial_states.cpp), not a KeyedAgg
  // Escalation of numeric states (KeyedAgg::escalate): took_over says this
  // state took over from a narrower one; then `link` is the state owning
  // the expanded object (the "shell", which nodeAgg holds). In a shell,
  // `link` is the state that now holds its keys (nullptr: itself). Every
  // reader goes through widest(); the shell's shutdown callback discards it.
  bool took_over;
  // A Partial Aggregate's state in a parallel worker: flattened, a large one
  // goes to its leader through a file (parallel_exchange.h).
  bool exchange;
  // A live state's expanded-object header (expanded_state.h). Inside the
  // state, so it costs no allocation of its own (the 64 bytes of this
  // header and `link` keep every KeyedAgg within the allocation size class it had).
  StateObject object;
  KeyedAggHeader* link;
};

// The state that now holds h's keys, and the one owning h's expanded object.
inline KeyedAggHeader* widest(KeyedAggHeader* h) { return !h->took_over && h->link ? h->link : h; }
inline KeyedAggHeader* shell_of(KeyedAggHeader* h) { return h->took_over ? h->link : h; }

// Discards the table and runs of a live state of any kind (partial_states.cpp).
void discard_live_state(KeyedAggHeader* h);

// Whether a state of tag `have` may be used where `want` is expected: the
// same tag, or another width of the same numeric family.
inline bool same_state_kind(uint8 have, uint8 want) {
  return have == want || (numeric_family(have) != 0 && numeric_family(have) == numeric_family(want));
}

// Tiny-run compaction (SpillingTable::set_compaction): a state's runs are
// merged into one when it has 8 of them with at most 4096 records in all,
// which only happens when many states share the budget.
constexpr size_t kCompactRuns = 8;
constexpr uint64 kCompactRecords = 4096;

template <class State>
struct KeyedAgg : KeyedAggHeader {
  QueryBudget* budget;
  SpillCandidate candidate;
  TrackedMemory table_mem;
  ContextMemory meta_mem;  // the aggregate context: never release_all()ed by the core
  SpillingTable<State> table;

  // The state in argument 0: the read-write expanded object nodeAgg hands
  // back (updated in place), or a new one on the first call, or a new one
  // holding the keys of a flat (or read-only) value of spillagg_state, e.g.
  // an INITCOND of someone's aggregate. PostgreSQL ERRORs only; call
  // outside run_core.
  static KeyedAgg* from_args(FunctionCallInfo fcinfo, int key_argno) {
    KeyedAggHeader* h = header_from_args(fcinfo, key_argno);
    if (h->state_tag != State::kTag)
      ereport(ERROR, (errcode(ERRCODE_INVALID_PARAMETER_VALUE),
                      errmsg("spillagg transition function called with a state of another kind")));
    return static_cast<KeyedAgg*>(h);
  }

  // As from_args, but the state may be any width of State's numeric family
  // (the caller dispatches on its state_tag).
  static KeyedAggHeader* header_from_args(FunctionCallInfo fcinfo, int key_argno) {
    MemoryContext aggcxt;
    if (!AggCheckCallContext(fcinfo, &aggcxt))
      ereport(ERROR, (errcode(ERRCODE_FEATURE_NOT_SUPPORTED),
                      errmsg("a spillagg transition function can only be called by an aggregate")));
    if (IsA(fcinfo->context, WindowAggState))  // (it could not register its shutdown callback)
      ereport(ERROR, (errcode(ERRCODE_FEATURE_NOT_SUPPORTED),
                      errmsg("spillagg aggregates cannot be used as window functions")));
    if (KeyedAggHeader* h = writable_state(fcinfo, 0)) {
      if (!same_state_kind(h->state_tag, State::kTag) ||
          (fcinfo->flinfo->fn_expr && call_cache(fcinfo)->call_site_kt &&
           call_cache(fcinfo)->call_site_kt->type != h->key->type))
        ereport(ERROR, (errcode(ERRCODE_INVALID_PARAMETER_VALUE),
                        errmsg("spillagg transition function called with a state of another kind")));
      return h;
    }
    Oid value_type = PG_NARGS() > 2 ? call_arg_type(fcinfo, 2) : InvalidOid;
    KeyType* kt = call_site_key_type(fcinfo, key_argno, aggcxt);
    if (KeyedAggHeader* other = state_arg(fcinfo, 0))
      return expand_state(fcinfo, aggcxt, other, State::kTag, kt, value_type);
    return create(fcinfo, aggcxt, kt, value_type, 0);
  }

  Datum datum() { return state_datum(this); }

  // A new, empty state in aggcxt, registered with the query's budget.
  // PostgreSQL ERRORs only.
  static KeyedAgg* create(FunctionCallInfo fcinfo, MemoryContext aggcxt, KeyType* kt,
                          Oid value_type, int32 limit) {
    QueryBudget* qb = QueryBudget::of(query_context(fcinfo));
    KeyedAgg* s = new (MemoryContextAllocZero(aggcxt, sizeof(KeyedAgg))) KeyedAgg();
    s->magic = kLiveStateMagic;
    s->key = kt;
    s->value_type = value_type;
    s->limit = limit;
    s->state_tag = State::kTag;
    s->serialized = false;
    s->exchange = exchange_wanted(fcinfo);
    attach_object(fcinfo, s, aggcxt);
    s->took_over = false;
    s->link = nullptr;
    s->init_table(qb, aggcxt);
    AggRegisterCallback(fcinfo, shutdown, PointerGetDatum(s));
    backend_stats.states++;
    return s;
  }

  // A state of this (wider) width taking over `from`, a narrower width of
  // the same numeric family whose add or merge overflowed: `from` spills
  // its table, this state adopts its runs (narrow records decode as wide
  // ones) and becomes the state every reader of the shell goes to (from,
  // if it had taken over itself, is discarded). The failed row (or merge)
  // is then applied again, here. PostgreSQL ERRORs only; the new state
  // lives in from's context, and the shell's shutdown callback discards it.
  template <class From>
  static KeyedAgg* escalate(KeyedAgg<From>* from) {
    static_assert(sizeof(From) < sizeof(State), "escalation widens");
    MemoryContext aggcxt = GetMemoryChunkContext(from);
    KeyedAgg* s = new (MemoryContextAllocZero(aggcxt, sizeof(KeyedAgg))) KeyedAgg();
    s->magic = kLiveStateMagic;
    s->key = from->key;
    s->value_type = from->value_type;
    s->limit = from->limit;
    s->state_tag = State::kTag;
    s->serialized = false;
    s->exchange = from->exchange;
    KeyedAggHeader* shell = shell_of(from);  // the object stays the one nodeAgg holds
    s->took_over = true;
    s->link = shell;
    s->init_table(from->budget, aggcxt);
    run_core([&] { s->table.adopt_runs(from->table); });
    shell->link = s;
    if (from->took_over) discard_state(from);  // (the new state keeps the spill file open)
    else from->budget->retire(&from->candidate);  // the shell: nothing left to spill
    return s;
  }

  // Adds a row: the key (if not NULL) gets `update` applied to its state.
  // Call outside run_core: it reads the key through PostgreSQL.
  template <class Update>
  void add_row(FunctionCallInfo fcinfo, Update&& update) {
    if (PG_ARGISNULL(1)) return;
    KeyView k = key->bytes_of(PG_GETARG_DATUM(1));
    uint64 h = key->hash(k);
    if constexpr (SpillingTable<State>::kCanDefer) {
      run_core([&] {
        State row{};
        update(row);
        table.add_deferred(h, k, row);
      });
    } else {
      run_core([&] { update(table.upsert(h, k)); });
    }
  }

  // Starts the final pass over all distinct keys (inside run_core). The
  // state leaves the spill list while it is streamed; if it must merge
  // runs, the other states first spill down to half the budget, and the
  // merge gets the other half. The state is not consumed (see end_stream).
  void finish() {
    budget->retire(&candidate);
    if (table.spilled()) {
      budget->make_room(budget->limit / 2);
      table.set_merge_budget(budget->limit / 2);
    }
    table.finish();
    backend_stats.peak_bytes = Max(backend_stats.peak_bytes, budget->peak);
  }

  // The final pass is over (inside run_core). The state stays readable
  // until the aggregate shuts down, since PostgreSQL may run a final
  // function again on the same state (a hashed aggregate rescanned with
  // unchanged input); meanwhile its table may be spilled like any other.
  void end_stream() {
    table.end_stream();
    budget->reinstate(&candidate);
  }

 private:
  void init_table(QueryBudget* qb, MemoryContext aggcxt) {
    budget = qb;
    candidate = SpillCandidate{nullptr, nullptr, this, &spill_now, 0};
    table_mem.init(qb, &candidate, aggcxt);
    meta_mem.init(aggcxt);
    table.init(&table_mem, &meta_mem, &qb->spill_file, qb->limit, key->inline_keys(), key->equality(),
               key->rehash());
    table.set_room_maker(RoomMaker{make_room_for_query, qb});
    table.set_compaction(kCompactRuns, kCompactRecords);
    qb->add_state(&candidate);
  }

  static void spill_now(void* self) { static_cast<KeyedAgg*>(self)->table.spill(); }

  // Aggregate shutdown (normal path only: end of group, rescan, end of
  // query): frees the table and the runs, and those of the wider state
  // that took over from this one, if any.
  static void shutdown(Datum arg) {
    KeyedAgg* s = reinterpret_cast<KeyedAgg*>(DatumGetPointer(arg));
    KeyedAggHeader* wide = s->link;
    discard_state(s);
    if (wide) discard_live_state(wide);
  }

 public:
  static void discard_state(KeyedAggHeader* h) {
    KeyedAgg* s = static_cast<KeyedAgg*>(h);
    run_core([&] { s->table.discard(); });
    s->budget->remove_state(&s->candidate);
  }

 private:

  template <class>
  friend struct KeyedAgg;
};

// A GROUP BY may hold thousands of states: each stays within palloc's
// 512-byte size class (a chunk of 513 bytes would take 1 kB).
static_assert(sizeof(KeyedAgg<Presence>) <= 512 && sizeof(KeyedAgg<Count>) <= 512 &&
                  sizeof(KeyedAgg<IntSum>) <= 512 && sizeof(KeyedAgg<FloatSum>) <= 512 &&
                  sizeof(KeyedAgg<FloatMoments>) <= 512 && sizeof(KeyedAgg<IntMoments>) <= 512 &&
                  sizeof(KeyedAgg<Extreme<double, true>>) <= 512 &&
                  sizeof(KeyedAgg<NumericSumT<kNumericRungWords[0]>>) <= 512 &&
                  sizeof(KeyedAgg<NumericMomentsT<kNumericRungWords[0]>>) <= 512,
              "a state's header outgrew its allocation size class");

}  // namespace spillagg
