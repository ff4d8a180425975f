// Partial states for parallel aggregation: the combine, serialize and
// deserialize functions shared by every spillagg aggregate.
//
// Serialized form (bytea): a header, then every key with its state in the
// run-record format (spilling_table.h), sorted by hash:
//   "SPAG" | u8 format version | u8 state tag | u32 key type | u32 collation
//   | u32 value type | i32 limit | records...
// Combining merges the other state key by key with the same State::merge
// used for spilled runs, into a table that spills as usual, so the leader
// holds its budget plus the one serialized partial state being read.
#include "postgres_api.h"

#include "keyed_agg.h"

extern "C" {
PG_FUNCTION_INFO_V1(spillagg_serialize);
PG_FUNCTION_INFO_V1(spillagg_deserialize);
PG_FUNCTION_INFO_V1(spillagg_combine);
}

using namespace spillagg;

namespace {

constexpr uint32 kMagic = 0x47415053;  // "SPAG"
constexpr uint8 kFormatVersion = 1;

// A deserialized partial state: just its bytes, merged by the combine step.
struct SerializedState : KeyedAggHeader {
  Oid key_type;
  Oid collation;
  const uint8* records;
  size_t len;
};

template <class T>
struct TypeTag {
  using type = T;
};

// Calls f(TypeTag<State>{}) for the State named by tag.
template <class F>
Datum with_state_type(uint8 tag, F&& f) {
  switch (tag) {
    case Presence::kTag: return f(TypeTag<Presence>{});
    case Count::kTag: return f(TypeTag<Count>{});
    case IntSum::kTag: return f(TypeTag<IntSum>{});
    case FloatSum::kTag: return f(TypeTag<FloatSum>{});
    case Extreme<int64_t, false>::kTag: return f(TypeTag<Extreme<int64_t, false>>{});
    case Extreme<int64_t, true>::kTag: return f(TypeTag<Extreme<int64_t, true>>{});
    case Extreme<double, false>::kTag: return f(TypeTag<Extreme<double, false>>{});
    case Extreme<double, true>::kTag: return f(TypeTag<Extreme<double, true>>{});
    case FloatMoments::kTag: return f(TypeTag<FloatMoments>{});
    case IntMoments::kTag: return f(TypeTag<IntMoments>{});
    case NumericSum::kTag: return f(TypeTag<NumericSum>{});
    case NumericExtreme<false>::kTag: return f(TypeTag<NumericExtreme<false>>{});
    case NumericExtreme<true>::kTag: return f(TypeTag<NumericExtreme<true>>{});
    case NumericMoments::kTag: return f(TypeTag<NumericMoments>{});
  }
  ereport(ERROR, (errcode(ERRCODE_INVALID_BINARY_REPRESENTATION),
                  errmsg("invalid spillagg state: unknown state kind %d", tag)));
  pg_unreachable();
}

// Appends to a StringInfo (through pg_call: it can raise out of memory).
class StringInfoSink final : public ByteSink {
 public:
  StringInfoSink(StringInfo s, MemoryContext cxt) : s_(s), cxt_(cxt) {}
  void write(const void* p, size_t n) override {
    pg_call(cxt_, [&] { appendBinaryStringInfo(s_, static_cast<const char*>(p), static_cast<int>(n)); });
  }

 private:
  StringInfo s_;
  MemoryContext cxt_;
};

template <class State>
bytea* serialize(KeyedAgg<State>* s) {
  StringInfoData buf;
  initStringInfo(&buf);
  appendStringInfoSpaces(&buf, VARHDRSZ);
  MemoryContext cxt = CurrentMemoryContext;
  run_core([&] {
    StringInfoSink sink(&buf, cxt);
    uint8_t wbuf[kIoChunk];
    Writer w(&sink, wbuf, sizeof wbuf);
    w.fixed<uint32>(kMagic);
    w.fixed<uint8>(kFormatVersion);
    w.fixed<uint8>(State::kTag);
    w.fixed<uint32>(s->key->type);
    w.fixed<uint32>(s->key->collation);
    w.fixed<uint32>(s->value_type);
    w.fixed<int32>(s->limit);
    s->finish();
    uint64_t h;
    KeyView k;
    State st;
    while (s->table.next(&h, &k, &st)) write_run_record(w, h, k, st);
    w.flush();
  });
  SET_VARSIZE(buf.data, buf.len);
  return reinterpret_cast<bytea*>(buf.data);
}

// Serialized keys come from outside this process: check that their bytes
// have the shape of the key type before anything reads them as a Datum.
void check_key_shape(const KeyType* kt, KeyView k) {
  bool ok;
  if (kt->typlen > 0)
    ok = k.len == static_cast<uint32>(kt->typlen);
  else if (kt->typlen == -1)
    ok = k.len >= VARHDRSZ && VARATT_IS_4B_U(k.data) && VARSIZE(k.data) == k.len;
  else
    ok = k.len >= 1 && memchr(k.data, '\0', k.len) == k.data + k.len - 1;
  if (!ok)
    ereport(ERROR, (errcode(ERRCODE_INVALID_BINARY_REPRESENTATION),
                    errmsg("invalid spillagg state: malformed key of type %s", format_type_be(kt->type))));
}

// The key type of a serialized state, cached in the combine function's fn_extra.
KeyType* serialized_key_type(FunctionCallInfo fcinfo, const SerializedState* ss) {
  FmgrInfo* fl = fcinfo->flinfo;
  KeyType* kt = static_cast<KeyType*>(fl->fn_extra);
  if (!kt || kt->type != ss->key_type || kt->collation != ss->collation) {
    kt = static_cast<KeyType*>(MemoryContextAllocZero(fl->fn_mcxt, sizeof(KeyType)));
    kt->init(ss->key_type, ss->collation, fl->fn_mcxt);
    fl->fn_extra = kt;
  }
  return kt;
}

// Merges every key of `other` into `into`.
template <class State>
void combine_into(KeyedAgg<State>* into, KeyedAggHeader* other) {
  if (!other->serialized) {
    KeyedAgg<State>* b = static_cast<KeyedAgg<State>*>(other);
    run_core([&] {
      b->finish();
      uint64_t h;
      KeyView k;
      State st;
      while (b->table.next(&h, &k, &st)) into->table.merge_in(h, k, st);
    });
    return;
  }
  SerializedState* ss = static_cast<SerializedState*>(other);
  KeyType* kt = into->key;
  if (kt->type != ss->key_type)
    ereport(ERROR, (errcode(ERRCODE_INVALID_BINARY_REPRESENTATION),
                    errmsg("invalid spillagg state: keys of type %s cannot be combined with keys of type %s",
                           format_type_be(ss->key_type), format_type_be(kt->type))));
  Reader r(ss->records, ss->len);
  uint8* aligned = static_cast<uint8*>(palloc(64));
  size_t aligned_cap = 64;
  while (r.remaining() > 0) {
    uint64_t h;
    KeyView k;
    State st;
    run_core([&] { read_run_record(r, &h, &k, &st); }, ERRCODE_INVALID_BINARY_REPRESENTATION);
    if (k.len > aligned_cap) {  // keys are read as Datums: give them aligned memory
      aligned_cap = Max(k.len, 2 * aligned_cap);
      aligned = static_cast<uint8*>(repalloc(aligned, aligned_cap));
    }
    memcpy(aligned, k.data, k.len);
    k.data = aligned;
    check_key_shape(kt, k);
    h = kt->hash(k);  // not trusted from the bytes
    run_core([&] { into->table.merge_in(h, k, st); });
  }
  pfree(aligned);
}

}  // namespace

Datum spillagg_serialize(PG_FUNCTION_ARGS) {
  KeyedAggHeader* h = reinterpret_cast<KeyedAggHeader*>(PG_GETARG_POINTER(0));
  return with_state_type(h->state_tag, [&](auto t) {
    using State = typename decltype(t)::type;
    PG_RETURN_BYTEA_P(serialize(static_cast<KeyedAgg<State>*>(h)));
  });
}

Datum spillagg_deserialize(PG_FUNCTION_ARGS) {
  bytea* b = PG_GETARG_BYTEA_PP(0);
  SerializedState* ss = static_cast<SerializedState*>(palloc0(sizeof(SerializedState)));
  uint32 magic = 0;
  uint8 version = 0;
  run_core(
      [&] {
        Reader r(reinterpret_cast<const uint8*>(VARDATA_ANY(b)), VARSIZE_ANY_EXHDR(b));
        magic = r.fixed<uint32>();
        version = r.fixed<uint8>();
        ss->state_tag = r.fixed<uint8>();
        ss->key_type = r.fixed<uint32>();
        ss->collation = r.fixed<uint32>();
        ss->value_type = r.fixed<uint32>();
        ss->limit = r.fixed<int32>();
        ss->records = r.position();
        ss->len = r.remaining();
      },
      ERRCODE_INVALID_BINARY_REPRESENTATION);
  if (magic != kMagic || version != kFormatVersion)
    ereport(ERROR, (errcode(ERRCODE_INVALID_BINARY_REPRESENTATION),
                    errmsg("invalid spillagg state: not a spillagg state of format version %d",
                           kFormatVersion)));
  ss->serialized = true;
  PG_RETURN_POINTER(ss);
}

Datum spillagg_combine(PG_FUNCTION_ARGS) {
  MemoryContext aggcxt;
  if (!AggCheckCallContext(fcinfo, &aggcxt))
    elog(ERROR, "spillagg_combine called in non-aggregate context");
  if (PG_ARGISNULL(1)) {
    if (PG_ARGISNULL(0)) PG_RETURN_NULL();
    PG_RETURN_POINTER(PG_GETARG_POINTER(0));
  }
  KeyedAggHeader* other = reinterpret_cast<KeyedAggHeader*>(PG_GETARG_POINTER(1));
  return with_state_type(other->state_tag, [&](auto t) -> Datum {
    using State = typename decltype(t)::type;
    KeyedAgg<State>* into;
    if (PG_ARGISNULL(0)) {
      KeyType* kt = other->serialized
                        ? serialized_key_type(fcinfo, static_cast<SerializedState*>(other))
                        : other->key;
      into = KeyedAgg<State>::create(fcinfo, aggcxt, kt, other->value_type, other->limit);
    } else {
      into = reinterpret_cast<KeyedAgg<State>*>(PG_GETARG_POINTER(0));
      if (into->state_tag != State::kTag)
        ereport(ERROR, (errcode(ERRCODE_INVALID_BINARY_REPRESENTATION),
                        errmsg("invalid spillagg state: cannot combine states of different kinds")));
    }
    combine_into(into, other);
    PG_RETURN_POINTER(into);
  });
}
