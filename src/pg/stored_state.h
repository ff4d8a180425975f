// Serialized states: the flat form of the spillagg_state type, the
// transition type of every aggregate (expanded_state.h): what a partial
// state travels as between parallel workers and Citus nodes, and what the
// two-step aggregation stores.
//
//   "SPAG" | u8 format version | u8 state tag | u32 key type | u32 collation
//   | u32 value type | i32 limit | u8 key format | records...
//
// One record per distinct key with its merged state, in hash order:
// varint key length, varint state length, key, state (State::encode). Keys
// are in their type's binary send format (key format 1), read back through
// its receive function, which validates them as it does any client input.
// Formats 1 and 2 (spillagg 0.1 and early 0.2) also stored each key's
// 8-byte hash, which readers recompute anyway; they are still read.
// Everything is checked as it is read: a truncated, corrupt or foreign
// state is an ERROR (22P03), never a crash.
#pragma once

#include "postgres_api.h"

#include "keyed_agg.h"
#include "parallel_exchange.h"

namespace spillagg {

constexpr uint32 kStateMagic = 0x47415053;  // "SPAG"
constexpr uint8 kStateFormatVersion = 3;  // 3: no hashes; 2: float sums and moments changed
constexpr uint8 kKeysPortable = 1;

// A record of a flat state (format 3). State::encode is bounded by
// StateMax<State> (kStateMax, or more for the wide numeric states).
template <class State>
void write_state_record(Writer& w, KeyView key, const State& st) {
  write_record(w, nullptr, key, st);
}

// Reads a record of a flat state of the given format; the key points into
// r's bytes.
template <class State>
void read_state_record(Reader& r, uint8 version, KeyView* key, State* st) {
  if (version < 3) {
    uint64_t hash;
    read_run_record(r, &hash, key, st);
    return;
  }
  RecordHeader h = read_record_header(r, StateMax<State>::value, false);
  *key = KeyView{r.take(h.key_len), h.key_len};
  Reader s(r.take(h.state_len), h.state_len);
  *st = State::decode(s);
  if (s.remaining() != 0) throw CorruptData("bad state in record");
}

// A state known only by its bytes (KeyedAggHeader::serialized is true).
struct SerializedState : KeyedAggHeader {
  Oid key_type;
  Oid collation;
  uint8 version;  // of the records' format
  const uint8* records;
  size_t len;
  // A parallel worker's partial state: its records are in this file
  // (parallel_exchange.h), len is their length and records is nullptr.
  ExchangeRef* exchange;
};

// Parses and checks the header; the records are checked as they are read.
SerializedState* parse_state_bytes(const bytea* b);

// The key type of a serialized state, cached in fn_extra (valid until the
// next call of this function), and one made to last as long as cxt.
KeyType* stored_key_type(FunctionCallInfo fcinfo, const SerializedState* ss);
KeyType* new_key_type(const SerializedState* ss, MemoryContext cxt);


// Checks every record of a spillagg_state: structure, state encodings, and
// each key through its type's receive function.
void validate_state(FunctionCallInfo fcinfo, const SerializedState* ss);


[[noreturn]] void wrong_state_kind(const char* consumer);

template <class T>
struct TypeTag {
  using type = T;
};

// Calls f(TypeTag<Family<W>>{}) for the width W of the given rung.
template <template <int> class Family, class F>
decltype(auto) with_numeric_rung(int rung, F&& f) {
  static_assert(kNumericRungs == 3, "one case per rung");
  switch (rung) {
    case 0: return f(TypeTag<Family<kNumericRungWords[0]>>{});
    case 1: return f(TypeTag<Family<kNumericRungWords[1]>>{});
    default: return f(TypeTag<Family<kNumericRungWords[2]>>{});
  }
}

// Numeric state h (live, any family) taken over by the next wider width
// (KeyedAgg::escalate); returns the new state. h must not be the widest.
inline KeyedAggHeader* escalate_numeric(KeyedAggHeader* h) {
  auto step = [&](auto t) -> KeyedAggHeader* {
    using From = typename decltype(t)::type;
    if constexpr (Widens<From>::value) {
      using To = typename WiderOf<From>::type;
      return KeyedAgg<To>::escalate(static_cast<KeyedAgg<From>*>(h));
    } else {
      elog(ERROR, "spillagg: no wider numeric state");
      return nullptr;
    }
  };
  int rung = numeric_rung(h->state_tag);
  switch (numeric_family(h->state_tag)) {
    case NumericSum::kTag: return with_numeric_rung<NumericSumT>(rung, step);
    case NumericExtreme<false>::kTag: return with_numeric_rung<NumericMinT>(rung, step);
    case NumericExtreme<true>::kTag: return with_numeric_rung<NumericMaxT>(rung, step);
    case NumericMoments::kTag: return with_numeric_rung<NumericMomentsT>(rung, step);
  }
  elog(ERROR, "spillagg: not a numeric state");
  return nullptr;
}

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
  }
  if (uint8 family = numeric_family(tag)) {
    int rung = numeric_rung(tag);
    switch (family) {
      case NumericSum::kTag: return with_numeric_rung<NumericSumT>(rung, f);
      case NumericExtreme<false>::kTag: return with_numeric_rung<NumericMinT>(rung, f);
      case NumericExtreme<true>::kTag: return with_numeric_rung<NumericMaxT>(rung, f);
      case NumericMoments::kTag: return with_numeric_rung<NumericMomentsT>(rung, f);
    }
  }
  ereport(ERROR, (errcode(ERRCODE_INVALID_BINARY_REPRESENTATION),
                  errmsg("invalid spillagg state: unknown state kind %d", tag)));
  pg_unreachable();
}

// Every distinct key with its merged state, once: from an aggregate's own
// state (finishing it: the spilled runs are merged) or from serialized bytes
// (whose keys' hashes are not known: *h is 0). next() and close() are
// called outside run_core.
template <class State>
class KeyStream {
 public:
  KeyStream(FunctionCallInfo fcinfo, KeyedAggHeader* h, const char* consumer) {
    if (h->state_tag != State::kTag) wrong_state_kind(consumer);
    if (!h->serialized) {
      agg_ = static_cast<KeyedAgg<State>*>(h);
      key = agg_->key;
      run_core([&] { catch_overflow([&] { agg_->finish(); }); });
      return;
    }
    SerializedState* ss = static_cast<SerializedState*>(h);
    ss_ = ss;
    agg_ = nullptr;
    key = stored_key_type(fcinfo, ss);
    if (ss->exchange) {
      file_ = ExchangeReader::open(*ss->exchange);
    } else {
      pos_ = ss->records;
      end_ = ss->records + ss->len;
    }
    // What a key's receive function allocates lasts until the next key.
    key_cxt_ = AllocSetContextCreate(CurrentMemoryContext, "spillagg received key", ALLOCSET_SMALL_SIZES);
  }

  bool next(uint64* h, KeyView* k, State* st) {
    if ((++count_ & 4095) == 0) CHECK_FOR_INTERRUPTS();  // no C++ object to unwind here
    bool more = false;
    if (agg_) {
      if (overflowed_) return false;
      run_core([&] { catch_overflow([&] { more = agg_->table.next(h, k, st); }); });
      return more;
    }
    // The next record's bytes: one whole record from a worker's file, or
    // the rest of the flat value.
    const uint8* p = pos_;
    size_t n = static_cast<size_t>(end_ - pos_);
    if (file_ ? !file_->next(&p, &n) : n == 0) return false;
    run_core(
        [&] {
          Reader r(p, n);
          read_state_record(r, ss_->version, k, st);
          if (file_ && r.remaining() != 0) throw CorruptData("bad record in a parallel worker's file");
          if (!file_) pos_ = r.position();
        },
        ERRCODE_INVALID_BINARY_REPRESENTATION);
    *h = 0;
    MemoryContextReset(key_cxt_);
    MemoryContext old = MemoryContextSwitchTo(key_cxt_);
    *k = key->receive(k->data, k->len);
    MemoryContextSwitchTo(old);
    return true;
  }

  // Ends the stream; an aggregate's state stays as it was, a parallel
  // worker's file is closed (the leader deletes it when the plan ends).
  void close() {
    if (agg_) run_core([&] { agg_->end_stream(); });
    else MemoryContextDelete(key_cxt_);
    if (file_) file_->close();
    file_ = nullptr;
  }

  KeyType* key;

  // The stream of an aggregate's state ended early because merging its
  // runs overflowed State's width: the consumer escalates the state
  // (escalate_numeric) and starts over. Only for states that can widen;
  // at the widest width the overflow is an ERROR (22003).
  bool overflowed() const { return overflowed_; }

 private:
  template <class F>
  void catch_overflow(F&& f) {
    if constexpr (Widens<State>::value) {
      try {
        f();
      } catch (const StateOverflow&) {
        overflowed_ = true;
      }
    } else {
      f();
    }
  }

  bool overflowed_ = false;
  KeyedAgg<State>* agg_;
  uint64 count_ = 0;
  MemoryContext key_cxt_ = nullptr;
  SerializedState* ss_ = nullptr;
  const uint8* pos_ = nullptr;
  const uint8* end_ = nullptr;
  ExchangeReader* file_ = nullptr;
};

// The final step of the map aggregates: a jsonb object {key text: value}
// over every distinct key. value_of(state, &jsonb_value) runs outside C++
// exception scope and may call PostgreSQL. (Datum) 0 when there are no keys.
template <class State, class ValueOf>
Datum build_json_map(KeyStream<State>& keys, ValueOf&& value_of) {
  JsonbParseState* parse = nullptr;
  pushJsonbValue(&parse, WJB_BEGIN_OBJECT, nullptr);
  bool any = false;
  uint64 h;
  KeyView k;
  State st;
  while (keys.next(&h, &k, &st)) {
    any = true;
    CHECK_FOR_INTERRUPTS();  // a large map takes a while; no C++ object is live here
    char* text = keys.key->output(k);
    JsonbValue key, value;
    key.type = jbvString;
    key.val.string.val = text;
    key.val.string.len = static_cast<int>(strlen(text));
    value_of(st, &value);
    pushJsonbValue(&parse, WJB_KEY, &key);
    pushJsonbValue(&parse, WJB_VALUE, &value);
  }
  keys.close();
  if (!any || keys.overflowed()) return (Datum)0;
  return JsonbPGetDatum(JsonbValueToJsonb(pushJsonbValue(&parse, WJB_END_OBJECT, nullptr)));
}

}  // namespace spillagg
