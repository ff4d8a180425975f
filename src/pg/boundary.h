// The C++ / PostgreSQL boundary (DESIGN.md section 3).
//
// - run_core(f): every fmgr entry point runs C++ core code through it. Any
//   exception is caught, its message copied, and the PostgreSQL ERROR is
//   raised only after the catch block is left.
// - pg_call(cxt, f): core code that must call PostgreSQL (temp-file I/O,
//   equality of non-bytewise keys, CHECK_FOR_INTERRUPTS) does it through this
//   guard, which turns a PostgreSQL ERROR into a C++ PgError so the longjmp
//   never crosses a C++ frame; run_core re-raises it unchanged (SQLSTATE and
//   message kept).
// Lambdas given to either hold no objects with destructors.
#pragma once

#include "postgres_api.h"

#include <cstdio>
#include <exception>
#include <new>
#include <stdexcept>

#include "codec.h"

namespace spillagg {

class PgError final : public std::exception {
 public:
  explicit PgError(ErrorData* e) : edata_(e) {}
  ErrorData* edata() const { return edata_; }
  const char* what() const noexcept override { return "PostgreSQL error"; }

 private:
  ErrorData* edata_;
};

// A C++ exception thrown by f (e.g. a ByteSink's bad_alloc) is caught
// inside the PG_TRY block and rethrown after PG_END_TRY, so the error
// handler stack (PG_exception_stack, error_context_stack) is restored on
// every way out.
template <class F>
inline void pg_call(MemoryContext cxt, F&& f) {
  MemoryContext old = MemoryContextSwitchTo(cxt);
  ErrorData* volatile edata = nullptr;
  std::exception_ptr cpp_error;  // only set when no longjmp happened
  PG_TRY();
  {
    try {
      f();
    } catch (...) {
      cpp_error = std::current_exception();
    }
  }
  PG_CATCH();
  {
    MemoryContextSwitchTo(old);
    edata = CopyErrorData();
    FlushErrorState();
  }
  PG_END_TRY();
  MemoryContextSwitchTo(old);
  if (edata) throw PgError(edata);
  if (cpp_error) std::rethrow_exception(cpp_error);
}

// corrupt_sqlstate: the SQLSTATE of CorruptData (XX001 for our own spill
// files; 22P03 where the bytes came from outside, e.g. a serialized state).
template <class F>
inline void run_core(F&& f, int corrupt_sqlstate = ERRCODE_DATA_CORRUPTED) {
  ErrorData* pg_error = nullptr;
  int sqlstate = 0;
  char message[256];
  auto keep = [&](int code, const char* what) {
    sqlstate = code;
    std::snprintf(message, sizeof message, "%s", what);
  };
  try {
    f();
  } catch (const PgError& e) {
    pg_error = e.edata();
  } catch (const std::bad_alloc&) {
    keep(ERRCODE_OUT_OF_MEMORY, "out of memory");
  } catch (const CorruptData& e) {
    keep(corrupt_sqlstate, e.what());
    if (corrupt_sqlstate == ERRCODE_INVALID_BINARY_REPRESENTATION)
      std::snprintf(message, sizeof message, "invalid spillagg state: %s", e.what());
  } catch (const std::overflow_error& e) {
    keep(ERRCODE_NUMERIC_VALUE_OUT_OF_RANGE, e.what());
  } catch (const std::exception& e) {
    keep(ERRCODE_INTERNAL_ERROR, e.what());
  } catch (...) {
    keep(ERRCODE_INTERNAL_ERROR, "unknown C++ exception");
  }
  if (pg_error) ReThrowError(pg_error);
  if (sqlstate)
    ereport(ERROR, (errcode(sqlstate), errmsg("%s", message)));
}

// Runs a SQL-callable function's body under run_core (below, SPILLAGG_FUNCTION).
inline Datum guarded_call(Datum (*body)(FunctionCallInfo), FunctionCallInfo fcinfo) {
  Datum result = 0;
  run_core([&] { result = body(fcinfo); });
  return result;
}

}  // namespace spillagg

// SPILLAGG_FUNCTION(name) { ... } defines the SQL-callable C function `name`
// (version-1 calling convention) with its body guarded by run_core, so no
// entry point can let a C++ exception reach PostgreSQL, whatever it calls.
// The body may raise PostgreSQL ERRORs: their longjmp leaves through the
// guard, which owns nothing. Every spillagg entry point is defined this way.
#define SPILLAGG_FUNCTION(name)                                                          \
  static Datum name##_body(FunctionCallInfo fcinfo);                                     \
  extern "C" {                                                                           \
  PG_FUNCTION_INFO_V1(name);                                                             \
  Datum name(PG_FUNCTION_ARGS) { return spillagg::guarded_call(name##_body, fcinfo); }   \
  }                                                                                      \
  static Datum name##_body(FunctionCallInfo fcinfo)
