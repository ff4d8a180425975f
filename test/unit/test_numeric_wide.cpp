// The widths of the numeric states (decimal.h kNumericRungWords, states.h
// NumericSumT / NumericExtremeT / NumericMomentsT) and their escalation:
// wide values against the digit-string reference, atomic add and merge,
// narrow encodings read by wider decoders, compare across extreme scales,
// the limits of numeric's range, and a SpillingTable whose states overflow
// while rows are added, while runs are compacted and while the final merge
// runs, handing over to a wider table that adopts the narrow runs.
#include <gtest/gtest.h>

#include <map>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include "decimal.h"
#include "decimal_ref.h"
#include "hash.h"
#include "spilling_table.h"
#include "states.h"
#include "test_support.h"

using namespace spillagg;
using namespace decimal_ref;
using namespace spillagg_test;

namespace {

constexpr int kNarrow = kNumericRungWords[0];
constexpr int kMid = kNumericRungWords[1];
constexpr int kWide = kNumericRungWords[2];

template <int W>
DecimalT<W> decw(const std::string& literal) {
  Packed p = pack(literal);
  return DecimalT<W>::from_base10000(p.digits.data(), static_cast<int>(p.digits.size()), p.weight, p.dscale, p.neg);
}

template <int W>
std::string strw(const DecimalT<W>& d) {
  std::vector<char> buf(d.text_size(), '\x7f');
  d.to_text(buf.data());
  auto end = std::find(buf.begin(), buf.end(), '\0');
  EXPECT_NE(end, buf.end());
  return std::string(buf.begin(), end);
}

template <int W>
NumericValueT<W> numw(const std::string& lit) {
  NumericValueT<W> v;
  v.d = decw<W>(lit);
  return v;
}

template <class T>
std::vector<uint8_t> enc(const T& x) {
  VecSink sink;
  uint8_t buf[64];
  Writer w(&sink, buf, sizeof buf);
  x.encode(w);
  w.flush();
  return sink.data;
}

template <class T>
T dec_bytes(const std::vector<uint8_t>& e) {
  Reader r(e.data(), e.size());
  T x = T::decode(r);
  EXPECT_EQ(r.remaining(), 0u);
  return x;
}

std::string random_digits(std::mt19937_64& rng, size_t n) {
  std::string s;
  s.push_back(static_cast<char>('1' + rng() % 9));
  for (size_t i = 1; i < n; ++i) s.push_back(static_cast<char>('0' + rng() % 10));
  return s;
}

// A literal with `ints` integer digits and `frac` fraction digits.
std::string literal(std::mt19937_64& rng, size_t ints, size_t frac, bool neg) {
  std::string s = neg ? "-" : "";
  s += ints ? random_digits(rng, ints) : "0";
  if (frac) s += "." + random_digits(rng, frac);
  return s;
}

// numeric's extreme: 131072 nines before the point, 16383 after.
std::string numeric_max_literal() { return std::string(131072, '9') + "." + std::string(16383, '9'); }

}  // namespace

// ------------------------------------------------------------ wide values

TEST(WideDecimal, TextRoundTripsAgainstReference) {
  std::mt19937_64 rng(7);
  for (int i = 0; i < 40; ++i) {
    size_t ints = rng() % 1200, frac = rng() % 1200;
    std::string lit = literal(rng, ints, frac, rng() % 2);
    EXPECT_EQ(strw(decw<kMid>(lit)), text(parse(lit))) << lit.substr(0, 30);
    EXPECT_EQ(strw(decw<kWide>(lit)), text(parse(lit)));
  }
}

TEST(WideDecimal, AddAndProductMatchReference) {
  std::mt19937_64 rng(11);
  for (int i = 0; i < 30; ++i) {
    std::string a = literal(rng, rng() % 600, rng() % 300, rng() % 2);
    std::string b = literal(rng, rng() % 600, rng() % 300, rng() % 2);
    DecimalT<kMid> x = decw<kMid>(a);
    x.add(decw<kMid>(b));
    EXPECT_EQ(strw(x), text(add(parse(a), parse(b))));
    EXPECT_EQ(strw(DecimalT<kMid>::product(decw<kMid>(a), decw<kMid>(b))), text(mul(parse(a), parse(b))));
    EXPECT_EQ(decw<kMid>(a).compare(decw<kMid>(b)), cmp(parse(a), parse(b)));
  }
}

TEST(WideDecimal, EncodeDecodeRoundTripsAndNarrowEncodingsReadWide) {
  std::mt19937_64 rng(13);
  for (int i = 0; i < 30; ++i) {
    std::string small = literal(rng, rng() % 60, rng() % 40, rng() % 2);
    std::vector<uint8_t> e = enc(decw<kNarrow>(small));
    // The encoding does not depend on the width.
    EXPECT_EQ(e, enc(decw<kMid>(small)));
    EXPECT_EQ(e, enc(decw<kWide>(small)));
    EXPECT_EQ(strw(dec_bytes<DecimalT<kMid>>(e)), text(parse(small)));
    EXPECT_EQ(strw(dec_bytes<DecimalT<kWide>>(e)), text(parse(small)));
    std::string big = literal(rng, 500 + rng() % 1500, rng() % 400, rng() % 2);
    EXPECT_EQ(strw(dec_bytes<DecimalT<kMid>>(enc(decw<kMid>(big)))), text(parse(big)));
    EXPECT_EQ(strw(dec_bytes<DecimalT<kWide>>(enc(decw<kMid>(big)))), text(parse(big)));
    // A wide encoding is corrupt for a narrower width, never truncated.
    std::vector<uint8_t> we = enc(decw<kMid>(big));
    Reader rw(we.data(), we.size());
    EXPECT_THROW(DecimalT<kNarrow>::decode(rw), CorruptData);
  }
  // States too: a narrow state's records are read by the wider decoder.
  NumericMomentsT<kNarrow> m;
  for (const char* v : {"1.5", "-2.25", "1e40", "0.000001"}) m.add(numw<kNarrow>(v));
  auto wm = dec_bytes<NumericMomentsT<kWide>>(enc(m));
  EXPECT_EQ(enc(wm), enc(m));
  EXPECT_EQ(enc(NumericMomentsT<kMid>::widen(m)), enc(m));
}

TEST(WideDecimal, CompareAcrossExtremeScales) {
  // 1e100 vs 1e-100 needs 10^200 at a common scale: more than 8 words hold.
  auto n1 = decw<kNarrow>("1" + std::string(100, '0'));
  auto n2 = decw<kNarrow>("0." + std::string(99, '0') + "1");
  EXPECT_EQ(n1.compare(n2), 1);
  EXPECT_EQ(n2.compare(n1), -1);
  auto neg1 = decw<kNarrow>("-1" + std::string(100, '0'));
  EXPECT_EQ(neg1.compare(n2), -1);
  EXPECT_EQ(n2.compare(neg1), 1);
  // At the widest width: numeric's largest and smallest magnitudes.
  auto big = decw<kWide>("1" + std::string(131071, '0'));
  auto tiny = decw<kWide>("0." + std::string(16382, '0') + "1");
  auto ntiny = decw<kWide>("-0." + std::string(16382, '0') + "1");
  EXPECT_EQ(big.compare(tiny), 1);
  EXPECT_EQ(tiny.compare(big), -1);
  EXPECT_EQ(ntiny.compare(tiny), -1);
  EXPECT_EQ(tiny.compare(tiny), 0);
  // Min / max never overflow: they do no arithmetic.
  NumericExtremeT<kNarrow, false> mn;
  mn.add(numw<kNarrow>("1" + std::string(100, '0')));
  mn.add(numw<kNarrow>("0." + std::string(99, '0') + "1"));
  EXPECT_EQ(strw(mn.v.d), "0." + std::string(99, '0') + "1");
  NumericExtremeT<kNarrow, true> mx;
  mx.merge(mx);
  mx.add(numw<kNarrow>("0." + std::string(99, '0') + "1"));
  mx.add(numw<kNarrow>("-1" + std::string(100, '0')));
  EXPECT_EQ(strw(mx.v.d), "0." + std::string(99, '0') + "1");
}

TEST(WideDecimal, NumericRangeLimit) {
  std::string max = numeric_max_literal();
  // Too wide for the narrower widths...
  EXPECT_THROW(decw<kNarrow>(max), StateOverflow);
  EXPECT_THROW(decw<kMid>(max), StateOverflow);
  // ...held by the widest, text round trip and encoding included.
  DecimalT<kWide> d = decw<kWide>(max);
  EXPECT_EQ(strw(d), max);
  EXPECT_EQ(strw(dec_bytes<DecimalT<kWide>>(enc(d))), max);
  // The sum of 2^20 of them (2^63 fit by design), and back down to zero.
  DecimalT<kWide> s = d;
  for (int i = 0; i < 20; ++i) s.add(s);
  DecimalT<kWide> neg = s;
  neg.negate();
  s.add(neg);
  EXPECT_TRUE(s.is_zero());
  // Beyond: squares of 10^75000 pass numeric's range and the widest width.
  auto e70k = decw<kWide>("1" + std::string(75000, '0'));
  EXPECT_THROW(DecimalT<kWide>::product(e70k, e70k), StateOverflow);
  // A sum beyond any width overflows (atomically).
  DecimalT<kWide> all;
  for (int i = 0; i < kWide; ++i) all.w[i] = ~0ULL;
  all.w[kWide - 1] = ~0ULL >> 1;  // the largest mantissa
  DecimalT<kWide> before = all;
  EXPECT_THROW(all.add(DecimalT<kWide>::from_int(1)), StateOverflow);
  EXPECT_EQ(all.compare(before), 0);
  EXPECT_EQ(enc(all), enc(before));
}

// --------------------------------------------------------------- atomicity

TEST(WideDecimal, AddIsAtomic) {
  std::string near = sub_mag(pow2(511), "1");  // the largest narrow mantissa
  DecimalT<kNarrow> a = decw<kNarrow>(near);
  auto before = enc(a);
  EXPECT_THROW(a.add(decw<kNarrow>("1")), StateOverflow);
  EXPECT_EQ(enc(a), before);
  // An implicit rescale of *this that overflows leaves it unchanged.
  DecimalT<kNarrow> b = decw<kNarrow>("1" + std::string(150, '0'));
  before = enc(b);
  EXPECT_THROW(b.add(decw<kNarrow>("0.0001")), StateOverflow);
  EXPECT_EQ(enc(b), before);
}

TEST(WideStates, AddAndMergeAreAtomic) {
  std::string big = "3" + std::string(153, '0');
  NumericSumT<kNarrow> s;
  s.add(numw<kNarrow>(big));
  s.add(numw<kNarrow>(big));
  auto before = enc(s);
  EXPECT_THROW(s.add(numw<kNarrow>(big)), StateOverflow);
  EXPECT_EQ(enc(s), before);
  EXPECT_THROW(s.merge(s), StateOverflow);
  EXPECT_EQ(enc(s), before);
  // Moments: the sum fits, the square does not; or the square's sum does not.
  NumericMomentsT<kNarrow> m;
  m.add(numw<kNarrow>("1" + std::string(70, '0')));
  before = enc(m);
  EXPECT_THROW(m.add(numw<kNarrow>("1" + std::string(80, '0'))), StateOverflow);
  EXPECT_EQ(enc(m), before);
  NumericMomentsT<kNarrow> m2;
  std::string r = "7" + std::string(76, '0');  // square 4.9e153 fits, twice it does not
  m2.add(numw<kNarrow>(r));
  before = enc(m2);
  EXPECT_THROW(m2.add(numw<kNarrow>(r)), StateOverflow);
  EXPECT_EQ(enc(m2), before);
  EXPECT_THROW(m2.merge(m2), StateOverflow);
  EXPECT_EQ(enc(m2), before);
  // The same rows at the next width: exact.
  auto wide = NumericMomentsT<kMid>::widen(m2);
  wide.add(numw<kMid>(r));
  EXPECT_EQ(strw(wide.sumsq), text(add(mul(parse(r), parse(r)), mul(parse(r), parse(r)))));
  EXPECT_EQ(wide.n, 2);
}

TEST(WideStates, TagsAndFamilies) {
  EXPECT_EQ(NumericSumT<kNarrow>::kTag, 11);
  EXPECT_EQ(NumericMinT<kNarrow>::kTag, 12);
  EXPECT_EQ(NumericMaxT<kNarrow>::kTag, 13);
  EXPECT_EQ(NumericMomentsT<kNarrow>::kTag, 14);
  std::vector<uint8_t> tags = {NumericSumT<kMid>::kTag,  NumericMinT<kMid>::kTag,  NumericMaxT<kMid>::kTag,
                               NumericMomentsT<kMid>::kTag, NumericSumT<kWide>::kTag, NumericMinT<kWide>::kTag,
                               NumericMaxT<kWide>::kTag, NumericMomentsT<kWide>::kTag};
  for (size_t i = 0; i < tags.size(); ++i) {
    EXPECT_EQ(tags[i], 15 + i);
    EXPECT_EQ(numeric_family(tags[i]), 11 + i % 4);
    EXPECT_EQ(numeric_rung(tags[i]), 1 + static_cast<int>(i / 4));
  }
  EXPECT_EQ(numeric_family(10), 0);
  EXPECT_EQ(numeric_family(23), 0);
  EXPECT_TRUE(Widens<NumericSumT<kMid>>::value);
  EXPECT_FALSE(Widens<NumericSumT<kWide>>::value);
  EXPECT_FALSE(Widens<Count>::value);
  // Wide states encode within their declared bound.
  NumericMomentsT<kWide> w;
  w.add(numw<kWide>(std::string(60000, '9') + "." + std::string(100, '9')));
  EXPECT_LE(enc(w).size(), StateMax<NumericMomentsT<kWide>>::value);
}

// ------------------------------------------------------------- escalation

namespace {

constexpr KeyEquality kBytes{nullptr, nullptr};


template <class State>
struct Table {
  TrackingSource table_mem, meta_mem;
  SpillingTable<State> t;
  Table(MemRunStore* store, size_t budget) { t.init(&table_mem, &meta_mem, store, budget, false, kBytes); }
};

// The expected sum per key, by the reference.
using Sums = std::map<std::string, Num>;

template <class State>
void drain(SpillingTable<State>& t, std::map<std::string, std::string>* out) {
  uint64_t h;
  KeyView k;
  State st;
  while (t.next(&h, &k, &st)) {
    std::string key(reinterpret_cast<const char*>(k.data), k.len);
    EXPECT_EQ(h, hash_of(key));
    EXPECT_TRUE(out->emplace(key, strw(st.sum)).second);
  }
}

}  // namespace

// Rows whose add overflows a narrow table: the narrow table spills, a wider
// one adopts its runs, takes the failing row and the rest; the answer is
// every key's exact sum.
TEST(Escalation, RowOverflowHandsOverToAWiderTable) {
  MemRunStore store;
  auto narrow = std::make_unique<Table<NumericSumT<kNarrow>>>(&store, 4096);
  auto mid = std::make_unique<Table<NumericSumT<kMid>>>(&store, 64 * 1024);
  std::mt19937_64 rng(3);
  Sums expect;
  bool escalated = false;
  for (int i = 0; i < 3000; ++i) {
    std::string key = "k" + std::to_string(rng() % 200);
    std::string v = (i % 500 == 499) ? literal(rng, 150 + rng() % 300, rng() % 20, rng() % 2)
                                     : literal(rng, rng() % 30, rng() % 10, rng() % 2);
    auto it = expect.find(key);
    expect[key] = it == expect.end() ? parse(v) : add(it->second, parse(v));
    if (!escalated) {
      try {
        auto row = numw<kNarrow>(v);
        narrow->t.upsert(hash_of(key), kv(key)).add(row);
        continue;
      } catch (const StateOverflow&) {
        mid->t.adopt_runs(narrow->t);
        EXPECT_EQ(narrow->t.run_count(), 0u);
        EXPECT_EQ(narrow->table_mem.bytes_allocated(), 0u);  // its table is gone, slots too
        EXPECT_GT(mid->t.run_count(), 0u);
        escalated = true;
      }
    }
    mid->t.upsert(hash_of(key), kv(key)).add(numw<kMid>(v));
  }
  ASSERT_TRUE(escalated);
  narrow->t.discard();  // nothing of its own left
  mid->t.finish();
  std::map<std::string, std::string> got;
  drain(mid->t, &got);
  ASSERT_EQ(got.size(), expect.size());
  for (auto& [k, n] : expect) EXPECT_EQ(got[k], text(n)) << k;
  mid->t.discard();
  EXPECT_EQ(store.live(), 0u);
}

// Every row fits the narrow width, but one key's merged runs do not: the
// final merge throws StateOverflow, leaving the runs intact and rewound;
// the wider table adopts them and its final pass answers. Compaction of
// tiny runs that overflows is skipped, not an error.
class FinalMerge : public ::testing::TestWithParam<size_t> {};

TEST_P(FinalMerge, OverflowRestartsWider) {
  size_t budget = GetParam();
  MemRunStore store;
  Table<NumericSumT<kNarrow>> narrow(&store, budget);
  narrow.t.set_compaction(4, 1000000);
  std::string big = "4" + std::string(153, '0');  // twice it passes 2^511
  Sums expect;
  for (int round = 0; round < 6; ++round) {
    for (int i = 0; i < 40; ++i) {
      std::string key = "k" + std::to_string(i);
      std::string v = i == 7 ? big : std::to_string(round * 100 + i) + ".5";
      auto it = expect.find(key);
      expect[key] = it == expect.end() ? parse(v) : add(it->second, parse(v));
      narrow.t.upsert(hash_of(key), kv(key)).add(numw<kNarrow>(v));
    }
    narrow.t.spill();
  }
  EXPECT_GE(narrow.t.run_count(), 2u);
  bool threw = false;
  try {
    narrow.t.finish();
    std::map<std::string, std::string> ignored;
    drain(narrow.t, &ignored);
  } catch (const StateOverflow&) {
    threw = true;
  }
  ASSERT_TRUE(threw);
  narrow.t.end_stream();
  // (Intermediate passes of a small budget may have merged some runs.)
  EXPECT_GE(narrow.t.run_count(), 1u);
  Table<NumericSumT<kMid>> mid(&store, 64 * 1024);
  mid.t.adopt_runs(narrow.t);
  mid.t.finish();
  std::map<std::string, std::string> got;
  drain(mid.t, &got);
  ASSERT_EQ(got.size(), expect.size());
  for (auto& [k, n] : expect) EXPECT_EQ(got[k], text(n)) << k;
  // The stream can be read again (a final function may run twice).
  mid.t.finish();
  std::map<std::string, std::string> again;
  drain(mid.t, &again);
  EXPECT_EQ(again, got);
  mid.t.discard();
  narrow.t.discard();
  EXPECT_EQ(store.live(), 0u);
}

// 2 kB: 240 runs, intermediate passes (fan-in 4) before the final merge;
// 64 kB: compaction of the tiny runs overflows (skipped), then the final merge.
INSTANTIATE_TEST_SUITE_P(Escalation, FinalMerge, ::testing::Values(2048, 64 * 1024));

// The widest rung in a table: keys whose states are larger than the budget
// still work, one key per table, spilled and merged.
TEST(Escalation, WideStatesLargerThanTheBudgetSpill) {
  MemRunStore store;
  Table<NumericSumT<kWide>> wide(&store, 16 * 1024);
  std::string huge = "1" + std::string(100000, '0');
  Sums expect;
  for (int i = 0; i < 12; ++i) {
    std::string key = "k" + std::to_string(i % 3);
    std::string v = i % 2 ? huge : "-0." + std::string(16382, '0') + "1";
    auto it = expect.find(key);
    expect[key] = it == expect.end() ? parse(v) : add(it->second, parse(v));
    wide.t.upsert(hash_of(key), kv(key)).add(numw<kWide>(v));
  }
  EXPECT_GT(wide.t.stats().spills, 0u);
  wide.t.finish();
  std::map<std::string, std::string> got;
  drain(wide.t, &got);
  ASSERT_EQ(got.size(), expect.size());
  for (auto& [k, n] : expect) EXPECT_EQ(got[k], text(n)) << k;
  wide.t.discard();
  EXPECT_EQ(store.live(), 0u);
}
