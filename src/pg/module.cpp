// Module entry: PG_MODULE_MAGIC, the spillagg.work_mem GUC, spillagg_stats()
// and the pieces of glue shared by every aggregate.
#include "postgres_api.h"

#include "backend_stats.h"
#include "keyed_agg.h"
#include "parallel_exchange.h"

extern "C" {
#if PG_VERSION_NUM >= 180000
// 18: name and version show in pg_get_loaded_modules().
PG_MODULE_MAGIC_EXT(.name = "spillagg", .version = "0.2");
#else
PG_MODULE_MAGIC;
#endif
void _PG_init(void);
}

namespace spillagg {

BackendStats backend_stats;

static int work_mem_kb = -1;

static bool check_work_mem(int* newval, void**, GucSource) {
  if (*newval == -1 || *newval >= 64) return true;
  GUC_check_errdetail("spillagg.work_mem must be -1 (use work_mem * hash_mem_multiplier) or at least 64 kB.");
  return false;
}

size_t budget_bytes() {
  if (work_mem_kb >= 0) return static_cast<size_t>(work_mem_kb) * 1024;
  return get_hash_memory_limit();
}

}  // namespace spillagg

void _PG_init(void) {
  DefineCustomIntVariable(
      "spillagg.work_mem",
      "Memory budget of spillagg aggregate states before they spill to temporary files.",
      "-1 means work_mem * hash_mem_multiplier.", &spillagg::work_mem_kb, -1, -1, MAX_KILOBYTES,
      PGC_USERSET, GUC_UNIT_KB, spillagg::check_work_mem, nullptr, nullptr);
  MarkGUCPrefixReserved("spillagg");
  spillagg::exchange_init();
}

SPILLAGG_FUNCTION(spillagg_stats) {
  TupleDesc desc;
  if (get_call_result_type(fcinfo, nullptr, &desc) != TYPEFUNC_COMPOSITE)
    elog(ERROR, "return type must be a row type");
  const spillagg::BackendStats& s = spillagg::backend_stats;
  Datum values[5] = {Int64GetDatum(s.states), Int64GetDatum(s.spills), Int64GetDatum(s.runs),
                     Int64GetDatum(s.bytes_written), Int64GetDatum(s.peak_bytes)};
  bool nulls[5] = {false, false, false, false, false};
  PG_RETURN_DATUM(HeapTupleGetDatum(heap_form_tuple(BlessTupleDesc(desc), values, nulls)));
}
