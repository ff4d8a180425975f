// The combine function shared by every spillagg aggregate (parallel query,
// Citus), the rollup aggregate's transition over stored spillagg_state
// values (two-step aggregation), and the flattening of a live state into
// its bytes. Combining merges the other state key by key with the same
// State::merge used for spilled runs, into a table that spills as usual, so
// the leader (or Citus coordinator) holds its budget plus the one flat
// partial state being read.
#include "postgres_api.h"

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

template <class State>
bytea* serialize(FunctionCallInfo fcinfo, KeyedAggHeader* h) {
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
    w.fixed<uint8>(kKeysPortable);
  });
  uint64_t hash;
  KeyView k;
  State st;
  // A sent key lasts until its record is written.
  MemoryContext key_cxt = AllocSetContextCreate(CurrentMemoryContext, "spillagg sent key", ALLOCSET_SMALL_SIZES);
  while (keys.next(&hash, &k, &st)) {
    MemoryContext old = MemoryContextSwitchTo(key_cxt);
    bytea* sent = keys.key->send(k);
    MemoryContextSwitchTo(old);
    k = KeyView{reinterpret_cast<const uint8*>(VARDATA(sent)), static_cast<uint32>(VARSIZE(sent) - VARHDRSZ)};
    run_core([&] { write_state_record(w, k, st); });
    MemoryContextReset(key_cxt);
  }
  run_core([&] { w.flush(); });
  keys.close();
  MemoryContextDelete(key_cxt);
  SET_VARSIZE(buf.data, buf.len);
  return reinterpret_cast<bytea*>(buf.data);
}

// Merges every key of `other` (a live state or serialized bytes) into `into`.
template <class State>
void combine_into(FunctionCallInfo fcinfo, KeyedAgg<State>* into, KeyedAggHeader* other) {
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
  while (keys.next(&h, &k, &st)) {
    if (other->serialized) h = into->key->hash(k);  // not trusted from the bytes
    run_core([&] { into->table.merge_in(h, k, st); });
  }
  keys.close();
}

// combine(into, other) for any state kind; `into` may be NULL.
KeyedAggHeader* combine(FunctionCallInfo fcinfo, MemoryContext aggcxt, KeyedAggHeader* into_h, KeyedAggHeader* other) {
  if (other == into_h)
    ereport(ERROR, (errcode(ERRCODE_INVALID_PARAMETER_VALUE),
                    errmsg("cannot combine a spillagg state with itself")));
  Datum d = with_state_type(other->state_tag, [&](auto t) -> Datum {
    using State = typename decltype(t)::type;
    KeyedAgg<State>* into;
    if (!into_h) {
      // A new state's key type must outlive the call's cache.
      KeyType* kt = other->serialized ? new_key_type(static_cast<SerializedState*>(other), aggcxt)
                                      : other->key;
      into = KeyedAgg<State>::create(fcinfo, aggcxt, kt, other->value_type, other->limit);
    } else {
      if (into_h->serialized || into_h->state_tag != State::kTag)
        ereport(ERROR, (errcode(ERRCODE_INVALID_PARAMETER_VALUE),
                        errmsg("cannot combine spillagg states of different kinds")));
      into = static_cast<KeyedAgg<State>*>(into_h);
    }
    combine_into(fcinfo, into, other);
    return PointerGetDatum(static_cast<KeyedAggHeader*>(into));
  });
  return reinterpret_cast<KeyedAggHeader*>(DatumGetPointer(d));
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
  if (other->state_tag != state_tag)
    ereport(ERROR, (errcode(ERRCODE_INVALID_PARAMETER_VALUE),
                    errmsg("cannot combine spillagg states of different kinds")));
  Datum d = with_state_type(state_tag, [&](auto t) -> Datum {
    using State = typename decltype(t)::type;
    KeyedAgg<State>* into = KeyedAgg<State>::create(fcinfo, aggcxt, kt, value_type, other->limit);
    combine_into(fcinfo, into, other);  // checks key type, collation, value type
    return PointerGetDatum(static_cast<KeyedAggHeader*>(into));
  });
  return reinterpret_cast<KeyedAggHeader*>(DatumGetPointer(d));
}

bytea* spillagg::flatten_state(KeyedAggHeader* h) {
  Datum d = with_state_type(h->state_tag, [&](auto t) -> Datum {
    using State = typename decltype(t)::type;
    return PointerGetDatum(serialize<State>(nullptr, h));
  });
  return reinterpret_cast<bytea*>(DatumGetPointer(d));
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
