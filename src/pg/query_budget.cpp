#include "query_budget.h"

#include <sys/mman.h>

#include "backend_stats.h"
#include "boundary.h"

namespace spillagg {

size_t budget_bytes();  // module.cpp

static QueryBudget* registry = nullptr;

static void forget_budget(void* arg) {
  // The query's memory is going away (normal end or ERROR): only unlink.
  // Temp files are closed by the last state's shutdown callback, or by the
  // resource owner on ERROR; never touched here.
  QueryBudget* qb = static_cast<QueryBudget*>(arg);
  for (QueryBudget** p = &registry; *p; p = &(*p)->next)
    if (*p == qb) {
      *p = qb->next;
      break;
    }
}

QueryBudget* QueryBudget::of(MemoryContext query_cxt) {
  for (QueryBudget* qb = registry; qb; qb = qb->next)
    if (qb->query_cxt == query_cxt) return qb;
  QueryBudget* qb = static_cast<QueryBudget*>(MemoryContextAllocZero(query_cxt, sizeof(QueryBudget)));
  new (&qb->spill_file) TempFileStore();
  new (&qb->arena) BuddyArena();
  qb->query_cxt = query_cxt;
  qb->limit = budget_bytes();
  qb->spill_file.init(query_cxt);
  qb->candidates.prev = qb->candidates.next = &qb->candidates;
  MemoryContextCallback* cb =
      static_cast<MemoryContextCallback*>(MemoryContextAllocZero(query_cxt, sizeof(MemoryContextCallback)));
  cb->func = forget_budget;
  cb->arg = qb;
  MemoryContextRegisterResetCallback(query_cxt, cb);
  qb->next = registry;
  registry = qb;
  return qb;
}

void QueryBudget::add_state(SpillCandidate* c) {
  c->next = nullptr;
  reinstate(c);
  live_states++;
}

void QueryBudget::retire(SpillCandidate* c) {
  if (!c->next) return;
  c->prev->next = c->next;
  c->next->prev = c->prev;
  c->prev = c->next = nullptr;
}

void QueryBudget::reinstate(SpillCandidate* c) {
  if (c->next) return;
  c->next = candidates.next;
  c->prev = &candidates;
  candidates.next->prev = c;
  candidates.next = c;
}

void QueryBudget::remove_state(SpillCandidate* c) {
  retire(c);
  if (--live_states == 0) spill_file.close();
}

void QueryBudget::charge(SpillCandidate* c, ptrdiff_t bytes) {
  used += bytes;
  c->own_bytes += bytes;
  if (used > peak) peak = used;
}

// Spills the largest candidates other than `except` until done() holds.
// One pass over the candidates picks a batch of the largest, so with
// thousands of GROUP BY states a spill does not cost a pass of its own.
//
// Not re-entrant: a spill may compact the state's runs (SpillingTable::
// set_compaction), whose readers allocate; were that allocation to spill
// another state, which compacts in turn, the recursion would have no end.
// A nested call therefore does nothing, and the allocation falls back to
// the aggregate context (TrackedMemory::allocate).
template <class Done>
static void spill_largest(QueryBudget* qb, SpillCandidate* except, Done done) {
  if (qb->spilling) return;
  qb->spilling = true;
  struct Reset {  // also on a C++ exception (an ERROR abandons the budget anyway)
    QueryBudget* qb;
    ~Reset() { qb->spilling = false; }
  } reset{qb};
  SpillCandidate* list = &qb->candidates;
  constexpr int kBatch = 64;
  while (!done()) {
    SpillCandidate* top[kBatch];  // by own_bytes, largest first
    int n = 0;
    for (SpillCandidate* c = list->next; c != list; c = c->next) {
      if (c == except || c->own_bytes == 0) continue;
      if (n == kBatch && c->own_bytes <= top[n - 1]->own_bytes) continue;
      int i = n < kBatch ? n++ : n - 1;
      for (; i > 0 && top[i - 1]->own_bytes < c->own_bytes; --i) top[i] = top[i - 1];
      top[i] = c;
    }
    if (n == 0) return;
    // A spill frees a state's whole table; a state that is merging its runs
    // (its readers' memory counts as its own) frees nothing: stop then.
    size_t freed = 0;
    for (int i = 0; i < n && !done(); ++i) {
      if (top[i]->own_bytes == 0) continue;  // spilled meanwhile (nested make_room)
      size_t before = top[i]->own_bytes;
      top[i]->spill(top[i]->state);
      freed += before - std::min(before, top[i]->own_bytes);
    }
    if (freed == 0) return;
  }
}

void QueryBudget::make_room(size_t target) {
  spill_largest(this, nullptr, [&] { return used <= target; });
}

// A table larger than the CPU caches is probed at random: with 4 kB pages
// nearly every probe also misses the TLB. Where the kernel gives huge pages
// on request (transparent_hugepage = madvise), ask for them over the
// arena's 2 MB-aligned interior. Only a hint: errors are ignored.
static void advise_huge_pages(void* mem, size_t bytes) {
#ifdef MADV_HUGEPAGE
  constexpr uintptr_t kHuge = uintptr_t{2} << 20;
  uintptr_t start = TYPEALIGN(kHuge, reinterpret_cast<uintptr_t>(mem));
  uintptr_t end = TYPEALIGN_DOWN(kHuge, reinterpret_cast<uintptr_t>(mem) + bytes);
  if (end > start) (void)madvise(reinterpret_cast<void*>(start), end - start, MADV_HUGEPAGE);
#else
  (void)mem;
  (void)bytes;
#endif
}

void* QueryBudget::arena_allocate(size_t bytes, SpillCandidate* except) {
  if (!arena_ready) {
    // Untouched pages cost nothing: the arena's memory becomes resident
    // only as tables use it.
    // Should the system refuse the whole region up front, the arena stays
    // empty and every table allocates from its aggregate context.
    void* mem = MemoryContextAllocExtended(query_cxt, limit + 16, MCXT_ALLOC_HUGE | MCXT_ALLOC_NO_OOM);
    if (mem) {
      arena.init(reinterpret_cast<uint8*>(TYPEALIGN(16, reinterpret_cast<uintptr_t>(mem))), limit);
      advise_huge_pages(mem, limit);
    }
    arena_ready = true;
  }
  if (BuddyArena::block_bytes(bytes) > arena.max_block()) return nullptr;  // never fits
  if (!arena.can_allocate(bytes))  // as make_room_for_query: down to 3/4, not just one block
    spill_largest(this, except,
                  [&] { return used <= limit / 4 * 3 && arena.can_allocate(bytes); });
  return arena.allocate(bytes);
}
void make_room_for_query(void* budget) {
  QueryBudget* qb = static_cast<QueryBudget*>(budget);
  qb->make_room(qb->limit / 4 * 3);
}

void TrackedMemory::init(QueryBudget* budget, SpillCandidate* owner, MemoryContext cxt) {
  budget_ = budget;
  owner_ = owner;
  cxt_ = cxt;
  head_ = nullptr;
}

void* TrackedMemory::allocate(size_t bytes) {
  size_t total = sizeof(Block) + bytes;
  void* p = budget_->arena_allocate(total, owner_);
  if (!p) {
    p = MemoryContextAllocExtended(cxt_, total, MCXT_ALLOC_HUGE | MCXT_ALLOC_NO_OOM);
    if (!p) throw std::bad_alloc();  // NO_OOM: unwind C++, then an ERROR
  }
  Block* b = static_cast<Block*>(p);
  // Charged: the whole arena block (the core sized its request to use it).
  b->size = budget_->arena.contains(p) ? BuddyArena::block_bytes(total) : bytes;
  b->prev = nullptr;
  b->next = head_;
  if (head_) head_->prev = b;
  head_ = b;
  budget_->charge(owner_, static_cast<ptrdiff_t>(b->size));
  return b + 1;
}

void TrackedMemory::free_block(Block* b) {
  budget_->charge(owner_, -static_cast<ptrdiff_t>(b->size));
  if (budget_->arena.contains(b)) budget_->arena.release(b);
  else pfree(b);
}

void TrackedMemory::release(void* p) {
  Block* b = static_cast<Block*>(p) - 1;
  if (b->prev) b->prev->next = b->next;
  else head_ = b->next;
  if (b->next) b->next->prev = b->prev;
  free_block(b);
}

void TrackedMemory::release_all() {
  while (head_) {
    Block* b = head_;
    head_ = b->next;
    free_block(b);
  }
}

size_t TrackedMemory::bytes_allocated() const { return budget_->used; }

// Requests are rounded up to the arena's power-of-two blocks: a table may
// use the whole block. Requests the arena can never hold are not rounded.
size_t TrackedMemory::usable_size(size_t bytes) const {
  size_t block = BuddyArena::block_bytes(sizeof(Block) + bytes);
  if (block > BuddyArena::max_block_for(budget_->limit)) return bytes;
  return block - BuddyArena::kHeader - sizeof(Block);
}

}  // namespace spillagg
