// The Mergeable family over (key, value): sum_map, avg_map, min_map,
// max_map, variance_map / var_pop_map, stddev_map / stddev_pop_map.
// Each result value equals what PostgreSQL's own aggregate gives over the
// same key's rows, with its result type (e.g. sum(int8) and avg(int) are
// numeric), then turned into JSON as to_jsonb would.
#include "postgres_api.h"

#include <cmath>

#include "json_values.h"
#include "stored_state.h"

using namespace spillagg;

namespace {

enum class ValueKind { Int, Float, Numeric };

ValueKind kind_of(Oid type) {
  switch (type) {
    case INT2OID:
    case INT4OID:
    case INT8OID:
      return ValueKind::Int;
    case FLOAT4OID:
    case FLOAT8OID:
      return ValueKind::Float;
    case NUMERICOID:
      return ValueKind::Numeric;
    default:
      ereport(ERROR, (errcode(ERRCODE_DATATYPE_MISMATCH),
                      errmsg("spillagg map aggregates do not accept values of type %s",
                             format_type_be(type)),
                      errhint("Values must be smallint, integer, bigint, real, double precision or numeric.")));
  }
  pg_unreachable();
}

int64 int_value(Oid type, Datum d) {
  switch (type) {
    case INT2OID: return DatumGetInt16(d);
    case INT4OID: return DatumGetInt32(d);
    default: return DatumGetInt64(d);
  }
}

double float_value(Oid type, Datum d) {
  return type == FLOAT4OID ? static_cast<double>(DatumGetFloat4(d)) : DatumGetFloat8(d);
}

// A numeric Datum in PostgreSQL's numeric layout (the on-disk format: a
// 2-byte header for short and special values, 4 bytes with a separate
// weight otherwise, then base-10000 digits), read once and then turned
// into a NumericValueT of whatever width the state has.
struct NumericInput {
  uint8 kind = NumericValue::kFinite;
  bool negative = false;
  int dscale = 0, weight = 0, ndigits = 0;
  const int16* digits = nullptr;

  // StateOverflow if the value needs more than W words.
  template <int W>
  NumericValueT<W> value() const {
    NumericValueT<W> v;
    v.kind = kind;
    if (kind == NumericValue::kFinite) v.d = DecimalT<W>::from_base10000(digits, ndigits, weight, dscale, negative);
    return v;
  }
};

NumericInput numeric_input(Datum d) {
  Numeric num = DatumGetNumeric(d);  // detoasted, 4-byte varlena header
  const uint8* p = reinterpret_cast<const uint8*>(VARDATA(num));
  uint16 header;
  memcpy(&header, p, sizeof header);
  NumericInput in;
  if ((header & 0xC000) == 0xC000) {  // NaN, +Infinity, -Infinity
    uint16 special = header & 0xF000;
    in.kind = special == 0xD000 ? NumericValue::kPosInf
              : special == 0xF000 ? NumericValue::kNegInf : NumericValue::kNaN;
    return in;
  }
  bool is_short = (header & 0x8000) != 0;
  int header_size = is_short ? 2 : 4;
  if (is_short) {
    in.negative = (header & 0x2000) != 0;
    in.dscale = (header & 0x1F80) >> 7;
    in.weight = (header & 0x0040 ? ~0x003F : 0) | (header & 0x003F);
  } else {
    in.negative = (header & 0xC000) == 0x4000;
    in.dscale = header & 0x3FFF;
    int16 w;
    memcpy(&w, p + 2, sizeof w);
    in.weight = w;
  }
  in.ndigits = static_cast<int>((VARSIZE(num) - VARHDRSZ - header_size) / sizeof(int16));
  in.digits = reinterpret_cast<const int16*>(p + header_size);
  return in;
}

template <int W>
Numeric numeric_of(const DecimalT<W>& d) {
  char* text = static_cast<char*>(palloc(d.text_size()));
  d.to_text(text);
  return numeric_from_text(text);
}

// NaN / Infinity as sum() and avg() of numeric give them; false if finite.
bool special_sum(const NumericKinds& k, JsonbValue* v) {
  if (!k.special()) return false;
  const char* which = k.nan > 0 || (k.pos_inf > 0 && k.neg_inf > 0) ? "NaN"
                      : k.pos_inf > 0 ? "Infinity" : "-Infinity";
  json_number_text(pstrdup(which), v);
  return true;
}

template <int W>
void json_numeric_value(const NumericValueT<W>& x, JsonbValue* v) {
  switch (x.kind) {
    case NumericValue::kNaN: return json_number_text(pstrdup("NaN"), v);
    case NumericValue::kPosInf: return json_number_text(pstrdup("Infinity"), v);
    case NumericValue::kNegInf: return json_number_text(pstrdup("-Infinity"), v);
    default: return json_numeric(numeric_of(x.d), v);
  }
}

template <bool kMax>
struct NumericExtremeOf {
  template <int W>
  using T = NumericExtremeT<W, kMax>;
};

Oid value_type(FunctionCallInfo fcinfo) {
  if (KeyedAggHeader* h = writable_state(fcinfo, 0)) return h->value_type;
  return call_arg_type(fcinfo, 2);
}


// Transition: a row with a NULL value still registers its key (whose value
// stays NULL if no other row brings one), as GROUP BY key would.
template <class State, class Value>
Datum map_transfn(FunctionCallInfo fcinfo, Value (*get)(Oid, Datum)) {
  KeyedAgg<State>* s = KeyedAgg<State>::from_args(fcinfo, 1);
  bool has_value = !PG_ARGISNULL(2);
  Value v = has_value ? get(s->value_type, PG_GETARG_DATUM(2)) : Value{};
  s->add_row(fcinfo, [&](State& st) {
    if (has_value) st.add(v);
  });
  return s->datum();
}

// A stored state given to a map final function must come from a map
// aggregate (it names its value type).
void check_map_state(KeyedAggHeader* h, const char* name) {
  if (!OidIsValid(h->value_type)) wrong_state_kind(name);
}

// The final step over an aggregate's state or a stored spillagg_state (h).
template <class State, class ValueOf>
Datum map_finalfn(FunctionCallInfo fcinfo, KeyedAggHeader* h, const char* name, ValueOf&& value_of) {
  KeyStream<State> keys(fcinfo, h, name);
  Datum map = build_json_map(keys, [&](const State& st, JsonbValue* v) {
    if (st.n == 0) json_null(v);
    else value_of(st, v);
  });
  if (!map) PG_RETURN_NULL();
  PG_RETURN_DATUM(map);
}

// The numeric transition: the row goes to the state's width; when the value
// does not fit that width, or the key's state overflows with it, the state
// is taken over by the next wider width (KeyedAgg::escalate) and the row
// applied again there. At the widest width an overflow is an ERROR (22003:
// a result beyond numeric's range, which PostgreSQL's own would raise).
template <template <int> class Family>
Datum numeric_transfn(FunctionCallInfo fcinfo) {
  KeyedAggHeader* h = KeyedAgg<Family<kNumericRungWords[0]>>::header_from_args(fcinfo, 1);
  bool has_value = !PG_ARGISNULL(2);
  NumericInput in = has_value ? numeric_input(PG_GETARG_DATUM(2)) : NumericInput{};
  for (;;) {
    bool overflow = false;
    with_numeric_rung<Family>(numeric_rung(h->state_tag), [&](auto t) {
      using S = typename decltype(t)::type;
      static_cast<KeyedAgg<S>*>(h)->add_row(fcinfo, [&](S& st) {
        if (!has_value) return;
        if constexpr (Widens<S>::value) {
          try {
            st.add(in.value<S::kWords>());
          } catch (const StateOverflow&) {
            overflow = true;
          }
        } else {
          st.add(in.value<S::kWords>());
        }
      });
    });
    if (!overflow) break;
    h = escalate_numeric(h);
  }
  return state_datum(h);
}

// The final step over a numeric state of any width; restarts wider when
// merging its spilled runs overflows.
template <template <int> class Family, class ValueOf>
Datum numeric_map_finalfn(FunctionCallInfo fcinfo, KeyedAggHeader* h, const char* name, ValueOf&& value_of) {
  for (;;) {
    bool restart = false;
    Datum map = with_numeric_rung<Family>(numeric_rung(h->state_tag), [&](auto t) -> Datum {
      using S = typename decltype(t)::type;
      KeyStream<S> keys(fcinfo, h, name);
      Datum m = build_json_map(keys, [&](const S& st, JsonbValue* v) {
        if (st.n == 0) json_null(v);
        else value_of(st, v);
      });
      restart = keys.overflowed();
      return m;
    });
    if (!restart) {
      if (!map) PG_RETURN_NULL();
      PG_RETURN_DATUM(map);
    }
    h = escalate_numeric(h);
  }
}

Numeric numeric_of(__int128 v) {  // (an IntSum's sum)
  char buf[kDecimalBuf];
  to_decimal(v, buf);
  return numeric_from_text(buf);
}

Numeric numeric_op(PGFunction f, Numeric a, Numeric b) {
  return DatumGetNumeric(DirectFunctionCall2(f, NumericGetDatum(a), NumericGetDatum(b)));
}

int numeric_sign_of(Numeric a) {
  return DatumGetInt32(DirectFunctionCall2(numeric_cmp, NumericGetDatum(a), NumericGetDatum(int64_to_numeric(0))));
}

// The square root of x rounded (half away from zero) to x's own display
// scale, as PostgreSQL's sqrt_var(x, rscale = dscale(x)) gives it. numeric_sqrt
// works at a larger scale, and rounding its result again can be off by one
// unit in the last place, so the candidate r is corrected until
// (r - u/2)^2 <= x < (r + u/2)^2, u being that unit (all exact arithmetic).
Numeric sqrt_at_own_scale(Numeric x) {
  int32 scale = DatumGetInt32(DirectFunctionCall1(numeric_scale, NumericGetDatum(x)));
  Numeric r = DatumGetNumeric(DirectFunctionCall2(
      numeric_round, DirectFunctionCall1(numeric_sqrt, NumericGetDatum(x)), Int32GetDatum(scale)));
  char buf[32];
  snprintf(buf, sizeof buf, "1e-%d", scale);
  Numeric unit = numeric_from_text(buf);
  snprintf(buf, sizeof buf, "5e-%d", scale + 1);
  Numeric half = numeric_from_text(buf);
  for (int step = 0; step < 4; ++step) {
    Numeric lo = numeric_op(numeric_sub, r, half), hi = numeric_op(numeric_add, r, half);
    if (numeric_sign_of(numeric_op(numeric_sub, x, numeric_op(numeric_mul, lo, lo))) < 0)
      r = numeric_op(numeric_sub, r, unit);
    else if (numeric_sign_of(numeric_op(numeric_sub, x, numeric_op(numeric_mul, hi, hi))) >= 0)
      r = numeric_op(numeric_add, r, unit);
    else
      break;
  }
  return DatumGetNumeric(DirectFunctionCall2(numeric_round, NumericGetDatum(r), Int32GetDatum(scale)));
}

// PostgreSQL's variance/stddev of integers and numerics (numeric_stddev_internal):
// (N * sumX2 - sumX^2) / (N * (N - 1)) (or N * N), exact up to the division,
// which uses numeric_div's scale; stddev takes the root at that same scale.
// NULL (false) where PostgreSQL gives NULL.
bool moments_result(int64 count, Numeric sum, Numeric sumsq, bool sample, bool root, JsonbValue* v) {
  if (count == 0 || (sample && count == 1)) return false;
  Numeric n = int64_to_numeric(count);
  Numeric numerator = numeric_op(numeric_sub, numeric_op(numeric_mul, n, sumsq),
                                 numeric_op(numeric_mul, sum, sum));
  if (numeric_sign_of(numerator) <= 0) {
    json_numeric(int64_to_numeric(0), v);
    return true;
  }
  Numeric denominator = numeric_op(numeric_mul, n, sample ? int64_to_numeric(count - 1) : n);
  Numeric variance = numeric_op(numeric_div, numerator, denominator);
  if (root) variance = sqrt_at_own_scale(variance);
  json_numeric(variance, v);
  return true;
}

// numeric_stddev_internal over a numeric state of any width. Narrower widths
// whose sums fit numeric's range and scale go through PostgreSQL's numeric
// functions as above. Otherwise (the widest width, or a sum of squares with
// more than 16383 digits after the point, which no Numeric holds) the
// numerator N * sumX2 - sumX^2 is computed exactly here, then cut to 16383
// digits after the point (floor: it is positive) -- which cannot change the
// quotient, which numeric_div then rounds to at most 1000 digits
// (select_div_scale) -- and divided as above.
constexpr int32 kNumericDscaleMax = 0x3FFF;  // numeric.c's NUMERIC_DSCALE_MAX

template <int W>
bool numeric_moments_result(const NumericMomentsT<W>& m, bool sample, bool root, JsonbValue* v) {
  int64 count = m.kinds.finite();
  if (W < kNumericRungWords[kNumericRungs - 1] && m.sumsq.scale <= kNumericDscaleMax)
    return moments_result(count, numeric_of(m.sum), numeric_of(m.sumsq), sample, root, v);
  if (count == 0 || (sample && count == 1)) return false;
  using Wide = DecimalT<kNumericRungWords[kNumericRungs - 1]>;
  Wide* num = static_cast<Wide*>(palloc(sizeof(Wide)));
  bool positive = false;
  run_core([&] {
    Wide sum = Wide::widen(m.sum);
    Wide sq = Wide::product(sum, sum);
    *num = Wide::product(Wide::from_int(count), Wide::widen(m.sumsq));
    sq.negate();
    num->add(sq);
    positive = !num->negative() && !num->is_zero();
    if (positive && num->scale > kNumericDscaleMax) num->truncate_scale(kNumericDscaleMax);
  });
  if (!positive) {
    json_numeric(int64_to_numeric(0), v);
    return true;
  }
  Numeric n = int64_to_numeric(count);
  Numeric denominator = numeric_op(numeric_mul, n, sample ? int64_to_numeric(count - 1) : n);
  Numeric variance = numeric_op(numeric_div, numeric_of(*num), denominator);
  if (root) variance = sqrt_at_own_scale(variance);
  json_numeric(variance, v);
  return true;
}

// PostgreSQL's float8_var_samp / _pop and the stddev variants: M2 / (n - 1)
// or M2 / n; NULL where PostgreSQL gives NULL.
bool float_moments_result(const FloatMoments& m, bool sample, bool root, JsonbValue* v) {
  if (m.n == 0 || (sample && m.n == 1)) return false;
  double variance = m.m2 / (static_cast<double>(m.n) - (sample ? 1.0 : 0.0));
  json_float8(root ? std::sqrt(variance) : variance, v);
  return true;
}

Datum moments_result(FunctionCallInfo fcinfo, KeyedAggHeader* h, const char* name, bool sample, bool root) {
  if (!h) PG_RETURN_NULL();
  check_map_state(h, name);
  ValueKind kind = kind_of(h->value_type);
  if (kind == ValueKind::Int)
    return map_finalfn<IntMoments>(fcinfo, h, name, [&](const IntMoments& m, JsonbValue* v) {
      char buf[kDecimalBuf];
      to_decimal(m.sumsq, buf);
      if (!moments_result(m.n, numeric_of(m.sum), numeric_from_text(buf), sample, root, v)) json_null(v);
    });
  if (kind == ValueKind::Numeric)
    return numeric_map_finalfn<NumericMomentsT>(fcinfo, h, name, [&](const auto& m, JsonbValue* v) {
      // After the NULL cases (counting every value), any NaN or infinity
      // makes the variance NaN, as numeric_stddev_internal decides.
      if (m.kinds.special() && !(sample && m.kinds.n <= 1)) return json_number_text(pstrdup("NaN"), v);
      if (!numeric_moments_result(m, sample, root, v)) json_null(v);
    });
  return map_finalfn<FloatMoments>(fcinfo, h, name, [&](const FloatMoments& m, JsonbValue* v) {
    if (!float_moments_result(m, sample, root, v)) json_null(v);
  });
}

template <bool kMax>
Datum extreme_transfn(FunctionCallInfo fcinfo) {
  ValueKind kind = kind_of(value_type(fcinfo));
  if (kind == ValueKind::Numeric) return numeric_transfn<NumericExtremeOf<kMax>::template T>(fcinfo);
  if (kind == ValueKind::Int)
    return map_transfn<Extreme<int64_t, kMax>, int64>(fcinfo, int_value);
  return map_transfn<Extreme<double, kMax>, double>(fcinfo, float_value);
}

template <bool kMax>
Datum extreme_result(FunctionCallInfo fcinfo, KeyedAggHeader* h) {
  if (!h) PG_RETURN_NULL();
  const char* name = kMax ? "max_map_final" : "min_map_final";
  check_map_state(h, name);
  Oid type = h->value_type;
  if (kind_of(type) == ValueKind::Numeric)
    return numeric_map_finalfn<NumericExtremeOf<kMax>::template T>(
        fcinfo, h, name, [](const auto& e, JsonbValue* v) { json_numeric_value(e.v, v); });
  if (kind_of(type) == ValueKind::Int)
    return map_finalfn<Extreme<int64_t, kMax>>(
        fcinfo, h, name, [](const Extreme<int64_t, kMax>& e, JsonbValue* v) { json_int64(e.v, v); });
  return map_finalfn<Extreme<double, kMax>>(fcinfo, h, name, [type](const Extreme<double, kMax>& e, JsonbValue* v) {
    if (type == FLOAT4OID) json_float4(static_cast<float>(e.v), v);
    else json_float8(e.v, v);
  });
}

}  // namespace

SPILLAGG_FUNCTION(spillagg_sum_transfn) {
  ValueKind kind = kind_of(value_type(fcinfo));
  if (kind == ValueKind::Numeric) return numeric_transfn<NumericSumT>(fcinfo);
  if (kind == ValueKind::Int) return map_transfn<IntSum, int64>(fcinfo, int_value);
  return map_transfn<FloatSum, double>(fcinfo, float_value);
}

static Datum sum_result(FunctionCallInfo fcinfo, KeyedAggHeader* h) {
  if (!h) PG_RETURN_NULL();
  check_map_state(h, "sum_map_final");
  Oid type = h->value_type;
  if (kind_of(type) == ValueKind::Numeric)
    return numeric_map_finalfn<NumericSumT>(fcinfo, h, "sum_map_final", [](const auto& s, JsonbValue* v) {
      if (!special_sum(s.kinds, v)) json_numeric(numeric_of(s.sum), v);
    });
  if (kind_of(type) == ValueKind::Int)
    return map_finalfn<IntSum>(fcinfo, h, "sum_map_final", [type](const IntSum& s, JsonbValue* v) {
      if (type == INT8OID) return json_numeric(numeric_of(s.sum), v);  // sum(int8) is numeric
      if (s.sum < PG_INT64_MIN || s.sum > PG_INT64_MAX)                  // as sum(int4) raises
        ereport(ERROR, (errcode(ERRCODE_NUMERIC_VALUE_OUT_OF_RANGE), errmsg("bigint out of range")));
      json_int64(static_cast<int64>(s.sum), v);
    });
  if (h->state_tag == FloatMoments::kTag)  // an avg_map_state: its sums in double precision
    return map_finalfn<FloatMoments>(fcinfo, h, "sum_map_final", [type](const FloatMoments& m, JsonbValue* v) {
      if (type == FLOAT8OID) return json_float8(m.sum, v);
      float sum4 = static_cast<float>(m.sum);
      if (std::isinf(sum4) && !std::isinf(m.sum))
        ereport(ERROR, (errcode(ERRCODE_NUMERIC_VALUE_OUT_OF_RANGE), errmsg("value out of range: overflow")));
      json_float4(sum4, v);
    });
  return map_finalfn<FloatSum>(fcinfo, h, "sum_map_final", [type](const FloatSum& s, JsonbValue* v) {
    if (type == FLOAT8OID) return json_float8(s.sum, v);
    // sum(real) adds in single precision; its overflow is float4pl's error.
    if (s.sum4_overflowed)
      ereport(ERROR, (errcode(ERRCODE_NUMERIC_VALUE_OUT_OF_RANGE), errmsg("value out of range: overflow")));
    json_float4(s.sum4, v);
  });
}

static Datum avg_result(FunctionCallInfo fcinfo, KeyedAggHeader* h) {
  if (!h) PG_RETURN_NULL();
  check_map_state(h, "avg_map_final");
  ValueKind kind = kind_of(h->value_type);
  if (kind == ValueKind::Numeric)
    return numeric_map_finalfn<NumericSumT>(fcinfo, h, "avg_map_final", [](const auto& s, JsonbValue* v) {
      if (!special_sum(s.kinds, v))
        json_numeric(numeric_op(numeric_div, numeric_of(s.sum), int64_to_numeric(s.kinds.finite())), v);
    });
  if (kind == ValueKind::Int)  // avg of integers is numeric
    return map_finalfn<IntSum>(fcinfo, h, "avg_map_final", [](const IntSum& s, JsonbValue* v) {
      json_numeric(numeric_op(numeric_div, numeric_of(s.sum), int64_to_numeric(s.n)), v);
    });
  // avg_map's own states keep moments (float8_avg's overflow checks); a
  // sum_map_state has plain sums.
  if (h->state_tag == FloatSum::kTag)
    return map_finalfn<FloatSum>(fcinfo, h, "avg_map_final", [](const FloatSum& s, JsonbValue* v) {
      json_float8(s.sum / static_cast<double>(s.n), v);
    });
  return map_finalfn<FloatMoments>(fcinfo, h, "avg_map_final", [](const FloatMoments& m, JsonbValue* v) {
    json_float8(m.sum / static_cast<double>(m.n), v);
  });
}

SPILLAGG_FUNCTION(spillagg_min_transfn) { return extreme_transfn<false>(fcinfo); }
SPILLAGG_FUNCTION(spillagg_max_transfn) { return extreme_transfn<true>(fcinfo); }

SPILLAGG_FUNCTION(spillagg_moments_transfn) {
  ValueKind kind = kind_of(value_type(fcinfo));
  if (kind == ValueKind::Numeric)
    return numeric_transfn<NumericMomentsT>(fcinfo);
  if (kind == ValueKind::Int)
    return map_transfn<IntMoments, int64>(fcinfo, int_value);
  return map_transfn<FloatMoments, double>(fcinfo, float_value);
}

static Datum var_samp_result(FunctionCallInfo fcinfo, KeyedAggHeader* h) {
  return moments_result(fcinfo, h, "var_samp_map_final", true, false);
}
static Datum var_pop_result(FunctionCallInfo fcinfo, KeyedAggHeader* h) {
  return moments_result(fcinfo, h, "var_pop_map_final", false, false);
}
static Datum stddev_samp_result(FunctionCallInfo fcinfo, KeyedAggHeader* h) {
  return moments_result(fcinfo, h, "stddev_samp_map_final", true, true);
}
static Datum stddev_pop_result(FunctionCallInfo fcinfo, KeyedAggHeader* h) {
  return moments_result(fcinfo, h, "stddev_pop_map_final", false, true);
}

// Each final function serves the aggregates and the X_final functions of
// stored states alike: both read their spillagg_state through state_arg.
#define SPILLAGG_FINAL_ENTRY_POINTS(name, result) \
  SPILLAGG_FUNCTION(spillagg_##name##_finalfn) { return result(fcinfo, state_arg(fcinfo, 0)); }

SPILLAGG_FINAL_ENTRY_POINTS(sum, sum_result)
SPILLAGG_FINAL_ENTRY_POINTS(avg, avg_result)
SPILLAGG_FINAL_ENTRY_POINTS(min, extreme_result<false>)
SPILLAGG_FINAL_ENTRY_POINTS(max, extreme_result<true>)
SPILLAGG_FINAL_ENTRY_POINTS(var_samp, var_samp_result)
SPILLAGG_FINAL_ENTRY_POINTS(var_pop, var_pop_result)
SPILLAGG_FINAL_ENTRY_POINTS(stddev_samp, stddev_samp_result)
SPILLAGG_FINAL_ENTRY_POINTS(stddev_pop, stddev_pop_result)
