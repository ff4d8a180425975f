// codec.h (Writer/Reader, varints) and hash.h.
#include <gtest/gtest.h>

#include <climits>
#include <cstdint>
#include <random>
#include <set>
#include <vector>

#include "codec.h"
#include "hash.h"
#include "test_support.h"

using namespace spillagg;
using spillagg_test::VecSink;

namespace {

std::vector<uint8_t> encode_varint(uint64_t v) {
  return spillagg_test::encoded([&](Writer& w) { w.varint(v); });
}

std::vector<uint8_t> encode_svarint(int64_t v) {
  return spillagg_test::encoded([&](Writer& w) { w.svarint(v); });
}

size_t expected_varint_len(uint64_t v) {
  size_t n = 1;
  while (v >>= 7) ++n;
  return n;
}

std::vector<uint64_t> interesting_u64() {
  std::vector<uint64_t> v = {0, 1, 2, 63, 64, 127, 128, 129, 255, 256, 16383, 16384, 16385,
                             (1ULL << 21) - 1, 1ULL << 21, (1ULL << 28) - 1, 1ULL << 28,
                             UINT32_MAX, 1ULL << 32, (1ULL << 35) - 1, 1ULL << 35,
                             (1ULL << 56) - 1, 1ULL << 56, (1ULL << 62), (1ULL << 63) - 1,
                             1ULL << 63, (1ULL << 63) + 1, UINT64_MAX - 1, UINT64_MAX};
  std::mt19937_64 rng(12345);
  for (int bits = 1; bits <= 64; ++bits)
    for (int i = 0; i < 8; ++i) {
      uint64_t x = rng();
      v.push_back(bits == 64 ? x : (x & ((1ULL << bits) - 1)) | (1ULL << (bits - 1)));
    }
  return v;
}

}  // namespace

TEST(Codec, VarintRoundTripAndLength) {
  for (uint64_t v : interesting_u64()) {
    std::vector<uint8_t> e = encode_varint(v);
    ASSERT_EQ(e.size(), expected_varint_len(v)) << v;
    ASSERT_LE(e.size(), 10u);
    for (size_t i = 0; i + 1 < e.size(); ++i) ASSERT_TRUE(e[i] & 0x80) << v;
    ASSERT_FALSE(e.back() & 0x80) << v;
    Reader r(e.data(), e.size());
    ASSERT_EQ(r.varint(), v);
    ASSERT_EQ(r.remaining(), 0u);
  }
}

TEST(Codec, VarintKnownEncodings) {
  EXPECT_EQ(encode_varint(0), (std::vector<uint8_t>{0x00}));
  EXPECT_EQ(encode_varint(127), (std::vector<uint8_t>{0x7f}));
  EXPECT_EQ(encode_varint(128), (std::vector<uint8_t>{0x80, 0x01}));
  EXPECT_EQ(encode_varint(300), (std::vector<uint8_t>{0xac, 0x02}));
  EXPECT_EQ(encode_varint(UINT64_MAX),
            (std::vector<uint8_t>{0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01}));
}

TEST(Codec, SvarintRoundTripIncludingExtremes) {
  std::vector<int64_t> vals = {0, 1, -1, 2, -2, 63, -63, 64, -64, 65, -65, 127, -128,
                               INT32_MAX, INT32_MIN, INT64_MAX, INT64_MIN, INT64_MAX - 1,
                               INT64_MIN + 1};
  for (uint64_t u : interesting_u64()) vals.push_back(static_cast<int64_t>(u));
  for (int64_t v : vals) {
    std::vector<uint8_t> e = encode_svarint(v);
    Reader r(e.data(), e.size());
    ASSERT_EQ(r.svarint(), v);
    ASSERT_EQ(r.remaining(), 0u);
  }
  // Zig-zag keeps small magnitudes short.
  EXPECT_EQ(encode_svarint(0).size(), 1u);
  EXPECT_EQ(encode_svarint(-1).size(), 1u);
  EXPECT_EQ(encode_svarint(-64).size(), 1u);
  EXPECT_EQ(encode_svarint(63).size(), 1u);
  EXPECT_EQ(encode_svarint(64).size(), 2u);
  EXPECT_EQ(encode_svarint(-65).size(), 2u);
  EXPECT_EQ(encode_svarint(INT64_MIN).size(), 10u);
  EXPECT_EQ(encode_svarint(INT64_MAX).size(), 10u);
  EXPECT_EQ(encode_svarint(-1), (std::vector<uint8_t>{0x01}));
  EXPECT_EQ(encode_svarint(1), (std::vector<uint8_t>{0x02}));
}

TEST(Codec, TruncatedVarintThrowsCorruptData) {
  {
    Reader r(nullptr, 0);
    EXPECT_THROW(r.varint(), CorruptData);
  }
  for (uint64_t v : {uint64_t{128}, uint64_t{300}, uint64_t{1} << 40, UINT64_MAX}) {
    std::vector<uint8_t> e = encode_varint(v);
    for (size_t len = 0; len < e.size(); ++len) {
      // Exact-size heap copy so ASan sees any read past the end.
      std::vector<uint8_t> cut(e.begin(), e.begin() + len);
      std::unique_ptr<uint8_t[]> heap(new uint8_t[len ? len : 1]);
      if (len) std::memcpy(heap.get(), cut.data(), len);
      Reader r(heap.get(), len);
      EXPECT_THROW(r.varint(), CorruptData) << v << " cut to " << len;
    }
  }
  for (int64_t v : {INT64_MIN, INT64_MAX, int64_t{-65}}) {
    std::vector<uint8_t> e = encode_svarint(v);
    Reader r(e.data(), e.size() - 1);
    EXPECT_THROW(r.svarint(), CorruptData) << v;
  }
}

TEST(Codec, OverlongVarintThrowsCorruptData) {
  std::vector<uint8_t> e(11, 0x80);
  e.back() = 0x00;
  Reader r(e.data(), e.size());
  EXPECT_THROW(r.varint(), CorruptData);
  std::vector<uint8_t> f(10, 0xff);  // ten continuation bytes, never terminated
  Reader r2(f.data(), f.size());
  EXPECT_THROW(r2.varint(), CorruptData);
}

// Regression test (fixed): the 10th byte
// of a varint carries only bit 63, but Reader::varint() accepts any value
// there and silently drops the excess bits, so malformed encodings decode to
// some number instead of raising CorruptData (e.g. 80 80 .. 80 02 decodes
// to 0). Suggested fix, in the loop: if (shift == 63 && b > 1) throw
// CorruptData("varint overflow");
TEST(Codec, VarintWithOverflowingTenthByteThrows) {
  std::vector<uint8_t> zero_ish(10, 0x80);
  zero_ish.back() = 0x02;
  Reader r(zero_ish.data(), zero_ish.size());
  EXPECT_THROW(r.varint(), CorruptData);
  std::vector<uint8_t> big(10, 0xff);
  big.back() = 0x7f;
  Reader r2(big.data(), big.size());
  EXPECT_THROW(r2.varint(), CorruptData);
}

TEST(Codec, ReaderFixedAndTakeAreBoundsChecked) {
  uint8_t b[12];
  for (int i = 0; i < 12; ++i) b[i] = static_cast<uint8_t>(i + 1);
  Reader r(b, sizeof b);
  EXPECT_EQ(r.fixed<uint64_t>(), 0x0807060504030201ULL);  // little-endian
  EXPECT_EQ(r.remaining(), 4u);
  EXPECT_EQ(r.position(), b + 8);
  EXPECT_THROW(r.fixed<uint64_t>(), CorruptData);
  EXPECT_EQ(r.remaining(), 4u);  // a failed read consumes nothing
  EXPECT_EQ(r.fixed<uint32_t>(), 0x0c0b0a09u);
  EXPECT_THROW(r.take(1), CorruptData);
  EXPECT_NO_THROW(r.take(0));
  Reader r2(b, 3);
  EXPECT_THROW(r2.take(SIZE_MAX), CorruptData);
}

TEST(Codec, WriterBuffersSplitsAndBypasses) {
  // Tiny buffer: many small writes, writes larger than the buffer go straight
  // to the sink, and the byte stream is exactly the concatenation.
  VecSink sink;
  uint8_t buf[5];
  Writer w(&sink, buf, sizeof buf);
  std::vector<uint8_t> expect;
  std::mt19937_64 rng(7);
  for (int i = 0; i < 2000; ++i) {
    switch (rng() % 4) {
      case 0: {
        uint64_t v = rng() >> (rng() % 64);
        w.varint(v);
        std::vector<uint8_t> e = encode_varint(v);
        expect.insert(expect.end(), e.begin(), e.end());
        break;
      }
      case 1: {
        uint32_t v = static_cast<uint32_t>(rng());
        w.fixed<uint32_t>(v);
        for (int k = 0; k < 4; ++k) expect.push_back(static_cast<uint8_t>(v >> (8 * k)));
        break;
      }
      case 2: {
        std::string blob(rng() % 23, '\0');  // std::string: data() is never null
        for (auto& c : blob) c = static_cast<char>(rng());
        w.bytes(blob.data(), blob.size());
        expect.insert(expect.end(), blob.begin(), blob.end());
        break;
      }
      default: {
        int64_t v = static_cast<int64_t>(rng()) >> (rng() % 64);
        w.svarint(v);
        std::vector<uint8_t> e = encode_svarint(v);
        expect.insert(expect.end(), e.begin(), e.end());
      }
    }
  }
  w.flush();
  w.flush();  // idempotent
  EXPECT_EQ(sink.data, expect);

  // Decode the same stream back.
  std::mt19937_64 rng2(7);
  Reader r(sink.data.data(), sink.data.size());
  for (int i = 0; i < 2000; ++i) {
    switch (rng2() % 4) {
      case 0: {
        uint64_t v = rng2() >> (rng2() % 64);
        ASSERT_EQ(r.varint(), v);
        break;
      }
      case 1:
        ASSERT_EQ(r.fixed<uint32_t>(), static_cast<uint32_t>(rng2()));
        break;
      case 2: {
        std::string blob(rng2() % 23, '\0');
        for (auto& c : blob) c = static_cast<char>(rng2());
        const uint8_t* p = r.take(blob.size());
        ASSERT_EQ(0, std::memcmp(p, blob.data(), blob.size()));
        break;
      }
      default: {
        int64_t v = static_cast<int64_t>(rng2()) >> (rng2() % 64);
        ASSERT_EQ(r.svarint(), v);
      }
    }
  }
  EXPECT_EQ(r.remaining(), 0u);
}

TEST(Codec, WriterLargeWriteGoesDirectlyAfterFlush) {
  VecSink sink;
  uint8_t buf[8];
  Writer w(&sink, buf, sizeof buf);
  w.bytes("abc", 3);
  std::string big(100, 'x');
  w.bytes(big.data(), big.size());
  EXPECT_EQ(sink.writes, 2u);  // "abc" flushed first, then the big block directly
  w.flush();
  EXPECT_EQ(std::string(sink.data.begin(), sink.data.end()), "abc" + big);
  w.flush();
  EXPECT_EQ(sink.writes, 2u);  // nothing buffered, nothing written
}

// ---- hash.h ----

TEST(Hash, DeterministicAndLengthSensitive) {
  const uint8_t zeros[32] = {0};
  std::set<uint64_t> seen;
  for (size_t n = 0; n <= 32; ++n) {
    uint64_t h = hash_bytes(zeros, n);
    EXPECT_EQ(h, hash_bytes(zeros, n));
    EXPECT_TRUE(seen.insert(h).second) << "all-zero keys of different length collide at n=" << n;
  }
}

TEST(Hash, ReadsOnlyTheGivenBytes) {
  // Exact-size heap buffers: ASan flags any read outside [p, p+n).
  std::mt19937_64 rng(99);
  for (size_t n = 0; n <= 70; ++n) {
    std::unique_ptr<uint8_t[]> p(new uint8_t[n ? n : 1]);
    for (size_t i = 0; i < n; ++i) p[i] = static_cast<uint8_t>(rng());
    uint64_t h = hash_bytes(p.get(), n);
    // The result depends only on the n bytes: copy them elsewhere.
    std::vector<uint8_t> copy(p.get(), p.get() + n);
    copy.push_back(0xAA);  // a trailing byte that must be ignored
    EXPECT_EQ(h, hash_bytes(copy.data(), n));
    // Every byte matters.
    for (size_t i = 0; i < n; ++i) {
      copy[i] ^= 1;
      EXPECT_NE(h, hash_bytes(copy.data(), n)) << "n=" << n << " byte " << i;
      copy[i] ^= 1;
    }
  }
}

TEST(Hash, FewCollisionsOnSimilarKeys) {
  std::set<uint64_t> seen;
  size_t keys = 0;
  for (int i = 0; i < 50000; ++i) {
    std::string s = "key" + std::to_string(i);
    seen.insert(spillagg_test::hash_of(s));
    ++keys;
  }
  EXPECT_EQ(seen.size(), keys);
}

TEST(Hash, Mix64IsBijectiveOnSample) {
  std::set<uint64_t> seen;
  for (uint64_t i = 0; i < 100000; ++i) seen.insert(mix64(i));
  EXPECT_EQ(seen.size(), 100000u);
  EXPECT_EQ(mix64(0), 0u);  // the MurmurHash3 finaliser fixes zero
}
