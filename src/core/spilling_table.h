// A KeyedTable that stays within its memory budget by spilling: when the
// table is full its entries are written, sorted by hash, as a run to a
// RunStore and the table starts empty again. finish() then streams every key
// once, with all its partial states merged by State::merge, through a k-way
// merge of the runs whose memory is bounded by the budget (runs beyond the
// fan-in are first merged in intermediate passes, as external sorts do).
//
// Run record: varint key_len | varint state_len | u64 hash | key | state; a
// table whose owner can recompute a key's hash from its bytes (Rehash:
// inline keys) leaves the hash out, which more than halves the records of
// small keys and states.
#pragma once

#include <algorithm>
#include <array>
#include <cstdint>
#include <cstring>
#include <new>
#include <type_traits>

#include "codec.h"
#include "decimal.h"
#include "keyed_table.h"
#include "run_store.h"

namespace spillagg {

// Called when the table is full, in place of spilling this table: the owner
// of several tables sharing one budget spills the largest of them (which may
// be this one) and returns; upsert() then tries again.
struct RoomMaker {
  void (*make_room)(void* ctx);
  void* ctx;
};

struct SpillStats {
  uint64_t spills = 0;         // times the table was written out
  uint64_t runs = 0;           // runs written, including merge passes
  uint64_t bytes_written = 0;  // bytes written to runs
  uint64_t merge_passes = 0;   // intermediate merge passes
  size_t peak_bytes = 0;       // most memory held by the table at once
};

constexpr size_t kRecordHeaderMax = 10 + 10 + 8;
constexpr size_t kStateMax = 256;  // bound on State::encode output
constexpr size_t kIoChunk = 8192;    // write buffering (on the stack)
constexpr size_t kReadChunk = 2048;  // a reader's own buffer; grows for larger records

// The bound on State::encode output: kStateMax, or State::kMaxEncoded for
// states that declare a larger one (the wide numeric rungs).
template <class S, class = void>
struct StateMax : std::integral_constant<size_t, kStateMax> {};
template <class S>
struct StateMax<S, std::void_t<decltype(S::kMaxEncoded)>>
    : std::integral_constant<size_t, (S::kMaxEncoded > kStateMax ? S::kMaxEncoded : kStateMax)> {};

// Writes one record: varint key length, varint state length, the hash
// (if given: run records have it, flat-state records of format 3 do not),
// the key, the state.
template <class State>
void write_record(Writer& w, const uint64_t* hash, KeyView key, const State& st) {
  if constexpr (StateMax<State>::value <= kStateMax) {
    struct TooLarge final : ByteSink {
      void write(const void*, size_t) override { throw std::length_error("state encoding too large"); }
    } too_large;
    uint8_t sbuf[kStateMax];
    Writer sw(&too_large, sbuf, sizeof sbuf);
    st.encode(sw);
    w.varint(key.len);
    w.varint(sw.buffered());
    if (hash) w.fixed<uint64_t>(*hash);
    w.bytes(key.data, key.len);
    w.bytes(sbuf, sw.buffered());
  } else {  // large states: measure the encoding, then write it in place
    struct Counter final : ByteSink {
      size_t n = 0;
      void write(const void*, size_t len) override { n += len; }
    } counter;
    uint8_t cbuf[256];
    Writer cw(&counter, cbuf, sizeof cbuf);
    st.encode(cw);
    cw.flush();
    if (counter.n > StateMax<State>::value) throw std::length_error("state encoding too large");
    w.varint(key.len);
    w.varint(counter.n);
    if (hash) w.fixed<uint64_t>(*hash);
    w.bytes(key.data, key.len);
    st.encode(w);
  }
}

// Writes one record in the run format.
template <class State>
void write_run_record(Writer& w, uint64_t hash, KeyView key, const State& st) {
  write_record(w, &hash, key, st);
}

struct RecordHeader {
  uint32_t key_len;
  uint32_t state_len;
  uint64_t hash;
};

// (hash is 0 when the record has none)
inline RecordHeader read_record_header(Reader& r, size_t state_max = kStateMax, bool with_hash = true) {
  uint64_t key_len = r.varint();
  uint64_t state_len = r.varint();
  if (key_len > UINT32_MAX || state_len > state_max) throw CorruptData("bad record header");
  return RecordHeader{static_cast<uint32_t>(key_len), static_cast<uint32_t>(state_len),
                      with_hash ? r.fixed<uint64_t>() : 0};
}

// Reads one whole record from memory; the key points into r's bytes. With
// rehash, the record has no hash and rehash(key) gives it.
template <class State>
void read_run_record(Reader& r, uint64_t* hash, KeyView* key, State* st, Rehash rehash = nullptr) {
  RecordHeader h = read_record_header(r, StateMax<State>::value, rehash == nullptr);
  *key = KeyView{r.take(h.key_len), h.key_len};
  *hash = rehash ? rehash(*key) : h.hash;
  Reader s(r.take(h.state_len), h.state_len);
  *st = State::decode(s);
  if (s.remaining() != 0) throw CorruptData("bad state in record");
}

// Reads the records of one run through a buffer taken from a MemorySource.
template <class State>
class RunReader {
 public:
  struct Record {
    uint64_t hash;
    KeyView key;  // valid until the next call to next()
    State state;
  };

  // key_max: the longest key the table holds (8 for inline keys).
  void init(RunStore* store, RunStore::Run run, uint64_t records, MemorySource* mem, Rehash rehash,
            uint32_t key_max) {
    rehash_ = rehash;
    key_max_ = key_max;
    store_ = store;
    run_ = run;
    left_ = records;
    mem_ = mem;
    cap_ = mem->usable_size(kReadChunk);
    buf_ = static_cast<uint8_t*>(mem->allocate(cap_));
    pos_ = len_ = 0;
  }

  bool next() {
    if (left_ == 0) return false;
    --left_;
    ensure(kRecordHeaderMax);
    Reader h(buf_ + pos_, len_ - pos_);
    RecordHeader head = read_record_header(h, StateMax<State>::value, rehash_ == nullptr);
    if (head.key_len > key_max_) throw CorruptData("bad key length in spill run");
    size_t total = static_cast<size_t>(h.position() - (buf_ + pos_)) + head.key_len + head.state_len;
    if (ensure(total) < total) throw CorruptData("spill run truncated");
    Reader rec(buf_ + pos_, total);
    read_run_record(rec, &cur_.hash, &cur_.key, &cur_.state, rehash_);
    pos_ += total;
    return true;
  }
  const Record& current() const { return cur_; }
  RunStore::Run run() const { return run_; }

 private:
  // Makes up to n bytes contiguous at buf_ + pos_; returns how many are.
  size_t ensure(size_t n) {
    if (len_ - pos_ >= n) return n;
    std::memmove(buf_, buf_ + pos_, len_ - pos_);
    len_ -= pos_;
    pos_ = 0;
    while (len_ < n) {
      if (len_ == cap_) {  // a key larger than the buffer: grow as data arrives,
        size_t cap = std::min(n, cap_ * 2);  // so a corrupt length cannot ask for GBs
        uint8_t* b = static_cast<uint8_t*>(mem_->allocate(cap));
        std::memcpy(b, buf_, len_);
        mem_->release(buf_);
        buf_ = b;
        cap_ = cap;
      }
      size_t got = store_->read(run_, buf_ + len_, cap_ - len_);
      if (got == 0) break;
      len_ += got;
    }
    return std::min(n, len_);
  }

  Rehash rehash_;
  uint32_t key_max_;
  RunStore* store_;
  RunStore::Run run_;
  uint64_t left_;
  MemorySource* mem_;
  uint8_t* buf_;
  size_t cap_, pos_, len_;
  Record cur_;
};

// States whose per-row update is exactly a merge of a one-row state (counts,
// presence, sums, extremes, float moments) declare kDeferrable = true: their
// rows may be applied later, in the same order (SpillingTable::add_deferred).
template <class S, class = void>
struct Deferrable : std::false_type {};
template <class S>
struct Deferrable<S, std::void_t<decltype(S::kDeferrable)>> : std::bool_constant<S::kDeferrable> {};

template <class State>
class SpillingTable {
 public:
  static constexpr bool kCanDefer = Deferrable<State>::value;

 private:
  // add_deferred's batch, how far ahead of the key it inserts the batch
  // loop prefetches a slot, and the table size from which batching pays:
  // smaller tables stay in the CPU caches, and their states (thousands in a
  // GROUP BY) keep no batch. The batch (~3-7 kB) is outside the budget; a
  // state has one only once its table held 16k keys (>= 384 kB of budget).
  static constexpr size_t kBatch = 64;
  static constexpr size_t kPrefetchAhead = 16;
  static constexpr size_t kBatchFromKeys = 16384;
  static constexpr size_t kBatchKeyBytes = 4096;  // the batch's copies of its keys
  static constexpr size_t kBatchKeyMax = 256;     // longer keys are not batched
  static_assert(kBatch < UINT16_MAX && kBatchKeyBytes < UINT16_MAX);

 public:
  using Table = KeyedTable<State>;
  using Entry = typename Table::Entry;
  using Record = typename RunReader<State>::Record;

  // table_mem is reset whenever the table spills; meta_mem holds the run list
  // and lives as long as this object.
  // rehash: how the owner hashes a key, if the hash can be recomputed from
  // the key's bytes; the runs then leave it out (see the record format).
  void init(MemorySource* table_mem, MemorySource* meta_mem, RunStore* store, size_t budget,
            bool inline_keys, KeyEquality eq, Rehash rehash = nullptr) {
    rehash_ = rehash;
    table_mem_ = table_mem;
    meta_mem_ = meta_mem;
    store_ = store;
    eq_ = eq;
    table_.init(table_mem, budget, inline_keys, eq);
    table_.guard_crowding();  // upsert spills and scrambles a crowded table
    room_ = RoomMaker{nullptr, nullptr};
    merge_budget_ = budget;
    runs_ = nullptr;
    nruns_ = runs_cap_ = 0;
    stats_ = SpillStats{};
    merge_ = nullptr;
    walking_ = false;
    deferred_ = nullptr;
    ndeferred_ = next_deferred_ = deferred_key_bytes_ = 0;
    appender_ = nullptr;
    compact_runs_ = 0;
    compact_records_ = 0;
  }

  void set_room_maker(RoomMaker r) { room_ = r; }
  // Compaction of tiny runs (off by default): once the table has `runs`
  // runs holding at most `max_records` records together, spill() merges
  // them into one. Thousands of GROUP BY states sharing one budget each
  // spill runs of a few hundred bytes; without this their run lists (and
  // the store's bookkeeping of every run) would grow with every spill.
  void set_compaction(size_t runs, uint64_t max_records) {
    compact_runs_ = runs;
    compact_records_ = max_records;
  }
  // Memory the final merge may use for its readers (default: the budget).
  void set_merge_budget(size_t bytes) { merge_budget_ = bytes; }

  // The state for key, created empty if new; makes room first when full
  // (an empty table always accepts, so this ends).
  State& upsert(uint64_t hash, KeyView key) {
    bool inserted;
    // An empty table always takes its first key; if that would pass a
    // shared budget, let the owner make room elsewhere first.
    if (room_.make_room && table_.empty() &&
        table_.bytes_allocated() + table_.first_insert_bytes(key.len) > table_.budget())
      room_.make_room(room_.ctx);
    Entry* e = table_.find_or_insert(hash, key, &inserted);
    if (!e && table_.crowded()) {  // keys in hash order: spill, then scramble
      spill();
      table_.set_scrambled();
      e = table_.find_or_insert(hash, key, &inserted);
    }
    if (!e && refill_in_place()) e = table_.find_or_insert(hash, key, &inserted);
    if (!e && room_.make_room) {
      room_.make_room(room_.ctx);  // may spill this very table
      e = table_.find_or_insert(hash, key, &inserted);
    }
    if (!e) {  // still full, hence not empty: spill it; an empty table accepts
      spill();
      e = table_.find_or_insert(hash, key, &inserted);
    }
    if (inserted) note_peak();
    return e->state;
  }

  // Merges one key of a partial state (combine, rollup) into this table.
  // Partial states come in hash order; upsert's crowding guard turns the
  // table to scrambled homes as soon as that crowds it.
  void merge_in(uint64_t hash, KeyView key, const State& s) { upsert(hash, key).merge(s); }

  // Records of a large partial state of another process (a parallel
  // worker's, a Citus shard's), which come in hash order, go straight to
  // runs of their own instead of through the table: the final merge reads
  // them like any spill, so the leader neither re-hashes every key into its
  // table nor spills it again. A record whose hash is below its
  // predecessor's starts a new run, so any order stays correct. Between
  // begin_appending() and end_appending() nothing compacts runs.
  void begin_appending() {
    end_appending();
    appender_ = static_cast<Appender*>(meta_mem_->allocate(sizeof(Appender) + kIoChunk));
    new (appender_) Appender(store_, reinterpret_cast<uint8_t*>(appender_ + 1));
  }
  void append(uint64_t hash, KeyView key, const State& st) {
    Appender& a = *appender_;
    if (!a.open || hash < a.last_hash) {
      close_appended_run();
      a.sink.run = store_->create_run();
      add_run(a.sink.run, 0);  // registered first so a failure below still frees it
      a.index = nruns_ - 1;
      a.open = true;
      a.runs++;
    }
    write_run(a.w, hash, key, st);
    runs_[a.index].records++;
    a.last_hash = hash;
    if ((runs_[a.index].records & 4095) == 0) store_->check_interrupts();
  }
  // Runs begun since begin_appending(): more than one means the records
  // were not in hash order.
  size_t appended_runs() const { return appender_ ? appender_->runs : 0; }
  void end_appending() {
    if (!appender_) return;
    close_appended_run();
    meta_mem_->release(appender_);
    appender_ = nullptr;
  }

  // upsert(hash, key).merge(s), later: for a kCanDefer State (whose per-row
  // update is a merge of a one-row state), rows are gathered into a batch
  // of kBatch (keys of up to kBatchKeyMax bytes, copied) and inserted
  // together, in arrival order, each slot prefetched kPrefetchAhead keys
  // before its insert. One row per call leaves a single cache miss in
  // flight (the executor's instructions between two rows fill the CPU's
  // window behind it); the batch's tight loop overlaps many. Pending rows
  // are in no run and in no table until applied; finish() applies them,
  // discard() drops them.
  void add_deferred(uint64_t hash, KeyView key, const State& s) {
    if constexpr (kCanDefer) {
      if (!deferred_) {
        if (table_.size() < kBatchFromKeys) return void(upsert(hash, key).merge(s));
        deferred_ = static_cast<Deferred*>(meta_mem_->allocate(kBatch * sizeof(Deferred) + kBatchKeyBytes));
      }
      size_t padded = (key.len + size_t{7}) & ~size_t{7};
      if (ndeferred_ == kBatch || deferred_key_bytes_ + padded > kBatchKeyBytes || key.len > kBatchKeyMax)
        apply_deferred();  // (also resumes, should an apply have thrown)
      if (key.len > kBatchKeyMax) return void(upsert(hash, key).merge(s));  // after the rows before it
      Deferred& d = deferred_[ndeferred_++];
      d.hash = hash;
      d.key_off = deferred_key_bytes_;
      d.key_len = key.len;
      d.state = s;
      std::memcpy(deferred_keys() + deferred_key_bytes_, key.data, key.len);
      deferred_key_bytes_ = static_cast<uint16_t>(deferred_key_bytes_ + padded);
    } else {
      upsert(hash, key).merge(s);
    }
  }

  // Writes the table as one sorted run and empties it.
  void spill() {
    if (table_.empty()) return;  // e.g. asked by a shared budget mid-merge
    note_peak();
    Entry* es = table_.pack(true);
    size_t n = table_.size();
    RunStore::Run run = store_->create_run();
    add_run(run, n);  // registered first so a failure below still frees it
    RunSink sink(store_, run);
    uint8_t buf[kIoChunk];
    Writer w(&sink, buf, sizeof buf);
    // Keys that are not inline lie in the arena in arrival order, read here
    // in hash order: a cache miss each unless fetched ahead.
    constexpr size_t kAhead = 8;
    bool fetch_keys = !table_.inline_keys();
    for (size_t i = 0; i < n; ++i) {
      if (fetch_keys && i + kAhead < n) __builtin_prefetch(table_.key_of(es[i + kAhead]).data);
      write_run(w, es[i].hash, table_.key_of(es[i]), es[i].state);
      if ((i & 4095) == 4095) store_->check_interrupts();
    }
    w.flush();
    store_->finish_writing(run);
    stats_.spills++;
    stats_.bytes_written += sink.bytes();
    table_.clear();
    store_->spilled(n, sink.bytes());
    if (compact_runs_ >= 2 && nruns_ >= compact_runs_ && !appender_) {
      uint64_t records = 0;
      for (size_t i = 0; i < nruns_; ++i) records += runs_[i].records;
      // Only while the (shared) budget has room for the merge's readers,
      // counted twice over for the allocator's rounding.
      size_t need = 2 * (nruns_ * (kReadChunk + sizeof(RunReader<State>) + sizeof(HeapItem)) +
                         2 * kReadChunk + sizeof(Merge));
      if (records <= compact_records_ && table_.bytes_allocated() + need <= table_.budget()) {
        try {
          merge_pass(nruns_);
        } catch (const StateOverflow&) {
          // Merged states that outgrow this State's width: leave the runs
          // as they are (the final merge escalates), and compact no more.
          compact_runs_ = 0;
        }
      }
    }
  }

  // A full table of inline keys that holds a third of the budget or more
  // spills itself and starts again with its slot array, doubled if it is
  // the budget's only user: emptied to kMinSlots, it would rehash each key
  // once per doubling on the way back, and since a doubling holds old and
  // new arrays at once, never pass half the budget. (Such a table spills
  // before asking the owner to spill a larger one.) Not while the query is
  // over budget: taking its array back would leave it so, and every new key
  // would make a run; the owner must make room then.
  bool refill_in_place() {
    if (!table_.inline_keys() || table_.slot_bytes() * 3 < table_.budget() || appender_ ||
        table_mem_->bytes_allocated() > table_.budget())
      return false;
    size_t bytes = table_.slot_bytes();
    spill();  // (which clears the table)
    // Alone, the arena has the doubled block free; beside others, getting
    // it could make them spill, or miss the arena.
    MemorySource* mem = table_mem_;
    if (mem->bytes_allocated() == 0 && mem->usable_size(2 * bytes) <= table_.budget()) bytes *= 2;
    table_.reserve(bytes);
    return true;
  }

  // Frees the table and destroys every run: the state is no longer needed.
  void discard() {
    ndeferred_ = next_deferred_ = deferred_key_bytes_ = 0;
    if (deferred_) meta_mem_->release(deferred_);
    deferred_ = nullptr;
    walking_ = false;
    if (appender_) meta_mem_->release(appender_);
    appender_ = nullptr;
    for (size_t i = 0; i < nruns_; ++i) store_->destroy_run(runs_[i].run);
    nruns_ = 0;
    merge_ = nullptr;
    table_.clear();
  }

  // Takes over every run of `from` (whose records this State's decode
  // reads: a narrower numeric rung), after spilling its table; `from` is
  // left empty, with no runs to destroy.
  template <class Other>
  void adopt_runs(SpillingTable<Other>& from) {
    from.spill();
    from.table_.clear();  // (an empty table may still hold its slots)
    reserve_runs(nruns_ + from.nruns_);
    for (size_t i = 0; i < from.nruns_; ++i) add_run(from.runs_[i].run, from.runs_[i].records);
    from.nruns_ = 0;
    stats_.spills += from.stats_.spills;
    stats_.bytes_written += from.stats_.bytes_written;
    stats_.merge_passes += from.stats_.merge_passes;
    stats_.peak_bytes = std::max(stats_.peak_bytes, from.stats_.peak_bytes);
  }

  size_t size_in_memory() const { return table_.size(); }
  size_t run_count() const { return nruns_; }
  // Records in memory and in runs: at least the number of distinct keys.
  uint64_t records() const {
    uint64_t n = table_.size();
    for (size_t i = 0; i < nruns_; ++i) n += runs_[i].records;
    return n;
  }
  bool spilled() const { return nruns_ > 0; }
  const SpillStats& stats() const { return stats_; }
  Table& table() { return table_; }

  // Prepares iteration over every distinct key. Without runs this walks the
  // table in place; with runs the table is spilled too, extra passes bring
  // the runs down to the fan-in, and next() merges the rest on the fly.
  // Nothing is consumed: the keys can be streamed again by another finish()
  // (PostgreSQL may run a final function twice on one state), and the table
  // can still be spilled once the stream has ended.
  void finish() {
    end_appending();
    end_stream();
    apply_deferred();
    if (nruns_ == 0) {
      walk_pos_ = 0;
      walking_ = true;
      return;
    }
    if (!table_.empty()) spill();
    table_.clear();
    // Readers share the budget with the merge's own fixed buffers.
    size_t per_reader = store_->read_buffer_bytes() + kReadChunk + sizeof(RunReader<State>) + sizeof(HeapItem);
    size_t fixed = kReadChunk + sizeof(Merge) + 16 * sizeof(typename Merge::Member);
    size_t budget = merge_budget_;
    size_t fan_in = std::max<size_t>(4, budget > fixed ? (budget - fixed) / per_reader : 0);
    while (nruns_ > fan_in) merge_pass(fan_in);
    open_merge(0, nruns_);
  }

  // Next distinct key and its merged state; false at the end, where the
  // stream ends (as end_stream()).
  bool next(uint64_t* hash, KeyView* key, State* state) {
    if (walking_) {
      for (size_t n = table_.slot_count(); walk_pos_ < n;) {
        if (const Entry* e = table_.entry(walk_pos_++)) {
          *hash = e->hash;
          *key = table_.key_of(*e);
          *state = e->state;
          return true;
        }
      }
      walking_ = false;
      return false;
    }
    if (merge_ && merge_->next(hash, key, state)) return true;
    end_stream();
    return false;
  }

  // Ends a stream begun by finish(), read to its end or not: the merge's
  // memory is freed and every run will be read from its start again.
  void end_stream() {
    walking_ = false;
    if (!merge_) return;
    merge_ = nullptr;
    for (size_t i = 0; i < nruns_; ++i) store_->rewind(runs_[i].run);
    table_mem_->release_all();  // the merge's readers (the table is empty)
  }

 private:
  // A reader in the merge heap, keyed by the hash of its current record.
  struct HeapItem {
    uint64_t hash;
    uint32_t reader;
  };

  // k-way merge of runs [first, first+k): a heap of readers by current hash;
  // records with equal hash are gathered into a small group in which equal
  // keys are merged (distinct keys sharing a 64-bit hash stay distinct).
  class Merge {
   public:
    void init(SpillingTable* t, size_t first, size_t k) {
      t_ = t;
      MemorySource* mem = t->table_mem_;
      readers_ = static_cast<RunReader<State>*>(mem->allocate(k * sizeof(RunReader<State>)));
      heap_ = static_cast<HeapItem*>(mem->allocate(k * sizeof(HeapItem)));
      nheap_ = 0;
      for (size_t i = 0; i < k; ++i) {
        readers_[i].init(t->store_, t->runs_[first + i].run, t->runs_[first + i].records, mem, t->rehash_,
                         t->table_.inline_keys() ? 8 : UINT32_MAX);
        if (readers_[i].next()) push(HeapItem{readers_[i].current().hash, static_cast<uint32_t>(i)});
      }
      group_cap_ = sizeof(State) > 4096 ? 2 : 16;  // wide numeric states: 60 kB each
      group_ = static_cast<Member*>(mem->allocate(group_cap_ * sizeof(Member)));
      keys_cap_ = kReadChunk;
      keys_ = static_cast<uint8_t*>(mem->allocate(keys_cap_));
      ngroup_ = emitted_ = 0;
      since_check_ = 0;
    }

    bool next(uint64_t* hash, KeyView* key, State* state) {
      if (emitted_ == ngroup_ && !gather()) return false;
      const Member& m = group_[emitted_++];
      *hash = group_hash_;
      *key = KeyView{keys_ + m.key_off, m.key_len};
      *state = m.state;
      return true;
    }

    struct Member {
      size_t key_off;
      uint32_t key_len;
      State state;
    };

   private:
    // Takes every record with the smallest hash: the top reader's record is
    // consumed and the reader re-keyed in place (one sift per record).
    bool gather() {
      if (nheap_ == 0) return false;
      if (++since_check_ >= 4096) {
        since_check_ = 0;
        t_->store_->check_interrupts();
      }
      ngroup_ = emitted_ = 0;
      keys_len_ = 0;
      group_hash_ = heap_[0].hash;
      while (nheap_ > 0 && heap_[0].hash == group_hash_) {
        RunReader<State>& r = readers_[heap_[0].reader];
        add(r.current());
        if (r.next()) {
          heap_[0].hash = r.current().hash;
        } else {
          heap_[0] = heap_[--nheap_];
        }
        sift_down();
      }
      return true;
    }

    // Adds a record to the group: merged into an equal key already there,
    // else kept as a new member. The key is first copied into the group's
    // 8-aligned key buffer, so a KeyEquality always sees aligned keys.
    void add(const Record& rec) {
      MemorySource* mem = t_->table_mem_;
      size_t need = keys_len_ + align8(rec.key.len);
      if (need > keys_cap_) {
        size_t cap = std::max(need, 2 * keys_cap_);
        uint8_t* k = static_cast<uint8_t*>(mem->allocate(cap));
        std::memcpy(k, keys_, keys_len_);
        mem->release(keys_);
        keys_ = k;
        keys_cap_ = cap;
      }
      std::memcpy(keys_ + keys_len_, rec.key.data, rec.key.len);
      KeyView copy{keys_ + keys_len_, rec.key.len};
      for (size_t i = 0; i < ngroup_; ++i) {
        if (t_->keys_equal(KeyView{keys_ + group_[i].key_off, group_[i].key_len}, copy)) {
          group_[i].state.merge(rec.state);
          return;
        }
      }
      if (ngroup_ == group_cap_) {
        Member* g = static_cast<Member*>(mem->allocate(2 * group_cap_ * sizeof(Member)));
        std::memcpy(static_cast<void*>(g), group_, ngroup_ * sizeof(Member));
        mem->release(group_);
        group_ = g;
        group_cap_ *= 2;
      }
      group_[ngroup_++] = Member{keys_len_, rec.key.len, rec.state};
      keys_len_ = need;
    }

    // heap_[0] holds the reader whose current record has the smallest hash.
    void push(HeapItem item) { sift_up(nheap_++, item); }
    // Puts item at hole i or above it.
    void sift_up(size_t i, HeapItem item) {
      for (; i > 0 && item.hash < heap_[(i - 1) / 2].hash; i = (i - 1) / 2) heap_[i] = heap_[(i - 1) / 2];
      heap_[i] = item;
    }
    // Bottom-up (Floyd's): the hole at the root goes down to a leaf along
    // the smaller children (a select, not a branch), then the item rises
    // from there, usually not far. The re-keyed reader's next hash is
    // random among the others, so the textbook loop's early-exit branch
    // mispredicts at every level.
    void sift_down() {
      if (nheap_ == 0) return;
      HeapItem item = heap_[0];
      size_t i = 0;
      for (size_t c; (c = 2 * i + 1) < nheap_; i = c) {
        if (c + 1 < nheap_) c += heap_[c + 1].hash < heap_[c].hash;
        heap_[i] = heap_[c];
      }
      sift_up(i, item);
    }

    SpillingTable* t_;
    RunReader<State>* readers_;
    HeapItem* heap_;
    size_t nheap_;
    Member* group_;
    size_t group_cap_, ngroup_, emitted_;
    uint8_t* keys_;
    size_t keys_cap_, keys_len_;
    uint64_t group_hash_;
    unsigned since_check_;
  };

  struct RunInfo {
    RunStore::Run run;
    uint64_t records;
  };

  struct Deferred {
    uint64_t hash;
    uint32_t key_off;  // in the batch's key bytes (8-aligned, as the group keys of a merge)
    uint32_t key_len;
    State state;
  };
  // A record of one of this table's runs (without the hash if rehash_ gives it).
  void write_run(Writer& w, uint64_t hash, KeyView key, const State& st) {
    write_record(w, rehash_ ? nullptr : &hash, key, st);
  }

  void apply(const Deferred& d) {
    KeyView key{deferred_keys() + d.key_off, d.key_len};
    if (table_.inline_keys()) {
      if (Entry* e = table_.find_inline(d.hash, load_padded(key.data, key.len), key.len)) {
        e->state.merge(d.state);
        return;
      }
    }
    upsert(d.hash, key).merge(d.state);
  }
  uint8_t* deferred_keys() { return reinterpret_cast<uint8_t*>(deferred_ + kBatch); }
  void apply_deferred() {
    if constexpr (kCanDefer) {
      // In arrival order; each is taken off (next_deferred_) before it is
      // applied, since applying may spill (and throw).
      size_t n = ndeferred_;
      for (size_t i = next_deferred_; i < n && i < next_deferred_ + kPrefetchAhead; ++i)
        table_.prefetch(deferred_[i].hash);
      while (next_deferred_ < n) {
        size_t i = next_deferred_++;
        if (i + kPrefetchAhead < n) table_.prefetch(deferred_[i + kPrefetchAhead].hash);
        apply(deferred_[i]);
      }
      ndeferred_ = next_deferred_ = 0;
      deferred_key_bytes_ = 0;
    }
  }

  bool keys_equal(KeyView a, KeyView b) const {
    if (eq_.equal) return eq_.equal(eq_.ctx, a, b);
    return a.len == b.len && std::memcmp(a.data, b.data, a.len) == 0;
  }

  void reserve_runs(size_t n) {
    if (n <= runs_cap_) return;
    size_t cap = std::max<size_t>(n, runs_cap_ ? runs_cap_ * 2 : 8);
    RunInfo* r = static_cast<RunInfo*>(meta_mem_->allocate(cap * sizeof(RunInfo)));
    if (nruns_) std::memcpy(static_cast<void*>(r), runs_, nruns_ * sizeof(RunInfo));
    if (runs_) meta_mem_->release(runs_);
    runs_ = r;
    runs_cap_ = cap;
  }
  void add_run(RunStore::Run run, uint64_t records) {
    reserve_runs(nruns_ + 1);
    runs_[nruns_++] = RunInfo{run, records};
    stats_.runs++;
  }

  void open_merge(size_t first, size_t k) {
    merge_ = static_cast<Merge*>(table_mem_->allocate(sizeof(Merge)));
    merge_->init(this, first, k);
  }

  // Merges the oldest `k` runs into one new run at the end of the list. If
  // it fails (e.g. a merged state overflows: StateOverflow), the runs are
  // as they were, rewound, and the half-written output is gone.
  void merge_pass(size_t k) {
    RunStore::Run out{};
    bool have_out = false;
    try {
      open_merge(0, k);
      out = store_->create_run();
      have_out = true;
      RunSink sink(store_, out);
      uint8_t buf[kIoChunk];
      Writer w(&sink, buf, sizeof buf);
      uint64_t n = 0, hash;
      KeyView key;
      State st;
      while (merge_->next(&hash, &key, &st)) {
        write_run(w, hash, key, st);
        ++n;
      }
      w.flush();
      store_->finish_writing(out);
      have_out = false;
      for (size_t i = 0; i < k; ++i) store_->destroy_run(runs_[i].run);
      std::memmove(static_cast<void*>(runs_), runs_ + k, (nruns_ - k) * sizeof(RunInfo));
      nruns_ -= k;
      add_run(out, n);  // (room: k >= 1 entries were just freed)
      stats_.merge_passes++;
      stats_.bytes_written += sink.bytes();
    } catch (...) {
      if (have_out) store_->destroy_run(out);
      if (merge_)
        for (size_t i = 0; i < k; ++i) store_->rewind(runs_[i].run);
      merge_ = nullptr;
      table_mem_->release_all();
      throw;
    }
    merge_ = nullptr;
    table_mem_->release_all();
  }

  void note_peak() { stats_.peak_bytes = std::max(stats_.peak_bytes, table_.bytes_allocated()); }

  struct AppendSink final : ByteSink {
    RunStore* store;
    RunStore::Run run = nullptr;
    uint64_t bytes = 0;
    explicit AppendSink(RunStore* s) : store(s) {}
    void write(const void* p, size_t n) override {
      store->write(run, p, n);
      bytes += n;
    }
  };
  struct Appender {
    AppendSink sink;
    Writer w;
    bool open = false;
    size_t index = 0;
    size_t runs = 0;
    uint64_t last_hash = 0;
    Appender(RunStore* s, uint8_t* buf) : sink(s), w(&sink, buf, kIoChunk) {}
  };

  void close_appended_run() {
    Appender& a = *appender_;
    if (!a.open) return;
    a.w.flush();
    store_->finish_writing(a.sink.run);
    stats_.bytes_written += a.sink.bytes;
    a.sink.bytes = 0;
    a.open = false;
  }

  Rehash rehash_;
  MemorySource* table_mem_;
  MemorySource* meta_mem_;
  RunStore* store_;
  KeyEquality eq_;
  Table table_;
  RoomMaker room_;
  size_t merge_budget_;
  RunInfo* runs_;
  size_t nruns_, runs_cap_;
  SpillStats stats_;
  Merge* merge_;
  bool walking_;
  size_t walk_pos_;
  size_t compact_runs_;
  uint64_t compact_records_;
  Deferred* deferred_;  // kBatch of them and kBatchKeyBytes, from meta_mem_, once the table is large
  // (16-bit: every state carries these, and thousands of GROUP BY states
  // must stay within their allocation size class)
  uint16_t ndeferred_, next_deferred_, deferred_key_bytes_;
  Appender* appender_;  // between begin_appending() and end_appending()


  template <class>
  friend class SpillingTable;
};

static_assert(std::is_trivially_destructible_v<SpillingTable<uint64_t>>);

}  // namespace spillagg
