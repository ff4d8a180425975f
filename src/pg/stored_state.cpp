#include "stored_state.h"

namespace spillagg {

[[noreturn]] static void invalid_state(const char* what) {
  ereport(ERROR, (errcode(ERRCODE_INVALID_BINARY_REPRESENTATION),
                  errmsg("invalid spillagg state: %s", what)));
  pg_unreachable();
}

// The value types each state kind is made from (top_k's "value" is its k).
static bool value_type_fits(uint8 tag, Oid value_type) {
  switch (tag) {
    case Presence::kTag:
    case Count::kTag:
      return value_type == InvalidOid || value_type == INT4OID;
    case IntSum::kTag:
    case IntMoments::kTag:
    case Extreme<int64_t, false>::kTag:
    case Extreme<int64_t, true>::kTag:
      return value_type == INT2OID || value_type == INT4OID || value_type == INT8OID;
    case FloatSum::kTag:
    case FloatMoments::kTag:
    case Extreme<double, false>::kTag:
    case Extreme<double, true>::kTag:
      return value_type == FLOAT4OID || value_type == FLOAT8OID;
    default:
      return value_type == NUMERICOID;
  }
}

// Appends to memory sized beforehand.
class FixedSink final : public ByteSink {
 public:
  FixedSink(uint8* p, size_t cap) : p_(p), cap_(cap) {}
  void write(const void* p, size_t n) override {
    if (n > cap_ - len_) throw std::length_error("format 1 state grew more than expected");
    memcpy(p_ + len_, p, n);
    len_ += n;
  }
  size_t len() const { return len_; }

 private:
  uint8* p_;
  size_t cap_;
  size_t len_ = 0;
};

// Format 1 (spillagg 0.1) differs from format 2 only in the records of two
// float states (State::decode_format1): those are rewritten in the current
// format, in memory of the current context. Each record has a header of at
// least 10 bytes, which bounds the record count.
template <class State>
static void upgrade_format1_records(SerializedState* ss) {
  size_t cap = ss->len + (ss->len / 10 + 1) * State::kFormat1Growth;
  uint8* out = static_cast<uint8*>(palloc_extended(cap, MCXT_ALLOC_HUGE));
  run_core(
      [&] {
        FixedSink sink(out, cap);
        uint8_t wbuf[kIoChunk];
        Writer w(&sink, wbuf, sizeof wbuf);
        Reader r(ss->records, ss->len);
        while (r.remaining() > 0) {
          RecordHeader h = read_record_header(r);
          KeyView key{r.take(h.key_len), h.key_len};
          Reader sr(r.take(h.state_len), h.state_len);
          State st = State::decode_format1(sr);
          if (sr.remaining() != 0) throw CorruptData("bad state in record");
          write_state_record(w, key, st);
        }
        w.flush();
        ss->records = out;
        ss->len = sink.len();
        ss->version = kStateFormatVersion;
      },
      ERRCODE_INVALID_BINARY_REPRESENTATION);
}

SerializedState* parse_state_bytes(const bytea* b) {
  SerializedState* ss = static_cast<SerializedState*>(palloc0(sizeof(SerializedState)));
  uint32 magic = 0;
  uint8 version = 0, key_format = 0;
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
        key_format = r.fixed<uint8>();
        ss->records = r.position();
        ss->len = r.remaining();
      },
      ERRCODE_INVALID_BINARY_REPRESENTATION);
  if (magic != kStateMagic) invalid_state("not a spillagg state");
  if (version < 1 || version > kStateFormatVersion)
    ereport(ERROR, (errcode(ERRCODE_INVALID_BINARY_REPRESENTATION),
                    errmsg("invalid spillagg state: format version %d, expected 1 to %d", version,
                           kStateFormatVersion)));
  if (!value_type_fits(ss->state_tag, ss->value_type)) invalid_state("its value type does not match its kind");
  if (OidIsValid(ss->collation) && !SearchSysCacheExists1(COLLOID, ObjectIdGetDatum(ss->collation)))
    invalid_state("its collation does not exist in this database");
  if (ss->limit < 0) invalid_state("negative k");
  if (key_format == kKeysExchange) {
    ExchangeRef ref;
    if (version != kStateFormatVersion || !read_exchange_ref(ss->records, ss->len, &ref))
      invalid_state("a malformed reference to a parallel worker's file");
    ss->exchange = static_cast<ExchangeRef*>(palloc(sizeof(ExchangeRef)));
    *ss->exchange = ref;
    ss->records = nullptr;
    ss->len = ref.length;
  } else if (key_format != kKeysPortable) {
    invalid_state("unknown key format");
  }
  ss->version = version;
  if (version == 1 && ss->state_tag == FloatSum::kTag) upgrade_format1_records<FloatSum>(ss);
  if (version == 1 && ss->state_tag == FloatMoments::kTag) upgrade_format1_records<FloatMoments>(ss);
  ss->magic = kParsedStateMagic;
  ss->serialized = true;
  return ss;
}

KeyType* new_key_type(const SerializedState* ss, MemoryContext cxt) {
  if (!SearchSysCacheExists1(TYPEOID, ObjectIdGetDatum(ss->key_type)))
    invalid_state("its key type does not exist in this database");
  KeyType* kt = static_cast<KeyType*>(MemoryContextAllocZero(cxt, sizeof(KeyType)));
  kt->init(ss->key_type, ss->collation, cxt);
  return kt;
}

// The cached KeyType lives in a context of its own, replaced when a state of
// another key type or collation comes (rollup over mixed states must not
// grow per row). Nothing but KeyStreams of this call use it.
KeyType* stored_key_type(FunctionCallInfo fcinfo, const SerializedState* ss) {
  FmgrInfo* fl = fcinfo->flinfo;
  CallCache* cache = call_cache(fcinfo);
  KeyType* kt = cache->stored_kt;
  if (!kt || kt->type != ss->key_type || kt->collation != ss->collation) {
    cache->stored_kt = nullptr;
    if (cache->stored_cxt) MemoryContextDelete(cache->stored_cxt);
    cache->stored_cxt = AllocSetContextCreate(fl->fn_mcxt, "spillagg stored key type", ALLOCSET_SMALL_SIZES);
    cache->stored_kt = kt = new_key_type(ss, cache->stored_cxt);
  }
  return kt;
}

void wrong_state_kind(const char* consumer) {
  ereport(ERROR, (errcode(ERRCODE_INVALID_PARAMETER_VALUE),
                  errmsg("this spillagg state cannot be finalized by %s", consumer),
                  errhint("A state is finalized by the function matching the *_state aggregate that made it "
                          "(sum_map_state -> sum_map_final or avg_map_final, ...).")));
  pg_unreachable();
}

void validate_state(FunctionCallInfo fcinfo, const SerializedState* ss) {
  if (ss->exchange) invalid_state("a parallel worker's partial state is not a value to store");
  KeyType* kt = stored_key_type(fcinfo, ss);
  with_state_type(ss->state_tag, [&](auto t) -> Datum {
    using State = typename decltype(t)::type;
    const uint8* pos = ss->records;
    const uint8* end = ss->records + ss->len;
    MemoryContext key_cxt = AllocSetContextCreate(CurrentMemoryContext, "spillagg received key",
                                                  ALLOCSET_SMALL_SIZES);
    for (uint64 n = 1; pos < end; ++n) {
      if ((n & 4095) == 0) CHECK_FOR_INTERRUPTS();
      KeyView k{nullptr, 0};
      State st;
      run_core(
          [&] {
            Reader r(pos, static_cast<size_t>(end - pos));
            read_state_record(r, ss->version, &k, &st);
            pos = r.position();
          },
          ERRCODE_INVALID_BINARY_REPRESENTATION);
      MemoryContext old = MemoryContextSwitchTo(key_cxt);
      kt->receive(k.data, k.len);
      MemoryContextSwitchTo(old);
      MemoryContextReset(key_cxt);
    }
    MemoryContextDelete(key_cxt);
    return (Datum)0;
  });
}

}  // namespace spillagg

using namespace spillagg;

// spillagg_state: text form as bytea's hex ("\x..."), binary form the bytes.
static Datum checked_state(FunctionCallInfo fcinfo, bytea* b) {
  validate_state(fcinfo, parse_state_bytes(b));  // (refuses a parallel worker's reference)
  PG_RETURN_BYTEA_P(b);
}

SPILLAGG_FUNCTION(spillagg_state_in) {
  return checked_state(fcinfo, DatumGetByteaPP(DirectFunctionCall1(byteain, PG_GETARG_DATUM(0))));
}

SPILLAGG_FUNCTION(spillagg_state_out) { return DirectFunctionCall1(byteaout, PG_GETARG_DATUM(0)); }

SPILLAGG_FUNCTION(spillagg_state_recv) {
  return checked_state(fcinfo, DatumGetByteaPP(DirectFunctionCall1(bytearecv, PG_GETARG_DATUM(0))));
}

SPILLAGG_FUNCTION(spillagg_state_send) { return DirectFunctionCall1(byteasend, PG_GETARG_DATUM(0)); }
