// Independent reference for decimal.h: exact decimal arithmetic on digit
// strings (schoolbook add/sub/mul), PostgreSQL's base-10000 packing of a
// decimal literal, and conversions to and from spillagg::Decimal through
// text only. Nothing here uses the core's arithmetic.
#pragma once

#include <gtest/gtest.h>

#include <algorithm>
#include <cstdint>
#include <random>
#include <stdexcept>
#include <string>
#include <vector>

#include "decimal.h"

namespace decimal_ref {

// ------------------------------------------------ unsigned digit strings

inline std::string norm(const std::string& s) {
  size_t i = s.find_first_not_of('0');
  return i == std::string::npos ? "0" : s.substr(i);
}

inline int cmp_mag(const std::string& a0, const std::string& b0) {
  std::string a = norm(a0), b = norm(b0);
  if (a.size() != b.size()) return a.size() < b.size() ? -1 : 1;
  return a < b ? -1 : a > b ? 1 : 0;
}

inline std::string add_mag(const std::string& a, const std::string& b) {
  std::string r;
  int carry = 0;
  for (size_t i = 0; i < std::max(a.size(), b.size()) || carry; ++i) {
    int d = carry;
    if (i < a.size()) d += a[a.size() - 1 - i] - '0';
    if (i < b.size()) d += b[b.size() - 1 - i] - '0';
    r.push_back(static_cast<char>('0' + d % 10));
    carry = d / 10;
  }
  std::reverse(r.begin(), r.end());
  return norm(r);
}

// a - b for a >= b.
inline std::string sub_mag(const std::string& a, const std::string& b) {
  std::string r;
  int borrow = 0;
  for (size_t i = 0; i < a.size(); ++i) {
    int d = (a[a.size() - 1 - i] - '0') - borrow - (i < b.size() ? b[b.size() - 1 - i] - '0' : 0);
    borrow = d < 0;
    r.push_back(static_cast<char>('0' + (d + 10) % 10));
  }
  std::reverse(r.begin(), r.end());
  return norm(r);
}

inline std::string mul_mag(const std::string& a, const std::string& b) {
  std::vector<int> r(a.size() + b.size(), 0);
  for (size_t i = 0; i < a.size(); ++i)
    for (size_t j = 0; j < b.size(); ++j) r[i + j + 1] += (a[i] - '0') * (b[j] - '0');
  for (size_t k = r.size() - 1; k > 0; --k) {
    r[k - 1] += r[k] / 10;
    r[k] %= 10;
  }
  std::string s;
  for (int d : r) s.push_back(static_cast<char>('0' + d));
  return norm(s);
}

inline std::string pow2(int n) {
  std::string s = "1";
  for (int i = 0; i < n; ++i) s = add_mag(s, s);
  return s;
}

inline std::string pow10(int n) { return "1" + std::string(static_cast<size_t>(n), '0'); }

// ------------------------------------------------------- signed decimals

struct Num {
  bool neg = false;
  std::string mag = "0";  // the integer mantissa, value = mag * 10^-scale
  int scale = 0;
};

inline Num make(bool neg, const std::string& mag, int scale) {
  Num n;
  n.mag = norm(mag);
  n.neg = neg && n.mag != "0";
  n.scale = scale;
  return n;
}

// "-123.4500" -> {true, "1234500", 4}
inline Num parse(const std::string& text) {
  size_t i = 0;
  bool neg = false;
  if (text[i] == '-' || text[i] == '+') neg = text[i++] == '-';
  size_t dot = text.find('.', i);
  std::string ip = text.substr(i, dot == std::string::npos ? std::string::npos : dot - i);
  std::string fp = dot == std::string::npos ? "" : text.substr(dot + 1);
  return make(neg, ip + fp, static_cast<int>(fp.size()));
}

// Exactly `scale` digits after the point, at least one before, '-' if < 0.
inline std::string text(const Num& n) {
  std::string m = n.mag;
  if (static_cast<int>(m.size()) <= n.scale) m.insert(0, static_cast<size_t>(n.scale) + 1 - m.size(), '0');
  if (n.scale > 0) m.insert(m.size() - static_cast<size_t>(n.scale), ".");
  return (n.neg ? "-" : "") + m;
}

inline Num rescale(Num n, int s) {
  if (s > n.scale && n.mag != "0") n.mag += std::string(static_cast<size_t>(s - n.scale), '0');
  n.scale = std::max(s, n.scale);
  return n;
}

inline Num add(Num a, Num b) {
  int s = std::max(a.scale, b.scale);
  a = rescale(a, s);
  b = rescale(b, s);
  if (a.neg == b.neg) return make(a.neg, add_mag(a.mag, b.mag), s);
  int c = cmp_mag(a.mag, b.mag);
  if (c >= 0) return make(a.neg, sub_mag(a.mag, b.mag), s);
  return make(b.neg, sub_mag(b.mag, a.mag), s);
}

inline Num mul(const Num& a, const Num& b) { return make(a.neg != b.neg, mul_mag(a.mag, b.mag), a.scale + b.scale); }

inline int cmp(Num a, Num b) {
  int s = std::max(a.scale, b.scale);
  a = rescale(a, s);
  b = rescale(b, s);
  if (a.neg != b.neg) return a.neg ? -1 : 1;
  int c = cmp_mag(a.mag, b.mag);
  return a.neg ? -c : c;
}

// ------------------------------------------ PostgreSQL's numeric packing

struct Packed {
  std::vector<int16_t> digits;  // base 10000, most significant first
  int weight = 0;               // of digits[0], in powers of 10000
  int dscale = 0;
  bool neg = false;
};

// A decimal literal as PostgreSQL's numeric stores it: dscale = digits
// written after the point; integer digits grouped by 4 leftwards from the
// point, fraction digits by 4 rightwards (zero-padded); leading and trailing
// zero groups stripped; zero has no digits, weight 0 and is never negative.
inline Packed pack(const std::string& literal) {
  Num n = parse(literal);
  Packed p;
  p.dscale = n.scale;
  std::string t = text(make(false, n.mag, n.scale));
  size_t dot = t.find('.');
  std::string ip = norm(t.substr(0, dot));
  std::string fp = dot == std::string::npos ? "" : t.substr(dot + 1);
  if (ip == "0") ip.clear();
  ip.insert(0, (4 - ip.size() % 4) % 4, '0');
  fp.append((4 - fp.size() % 4) % 4, '0');
  std::vector<int16_t> g;
  for (size_t i = 0; i < ip.size(); i += 4) g.push_back(static_cast<int16_t>(std::stoi(ip.substr(i, 4))));
  for (size_t i = 0; i < fp.size(); i += 4) g.push_back(static_cast<int16_t>(std::stoi(fp.substr(i, 4))));
  int weight = static_cast<int>(ip.size() / 4) - 1;
  size_t first = 0;
  while (first < g.size() && g[first] == 0) {
    ++first;
    --weight;
  }
  size_t last = g.size();
  while (last > first && g[last - 1] == 0) --last;
  if (first == last) return p;  // zero
  p.digits.assign(g.begin() + static_cast<long>(first), g.begin() + static_cast<long>(last));
  p.weight = weight;
  p.neg = n.neg;
  return p;
}

inline spillagg::Decimal from_packed(const Packed& p) {
  return spillagg::Decimal::from_base10000(p.digits.data(), static_cast<int>(p.digits.size()), p.weight, p.dscale,
                                           p.neg);
}

// A Decimal from a literal, through PostgreSQL's packing.
inline spillagg::Decimal dec(const std::string& literal) { return from_packed(pack(literal)); }

// Decimal::to_text into a buffer of exactly text_size() bytes (so ASan sees
// any overrun), checked to be NUL-terminated within it.
inline std::string str(const spillagg::Decimal& d) {
  std::vector<char> buf(d.text_size(), '\x7f');
  d.to_text(buf.data());
  auto end = std::find(buf.begin(), buf.end(), '\0');
  EXPECT_NE(end, buf.end()) << "to_text wrote no NUL within text_size()";
  return std::string(buf.begin(), end);
}

// Random literal: up to int_digits digits before the point, up to
// frac_digits after, random sign; sometimes with leading fraction zeros.
template <class Rng>
std::string random_literal(Rng& rng, int int_digits, int frac_digits) {
  std::string s;
  if (rng() & 1) s += '-';
  int ni = static_cast<int>(rng() % static_cast<uint64_t>(int_digits + 1));
  if (ni == 0) s += '0';
  for (int i = 0; i < ni; ++i) s += static_cast<char>('0' + (i == 0 ? 1 + rng() % 9 : rng() % 10));
  int nf = static_cast<int>(rng() % static_cast<uint64_t>(frac_digits + 1));
  if (nf) {
    s += '.';
    int zeros = (rng() % 4 == 0) ? static_cast<int>(rng() % static_cast<uint64_t>(nf + 1)) : 0;
    for (int i = 0; i < nf; ++i) s += static_cast<char>('0' + (i < zeros ? 0 : rng() % 10));
  }
  return s;
}

}  // namespace decimal_ref
