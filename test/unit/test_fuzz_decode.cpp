// Bounded mutation fuzzing of every decoder that reads bytes from outside:
// spill-run / serialized-state records (read_run_record) for every State,
// including Decimal. Under `make asan` this proves no out-of-bounds read,
// no crash and no hang on corrupt input: each attempt either decodes or
// throws one of the core's exceptions.
#include <gtest/gtest.h>

#include <cstdint>
#include <random>
#include <stdexcept>
#include <vector>

#include "spilling_table.h"
#include "states.h"
#include "test_support.h"

using namespace spillagg;

namespace {

Decimal random_decimal(std::mt19937_64& rng) {
  Decimal d;
  int16_t digits[6];
  int n = static_cast<int>(rng() % 6);
  for (int i = 0; i < n; ++i) digits[i] = static_cast<int16_t>(rng() % 10000);
  return Decimal::from_base10000(digits, n, static_cast<int>(rng() % 8) - 4,
                                 static_cast<int>(rng() % 12), rng() & 1);
}

NumericValue random_numeric(std::mt19937_64& rng) {
  NumericValue v;
  v.kind = static_cast<uint8_t>(rng() % 8 == 0 ? rng() % 4 : uint64_t{NumericValue::kFinite});
  if (v.kind == NumericValue::kFinite) v.d = random_decimal(rng);
  return v;
}

template <class State>
State random_state(std::mt19937_64& rng) {
  State s;
  int adds = 1 + static_cast<int>(rng() % 3);
  for (int i = 0; i < adds; ++i) {
    if constexpr (std::is_same_v<State, Presence>) {
    } else if constexpr (std::is_same_v<State, Count>) {
      s.add_one();
    } else if constexpr (std::is_same_v<State, NumericSum> || std::is_same_v<State, NumericMoments> ||
                         std::is_same_v<State, NumericExtreme<false>> ||
                         std::is_same_v<State, NumericExtreme<true>>) {
      s.add(random_numeric(rng));
    } else if constexpr (std::is_same_v<State, FloatSum> || std::is_same_v<State, FloatMoments> ||
                         std::is_same_v<State, Extreme<double, false>> ||
                         std::is_same_v<State, Extreme<double, true>>) {
      s.add(static_cast<double>(static_cast<int64_t>(rng())) / 1e6);
    } else {
      s.add(static_cast<int64_t>(rng()));
    }
  }
  return s;
}

template <class State>
std::vector<uint8_t> valid_records(std::mt19937_64& rng, int n) {
  return spillagg_test::encoded([&](Writer& w) {
    for (int i = 0; i < n; ++i) {
      uint8_t key[24];
      uint32_t len = static_cast<uint32_t>(rng() % sizeof key);
      for (uint32_t j = 0; j < len; ++j) key[j] = static_cast<uint8_t>(rng());
      write_run_record(w, rng(), KeyView{key, len}, random_state<State>(rng));
    }
  });
}

// Decodes all records; returns how many, or -1 if the bytes were rejected.
template <class State>
int decode_all(const std::vector<uint8_t>& bytes) {
  const uint8_t* pos = bytes.data();
  const uint8_t* end = pos + bytes.size();
  int n = 0;
  try {
    while (pos < end) {
      Reader r(pos, static_cast<size_t>(end - pos));
      uint64_t h;
      KeyView k;
      State st;
      read_run_record(r, &h, &k, &st);
      if (r.position() <= pos) throw std::logic_error("no progress");  // would hang
      pos = r.position();
      ++n;
    }
  } catch (const CorruptData&) {
    return -1;
  } catch (const std::overflow_error&) {
    return -1;
  }
  return n;
}

template <class State>
void fuzz(uint64_t seed) {
  std::mt19937_64 rng(seed);
  for (int round = 0; round < 300; ++round) {
    std::vector<uint8_t> good = valid_records<State>(rng, 1 + static_cast<int>(rng() % 8));
    ASSERT_GE(decode_all<State>(good), 1);
    for (int m = 0; m < 20; ++m) {
      std::vector<uint8_t> bad = good;
      switch (rng() % 4) {
        case 0:  // flip bits
          for (int f = 0; f < 1 + static_cast<int>(rng() % 4); ++f)
            bad[rng() % bad.size()] ^= static_cast<uint8_t>(1u << (rng() % 8));
          break;
        case 1:  // truncate
          bad.resize(rng() % bad.size());
          break;
        case 2:  // random bytes in place
          for (size_t i = rng() % bad.size(); i < bad.size() && rng() % 4; ++i) bad[i] = static_cast<uint8_t>(rng());
          break;
        default:  // insert a run of 0xff (huge varints / lengths)
          bad.insert(bad.begin() + static_cast<long>(rng() % bad.size()), 1 + rng() % 12, 0xff);
      }
      decode_all<State>(bad);  // must return or throw a core exception, nothing else
    }
  }
}

}  // namespace

TEST(FuzzDecode, Presence) { fuzz<Presence>(1); }
TEST(FuzzDecode, Count) { fuzz<Count>(2); }
TEST(FuzzDecode, IntSum) { fuzz<IntSum>(3); }
TEST(FuzzDecode, FloatSum) { fuzz<FloatSum>(4); }
TEST(FuzzDecode, IntExtremes) {
  fuzz<Extreme<int64_t, false>>(5);
  fuzz<Extreme<int64_t, true>>(6);
}
TEST(FuzzDecode, FloatExtremes) {
  fuzz<Extreme<double, false>>(7);
  fuzz<Extreme<double, true>>(8);
}
TEST(FuzzDecode, FloatMoments) { fuzz<FloatMoments>(9); }
TEST(FuzzDecode, IntMoments) { fuzz<IntMoments>(10); }
TEST(FuzzDecode, NumericSum) { fuzz<NumericSum>(11); }
TEST(FuzzDecode, NumericExtremes) {
  fuzz<NumericExtreme<false>>(12);
  fuzz<NumericExtreme<true>>(13);
}
TEST(FuzzDecode, NumericMoments) { fuzz<NumericMoments>(14); }
