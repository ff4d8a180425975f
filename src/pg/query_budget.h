// One memory budget per query for all its spillagg states (issue: 10,000
// GROUP BY groups must not each take a full spillagg.work_mem).
//
// A QueryBudget belongs to the executor's per-query memory context (the
// fn_mcxt of every aggregate support function of the query) and lives as
// long as it. It holds:
//   - the limit and the bytes all live states' tables hold together;
//   - one BuddyArena of `limit` bytes from which all those tables are
//     allocated, so however their sizes churn the process never holds
//     more than the budget for them (a table that cannot get a block there
//     after the others have spilled, e.g. one key larger than the budget,
//     falls back to its aggregate context);
//   - one temp file (TempFileStore) for every run of the query;
//   - the list of states that may be spilled, so that when the total is
//     over budget the largest state spills first.
#pragma once

#include "postgres_api.h"

#include "buddy_arena.h"
#include "memory.h"
#include "spilling_table.h"
#include "temp_file_store.h"

namespace spillagg {

struct QueryBudget;

// A state that may be asked to spill (embedded in each KeyedAgg).
struct SpillCandidate {
  SpillCandidate* prev;
  SpillCandidate* next;
  void* state;
  void (*spill)(void* state);
  size_t own_bytes;  // bytes its table holds now
};

// A state's table memory: blocks from the query's arena, listed so the
// table can free them all at once, and charged to the query's budget.
// bytes_allocated() is the whole query's usage, so the core table's
// "is there room?" test is a query-wide one.
class TrackedMemory final : public MemorySource {
 public:
  void init(QueryBudget* budget, SpillCandidate* owner, MemoryContext cxt);
  void* allocate(size_t bytes) override;
  void release(void* p) override;
  void release_all() override;
  size_t bytes_allocated() const override;
  size_t usable_size(size_t bytes) const override;

 private:
  struct Block {
    Block* prev;
    Block* next;
    size_t size;
    size_t pad;  // keeps the payload 16-byte aligned
  };
  void free_block(Block* b);
  QueryBudget* budget_;
  SpillCandidate* owner_;
  MemoryContext cxt_;  // the fallback for blocks the arena cannot hold
  Block* head_;
};

struct QueryBudget {
  MemoryContext query_cxt;   // registry key; this lives in it
  size_t limit;
  size_t used;
  size_t peak;
  TempFileStore spill_file;
  BuddyArena arena;          // empty until the first table allocates
  bool arena_ready;
  int live_states;           // the spill file closes when this drops to 0
  bool spilling;             // inside make_room / arena_allocate's spilling
  SpillCandidate candidates; // circular list head
  QueryBudget* next;         // backend-wide registry

  // The budget of the query whose per-query context is query_cxt.
  static QueryBudget* of(MemoryContext query_cxt);

  void add_state(SpillCandidate* c);
  // Takes the state off the spill list (it is being streamed by a final,
  // serial or combine function) and puts it back (the stream has ended).
  void retire(SpillCandidate* c);
  void reinstate(SpillCandidate* c);
  // A state is gone: off the list, and the spill file closed after the last.
  void remove_state(SpillCandidate* c);
  // Spills the largest states until at most `target` bytes are in use.
  void make_room(size_t target);
  // A block of `bytes` from the arena, spilling states other than `except`
  // (largest first) while it has none that large; nullptr if it still has none.
  void* arena_allocate(size_t bytes, SpillCandidate* except);
  void charge(SpillCandidate* c, ptrdiff_t bytes);
};

// RoomMaker callback for SpillingTable: spills largest-first down to 3/4
// of the limit (hysteresis, so a full query does not spill at every row).
void make_room_for_query(void* budget);

}  // namespace spillagg
