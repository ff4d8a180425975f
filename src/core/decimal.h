// Exact fixed-point decimals for numeric values: mantissa * 10^-scale with
// a 512-bit two's complement mantissa (about 154 significant digits). Sums
// keep the largest scale seen, as PostgreSQL's numeric addition does.
// Anything that would not fit throws std::overflow_error (an ERROR, never a
// wrong or saturated result).
#pragma once

#include <cstdint>
#include <cstring>
#include <stdexcept>

#include "codec.h"

namespace spillagg {

struct Decimal {
  static constexpr int kWords = 8;
  uint64_t w[kWords] = {0, 0, 0, 0, 0, 0, 0, 0};  // little-endian words
  int32_t scale = 0;

  bool negative() const { return w[kWords - 1] >> 63; }
  bool is_zero() const {
    for (uint64_t x : w)
      if (x) return false;
    return true;
  }

  // From PostgreSQL's numeric layout: base-10000 digits, weight of the
  // first digit, display scale, sign. Pure arithmetic, no PostgreSQL types.
  static Decimal from_base10000(const int16_t* digits, int ndigits, int weight, int dscale,
                                bool negative);

  void add(const Decimal& o) {
    Decimal b = o;
    if (b.scale < scale) b.rescale(scale);
    else if (b.scale > scale) rescale(b.scale);
    bool sa = negative(), sb = b.negative();
    unsigned __int128 c = 0;
    for (int i = 0; i < kWords; ++i) {
      c += static_cast<unsigned __int128>(w[i]) + b.w[i];
      w[i] = static_cast<uint64_t>(c);
      c >>= 64;
    }
    if (sa == sb && negative() != sa) throw std::overflow_error("numeric value out of range for spillagg");
  }

  // Exact product (scale a.scale + b.scale).
  static Decimal product(const Decimal& a, const Decimal& b);

  int compare(const Decimal& o) const {
    Decimal a = *this, b = o;
    if (a.scale < b.scale) a.rescale(b.scale);
    else if (b.scale < a.scale) b.rescale(a.scale);
    if (a.negative() != b.negative()) return a.negative() ? -1 : 1;
    for (int i = kWords - 1; i >= 0; --i)
      if (a.w[i] != b.w[i]) return a.w[i] < b.w[i] ? -1 : 1;
    return 0;
  }

  // Multiplies by 10^(s - scale), s >= scale.
  void rescale(int32_t s);

  // "-123.4500": exactly `scale` digits after the point, NUL-terminated,
  // into out[text_size()]. Never throws.
  size_t text_size() const { return static_cast<size_t>(scale) + 164; }
  void to_text(char* out) const;

  void encode(Writer& wr) const {
    wr.svarint(scale);
    int n = kWords;
    uint64_t fill = negative() ? ~0ULL : 0;
    while (n > 1 && w[n - 1] == fill && ((w[n - 2] >> 63) == (fill >> 63))) --n;
    wr.varint(static_cast<uint64_t>(n));
    for (int i = 0; i < n; ++i) wr.fixed(w[i]);
  }
  static Decimal decode(Reader& r) {
    Decimal d;
    int64_t s = r.svarint();
    uint64_t n = r.varint();
    if (s < 0 || s > 16383 || n == 0 || n > kWords) throw CorruptData("bad decimal");
    d.scale = static_cast<int32_t>(s);
    for (uint64_t i = 0; i < n; ++i) d.w[i] = r.fixed<uint64_t>();
    uint64_t fill = (d.w[n - 1] >> 63) ? ~0ULL : 0;
    for (uint64_t i = n; i < kWords; ++i) d.w[i] = fill;
    return d;
  }

 private:
  void negate();
  bool mul_small(uint64_t m);  // magnitude * m; false on overflow
};

// A numeric value as PostgreSQL orders them: -Infinity < finite < Infinity < NaN.
struct NumericValue {
  enum Kind : uint8_t { kNegInf = 0, kFinite = 1, kPosInf = 2, kNaN = 3 };
  Decimal d;
  uint8_t kind = kFinite;

  int compare(const NumericValue& o) const {
    if (kind != o.kind) return kind < o.kind ? -1 : 1;
    return kind == kFinite ? d.compare(o.d) : 0;
  }
  void encode(Writer& w) const {
    w.fixed(kind);
    if (kind == kFinite) d.encode(w);
  }
  static NumericValue decode(Reader& r) {
    NumericValue v;
    v.kind = r.fixed<uint8_t>();
    if (v.kind > kNaN) throw CorruptData("bad numeric kind");
    if (v.kind == kFinite) v.d = Decimal::decode(r);
    return v;
  }
};

}  // namespace spillagg
