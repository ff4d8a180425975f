// JSON values of the map aggregates, made as to_jsonb makes them from the
// native result: numbers become jsonb numerics through their text form,
// and what is not a valid JSON number (NaN, Infinity) becomes a string.
#pragma once

#include "postgres_api.h"

namespace spillagg {

inline Numeric numeric_from_text(const char* s) {
  return DatumGetNumeric(DirectFunctionCall3(numeric_in, CStringGetDatum(s),
                                             ObjectIdGetDatum(InvalidOid), Int32GetDatum(-1)));
}

inline void json_null(JsonbValue* v) { v->type = jbvNull; }

inline void json_int64(int64 x, JsonbValue* v) {
  v->type = jbvNumeric;
  v->val.numeric = int64_to_numeric(x);
}

inline void json_numeric(Numeric n, JsonbValue* v) {
  v->type = jbvNumeric;
  v->val.numeric = n;
}

// The text form of a number: a jsonb numeric if valid JSON, else a string.
inline void json_number_text(char* s, JsonbValue* v) {
  int len = static_cast<int>(strlen(s));
  if (IsValidJsonNumber(s, len)) {
    json_numeric(numeric_from_text(s), v);
  } else {
    v->type = jbvString;
    v->val.string.val = s;
    v->val.string.len = len;
  }
}

inline void json_float8(double x, JsonbValue* v) {
  json_number_text(DatumGetCString(DirectFunctionCall1(float8out, Float8GetDatum(x))), v);
}

inline void json_float4(float x, JsonbValue* v) {
  json_number_text(DatumGetCString(DirectFunctionCall1(float4out, Float4GetDatum(x))), v);
}

}  // namespace spillagg
