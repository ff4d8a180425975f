// Per-key states. Each has exactly one merge rule (the Mergeable rule), used
// alike when spilled runs are merged and when partial states are combined,
// and a compact, deterministic encode/decode for spill runs and
// serialization. States are plain data: no destructors, no pointers.
#pragma once

#include <cstdint>
#include <stdexcept>

#include "codec.h"

namespace spillagg {

// count_distinct needs only the set of keys.
struct Presence {
  void merge(const Presence&) {}
  void encode(Writer&) const {}
  static Presence decode(Reader&) { return {}; }
};

// COUNT: a += b.
struct Count {
  int64_t n = 0;

  void add_one() { merge(Count{1}); }
  void merge(const Count& o) {
    if (__builtin_add_overflow(n, o.n, &n)) throw std::overflow_error("count out of range");
  }
  void encode(Writer& w) const { w.varint(static_cast<uint64_t>(n)); }
  static Count decode(Reader& r) {
    uint64_t v = r.varint();
    if (v > static_cast<uint64_t>(INT64_MAX)) throw CorruptData("count out of range");
    return Count{static_cast<int64_t>(v)};
  }
};

}  // namespace spillagg
