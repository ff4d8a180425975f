// A fixed region of memory handed out in power-of-two blocks (a buddy
// allocator). All the hash tables of one query live in one BuddyArena the
// size of the query's budget: freed blocks coalesce with their buddies, so
// thousands of small tables that grow, spill and grow again reuse the same
// bytes instead of fragmenting the heap, and the memory they touch can never
// exceed the region (the process's peak RSS stays within the budget).
//
// The region need not be a power of two: it is covered by the power-of-two
// top blocks of its size's binary expansion (largest first), and a block
// never coalesces past its top block because its buddy would end beyond the
// region. Each block starts with a 16-byte header; free blocks also hold
// their free-list links.
#pragma once

#include <cstddef>
#include <cstdint>

namespace spillagg {

class BuddyArena {
 public:
  static constexpr unsigned kMinOrder = 6;  // 64-byte blocks hold a free header
  static constexpr unsigned kMaxOrders = 48;
  static constexpr size_t kHeader = 16;     // keeps payloads 16-byte aligned

  // base: 16-byte aligned; bytes is rounded down to a multiple of 64.
  void init(uint8_t* base, size_t bytes) {
    base_ = base;
    size_ = bytes & ~((size_t{1} << kMinOrder) - 1);
    free_bytes_ = 0;
    for (auto& h : free_) h = nullptr;
    size_t off = 0;
    for (unsigned k = kMaxOrders; k-- > kMinOrder;) {
      if (size_ & (size_t{1} << k)) {
        push(block_at(off), k);
        off += size_t{1} << k;
      }
    }
  }

  // Bytes of the block allocate(bytes) would take (header included);
  // SIZE_MAX for requests no block can hold.
  static size_t block_bytes(size_t bytes) {
    unsigned k = order_for(bytes);
    return k < kMaxOrders ? size_t{1} << k : SIZE_MAX;
  }

  // A 16-byte aligned payload of at least `bytes`, or nullptr when no free
  // block is large enough (the caller makes room and tries again).
  void* allocate(size_t bytes) {
    unsigned want = order_for(bytes);
    if (want >= kMaxOrders) return nullptr;
    unsigned k = want;
    while (k < kMaxOrders && !free_[k]) ++k;
    if (k == kMaxOrders) return nullptr;
    Block* b = free_[k];
    unlink(b, k);
    while (k > want) {  // split, keeping the lower half
      --k;
      push(reinterpret_cast<Block*>(reinterpret_cast<uint8_t*>(b) + (size_t{1} << k)), k);
    }
    b->order = static_cast<uint8_t>(want);
    b->is_free = 0;
    return reinterpret_cast<uint8_t*>(b) + kHeader;
  }

  void release(void* p) {
    Block* b = reinterpret_cast<Block*>(static_cast<uint8_t*>(p) - kHeader);
    unsigned k = b->order;
    size_t off = offset_of(b);
    for (;;) {  // coalesce while the buddy is wholly free at the same order
      size_t buddy_off = off ^ (size_t{1} << k);
      if (buddy_off + (size_t{1} << k) > size_) break;
      Block* buddy = block_at(buddy_off);
      if (!buddy->is_free || buddy->order != k) break;
      unlink(buddy, k);
      off &= ~(size_t{1} << k);
      ++k;
    }
    push(block_at(off), k);
  }

  // Whether allocate(bytes) would succeed now.
  bool can_allocate(size_t bytes) const {
    for (unsigned k = order_for(bytes); k < kMaxOrders; ++k)
      if (free_[k]) return true;
    return false;
  }

  bool contains(const void* p) const {
    auto* q = static_cast<const uint8_t*>(p);
    return q >= base_ && q < base_ + size_;
  }
  size_t capacity() const { return size_; }
  // The largest block a region of `bytes` can ever provide (its first top block).
  static size_t max_block_for(size_t bytes) {
    size_t b = 0;
    for (unsigned k = kMinOrder; k < kMaxOrders; ++k)
      if (bytes & (size_t{1} << k)) b = size_t{1} << k;
    return b;
  }
  size_t max_block() const { return max_block_for(size_); }
  size_t free_bytes() const { return free_bytes_; }

 private:
  struct Block {
    uint8_t order;
    uint8_t is_free;
    uint8_t pad[14];
    Block* prev;  // free blocks only (after the header)
    Block* next;
  };
  static_assert(sizeof(Block) <= (size_t{1} << kMinOrder), "free header must fit a block");

  // kMaxOrders (never available) for requests too large for any block.
  static unsigned order_for(size_t bytes) {
    if (bytes > (size_t{1} << (kMaxOrders - 1)) - kHeader) return kMaxOrders;
    size_t need = bytes + kHeader;
    unsigned k = kMinOrder;
    while (k < kMaxOrders && (size_t{1} << k) < need) ++k;
    return k;
  }
  Block* block_at(size_t off) const { return reinterpret_cast<Block*>(base_ + off); }
  size_t offset_of(const Block* b) const {
    return static_cast<size_t>(reinterpret_cast<const uint8_t*>(b) - base_);
  }

  void push(Block* b, unsigned k) {
    b->order = static_cast<uint8_t>(k);
    b->is_free = 1;
    b->prev = nullptr;
    b->next = free_[k];
    if (free_[k]) free_[k]->prev = b;
    free_[k] = b;
    free_bytes_ += size_t{1} << k;
  }
  void unlink(Block* b, unsigned k) {
    if (b->prev) b->prev->next = b->next;
    else free_[k] = b->next;
    if (b->next) b->next->prev = b->prev;
    b->is_free = 0;
    free_bytes_ -= size_t{1} << k;
  }

  uint8_t* base_ = nullptr;
  size_t size_ = 0;
  size_t free_bytes_ = 0;
  Block* free_[kMaxOrders] = {};
};

}  // namespace spillagg
