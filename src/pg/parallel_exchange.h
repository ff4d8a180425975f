// A parallel worker's partial state handed to its leader through a temp file.
//
// Left alone, a worker's Partial Aggregate flattens its whole state into one
// tuple for the queue: a copy of every key in the worker's memory, then again
// in the leader's. Instead, a large partial state of a worker is written as the
// records of its flat form (hash order) to a file in its leader's exchange
// directory, and only a reference travels (a spillagg_state whose key format
// is kKeysExchange). The leader's combine streams the file; the file stays
// until the plan ends (a rescan may replay the tuple that names it).
//
//   <temp tablespace>/pgsql_tmp/pgsql_tmp<leader pid>.spillagg/<worker pid>.<n>
//
// The temp-file API all along: the tablespace is one of temp_tablespaces, the
// bytes count against the writing worker's temp_file_limit, the leader's delete
// reports them (log_temp_files, pg_stat_database), and the "pgsql_tmp" names
// are removed by a restart after a crash. The leader removes its directory when
// its outermost parallel plan ends (ExecutorEnd), on every (sub)transaction
// abort (error, cancel; its workers have exited by then) and at backend exit.
//
// A reference is bytes anyone can forge (spillagg_state is a plain type), so
// the leader trusts none of it but the numbers: the directory is named by its
// own pid, the file name is formatted from two integers, and the file must
// start with the random secret the reference carries. Input functions refuse
// references outright; a parallel worker never reads one.
#pragma once

#include "postgres_api.h"

#include "codec.h"

namespace spillagg {

constexpr uint8 kKeysExchange = 2;  // key format of a reference (stored_state.h)

struct ExchangeRef {
  Oid tablespace;
  uint32 writer_pid;
  uint32 file_no;
  uint64 secret;
  uint64 length;  // of the records, after the file's header
};

// Whether a state made by this transition call should go out through a file
// when flattened: a Partial Aggregate's (final function skipped), in a
// parallel worker or in the leader of a running parallel plan (which, in
// PostgreSQL 15, copies its own partial result flat before combining it).
bool exchange_wanted(FunctionCallInfo fcinfo);

// Writes one state's records to a new exchange file. open() and close()
// raise PostgreSQL ERRORs; write() is called from core code and raises them
// as PgError (boundary.h).
class ExchangeWriter final : public ByteSink {
 public:
  void open();
  void write(const void* p, size_t n) override;
  ExchangeRef close();

 private:
  void write_file(const void* p, size_t n);
  MemoryContext cxt_ = nullptr;
  File file_ = -1;
  ExchangeRef ref_{};
  off_t offset_ = 0;
};

void write_exchange_ref(Writer& w, const ExchangeRef& ref);
// Parses a reference (the rest of a flat state after its header); false if malformed.
bool read_exchange_ref(const uint8* p, size_t n, ExchangeRef* ref);

// Reads the records of an exchange file, one whole record at a time. ERRORs
// (22P03) for a file that is not the reference's or not well formed.
class ExchangeReader {
 public:
  static ExchangeReader* open(const ExchangeRef& ref);
  // The next record (varint key length, varint state length, key, state), in
  // memory valid until the next call; false at the end.
  bool next(const uint8** record, size_t* len);
  // Closes the file (read to its end or not); it is deleted with the
  // directory when the plan ends.
  void close();

 private:
  void fill(size_t want);
  char path_[MAXPGPATH];
  File file_;
  uint64 length_;    // records' bytes in the file
  uint64 consumed_;  // records' bytes handed out
  off_t next_read_;  // file offset of the next load
  uint8* buf_;
  size_t cap_, pos_, len_;
};

// Hooks and callbacks that remove the leader's exchange directory (_PG_init).
void exchange_init();

}  // namespace spillagg
