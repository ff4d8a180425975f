// top_k(key anyelement, k int) -> anyarray: the k most frequent keys, most
// frequent first, ties broken by the key type's btree order. The counts are
// count_map's spilling table; the final pass streams every distinct key once
// through a bounded heap of the k best, so memory is O(k) beyond the budget.
#include "postgres_api.h"

#include "stored_state.h"

using namespace spillagg;

using CountAgg = KeyedAgg<Count>;

namespace {

struct Candidate {
  int64 count;
  Datum key;
};

struct Ranking {
  FmgrInfo* cmp;
  Oid collation;
};

// Key order by the type's btree comparison (may raise a PostgreSQL ERROR).
int compare_keys(const Ranking& r, Datum a, Datum b) {
  return DatumGetInt32(FunctionCall2Coll(r.cmp, r.collation, a, b));
}

// > 0 when a ranks before b: higher count, then smaller key.
int rank(const Ranking& r, const Candidate& a, const Candidate& b) {
  if (a.count != b.count) return a.count > b.count ? 1 : -1;
  return -compare_keys(r, a.key, b.key);
}

// Min-heap on rank: heap[0] is the worst of the k kept.
void sift_down(const Ranking& r, Candidate* heap, int n, int i) {
  for (;;) {
    int l = 2 * i + 1, worst = i;
    if (l < n && rank(r, heap[l], heap[worst]) < 0) worst = l;
    if (l + 1 < n && rank(r, heap[l + 1], heap[worst]) < 0) worst = l + 1;
    if (worst == i) return;
    Candidate t = heap[i];
    heap[i] = heap[worst];
    heap[worst] = t;
    i = worst;
  }
}

void sift_up(const Ranking& r, Candidate* heap, int i) {
  while (i > 0 && rank(r, heap[i], heap[(i - 1) / 2]) < 0) {
    Candidate t = heap[i];
    heap[i] = heap[(i - 1) / 2];
    heap[(i - 1) / 2] = t;
    i = (i - 1) / 2;
  }
}

int compare_for_output(const void* a, const void* b, void* arg) {
  return -rank(*static_cast<const Ranking*>(arg), *static_cast<const Candidate*>(a),
               *static_cast<const Candidate*>(b));
}

// A copy of the key that outlives the table's merge buffers.
Datum copy_key(KeyType* kt, KeyView k) {
  if (kt->typbyval) return kt->datum_of(k);
  void* p = palloc(k.len);
  memcpy(p, k.data, k.len);
  return PointerGetDatum(p);
}

}  // namespace

SPILLAGG_FUNCTION(spillagg_top_k_transfn) {
  if (PG_ARGISNULL(2) || PG_GETARG_INT32(2) <= 0)
    ereport(ERROR, (errcode(ERRCODE_INVALID_PARAMETER_VALUE),
                    errmsg("k must be a positive integer"),
                    errdetail("top_k was called with k = %s.",
                              PG_ARGISNULL(2) ? "NULL" : psprintf("%d", PG_GETARG_INT32(2)))));
  CountAgg* s = CountAgg::from_args(fcinfo, 1);
  // One k per result: were it to vary, which k applies would depend on the
  // plan (the last row's serially, a mix in parallel).
  int32 k = PG_GETARG_INT32(2);
  if (s->limit != 0 && s->limit != k)
    ereport(ERROR, (errcode(ERRCODE_INVALID_PARAMETER_VALUE),
                    errmsg("k must be the same for every row of a top_k group"),
                    errdetail("top_k was called with k = %d and then k = %d.", s->limit, k)));
  s->limit = k;
  s->add_row(fcinfo, [](Count& c) { c.add_one(); });
  return s->datum();
}

// Of an aggregate's state, or of a stored state for top_k_final(spillagg_state,
// anyelement), whose second argument only names the key type (NULL::type),
// which must be the state's.
static Datum top_k_result(FunctionCallInfo fcinfo, KeyedAggHeader* header) {
  if (!header) PG_RETURN_NULL();
  KeyStream<Count> keys(fcinfo, header, "top_k_final");
  KeyType* kt = keys.key;
  // The result is an array of the state's key type: it must be the type
  // the call site resolved its result to (the second argument's).
  Oid named = call_arg_type(fcinfo, 1);
  if (named != kt->type)
    ereport(ERROR, (errcode(ERRCODE_DATATYPE_MISMATCH),
                    errmsg("the state holds keys of type %s, not %s", format_type_be(kt->type),
                           OidIsValid(named) ? format_type_be(named) : "(unknown)")));
  if (header->limit <= 0)
    ereport(ERROR, (errcode(ERRCODE_INVALID_PARAMETER_VALUE),
                    errmsg("this spillagg state has no k: make it with top_k_state(key, k)")));
  TypeCacheEntry* tc = lookup_type_cache(kt->type, TYPECACHE_CMP_PROC_FINFO);
  if (!OidIsValid(tc->cmp_proc_finfo.fn_oid))
    ereport(ERROR, (errcode(ERRCODE_UNDEFINED_FUNCTION),
                    errmsg("could not identify a comparison function for type %s",
                           format_type_be(kt->type)),
                    errdetail("top_k breaks ties by key order.")));
  Ranking r{&tc->cmp_proc_finfo, kt->collation};

  int limit = header->limit;
  Candidate* heap = static_cast<Candidate*>(palloc(sizeof(Candidate) * Min(limit, 1024)));
  int cap = Min(limit, 1024), n = 0;
  uint64 h;
  KeyView k;
  Count c;
  while (keys.next(&h, &k, &c)) {
    Candidate cand{c.n, kt->datum_of(k)};
    if (n < limit) {
      if (n == cap) {
        cap = Min(limit, 2 * cap);
        heap = static_cast<Candidate*>(repalloc(heap, sizeof(Candidate) * cap));
      }
      cand.key = copy_key(kt, k);
      heap[n] = cand;
      sift_up(r, heap, n++);
    } else if (rank(r, cand, heap[0]) > 0) {
      if (!kt->typbyval) pfree(DatumGetPointer(heap[0].key));
      cand.key = copy_key(kt, k);
      heap[0] = cand;
      sift_down(r, heap, n, 0);
    }
  }
  keys.close();
  if (n == 0) PG_RETURN_NULL();
  qsort_arg(heap, n, sizeof(Candidate), compare_for_output, &r);
  Datum* result = static_cast<Datum*>(palloc(sizeof(Datum) * n));
  for (int i = 0; i < n; ++i) result[i] = heap[i].key;
  int16 typlen;
  bool typbyval;
  char typalign;
  get_typlenbyvalalign(kt->type, &typlen, &typbyval, &typalign);
  PG_RETURN_ARRAYTYPE_P(construct_array(result, n, kt->type, typlen, typbyval, typalign));
}

// Also top_k_final(spillagg_state, anyelement).
SPILLAGG_FUNCTION(spillagg_top_k_finalfn) { return top_k_result(fcinfo, state_arg(fcinfo, 0)); }
