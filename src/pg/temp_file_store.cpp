#include "temp_file_store.h"

#include "backend_stats.h"
#include "boundary.h"

namespace spillagg {

void TempFileStore::init(MemoryContext cxt) {
  cxt_ = cxt;
  file_ = nullptr;
  size_ = position_ = 0;
  free_segments_ = nullptr;
}

void TempFileStore::close() {
  if (file_) BufFileClose(file_);
  file_ = nullptr;
  size_ = position_ = 0;
}

// Segments are carved from blocks in the query context and recycled through
// a free list, so a run costs no allocation of its own.
TempFileStore::Segment* TempFileStore::new_segment() {
  if (!free_segments_) {
    constexpr int kPerBlock = 128;
    Segment* block = nullptr;
    pg_call(cxt_, [&] { block = static_cast<Segment*>(palloc(kPerBlock * sizeof(Segment))); });
    for (int i = 0; i < kPerBlock; ++i) {
      block[i].next_free = free_segments_;
      free_segments_ = &block[i];
    }
  }
  Segment* s = free_segments_;
  free_segments_ = s->next_free;
  return s;
}

void TempFileStore::seek(uint64 offset) {
  if (position_ == offset) return;
  int rc = 0;
  // fileno 0 with the whole offset: BufFileSeek steps through its 1 GB segments.
  pg_call(cxt_, [&] {
    rc = BufFileSeek(file_, 0, static_cast<off_t>(offset), SEEK_SET);
    if (rc != 0)
      ereport(ERROR, (errcode_for_file_access(),
                      errmsg("could not seek in spillagg temporary file: %m")));
  });
  position_ = offset;
}

RunStore::Run TempFileStore::create_run() {
  if (!file_)
    pg_call(cxt_, [&] {
      PrepareTempTablespaces();  // so the file lands in temp_tablespaces
      file_ = BufFileCreateTemp(false);
    });
  Segment* s = new_segment();
  s->start = s->end = size_;
  s->next = nullptr;
  s->buf = nullptr;
  backend_stats.runs++;
  return s;
}

void TempFileStore::write(Run r, const void* p, size_t n) {
  Segment* s = static_cast<Segment*>(r);
  Segment* tail = s;
  while (tail->next) tail = tail->next;
  if (tail->end != size_) {  // the file grew since: the run goes on elsewhere
    if (tail->start == tail->end) {
      tail->start = tail->end = size_;
    } else {
      Segment* more = new_segment();
      more->start = more->end = size_;
      more->next = nullptr;
      more->buf = nullptr;
      tail->next = more;
      tail = more;
    }
  }
  seek(size_);  // a merge may have read elsewhere since the last write
  pg_call(cxt_, [&] { BufFileWrite(file_, const_cast<void*>(p), n); });
  size_ += n;
  position_ = size_;
  tail->end = size_;
  backend_stats.bytes_written += n;
}

void TempFileStore::finish_writing(Run) {}

size_t TempFileStore::read(Run r, void* p, size_t n) {
  Segment* s = static_cast<Segment*>(r);
  if (!s->buf) {
    pg_call(cxt_, [&] { s->buf = static_cast<ReadBuffer*>(palloc(sizeof(ReadBuffer))); });
    s->buf->extent = s;
    s->buf->next_read = s->start;
    s->buf->pos = s->buf->len = 0;
  }
  ReadBuffer* b = s->buf;
  size_t got = 0;
  while (got < n) {
    if (b->pos == b->len) {  // refill from the file
      uint64 left = b->extent->end - b->next_read;
      if (left == 0) {
        if (!b->extent->next) break;
        b->extent = b->extent->next;
        b->next_read = b->extent->start;
        continue;
      }
      size_t want = Min(left, static_cast<uint64>(BLCKSZ)), len = 0;
      seek(b->next_read);
      pg_call(cxt_, [&] {
        len = BufFileRead(file_, b->data, want);
        if (len != want)
          ereport(ERROR, (errcode_for_file_access(),
                          errmsg("could not read spillagg temporary file: read only %zu of %zu bytes",
                                 len, want)));
      });
      position_ += len;
      b->next_read += len;
      b->pos = 0;
      b->len = static_cast<uint32>(len);
    }
    size_t take = Min(n - got, static_cast<size_t>(b->len - b->pos));
    memcpy(static_cast<uint8*>(p) + got, b->data + b->pos, take);
    b->pos += static_cast<uint32>(take);
    got += take;
  }
  return got;
}

void TempFileStore::rewind(Run r) {
  Segment* s = static_cast<Segment*>(r);
  if (s->buf) pfree(s->buf);
  s->buf = nullptr;
}

void TempFileStore::destroy_run(Run r) {
  Segment* s = static_cast<Segment*>(r);
  if (s->buf) pfree(s->buf);
  while (s) {
    Segment* next = s->next;
    s->next_free = free_segments_;
    free_segments_ = s;
    s = next;
  }
}

void TempFileStore::spilled(uint64_t entries, uint64_t bytes) {
  backend_stats.spills++;
  pg_call(cxt_, [&] {
    elog(DEBUG1, "spillagg: spilled %llu keys (%llu bytes) to a temporary file",
         static_cast<unsigned long long>(entries), static_cast<unsigned long long>(bytes));
  });
}

void TempFileStore::check_interrupts() {
  pg_call(cxt_, [] { CHECK_FOR_INTERRUPTS(); });
}

}  // namespace spillagg
