#include "tape_store.h"

#include "backend_stats.h"
#include "boundary.h"

namespace spillagg {

void TapeStore::close() {
  if (tapes_) LogicalTapeSetClose(tapes_);
  tapes_ = nullptr;
}

RunStore::Run TapeStore::create_run() {
  LogicalTape* tape = nullptr;
  pg_call(cxt_, [&] {
    if (!tapes_) tapes_ = LogicalTapeSetCreate(false, nullptr, -1);
    tape = LogicalTapeCreate(tapes_);
  });
  backend_stats.runs++;
  return tape;
}

void TapeStore::write(Run r, const void* p, size_t n) {
  pg_call(cxt_, [&] { LogicalTapeWrite(static_cast<LogicalTape*>(r), const_cast<void*>(p), n); });
  backend_stats.bytes_written += n;
}

void TapeStore::finish_writing(Run r) {
  // Frees the write buffer now; the read buffer is taken on the first read.
  pg_call(cxt_, [&] { LogicalTapeRewindForRead(static_cast<LogicalTape*>(r), BLCKSZ); });
}

size_t TapeStore::read(Run r, void* p, size_t n) {
  size_t got = 0;
  pg_call(cxt_, [&] { got = LogicalTapeRead(static_cast<LogicalTape*>(r), p, n); });
  return got;
}

void TapeStore::destroy_run(Run r) {
  pg_call(cxt_, [&] { LogicalTapeClose(static_cast<LogicalTape*>(r)); });
}

void TapeStore::spilled(uint64_t entries, uint64_t bytes) {
  backend_stats.spills++;
  pg_call(cxt_, [&] {
    elog(DEBUG1, "spillagg: spilled %llu keys (%llu bytes) to a temporary file",
         static_cast<unsigned long long>(entries), static_cast<unsigned long long>(bytes));
  });
}

void TapeStore::check_interrupts() {
  pg_call(cxt_, [] { CHECK_FOR_INTERRUPTS(); });
}

}  // namespace spillagg
