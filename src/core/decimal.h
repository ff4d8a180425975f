// Exact fixed-point decimals for numeric values: mantissa * 10^-scale with
// a two's complement mantissa of W 64-bit words. Sums keep the largest scale
// seen, as PostgreSQL's numeric addition does.
//
// The width is a template parameter so that numeric states can start narrow
// (8 words, about 154 significant digits: the common case, fixed-size table
// slots) and escalate to wider rungs when a value or a result does not fit
// (kNumericRungWords). The widest rung holds every value of PostgreSQL's
// numeric range (131072 digits before the point, 16383 after) with room for
// 2^63 of them to be summed.
//
// Anything that would not fit throws StateOverflow (an std::overflow_error):
// the caller escalates to a wider rung, or, at the widest, it is an ERROR
// (22003) -- never a wrong or saturated result. add() and rescale-into-copy
// operations are atomic: on overflow the target is unchanged.
//
// The encoding (scale, word count, words) trims the sign-extension words, so
// it does not depend on W: a narrow encoding is read by a wider decoder.
#pragma once

#include <cstdint>
#include <cstring>
#include <stdexcept>

#include "codec.h"

namespace spillagg {

// A state's value outgrew its representation; a wider State may hold it.
class StateOverflow : public std::overflow_error {
 public:
  using std::overflow_error::overflow_error;
};

inline constexpr uint64_t kPow10[20] = {1ULL,
                                        10ULL,
                                        100ULL,
                                        1000ULL,
                                        10000ULL,
                                        100000ULL,
                                        1000000ULL,
                                        10000000ULL,
                                        100000000ULL,
                                        1000000000ULL,
                                        10000000000ULL,
                                        100000000000ULL,
                                        1000000000000ULL,
                                        10000000000000ULL,
                                        100000000000000ULL,
                                        1000000000000000ULL,
                                        10000000000000000ULL,
                                        100000000000000000ULL,
                                        1000000000000000000ULL,
                                        10000000000000000000ULL};

// The rungs of the numeric states: 8 words (~154 digits), 128 words (~2466
// digits, so squares of 1000-digit values still fit), 7680 words (~147,900
// digits: numeric's whole range, 131072 + 16383 digits, plus 63 bits for
// the count of summed values).
constexpr int kNumericRungs = 3;
constexpr int kNumericRungWords[kNumericRungs] = {8, 128, 7680};
// A sum of squares has twice its values' scale.
constexpr int32_t kMaxDecimalScale = 2 * 16383;

[[noreturn]] inline void decimal_overflow() { throw StateOverflow("numeric value out of range for spillagg"); }

template <int W>
struct DecimalT {
  static constexpr int kWords = W;
  uint64_t w[W] = {};  // little-endian words
  int32_t scale = 0;

  bool negative() const { return w[W - 1] >> 63; }
  bool is_zero() const {
    for (uint64_t x : w)
      if (x) return false;
    return true;
  }
  // Words holding the value (the rest are its sign extension); at least 1.
  int used_words() const {
    int n = W;
    uint64_t fill = negative() ? ~0ULL : 0;
    while (n > 1 && w[n - 1] == fill && ((w[n - 2] >> 63) == (fill >> 63))) --n;
    return n;
  }

  static DecimalT from_int(int64_t v) {
    DecimalT d;
    d.w[0] = static_cast<uint64_t>(v);
    if (v < 0)
      for (int i = 1; i < W; ++i) d.w[i] = ~0ULL;
    return d;
  }

  // The same value in a wider (or equal) width.
  template <int W2>
  static DecimalT widen(const DecimalT<W2>& o) {
    static_assert(W2 <= W, "widen only");
    DecimalT d;
    std::memcpy(d.w, o.w, sizeof o.w);
    uint64_t fill = o.negative() ? ~0ULL : 0;
    for (int i = W2; i < W; ++i) d.w[i] = fill;
    d.scale = o.scale;
    return d;
  }

  // From PostgreSQL's numeric layout: base-10000 digits, weight of the
  // first digit, display scale, sign. Pure arithmetic, no PostgreSQL types.
  static DecimalT from_base10000(const int16_t* digits, int ndigits, int weight, int dscale, bool negative);

  // Atomic: on overflow (StateOverflow) *this is unchanged.
  void add(const DecimalT& o) {
    if (o.scale == scale) return add_same_scale(o);
    if (o.scale < scale) {
      DecimalT b = o;
      b.rescale(scale);
      return add_same_scale(b);
    }
    DecimalT a = *this;
    a.rescale(o.scale);
    a.add_same_scale(o);
    *this = a;
  }

  void negate() {
    unsigned __int128 c = 1;
    for (int i = 0; i < W; ++i) {
      c += static_cast<uint64_t>(~w[i]);
      w[i] = static_cast<uint64_t>(c);
      c >>= 64;
    }
  }

  // Exact product (scale a.scale + b.scale).
  static DecimalT product(const DecimalT& a, const DecimalT& b);

  // Never throws: when bringing one operand to the other's scale would not
  // fit, that operand's magnitude exceeds anything representable, so its
  // sign decides (1e100 vs 1e-100 in 8 words).
  int compare(const DecimalT& o) const {
    if (scale == o.scale) return compare_same_scale(*this, o);
    const DecimalT& lo = scale < o.scale ? *this : o;  // the one to rescale
    const DecimalT& hi = scale < o.scale ? o : *this;
    int sign = scale < o.scale ? 1 : -1;  // compare(lo', hi) * sign
    DecimalT l = lo;
    if (!l.try_rescale(hi.scale)) return (lo.negative() ? -1 : 1) * sign;
    return compare_same_scale(l, hi) * sign;
  }

  // Multiplies by 10^(s - scale), s >= scale. On overflow (StateOverflow)
  // *this is left unspecified: rescale a copy where that matters.
  void rescale(int32_t s) {
    if (!try_rescale(s)) decimal_overflow();
  }
  bool try_rescale(int32_t s) {
    bool neg = negative();
    if (neg) negate();
    bool ok = true;
    for (int32_t k = s - scale; k > 0 && ok; k -= 19) ok = mul_add_small(kPow10[k > 19 ? 19 : k], 0);
    if (neg) negate();
    if (ok) scale = s;
    return ok;
  }

  // Divides by 10^(scale - s), s <= scale, truncating toward zero.
  void truncate_scale(int32_t s);

  // "-123.4500": exactly `scale` digits after the point, NUL-terminated,
  // into out[text_size()]. Never throws.
  size_t text_size() const { return static_cast<size_t>(scale) + 20 * static_cast<size_t>(W) + 4; }
  void to_text(char* out) const;

  void encode(Writer& wr) const {
    wr.svarint(scale);
    int n = used_words();
    wr.varint(static_cast<uint64_t>(n));
    for (int i = 0; i < n; ++i) wr.fixed(w[i]);
  }
  static constexpr size_t kMaxEncoded = 5 + 5 + 8 * static_cast<size_t>(W);
  // Reads an encoding of any width up to W.
  static DecimalT decode(Reader& r) {
    DecimalT d;
    int64_t s = r.svarint();
    uint64_t n = r.varint();
    if (s < 0 || s > kMaxDecimalScale || n == 0 || n > static_cast<uint64_t>(kNumericRungWords[kNumericRungs - 1]))
      throw CorruptData("bad decimal");
    if (n > static_cast<uint64_t>(W)) throw CorruptData("decimal wider than its state");
    d.scale = static_cast<int32_t>(s);
    for (uint64_t i = 0; i < n; ++i) d.w[i] = r.fixed<uint64_t>();
    uint64_t fill = (d.w[n - 1] >> 63) ? ~0ULL : 0;
    for (uint64_t i = n; i < static_cast<uint64_t>(W); ++i) d.w[i] = fill;
    return d;
  }

 private:
  static int compare_same_scale(const DecimalT& a, const DecimalT& b) {
    if (a.negative() != b.negative()) return a.negative() ? -1 : 1;
    for (int i = W - 1; i >= 0; --i)
      if (a.w[i] != b.w[i]) return a.w[i] < b.w[i] ? -1 : 1;
    return 0;
  }
  // In place; on overflow the addition is undone before throwing.
  void add_same_scale(const DecimalT& b) {
    if (&b == this) {  // x.add(x): b must not change under the loop
      DecimalT copy = b;
      return add_same_scale(copy);
    }
    bool sa = negative(), sb = b.negative();
    unsigned __int128 c = 0;
    for (int i = 0; i < W; ++i) {
      c += static_cast<unsigned __int128>(w[i]) + b.w[i];
      w[i] = static_cast<uint64_t>(c);
      c >>= 64;
    }
    if (sa == sb && negative() != sa) {
      unsigned __int128 borrow = 0;  // subtract b back (exact modulo 2^(64W))
      for (int i = 0; i < W; ++i) {
        unsigned __int128 x = static_cast<unsigned __int128>(w[i]) - b.w[i] - borrow;
        w[i] = static_cast<uint64_t>(x);
        borrow = (x >> 64) ? 1 : 0;
      }
      decimal_overflow();
    }
  }
  // Highest nonzero word + 1 of a non-negative mantissa (0 for zero).
  int top_words() const {
    int n = W;
    while (n > 0 && w[n - 1] == 0) --n;
    return n;
  }
  // Non-negative mantissa * m + a; false (and garbage) on overflow.
  bool mul_add_small(uint64_t m, uint64_t a) {
    int n = top_words();
    unsigned __int128 c = a;
    for (int i = 0; i < n; ++i) {
      c += static_cast<unsigned __int128>(w[i]) * m;
      w[i] = static_cast<uint64_t>(c);
      c >>= 64;
    }
    if (c) {
      if (n == W) return false;
      w[n] = static_cast<uint64_t>(c);
    }
    return !negative();
  }
  // Non-negative mantissa / m; returns the remainder.
  uint64_t div_small(uint64_t m, int n) {
    unsigned __int128 rem = 0;
    for (int i = n - 1; i >= 0; --i) {
      unsigned __int128 cur = (rem << 64) | w[i];
      w[i] = static_cast<uint64_t>(cur / m);
      rem = cur % m;
    }
    return static_cast<uint64_t>(rem);
  }

  template <int>
  friend struct DecimalT;
};

using Decimal = DecimalT<8>;

template <int W>
DecimalT<W> DecimalT<W>::from_base10000(const int16_t* digits, int ndigits, int weight, int dscale, bool neg) {
  // value = sum d[i] * 10000^(weight - i); accumulate the integer
  // digits * 10000^(ndigits - 1 - i), whose scale is 4 * (ndigits - 1 - weight).
  DecimalT d;
  int32_t s = ndigits == 0 ? 0 : 4 * (ndigits - 1 - weight);
  // Decimal digits of the last group past dscale are zeros: leave them out
  // while accumulating, so the intermediate is no larger than the result.
  int drop = s > dscale && s - dscale < 4 ? s - dscale : 0;
  int i = 0;
  // Four base-10000 digits at a time (10^16 < 2^64), the last one alone.
  for (; i + 4 < ndigits; i += 4) {
    uint64_t chunk = 0;
    for (int j = 0; j < 4; ++j) chunk = chunk * 10000 + static_cast<uint16_t>(digits[i + j]);
    if (!d.mul_add_small(10000000000000000ULL, chunk)) decimal_overflow();
  }
  for (; i < ndigits; ++i) {
    bool last = i == ndigits - 1;
    uint64_t digit = static_cast<uint16_t>(digits[i]) / (last ? kPow10[drop] : 1);
    if (!d.mul_add_small(last ? kPow10[4 - drop] : 10000, digit)) decimal_overflow();
  }
  s -= drop;
  d.scale = s;
  if (s < dscale) {  // also when s < 0: the digits end before the point
    d.rescale(dscale);
  } else if (s > dscale) {
    // Digits past dscale are zeros in PostgreSQL's packed form; drop them.
    d.truncate_scale(dscale);
  }
  if (neg) d.negate();
  return d;
}

template <int W>
void DecimalT<W>::truncate_scale(int32_t s) {
  bool neg = negative();
  if (neg) negate();
  for (int32_t k = scale - s; k > 0; k -= 19) div_small(kPow10[k > 19 ? 19 : k], top_words());
  scale = s;
  if (neg) negate();
}

template <int W>
DecimalT<W> DecimalT<W>::product(const DecimalT& a, const DecimalT& b) {
  DecimalT x = a, y = b;
  bool neg = x.negative() != y.negative();
  if (x.negative()) x.negate();
  if (y.negative()) y.negate();
  int nx = x.top_words(), ny = y.top_words();
  DecimalT p;
  if (nx + ny > W + 1) decimal_overflow();  // at least 2^(64(nx+ny-2)) >= 2^(64W)
  for (int i = 0; i < nx; ++i) {
    unsigned __int128 c = 0;
    for (int j = 0; j < ny; ++j) {
      if (i + j >= W) {
        if (static_cast<unsigned __int128>(x.w[i]) * y.w[j] + c) decimal_overflow();
        continue;
      }
      c += static_cast<unsigned __int128>(x.w[i]) * y.w[j] + p.w[i + j];
      p.w[i + j] = static_cast<uint64_t>(c);
      c >>= 64;
    }
    if (c) {
      if (i + ny >= W) decimal_overflow();
      p.w[i + ny] = static_cast<uint64_t>(c);  // still zero: row i writes it first
    }
  }
  if (p.negative()) decimal_overflow();
  p.scale = a.scale + b.scale;
  if (neg) p.negate();
  return p;
}

template <int W>
void DecimalT<W>::to_text(char* out) const {
  DecimalT m = *this;
  bool neg = m.negative();
  if (neg) m.negate();
  // Digits, least significant first, 19 at a time.
  size_t n = 0;
  int top = m.top_words();
  do {
    uint64_t rem = m.div_small(kPow10[19], top);
    while (top > 0 && m.w[top - 1] == 0) --top;
    if (top == 0) {
      do {
        out[n++] = static_cast<char>('0' + rem % 10);
        rem /= 10;
      } while (rem);
      break;
    }
    for (int k = 0; k < 19; ++k, rem /= 10) out[n++] = static_cast<char>('0' + rem % 10);
  } while (true);
  for (size_t i = 0, j = n - 1; i < j; ++i, --j) std::swap(out[i], out[j]);  // most significant first
  size_t frac = static_cast<size_t>(scale);
  size_t o = neg ? 1 : 0;
  if (n > frac) {
    size_t ints = n - frac;
    if (frac > 0) {
      std::memmove(out + o + ints + 1, out + ints, frac);
      std::memmove(out + o, out, ints);
      out[o + ints] = '.';
    } else if (o) {
      std::memmove(out + o, out, ints);
    }
    out[o + ints + (frac > 0 ? 1 + frac : 0)] = '\0';
  } else {  // 0.000ddd
    std::memmove(out + o + 2 + (frac - n), out, n);
    out[o] = '0';
    out[o + 1] = '.';
    std::memset(out + o + 2, '0', frac - n);
    out[o + 2 + frac] = '\0';
  }
  if (neg) out[0] = '-';
}

// A numeric value as PostgreSQL orders them: -Infinity < finite < Infinity < NaN.
template <int W>
struct NumericValueT {
  enum Kind : uint8_t { kNegInf = 0, kFinite = 1, kPosInf = 2, kNaN = 3 };
  DecimalT<W> d;
  uint8_t kind = kFinite;

  template <int W2>
  static NumericValueT widen(const NumericValueT<W2>& o) {
    NumericValueT v;
    v.d = DecimalT<W>::widen(o.d);
    v.kind = o.kind;
    return v;
  }
  int compare(const NumericValueT& o) const {
    if (kind != o.kind) return kind < o.kind ? -1 : 1;
    return kind == kFinite ? d.compare(o.d) : 0;
  }
  void encode(Writer& w) const {
    w.fixed(kind);
    if (kind == kFinite) d.encode(w);
  }
  static constexpr size_t kMaxEncoded = 1 + DecimalT<W>::kMaxEncoded;
  static NumericValueT decode(Reader& r) {
    NumericValueT v;
    v.kind = r.fixed<uint8_t>();
    if (v.kind > kNaN) throw CorruptData("bad numeric kind");
    if (v.kind == kFinite) v.d = DecimalT<W>::decode(r);
    return v;
  }
};

using NumericValue = NumericValueT<8>;

extern template struct DecimalT<8>;
extern template struct DecimalT<128>;
extern template struct DecimalT<7680>;

}  // namespace spillagg
