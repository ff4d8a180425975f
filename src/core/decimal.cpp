#include "decimal.h"

namespace spillagg {

namespace {

const uint64_t kPow10[] = {1ULL, 10ULL, 100ULL, 1000ULL, 10000ULL, 100000ULL, 1000000ULL, 10000000ULL,
                           100000000ULL, 1000000000ULL, 10000000000ULL, 100000000000ULL,
                           1000000000000ULL, 10000000000000ULL, 100000000000000ULL,
                           1000000000000000ULL, 10000000000000000ULL, 100000000000000000ULL,
                           1000000000000000000ULL, 10000000000000000000ULL};

[[noreturn]] void out_of_range() { throw std::overflow_error("numeric value out of range for spillagg"); }

}  // namespace

void Decimal::negate() {
  unsigned __int128 c = 1;
  for (int i = 0; i < kWords; ++i) {
    c += static_cast<uint64_t>(~w[i]);
    w[i] = static_cast<uint64_t>(c);
    c >>= 64;
  }
}

bool Decimal::mul_small(uint64_t m) {
  bool neg = negative();
  if (neg) negate();
  unsigned __int128 c = 0;
  for (int i = 0; i < kWords; ++i) {
    c += static_cast<unsigned __int128>(w[i]) * m;
    w[i] = static_cast<uint64_t>(c);
    c >>= 64;
  }
  bool ok = c == 0 && !negative();
  if (neg) negate();
  return ok;
}

void Decimal::rescale(int32_t s) {
  for (int32_t k = s - scale; k > 0; k -= 19)
    if (!mul_small(kPow10[k > 19 ? 19 : k])) out_of_range();
  scale = s;
}

Decimal Decimal::from_base10000(const int16_t* digits, int ndigits, int weight, int dscale,
                                bool neg) {
  // value = sum d[i] * 10000^(weight - i); accumulate the integer
  // digits * 10000^(ndigits - 1 - i), whose scale is 4 * (ndigits - 1 - weight).
  Decimal d;
  int32_t s = ndigits == 0 ? 0 : 4 * (ndigits - 1 - weight);
  // Decimal digits of the last group past dscale are zeros: leave them out
  // while accumulating, so the intermediate is no larger than the result.
  int drop = s > dscale && s - dscale < 4 ? s - dscale : 0;
  for (int i = 0; i < ndigits; ++i) {
    bool last = i == ndigits - 1;
    if (!d.mul_small(last ? kPow10[4 - drop] : 10000)) out_of_range();
    Decimal digit;
    digit.w[0] = static_cast<uint64_t>(digits[i]) / (last ? kPow10[drop] : 1);
    d.add(digit);
  }
  s -= drop;
  d.scale = s;
  if (s < dscale) {  // also when s < 0: the digits end before the point
    d.rescale(dscale);
  } else {
    // Digits past dscale are zeros in PostgreSQL's packed form; drop them.
    for (; d.scale > dscale; --d.scale) {
      unsigned __int128 rem = 0;
      for (int i = kWords - 1; i >= 0; --i) {
        unsigned __int128 cur = (rem << 64) | d.w[i];
        d.w[i] = static_cast<uint64_t>(cur / 10);
        rem = cur % 10;
      }
    }
  }
  if (neg) d.negate();
  return d;
}

Decimal Decimal::product(const Decimal& a, const Decimal& b) {
  Decimal x = a, y = b;
  bool neg = x.negative() != y.negative();
  if (x.negative()) x.negate();
  if (y.negative()) y.negate();
  uint64_t r[2 * kWords] = {0};
  for (int i = 0; i < kWords; ++i) {
    unsigned __int128 c = 0;
    for (int j = 0; j < kWords; ++j) {
      c += static_cast<unsigned __int128>(x.w[i]) * y.w[j] + r[i + j];
      r[i + j] = static_cast<uint64_t>(c);
      c >>= 64;
    }
    r[i + kWords] = static_cast<uint64_t>(c);
  }
  for (int i = kWords; i < 2 * kWords; ++i)
    if (r[i]) out_of_range();
  Decimal p;
  std::memcpy(p.w, r, sizeof p.w);
  if (p.negative()) out_of_range();
  p.scale = a.scale + b.scale;
  if (neg) p.negate();
  return p;
}

void Decimal::to_text(char* out) const {
  Decimal m = *this;
  bool neg = m.negative();
  if (neg) m.negate();
  char rev[160];  // 2^511 has 154 digits
  size_t n = 0;
  bool nonzero;
  do {
    unsigned __int128 rem = 0;
    nonzero = false;
    for (int i = kWords - 1; i >= 0; --i) {
      unsigned __int128 cur = (rem << 64) | m.w[i];
      m.w[i] = static_cast<uint64_t>(cur / 10);
      rem = cur % 10;
      nonzero |= m.w[i] != 0;
    }
    rev[n++] = static_cast<char>('0' + static_cast<int>(rem));
  } while (nonzero);
  size_t frac = static_cast<size_t>(scale);
  size_t total = n > frac ? n : frac + 1;  // at least one digit before the point
  size_t o = 0;
  if (neg) out[o++] = '-';
  for (size_t i = total; i > 0; --i) {
    if (i == frac && frac > 0) out[o++] = '.';
    out[o++] = i - 1 < n ? rev[i - 1] : '0';
  }
  out[o] = '\0';
}

}  // namespace spillagg
