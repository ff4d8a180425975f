// Where the core gets its memory. The PostgreSQL glue backs a MemorySource by
// a MemoryContext (so usage is measured exactly and freed by context reset);
// unit tests back it by malloc. Nothing allocated here has a destructor: the
// core's objects may be abandoned by a PostgreSQL ERROR at any time.
#pragma once

#include <cstddef>
#include <cstdint>
#include <new>

namespace spillagg {

class MemorySource {
 public:
  // Returns 8-byte aligned memory or throws std::bad_alloc.
  virtual void* allocate(size_t bytes) = 0;
  virtual void release(void* p) = 0;
  // Frees everything handed out so far.
  virtual void release_all() = 0;
  // Bytes currently held from the system on behalf of this source.
  virtual size_t bytes_allocated() const = 0;
  // The most a caller asking for `bytes` may as well ask for: what the
  // allocator would round the request up to anyway (at least `bytes`).
  virtual size_t usable_size(size_t bytes) const { return bytes; }

 protected:
  ~MemorySource() = default;  // never deleted through the interface
};

inline size_t align8(size_t n) { return (n + 7) & ~static_cast<size_t>(7); }

// Bump allocator for key bytes: keys are never freed one by one, only all at
// once when the table spills, so per-key allocation headers would be waste.
// Chunks start small and double up to chunk_bytes, so the thousands of tiny
// tables of a GROUP BY with many groups stay tiny.
class ChunkArena {
 public:
  static constexpr size_t kFirstChunk = 256;

  void init(MemorySource* src, size_t chunk_bytes) {
    src_ = src;
    max_chunk_ = chunk_bytes;
    forget();
  }
  // Drop all chunks without freeing them (the caller resets the source).
  void forget() {
    cur_ = end_ = nullptr;
    chunk_bytes_ = kFirstChunk < max_chunk_ ? kFirstChunk : max_chunk_;
  }

  // Size of the chunk the next allocation of n bytes would take.
  size_t next_chunk_bytes(size_t n) const {
    n = align8(n ? n : 1);
    return src_->usable_size(n > chunk_bytes_ / 4 ? n : chunk_bytes_);
  }

  // Like allocate(), but returns nullptr instead of taking a new chunk when
  // that would push the source past `limit` bytes.
  uint8_t* allocate_within(size_t n, size_t limit) {
    n = align8(n ? n : 1);  // never nullptr for 0 bytes: nullptr means "refused"
    if (static_cast<size_t>(end_ - cur_) >= n) return bump(n);
    size_t chunk = next_chunk_bytes(n);
    if (src_->bytes_allocated() + chunk > limit) return nullptr;
    return take_chunk(chunk, n);
  }
  uint8_t* allocate(size_t n) {
    n = align8(n ? n : 1);
    if (static_cast<size_t>(end_ - cur_) >= n) return bump(n);
    return take_chunk(next_chunk_bytes(n), n);
  }

 private:
  uint8_t* bump(size_t n) {
    uint8_t* p = cur_;
    cur_ += n;
    return p;
  }
  uint8_t* take_chunk(size_t chunk, size_t n) {
    uint8_t* c = static_cast<uint8_t*>(src_->allocate(chunk));
    if (n > chunk_bytes_ / 4) return c;  // an oversized key gets a chunk of its own
    cur_ = c + n;
    end_ = c + chunk;
    if (chunk_bytes_ < max_chunk_) chunk_bytes_ = chunk_bytes_ * 2 < max_chunk_ ? chunk_bytes_ * 2 : max_chunk_;
    return c;
  }

  MemorySource* src_ = nullptr;
  size_t max_chunk_ = 0;
  size_t chunk_bytes_ = 0;
  uint8_t* cur_ = nullptr;
  uint8_t* end_ = nullptr;
};

}  // namespace spillagg
