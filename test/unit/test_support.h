// Test doubles for the PostgreSQL-free core (src/core): a malloc-backed
// MemorySource with exact accounting and an in-memory RunStore. Plus small
// helpers shared by the test files.
#pragma once

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <map>
#include <memory>
#include <new>
#include <stdexcept>
#include <string>
#include <unordered_map>
#include <vector>

#include "codec.h"
#include "hash.h"
#include "keyed_table.h"
#include "memory.h"
#include "run_store.h"

namespace spillagg_test {

using spillagg::KeyView;

// malloc-backed MemorySource. Tracks the exact requested size of every live
// block, the current and peak total, and can be made to fail.
class TrackingSource final : public spillagg::MemorySource {
 public:
  TrackingSource() = default;
  TrackingSource(const TrackingSource&) = delete;
  TrackingSource& operator=(const TrackingSource&) = delete;
  ~TrackingSource() { free_everything(); }

  void* allocate(size_t bytes) override {
    ++allocations_;
    requests_.push_back(bytes);
    if (bytes > max_request_) max_request_ = bytes;
    if (fail_after_ >= 0) {
      if (fail_after_ == 0) throw std::bad_alloc();
      --fail_after_;
    }
    if (bytes > single_limit_) throw std::bad_alloc();
    void* p = std::malloc(bytes ? bytes : 1);
    if (!p) throw std::bad_alloc();
    if (reinterpret_cast<uintptr_t>(p) % 8 != 0) ADD_FAILURE() << "malloc returned unaligned memory";
    blocks_[p] = bytes;
    bytes_ += bytes;
    if (bytes_ > peak_) peak_ = bytes_;
    return p;
  }

  void release(void* p) override {
    ++releases_;
    auto it = blocks_.find(p);
    if (it == blocks_.end()) {
      ADD_FAILURE() << "release() of a pointer this source did not hand out (or already freed)";
      return;
    }
    bytes_ -= it->second;
    blocks_.erase(it);
    std::free(p);
  }

  void release_all() override {
    ++release_alls_;
    free_everything();
  }

  size_t bytes_allocated() const override { return bytes_; }

  // --- test controls / observations ---
  // The (n+1)-th allocation from now, and every later one, throws bad_alloc;
  // a negative n disables failures.
  void fail_after(long n) { fail_after_ = n; }
  // Requests above this size throw bad_alloc (like palloc's MaxAllocSize).
  void set_single_limit(size_t n) { single_limit_ = n; }
  size_t peak() const { return peak_; }
  void reset_peak() { peak_ = bytes_; }
  size_t live_blocks() const { return blocks_.size(); }
  size_t allocations() const { return allocations_; }
  size_t releases() const { return releases_; }
  size_t release_alls() const { return release_alls_; }
  size_t max_request() const { return max_request_; }
  // The size of every allocate() call so far, in order.
  const std::vector<size_t>& requests() const { return requests_; }

 private:
  void free_everything() {
    for (auto& b : blocks_) std::free(b.first);
    blocks_.clear();
    bytes_ = 0;
  }

  std::unordered_map<void*, size_t> blocks_;
  std::vector<size_t> requests_;
  size_t bytes_ = 0, peak_ = 0;
  size_t allocations_ = 0, releases_ = 0, release_alls_ = 0, max_request_ = 0;
  long fail_after_ = -1;
  size_t single_limit_ = SIZE_MAX;
};

struct Interrupted : std::runtime_error {
  Interrupted() : std::runtime_error("query canceled") {}
};

// In-memory RunStore: each run is a byte vector with a read position.
class MemRunStore final : public spillagg::RunStore {
 public:
  struct MemRun {
    std::vector<uint8_t> data;
    size_t pos = 0;
    bool finished = false;
    bool reading = false;  // read() called at least once
    uint64_t id = 0;       // creation order
  };

  MemRunStore() = default;
  MemRunStore(const MemRunStore&) = delete;
  MemRunStore& operator=(const MemRunStore&) = delete;

  Run create_run() override {
    auto r = std::make_unique<MemRun>();
    r->id = created_++;
    Run h = r.get();
    runs_.emplace(h, std::move(r));
    return h;
  }
  void write(Run r, const void* p, size_t n) override {
    MemRun& m = get(r);
    if (m.finished) ADD_FAILURE() << "write() after finish_writing()";
    const uint8_t* b = static_cast<const uint8_t*>(p);
    m.data.insert(m.data.end(), b, b + n);
    bytes_written_ += n;
  }
  void finish_writing(Run r) override {
    MemRun& m = get(r);
    if (m.finished) ADD_FAILURE() << "finish_writing() called twice";
    m.finished = true;
  }
  size_t read(Run r, void* p, size_t n) override {
    MemRun& m = get(r);
    if (!m.finished) ADD_FAILURE() << "read() before finish_writing()";
    ++reads_;
    if (!m.reading) {
      m.reading = true;
      ++reading_;
      if (reading_ > max_reading_) max_reading_ = reading_;
    }
    size_t k = std::min({n, m.data.size() - m.pos, read_chunk_});
    if (k) std::memcpy(p, m.data.data() + m.pos, k);
    m.pos += k;
    return k;
  }
  void rewind(Run r) override {
    MemRun& m = get(r);
    if (!m.finished) ADD_FAILURE() << "rewind() before finish_writing()";
    if (m.reading) --reading_;
    m.reading = false;
    m.pos = 0;
    ++rewinds_;
  }
  void destroy_run(Run r) override {
    auto it = runs_.find(r);
    if (it == runs_.end()) {
      ADD_FAILURE() << "destroy_run() of an unknown or already destroyed run";
      return;
    }
    if (it->second->reading) --reading_;
    runs_.erase(it);
    ++destroyed_;
  }
  size_t read_buffer_bytes() const override { return 8192; }
  void check_interrupts() override {
    ++interrupt_checks_;
    if (throw_at_check_ > 0 && interrupt_checks_ >= throw_at_check_) throw Interrupted();
  }

  // --- test controls / observations ---
  // The n-th call (counting from 1, over the store's lifetime) of
  // check_interrupts() and every later one throws Interrupted; 0 disables.
  void throw_at_check(size_t n) { throw_at_check_ = n; }
  // Every read() returns at most this many bytes (exercises short reads).
  void set_read_chunk(size_t n) { read_chunk_ = n; }

  size_t created() const { return created_; }
  size_t destroyed() const { return destroyed_; }
  size_t live() const { return runs_.size(); }
  size_t interrupt_checks() const { return interrupt_checks_; }
  uint64_t bytes_written() const { return bytes_written_; }
  size_t reads() const { return reads_; }
  size_t rewinds() const { return rewinds_; }
  // Most runs being read at once (each holds read_buffer_bytes() in a real store).
  size_t max_reading() const { return max_reading_; }

  // Live runs in creation order (for inspection and corruption).
  std::vector<MemRun*> live_runs() {
    std::map<uint64_t, MemRun*> by_id;
    for (auto& kv : runs_) by_id[kv.second->id] = kv.second.get();
    std::vector<MemRun*> out;
    for (auto& kv : by_id) out.push_back(kv.second);
    return out;
  }

 private:
  MemRun& get(Run r) {
    auto it = runs_.find(r);
    if (it == runs_.end()) throw std::logic_error("MemRunStore: use of unknown or destroyed run");
    return *it->second;
  }

  std::map<Run, std::unique_ptr<MemRun>> runs_;
  size_t created_ = 0, destroyed_ = 0, interrupt_checks_ = 0, throw_at_check_ = 0, reads_ = 0, rewinds_ = 0;
  size_t reading_ = 0, max_reading_ = 0;
  size_t read_chunk_ = SIZE_MAX;
  uint64_t bytes_written_ = 0;
};

// ByteSink into a vector (for codec tests).
struct VecSink final : spillagg::ByteSink {
  std::vector<uint8_t> data;
  size_t writes = 0;
  void write(const void* p, size_t n) override {
    const uint8_t* b = static_cast<const uint8_t*>(p);
    data.insert(data.end(), b, b + n);
    ++writes;
  }
};

// The bytes f(writer) writes through a Writer.
template <class F>
std::vector<uint8_t> encoded(F&& f) {
  VecSink sink;
  uint8_t buf[256];
  spillagg::Writer w(&sink, buf, sizeof buf);
  f(w);
  w.flush();
  return sink.data;
}

// --- helpers ---

inline KeyView kv(const std::string& s) {
  return KeyView{reinterpret_cast<const uint8_t*>(s.data()), static_cast<uint32_t>(s.size())};
}
inline std::string str(KeyView k) { return std::string(reinterpret_cast<const char*>(k.data), k.len); }
inline uint64_t hash_of(const std::string& s) {
  return spillagg::hash_bytes(reinterpret_cast<const uint8_t*>(s.data()), s.size());
}

// Deterministic Zipf-like sampler over ranks [0, n) with exponent s, built
// from raw mt19937_64 output so results do not depend on the standard
// library's distribution implementations.
class Zipf {
 public:
  Zipf(size_t n, double s) : cdf_(n) {
    double total = 0;
    for (size_t i = 0; i < n; ++i) {
      total += 1.0 / std::pow(static_cast<double>(i + 1), s);
      cdf_[i] = total;
    }
    for (double& c : cdf_) c /= total;
  }
  template <class Rng>
  size_t operator()(Rng& rng) const {
    double u = static_cast<double>(rng() >> 11) * (1.0 / 9007199254740992.0);  // [0,1)
    size_t i = static_cast<size_t>(std::lower_bound(cdf_.begin(), cdf_.end(), u) - cdf_.begin());
    return i < cdf_.size() ? i : cdf_.size() - 1;
  }

 private:
  std::vector<double> cdf_;
};

}  // namespace spillagg_test
