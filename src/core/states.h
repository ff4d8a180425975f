// Per-key states. Each has a tag naming it in serialized states, exactly one merge rule (the Mergeable rule), used
// alike when spilled runs are merged and when partial states are combined,
// and a compact, deterministic encode/decode for spill runs and
// serialization. States are plain data: no destructors, no pointers.
#pragma once

#include <cmath>
#include <cstdint>
#include <stdexcept>
#include <type_traits>

#include "codec.h"
#include "decimal.h"

namespace spillagg {

// n counts the non-NULL values seen; n == 0 means the key's values were all
// NULL, which the final functions turn into JSON null.
inline void add_count(int64_t& n, int64_t m) {  // n is unchanged on overflow
  int64_t r;
  if (__builtin_add_overflow(n, m, &r)) throw std::overflow_error("count out of range");
  n = r;
}
inline int64_t decode_count(Reader& r) {
  uint64_t v = r.varint();
  if (v > static_cast<uint64_t>(INT64_MAX)) throw CorruptData("count out of range");
  return static_cast<int64_t>(v);
}

// count_distinct needs only the set of keys.
struct Presence {
  static constexpr uint8_t kTag = 1;
  static constexpr bool kDeferrable = true;  // see SpillingTable::add_deferred
  void merge(const Presence&) {}
  void encode(Writer&) const {}
  static Presence decode(Reader&) { return {}; }
};

// COUNT: a += b.
struct Count {
  static constexpr uint8_t kTag = 2;
  static constexpr bool kDeferrable = true;
  int64_t n = 0;

  void add_one() { merge(Count{1}); }
  void merge(const Count& o) { add_count(n, o.n); }
  void encode(Writer& w) const { w.varint(static_cast<uint64_t>(n)); }
  static Count decode(Reader& r) {
    uint64_t v = r.varint();
    if (v > static_cast<uint64_t>(INT64_MAX)) throw CorruptData("count out of range");
    return Count{static_cast<int64_t>(v)};
  }
};

}  // namespace spillagg

namespace spillagg {

// Table memory is 8-byte aligned (palloc's MAXALIGN), so a 128-bit member
// must not ask for 16 (PostgreSQL's own int128 typedef does the same).
typedef __int128 int128_a8 __attribute__((aligned(8)));

// 128-bit integers travel as two varints (zig-zag low word, signed high word).
inline void encode_i128(Writer& w, __int128 v) {
  w.varint(static_cast<uint64_t>(v));
  w.svarint(static_cast<int64_t>(v >> 64));
}
inline __int128 decode_i128(Reader& r) {
  uint64_t lo = r.varint();
  int64_t hi = r.svarint();
  return static_cast<__int128>((static_cast<unsigned __int128>(static_cast<uint64_t>(hi)) << 64) | lo);
}

// SUM and AVG of integers: (sum, n), a += b. |sum| <= n * 2^63 < 2^127 for
// any n < 2^63, so the 128-bit sum of int8 values cannot overflow.
// Integer sums: |sum| <= n * 2^63, so valid sums of fewer than 2^63 values
// never overflow 128 bits. A decoded state (bytes from outside) must keep
// that bound, and merging checks anyway: signed overflow is never reached.
inline void check_int_sum(__int128 sum, int64_t n) {
  __int128 bound = static_cast<__int128>(n) << 63;
  if (sum > bound || sum < -bound) throw CorruptData("integer sum out of range for its count");
}
inline void add_int_sum(int128_a8& a, __int128 b) {
  __int128 r;
  if (__builtin_add_overflow(static_cast<__int128>(a), b, &r)) throw std::overflow_error("integer sum out of range");
  a = r;
}

struct IntSum {
  static constexpr uint8_t kTag = 3;
  static constexpr bool kDeferrable = true;  // add(v) is merge of a one-row state
  int128_a8 sum = 0;
  int64_t n = 0;

  void add(int64_t v) { merge(IntSum{v, 1}); }
  void merge(const IntSum& o) {
    add_count(n, o.n);
    add_int_sum(sum, o.sum);
  }
  void encode(Writer& w) const {
    w.varint(static_cast<uint64_t>(n));
    encode_i128(w, sum);
  }
  static IntSum decode(Reader& r) {
    IntSum s;
    s.n = decode_count(r);
    s.sum = decode_i128(r);
    check_int_sum(s.sum, s.n);
    return s;
  }
};

// Adds as PostgreSQL's float4pl/float8pl: a finite + finite that overflows
// is an ERROR ("value out of range: overflow"), never a silent Infinity.
template <class F>
inline F float_add(F a, F b) {
  F r = a + b;
  if (std::isinf(r) && !std::isinf(a) && !std::isinf(b))
    throw std::overflow_error("value out of range: overflow");
  return r;
}

// SUM of floats: (sum, n), a += b, in double precision as float8pl adds;
// sum4 is the same sum in single precision, as sum(real) adds with float4pl,
// and sum4_overflowed says that finite single-precision sums overflowed
// (float4pl's ERROR, raised by the final function for real values only,
// even if an Infinity came later).
struct FloatSum {
  static constexpr uint8_t kTag = 4;
  static constexpr bool kDeferrable = true;
  double sum = 0;
  int64_t n = 0;
  float sum4 = 0;
  bool sum4_overflowed = false;

  void add(double v) { merge(FloatSum{v, 1, static_cast<float>(v), false}); }
  void merge(const FloatSum& o) {
    sum = float_add(sum, o.sum);
    add_count(n, o.n);
    float s4 = sum4 + o.sum4;
    sum4_overflowed = sum4_overflowed || o.sum4_overflowed ||
                      (std::isinf(s4) && !std::isinf(sum4) && !std::isinf(o.sum4));
    sum4 = s4;
  }
  void encode(Writer& w) const {
    w.varint(static_cast<uint64_t>(n));
    w.fixed(sum);
    w.fixed(sum4);
    w.fixed<uint8_t>(sum4_overflowed);
  }
  static FloatSum decode(Reader& r) {
    FloatSum s;
    s.n = decode_count(r);
    s.sum = r.fixed<double>();
    s.sum4 = r.fixed<float>();
    uint8_t flag = r.fixed<uint8_t>();
    if (flag > 1) throw CorruptData("bad float sum flag");
    s.sum4_overflowed = flag;
    return s;
  }
  // Stored-state format 1 (spillagg 0.1) had no flag; 0.1's final function
  // raised when the single-precision sum was infinite and the double one not.
  static constexpr size_t kFormat1Growth = 1;
  static FloatSum decode_format1(Reader& r) {
    FloatSum s;
    s.n = decode_count(r);
    s.sum = r.fixed<double>();
    s.sum4 = r.fixed<float>();
    s.sum4_overflowed = std::isinf(s.sum4) && !std::isinf(s.sum);
    return s;
  }
};

// PostgreSQL's float order: NaN above everything, -0 == 0.
inline bool float_less(double a, double b) {
  if (std::isnan(a)) return false;
  if (std::isnan(b)) return true;
  return a < b;
}

// MIN / MAX: keep the smaller / larger. T is int64_t or double.
template <class T, bool kMax>
struct Extreme {
  static constexpr uint8_t kTag = (std::is_floating_point_v<T> ? 7 : 5) + (kMax ? 1 : 0);
  static constexpr bool kDeferrable = true;
  T v = 0;
  int64_t n = 0;

  static bool less(T a, T b) {
    if constexpr (std::is_floating_point_v<T>) return float_less(a, b);
    else return a < b;
  }
  void add(T x) { merge(Extreme{x, 1}); }
  void merge(const Extreme& o) {
    if (o.n == 0) return;
    // On a tie the later value wins, as float8larger/float8smaller return it.
    if (n == 0 || (kMax ? !less(o.v, v) : !less(v, o.v))) v = o.v;
    add_count(n, o.n);
  }
  void encode(Writer& w) const {
    w.varint(static_cast<uint64_t>(n));
    if constexpr (std::is_floating_point_v<T>) w.fixed(v);
    else w.svarint(v);
  }
  static Extreme decode(Reader& r) {
    Extreme s;
    s.n = decode_count(r);
    if constexpr (std::is_floating_point_v<T>) s.v = r.fixed<double>();
    else s.v = r.svarint();
    return s;
  }
};

// VARIANCE / STDDEV and AVG of floats: (n, mean, M2), combined with Chan et
// al.'s parallel formula; add() is the one-element case (Welford's update).
// sum is the plain sum, for avg (float8_avg divides it by n). Like
// float8_accum, finite inputs whose sum or M2 overflow are an ERROR (so avg
// of floats raises where PostgreSQL's does).
struct FloatMoments {
  static constexpr uint8_t kTag = 9;
  static constexpr bool kDeferrable = true;
  int64_t n = 0;
  double mean = 0;
  double m2 = 0;
  double sum = 0;

  // A non-finite first value makes M2 NaN, as PostgreSQL's float8_accum.
  void add(double x) { merge(FloatMoments{1, x, std::isfinite(x) ? 0.0 : std::nan(""), x}); }
  void merge(const FloatMoments& o) {
    if (o.n == 0) return;
    if (n == 0) {
      *this = o;
      return;
    }
    sum = float_add(sum, o.sum);
    double na = static_cast<double>(n), nb = static_cast<double>(o.n), nab = na + nb;
    double delta = o.mean - mean;
    // A non-finite input makes the variance NaN, as in PostgreSQL; finite
    // inputs whose moments overflow are an ERROR there, and here.
    bool finite_in = std::isfinite(mean) && std::isfinite(o.mean) && std::isfinite(m2) && std::isfinite(o.m2);
    if (!std::isfinite(delta)) {
      if (finite_in) throw std::overflow_error("value out of range: overflow");
      mean = mean + o.mean;
      m2 = std::nan("");
    } else {
      mean += delta * (nb / nab);
      m2 += o.m2 + delta * delta * (na * nb / nab);
      if (finite_in && !std::isfinite(m2)) throw std::overflow_error("value out of range: overflow");
    }
    add_count(n, o.n);
  }
  void encode(Writer& w) const {
    w.varint(static_cast<uint64_t>(n));
    w.fixed(mean);
    w.fixed(m2);
    w.fixed(sum);
  }
  static FloatMoments decode(Reader& r) {
    FloatMoments s;
    s.n = decode_count(r);
    s.mean = r.fixed<double>();
    s.m2 = r.fixed<double>();
    s.sum = r.fixed<double>();
    return s;
  }
  // Stored-state format 1 (spillagg 0.1) had no plain sum: only the
  // variance maps kept these states then, and they do not read it.
  static constexpr size_t kFormat1Growth = 8;
  static FloatMoments decode_format1(Reader& r) {
    FloatMoments s;
    s.n = decode_count(r);
    s.mean = r.fixed<double>();
    s.m2 = r.fixed<double>();
    s.sum = s.mean * static_cast<double>(s.n);
    return s;
  }
};

// Unsigned 192-bit integer: enough for the sum of squares of up to 2^63
// int8 values (each below 2^126).
struct U192 {
  uint64_t w[3] = {0, 0, 0};

  void add(const U192& o) {
    unsigned __int128 c = 0;
    for (int i = 0; i < 3; ++i) {
      c += static_cast<unsigned __int128>(w[i]) + o.w[i];
      w[i] = static_cast<uint64_t>(c);
      c >>= 64;
    }
    if (c) throw std::overflow_error("sum of squares out of range");
  }
  static U192 square(int64_t x) {
    unsigned __int128 a = x < 0 ? -static_cast<unsigned __int128>(x) : static_cast<unsigned __int128>(x);
    unsigned __int128 sq = a * a;  // < 2^126
    U192 r;
    r.w[0] = static_cast<uint64_t>(sq);
    r.w[1] = static_cast<uint64_t>(sq >> 64);
    return r;
  }
};

// VARIANCE / STDDEV of integers: exact (n, sum, sum of squares), a += b, as
// PostgreSQL's own integer accumulators; the final function does the
// numeric arithmetic.
struct IntMoments {
  static constexpr uint8_t kTag = 10;
  int64_t n = 0;
  int128_a8 sum = 0;
  U192 sumsq;

  void add(int64_t x) {
    IntMoments one;
    one.n = 1;
    one.sum = x;
    one.sumsq = U192::square(x);
    merge(one);
  }
  void merge(const IntMoments& o) {
    add_count(n, o.n);
    add_int_sum(sum, o.sum);
    sumsq.add(o.sumsq);
  }
  void encode(Writer& w) const {
    w.varint(static_cast<uint64_t>(n));
    encode_i128(w, sum);
    for (uint64_t x : sumsq.w) w.varint(x);
  }
  static IntMoments decode(Reader& r) {
    IntMoments s;
    s.n = decode_count(r);
    s.sum = decode_i128(r);
    check_int_sum(s.sum, s.n);
    for (uint64_t& x : s.sumsq.w) x = r.varint();
    return s;
  }
};

// Numeric values: finite ones are summed exactly; NaN and the infinities are
// counted, so the final functions can answer as PostgreSQL's do.
struct NumericKinds {
  int64_t n = 0;  // all non-NULL values
  int64_t nan = 0, pos_inf = 0, neg_inf = 0;

  int64_t finite() const { return n - nan - pos_inf - neg_inf; }
  bool special() const { return nan + pos_inf + neg_inf > 0; }
  // Counts v; true if it is finite.
  bool count(uint8_t kind) {
    add_count(n, 1);
    if (kind == NumericValue::kNaN) ++nan;
    else if (kind == NumericValue::kPosInf) ++pos_inf;
    else if (kind == NumericValue::kNegInf) ++neg_inf;
    return kind == NumericValue::kFinite;
  }
  template <int W>
  bool count(const NumericValueT<W>& v) {
    return count(v.kind);
  }
  void merge(const NumericKinds& o) {
    add_count(n, o.n);
    add_count(nan, o.nan);
    add_count(pos_inf, o.pos_inf);
    add_count(neg_inf, o.neg_inf);
  }
  void encode(Writer& w) const {
    for (int64_t x : {n, nan, pos_inf, neg_inf}) w.varint(static_cast<uint64_t>(x));
  }
  static NumericKinds decode(Reader& r) {
    NumericKinds k;
    k.n = decode_count(r);
    k.nan = decode_count(r);
    k.pos_inf = decode_count(r);
    k.neg_inf = decode_count(r);
    if (k.nan > k.n || k.pos_inf > k.n - k.nan || k.neg_inf > k.n - k.nan - k.pos_inf)
      throw CorruptData("bad numeric counts");
    return k;
  }
};

// The numeric states come in widths (kNumericRungWords); each width is its
// own State type with its own tag. The narrowest keeps the historic tags
// 11..14; rung r > 0 of family base b (11 sum, 12 min, 13 max, 14 moments)
// is tag 15 + 4 (r - 1) + (b - 11). Their encodings do not depend on the
// width (Decimal::encode), so a run written by a narrow table is read by a
// wider one, and a stored state names the width its records need.
constexpr uint8_t numeric_tag(uint8_t base, int rung) {
  return rung == 0 ? base : static_cast<uint8_t>(15 + 4 * (rung - 1) + (base - 11));
}
// The family (11..14) of a numeric state tag, or 0.
constexpr uint8_t numeric_family(uint8_t tag) {
  if (tag >= 11 && tag <= 14) return tag;
  if (tag >= 15 && tag < 15 + 4 * (kNumericRungs - 1)) return static_cast<uint8_t>(11 + (tag - 15) % 4);
  return 0;
}
constexpr int numeric_rung(uint8_t tag) { return tag <= 14 ? 0 : 1 + (tag - 15) / 4; }
template <int W>
constexpr int rung_of_words() {
  for (int r = 0; r < kNumericRungs; ++r)
    if (kNumericRungWords[r] == W) return r;
  return -1;
}

// SUM and AVG of numeric: exact sum of the finite values, a += b. add and
// merge are atomic: on StateOverflow the state is unchanged.
template <int W>
struct NumericSumT {
  static constexpr int kWords = W;
  static constexpr int kRung = rung_of_words<W>();
  static_assert(kRung >= 0, "a numeric state width is one of kNumericRungWords");
  static constexpr uint8_t kTag = numeric_tag(11, kRung);
  static constexpr size_t kMaxEncoded = 40 + DecimalT<W>::kMaxEncoded;
  NumericKinds kinds;
  DecimalT<W> sum;
  int64_t n = 0;  // = kinds.n, for the NULL test shared by every state

  template <int W2>
  static NumericSumT widen(const NumericSumT<W2>& o) {
    NumericSumT s;
    s.kinds = o.kinds;
    s.sum = DecimalT<W>::widen(o.sum);
    s.n = o.n;
    return s;
  }
  void add(const NumericValueT<W>& v) {
    if (v.kind == NumericValueT<W>::kFinite) sum.add(v.d);
    kinds.count(v.kind);
    n = kinds.n;
  }
  void merge(const NumericSumT& o) {
    sum.add(o.sum);
    kinds.merge(o.kinds);
    n = kinds.n;
  }
  void encode(Writer& w) const {
    kinds.encode(w);
    sum.encode(w);
  }
  static NumericSumT decode(Reader& r) {
    NumericSumT s;
    s.kinds = NumericKinds::decode(r);
    s.sum = DecimalT<W>::decode(r);
    s.n = s.kinds.n;
    return s;
  }
};

// MIN / MAX of numeric, in PostgreSQL's order (NaN above +Infinity). No
// arithmetic: only a value too wide for W needs a wider rung.
template <int W, bool kMax>
struct NumericExtremeT {
  static constexpr int kWords = W;
  static constexpr int kRung = rung_of_words<W>();
  static_assert(kRung >= 0, "a numeric state width is one of kNumericRungWords");
  static constexpr uint8_t kTag = numeric_tag(kMax ? 13 : 12, kRung);
  static constexpr size_t kMaxEncoded = 10 + NumericValueT<W>::kMaxEncoded;
  NumericValueT<W> v;
  int64_t n = 0;

  template <int W2>
  static NumericExtremeT widen(const NumericExtremeT<W2, kMax>& o) {
    NumericExtremeT e;
    e.v = NumericValueT<W>::widen(o.v);
    e.n = o.n;
    return e;
  }
  void add(const NumericValueT<W>& x) {
    // On a tie the later value wins (1.5 vs 1.50), as numeric_larger/_smaller.
    if (n == 0 || (kMax ? v.compare(x) <= 0 : x.compare(v) <= 0)) v = x;
    add_count(n, 1);
  }
  void merge(const NumericExtremeT& o) {
    if (o.n == 0) return;
    if (n == 0 || (kMax ? v.compare(o.v) <= 0 : o.v.compare(v) <= 0)) v = o.v;
    add_count(n, o.n);
  }
  void encode(Writer& w) const {
    w.varint(static_cast<uint64_t>(n));
    v.encode(w);
  }
  static NumericExtremeT decode(Reader& r) {
    NumericExtremeT e;
    e.n = decode_count(r);
    e.v = NumericValueT<W>::decode(r);
    return e;
  }
};
template <int W>
using NumericMinT = NumericExtremeT<W, false>;
template <int W>
using NumericMaxT = NumericExtremeT<W, true>;

// VARIANCE / STDDEV of numeric: exact (sum, sum of squares) of the finite
// values, a += b, as PostgreSQL's numeric accumulators. Atomic as NumericSumT.
template <int W>
struct NumericMomentsT {
  static constexpr int kWords = W;
  static constexpr int kRung = rung_of_words<W>();
  static_assert(kRung >= 0, "a numeric state width is one of kNumericRungWords");
  static constexpr uint8_t kTag = numeric_tag(14, kRung);
  static constexpr size_t kMaxEncoded = 40 + 2 * DecimalT<W>::kMaxEncoded;
  NumericKinds kinds;
  DecimalT<W> sum, sumsq;
  int64_t n = 0;

  template <int W2>
  static NumericMomentsT widen(const NumericMomentsT<W2>& o) {
    NumericMomentsT m;
    m.kinds = o.kinds;
    m.sum = DecimalT<W>::widen(o.sum);
    m.sumsq = DecimalT<W>::widen(o.sumsq);
    m.n = o.n;
    return m;
  }
  void add(const NumericValueT<W>& v) {
    if (v.kind == NumericValueT<W>::kFinite) {
      DecimalT<W> sq = DecimalT<W>::product(v.d, v.d);
      DecimalT<W> s = sum;
      s.add(v.d);
      sumsq.add(sq);  // the last step that can fail
      sum = s;
    }
    kinds.count(v.kind);
    n = kinds.n;
  }
  void merge(const NumericMomentsT& o) {
    DecimalT<W> s = sum;
    s.add(o.sum);
    sumsq.add(o.sumsq);
    sum = s;
    kinds.merge(o.kinds);
    n = kinds.n;
  }
  void encode(Writer& w) const {
    kinds.encode(w);
    sum.encode(w);
    sumsq.encode(w);
  }
  static NumericMomentsT decode(Reader& r) {
    NumericMomentsT m;
    m.kinds = NumericKinds::decode(r);
    m.sum = DecimalT<W>::decode(r);
    m.sumsq = DecimalT<W>::decode(r);
    m.n = m.kinds.n;
    return m;
  }
};

// The narrow rung under its historic names.
using NumericSum = NumericSumT<kNumericRungWords[0]>;
template <bool kMax>
using NumericExtreme = NumericExtremeT<kNumericRungWords[0], kMax>;
using NumericMoments = NumericMomentsT<kNumericRungWords[0]>;

// Numeric states that a wider rung can take over when they overflow, and
// that wider state.
template <class S, class = void>
struct Widens : std::false_type {};
template <class S>
struct Widens<S, std::void_t<decltype(S::kRung)>> : std::bool_constant<(S::kRung + 1 < kNumericRungs)> {};
template <class S>
struct WiderOf;
template <int W>
struct WiderOf<NumericSumT<W>> {
  using type = NumericSumT<kNumericRungWords[NumericSumT<W>::kRung + 1]>;
};
template <int W, bool kMax>
struct WiderOf<NumericExtremeT<W, kMax>> {
  using type = NumericExtremeT<kNumericRungWords[NumericExtremeT<W, kMax>::kRung + 1], kMax>;
};
template <int W>
struct WiderOf<NumericMomentsT<W>> {
  using type = NumericMomentsT<kNumericRungWords[NumericMomentsT<W>::kRung + 1]>;
};

// Decimal text of 128/192-bit integers, for the final functions. Writes a
// NUL-terminated string of at most 60 characters into out; never throws.
constexpr size_t kDecimalBuf = 64;
void to_decimal(__int128 v, char (&out)[kDecimalBuf]);
void to_decimal(const U192& v, char (&out)[kDecimalBuf]);

}  // namespace spillagg
