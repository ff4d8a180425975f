#include "query_budget.h"

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
  new (&qb->tapes) TapeStore();
  qb->query_cxt = query_cxt;
  qb->limit = budget_bytes();
  qb->tapes.init(query_cxt);
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
  c->next = candidates.next;
  c->prev = &candidates;
  candidates.next->prev = c;
  candidates.next = c;
  live_states++;
}

void QueryBudget::retire(SpillCandidate* c) {
  if (!c->next) return;
  c->prev->next = c->next;
  c->next->prev = c->prev;
  c->prev = c->next = nullptr;
}

void QueryBudget::remove_state(SpillCandidate* c) {
  retire(c);
  if (--live_states == 0) tapes.close();
}

void QueryBudget::charge(SpillCandidate* c, ptrdiff_t bytes) {
  used += bytes;
  c->own_bytes += bytes;
  if (used > peak) peak = used;
}

void QueryBudget::make_room(size_t target) {
  while (used > target) {
    SpillCandidate* largest = nullptr;
    for (SpillCandidate* c = candidates.next; c != &candidates; c = c->next)
      if (!largest || c->own_bytes > largest->own_bytes) largest = c;
    if (!largest || largest->own_bytes == 0) return;
    size_t before = used;
    largest->spill(largest->state);
    if (used >= before) return;  // nothing freed: let the caller spill itself
  }
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
  void* p = MemoryContextAllocExtended(cxt_, total, MCXT_ALLOC_HUGE | MCXT_ALLOC_NO_OOM);
  if (!p) throw std::bad_alloc();  // NO_OOM: unwind C++, then an ERROR
  Block* b = static_cast<Block*>(p);
  b->size = bytes;  // charged: what the core asked for (its budget arithmetic)
  b->prev = nullptr;
  b->next = head_;
  if (head_) head_->prev = b;
  head_ = b;
  budget_->charge(owner_, static_cast<ptrdiff_t>(bytes));
  return b + 1;
}

void TrackedMemory::release(void* p) {
  Block* b = static_cast<Block*>(p) - 1;
  if (b->prev) b->prev->next = b->next;
  else head_ = b->next;
  if (b->next) b->next->prev = b->prev;
  budget_->charge(owner_, -static_cast<ptrdiff_t>(b->size));
  pfree(b);
}

void TrackedMemory::release_all() {
  while (head_) {
    Block* b = head_;
    head_ = b->next;
    budget_->charge(owner_, -static_cast<ptrdiff_t>(b->size));
    pfree(b);
  }
}

size_t TrackedMemory::bytes_allocated() const { return budget_->used; }

}  // namespace spillagg
