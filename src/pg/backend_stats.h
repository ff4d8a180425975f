// This backend's cumulative counters, shown by spillagg_stats().
#pragma once

#include <cstdint>

namespace spillagg {

struct BackendStats {
  uint64_t states = 0;         // aggregate states created
  uint64_t spills = 0;         // tables written out to a run
  uint64_t runs = 0;           // runs created (spills and merge passes)
  uint64_t bytes_written = 0;  // bytes written to temp files
  uint64_t peak_bytes = 0;     // most memory one table held
};

extern BackendStats backend_stats;

}  // namespace spillagg
