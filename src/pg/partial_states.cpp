// The combine function shared by every spillagg aggregate (parallel query,
// Citus), the rollup aggregate's transition over stored spillagg_state
// values (two-step aggregation), and the flattening of a live state into
// its bytes. Combining merges the other state key by key with the same
// State::merge used for spilled runs, into a table that spills as usual, so
// the leader (or Citus coordinator) holds its budget plus the one flat
// partial state being read.
#include "postgres_api.h"

#include "parallel_exchange.h"
#include "stored_state.h"

using namespace spillagg;

namespace {

// Appends to a StringInfo (through pg_call: it can raise out of memory).
class StringInfoSink final : public ByteSink {
 public:
  StringInfoSink(StringInfo s, MemoryContext cxt) : s_(s), cxt_(cxt) {}
  void write(const void* p, size_t n) override {
    pg_call(cxt_, [&] {
      // A bytea holds at most 1 GB: say so before StringInfo fails deep inside.
      if (static_cast<size_t>(s_->len) + n > MaxAllocSize - 1)
        ereport(ERROR, (errcode(ERRCODE_PROGRAM_LIMIT_EXCEEDED),
                        errmsg("spillagg state too large to serialize"),
                        errdetail("A serialized state (a parallel worker's partial state or a spillagg_state) "
                                  "is limited to 1 GB."),
                        errhint("Aggregate fewer keys per state (group by more columns), or disable "
                                "parallel aggregation for this query.")));
      appendBinaryStringInfo(s_, static_cast<const char*>(p), static_cast<int>(n));
    });
  }

 private:
  StringInfo s_;
  MemoryContext cxt_;
};

// A flat state at least this large, or a parallel worker's from a file (16k+
// records), is merged by appending its records as runs (combine_into); a
// live state with at least this many keys in memory is spilled before it is
// flattened, so that its records come in hash order.
constexpr size_t kAppendAsRunsBytes = 256 * 1024;
constexpr size_t kSortBeforeFlattening = 32 * 1024;
constexpr size_t kAppendedRunsMax = 4;
// A parallel worker's partial state with at least this many records goes
// to its leader through a file (parallel_exchange.h); smaller ones (many
// groups' states, each small) travel in the tuple as before.
constexpr uint64 kExchangeFromRecords = 16 * 1024;

template <class State>
bytea* serialize(FunctionCallInfo fcinfo, KeyedAggHeader* h) {
  bool to_file = false;  // a parallel worker's large partial state: through a file
  if (!h->serialized) {
    auto* a = static_cast<KeyedAgg<State>*>(h);
    if (!a->table.spilled() && a->table.size_in_memory() >= kSortBeforeFlattening)
      run_core([&] { a->table.spill(); });
    to_file = h->exchange && a->table.records() >= kExchangeFromRecords;
  }
  ExchangeWriter file;
  if (to_file) file.open();
  StringInfoData buf;
  initStringInfo(&buf);
  appendStringInfoSpaces(&buf, VARHDRSZ);
  KeyStream<State> keys(fcinfo, h, "spillagg_serialize");
  MemoryContext cxt = CurrentMemoryContext;
  StringInfoSink sink(&buf, cxt);
  uint8_t wbuf[kIoChunk];
  Writer w(&sink, wbuf, sizeof wbuf);
  run_core([&] {
    w.fixed<uint32>(kStateMagic);
    w.fixed<uint8>(kStateFormatVersion);
    w.fixed<uint8>(State::kTag);
    w.fixed<uint32>(keys.key->type);
    w.fixed<uint32>(keys.key->collation);
    w.fixed<uint32>(h->value_type);
    w.fixed<int32>(h->limit);
    w.fixed<uint8>(to_file ? kKeysExchange : kKeysPortable);
    w.flush();
  });
  Writer records(to_file ? static_cast<ByteSink*>(&file) : &sink, wbuf, sizeof wbuf);
  uint64_t hash;
  KeyView k;
  State st;
  // A sent key lasts until its record is written.
  MemoryContext key_cxt = AllocSetContextCreate(CurrentMemoryContext, "spillagg sent key", ALLOCSET_SMALL_SIZES);
  while (keys.next(&hash, &k, &st)) {
    MemoryContext old = MemoryContextSwitchTo(key_cxt);
    uint8 scratch[8];
    k = keys.key->send(k, scratch);
    MemoryContextSwitchTo(old);
    run_core([&] { write_state_record(records, k, st); });
    MemoryContextReset(key_cxt);
  }
  run_core([&] { records.flush(); });
  keys.close();
  MemoryContextDelete(key_cxt);
  if (to_file) {
    ExchangeRef ref = file.close();
    run_core([&] {
      write_exchange_ref(w, ref);
      w.flush();
    });
  }
  if (keys.overflowed()) {  // the caller escalates the state and starts over
    pfree(buf.data);
    return nullptr;  // (a file written meanwhile is removed with the leader's directory)
  }
  SET_VARSIZE(buf.data, buf.len);
  return reinterpret_cast<bytea*>(buf.data);
}

// Merges one key's state st (of other's State) into `into`, a state of the
// same kind; a numeric `into` narrower than st, or whose merge overflows,
// is first taken over by a wider width (into is updated).
template <class State>
void merge_one(KeyedAggHeader*& into, uint64_t h, KeyView k, const State& st) {
  if constexpr (numeric_family(State::kTag) == 0) {
    run_core([&] { static_cast<KeyedAgg<State>*>(into)->table.merge_in(h, k, st); });
  } else {
    for (;;) {
      bool overflow = false;
      auto attempt = [&](auto t) -> Datum {
        using Into = typename decltype(t)::type;
        if constexpr (Into::kWords < State::kWords) {
          overflow = true;  // too narrow for st: widen first
        } else {
          auto* a = static_cast<KeyedAgg<Into>*>(into);
          run_core([&] {
            if constexpr (Widens<Into>::value) {
              try {
                a->table.merge_in(h, k, Into::widen(st));
              } catch (const StateOverflow&) {
                overflow = true;
              }
            } else {
              a->table.merge_in(h, k, Into::widen(st));
            }
          });
        }
        return (Datum)0;
      };
      with_state_type(into->state_tag, [&](auto t) -> Datum {
        using Into = typename decltype(t)::type;
        if constexpr (numeric_family(Into::kTag) == numeric_family(State::kTag)) return attempt(t);
        else return (Datum)0;  // (checked by the caller)
      });
      if (!overflow) return;
      into = escalate_numeric(into);
    }
  }
}

// Merges every key of `other` (a live state or serialized bytes) into
// `into`, which may be replaced by a wider numeric state.
template <class State>
void combine_into(FunctionCallInfo fcinfo, KeyedAggHeader*& into, KeyedAggHeader* other, bool skip = false,
                  uint64_t skip_upto = 0) {
  // Same key type and collation (else keys would not compare alike), same
  // value type (it decides the result type) and same k.
  Oid key_type = other->serialized ? static_cast<SerializedState*>(other)->key_type : other->key->type;
  Oid collation = other->serialized ? static_cast<SerializedState*>(other)->collation : other->key->collation;
  if (key_type != into->key->type || collation != into->key->collation ||
      other->value_type != into->value_type || other->limit != into->limit)
    ereport(ERROR, (errcode(ERRCODE_INVALID_PARAMETER_VALUE),
                    errmsg("cannot combine spillagg states made differently"),
                    errdetail("Keys of type %s and %s, values of type %s and %s, k %d and %d, collations %u and %u.",
                              format_type_be(into->key->type), format_type_be(key_type),
                              OidIsValid(into->value_type) ? format_type_be(into->value_type) : "-",
                              OidIsValid(other->value_type) ? format_type_be(other->value_type) : "-",
                              into->limit, other->limit, into->key->collation, collation)));
  KeyStream<State> keys(fcinfo, other, "spillagg_combine");
  uint64_t h;
  KeyView k;
  State st;
  // A large flat state (a parallel worker's or a Citus shard's partial
  // state, in hash order) joins into's runs as it is (SpillingTable::append);
  // if its records turn out not to be in hash order, the rest goes through
  // the table.
  if constexpr (numeric_family(State::kTag) == 0) {
    if (other->serialized && (static_cast<SerializedState*>(other)->len >= kAppendAsRunsBytes ||
                              static_cast<SerializedState*>(other)->exchange)) {
      auto* a = static_cast<KeyedAgg<State>*>(into);
      bool appending = true;
      run_core([&] { a->table.begin_appending(); });
      while (keys.next(&h, &k, &st)) {
        h = a->key->hash(k);
        run_core([&] {
          if (appending && a->table.appended_runs() > kAppendedRunsMax) {
            a->table.end_appending();
            appending = false;
          }
          if (appending) a->table.append(h, k, st);
          else a->table.merge_in(h, k, st);
        });
      }
      keys.close();
      run_core([&] { a->table.end_appending(); });
      return;
    }
  }
  // Only a resumed stream skips: a live state streamed from memory is in
  // slot order, not hash order; one that overflows mid-stream is a merge of
  // its runs (hash order), so its rest starts after the last hash merged.
  const bool resumed = skip;
  while (keys.next(&h, &k, &st)) {
    if (other->serialized) h = into->key->hash(k);  // not trusted from the bytes
    else if (resumed && h <= skip_upto) continue;  // merged before other escalated
    merge_one(into, h, k, st);
    skip = true;
    skip_upto = h;
  }
  keys.close();
  if (keys.overflowed()) {
    // A live `other` whose runs overflowed when merged. Its stream is in
    // hash order and a hash's keys are merged before any is emitted, so
    // every key up to the last one merged here is done: escalate other and
    // read the rest of it at the wider width.
    other = escalate_numeric(other);
    with_state_type(other->state_tag, [&](auto t) -> Datum {
      combine_into<typename decltype(t)::type>(fcinfo, into, other, skip, skip_upto);
      return (Datum)0;
    });
  }
}

// combine(into, other) for any state kind; `into` may be NULL.
KeyedAggHeader* combine(FunctionCallInfo fcinfo, MemoryContext aggcxt, KeyedAggHeader* into_h, KeyedAggHeader* other) {
  if (other == into_h)
    ereport(ERROR, (errcode(ERRCODE_INVALID_PARAMETER_VALUE),
                    errmsg("cannot combine a spillagg state with itself")));
  with_state_type(other->state_tag, [&](auto t) -> Datum {
    using State = typename decltype(t)::type;
    if (!into_h) {
      // A new state's key type must outlive the call's cache.
      KeyType* kt = other->serialized ? new_key_type(static_cast<SerializedState*>(other), aggcxt)
                                      : other->key;
      into_h = KeyedAgg<State>::create(fcinfo, aggcxt, kt, other->value_type, other->limit);
    } else if (into_h->serialized || !same_state_kind(into_h->state_tag, State::kTag)) {
      ereport(ERROR, (errcode(ERRCODE_INVALID_PARAMETER_VALUE),
                      errmsg("cannot combine spillagg states of different kinds")));
    }
    combine_into<State>(fcinfo, into_h, other);
    return (Datum)0;
  });
  return into_h;
}

// combine(arg 0, arg 1) as a transition: arg 0 is updated in place when it
// is our read-write object; a flat (or read-only) arg 0 is first expanded
// into a new state. Arguments are never changed otherwise.
Datum combine_args(FunctionCallInfo fcinfo, const char* name) {
  MemoryContext aggcxt;
  if (!AggCheckCallContext(fcinfo, &aggcxt))
    ereport(ERROR, (errcode(ERRCODE_FEATURE_NOT_SUPPORTED), errmsg("%s can only be called by an aggregate", name)));
  if (IsA(fcinfo->context, WindowAggState))  // (a new state could not register its shutdown callback)
    ereport(ERROR, (errcode(ERRCODE_FEATURE_NOT_SUPPORTED),
                    errmsg("spillagg aggregates cannot be used as window functions")));
  KeyedAggHeader* into = writable_state(fcinfo, 0);
  KeyedAggHeader* first = into ? nullptr : state_arg(fcinfo, 0);
  KeyedAggHeader* other = state_arg(fcinfo, 1);
  if (first) into = combine(fcinfo, aggcxt, nullptr, first);
  if (other) into = combine(fcinfo, aggcxt, into, other);
  if (!into) PG_RETURN_NULL();
  return state_datum(into);
}

}  // namespace

KeyedAggHeader* spillagg::expand_state(FunctionCallInfo fcinfo, MemoryContext aggcxt, KeyedAggHeader* other,
                                       uint8 state_tag, KeyType* kt, Oid value_type) {
  if (!same_state_kind(other->state_tag, state_tag))
    ereport(ERROR, (errcode(ERRCODE_INVALID_PARAMETER_VALUE),
                    errmsg("cannot combine spillagg states of different kinds")));
  KeyedAggHeader* into = nullptr;
  with_state_type(state_tag, [&](auto t) -> Datum {
    using State = typename decltype(t)::type;
    into = KeyedAgg<State>::create(fcinfo, aggcxt, kt, value_type, other->limit);
    return (Datum)0;
  });
  // Checks key type, collation, value type; widens `into` as other needs.
  with_state_type(other->state_tag, [&](auto t) -> Datum {
    combine_into<typename decltype(t)::type>(fcinfo, into, other);
    return (Datum)0;
  });
  return into;
}

void spillagg::discard_live_state(KeyedAggHeader* h) {
  with_state_type(h->state_tag, [&](auto t) -> Datum {
    KeyedAgg<typename decltype(t)::type>::discard_state(h);
    return (Datum)0;
  });
}

bytea* spillagg::flatten_state(KeyedAggHeader* h) {
  for (;;) {
    Datum d = with_state_type(h->state_tag, [&](auto t) -> Datum {
      using State = typename decltype(t)::type;
      return PointerGetDatum(serialize<State>(nullptr, h));
    });
    if (d) return reinterpret_cast<bytea*>(DatumGetPointer(d));
    h = escalate_numeric(h);  // its runs overflowed when merged: start over wider
  }
}

// The final function of every *_state aggregate and of rollup: the state
// as a flat spillagg_state (a flat one is returned as it is).
SPILLAGG_FUNCTION(spillagg_to_state) {
  KeyedAggHeader* h = state_arg(fcinfo, 0);
  if (!h) PG_RETURN_NULL();
  if (h->serialized) PG_RETURN_DATUM(PG_GETARG_DATUM(0));
  PG_RETURN_BYTEA_P(flatten_state(h));
}

SPILLAGG_FUNCTION(spillagg_combine) { return combine_args(fcinfo, "spillagg_combine"); }

// rollup(spillagg_state): merges stored states (e.g. per day -> per month).
SPILLAGG_FUNCTION(spillagg_rollup_transfn) { return combine_args(fcinfo, "spillagg_rollup_transfn"); }

// spillagg 0.1's serial and deserial functions (internal <-> bytea) for
// its aggregates, whose transition type was internal: the 0.1 install
// script must keep working with this library until ALTER EXTENSION UPDATE.
// A state's serialized form is its flat value, which the combine function
// reads (and checks) as it reads any spillagg_state.
SPILLAGG_FUNCTION(spillagg_serialize) {
  KeyedAggHeader* h = state_arg(fcinfo, 0);
  if (h->serialized) PG_RETURN_DATUM(PG_GETARG_DATUM(0));
  PG_RETURN_BYTEA_P(flatten_state(h));
}

SPILLAGG_FUNCTION(spillagg_deserialize) { PG_RETURN_BYTEA_P(PG_GETARG_BYTEA_P(0)); }
