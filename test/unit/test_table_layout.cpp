// keyed_table.h slot layout: a key's home slot is hash * nslots >> 64
// (monotone in the hash), the slot count is whatever fits the block that
// MemorySource::usable_size() says a request gets (not a power of two), and
// pack(true) returns the live entries in hash order. memory.h: ChunkArena
// takes its chunks at their usable sizes.
#include <gtest/gtest.h>

#include <algorithm>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <map>
#include <new>
#include <random>
#include <string>
#include <tuple>
#include <utility>
#include <vector>

#include "keyed_table.h"
#include "memory.h"
#include "states.h"
#include "test_support.h"

using namespace spillagg;
using namespace spillagg_test;

namespace {

constexpr KeyEquality kBytewise{nullptr, nullptr};
using CTable = KeyedTable<Count>;
using CEntry = CTable::Entry;
static_assert(sizeof(CEntry) == 32, "the slot arithmetic below assumes 32-byte entries");

std::string u64key(uint64_t v) { return std::string(reinterpret_cast<const char*>(&v), 8); }

// malloc-backed MemorySource whose usable_size() rounds like the PostgreSQL
// glue over its BuddyArena: the request plus 48 bytes of headers (the
// arena's 16, TrackedMemory's 32) goes up to a power of two (at least 64).
// With round == false it is an exact source (usable_size is the identity).
class RoundingSource final : public MemorySource {
 public:
  static constexpr size_t kOverhead = 48;

  explicit RoundingSource(bool round = true) : round_(round) {}
  ~RoundingSource() { free_everything(); }
  RoundingSource(const RoundingSource&) = delete;
  RoundingSource& operator=(const RoundingSource&) = delete;

  void* allocate(size_t bytes) override {
    if (usable_size(bytes) != bytes) ++unrounded_;
    auto* p = static_cast<uint8_t*>(std::malloc(bytes ? bytes : 1));
    if (!p) throw std::bad_alloc();
    if (reinterpret_cast<uintptr_t>(p) % 8 != 0) ADD_FAILURE() << "malloc returned unaligned memory";
    blocks_[p] = Block{bytes, seq_++};
    requests_.push_back(bytes);
    bytes_ += bytes;
    peak_ = std::max(peak_, bytes_);
    return p;
  }
  void release(void* p) override {
    auto it = blocks_.find(static_cast<uint8_t*>(p));
    if (it == blocks_.end()) {
      ADD_FAILURE() << "release() of a pointer this source did not hand out (or already freed)";
      return;
    }
    bytes_ -= it->second.bytes;
    std::free(it->first);
    blocks_.erase(it);
  }
  void release_all() override { free_everything(); }
  size_t bytes_allocated() const override { return bytes_; }
  size_t usable_size(size_t bytes) const override {
    if (!round_) return bytes;
    size_t block = 64;
    while (block < bytes + kOverhead) block <<= 1;
    return block - kOverhead;
  }

  // The live block holding p, as (start, bytes); (nullptr, 0) if none.
  std::pair<const uint8_t*, size_t> block_of(const void* p) const {
    auto* q = static_cast<uint8_t*>(const_cast<void*>(p));
    auto it = blocks_.upper_bound(q);
    if (it == blocks_.begin()) return {nullptr, 0};
    --it;
    if (q >= it->first + it->second.bytes) return {nullptr, 0};
    return {it->first, it->second.bytes};
  }
  // Live blocks as (start, bytes), in allocation order.
  std::vector<std::pair<const uint8_t*, size_t>> live_in_order() const {
    std::map<uint64_t, std::pair<const uint8_t*, size_t>> by_seq;
    for (auto& b : blocks_) by_seq[b.second.seq] = {b.first, b.second.bytes};
    std::vector<std::pair<const uint8_t*, size_t>> out;
    for (auto& b : by_seq) out.push_back(b.second);
    return out;
  }
  size_t live_blocks() const { return blocks_.size(); }
  size_t peak() const { return peak_; }
  // allocate() calls whose size was not already a usable size.
  size_t unrounded() const { return unrounded_; }
  const std::vector<size_t>& requests() const { return requests_; }

 private:
  struct Block {
    size_t bytes;
    uint64_t seq;
  };
  void free_everything() {
    for (auto& b : blocks_) std::free(b.first);
    blocks_.clear();
    bytes_ = 0;
  }

  bool round_;
  std::map<uint8_t*, Block> blocks_;  // by address, for block_of()
  std::vector<size_t> requests_;
  uint64_t seq_ = 0;
  size_t bytes_ = 0, peak_ = 0, unrounded_ = 0;
};

size_t home_slot(uint64_t hash, size_t nslots) {
  return static_cast<size_t>((static_cast<unsigned __int128>(hash) * nslots) >> 64);
}

// Slot count of a table holding `count` keys, per the growth rule: start at
// usable_size(16 entries), double (then round up to a usable size) whenever
// the load would pass 3/4.
size_t expected_slots(const MemorySource& m, size_t count) {
  size_t n = m.usable_size(CTable::kMinSlots * sizeof(CEntry)) / sizeof(CEntry);
  while (count * 4 > n * 3) n = m.usable_size(n * 2 * sizeof(CEntry)) / sizeof(CEntry);
  return n;
}

struct Layout {
  const CEntry* slots;
  size_t nslots;
};
// The slot array holding entry e.
Layout layout_of(const RoundingSource& m, const CEntry* e) {
  auto [b, n] = m.block_of(e);
  EXPECT_NE(b, nullptr);
  return Layout{reinterpret_cast<const CEntry*>(b), n / sizeof(CEntry)};
}

// Checks t's linear-probing layout: every live entry sits at its home slot
// (hash * nslots >> 64) or after it, with every slot in between occupied.
// Returns how many entries' probes wrapped past the last slot.
size_t check_layout(const CTable& t, const Layout& L) {
  std::vector<bool> occupied(L.nslots);
  size_t live = 0;
  bool ok = true;
  t.for_each([&](const CEntry& e) {
    size_t i = static_cast<size_t>(&e - L.slots);
    if (i >= L.nslots) ok = false;
    else occupied[i] = true;
    ++live;
  });
  EXPECT_TRUE(ok) << "for_each() visited an entry outside the slot array";
  EXPECT_EQ(live, t.size());
  if (!ok) return 0;
  size_t wrapped = 0;
  t.for_each([&](const CEntry& e) {
    size_t i = static_cast<size_t>(&e - L.slots);
    size_t h = home_slot(e.hash, L.nslots);
    if (h > i) ++wrapped;
    for (size_t j = h; j != i; j = j + 1 == L.nslots ? 0 : j + 1)
      if (!occupied[j]) {
        ADD_FAILURE() << "entry at slot " << i << " has home " << h << " but slot " << j << " is empty";
        break;
      }
  });
  return wrapped;
}

// Strict inversions (pairs out of hash order) of a sequence, by merge sort.
uint64_t inversions(std::vector<uint64_t> v) {
  std::vector<uint64_t> tmp(v.size());
  uint64_t inv = 0;
  for (size_t w = 1; w < v.size(); w *= 2) {
    for (size_t lo = 0; lo < v.size(); lo += 2 * w) {
      size_t mid = std::min(lo + w, v.size()), hi = std::min(lo + 2 * w, v.size());
      size_t a = lo, b = mid, o = lo;
      while (a < mid && b < hi) {
        if (v[b] < v[a]) {
          inv += mid - a;
          tmp[o++] = v[b++];
        } else {
          tmp[o++] = v[a++];
        }
      }
      while (a < mid) tmp[o++] = v[a++];
      while (b < hi) tmp[o++] = v[b++];
    }
    v.swap(tmp);
  }
  return inv;
}

// A distinct string key of 5..40 bytes: the decimal index, then letters.
std::string string_key(size_t i, std::mt19937_64& rng) {
  std::string s = std::to_string(i);
  size_t len = 5 + rng() % 36;
  while (s.size() < len) s += static_cast<char>('a' + rng() % 26);
  return s;
}

}  // namespace

// --- home slot and slot counts ---

TEST(TableLayout, HomeSlotIsHashTimesSlotsOver2To64) {
  RoundingSource mem;
  CTable t;
  t.init(&mem, 1 << 20, /*inline_keys=*/true, kBytewise);
  // 16 entries = 512 bytes -> a 1024-byte block -> 976 usable bytes = 30 slots.
  ASSERT_EQ(mem.usable_size(16 * sizeof(CEntry)), 976u);
  const size_t N = 30;
  // Lowest and highest hash whose home is slot j.
  auto lowest = [&](size_t j) {
    return static_cast<uint64_t>(((static_cast<unsigned __int128>(j) << 64) + N - 1) / N);
  };
  auto highest = [&](size_t j) { return j + 1 == N ? UINT64_MAX : lowest(j + 1) - 1; };
  for (size_t j = 0; j < N; ++j) {
    ASSERT_EQ(home_slot(lowest(j), N), j);
    ASSERT_EQ(home_slot(highest(j), N), j);
    if (j) {
      ASSERT_EQ(home_slot(lowest(j) - 1, N), j - 1);
    }
  }
  // Slots 10..29, inserted from the top down so nobody is displaced: each
  // key lands exactly on its home slot.
  bool ins;
  const CEntry* slots = nullptr;
  for (size_t j = N; j-- > 10;) {
    uint64_t h = j % 2 ? highest(j) : lowest(j);
    CEntry* e = t.find_or_insert(h, kv(u64key(j)), &ins);
    ASSERT_NE(e, nullptr);
    ASSERT_TRUE(ins);
    e->state.n = static_cast<int64_t>(j);
    Layout L = layout_of(mem, e);
    ASSERT_EQ(L.nslots, N) << "the slot count is not a power of two: it fills the usable block";
    if (!slots) slots = L.slots;
    ASSERT_EQ(L.slots, slots);  // at most 22 keys: no growth (3/4 of 30 is 22.5)
    EXPECT_EQ(static_cast<size_t>(e - L.slots), j);
  }
  EXPECT_EQ(mem.bytes_allocated(), 976u);
  // One more key whose home is the (occupied) last slot wraps to slot 0.
  CEntry* w = t.find_or_insert(UINT64_MAX - 1, kv(u64key(99)), &ins);
  ASSERT_NE(w, nullptr);
  ASSERT_TRUE(ins);
  EXPECT_EQ(w - slots, 0);
  // ...and a key whose home is slot 0 is displaced to slot 1.
  CEntry* z = t.find_or_insert(0, kv(u64key(100)), &ins);
  ASSERT_NE(z, nullptr);
  ASSERT_TRUE(ins);
  EXPECT_EQ(z - slots, 1);
  EXPECT_EQ(t.size(), 22u);
  EXPECT_EQ(mem.bytes_allocated(), 976u);  // still the first slot array
  EXPECT_EQ(check_layout(t, layout_of(mem, w)), 1u);  // only the key in slot 0 wrapped
  // pack(true): the hash-0 key first, the wrapped key (UINT64_MAX - 1) just
  // before the key in the last slot (UINT64_MAX).
  const CEntry* es = t.pack(true);
  ASSERT_EQ(es, slots);
  std::vector<uint64_t> got;
  for (size_t i = 0; i < 22; ++i) got.push_back(es[i].hash);
  EXPECT_TRUE(std::is_sorted(got.begin(), got.end()));
  EXPECT_EQ(got.front(), 0u);
  EXPECT_EQ(got[20], UINT64_MAX - 1);
  EXPECT_EQ(got[21], UINT64_MAX);
  EXPECT_EQ(es[20].state.n, 0);  // the wrapped key's state came along
  EXPECT_EQ(es[21].state.n, 29);
}

TEST(TableLayout, TwentyThirdKeyGrowsThirtySlotsToSixtyTwo) {
  RoundingSource mem;
  CTable t;
  t.init(&mem, 1 << 20, true, kBytewise);
  bool ins;
  CEntry* e = nullptr;
  for (uint64_t i = 0; i < 22; ++i) {
    e = t.find_or_insert(mix64(i), kv(u64key(i)), &ins);
    ASSERT_NE(e, nullptr);
  }
  EXPECT_EQ(layout_of(mem, e).nslots, 30u);  // 22 * 4 = 88 <= 90
  e = t.find_or_insert(mix64(22), kv(u64key(22)), &ins);
  ASSERT_NE(e, nullptr);
  // 60 entries = 1920 bytes -> 2048-byte block -> 2000 usable = 62 slots.
  EXPECT_EQ(layout_of(mem, e).nslots, 62u);
  EXPECT_EQ(mem.bytes_allocated(), 2000u);
  EXPECT_EQ(mem.live_blocks(), 1u);
  EXPECT_EQ(mem.unrounded(), 0u);
  check_layout(t, layout_of(mem, e));
}

TEST(TableLayout, FirstInsertBytesUsesUsableSizes) {
  for (bool inl : {true, false}) {
    RoundingSource mem;
    CTable t;
    t.init(&mem, 1 << 20, inl, kBytewise);
    size_t predicted = t.first_insert_bytes(8);
    EXPECT_EQ(predicted, inl ? 976u : 976u + 464u);  // 256-byte first chunk -> 464 usable
    bool ins;
    ASSERT_NE(t.find_or_insert(hash_of("12345678"), kv("12345678"), &ins), nullptr);
    EXPECT_EQ(mem.bytes_allocated(), predicted) << inl;
    EXPECT_EQ(mem.unrounded(), 0u);
  }
}

TEST(TableLayout, HundredThousandInlineKeysWithRoundedSlotArrays) {
  RoundingSource mem;
  CTable t;
  const size_t budget = size_t{32} << 20;
  t.init(&mem, budget, /*inline_keys=*/true, kBytewise);
  const size_t N = 100000;
  bool ins;
  for (size_t i = 0; i < N; ++i) {
    CEntry* e = t.find_or_insert(mix64(i), kv(u64key(i * 0x9E3779B97F4A7C15ULL)), &ins);
    ASSERT_NE(e, nullptr) << i;
    ASSERT_TRUE(ins);
    e->state.n = static_cast<int64_t>(i) + 1;
    // Inline keys: the slot array is the only block, of the predicted size.
    size_t slots = expected_slots(mem, i + 1);
    ASSERT_EQ(mem.bytes_allocated(), mem.usable_size(slots * sizeof(CEntry))) << "after " << i + 1 << " keys";
    ASSERT_EQ(mem.bytes_allocated() / sizeof(CEntry), slots);
    ASSERT_EQ(mem.live_blocks(), 1u);
    ASSERT_LE(mem.bytes_allocated(), budget);
  }
  EXPECT_EQ(mem.unrounded(), 0u);
  EXPECT_LE(mem.peak(), size_t{12} << 20);  // old 4 MiB + new 8 MiB slot arrays while growing
  bool ins2;
  CEntry* any = t.find_or_insert(mix64(0), kv(u64key(0)), &ins2);  // key 0 is u64key(0)
  ASSERT_NE(any, nullptr);
  ASSERT_FALSE(ins2);
  Layout L = layout_of(mem, any);
  // 100000 keys need > 133333 slots: an 8 MiB block, 8 MiB - 48 usable bytes.
  EXPECT_EQ(L.nslots, ((size_t{8} << 20) - 48) / sizeof(CEntry));
  EXPECT_NE(L.nslots & (L.nslots - 1), 0u) << "slot count should not be a power of two";
  EXPECT_EQ(L.nslots, expected_slots(mem, N));
  check_layout(t, L);
  for (size_t i = 0; i < N; ++i) {
    CEntry* e = t.find_or_insert(mix64(i), kv(u64key(i * 0x9E3779B97F4A7C15ULL)), &ins);
    ASSERT_NE(e, nullptr);
    ASSERT_FALSE(ins) << i;
    ASSERT_EQ(e->state.n, static_cast<int64_t>(i) + 1);
    ASSERT_EQ(str(t.key_of(*e)), u64key(i * 0x9E3779B97F4A7C15ULL));
  }
  EXPECT_EQ(t.size(), N);
}

TEST(TableLayout, HundredThousandStringKeysWithRoundedChunks) {
  RoundingSource mem;
  CTable t;
  const size_t budget = size_t{32} << 20;  // arena max chunk: clamp(2 MiB, 1 KiB, 64 KiB) = 64 KiB
  t.init(&mem, budget, /*inline_keys=*/false, kBytewise);
  const size_t N = 100000;
  std::mt19937_64 rng(11);
  std::vector<std::string> keys;
  keys.reserve(N);
  size_t aligned_key_bytes = 0;
  bool ins;
  for (size_t i = 0; i < N; ++i) {
    keys.push_back(string_key(i, rng));
    std::string buf = keys.back();
    CEntry* e = t.find_or_insert(hash_of(buf), kv(buf), &ins);
    ASSERT_NE(e, nullptr) << i;
    ASSERT_TRUE(ins);
    e->state.n = static_cast<int64_t>(i) + 7;
    std::fill(buf.begin(), buf.end(), '#');  // the table keeps its own copy
    aligned_key_bytes += align8(keys.back().size());
    ASSERT_LE(mem.bytes_allocated(), budget);
  }
  EXPECT_EQ(t.size(), N);
  EXPECT_EQ(mem.unrounded(), 0u) << "every block requested at a usable size";
  EXPECT_LE(mem.peak(), size_t{16} << 20);

  CEntry* any = t.find_or_insert(hash_of(keys[0]), kv(keys[0]), &ins);
  ASSERT_NE(any, nullptr);
  ASSERT_FALSE(ins);
  Layout L = layout_of(mem, any);
  EXPECT_EQ(L.nslots, expected_slots(mem, N));
  check_layout(t, L);
  for (size_t i = 0; i < N; ++i) {
    CEntry* e = t.find_or_insert(hash_of(keys[i]), kv(keys[i]), &ins);
    ASSERT_NE(e, nullptr);
    ASSERT_FALSE(ins) << i;
    ASSERT_EQ(e->state.n, static_cast<int64_t>(i) + 7);
    ASSERT_EQ(str(t.key_of(*e)), keys[i]);
    // The key bytes lie inside one live chunk (not the slot array).
    auto [b, n] = mem.block_of(e->key.ptr);
    ASSERT_NE(b, nullptr);
    ASSERT_NE(b, reinterpret_cast<const uint8_t*>(L.slots));
    ASSERT_LE(e->key.ptr + e->key_len, b + n);
  }

  // The chunks: every live block but the slot array, in allocation order,
  // at the usable sizes of 256, 512, ... 64 KiB (then 64 KiB on).
  std::vector<size_t> chunks;
  for (auto [b, n] : mem.live_in_order())
    if (b != reinterpret_cast<const uint8_t*>(L.slots)) chunks.push_back(n);
  ASSERT_GT(chunks.size(), 10u);
  size_t want = ChunkArena::kFirstChunk, total = 0;
  for (size_t i = 0; i < chunks.size(); ++i) {
    ASSERT_EQ(chunks[i], mem.usable_size(want)) << "chunk " << i;
    want = std::min<size_t>(want * 2, 64 * 1024);
    total += chunks[i];
  }
  EXPECT_EQ(chunks.back(), 131072u - 48);
  // The chunks are used to their (rounded) end: all but the last waste less
  // than one key (40 bytes) each.
  EXPECT_GE(total, aligned_key_bytes);
  EXPECT_LE(total, aligned_key_bytes + 40 * (chunks.size() - 1) + chunks.back());
  t.clear();
  EXPECT_EQ(mem.bytes_allocated(), 0u);
}

TEST(TableLayout, ChunkArenaTakesRoundedChunksAndUsesThemWhole) {
  RoundingSource mem;
  ChunkArena a;
  a.init(&mem, 4096);
  ASSERT_EQ(a.next_chunk_bytes(8), 464u);  // usable_size(256)
  // 58 8-byte pieces fill the 464-byte first chunk exactly.
  const uint8_t* first = nullptr;
  for (int i = 0; i < 58; ++i) {
    uint8_t* p = a.allocate(8);
    std::memset(p, i, 8);
    if (!first) first = p;
    EXPECT_EQ(p, first + 8 * i);
  }
  EXPECT_EQ(mem.requests(), (std::vector<size_t>{464}));
  ASSERT_EQ(a.next_chunk_bytes(8), 976u);  // usable_size(512)
  uint8_t* second = a.allocate(8);
  EXPECT_EQ(mem.requests(), (std::vector<size_t>{464, 976}));
  EXPECT_EQ(mem.block_of(second).first, second);
  // Oversized (more than a quarter of the nominal 1024-byte chunk, and more
  // than is left in the current one): its own block at a usable size; the
  // current chunk stays current.
  ASSERT_EQ(a.next_chunk_bytes(1500), 2000u);  // usable_size(1504)
  uint8_t* big = a.allocate(1500);
  std::memset(big, 0xB, 2000);  // the whole usable block is the key's
  EXPECT_EQ(mem.requests(), (std::vector<size_t>{464, 976, 2000}));
  EXPECT_EQ(mem.block_of(big).first, big);
  uint8_t* next = a.allocate(8);
  EXPECT_EQ(next, second + 8);
  uint8_t* quarter = a.allocate(256);  // fits what is left: bumped
  EXPECT_EQ(quarter, second + 16);
  EXPECT_EQ(mem.requests().size(), 3u);
  // Fill up: the chunk is used to its usable end (976), then chunks of
  // usable_size(1024), (2048), (4096), (4096).
  size_t in_second = 16 + 256;  // 8 + 8 + 256 bytes used
  while (in_second + 8 <= 976) {
    uint8_t* p = a.allocate(8);
    EXPECT_EQ(p, second + in_second);
    in_second += 8;
  }
  EXPECT_EQ(mem.requests().size(), 3u);
  std::vector<size_t> chunk_sizes;
  for (int i = 0; i < 4; ++i) {
    size_t before = mem.requests().size();
    size_t want = a.next_chunk_bytes(8);
    uint8_t* p = a.allocate(8);
    ASSERT_EQ(mem.requests().size(), before + 1);
    EXPECT_EQ(mem.requests().back(), want);
    chunk_sizes.push_back(want);
    // Use the rest of this chunk.
    for (size_t used = 8; used + 8 <= want; used += 8) {
      uint8_t* q = a.allocate(8);
      EXPECT_EQ(q, p + used);
    }
    EXPECT_EQ(mem.requests().size(), before + 1);
  }
  EXPECT_EQ(chunk_sizes, (std::vector<size_t>{2000, 4048, 8144, 8144}));
  EXPECT_EQ(mem.unrounded(), 0u);

  // allocate_within(): refuses exactly when the rounded chunk would pass the limit.
  size_t need = a.next_chunk_bytes(8);
  EXPECT_EQ(need, 8144u);
  EXPECT_EQ(a.allocate_within(8, mem.bytes_allocated() + need - 1), nullptr);
  size_t before = mem.requests().size();
  EXPECT_NE(a.allocate_within(8, mem.bytes_allocated() + need), nullptr);
  EXPECT_EQ(mem.requests().size(), before + 1);
  a.forget();
  mem.release_all();
}

// --- pack() ---

namespace {

enum class Dist { kUniform, kNearMax, kNearMaxAndZero, kFewValues, kAllMax, kAllZero, kDescending };
const char* dist_name(Dist d) {
  switch (d) {
    case Dist::kUniform: return "uniform";
    case Dist::kNearMax: return "near-max";
    case Dist::kNearMaxAndZero: return "near-max-and-zero";
    case Dist::kFewValues: return "few-values";
    case Dist::kAllMax: return "all-max";
    case Dist::kAllZero: return "all-zero";
    case Dist::kDescending: return "descending";
  }
  return "?";
}

// Produces hash i of a trial.
class HashGen {
 public:
  HashGen(Dist d, uint64_t seed) : d_(d), rng_(seed) {
    shift_ = 2 + rng_() % 40;
    span_ = UINT64_MAX >> shift_;
    size_t v = 1 + rng_() % 8;
    uint64_t step = rng_() % 1000;
    uint64_t base = rng_() % 3 == 0 ? UINT64_MAX - 8 * 1000 : rng_() >> 1;
    for (size_t j = 0; j < v; ++j) pool_.push_back(base + j * step);
    desc_step_ = (UINT64_MAX >> (10 + rng_() % 40)) | 1;
  }
  uint64_t operator()(size_t i) {
    switch (d_) {
      case Dist::kUniform: return rng_();
      case Dist::kNearMax: return UINT64_MAX - rng_() % span_;
      case Dist::kNearMaxAndZero: {
        unsigned r = static_cast<unsigned>(rng_() % 10);
        if (r < 3) return UINT64_MAX - rng_() % span_;
        if (r < 6) return rng_() % span_;
        return rng_();
      }
      case Dist::kFewValues: return pool_[rng_() % pool_.size()];
      case Dist::kAllMax: return UINT64_MAX;
      case Dist::kAllZero: return 0;
      case Dist::kDescending: {
        // Decreasing hashes, packed densely near the top: long clusters
        // stored in reverse hash order.
        unsigned __int128 d = static_cast<unsigned __int128>(desc_step_) * i;
        return d > UINT64_MAX ? rng_() % 1024 : UINT64_MAX - static_cast<uint64_t>(d);
      }
    }
    return 0;
  }

 private:
  Dist d_;
  std::mt19937_64 rng_;
  unsigned shift_;
  uint64_t span_, desc_step_;
  std::vector<uint64_t> pool_;
};

using Item = std::tuple<uint64_t, std::string, int64_t>;  // hash, key, state

struct PackStats {
  size_t trials = 0, wrapped_trials = 0, at_limit_trials = 0, fallback_trials = 0, odd_slot_trials = 0;
};

// Builds a table of `count` keys (or, with fill_to_limit, as many as its
// slot array takes at the 3/4 load limit), checks its layout, packs it and
// checks that the packed entries are exactly the inserted ones (in hash
// order if sorted).
void pack_trial(Dist d, size_t count, bool fill_to_limit, bool round, bool inline_keys, bool sorted,
                uint64_t seed, PackStats* stats) {
  SCOPED_TRACE(testing::Message() << dist_name(d) << " count=" << count << " fill=" << fill_to_limit
                                  << " round=" << round << " inline=" << inline_keys << " seed=" << seed);
  RoundingSource mem(round);
  CTable t;
  t.init(&mem, size_t{1} << 30, inline_keys, kBytewise);
  HashGen gen(d, seed);
  std::mt19937_64 krng(seed ^ 0xABCDEF);
  std::vector<Item> items;
  CEntry* last = nullptr;
  auto insert_one = [&]() {
    size_t i = items.size();
    uint64_t h = gen(i);
    std::string k = inline_keys ? u64key(mix64(i)) : string_key(i, krng);
    bool ins;
    CEntry* e = t.find_or_insert(h, kv(k), &ins);
    ASSERT_NE(e, nullptr);
    ASSERT_TRUE(ins);
    e->state.n = static_cast<int64_t>(i) * 3 + 1;
    items.emplace_back(h, k, e->state.n);
    last = e;
  };
  for (size_t i = 0; i < count; ++i) {
    insert_one();
    if (testing::Test::HasFatalFailure()) return;
  }
  if (fill_to_limit) {
    size_t nslots = layout_of(mem, last).nslots;
    while ((items.size() + 1) * 4 <= nslots * 3) {
      insert_one();
      if (testing::Test::HasFatalFailure()) return;
    }
    // Exactly at the limit, in the same slot array.
    ASSERT_EQ(layout_of(mem, last).nslots, nslots);
    ASSERT_GT((items.size() + 1) * 4, nslots * 3);
    ++stats->at_limit_trials;
  }
  ASSERT_EQ(t.size(), items.size());
  // Find the current slot array through any entry.
  bool ins;
  CEntry* probe = t.find_or_insert(std::get<0>(items[0]), kv(std::get<1>(items[0])), &ins);
  ASSERT_NE(probe, nullptr);
  ASSERT_FALSE(ins);
  Layout L = layout_of(mem, probe);
  EXPECT_EQ(L.nslots, expected_slots(mem, items.size()));
  if (L.nslots & (L.nslots - 1)) ++stats->odd_slot_trials;
  size_t wrapped = check_layout(t, L);
  if (wrapped) ++stats->wrapped_trials;
  // Hashes in home order (wrapped entries last): what pack's insertion sort
  // starts from, near enough to tell whether it gives up for std::sort.
  std::vector<uint64_t> home_order, tail;
  t.for_each([&](const CEntry& e) {
    size_t i = static_cast<size_t>(&e - L.slots);
    (home_slot(e.hash, L.nslots) > i ? tail : home_order).push_back(e.hash);
  });
  home_order.insert(home_order.end(), tail.begin(), tail.end());
  if (inversions(home_order) > 16 * items.size()) ++stats->fallback_trials;

  const CEntry* es = t.pack(sorted);
  ASSERT_NE(es, nullptr);
  ASSERT_EQ(reinterpret_cast<const void*>(es), reinterpret_cast<const void*>(L.slots));
  std::vector<Item> got;
  for (size_t i = 0; i < items.size(); ++i) {
    ASSERT_NE(es[i].key_len, CTable::kEmpty) << "hole at " << i;
    got.emplace_back(es[i].hash, str(t.key_of(es[i])), es[i].state.n);
    if (sorted && i) {
      ASSERT_LE(es[i - 1].hash, es[i].hash) << "out of hash order at " << i;
    }
  }
  std::sort(got.begin(), got.end());
  std::sort(items.begin(), items.end());
  ASSERT_TRUE(got == items) << "packed entries differ from the inserted ones";
  ++stats->trials;
  t.clear();
  EXPECT_EQ(mem.bytes_allocated(), 0u);
}

}  // namespace

TEST(TableLayout, PackSortedReturnsLiveEntriesInHashOrder) {
  PackStats stats;
  uint64_t seed = 1000;
  const Dist dists[] = {Dist::kUniform,   Dist::kNearMax, Dist::kNearMaxAndZero, Dist::kFewValues,
                        Dist::kAllMax,    Dist::kAllZero, Dist::kDescending};
  for (Dist d : dists) {
    std::vector<size_t> counts = {1, 2, 3, 5, 16, 22, 23, 40, 100, 300, 1000};
    if (d == Dist::kUniform) counts.insert(counts.end(), {5000, 30000});
    for (size_t n : counts)
      for (bool fill : {false, true}) {
        ++seed;
        bool round = seed % 2 == 0;
        bool inl = (seed / 2) % 2 == 0;
        pack_trial(d, n, fill, round, inl, /*sorted=*/true, seed, &stats);
        if (HasFatalFailure()) return;
        // Concentrated hashes: also the other source, so both power-of-two
        // and rounded slot counts see wrapped probes.
        if (d != Dist::kUniform && n <= 300) {
          pack_trial(d, n, fill, !round, !inl, true, seed + 7777, &stats);
          if (HasFatalFailure()) return;
        }
      }
  }
  // The trials covered what they are meant to.
  EXPECT_GT(stats.wrapped_trials, 20u) << "probes that wrapped past the last slot";
  EXPECT_GT(stats.at_limit_trials, 50u);
  EXPECT_GT(stats.fallback_trials, 5u) << "tables whose clusters send pack() to std::sort";
  EXPECT_GT(stats.odd_slot_trials, 50u) << "slot counts that are not powers of two";
}

TEST(TableLayout, PackUnsortedReturnsExactlyTheLiveEntries) {
  PackStats stats;
  uint64_t seed = 5000;
  for (Dist d : {Dist::kUniform, Dist::kNearMax, Dist::kNearMaxAndZero, Dist::kFewValues, Dist::kAllMax})
    for (size_t n : {1, 3, 22, 23, 200, 1000})
      for (bool fill : {false, true}) {
        ++seed;
        pack_trial(d, n, fill, seed % 2 == 0, (seed / 2) % 2 == 0, /*sorted=*/false, seed, &stats);
        if (HasFatalFailure()) return;
      }
  EXPECT_GT(stats.wrapped_trials, 5u);
}

// --- budget ---

TEST(TableLayout, BudgetLimitedInlineTableWithRoundedSlots) {
  RoundingSource mem;
  CTable t;
  const size_t budget = 8192;
  t.init(&mem, budget, true, kBytewise);
  // Slot arrays: 976 (30 slots) -> 2000 (62) -> 4048 (126); the next,
  // 8144 bytes, cannot be held next to the 4048 within 8192: 3/4 of 126 = 94 keys.
  ASSERT_GT(4048u + mem.usable_size(126 * 2 * sizeof(CEntry)), budget);
  ASSERT_LE(2000u + 4048u, budget);
  bool ins;
  size_t accepted = 0;
  for (uint64_t i = 0;; ++i) {
    CEntry* e = t.find_or_insert(mix64(i), kv(u64key(i)), &ins);
    ASSERT_LE(mem.peak(), budget);
    if (!e) break;
    ASSERT_TRUE(ins);
    e->state.n = static_cast<int64_t>(i);
    ++accepted;
    ASSERT_LT(accepted, 1000u);
  }
  EXPECT_EQ(accepted, 94u);
  EXPECT_EQ(mem.bytes_allocated(), 4048u);
  // Refusals insert and allocate nothing...
  for (uint64_t i = 1000; i < 1100; ++i) EXPECT_EQ(t.find_or_insert(mix64(i), kv(u64key(i)), &ins), nullptr);
  EXPECT_EQ(t.size(), 94u);
  EXPECT_EQ(mem.bytes_allocated(), 4048u);
  // ...and every existing key is still found.
  for (uint64_t i = 0; i < 94; ++i) {
    CEntry* e = t.find_or_insert(mix64(i), kv(u64key(i)), &ins);
    ASSERT_NE(e, nullptr);
    EXPECT_FALSE(ins);
    EXPECT_EQ(e->state.n, static_cast<int64_t>(i));
  }
  EXPECT_LE(mem.peak(), budget);
  EXPECT_EQ(mem.unrounded(), 0u);
}

TEST(TableLayout, BudgetSweepInlineTableNeverPassesItsBudget) {
  // Every budget from below the first slot array up: the growth check must
  // use the rounded size of the next slot array, so the peak (old and new
  // array together) never passes the budget, and the table grows as far as
  // the budget allows.
  RoundingSource sizes;
  for (size_t budget = 900; budget <= 40000; budget += 24) {
    SCOPED_TRACE(budget);
    size_t nslots = sizes.usable_size(16 * sizeof(CEntry)) / sizeof(CEntry);
    size_t bytes = sizes.usable_size(16 * sizeof(CEntry));
    for (;;) {
      size_t next = sizes.usable_size(nslots * 2 * sizeof(CEntry));
      if (bytes + next > budget) break;
      bytes = next;
      nslots = next / sizeof(CEntry);
    }
    size_t expect = budget < sizes.usable_size(16 * sizeof(CEntry)) ? 1 : nslots * 3 / 4;

    RoundingSource mem;
    CTable t;
    t.init(&mem, budget, true, kBytewise);
    bool ins;
    size_t accepted = 0;
    for (uint64_t i = 0; accepted < 100000; ++i) {
      if (!t.find_or_insert(mix64(i), kv(u64key(i)), &ins)) break;
      ++accepted;
    }
    ASSERT_EQ(accepted, expect);
    if (accepted > 1) {
      ASSERT_LE(mem.peak(), budget);
    }
  }
}

TEST(TableLayout, BudgetLimitedArenaTableWithRoundedChunks) {
  std::vector<size_t> budgets = {4096, 16384, 100000};
  for (size_t b = 2000; b < 30000; b += 232) budgets.push_back(b);
  for (size_t budget : budgets) {
    SCOPED_TRACE(budget);
    RoundingSource mem;
    CTable t;
    t.init(&mem, budget, false, kBytewise);
    std::mt19937_64 rng(budget);
    std::vector<std::string> keys;
    bool ins;
    for (;;) {
      std::string k = string_key(keys.size(), rng);
      CEntry* e = t.find_or_insert(hash_of(k), kv(k), &ins);
      ASSERT_LE(mem.peak(), budget);
      if (!e) {
        EXPECT_EQ(t.size(), keys.size());
        // A refusal may have grown the slot array first (within budget),
        // but it never stores the key; asking again is refused without
        // allocating anything.
        EXPECT_LE(mem.bytes_allocated(), budget);
        size_t bytes = mem.bytes_allocated();
        EXPECT_EQ(t.find_or_insert(hash_of(k), kv(k), &ins), nullptr);
        EXPECT_EQ(mem.bytes_allocated(), bytes);
        EXPECT_EQ(t.size(), keys.size());
        break;
      }
      ASSERT_TRUE(ins);
      e->state.n = static_cast<int64_t>(keys.size());
      keys.push_back(k);
      ASSERT_LT(keys.size(), 100000u);
    }
    EXPECT_GT(keys.size(), 10u);
    // More new keys: refused, or taken within budget.
    size_t refused = 0;
    for (int i = 0; i < 50; ++i) {
      std::string k = "new-" + std::to_string(i);
      if (!t.find_or_insert(hash_of(k), kv(k), &ins)) ++refused;
      else keys.push_back(k);  // a short key may still fit a chunk's free bytes
      ASSERT_LE(mem.peak(), budget);
    }
    EXPECT_GT(refused, 0u);
    EXPECT_LE(mem.bytes_allocated(), budget);
    for (size_t i = 0; i < keys.size(); ++i) {
      CEntry* e = t.find_or_insert(hash_of(keys[i]), kv(keys[i]), &ins);
      ASSERT_NE(e, nullptr) << i;
      ASSERT_FALSE(ins);
      ASSERT_EQ(str(t.key_of(*e)), keys[i]);
    }
    EXPECT_EQ(mem.unrounded(), 0u);
    // clear() starts over within budget.
    t.clear();
    EXPECT_EQ(mem.bytes_allocated(), 0u);
    ASSERT_NE(t.find_or_insert(hash_of(keys[0]), kv(keys[0]), &ins), nullptr);
    EXPECT_TRUE(ins);
  }
}

TEST(TableLayout, TinyBudgetStillTakesOneKey) {
  RoundingSource mem;
  CTable t;
  t.init(&mem, 100, true, kBytewise);  // below even the first (976-byte) slot array
  bool ins;
  CEntry* e = t.find_or_insert(mix64(1), kv(u64key(1)), &ins);
  ASSERT_NE(e, nullptr);
  EXPECT_TRUE(ins);
  EXPECT_EQ(mem.bytes_allocated(), 976u);
  EXPECT_EQ(t.find_or_insert(mix64(2), kv(u64key(2)), &ins), nullptr);
  e = t.find_or_insert(mix64(1), kv(u64key(1)), &ins);
  ASSERT_NE(e, nullptr);
  EXPECT_FALSE(ins);
  EXPECT_EQ(t.size(), 1u);
}
