// One memory budget per query for all its spillagg states (issue: 10,000
// GROUP BY groups must not each take a full spillagg.work_mem).
//
// A QueryBudget belongs to the executor's per-query memory context (the
// fn_mcxt of every aggregate support function of the query) and lives as
// long as it. It holds:
//   - the limit and the bytes all live states' tables hold together;
//   - one LogicalTapeSet (one temp file) for every run of the query;
//   - the list of states that may be spilled, so that when the total is
//     over budget the largest state spills first.
#pragma once

#include "postgres_api.h"

#include "memory.h"
#include "spilling_table.h"
#include "tape_store.h"

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

// A state's table memory: blocks from its aggregate context, listed so the
// table can free them all at once, and charged to the query's budget.
// bytes_allocated() is the whole query's usage, so the core table's
// "is there room?" test is a query-wide one. Living in the aggregate
// context, the tables count in HashAggregate's own memory accounting, so
// with many groups PostgreSQL spills groups (its input) as it would for
// any aggregate, instead of this budget being shared too thin.
class TrackedMemory final : public MemorySource {
 public:
  void init(QueryBudget* budget, SpillCandidate* owner, MemoryContext cxt);
  void* allocate(size_t bytes) override;
  void release(void* p) override;
  void release_all() override;
  size_t bytes_allocated() const override;

 private:
  struct Block {
    Block* prev;
    Block* next;
    size_t size;
    size_t pad;  // keeps the payload 16-byte aligned
  };
  QueryBudget* budget_;
  SpillCandidate* owner_;
  MemoryContext cxt_;
  Block* head_;
};

struct QueryBudget {
  MemoryContext query_cxt;   // registry key; this lives in it
  size_t limit;
  size_t used;
  size_t peak;
  TapeStore tapes;
  int live_states;           // the tape set closes when this drops to 0
  SpillCandidate candidates; // circular list head
  QueryBudget* next;         // backend-wide registry

  // The budget of the query whose per-query context is query_cxt.
  static QueryBudget* of(MemoryContext query_cxt);

  void add_state(SpillCandidate* c);
  // Takes the state off the spill list (it is being finalized).
  void retire(SpillCandidate* c);
  // A state is gone: off the list, and the tape set closed after the last.
  void remove_state(SpillCandidate* c);
  // Spills the largest states until at most `target` bytes are in use.
  void make_room(size_t target);
  void charge(SpillCandidate* c, ptrdiff_t bytes);
};

// RoomMaker callback for SpillingTable: spills largest-first down to 3/4
// of the limit (hysteresis, so a full query does not spill at every row).
void make_room_for_query(void* budget);

}  // namespace spillagg
