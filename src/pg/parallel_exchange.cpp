// Parallel workers' partial states through temp files (parallel_exchange.h).
#include "parallel_exchange.h"

#include <sys/stat.h>

#include "boundary.h"
#include "spilling_table.h"

extern "C" {
#include "access/parallel.h"
#include "access/xact.h"
#include "storage/fd.h"
#include "storage/ipc.h"
#include "storage/proc.h"
#include "utils/wait_event.h"
}

namespace spillagg {

namespace {

constexpr uint32 kFileMagic = 0x58415053;  // "SPAX"
constexpr size_t kFileHeader = sizeof(uint32) + sizeof(uint64);  // magic, secret
constexpr size_t kFileBuffer = 64 * 1024;  // a reader's buffer; grows for larger records

// <tablespace's temp dir>/pgsql_tmp<leader pid>.spillagg
void exchange_dir(char* dir, Oid tablespace, int leader_pid) {
  char base[MAXPGPATH];
  TempTablespacePath(base, tablespace);
  if (snprintf(dir, MAXPGPATH, "%s/pgsql_tmp%d.spillagg", base, leader_pid) >= MAXPGPATH)
    elog(ERROR, "spillagg: temp path too long");
}

// <dir>/<writer pid>.<file number>
void exchange_file(char* path, const char* dir, const ExchangeRef& ref) {
  if (snprintf(path, MAXPGPATH, "%s/%u.%u", dir, ref.writer_pid, ref.file_no) >= MAXPGPATH)
    elog(ERROR, "spillagg: temp path too long");
}

[[noreturn]] void bad_exchange(const char* what) {
  ereport(ERROR, (errcode(ERRCODE_INVALID_BINARY_REPRESENTATION),
                  errmsg("invalid spillagg state: %s", what),
                  errdetail("A parallel worker's partial state is read by its leader, during its query.")));
  pg_unreachable();
}

// --- the leader's cleanup ---------------------------------------------------

bool exit_callback_set = false;
int parallel_executors = 0;  // parallel plans of this backend between ExecutorStart and End
bool maybe_files = false;    // a parallel plan started since the last cleanup
ExecutorStart_hook_type prev_start = nullptr;
ExecutorEnd_hook_type prev_end = nullptr;

// Deletes the files of one exchange directory, each reported like any temp
// file (log_temp_files, pg_stat_database), then the directory.
void remove_exchange_dir(const char* dir) {
  struct stat st;
  if (stat(dir, &st) != 0) return;
  DIR* d = AllocateDir(dir);
  char path[MAXPGPATH];
  while (struct dirent* de = ReadDirExtended(d, dir, LOG)) {
    if (strcmp(de->d_name, ".") == 0 || strcmp(de->d_name, "..") == 0) continue;
    if (snprintf(path, sizeof path, "%s/%s", dir, de->d_name) >= MAXPGPATH) continue;
    PathNameDeleteTemporaryFile(path, false);
  }
  FreeDir(d);
  PathNameDeleteTemporaryDir(dir);  // (and whatever the loop could not name)
}

// Removes this backend's exchange directory in every tablespace (found by
// listing pg_tblspc: temp_tablespaces may have changed since).
void remove_exchange_dirs() {
  char dir[MAXPGPATH];
  exchange_dir(dir, InvalidOid, MyProcPid);
  remove_exchange_dir(dir);
  DIR* d = AllocateDir("pg_tblspc");
  while (struct dirent* de = ReadDirExtended(d, "pg_tblspc", LOG)) {
    char* end;
    unsigned long oid = strtoul(de->d_name, &end, 10);
    if (*de->d_name == '\0' || *end != '\0' || oid == 0 || oid > PG_UINT32_MAX) continue;
    exchange_dir(dir, static_cast<Oid>(oid), MyProcPid);
    remove_exchange_dir(dir);
  }
  FreeDir(d);
  maybe_files = false;
}

// At exit outside a transaction. Inside one, this runs before the
// transaction is aborted (ShutdownPostgres, registered earlier, runs later),
// while its workers may still write: the abort's callback cleans up after them.
void exchange_exit(int, Datum) {
  if (!IsParallelWorker() && maybe_files && !IsTransactionOrTransactionBlock()) remove_exchange_dirs();
}

bool leader_parallel_plan(QueryDesc* qd) {
  return !IsParallelWorker() && qd->plannedstmt && qd->plannedstmt->parallelModeNeeded;
}

// Files of this backend's directory may exist until the next cleanup.
void note_files_possible() {
  maybe_files = true;
  if (!exit_callback_set) {  // (not in _PG_init: a preloading postmaster's callbacks are not inherited)
    before_shmem_exit(exchange_exit, 0);
    exit_callback_set = true;
  }
}

void exchange_executor_start(QueryDesc* qd, int eflags) {
  if (prev_start) prev_start(qd, eflags);
  else standard_ExecutorStart(qd, eflags);
  if (leader_parallel_plan(qd)) {
    parallel_executors++;
    note_files_possible();
  }
}

// Once the outermost parallel plan has ended, its workers have exited and
// every file they left is garbage (unread because a LIMIT stopped the leader).
void exchange_executor_end(QueryDesc* qd) {
  bool parallel = leader_parallel_plan(qd);
  if (prev_end) prev_end(qd);
  else standard_ExecutorEnd(qd);
  if (!parallel) return;
  if (parallel_executors > 0) parallel_executors--;
  if (parallel_executors == 0) remove_exchange_dirs();
}

// Aborts come after the (sub)transaction's workers have exited (the
// parallel contexts are destroyed first). A subtransaction aborted while an
// outer level is in parallel mode (PostgreSQL 17+ lets a parallel query's
// functions start subtransactions) leaves that query's files alone; else no
// query in this backend still needs a file.
void exchange_xact_callback(XactEvent event, void*) {
  if (IsParallelWorker()) return;
  if (event == XACT_EVENT_COMMIT || event == XACT_EVENT_ABORT || event == XACT_EVENT_PREPARE) {
    parallel_executors = 0;
    if (maybe_files) remove_exchange_dirs();
  }
}

void exchange_subxact_callback(SubXactEvent event, SubTransactionId, SubTransactionId, void*) {
  if (IsParallelWorker() || event != SUBXACT_EVENT_ABORT_SUB || IsInParallelMode()) return;
  parallel_executors = 0;  // those started in the subtransaction never end
  if (maybe_files) remove_exchange_dirs();
}

}  // namespace

bool exchange_wanted(FunctionCallInfo fcinfo) {
  Aggref* a = AggGetAggref(fcinfo);
  if (!a || !DO_AGGSPLIT_SKIPFINAL(a->aggsplit)) return false;
  if (IsParallelWorker()) return MyProc && MyProc->lockGroupLeader && MyProc->lockGroupLeader != MyProc;
  // The leader's own Partial Aggregate under a Gather: PostgreSQL 15 copies
  // its result flat (datumCopy) before the Finalize Aggregate combines it.
  // Only while a parallel plan runs (its end removes what was left unread):
  // a Partial Aggregate outside one (partitionwise aggregation, maybe in a
  // cursor whose rows are fetched across other queries) keeps the flat copy.
  return IsInParallelMode();
}

// The pid whose directory a state written here goes to.
static int leader_pid() { return IsParallelWorker() ? MyProc->lockGroupLeader->pid : MyProcPid; }

void ExchangeWriter::open() {
  static uint32 files_made = 0;
  PrepareTempTablespaces();
  ref_.tablespace = GetNextTempTableSpace();
  ref_.writer_pid = static_cast<uint32>(MyProcPid);
  ref_.file_no = ++files_made;
  if (!pg_strong_random(&ref_.secret, sizeof ref_.secret))
    ereport(ERROR, (errcode(ERRCODE_INTERNAL_ERROR), errmsg("could not generate a random number")));
  char base[MAXPGPATH], dir[MAXPGPATH], path[MAXPGPATH];
  TempTablespacePath(base, ref_.tablespace);
  exchange_dir(dir, ref_.tablespace, leader_pid());
  if (!IsParallelWorker()) note_files_possible();
  PathNameCreateTemporaryDir(base, dir);
  exchange_file(path, dir, ref_);
  file_ = PathNameCreateTemporaryFile(path, true);
  offset_ = 0;
  uint8 header[kFileHeader];
  memcpy(header, &kFileMagic, sizeof kFileMagic);
  memcpy(header + sizeof kFileMagic, &ref_.secret, sizeof ref_.secret);
  cxt_ = CurrentMemoryContext;
  write_file(header, sizeof header);
}

void ExchangeWriter::write(const void* p, size_t n) {
  pg_call(cxt_, [&] { write_file(p, n); });
}

void ExchangeWriter::write_file(const void* p, size_t n) {
  while (n > 0) {
    size_t part = Min(n, static_cast<size_t>(1) << 30);
    errno = 0;
    int rc = FileWrite(file_, static_cast<char*>(const_cast<void*>(p)), static_cast<int>(part), offset_,
                       WAIT_EVENT_BUFFILE_WRITE);
    if (rc != static_cast<int>(part)) {
      if (rc >= 0 && errno == 0) errno = ENOSPC;  // a short write without an error: out of space
      ereport(ERROR, (errcode_for_file_access(), errmsg("could not write to file \"%s\": %m", FilePathName(file_))));
    }
    offset_ += rc;
    p = static_cast<const char*>(p) + rc;
    n -= part;
  }
}

ExchangeRef ExchangeWriter::close() {
  FileClose(file_);
  file_ = -1;
  ref_.length = static_cast<uint64>(offset_) - kFileHeader;
  return ref_;
}

void write_exchange_ref(Writer& w, const ExchangeRef& ref) {
  w.fixed<uint32>(ref.tablespace);
  w.fixed<uint32>(ref.writer_pid);
  w.fixed<uint32>(ref.file_no);
  w.fixed<uint64>(ref.secret);
  w.fixed<uint64>(ref.length);
}

bool read_exchange_ref(const uint8* p, size_t n, ExchangeRef* ref) {
  if (n != 3 * sizeof(uint32) + 2 * sizeof(uint64)) return false;
  memcpy(&ref->tablespace, p, 4);
  memcpy(&ref->writer_pid, p + 4, 4);
  memcpy(&ref->file_no, p + 8, 4);
  memcpy(&ref->secret, p + 12, 8);
  memcpy(&ref->length, p + 20, 8);
  return true;
}

ExchangeReader* ExchangeReader::open(const ExchangeRef& ref) {
  // A worker reads only what it wrote itself (a Finalize Aggregate inside
  // the worker: debug_parallel_query over partitionwise aggregation).
  if (IsParallelWorker() && ref.writer_pid != static_cast<uint32>(MyProcPid))
    bad_exchange("a parallel worker's partial state read by another worker");
  auto* r = static_cast<ExchangeReader*>(palloc0(sizeof(ExchangeReader)));
  char dir[MAXPGPATH];
  exchange_dir(dir, ref.tablespace, leader_pid());
  exchange_file(r->path_, dir, ref);
  r->file_ = PathNameOpenTemporaryFile(r->path_, O_RDONLY | PG_BINARY);
  if (r->file_ <= 0) bad_exchange("its parallel worker's file does not exist");
  uint8 header[kFileHeader];
  uint32 magic;
  uint64 secret;
  if (FileRead(r->file_, reinterpret_cast<char*>(header), sizeof header, 0, WAIT_EVENT_BUFFILE_READ) !=
      static_cast<int>(sizeof header))
    bad_exchange("its parallel worker's file is truncated");
  memcpy(&magic, header, sizeof magic);
  memcpy(&secret, header + sizeof magic, sizeof secret);
  if (magic != kFileMagic || secret != ref.secret) bad_exchange("not its parallel worker's file");
  if (FileSize(r->file_) != static_cast<off_t>(kFileHeader + ref.length))
    bad_exchange("its parallel worker's file has the wrong length");
  r->length_ = ref.length;
  r->consumed_ = 0;
  r->next_read_ = kFileHeader;
  r->cap_ = kFileBuffer;
  r->buf_ = static_cast<uint8*>(palloc(r->cap_));
  r->pos_ = r->len_ = 0;
  return r;
}

// At least `want` unread bytes in the buffer (the caller checked that the
// file holds them).
void ExchangeReader::fill(size_t want) {
  if (len_ - pos_ >= want) return;
  memmove(buf_, buf_ + pos_, len_ - pos_);
  len_ -= pos_;
  pos_ = 0;
  if (want > cap_) {
    cap_ = want;
    buf_ = static_cast<uint8*>(repalloc_huge(buf_, cap_));
  }
  while (len_ < want) {
    uint64 in_file = kFileHeader + length_ - static_cast<uint64>(next_read_);
    size_t n = static_cast<size_t>(Min(static_cast<uint64>(cap_ - len_), in_file));
    n = Min(n, static_cast<size_t>(1) << 30);
    int rc = FileRead(file_, reinterpret_cast<char*>(buf_ + len_), static_cast<int>(n), next_read_,
                      WAIT_EVENT_BUFFILE_READ);
    if (rc < 0)
      ereport(ERROR, (errcode_for_file_access(), errmsg("could not read file \"%s\": %m", path_)));
    if (rc == 0) bad_exchange("its parallel worker's file is truncated");
    len_ += rc;
    next_read_ += rc;
  }
}

bool ExchangeReader::next(const uint8** record, size_t* len) {
  uint64 left = length_ - consumed_;
  if (left == 0) return false;
  fill(static_cast<size_t>(Min(left, static_cast<uint64>(kRecordHeaderMax))));
  RecordHeader head{};
  size_t header_len = 0;
  run_core(
      [&] {
        Reader h(buf_ + pos_, len_ - pos_);
        head = read_record_header(h, UINT32_MAX, false);
        header_len = static_cast<size_t>(h.position() - (buf_ + pos_));
      },
      ERRCODE_INVALID_BINARY_REPRESENTATION);
  uint64 total = header_len + static_cast<uint64>(head.key_len) + head.state_len;
  if (total > left) bad_exchange("a malformed record in its parallel worker's file");
  fill(static_cast<size_t>(total));
  *record = buf_ + pos_;
  *len = total;
  pos_ += total;
  consumed_ += total;
  return true;
}

// The file stays until the plan ends: a rescan may replay the same tuple
// (a Sort between the Finalize Aggregate and the Gather rewinds).
void ExchangeReader::close() {
  FileClose(file_);
  pfree(buf_);
  pfree(this);
}

void exchange_init() {
  prev_start = ExecutorStart_hook;
  ExecutorStart_hook = exchange_executor_start;
  prev_end = ExecutorEnd_hook;
  ExecutorEnd_hook = exchange_executor_end;
  RegisterXactCallback(exchange_xact_callback, nullptr);
  RegisterSubXactCallback(exchange_subxact_callback, nullptr);
  // Loaded in the middle of a query's ExecutorStart: that query is not
  // counted, and may be parallel. Count it, so no plan nested in it cleans
  // up under it; the count is reset when the transaction ends, which looks
  // for files anyway.
  if (IsUnderPostmaster && !IsParallelWorker()) {
    maybe_files = true;
    parallel_executors = 1;
  }
}

}  // namespace spillagg
