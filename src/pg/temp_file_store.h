// RunStore over one BufFile per query (QueryBudget): every run is a segment
// of the file, appended as it is written, so a spill costs its bytes and
// nothing more (no tape, no block of its own: thousands of GROUP BY states
// spilling a few hundred bytes each stay cheap). Because it is PostgreSQL's
// temp-file machinery, the file follows temp_tablespaces, counts against
// temp_file_limit, is reported by log_temp_files and pg_stat_database, and is
// removed by the resource owner on ERROR or cancel. close() is called when
// the query's last state shuts down, on the normal path only.
//
// The space of destroyed runs is not reused: the file grows by every byte
// written (spills and merge passes) until the query's last state is done.
#pragma once

#include "postgres_api.h"

#include "run_store.h"

namespace spillagg {

class TempFileStore final : public RunStore {
 public:
  void init(MemoryContext cxt);
  void close();

  Run create_run() override;
  void write(Run r, const void* p, size_t n) override;
  void finish_writing(Run r) override;
  size_t read(Run r, void* p, size_t n) override;
  void rewind(Run r) override;
  void destroy_run(Run r) override;
  size_t read_buffer_bytes() const override { return sizeof(ReadBuffer); }
  void check_interrupts() override;
  void spilled(uint64_t entries, uint64_t bytes) override;

 private:
  // One run: a chain of extents, byte ranges [start, end) of the file. A
  // run usually is one extent, but while it is being written other states
  // may append their own spills to the file (a merge pass that needs memory
  // makes them spill), so each write that does not continue the run's last
  // extent starts a new one. Thousands of states may each hold many small
  // runs, so an extent is kept to 32 bytes (the tail is found by walking the
  // chain, which is one extent long but for such rare interleavings); only a
  // run being read has a buffer (with its read position) of its own.
  struct Segment;
  struct ReadBuffer {
    Segment* extent;   // the extent being read
    uint64 next_read;  // file offset of the next byte to load
    uint32 pos, len;   // unread bytes: data[pos, len)
    uint8 data[BLCKSZ];
  };
  struct Segment {
    uint64 start, end;
    Segment* next;  // the run's next extent
    union {
      ReadBuffer* buf;     // in a run's first extent: nullptr until the first read
      Segment* next_free;  // while on the free list
    };
  };
  Segment* new_segment();
  void seek(uint64 offset);

  MemoryContext cxt_;  // where the file, the segments and buffers live
  BufFile* file_;
  uint64 size_;        // bytes written so far (the end of the file)
  uint64 position_;    // where the BufFile stands now
  Segment* free_segments_;
};

}  // namespace spillagg
