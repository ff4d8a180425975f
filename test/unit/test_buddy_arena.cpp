// buddy_arena.h (BuddyArena): power-of-two blocks carved from one fixed
// region, split on allocation and coalesced with their buddies on release.
#include <gtest/gtest.h>

#include <algorithm>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <iterator>
#include <map>
#include <new>
#include <random>
#include <utility>
#include <vector>

#include "buddy_arena.h"

using spillagg::BuddyArena;

namespace {

constexpr size_t kMiB = size_t{1} << 20;
constexpr size_t kMin = size_t{1} << BuddyArena::kMinOrder;  // 64
constexpr size_t kHdr = BuddyArena::kHeader;                 // 16

// A 16-byte aligned buffer of exactly `bytes` (rounded up to 16 for
// aligned_alloc), so AddressSanitizer catches a block that runs past it.
class Region {
 public:
  explicit Region(size_t bytes)
      : p_(static_cast<uint8_t*>(std::aligned_alloc(16, std::max<size_t>(16, (bytes + 15) & ~size_t{15})))) {
    if (!p_) throw std::bad_alloc();
  }
  ~Region() { std::free(p_); }
  Region(const Region&) = delete;
  Region& operator=(const Region&) = delete;
  uint8_t* get() const { return p_; }

 private:
  uint8_t* p_;
};

size_t floor_pow2(size_t n) {
  size_t p = 1;
  while (p <= n / 2) p <<= 1;
  return n ? p : 0;
}

// The top blocks of a region: its size's binary expansion, largest first,
// laid out from offset 0. Pairs of (offset, size).
std::vector<std::pair<size_t, size_t>> top_blocks(size_t capacity) {
  std::vector<std::pair<size_t, size_t>> out;
  size_t off = 0;
  for (size_t bit = size_t{1} << 62; bit >= kMin; bit >>= 1)
    if (capacity & bit) {
      out.emplace_back(off, bit);
      off += bit;
    }
  return out;
}

bool aligned16(const void* p) { return reinterpret_cast<uintptr_t>(p) % 16 == 0; }

bool filled_with(const uint8_t* p, size_t n, uint8_t v) {
  return std::all_of(p, p + n, [v](uint8_t c) { return c == v; });
}

// Checks where a block of `bb` bytes whose payload is `p` lies: inside one
// top block, aligned to its own size relative to that top block, payload
// 16-byte aligned. Returns the block's offset in the region.
size_t check_placement(const BuddyArena& a, const uint8_t* base, const void* p, size_t bb) {
  const uint8_t* blk = static_cast<const uint8_t*>(p) - kHdr;
  EXPECT_TRUE(aligned16(p));
  EXPECT_TRUE(a.contains(p));
  EXPECT_GE(blk, base);
  size_t off = static_cast<size_t>(blk - base);
  EXPECT_LE(off + bb, a.capacity()) << "block crosses the region end";
  bool in_top = false;
  for (auto [toff, tsize] : top_blocks(a.capacity()))
    if (off >= toff && off < toff + tsize) {
      in_top = true;
      EXPECT_LE(off + bb, toff + tsize) << "block crosses a top-block boundary";
      EXPECT_EQ((off - toff) % bb, 0u) << "block not aligned to its size within its top block";
    }
  EXPECT_TRUE(in_top);
  EXPECT_TRUE(a.contains(blk + bb - 1));
  return off;
}

}  // namespace

TEST(BuddyArena, BlockBytesRoundsPayloadPlusHeaderToAPowerOfTwo) {
  EXPECT_EQ(BuddyArena::block_bytes(0), 64u);  // the minimum block
  EXPECT_EQ(BuddyArena::block_bytes(1), 64u);
  EXPECT_EQ(BuddyArena::block_bytes(48), 64u);
  EXPECT_EQ(BuddyArena::block_bytes(49), 128u);
  EXPECT_EQ(BuddyArena::block_bytes(112), 128u);
  EXPECT_EQ(BuddyArena::block_bytes(113), 256u);
  for (size_t k = 7; k < 40; ++k) {
    size_t b = size_t{1} << k;
    EXPECT_EQ(BuddyArena::block_bytes(b - kHdr), b) << k;
    EXPECT_EQ(BuddyArena::block_bytes(b - kHdr + 1), 2 * b) << k;
  }
}

TEST(BuddyArena, PowerOfTwoRegionHandsOutItsWholeCapacityAsOneBlock) {
  const size_t bytes = kMiB;
  Region r(bytes);
  BuddyArena a;
  a.init(r.get(), bytes);
  const size_t cap = a.capacity();
  ASSERT_EQ(cap, bytes);
  EXPECT_EQ(a.free_bytes(), cap);
  ASSERT_EQ(BuddyArena::block_bytes(cap - kHdr), cap);

  for (int round = 0; round < 3; ++round) {
    // One byte more than fits never succeeds (it needs a 2 MiB block).
    EXPECT_EQ(a.allocate(cap - kHdr + 1), nullptr);
    EXPECT_EQ(a.free_bytes(), cap);
    void* p = a.allocate(cap - kHdr);
    ASSERT_NE(p, nullptr) << round;
    EXPECT_EQ(p, r.get() + kHdr);
    EXPECT_TRUE(aligned16(p));
    EXPECT_TRUE(a.contains(p));
    EXPECT_EQ(a.free_bytes(), 0u);
    // The whole payload is writable.
    std::memset(p, 0xA0 + round, cap - kHdr);
    EXPECT_EQ(a.allocate(0), nullptr);  // nothing left, not even a minimum block
    EXPECT_EQ(a.allocate(1), nullptr);
    EXPECT_TRUE(filled_with(static_cast<uint8_t*>(p), cap - kHdr, static_cast<uint8_t>(0xA0 + round)));
    a.release(p);
    EXPECT_EQ(a.free_bytes(), cap);

    // Split it down to minimum blocks and back: the whole block returns.
    void* small = a.allocate(1);
    ASSERT_NE(small, nullptr);
    EXPECT_EQ(small, r.get() + kHdr);  // lowest half kept at every split
    EXPECT_EQ(a.free_bytes(), cap - kMin);
    EXPECT_EQ(a.allocate(cap - kHdr), nullptr);  // the top block is split now
    void* half = a.allocate(cap / 2 - kHdr);  // the upper half is still one free block
    ASSERT_NE(half, nullptr);
    EXPECT_EQ(half, r.get() + cap / 2 + kHdr);
    a.release(half);
    a.release(small);
    EXPECT_EQ(a.free_bytes(), cap);
  }

  // contains() covers exactly the region.
  EXPECT_TRUE(a.contains(r.get()));
  EXPECT_TRUE(a.contains(r.get() + cap - 1));
  EXPECT_FALSE(a.contains(r.get() + cap));
}

TEST(BuddyArena, HugeRequestsAreRefused) {
  const size_t bytes = 64 * 1024;
  Region r(bytes);
  BuddyArena a;
  a.init(r.get(), bytes);
  EXPECT_EQ(a.allocate(bytes), nullptr);
  EXPECT_EQ(a.allocate(bytes * 1024), nullptr);
  EXPECT_EQ(a.allocate(size_t{1} << 47), nullptr);
  EXPECT_EQ(a.allocate(size_t{1} << 60), nullptr);
  EXPECT_FALSE(a.can_allocate(bytes));
  EXPECT_FALSE(a.can_allocate(size_t{1} << 60));
  EXPECT_EQ(a.free_bytes(), bytes);
}

TEST(BuddyArena, NonPowerOfTwoRegionIsCoveredByItsTopBlocks) {
  struct Case {
    size_t bytes, capacity;
  };
  for (Case c : {Case{5 * kMiB + 192, 5 * kMiB + 192}, Case{3 * 4096, 3 * 4096},
                 Case{5 * kMiB + 200, 5 * kMiB + 192},  // rounded down to a multiple of 64
                 Case{3 * 4096 + 63, 3 * 4096}, Case{7 * 64 + 17, 7 * 64}, Case{100, 64},
                 Case{(size_t{1} << 21) - 64, (size_t{1} << 21) - 64}}) {
    SCOPED_TRACE(c.bytes);
    Region r(c.bytes);
    BuddyArena a;
    a.init(r.get(), c.bytes);
    const size_t cap = a.capacity();
    ASSERT_EQ(cap, c.capacity);
    ASSERT_EQ(cap % 64, 0u);
    EXPECT_EQ(a.free_bytes(), cap);
    EXPECT_TRUE(a.contains(r.get() + cap - 1));
    EXPECT_FALSE(a.contains(r.get() + cap));  // the rounded-off tail is not the arena's

    // The largest single allocation is the largest power of two <= capacity.
    const size_t top = floor_pow2(cap);
    EXPECT_EQ(a.max_block(), top);
    EXPECT_EQ(BuddyArena::max_block_for(c.bytes), top);
    EXPECT_TRUE(a.can_allocate(top - kHdr));
    EXPECT_FALSE(a.can_allocate(top - kHdr + 1));
    EXPECT_EQ(a.allocate(top - kHdr + 1), nullptr);
    void* p = a.allocate(top - kHdr);
    ASSERT_NE(p, nullptr);
    EXPECT_EQ(p, r.get() + kHdr);  // the largest top block comes first
    check_placement(a, r.get(), p, top);
    std::memset(p, 0x5A, top - kHdr);
    EXPECT_EQ(a.free_bytes(), cap - top);
    a.release(p);
    EXPECT_EQ(a.free_bytes(), cap);

    // Every top block can be taken whole, each exactly once; then nothing is left.
    auto tops = top_blocks(cap);
    std::vector<void*> taken;
    for (auto [off, size] : tops) {
      void* q = a.allocate(size - kHdr);
      ASSERT_NE(q, nullptr) << "top block of " << size << " at " << off;
      EXPECT_EQ(q, r.get() + off + kHdr);
      check_placement(a, r.get(), q, size);
      std::memset(q, 0x11, size - kHdr);
      taken.push_back(q);
    }
    EXPECT_EQ(a.free_bytes(), 0u);
    EXPECT_EQ(a.allocate(0), nullptr);
    // Released top blocks never coalesce with their neighbours: each stays
    // its own size (a merged block would cross the region end).
    for (void* q : taken) a.release(q);
    EXPECT_EQ(a.free_bytes(), cap);
    EXPECT_EQ(a.allocate(top - kHdr + 1), nullptr);
    for (auto [off, size] : tops) {
      void* q = a.allocate(size - kHdr);
      ASSERT_NE(q, nullptr);
      EXPECT_EQ(q, r.get() + off + kHdr);
    }
    EXPECT_EQ(a.free_bytes(), 0u);
  }
}

TEST(BuddyArena, ZeroCapacityRegionRefusesEverything) {
  Region r(64);
  BuddyArena a;
  a.init(r.get(), 63);  // rounds down to nothing
  EXPECT_EQ(a.capacity(), 0u);
  EXPECT_EQ(a.free_bytes(), 0u);
  EXPECT_EQ(a.max_block(), 0u);
  EXPECT_FALSE(a.can_allocate(0));
  EXPECT_EQ(a.allocate(0), nullptr);
  EXPECT_FALSE(a.contains(r.get()));
}

namespace {

// Whether some free, size-aligned range of `bb` bytes exists inside one top
// block, given the live blocks (offset -> size). With full coalescing such a
// range is always (part of) a free block, so allocate() must not fail then.
bool some_free_block_fits(const std::map<size_t, size_t>& live, size_t capacity, size_t bb) {
  for (auto [toff, tsize] : top_blocks(capacity)) {
    if (tsize < bb) continue;
    size_t gap = toff;  // start of the current free gap
    auto it = live.lower_bound(toff);
    for (;;) {
      size_t gap_end = (it != live.end() && it->first < toff + tsize) ? it->first : toff + tsize;
      size_t start = toff + (gap - toff + bb - 1) / bb * bb;
      if (start + bb <= gap_end) return true;
      if (gap_end == toff + tsize) break;
      gap = it->first + it->second;
      ++it;
    }
  }
  return false;
}

struct LiveBlock {
  uint8_t* payload;
  size_t bb;   // block bytes
  uint8_t pat;
};

// Random allocate/release workload; checks placement, overlap, payload
// integrity and free-byte accounting after every operation.
void random_workload(size_t region_bytes, uint64_t seed, int ops) {
  Region r(region_bytes);
  BuddyArena a;
  a.init(r.get(), region_bytes);
  const size_t cap = a.capacity();
  std::mt19937_64 rng(seed);
  std::vector<LiveBlock> live;
  std::map<size_t, size_t> by_off;  // block offset -> block bytes
  size_t live_bytes = 0;
  size_t allocs = 0, refusals = 0, releases = 0;

  auto release_one = [&](size_t idx) {
    LiveBlock b = live[idx];
    ASSERT_TRUE(filled_with(b.payload, b.bb - kHdr, b.pat)) << "payload overwritten (overlap or corrupted header)";
    by_off.erase(static_cast<size_t>(b.payload - kHdr - r.get()));
    live[idx] = live.back();
    live.pop_back();
    live_bytes -= b.bb;
    a.release(b.payload);
    ++releases;
  };

  for (int op = 0; op < ops; ++op) {
    // Phases of mostly-allocate and mostly-release, so the region fills up
    // (refusals happen) and drains (coalescing happens).
    bool filling = (op / 500) % 2 == 0;
    bool do_alloc = live.empty() || (rng() % 100) < (filling ? 75u : 30u);
    if (do_alloc) {
      unsigned bits = static_cast<unsigned>(rng() % 17);
      size_t req = 1 + rng() % (size_t{1} << bits);  // 1 .. 64 KiB, skewed to small
      size_t bb = BuddyArena::block_bytes(req);
      bool can = a.can_allocate(req);
      void* p = a.allocate(req);
      ASSERT_EQ(can, p != nullptr) << "can_allocate(" << req << ") disagrees with allocate()";
      if (!p) {
        ++refusals;
        ASSERT_FALSE(some_free_block_fits(by_off, cap, bb))
            << "allocate(" << req << ") refused although a free " << bb << "-byte range exists";
      } else {
        ++allocs;
        size_t off = check_placement(a, r.get(), p, bb);
        if (::testing::Test::HasFailure()) return;
        // No overlap with the neighbours in address order.
        auto next = by_off.lower_bound(off);
        if (next != by_off.end()) {
          ASSERT_LE(off + bb, next->first) << "overlaps the next live block";
        }
        if (next != by_off.begin()) {
          auto prev = std::prev(next);
          ASSERT_LE(prev->first + prev->second, off) << "overlaps the previous live block";
        }
        by_off.emplace(off, bb);
        uint8_t pat = static_cast<uint8_t>(rng() | 1);
        std::memset(p, pat, bb - kHdr);
        live.push_back(LiveBlock{static_cast<uint8_t*>(p), bb, pat});
        live_bytes += bb;
      }
    } else {
      release_one(rng() % live.size());
      if (::testing::Test::HasFatalFailure()) return;
    }
    ASSERT_EQ(a.free_bytes(), cap - live_bytes) << "op " << op;
  }
  // Drain in random order.
  while (!live.empty()) {
    release_one(rng() % live.size());
    if (::testing::Test::HasFatalFailure()) return;
    ASSERT_EQ(a.free_bytes(), cap - live_bytes);
  }
  EXPECT_EQ(a.free_bytes(), cap);
  // Everything coalesced back into the top blocks: each is one whole block
  // again, the largest first.
  for (auto [off, size] : top_blocks(cap)) {
    void* q = a.allocate(size - kHdr);
    ASSERT_NE(q, nullptr) << "top block of " << size << " did not coalesce";
    EXPECT_EQ(q, r.get() + off + kHdr);
  }
  EXPECT_EQ(a.free_bytes(), 0u);
  // The workload was meaningful.
  EXPECT_GT(allocs, static_cast<size_t>(ops) / 4);
  EXPECT_GT(releases, static_cast<size_t>(ops) / 4);
  EXPECT_GT(refusals, 0u) << "the region never filled up";
}

}  // namespace

TEST(BuddyArena, RandomWorkloadPowerOfTwoRegion) { random_workload(kMiB, 1, 6000); }

TEST(BuddyArena, RandomWorkloadNonPowerOfTwoRegion) {
  random_workload(kMiB + 256 * 1024 + 4096 + 320 + 40, 2, 6000);
  random_workload(3 * 4096 * 64 + 192, 3, 4000);
}

TEST(BuddyArena, ExhaustionWithMinimumBlocksAndCoalescing) {
  for (size_t bytes : {size_t{64} * 1024, size_t{3} * 4096 + 192}) {
    SCOPED_TRACE(bytes);
    Region r(bytes);
    BuddyArena a;
    a.init(r.get(), bytes);
    const size_t cap = a.capacity();
    std::vector<uint8_t*> ps;
    for (;;) {
      void* p = a.allocate(kMin - kHdr);
      if (!p) break;
      check_placement(a, r.get(), p, kMin);
      ps.push_back(static_cast<uint8_t*>(p));
      ASSERT_LE(ps.size(), cap / kMin);
    }
    ASSERT_EQ(ps.size(), cap / kMin);
    EXPECT_EQ(a.free_bytes(), 0u);
    EXPECT_FALSE(a.can_allocate(0));
    EXPECT_EQ(a.allocate(0), nullptr);
    // Every block is distinct (so they tile the region exactly).
    std::sort(ps.begin(), ps.end());
    for (size_t i = 0; i < ps.size(); ++i) EXPECT_EQ(ps[i], r.get() + i * kMin + kHdr);
    for (size_t i = 0; i < ps.size(); ++i) std::memset(ps[i], static_cast<int>(i), kMin - kHdr);

    // Free every other block: no two buddies are both free, so no 128-byte block.
    size_t freed = 0;
    for (size_t i = 0; i < ps.size(); i += 2, ++freed) a.release(ps[i]);
    EXPECT_EQ(a.free_bytes(), freed * kMin);
    EXPECT_TRUE(a.can_allocate(kMin - kHdr));
    EXPECT_FALSE(a.can_allocate(kMin - kHdr + 1));
    EXPECT_EQ(a.allocate(2 * kMin - kHdr), nullptr);
    EXPECT_EQ(a.allocate(kMin - kHdr + 1), nullptr);
    // The survivors are intact.
    for (size_t i = 1; i < ps.size(); i += 2)
      ASSERT_TRUE(filled_with(ps[i], kMin - kHdr, static_cast<uint8_t>(i))) << i;

    // Free the rest: everything coalesces.
    for (size_t i = 1; i < ps.size(); i += 2) a.release(ps[i]);
    EXPECT_EQ(a.free_bytes(), cap);
    void* p = a.allocate(2 * kMin - kHdr);
    ASSERT_NE(p, nullptr);
    a.release(p);
    size_t top = floor_pow2(cap);
    p = a.allocate(top - kHdr);
    ASSERT_NE(p, nullptr);
    EXPECT_EQ(p, r.get() + kHdr);
    a.release(p);
    EXPECT_EQ(a.free_bytes(), cap);
  }
}
