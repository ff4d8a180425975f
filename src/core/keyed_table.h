// Open-addressing (linear probing) hash table from key bytes to a State.
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

#include "memory.h"

namespace spillagg {

struct KeyView {
  const uint8_t* data;
  uint32_t len;
};

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
  static constexpr size_t kMinSlots = 16;  // small: a GROUP BY may hold thousands

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
    mask_ = 0;
  }

  size_t size() const { return count_; }
  bool empty() const { return count_ == 0; }
  size_t budget() const { return budget_; }
  size_t bytes_allocated() const { return src_->bytes_allocated(); }

  // Finds the entry for key, inserting a value-initialised State if absent.
  // Returns nullptr, without inserting, when the key is new and storing it
  // would exceed the budget: the caller spills and tries again. An empty
  // table always accepts, so a single key larger than the budget still works.
  Entry* find_or_insert(uint64_t hash, KeyView key, bool* inserted) {
    if (!slots_) allocate_slots(kMinSlots);
    size_t i = hash & mask_;
    for (;; i = (i + 1) & mask_) {
      Entry& e = slots_[i];
      if (e.key_len == kEmpty) break;
      if (e.hash == hash && equal(e, key)) {
        *inserted = false;
        return &e;
      }
    }
    // New key: refused when over budget (unless it would be the only one);
    // grow first if the load factor would pass 3/4.
    if (count_ > 0 && src_->bytes_allocated() > budget_) return nullptr;
    if ((count_ + 1) * 4 > (mask_ + 1) * 3) {
      size_t grown = (mask_ + 1) * 2 * sizeof(Entry);
      if (count_ > 0 && src_->bytes_allocated() + grown > budget_) return nullptr;
      grow();
      return find_or_insert(hash, key, inserted);
    }
    Entry& e = slots_[i];
    if (inline_keys_) {
      std::memset(e.key.bytes, 0, 8);
      std::memcpy(e.key.bytes, key.data, key.len);
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

  // What the first insert into an empty table allocates.
  size_t first_insert_bytes(uint32_t key_len) const {
    return kMinSlots * sizeof(Entry) + (inline_keys_ ? 0 : arena_.next_chunk_bytes(key_len));
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
    size_t n = 0;
    for (size_t i = 0; i <= mask_; ++i)
      if (slots_[i].key_len != kEmpty) slots_[n++] = slots_[i];
    if (sort_by_hash)
      std::sort(slots_, slots_ + n, [](const Entry& a, const Entry& b) { return a.hash < b.hash; });
    return slots_;
  }

  // Calls f(entry) for every live entry, in slot order.
  template <class F>
  void for_each(F&& f) const {
    if (!slots_) return;
    for (size_t i = 0; i <= mask_; ++i)
      if (slots_[i].key_len != kEmpty) f(slots_[i]);
  }

  // Forgets every entry and frees all memory through the source.
  void clear() {
    src_->release_all();
    arena_.forget();
    slots_ = nullptr;
    count_ = 0;
    mask_ = 0;
  }

 private:
  bool equal(const Entry& e, KeyView k) const {
    if (e.key_len != k.len && !eq_.equal) return false;
    if (inline_keys_) return std::memcmp(e.key.bytes, k.data, k.len) == 0;
    if (!eq_.equal) return std::memcmp(e.key.ptr, k.data, k.len) == 0;
    return eq_.equal(eq_.ctx, KeyView{e.key.ptr, e.key_len}, k);
  }

  void allocate_slots(size_t n) {
    slots_ = static_cast<Entry*>(src_->allocate(n * sizeof(Entry)));
    for (size_t i = 0; i < n; ++i) slots_[i].key_len = kEmpty;
    mask_ = n - 1;
  }

  void grow() {
    Entry* old = slots_;
    size_t old_n = mask_ + 1;
    allocate_slots(old_n * 2);
    for (size_t j = 0; j < old_n; ++j) {
      if (old[j].key_len == kEmpty) continue;
      size_t i = old[j].hash & mask_;
      while (slots_[i].key_len != kEmpty) i = (i + 1) & mask_;
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
  size_t mask_;
};

// The table lives in PostgreSQL memory and may be abandoned by an ERROR.
static_assert(std::is_trivially_destructible_v<KeyedTable<uint64_t>>);

}  // namespace spillagg
