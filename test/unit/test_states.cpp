// states.h: Count and Presence.
#include <gtest/gtest.h>

#include <climits>
#include <cstdint>
#include <random>
#include <stdexcept>
#include <type_traits>
#include <vector>

#include "states.h"
#include "test_support.h"

using namespace spillagg;
using spillagg_test::VecSink;

namespace {

template <class State>
std::vector<uint8_t> encode(const State& s) {
  VecSink sink;
  uint8_t buf[64];
  Writer w(&sink, buf, sizeof buf);
  s.encode(w);
  w.flush();
  return sink.data;
}

std::vector<uint8_t> raw_varint(uint64_t v) {
  VecSink sink;
  uint8_t buf[16];
  Writer w(&sink, buf, sizeof buf);
  w.varint(v);
  w.flush();
  return sink.data;
}

}  // namespace

static_assert(std::is_trivially_copyable_v<Count> && std::is_trivially_destructible_v<Count>);
static_assert(std::is_trivially_copyable_v<Presence> && std::is_trivially_destructible_v<Presence>);

TEST(Count, DefaultIsZero) {
  Count c{};
  EXPECT_EQ(c.n, 0);
  c.add_one();
  c.add_one();
  EXPECT_EQ(c.n, 2);
}

TEST(Count, EncodeDecodeRoundTrip) {
  std::vector<int64_t> vals = {0, 1, 2, 127, 128, 300, 16384, INT32_MAX, int64_t{1} << 40,
                               INT64_MAX - 1, INT64_MAX};
  std::mt19937_64 rng(2024);
  for (int i = 0; i < 500; ++i) vals.push_back(static_cast<int64_t>(rng() >> (1 + rng() % 63)));
  for (int64_t v : vals) {
    std::vector<uint8_t> e = encode(Count{v});
    ASSERT_LE(e.size(), 10u);
    Reader r(e.data(), e.size());
    Count d = Count::decode(r);
    ASSERT_EQ(d.n, v);
    ASSERT_EQ(r.remaining(), 0u);
  }
  EXPECT_EQ(encode(Count{0}).size(), 1u);
  EXPECT_EQ(encode(Count{127}).size(), 1u);
  EXPECT_EQ(encode(Count{INT64_MAX}).size(), 9u);
}

TEST(Count, MergeAdds) {
  Count a{5};
  a.merge(Count{7});
  EXPECT_EQ(a.n, 12);
  a.merge(Count{0});
  EXPECT_EQ(a.n, 12);
  Count b{INT64_MAX - 1};
  b.merge(Count{1});
  EXPECT_EQ(b.n, INT64_MAX);
}

TEST(Count, MergeOverflowThrows) {
  Count a{INT64_MAX};
  EXPECT_THROW(a.merge(Count{1}), std::overflow_error);
  Count b{INT64_MAX};
  EXPECT_THROW(b.add_one(), std::overflow_error);
  Count c{INT64_MAX / 2 + 1};
  EXPECT_THROW(c.merge(Count{INT64_MAX / 2 + 1}), std::overflow_error);
}

// Regression test (fixed): __builtin_add_overflow stores the wrapped
// sum before merge() throws, so the state is left corrupted (INT64_MIN after
// INT64_MAX + 1). Harmless if the error always aborts the aggregate, but a
// caller that catches and continues sees garbage. The fix:
//   int64_t r; if (__builtin_add_overflow(n, o.n, &r)) throw ...; n = r;
TEST(Count, MergeOverflowLeavesStateUnchanged) {
  Count a{INT64_MAX};
  EXPECT_THROW(a.merge(Count{1}), std::overflow_error);
  EXPECT_EQ(a.n, INT64_MAX);
}

TEST(Count, DecodeOutOfRangeThrowsCorruptData) {
  for (uint64_t v : {uint64_t{1} << 63, (uint64_t{1} << 63) + 1, UINT64_MAX}) {
    std::vector<uint8_t> e = raw_varint(v);
    Reader r(e.data(), e.size());
    EXPECT_THROW(Count::decode(r), CorruptData) << v;
  }
  // A negative count (never produced by counting) does not come back silently.
  std::vector<uint8_t> neg = encode(Count{-1});
  Reader r(neg.data(), neg.size());
  EXPECT_THROW(Count::decode(r), CorruptData);
}

TEST(Count, DecodeTruncatedThrowsCorruptData) {
  std::vector<uint8_t> e = encode(Count{INT64_MAX});
  for (size_t len = 0; len < e.size(); ++len) {
    Reader r(e.data(), len);
    EXPECT_THROW(Count::decode(r), CorruptData) << len;
  }
}

TEST(Presence, EncodesToNothing) {
  Presence p{};
  EXPECT_TRUE(encode(p).empty());
  Reader r(nullptr, 0);
  Presence d = Presence::decode(r);
  d.merge(p);
  EXPECT_EQ(r.remaining(), 0u);
  // decode consumes nothing even when bytes follow
  uint8_t b[3] = {1, 2, 3};
  Reader r2(b, 3);
  Presence::decode(r2);
  EXPECT_EQ(r2.remaining(), 3u);
}
