// MemorySource backed by a PostgreSQL MemoryContext: usage is measured by
// MemoryContextMemAllocated and everything is freed by a context reset, so
// a query abandoned by an ERROR leaks nothing.
#pragma once

#include "postgres_api.h"

#include <new>

#include "memory.h"

namespace spillagg {

class ContextMemory final : public MemorySource {
 public:
  void init(MemoryContext cxt) { cxt_ = cxt; }
  MemoryContext context() const { return cxt_; }

  void* allocate(size_t bytes) override {
    // NO_OOM: out of memory comes back as NULL, and we unwind C++ cleanly.
    void* p = MemoryContextAllocExtended(cxt_, bytes, MCXT_ALLOC_HUGE | MCXT_ALLOC_NO_OOM);
    if (!p) throw std::bad_alloc();
    return p;
  }
  void release(void* p) override { pfree(p); }
  void release_all() override { MemoryContextReset(cxt_); }
  size_t bytes_allocated() const override { return MemoryContextMemAllocated(cxt_, true); }

 private:
  MemoryContext cxt_;
};

}  // namespace spillagg
