// RunStore over a LogicalTapeSet: one temp file per query (QueryBudget),
// created by the first spill, holding one tape per run. Because it is PostgreSQL's
// temp-file machinery, the file follows temp_tablespaces, counts against
// temp_file_limit, is reported by log_temp_files and pg_stat_database, and is
// removed by the resource owner on ERROR or cancel. close() is called when
// the query's last state shuts down, on the normal path only.
#pragma once

#include "postgres_api.h"

#include "run_store.h"

namespace spillagg {

class TapeStore final : public RunStore {
 public:
  void init(MemoryContext cxt) {
    cxt_ = cxt;
    tapes_ = nullptr;
  }
  void close();

  Run create_run() override;
  void write(Run r, const void* p, size_t n) override;
  void finish_writing(Run r) override;
  size_t read(Run r, void* p, size_t n) override;
  void destroy_run(Run r) override;
  size_t read_buffer_bytes() const override { return BLCKSZ; }
  void check_interrupts() override;
  void spilled(uint64_t entries, uint64_t bytes) override;

 private:
  MemoryContext cxt_;  // where the tape set and its buffers live
  LogicalTapeSet* tapes_;
};

}  // namespace spillagg
