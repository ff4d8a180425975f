// keyed_table.h (KeyedTable) and memory.h (ChunkArena).
#include <gtest/gtest.h>

#include <algorithm>
#include <cctype>
#include <cstdint>
#include <map>
#include <random>
#include <set>
#include <string>
#include <vector>

#include "keyed_table.h"
#include "states.h"
#include "test_support.h"

using namespace spillagg;
using namespace spillagg_test;

namespace {

constexpr KeyEquality kBytewise{nullptr, nullptr};
using CTable = KeyedTable<Count>;
using CEntry = CTable::Entry;

std::string u64key(uint64_t v) { return std::string(reinterpret_cast<const char*>(&v), 8); }

size_t expected_slots(size_t count) {
  size_t cap = CTable::kMinSlots;
  while (count * 4 > cap * 3) cap *= 2;
  return cap;
}

// Case-insensitive ASCII equality; its hash is of the lower-cased bytes.
struct CiCtx {
  size_t calls = 0;
};
bool ci_equal(void* ctx, KeyView a, KeyView b) {
  ++static_cast<CiCtx*>(ctx)->calls;
  if (a.len != b.len) return false;
  for (uint32_t i = 0; i < a.len; ++i)
    if (std::tolower(a.data[i]) != std::tolower(b.data[i])) return false;
  return true;
}
std::string lower(std::string s) {
  for (char& c : s) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return s;
}
uint64_t ci_hash(const std::string& s) { return hash_of(lower(s)); }

CEntry* upsert(CTable& t, uint64_t h, const std::string& k, bool* inserted) {
  return t.find_or_insert(h, kv(k), inserted);
}

}  // namespace

TEST(KeyedTable, GrowsFrom16SlotsThroughManyDoublings) {
  static_assert(CTable::kMinSlots == 16, "small first slot array (thousands of GROUP BY tables)");
  TrackingSource mem;
  CTable t;
  t.init(&mem, size_t{1} << 30, /*inline_keys=*/true, kBytewise);
  EXPECT_TRUE(t.empty());
  EXPECT_EQ(mem.bytes_allocated(), 0u);  // nothing allocated before the first insert

  const size_t N = 98000;  // 16 -> 131072 slots: 13 doublings
  size_t last_slots = 0, doublings = 0;
  for (size_t i = 0; i < N; ++i) {
    bool ins = false;
    std::string k = u64key(i * 0x9E3779B97F4A7C15ULL);
    CEntry* e = upsert(t, mix64(i), k, &ins);
    ASSERT_NE(e, nullptr);
    ASSERT_TRUE(ins);
    e->state.n = static_cast<int64_t>(i) + 1;
    ASSERT_EQ(t.size(), i + 1);
    size_t slots = expected_slots(i + 1);
    // Inline keys: the slot array is the only allocation.
    ASSERT_EQ(mem.bytes_allocated(), slots * sizeof(CEntry)) << "after " << i + 1 << " keys";
    ASSERT_EQ(mem.live_blocks(), 1u);
    if (i == 0) {
      ASSERT_EQ(slots, 16u);  // the first insert takes kMinSlots slots
    }
    if (slots != last_slots) {
      if (last_slots) {
        ASSERT_EQ(slots, last_slots * 2);
        ++doublings;
      }
      last_slots = slots;
    }
  }
  EXPECT_EQ(last_slots, 131072u);
  EXPECT_EQ(doublings, 13u);
  // Every key survived every rehash with its state.
  for (size_t i = 0; i < N; ++i) {
    bool ins = true;
    std::string k = u64key(i * 0x9E3779B97F4A7C15ULL);
    CEntry* e = upsert(t, mix64(i), k, &ins);
    ASSERT_NE(e, nullptr);
    ASSERT_FALSE(ins);
    ASSERT_EQ(e->state.n, static_cast<int64_t>(i) + 1);
    ASSERT_EQ(str(t.key_of(*e)), k);
    ASSERT_EQ(e->hash, mix64(i));
  }
  EXPECT_EQ(t.size(), N);
  t.clear();
  EXPECT_EQ(mem.bytes_allocated(), 0u);
  EXPECT_TRUE(t.empty());
}

TEST(KeyedTable, InlineKeysOfEveryLengthStayDistinct) {
  TrackingSource mem;
  CTable t;
  t.init(&mem, 1 << 20, true, kBytewise);
  // Keys that differ only in length or in trailing zero bytes.
  std::vector<std::string> keys;
  for (size_t len = 0; len <= 8; ++len) {
    keys.push_back(std::string(len, '\0'));
    keys.push_back(std::string(len, 'a'));
    if (len) keys.push_back(std::string(len - 1, 'a') + '\0');
  }
  std::sort(keys.begin(), keys.end());
  keys.erase(std::unique(keys.begin(), keys.end()), keys.end());
  for (int round = 0; round < 3; ++round)
    for (size_t i = 0; i < keys.size(); ++i) {
      bool ins;
      CEntry* e = upsert(t, hash_of(keys[i]), keys[i], &ins);
      ASSERT_NE(e, nullptr);
      ASSERT_EQ(ins, round == 0) << i;
      e->state.add_one();
    }
  EXPECT_EQ(t.size(), keys.size());
  std::set<std::string> seen;
  t.for_each([&](const CEntry& e) {
    EXPECT_EQ(e.state.n, 3);
    EXPECT_LE(e.key_len, 8u);
    EXPECT_TRUE(seen.insert(str(t.key_of(e))).second);
  });
  EXPECT_EQ(seen, std::set<std::string>(keys.begin(), keys.end()));
}

TEST(KeyedTable, InlineKeysWithCollidingHashes) {
  // All keys share one hash: equality alone must separate them.
  TrackingSource mem;
  CTable t;
  t.init(&mem, 1 << 20, true, kBytewise);
  for (int round = 0; round < 2; ++round)
    for (uint64_t i = 0; i < 300; ++i) {
      bool ins;
      CEntry* e = upsert(t, 42, u64key(i), &ins);
      ASSERT_NE(e, nullptr);
      ASSERT_EQ(ins, round == 0);
      e->state.add_one();
    }
  EXPECT_EQ(t.size(), 300u);
  t.for_each([&](const CEntry& e) { EXPECT_EQ(e.state.n, 2); });
}

TEST(KeyedTable, FindInlineSeesExactlyTheKeysThere) {
  // Same image, other length; same hash, other image: neither is found.
  TrackingSource mem;
  CTable t;
  t.init(&mem, 1 << 20, true, kBytewise);
  EXPECT_EQ(t.find_inline(7, 0, 4), nullptr);  // no slots yet
  std::vector<std::string> keys;
  for (uint64_t i = 0; i < 500; ++i) keys.push_back(u64key(i * 2654435761u).substr(0, 1 + i % 8));
  std::sort(keys.begin(), keys.end());
  keys.erase(std::unique(keys.begin(), keys.end()), keys.end());
  auto image = [](const std::string& k) { return load_padded(reinterpret_cast<const uint8_t*>(k.data()), k.size()); };
  for (const std::string& k : keys) {
    bool ins;
    upsert(t, hash_of(k) % 64, k, &ins)->state.add_one();  // 64 hashes: long shared probes
  }
  for (const std::string& k : keys) {
    CEntry* e = t.find_inline(hash_of(k) % 64, image(k), static_cast<uint32_t>(k.size()));
    ASSERT_NE(e, nullptr);
    EXPECT_EQ(str(t.key_of(*e)), k);
    EXPECT_EQ(e->state.n, 1);
    auto absent = [&](const std::string& other) { return !std::binary_search(keys.begin(), keys.end(), other); };
    if (k.size() < 8 && absent(k + '\0')) {
      EXPECT_EQ(t.find_inline(hash_of(k) % 64, image(k), static_cast<uint32_t>(k.size() + 1)), nullptr);
    }
    std::string flipped = k;
    flipped.back() ^= 0x80;
    if (absent(flipped)) {
      EXPECT_EQ(t.find_inline(hash_of(k) % 64, image(flipped), static_cast<uint32_t>(k.size())), nullptr);
    }
  }
}

TEST(KeyedTable, ReserveTakesOneArrayAndNeverGrows) {
  TrackingSource mem;
  CTable t;
  t.init(&mem, 1 << 20, true, kBytewise);
  bool ins;
  upsert(t, 1, u64key(1), &ins);
  t.clear();
  t.reserve(4096 * sizeof(CEntry));
  EXPECT_TRUE(t.empty());
  EXPECT_EQ(mem.live_blocks(), 1u);
  EXPECT_EQ(t.slot_bytes(), 4096 * sizeof(CEntry));
  EXPECT_EQ(t.first_insert_bytes(8), 0u);  // the slots are there already
  size_t allocations = mem.allocations();
  for (uint64_t i = 0; i < 3072; ++i) ASSERT_NE(upsert(t, hash_of(u64key(i)), u64key(i), &ins), nullptr);
  EXPECT_EQ(mem.allocations(), allocations);  // up to 3/4 of the slots: no growth
  EXPECT_EQ(t.size(), 3072u);
}

TEST(KeyedTable, ArenaKeysOfVariedLengths) {
  TrackingSource mem;
  CTable t;
  const size_t budget = size_t{1} << 26;  // arena chunk = 64 KiB
  t.init(&mem, budget, /*inline_keys=*/false, kBytewise);
  std::vector<size_t> lens = {0,    1,    7,    8,    9,     15,    16,    17,    31,     100,
                              255,  256,  1000, 4095, 4096,  4097,  16383, 16384, 16385,  65535,
                              65536, 65537, 100000, 300000};
  std::mt19937_64 rng(5);
  std::vector<std::string> keys;
  for (size_t len : lens)
    for (int v = 0; v < 3; ++v) {
      std::string s(len, '\0');
      for (char& c : s) c = static_cast<char>(rng());
      keys.push_back(s);
    }
  // Many short keys too, interleaved, so chunks fill and new ones are taken.
  for (int i = 0; i < 5000; ++i) keys.push_back("short-" + std::to_string(i));
  std::shuffle(keys.begin(), keys.end(), rng);
  std::sort(keys.begin(), keys.end());
  keys.erase(std::unique(keys.begin(), keys.end()), keys.end());
  std::shuffle(keys.begin(), keys.end(), rng);

  size_t key_bytes = 0;
  for (size_t i = 0; i < keys.size(); ++i) {
    std::string buf = keys[i];  // the table must copy, not alias, the caller's bytes
    bool ins;
    CEntry* e = t.find_or_insert(hash_of(buf), kv(buf), &ins);
    ASSERT_NE(e, nullptr);
    ASSERT_TRUE(ins);
    e->state.n = static_cast<int64_t>(i);
    std::fill(buf.begin(), buf.end(), 'X');
    key_bytes += keys[i].size();
  }
  EXPECT_EQ(t.size(), keys.size());
  EXPECT_GE(mem.bytes_allocated(), key_bytes);
  EXPECT_LE(mem.bytes_allocated(), budget);
  for (size_t i = 0; i < keys.size(); ++i) {
    bool ins;
    CEntry* e = upsert(t, hash_of(keys[i]), keys[i], &ins);
    ASSERT_FALSE(ins);
    ASSERT_EQ(e->state.n, static_cast<int64_t>(i));
    ASSERT_EQ(e->key_len, keys[i].size());
    ASSERT_EQ(str(t.key_of(*e)), keys[i]);
  }
  t.clear();
  EXPECT_EQ(mem.bytes_allocated(), 0u);
  EXPECT_EQ(mem.live_blocks(), 0u);
}

TEST(KeyedTable, EmptyArenaKeyAfterOtherKeys) {
  TrackingSource mem;
  CTable t;
  t.init(&mem, 1 << 16, false, kBytewise);
  const std::string empty, nul(1, '\0');
  bool ins;
  ASSERT_NE(upsert(t, hash_of("x"), "x", &ins), nullptr);
  CEntry* e = upsert(t, hash_of(empty), empty, &ins);
  ASSERT_NE(e, nullptr);
  EXPECT_TRUE(ins);
  EXPECT_EQ(t.key_of(*e).len, 0u);
  e = upsert(t, hash_of(empty), empty, &ins);
  ASSERT_NE(e, nullptr);
  EXPECT_FALSE(ins);
  e = upsert(t, hash_of(nul), nul, &ins);  // "" and "\0" are different keys
  ASSERT_NE(e, nullptr);
  EXPECT_TRUE(ins);
  EXPECT_EQ(t.size(), 3u);
}

// CORE BUG: ChunkArena::allocate(0) / allocate_within(0, ...) return cur_,
// which is nullptr while the arena has no current chunk (a fresh or just
// cleared table, or one whose only keys were oversized). find_or_insert takes
// nullptr to mean "over budget" and refuses the empty key, even into an empty
// table, which "always accepts". (SpillingTable then dereferences nullptr; see
// SpillingTable.EmptyKeyFirstAfterSpill.)
TEST(KeyedTable, EmptyArenaKeyIntoEmptyTable) {
  TrackingSource mem;
  CTable t;
  t.init(&mem, 1 << 16, false, kBytewise);
  const std::string empty;
  bool ins = false;
  CEntry* e = upsert(t, hash_of(empty), empty, &ins);
  ASSERT_NE(e, nullptr) << "an empty table refused the zero-length key";
  EXPECT_TRUE(ins);
  EXPECT_EQ(t.key_of(*e).len, 0u);
  EXPECT_EQ(t.size(), 1u);
}

TEST(KeyedTable, EmptyArenaKeyAfterOnlyOversizedKeys) {
  TrackingSource mem;
  CTable t;
  t.init(&mem, 1 << 24, false, kBytewise);  // plenty of budget
  std::string big(200000, 'b');
  const std::string empty;
  bool ins = false;
  ASSERT_NE(upsert(t, hash_of(big), big, &ins), nullptr);
  CEntry* e = upsert(t, hash_of(empty), empty, &ins);
  ASSERT_NE(e, nullptr) << "zero-length key refused although far under budget";
  EXPECT_TRUE(ins);
}

TEST(KeyedTable, CustomEqualityMergesCaseVariants) {
  TrackingSource mem;
  CiCtx ctx;
  CTable t;
  t.init(&mem, 1 << 20, false, KeyEquality{ci_equal, &ctx});
  bool ins;
  CEntry* e = upsert(t, ci_hash("Ab"), "Ab", &ins);
  ASSERT_TRUE(ins);
  e->state.add_one();
  e = upsert(t, ci_hash("aB"), "aB", &ins);
  EXPECT_FALSE(ins);
  e->state.add_one();
  EXPECT_EQ(str(t.key_of(*e)), "Ab");  // the first spelling is kept
  EXPECT_EQ(e->state.n, 2);
  e = upsert(t, ci_hash("AB"), "AB", &ins);
  EXPECT_FALSE(ins);
  e = upsert(t, ci_hash("Abc"), "Abc", &ins);
  EXPECT_TRUE(ins);
  e = upsert(t, ci_hash("ba"), "ba", &ins);
  EXPECT_TRUE(ins);
  EXPECT_EQ(t.size(), 3u);
  EXPECT_GT(ctx.calls, 0u);

  // Many words in random case, across growth.
  std::mt19937_64 rng(11);
  std::map<std::string, int64_t> expect;
  for (int i = 0; i < 20000; ++i) {
    std::string w = "word" + std::to_string(rng() % 3000);
    for (char& c : w)
      if (rng() & 1) c = static_cast<char>(std::toupper(static_cast<unsigned char>(c)));
    CEntry* x = upsert(t, ci_hash(w), w, &ins);
    ASSERT_NE(x, nullptr);
    x->state.add_one();
    ++expect[lower(w)];
  }
  expect["ab"] += 2;
  expect["abc"] += 0;
  expect["ba"] += 0;
  std::map<std::string, int64_t> got;
  t.for_each([&](const CEntry& x) {
    std::string k = lower(str(t.key_of(x)));
    EXPECT_EQ(got.count(k), 0u) << k;
    got[k] = x.state.n;
  });
  EXPECT_EQ(got, expect);
}

TEST(KeyedTable, CustomEqualityOnlyConsultedOnHashMatch) {
  TrackingSource mem;
  CiCtx ctx;
  CTable t;
  t.init(&mem, 1 << 20, false, KeyEquality{ci_equal, &ctx});
  bool ins;
  // Distinct hashes: the callback is never needed.
  for (int i = 0; i < 1000; ++i) {
    std::string k = "k" + std::to_string(i);
    upsert(t, ci_hash(k), k, &ins);
  }
  EXPECT_EQ(ctx.calls, 0u);
  // Same hash, different keys: the callback decides.
  upsert(t, 7, "left", &ins);
  EXPECT_TRUE(ins);
  upsert(t, 7, "right", &ins);
  EXPECT_TRUE(ins);
  upsert(t, 7, "LEFT", &ins);
  EXPECT_FALSE(ins);
  EXPECT_GT(ctx.calls, 0u);
}

TEST(KeyedTable, RefusesNewKeysOverBudgetInline) {
  TrackingSource mem;
  CTable t;
  const size_t budget = 4096;
  t.init(&mem, budget, true, kBytewise);
  // 16 -> 32 -> 64 slots fit; doubling to 128 would need 64+128 slots at once.
  ASSERT_GT(3 * 64 * sizeof(CEntry), budget);
  ASSERT_LE(64 * sizeof(CEntry), budget);
  size_t accepted = 0;
  bool ins;
  for (uint64_t i = 0;; ++i) {
    CEntry* e = upsert(t, mix64(i), u64key(i), &ins);
    if (!e) break;
    ASSERT_TRUE(ins);
    ASSERT_LE(mem.peak(), budget);
    ++accepted;
    ASSERT_LT(accepted, 1000u);
  }
  EXPECT_EQ(accepted, 48u);  // 3/4 of 64 slots
  size_t bytes = mem.bytes_allocated();
  // Refusal inserts nothing and allocates nothing...
  EXPECT_EQ(upsert(t, mix64(1000), u64key(1000), &ins), nullptr);
  EXPECT_EQ(t.size(), 48u);
  EXPECT_EQ(mem.bytes_allocated(), bytes);
  // ...but existing keys are still found.
  for (uint64_t i = 0; i < 48; ++i) {
    CEntry* e = upsert(t, mix64(i), u64key(i), &ins);
    ASSERT_NE(e, nullptr);
    EXPECT_FALSE(ins);
  }
  EXPECT_LE(mem.peak(), budget);
}

TEST(KeyedTable, RefusesNewKeysOverBudgetArena) {
  TrackingSource mem;
  CTable t;
  const size_t budget = 8192;
  t.init(&mem, budget, false, kBytewise);
  bool ins;
  size_t accepted = 0;
  std::mt19937_64 rng(3);
  std::vector<std::string> keys;
  for (;;) {
    std::string k(rng() % 40, 'k');
    k += std::to_string(keys.size());
    CEntry* e = upsert(t, hash_of(k), k, &ins);
    ASSERT_LE(mem.peak(), budget);
    if (!e) {
      // Nothing was stored: the table is unchanged.
      EXPECT_EQ(t.size(), accepted);
      break;
    }
    ASSERT_TRUE(ins);
    keys.push_back(k);
    ++accepted;
  }
  EXPECT_GT(accepted, 10u);
  for (const std::string& k : keys) {
    CEntry* e = upsert(t, hash_of(k), k, &ins);
    ASSERT_NE(e, nullptr);
    ASSERT_FALSE(ins);
    ASSERT_EQ(str(t.key_of(*e)), k);
  }
}

TEST(KeyedTable, EmptyTableAlwaysAcceptsOneKey) {
  // A key larger than the whole budget (and than the arena chunk).
  TrackingSource mem;
  CTable t;
  const size_t budget = 4096;
  t.init(&mem, budget, false, kBytewise);
  std::string big(100000, 'B');
  bool ins;
  CEntry* e = upsert(t, hash_of(big), big, &ins);
  ASSERT_NE(e, nullptr);
  EXPECT_TRUE(ins);
  EXPECT_GT(mem.bytes_allocated(), budget);
  EXPECT_EQ(str(t.key_of(*e)), big);
  // It is found again, but no second key is taken while over budget.
  e = upsert(t, hash_of(big), big, &ins);
  ASSERT_NE(e, nullptr);
  EXPECT_FALSE(ins);
  EXPECT_EQ(upsert(t, hash_of("small"), "small", &ins), nullptr);
  EXPECT_EQ(t.size(), 1u);
  // After clear() the table starts over within budget.
  t.clear();
  EXPECT_EQ(mem.bytes_allocated(), 0u);
  e = upsert(t, hash_of("small"), "small", &ins);
  ASSERT_NE(e, nullptr);
  EXPECT_LE(mem.bytes_allocated(), budget);

  // Inline keys with a budget too small for even the initial slot array.
  TrackingSource mem2;
  CTable t2;
  t2.init(&mem2, 16, true, kBytewise);
  e = upsert(t2, mix64(1), u64key(1), &ins);
  ASSERT_NE(e, nullptr);
  EXPECT_TRUE(ins);
}

// Regression test (fixed): "the table never holds more than its budget
// unless it holds a single key" failed for budgets below the first slot array
// plus one arena chunk (then 64 * sizeof(Entry) + 1024 bytes; now 16 *
// sizeof(Entry) + 256): the empty table's first insert allocates past the
// budget, and later keys that need no new allocation were accepted. The fix,
// at the top of the new-key path of find_or_insert:
//   if (count_ > 0 && src_->bytes_allocated() > budget_) return nullptr;
TEST(KeyedTable, TinyBudgetHoldsOnlyOneKeyOverBudget) {
  const size_t slots_bytes = CTable::kMinSlots * sizeof(CEntry);
  bool ins;
  // Inline keys: a budget below the first slot array.
  for (size_t budget : {size_t{16}, slots_bytes / 2, slots_bytes - 1}) {
    TrackingSource mem;
    CTable t;
    t.init(&mem, budget, true, kBytewise);
    ASSERT_NE(upsert(t, mix64(1), u64key(1), &ins), nullptr);
    ASSERT_EQ(mem.bytes_allocated(), slots_bytes);
    ASSERT_GT(mem.bytes_allocated(), budget);
    // The second key needs no allocation (15 free slots) but is refused.
    EXPECT_EQ(upsert(t, mix64(2), u64key(2), &ins), nullptr) << budget;
    EXPECT_EQ(t.size(), 1u);
    EXPECT_NE(upsert(t, mix64(1), u64key(1), &ins), nullptr);  // still found
    EXPECT_FALSE(ins);
  }
  // Arena keys: slots fit, slots + the first (256-byte) chunk do not.
  for (size_t budget : {slots_bytes, slots_bytes + ChunkArena::kFirstChunk - 1}) {
    TrackingSource mem;
    CTable t;
    t.init(&mem, budget, false, kBytewise);
    ASSERT_NE(upsert(t, hash_of("a"), "a", &ins), nullptr);
    ASSERT_EQ(mem.bytes_allocated(), slots_bytes + ChunkArena::kFirstChunk);
    ASSERT_GT(mem.bytes_allocated(), budget);
    // "b" would fit in the chunk's free bytes, but the table is over budget.
    EXPECT_EQ(upsert(t, hash_of("b"), "b", &ins), nullptr) << budget;
    EXPECT_EQ(t.size(), 1u);
  }
  // Exactly slots + first chunk: within budget, so more keys are taken.
  TrackingSource mem;
  CTable t;
  t.init(&mem, slots_bytes + ChunkArena::kFirstChunk, false, kBytewise);
  ASSERT_NE(upsert(t, hash_of("a"), "a", &ins), nullptr);
  EXPECT_NE(upsert(t, hash_of("b"), "b", &ins), nullptr);
  EXPECT_EQ(t.size(), 2u);
  EXPECT_EQ(mem.bytes_allocated(), slots_bytes + ChunkArena::kFirstChunk);
}

// first_insert_bytes(len) is exactly what the first insert into an empty
// table allocates (SpillingTable asks its RoomMaker for room with it).
TEST(KeyedTable, FirstInsertBytesIsWhatTheFirstInsertTakes) {
  const size_t slots_bytes = CTable::kMinSlots * sizeof(CEntry);
  for (size_t budget : {size_t{4096}, size_t{1} << 20, size_t{1} << 26}) {
    for (bool inl : {true, false}) {
      std::vector<size_t> lens = {0, 1, 5, 8};
      if (!inl) lens.insert(lens.end(), {9, 63, 64, 65, 72, 100, 256, 1000, 5000, 70000});
      for (size_t len : lens) {
        TrackingSource mem;
        CTable t;
        t.init(&mem, budget, inl, kBytewise);
        std::string k(len, 'k');
        // Keys above a quarter of the first chunk get an exact (8-aligned)
        // chunk of their own; smaller ones the 256-byte first chunk.
        size_t aligned = (std::max<size_t>(len, 1) + 7) & ~size_t{7};
        size_t expect = slots_bytes;
        if (!inl) expect += aligned > ChunkArena::kFirstChunk / 4 ? aligned : ChunkArena::kFirstChunk;
        EXPECT_EQ(t.first_insert_bytes(static_cast<uint32_t>(len)), expect) << len << " inline " << inl;
        bool ins;
        ASSERT_NE(upsert(t, hash_of(k), k, &ins), nullptr);
        EXPECT_EQ(mem.bytes_allocated(), expect) << len << " inline " << inl;
        // After clear() (a spill), the arena starts over at its first chunk
        // size, so the first insert costs the same again, even though the
        // arena's chunks had grown.
        for (int i = 0; i < 3000; ++i) {
          std::string o = "other-key-" + std::to_string(i);
          if (inl) o = u64key(static_cast<uint64_t>(i) + 1000);
          if (!upsert(t, hash_of(o), o, &ins)) break;
        }
        t.clear();
        EXPECT_EQ(t.first_insert_bytes(static_cast<uint32_t>(len)), expect) << len;
        ASSERT_NE(upsert(t, hash_of(k), k, &ins), nullptr);
        EXPECT_EQ(mem.bytes_allocated(), expect) << len;
      }
    }
  }
}

TEST(KeyedTable, PackSortedByHash) {
  TrackingSource mem;
  CTable t;
  t.init(&mem, 1 << 22, false, kBytewise);
  std::mt19937_64 rng(77);
  std::map<std::string, int64_t> expect;
  bool ins;
  for (int i = 0; i < 5000; ++i) {
    std::string k = "p" + std::to_string(rng() % 3000);
    // A few deliberate hash collisions among distinct keys too.
    uint64_t h = (rng() % 10 == 0) ? 12345 : hash_of(k);
    if (h == 12345) k = "coll" + k;
    CEntry* e = upsert(t, h, k, &ins);
    ASSERT_NE(e, nullptr);
    e->state.add_one();
    ++expect[k];
  }
  size_t n = t.size();
  ASSERT_EQ(n, expect.size());
  CEntry* es = t.pack(true);
  ASSERT_NE(es, nullptr);
  std::map<std::string, int64_t> got;
  for (size_t i = 0; i < n; ++i) {
    if (i) {
      ASSERT_LE(es[i - 1].hash, es[i].hash) << i;
    }
    std::string k = str(t.key_of(es[i]));
    ASSERT_EQ(es[i].hash, k.rfind("coll", 0) == 0 ? 12345 : hash_of(k));
    ASSERT_TRUE(got.emplace(k, es[i].state.n).second);
  }
  EXPECT_EQ(got, expect);
  t.clear();
  EXPECT_EQ(mem.bytes_allocated(), 0u);
}

TEST(KeyedTable, PackUnsortedKeepsAllEntries) {
  TrackingSource mem;
  CTable t;
  t.init(&mem, 1 << 22, true, kBytewise);
  bool ins;
  for (uint64_t i = 0; i < 1000; ++i) upsert(t, mix64(i), u64key(i), &ins)->state.n = static_cast<int64_t>(i);
  CEntry* es = t.pack(false);
  std::set<int64_t> seen;
  for (size_t i = 0; i < t.size(); ++i) {
    ASSERT_NE(es[i].key_len, CTable::kEmpty);
    uint64_t v;
    std::memcpy(&v, t.key_of(es[i]).data, 8);
    ASSERT_EQ(es[i].state.n, static_cast<int64_t>(v));
    seen.insert(es[i].state.n);
  }
  EXPECT_EQ(seen.size(), 1000u);
  // An unused table packs to nothing.
  TrackingSource mem2;
  CTable t2;
  t2.init(&mem2, 1 << 20, true, kBytewise);
  EXPECT_EQ(t2.pack(true), nullptr);
  EXPECT_EQ(t2.size(), 0u);
}

TEST(KeyedTable, BadAllocDuringGrowthLeavesTableIntact) {
  TrackingSource mem;
  CTable t;
  t.init(&mem, 1 << 24, true, kBytewise);
  bool ins;
  for (uint64_t i = 0; i < 48; ++i) upsert(t, mix64(i), u64key(i), &ins)->state.n = 1;
  size_t bytes = mem.bytes_allocated();
  mem.fail_after(0);  // the next allocation (the doubling) fails
  EXPECT_THROW(upsert(t, mix64(48), u64key(48), &ins), std::bad_alloc);
  EXPECT_EQ(t.size(), 48u);
  EXPECT_EQ(mem.bytes_allocated(), bytes);
  for (uint64_t i = 0; i < 48; ++i) {
    CEntry* e = upsert(t, mix64(i), u64key(i), &ins);  // lookups allocate nothing
    ASSERT_NE(e, nullptr);
    EXPECT_FALSE(ins);
  }
  mem.fail_after(-1);
  for (uint64_t i = 48; i < 500; ++i) {
    CEntry* e = upsert(t, mix64(i), u64key(i), &ins);
    ASSERT_NE(e, nullptr);
    ASSERT_TRUE(ins);
  }
  EXPECT_EQ(t.size(), 500u);

  // Arena allocation failing for a new key.
  TrackingSource mem2;
  CTable t2;
  t2.init(&mem2, 1 << 24, false, kBytewise);
  std::string k1(10, 'a'), k2(200000, 'b');
  upsert(t2, hash_of(k1), k1, &ins);
  mem2.fail_after(0);
  EXPECT_THROW(upsert(t2, hash_of(k2), k2, &ins), std::bad_alloc);
  EXPECT_EQ(t2.size(), 1u);
  mem2.fail_after(-1);
  CEntry* e = upsert(t2, hash_of(k2), k2, &ins);
  EXPECT_TRUE(ins);
  EXPECT_EQ(str(t2.key_of(*e)), k2);
}

TEST(ChunkArena, BumpsWithinChunksAndGivesBigRequestsTheirOwn) {
  static_assert(ChunkArena::kFirstChunk == 256);
  TrackingSource mem;
  ChunkArena a;
  a.init(&mem, 1024);  // chunks of 256, 512, then 1024 bytes
  EXPECT_EQ(mem.bytes_allocated(), 0u);  // nothing taken before the first request
  EXPECT_EQ(a.next_chunk_bytes(0), 256u);
  EXPECT_EQ(a.next_chunk_bytes(64), 256u);  // a quarter of the chunk still shares it
  EXPECT_EQ(a.next_chunk_bytes(65), 72u);   // above: its own (8-aligned) chunk
  uint8_t* p1 = a.allocate(3);
  uint8_t* p2 = a.allocate(8);
  EXPECT_EQ(p2 - p1, 8);  // rounded up to 8
  EXPECT_EQ(reinterpret_cast<uintptr_t>(p1) % 8, 0u);
  EXPECT_EQ(mem.bytes_allocated(), 256u);
  // The next chunk will be twice as large.
  EXPECT_EQ(a.next_chunk_bytes(8), 512u);
  EXPECT_EQ(a.next_chunk_bytes(128), 512u);
  EXPECT_EQ(a.next_chunk_bytes(129), 136u);
  // A request above chunk/4 still bumps while it fits in the current chunk...
  uint8_t* p3 = a.allocate(200);
  EXPECT_EQ(p3 - p2, 8);
  EXPECT_EQ(mem.bytes_allocated(), 256u);
  // ...and when it does not fit it gets an exact-size block of its own, while
  // the current chunk keeps serving small requests (40 bytes left).
  uint8_t* big = a.allocate(200);
  EXPECT_NE(big, nullptr);
  EXPECT_EQ(mem.bytes_allocated(), 256u + 200u);
  EXPECT_EQ(a.next_chunk_bytes(8), 512u);  // an own block does not advance the doubling
  uint8_t* p4 = a.allocate(8);
  EXPECT_EQ(p4 - p3, 200);
  // A small request that does not fit takes a new chunk: 256 - 224 = 32 left.
  a.allocate(100);
  EXPECT_EQ(mem.bytes_allocated(), 456u + 512u);
  EXPECT_EQ(a.next_chunk_bytes(8), 1024u);
  a.allocate(400);  // 412 left in the 512-byte chunk: bumps
  EXPECT_EQ(mem.bytes_allocated(), 968u);
  a.allocate(16);  // 12 left < 16 <= chunk/4: a 1024-byte chunk, the max
  EXPECT_EQ(mem.bytes_allocated(), 1992u);
  EXPECT_EQ(a.next_chunk_bytes(8), 1024u);  // stays at the max
  EXPECT_EQ(a.next_chunk_bytes(257), 264u);
  // allocate_within bumps regardless of the limit (no new memory)...
  EXPECT_NE(a.allocate_within(1000, 0), nullptr);
  EXPECT_NE(a.allocate_within(8, 0), nullptr);  // chunk now exactly full
  // ...and takes a new chunk only if the source stays within the limit.
  EXPECT_EQ(a.allocate_within(8, 1992 + 1023), nullptr);
  EXPECT_EQ(mem.bytes_allocated(), 1992u);
  EXPECT_EQ(a.next_chunk_bytes(8), 1024u);
  EXPECT_NE(a.allocate_within(8, 1992 + 1024), nullptr);
  EXPECT_EQ(mem.bytes_allocated(), 3016u);
  EXPECT_EQ(a.allocate_within(5000, 3016 + 4999), nullptr);
  EXPECT_NE(a.allocate_within(5000, 3016 + 5000), nullptr);
  EXPECT_EQ(mem.bytes_allocated(), 8016u);
  // forget() starts over at the first chunk size.
  a.forget();
  mem.release_all();
  EXPECT_EQ(mem.bytes_allocated(), 0u);
  EXPECT_EQ(a.next_chunk_bytes(8), 256u);
  uint8_t* q = a.allocate(8);
  EXPECT_NE(q, nullptr);
  EXPECT_EQ(mem.bytes_allocated(), 256u);
  a.forget();
  mem.release_all();
}

namespace {
// Sizes of the chunks an arena with the given max takes for a stream of
// small (8-byte) requests, until `nchunks` have been taken.
std::vector<size_t> chunk_sizes(size_t max_chunk, size_t nchunks, ChunkArena* reuse = nullptr,
                                TrackingSource* reuse_mem = nullptr) {
  TrackingSource own_mem;
  ChunkArena own;
  TrackingSource& mem = reuse_mem ? *reuse_mem : own_mem;
  ChunkArena& a = reuse ? *reuse : own;
  if (!reuse) a.init(&mem, max_chunk);
  std::vector<size_t> sizes;
  while (sizes.size() < nchunks) {
    size_t before = mem.bytes_allocated();
    size_t predicted = a.next_chunk_bytes(8);
    a.allocate(8);
    if (mem.bytes_allocated() != before) {
      EXPECT_EQ(mem.bytes_allocated() - before, predicted);  // next_chunk_bytes told the truth
      sizes.push_back(mem.bytes_allocated() - before);
    }
  }
  if (!reuse) mem.release_all();
  return sizes;
}
}  // namespace

TEST(ChunkArena, ChunksStartAt256AndDoubleToTheMax) {
  EXPECT_EQ(chunk_sizes(64 * 1024, 11),
            (std::vector<size_t>{256, 512, 1024, 2048, 4096, 8192, 16384, 32768, 65536, 65536, 65536}));
  EXPECT_EQ(chunk_sizes(1024, 5), (std::vector<size_t>{256, 512, 1024, 1024, 1024}));
  // A max that is not 256 * 2^k is reached exactly, not passed.
  EXPECT_EQ(chunk_sizes(1000, 4), (std::vector<size_t>{256, 512, 1000, 1000}));
  EXPECT_EQ(chunk_sizes(256, 3), (std::vector<size_t>{256, 256, 256}));
  // A max below the first size caps the first chunk too.
  EXPECT_EQ(chunk_sizes(100, 3), (std::vector<size_t>{100, 100, 100}));

  // forget() restarts the doubling (a spilled table starts small again).
  TrackingSource mem;
  ChunkArena a;
  a.init(&mem, 64 * 1024);
  EXPECT_EQ(chunk_sizes(0, 6, &a, &mem), (std::vector<size_t>{256, 512, 1024, 2048, 4096, 8192}));
  a.forget();
  mem.release_all();
  EXPECT_EQ(chunk_sizes(0, 3, &a, &mem), (std::vector<size_t>{256, 512, 1024}));
  a.forget();
  mem.release_all();
  // init() also starts over, with the new max.
  a.init(&mem, 2048);
  EXPECT_EQ(chunk_sizes(0, 5, &a, &mem), (std::vector<size_t>{256, 512, 1024, 2048, 2048}));
  a.forget();
  mem.release_all();
}

namespace {
struct Wide {  // makes sizeof(Entry) 48, so slot arrays (48 * 2^k) are never chunk-sized
  int64_t a = 0, b = 0, c = 0;
};
}  // namespace

TEST(ChunkArena, KeyedTableArenaMaxIsBudgetOver16Clamped) {
  using WTable = KeyedTable<Wide>;
  static_assert(sizeof(WTable::Entry) == 48);
  auto is_slot_array = [](size_t n) {
    if (n % sizeof(WTable::Entry)) return false;
    size_t k = n / sizeof(WTable::Entry);
    return k >= WTable::kMinSlots && (k & (k - 1)) == 0;
  };
  struct Case {
    size_t budget, max_chunk;
  };
  // chunk_bytes = clamp(budget / 16, 1 KiB, 64 KiB)
  for (Case c : {Case{12000, 1024}, Case{32 * 1024, 2048}, Case{100000, 6250}, Case{1 << 20, 65536},
                 Case{size_t{1} << 26, 65536}}) {
    TrackingSource mem;
    WTable t;
    t.init(&mem, c.budget, false, kBytewise);
    bool ins;
    for (uint64_t i = 0; i < 100000; ++i) {
      // 64-byte keys (a quarter of the first chunk: they share chunks), so
      // key bytes, not slot arrays, fill the budget.
      std::string k = u64key(mix64(i)) + std::string(56, 'k');
      if (!t.find_or_insert(mix64(i), kv(k), &ins)) break;
    }
    std::vector<size_t> chunks;
    for (size_t n : mem.requests())
      if (!is_slot_array(n)) chunks.push_back(n);
    ASSERT_FALSE(chunks.empty());
    // 256, 512, ... doubling, capped at (and reaching) the max.
    size_t expect = ChunkArena::kFirstChunk;
    for (size_t i = 0; i < chunks.size(); ++i) {
      ASSERT_EQ(chunks[i], expect) << "budget " << c.budget << " chunk " << i;
      expect = std::min(expect * 2, c.max_chunk);
    }
    EXPECT_EQ(chunks.back(), c.max_chunk) << "budget " << c.budget;
    EXPECT_LE(mem.peak(), c.budget);
    t.clear();
  }
}
