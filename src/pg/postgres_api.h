// The PostgreSQL headers the glue uses, with C linkage. Include first.
// Supported: PostgreSQL 15 and later (tested: 15, 18); every difference
// between versions is behind PG_VERSION_NUM in src/pg.
#pragma once

extern "C" {
#include "postgres.h"

#if PG_VERSION_NUM < 150000
#error "spillagg needs PostgreSQL 15 or later"
#endif
#if PG_VERSION_NUM >= 160000
// 16 moved the varlena macros (VARDATA, VARSIZE, SET_VARSIZE, ...) out of
// postgres.h; other headers include it today, but only by accident.
#include "varatt.h"
#endif

#include "access/nbtree.h"
#include "access/tupdesc.h"
#include "catalog/pg_type.h"
#include "common/jsonapi.h"
#include "executor/executor.h"
#include "fmgr.h"
#include "funcapi.h"
#include "lib/stringinfo.h"
#include "libpq/pqformat.h"
#include "miscadmin.h"
#include "utils/array.h"
#include "utils/builtins.h"
#include "utils/guc.h"
#include "utils/fmgroids.h"
#include "utils/json.h"
#include "utils/jsonb.h"
#include "commands/tablespace.h"
#include "storage/buffile.h"
#include "utils/lsyscache.h"
#include "utils/memutils.h"
#include "utils/numeric.h"
#include "utils/syscache.h"
#include "utils/typcache.h"
}
