// Open-addressing (linear probing) hash table from key bytes to a State.
//
// A key's home slot is hash * nslots / 2^64, which grows with the hash, so
// the slot array is already nearly in hash order: a spill sorts it by
// hash (the run order) in about linear time. Keys that arrive in hash order
// (a partial state being merged) would then all crowd the front of a table
// smaller than their stream, into one cluster probed end to end by every
// insert; a table fed such input is set_scrambled(): its homes come from
// the hash rotated by 32 bits, and it is sorted with std::sort. The slot count is whatever fits
// the block the MemorySource hands out (MemorySource::usable_size), not a
// power of two, so a power-of-two allocator wastes nothing.
//
// Keys are opaque byte strings ("images") with a 64-bit hash computed by the
// caller. Two keys are equal when their bytes are equal, or, for types whose
// equality is not bytewise (numeric, case-insensitive collations...), when
// the caller's KeyEquality says so. Keys of at most 8 bytes with bytewise
// equality are stored inline in the slot (the by-value fast path); longer
// keys live in a ChunkArena. All memory comes from a MemorySource and the
// table never holds more than its budget unless it holds a single key.
#pragma once

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <type_traits>

#include "hash.h"
#include "memory.h"

namespace spillagg {

struct KeyView {
  const uint8_t* data;
  uint32_t len;
};

// The hash of a key from its bytes (SpillingTable: runs of a table whose
// owner gives one leave the hash out).
using Rehash = uint64_t (*)(KeyView key);

// Equality for keys whose type defines it differently from byte equality.
struct KeyEquality {
  bool (*equal)(void* ctx, KeyView a, KeyView b);
  void* ctx;
};

template <class State>
class KeyedTable {
  static_assert(alignof(State) <= 8, "table memory is only 8-byte aligned");

 public:
  struct Entry {
    uint64_t hash;
    union {
      const uint8_t* ptr;
      uint8_t bytes[8];
    } key;
    uint32_t key_len;  // kEmpty marks a free slot
    State state;
  };
  static constexpr uint32_t kEmpty = UINT32_MAX;
  // small: a GROUP BY may hold thousands; 2 (one key) for entries of
  // several kB (the wide numeric rungs), so one key's table stays near
  // the size of its state.
  static constexpr size_t kMinSlots = sizeof(Entry) > 4096 ? 2 : 16;
  // At load 3/4 the longest cluster of n random keys is about 27 ln n
  // slots (~300 for the 65k keys of a 4 MB table, ~450 for 16M): 1024 is
  // never reached by chance, and keys in hash order pass it at once. (256,
  // before, was passed by chance in tables of 64k keys, which then sorted
  // every spill with std::sort.)
  static constexpr size_t kCrowdedProbes = 1024;

  // inline_keys: every key has at most 8 bytes and bytewise equality.
  // eq.equal == nullptr means bytewise equality.
  void init(MemorySource* src, size_t budget_bytes, bool inline_keys, KeyEquality eq) {
    src_ = src;
    budget_ = budget_bytes;
    inline_keys_ = inline_keys;
    eq_ = eq;
    arena_.init(src, std::clamp<size_t>(budget_bytes / 16, 1024, 64 * 1024));
    slots_ = nullptr;
    count_ = 0;
    nslots_ = 0;
    scrambled_ = false;
    crowded_ = false;
    guard_crowding_ = false;
  }

  // For input in hash order; only on an empty table, and for its lifetime.
  void set_scrambled() { scrambled_ = true; }
  bool scrambled() const { return scrambled_; }
  // With the guard on, find_or_insert refuses a new key after a probe of
  // more than kCrowdedProbes slots (and crowded() says so), unless scrambled.
  void guard_crowding() { guard_crowding_ = true; }
  bool crowded() const { return crowded_; }

  size_t size() const { return count_; }
  bool empty() const { return count_ == 0; }
  size_t budget() const { return budget_; }
  size_t bytes_allocated() const { return src_->bytes_allocated(); }

  // Finds the entry for key, inserting a value-initialised State if absent.
  // Returns nullptr, without inserting, when the key is new and storing it
  // would exceed the budget: the caller spills and tries again. An empty
  // table always accepts, so a single key larger than the budget still works.
  Entry* find_or_insert(uint64_t hash, KeyView key, bool* inserted) {
    if (!slots_) allocate_slots(kMinSlots * sizeof(Entry));
    size_t i, probes = 0;
    if (inline_keys_) {
      bool found;
      i = probe_inline(hash, load_padded(key.data, key.len), key.len, &found, &probes);
      if (found) {
        *inserted = false;
        return &slots_[i];
      }
    } else {
      for (i = home(hash);; i = next(i), ++probes) {
        Entry& e = slots_[i];
        if (e.key_len == kEmpty) break;
        if (e.hash == hash && equal(e, key)) {
          *inserted = false;
          return &e;
        }
      }
    }
    // A long probe means keys arrive in home order (sorted by hash): refuse,
    // so the caller spills and scrambles the table (set_scrambled).
    if (probes > kCrowdedProbes && guard_crowding_ && !scrambled_) {
      crowded_ = true;
      return nullptr;
    }
    // New key: refused when over budget (unless it would be the only one);
    // grow first if the load factor would pass 3/4.
    if (count_ > 0 && src_->bytes_allocated() > budget_) return nullptr;
    if ((count_ + 1) * 4 > nslots_ * 3) {
      size_t grown = src_->usable_size(nslots_ * 2 * sizeof(Entry));
      if (count_ > 0 && src_->bytes_allocated() + grown > budget_) return nullptr;
      grow();
      return find_or_insert(hash, key, inserted);
    }
    Entry& e = slots_[i];
    if (inline_keys_) {
      uint64_t image = load_padded(key.data, key.len);
      std::memcpy(e.key.bytes, &image, 8);
    } else {
      uint8_t* copy = count_ > 0 ? arena_.allocate_within(key.len, budget_) : arena_.allocate(key.len);
      if (!copy) return nullptr;
      std::memcpy(copy, key.data, key.len);
      e.key.ptr = copy;
    }
    e.hash = hash;
    e.key_len = key.len;
    e.state = State{};
    ++count_;
    *inserted = true;
    return &e;
  }

  // The entry of an inline key already in the table, or nullptr: the
  // lookup alone, small enough to inline into a batch loop (most rows of a
  // large table repeat a key; only new keys need find_or_insert).
  Entry* find_inline(uint64_t hash, uint64_t image, uint32_t len) {
    if (!slots_) return nullptr;
    bool found;
    size_t probes;
    size_t i = probe_inline(hash, image, len, &found, &probes);
    return found ? &slots_[i] : nullptr;
  }

  // Hints the CPU to fetch the home slot of `hash` and the cache line after
  // it, which a probe at load 3/4 often reaches (see SpillingTable::
  // add_deferred; past the array's end the hint is harmless).
  void prefetch(uint64_t hash) const {
    if (!slots_) return;
    const Entry* p = &slots_[home(hash)];
    // GCC 12 drops a prefetch whose address depends on the branch in
    // home() (scrambled_): the empty asm makes the address a value it must
    // compute, and the prefetch stays.
    asm volatile("" : : "r"(p));
    __builtin_prefetch(p, 1);
    __builtin_prefetch(reinterpret_cast<const void*>(reinterpret_cast<uintptr_t>(p) + 64), 1);
  }

  bool inline_keys() const { return inline_keys_; }

  // What the first insert into an empty table allocates.
  size_t first_insert_bytes(uint32_t key_len) const {
    return (slots_ ? 0 : src_->usable_size(kMinSlots * sizeof(Entry))) +
           (inline_keys_ ? 0 : arena_.next_chunk_bytes(key_len));
  }

  KeyView key_of(const Entry& e) const {
    return KeyView{inline_keys_ ? e.key.bytes : e.key.ptr, e.key_len};
  }

  // Packs the live entries to the front of the slot array and returns it;
  // sorted by hash (the spill-run order) if asked. Afterwards only the first
  // size() entries are valid, and the table must be clear()ed before the
  // next insert.
  Entry* pack(bool sort_by_hash) {
    if (!slots_) return nullptr;
    if (!sort_by_hash || scrambled_) {
      size_t n = 0;
      for (size_t i = 0; i < nslots_; ++i)
        if (slots_[i].key_len != kEmpty) slots_[n++] = slots_[i];
      if (sort_by_hash)
        std::sort(slots_, slots_ + n, [](const Entry& a, const Entry& b) { return a.hash < b.hash; });
      return slots_;
    }
    // Probes that ran past the last slot wrapped round to the leading
    // cluster: gather those entries (the largest hashes) at the front,
    // compact the rest behind them, then rotate them to the back.
    size_t wrapped = 0;
    for (size_t i = 0; i < nslots_ && slots_[i].key_len != kEmpty; ++i)
      if (home(slots_[i].hash) > i) std::swap(slots_[i], slots_[wrapped++]);
    size_t n = wrapped;
    for (size_t i = wrapped; i < nslots_; ++i)
      if (slots_[i].key_len != kEmpty) slots_[n++] = slots_[i];
    std::rotate(slots_, slots_ + wrapped, slots_ + n);
    // Entries are now in home order but within clusters (probing and the
    // swaps above shuffle those): insertion sort, with std::sort as the
    // fallback should a bad hash make the clusters long.
    size_t moves = 0;
    for (size_t i = 1; i < n && moves <= 8 * n; ++i) {
      Entry e = slots_[i];
      size_t j = i;
      for (; j > 0 && slots_[j - 1].hash > e.hash; --j) slots_[j] = slots_[j - 1];
      slots_[j] = e;
      moves += i - j;
    }
    if (moves > 8 * n)
      std::sort(slots_, slots_ + n, [](const Entry& a, const Entry& b) { return a.hash < b.hash; });
    return slots_;
  }

  // The entries in slot order without disturbing the table: slot i holds
  // a live entry, or entry(i) is nullptr. For walks that may be repeated.
  size_t slot_count() const { return slots_ ? nslots_ : 0; }
  const Entry* entry(size_t i) const { return slots_[i].key_len != kEmpty ? &slots_[i] : nullptr; }

  // Calls f(entry) for every live entry, in slot order.
  template <class F>
  void for_each(F&& f) const {
    if (!slots_) return;
    for (size_t i = 0; i < nslots_; ++i)
      if (slots_[i].key_len != kEmpty) f(slots_[i]);
  }

  // Bytes of the slot array (without the keys of a table that is not inline).
  size_t slot_bytes() const { return nslots_ * sizeof(Entry); }

  // Gives a cleared table (no slots yet) a slot array of at least `bytes`
  // at once: a table that will fill up again then need not grow from
  // kMinSlots (rehashing every key once per doubling). For inline keys: the
  // keys of others would have no room.
  void reserve(size_t bytes) {
    if (!slots_) allocate_slots(bytes);
  }

  // Forgets every entry and frees all memory through the source.
  void clear() {
    src_->release_all();
    arena_.forget();
    slots_ = nullptr;
    count_ = 0;
    nslots_ = 0;
    crowded_ = false;
  }

 private:
  size_t home(uint64_t hash) const {
    if (scrambled_) hash = (hash << 32) | (hash >> 32);
    return static_cast<size_t>((static_cast<unsigned __int128>(hash) * nslots_) >> 64);
  }
  size_t next(size_t i) const { return i + 1 == nslots_ ? 0 : i + 1; }

  // Probes for an inline key (one word compare per candidate): the slot of
  // its entry (*found), or the empty slot that ended the probe; *probes
  // counts the slots passed before it.
  size_t probe_inline(uint64_t hash, uint64_t image, uint32_t len, bool* found, size_t* probes) const {
    size_t i = home(hash), n = 0;
    for (;; i = next(i), ++n) {
      const Entry& e = slots_[i];
      if (e.key_len == kEmpty || (e.hash == hash && e.key_len == len && load64(e.key.bytes) == image)) break;
    }
    *found = slots_[i].key_len != kEmpty;
    *probes = n;
    return i;
  }

  bool equal(const Entry& e, KeyView k) const {
    if (e.key_len != k.len && !eq_.equal) return false;
    if (inline_keys_) return std::memcmp(e.key.bytes, k.data, k.len) == 0;
    if (!eq_.equal) return std::memcmp(e.key.ptr, k.data, k.len) == 0;
    return eq_.equal(eq_.ctx, KeyView{e.key.ptr, e.key_len}, k);
  }

  // A slot array of at least `bytes`, using all of the block it gets.
  void allocate_slots(size_t bytes) {
    bytes = src_->usable_size(bytes);
    slots_ = static_cast<Entry*>(src_->allocate(bytes));
    nslots_ = bytes / sizeof(Entry);
    for (size_t i = 0; i < nslots_; ++i) slots_[i].key_len = kEmpty;
  }

  void grow() {
    Entry* old = slots_;
    size_t old_n = nslots_;
    allocate_slots(old_n * 2 * sizeof(Entry));
    for (size_t j = 0; j < old_n; ++j) {
      if (old[j].key_len == kEmpty) continue;
      size_t i = home(old[j].hash);
      while (slots_[i].key_len != kEmpty) i = next(i);
      slots_[i] = old[j];
    }
    src_->release(old);
  }

  MemorySource* src_;
  size_t budget_;
  bool inline_keys_;
  KeyEquality eq_;
  ChunkArena arena_;
  Entry* slots_;
  size_t count_;
  size_t nslots_;
  bool scrambled_;
  bool crowded_;
  bool guard_crowding_;
};

// The table lives in PostgreSQL memory and may be abandoned by an ERROR.
static_assert(std::is_trivially_destructible_v<KeyedTable<uint64_t>>);

}  // namespace spillagg
