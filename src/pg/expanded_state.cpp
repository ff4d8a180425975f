// Live spillagg states as expanded objects; reading spillagg_state
// arguments; the call site's argument types (expanded_state.h).
#include "expanded_state.h"

extern "C" {
#include "catalog/pg_aggregate.h"
#include "catalog/pg_proc.h"
#include "nodes/execnodes.h"
#include "nodes/nodeFuncs.h"
#include "nodes/primnodes.h"
}

#include "stored_state.h"

namespace spillagg {

static Size state_flat_size(ExpandedObjectHeader* eoh);
static void state_flatten_into(ExpandedObjectHeader* eoh, void* result, Size allocated_size);

static const ExpandedObjectMethods kStateMethods = {state_flat_size, state_flatten_into};

[[noreturn]] static void not_ours() {
  ereport(ERROR, (errcode(ERRCODE_INVALID_PARAMETER_VALUE),
                  errmsg("invalid spillagg state: an in-memory value that is not a spillagg state")));
  pg_unreachable();
}

// The live state behind an expanded object, after checking that the object
// is one of ours: methods pointer, then magics. A numeric state that
// escalated is read through the widest state of its chain (keyed_agg.h).
static KeyedAggHeader* live_of(ExpandedObjectHeader* eoh) {
  if (eoh->eoh_methods != &kStateMethods) not_ours();
  KeyedAggHeader* agg = reinterpret_cast<KeyedAggHeader*>(reinterpret_cast<char*>(eoh) - offsetof(KeyedAggHeader, object));
  if (agg->magic != kLiveStateMagic || agg->serialized || agg->took_over) not_ours();
  agg = widest(agg);
  if (agg->magic != kLiveStateMagic || agg->serialized) not_ours();
  return agg;
}

static Size state_flat_size(ExpandedObjectHeader* eoh) {
  KeyedAggHeader* agg = live_of(eoh);
  StateObject* o = &shell_of(agg)->object;
  if (!o->flat) {
    // In the aggregate context (GetMemoryChunkContext: the state's own chunk).
    MemoryContext old = MemoryContextSwitchTo(GetMemoryChunkContext(agg));
    bytea* flat = flatten_state(agg);
    MemoryContextSwitchTo(old);
    o->flat = flat;
  }
  return VARSIZE(o->flat);
}

static void state_flatten_into(ExpandedObjectHeader* eoh, void* result, Size allocated_size) {
  Size size = state_flat_size(eoh);
  StateObject* o = &shell_of(live_of(eoh))->object;
  if (size != allocated_size) elog(ERROR, "spillagg: flat state size changed (%zu, %zu)", size, allocated_size);
  memcpy(result, o->flat, size);
  pfree(o->flat);
  o->flat = nullptr;
}

// The shared object context is gone (its aggregate context was reset or
// deleted): forget it.
static void forget_shared(void* arg) {
  auto* slot = static_cast<CallCache::SharedObjectContext*>(arg);
  slot->aggcxt = nullptr;
  slot->cxt = nullptr;
}

// An empty context, child of aggcxt, that the states made by this call site
// in aggcxt share as their objects' context; nullptr if there is no room.
static MemoryContext shared_object_context(FunctionCallInfo fcinfo, MemoryContext aggcxt) {
  CallCache* cache = call_cache(fcinfo);
  CallCache::SharedObjectContext* free_slot = nullptr;
  for (auto& slot : cache->shared) {
    if (slot.cxt && slot.aggcxt == aggcxt) return slot.cxt;
    if (!slot.cxt && !free_slot) free_slot = &slot;
  }
  if (!free_slot) return nullptr;
  // Its only allocation is the callback that clears the slot when it goes
  // (callbacks run before a context's memory is freed).
  MemoryContext cxt = SlabContextCreate(aggcxt, "spillagg states", 128, sizeof(MemoryContextCallback));
  auto* cb = static_cast<MemoryContextCallback*>(MemoryContextAlloc(cxt, sizeof(MemoryContextCallback)));
  cb->func = forget_shared;
  cb->arg = free_slot;
  MemoryContextRegisterResetCallback(cxt, cb);
  free_slot->aggcxt = aggcxt;
  free_slot->cxt = cxt;
  return cxt;
}

// A state's own object context (the Citus case below) and what replaces it
// when whoever took the object over deletes it: a PL/pgSQL final function
// given the read-write datum takes the object over by assigning it to a
// variable, and deletes its context when the variable goes; a rescan may
// then run the final again on the same datum, whose header must still name
// a live context. Deleted with (or by a reset of) the aggregate context, it
// is not replaced.
struct OwnContextGuard {
  MemoryContextCallback callback;
  StateObject* object;
  MemoryContext home;  // the aggregate context
  MemoryContext cxt;
};

static MemoryContext own_object_context(StateObject* o, MemoryContext home);

static void replace_taken_over_context(void* arg) {
  auto* g = static_cast<OwnContextGuard*>(arg);
  if (MemoryContextGetParent(g->cxt) == g->home) return;
  g->object->hdr.eoh_context = own_object_context(g->object, g->home);
}

static MemoryContext own_object_context(StateObject* o, MemoryContext home) {
  MemoryContext cxt = SlabContextCreate(home, "spillagg state", 256, sizeof(OwnContextGuard));
  auto* g = static_cast<OwnContextGuard*>(MemoryContextAlloc(cxt, sizeof(OwnContextGuard)));
  g->callback.func = replace_taken_over_context;
  g->callback.arg = g;
  g->object = o;
  g->home = home;
  g->cxt = cxt;
  MemoryContextRegisterResetCallback(cxt, &g->callback);
  return cxt;
}

void attach_object(FunctionCallInfo fcinfo, KeyedAggHeader* agg, MemoryContext aggcxt) {
  // The object's context is a child of the aggregate context: nodeAgg keeps
  // such a read-write object as the transition value without copying it.
  // Nothing of the state is allocated in it (the header lives in the
  // aggregate context with the state), so whoever deletes or takes over the
  // context frees nothing of the state.
  //
  // When nodeAgg calls (an expression tree: fn_expr), the states of one
  // aggregate context share one such context: nodeAgg hands a read-write
  // datum only to the transition or combine function (ours) and read-only
  // ones to everything else, and never deletes an object a transition
  // function returned again. Otherwise (Citus's worker_partial_agg and
  // coord_combine_agg, which also hand the read-write datum to the
  // aggregate's final function, which may be anyone's and may take the
  // object over) each state has a slab context of its own (~0.5 kB), which
  // is replaced if the one who took it over deletes it (OwnContextGuard).
  StateObject* o = &agg->object;
  memset(o, 0, sizeof(StateObject));
  MemoryContext ocxt = fcinfo->flinfo->fn_expr ? shared_object_context(fcinfo, aggcxt) : nullptr;
  if (!ocxt) ocxt = own_object_context(o, aggcxt);
  EOH_init_header(&o->hdr, &kStateMethods, ocxt);
}

Datum state_datum(KeyedAggHeader* agg) { return EOHPGetRWDatum(&shell_of(agg)->object.hdr); }

KeyedAggHeader* writable_state(FunctionCallInfo fcinfo, int argno) {
  if (PG_ARGISNULL(argno)) return nullptr;
  Datum d = PG_GETARG_DATUM(argno);
  if (!VARATT_IS_EXTERNAL_EXPANDED_RW(DatumGetPointer(d))) return nullptr;
  KeyedAggHeader* agg = live_of(DatumGetEOHP(d));
  StateObject* o = &shell_of(agg)->object;
  if (o->flat) {
    pfree(o->flat);
    o->flat = nullptr;
  }
  return agg;
}

KeyedAggHeader* state_arg(FunctionCallInfo fcinfo, int argno) {
  if (PG_ARGISNULL(argno)) return nullptr;
  Datum d = PG_GETARG_DATUM(argno);
  if (VARATT_IS_EXTERNAL_EXPANDED(DatumGetPointer(d))) return live_of(DatumGetEOHP(d));
  return parse_state_bytes(reinterpret_cast<bytea*>(PG_DETOAST_DATUM_PACKED(d)));
}

// The declared type of argument argno of function fn, if not polymorphic.
static Oid declared_arg_type(Oid fn, int argno) {
  HeapTuple tup = SearchSysCache1(PROCOID, ObjectIdGetDatum(fn));
  if (!HeapTupleIsValid(tup)) return InvalidOid;
  Form_pg_proc p = reinterpret_cast<Form_pg_proc>(GETSTRUCT(tup));
  Oid t = argno >= 0 && argno < p->pronargs ? p->proargtypes.values[argno] : InvalidOid;
  ReleaseSysCache(tup);
  if (IsPolymorphicType(t) || t == ANYOID) return InvalidOid;
  return t;
}

// Citus's worker_partial_agg(aggregate, argument or ROW(arguments)) calling
// its aggregate's transition function (this function): that aggregate's
// oid, and the expression of the argument matching our argument argno.
static Aggref* citus_partial_agg(FunctionCallInfo fcinfo, int argno, Oid* agg, Expr** arg) {
  Aggref* a = AggGetAggref(fcinfo);
  if (!a || argno < 1 || list_length(a->args) != 2) return nullptr;
  TargetEntry* te = static_cast<TargetEntry*>(linitial(a->args));
  if (!IsA(te->expr, Const)) return nullptr;
  Const* c = reinterpret_cast<Const*>(te->expr);
  if (c->constisnull || (c->consttype != OIDOID && c->consttype != REGPROCEDUREOID)) return nullptr;
  *agg = DatumGetObjectId(c->constvalue);
  HeapTuple tup = SearchSysCache1(AGGFNOID, ObjectIdGetDatum(*agg));
  if (!HeapTupleIsValid(tup)) return nullptr;
  Oid transfn = reinterpret_cast<Form_pg_aggregate>(GETSTRUCT(tup))->aggtransfn;
  ReleaseSysCache(tup);
  if (transfn != fcinfo->flinfo->fn_oid) return nullptr;
  Expr* e = static_cast<TargetEntry*>(lsecond(a->args))->expr;
  if (IsA(e, RowExpr)) {
    List* fields = reinterpret_cast<RowExpr*>(e)->args;
    e = argno - 1 < list_length(fields) ? static_cast<Expr*>(list_nth(fields, argno - 1)) : nullptr;
  } else if (argno != 1) {
    e = nullptr;
  }
  *arg = e;
  return a;
}

Oid call_arg_type(FunctionCallInfo fcinfo, int argno) {
  FmgrInfo* fl = fcinfo->flinfo;
  if (fl->fn_expr) return get_fn_expr_argtype(fl, argno);
  Oid t = declared_arg_type(fl->fn_oid, argno);
  if (OidIsValid(t)) return t;
  Oid agg;
  Expr* arg;
  if (!citus_partial_agg(fcinfo, argno, &agg, &arg)) return InvalidOid;
  return declared_arg_type(agg, argno - 1);
}

Oid call_arg_collation(FunctionCallInfo fcinfo, int argno) {
  Oid agg;
  Expr* arg = nullptr;
  // Citus passes several arguments as one ROW(...), which has no collation:
  // the argument's own expression has it.
  if (!fcinfo->flinfo->fn_expr && citus_partial_agg(fcinfo, argno, &agg, &arg) && arg)
    return exprCollation(reinterpret_cast<Node*>(arg));
  return PG_GET_COLLATION();
}

MemoryContext query_context(FunctionCallInfo fcinfo) {
  Node* ctx = fcinfo->context;
  if (ctx && IsA(ctx, AggState)) return reinterpret_cast<AggState*>(ctx)->ss.ps.state->es_query_cxt;
  if (ctx && IsA(ctx, WindowAggState)) return reinterpret_cast<WindowAggState*>(ctx)->ss.ps.state->es_query_cxt;
  return fcinfo->flinfo->fn_mcxt;
}

CallCache* call_cache(FunctionCallInfo fcinfo) {
  FmgrInfo* fl = fcinfo->flinfo;
  if (!fl->fn_extra) fl->fn_extra = MemoryContextAllocZero(fl->fn_mcxt, sizeof(CallCache));
  return static_cast<CallCache*>(fl->fn_extra);
}

KeyType* call_site_key_type(FunctionCallInfo fcinfo, int key_argno, MemoryContext aggcxt) {
  FmgrInfo* fl = fcinfo->flinfo;
  // fn_extra lasts as long as fn_mcxt: the query when nodeAgg calls us,
  // but only this call when Citus does (its FmgrInfo is made per row); then
  // the key type goes to the aggregate context, with the state.
  bool cached = fl->fn_expr != nullptr;
  if (cached && call_cache(fcinfo)->call_site_kt) return call_cache(fcinfo)->call_site_kt;
  Oid type = call_arg_type(fcinfo, key_argno);
  if (!OidIsValid(type))
    ereport(ERROR, (errcode(ERRCODE_FEATURE_NOT_SUPPORTED),
                    errmsg("spillagg: could not determine the key type"),
                    errhint("Called without an expression tree (e.g. by Citus), an aggregate must be one of "
                            "spillagg's overloads for a concrete key type; cast the key to one of them.")));
  MemoryContext cxt = cached ? fl->fn_mcxt : aggcxt;
  KeyType* kt = static_cast<KeyType*>(MemoryContextAllocZero(cxt, sizeof(KeyType)));
  kt->init(type, call_arg_collation(fcinfo, key_argno), cxt);
  if (cached) call_cache(fcinfo)->call_site_kt = kt;
  return kt;
}

}  // namespace spillagg
