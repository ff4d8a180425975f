// Storage for spill runs. The PostgreSQL glue implements it with one
// BufFile per query (a temp file that follows temp_tablespaces, counts against
// temp_file_limit and is removed at transaction end); unit tests implement
// it in memory. Every method may throw; a PostgreSQL ERROR arrives as a C++
// exception thrown by the implementation.
#pragma once

#include <cstddef>
#include <cstdint>

#include "codec.h"

namespace spillagg {

class RunStore {
 public:
  using Run = void*;

  virtual Run create_run() = 0;  // empty, ready for writing
  virtual void write(Run r, const void* p, size_t n) = 0;
  virtual void finish_writing(Run r) = 0;  // from now on the run is read once
  virtual size_t read(Run r, void* p, size_t n) = 0;
  // The next read() starts again at the run's first byte; frees what a
  // reader held (a run may be read several times: a final function may run
  // more than once on one state).
  virtual void rewind(Run r) = 0;
  virtual void destroy_run(Run r) = 0;
  // Memory one run holds while it is being read (its I/O buffer).
  virtual size_t read_buffer_bytes() const = 0;
  // Called periodically during long merges (query cancel).
  virtual void check_interrupts() = 0;
  // Told after each spill of a table (for counters and logging).
  virtual void spilled(uint64_t /*entries*/, uint64_t /*bytes*/) {}

 protected:
  ~RunStore() = default;
};

// ByteSink / ByteSource views of one run.
class RunSink final : public ByteSink {
 public:
  RunSink(RunStore* s, RunStore::Run r) : store_(s), run_(r) {}
  void write(const void* p, size_t n) override {
    store_->write(run_, p, n);
    bytes_ += n;
  }
  uint64_t bytes() const { return bytes_; }

 private:
  RunStore* store_;
  RunStore::Run run_;
  uint64_t bytes_ = 0;
};

}  // namespace spillagg
