// spillagg_state values in memory: a live aggregate state (KeyedAgg) as a
// PostgreSQL expanded object (utils/expandeddatum.h).
//
// Every aggregate's transition type is spillagg_state. While an aggregate
// runs, its transition value is a read-write expanded datum whose header
// (StateObject, inside the KeyedAgg) names as its context an empty slab
// context, a child of the aggregate context, so nodeAgg
// (ExecAggTransReparent) and Citus (HandleTransition) keep it in place
// instead of copying it. The header and the KeyedAgg live in the aggregate
// context, with the budget and the shutdown callback as before: whoever
// deletes or takes over the object's context (DeleteExpandedObject,
// TransferExpandedObject) frees nothing of the state. Under nodeAgg the
// states of one aggregate context share that context (attach_object). Bytes are produced only when PostgreSQL asks for them
// (get_flat_size / flatten_into): storing the value, a tuple queue of
// parallel query, the type's output function (Citus's worker_partial_agg).
// The flat form is the serialized state of stored_state.h with portable keys.
//
// Every SQL-callable function that takes a spillagg_state reads it through
// state_arg(): NULL, a flat varlena (parsed and checked), or an expanded
// object that is verifiably ours (its methods pointer and magic). Nothing
// else is ever read as a pointer.
#pragma once

#include "postgres_api.h"

extern "C" {
#include "utils/expandeddatum.h"
}

namespace spillagg {

struct KeyedAggHeader;
struct KeyType;

// What a support function keeps in fn_extra: the call site's key type and
// the key type of the stored states it reads.
struct CallCache {
  KeyType* call_site_kt;
  MemoryContext stored_cxt;
  KeyType* stored_kt;
  // Object contexts shared by the states this function makes in one
  // aggregate context (expanded_state.cpp), cleared when deleted.
  struct SharedObjectContext {
    MemoryContext aggcxt;
    MemoryContext cxt;
  } shared[4];
};
CallCache* call_cache(FunctionCallInfo fcinfo);

// The key type of the aggregate call site (argument key_argno). Cached in
// fn_extra when nodeAgg calls; without an expression tree (Citus) it is
// made in aggcxt, to live as long as the state made with it.
KeyType* call_site_key_type(FunctionCallInfo fcinfo, int key_argno, MemoryContext aggcxt);

// The expanded-object header of a live state, inside its KeyedAggHeader.
struct StateObject {
  ExpandedObjectHeader hdr;  // first: the object's address is the header's
  bytea* flat;               // flat image between get_flat_size and flatten_into
};

// Wraps a new live state in an expanded object whose context is a child of
// aggcxt. PostgreSQL ERRORs only.
void attach_object(FunctionCallInfo fcinfo, KeyedAggHeader* agg, MemoryContext aggcxt);

// The read-write datum of a live state (what transition functions return).
Datum state_datum(KeyedAggHeader* agg);

// The live state argument argno if it is our read-write expanded object
// (the transition value nodeAgg hands back), else nullptr. Drops any flat
// image cached for it, since the caller is about to change it.
KeyedAggHeader* writable_state(FunctionCallInfo fcinfo, int argno);

// Any spillagg_state argument: nullptr for NULL; our expanded object (read
// only or read-write) as its live state; a flat value parsed (header checked
// here, records as they are read).
KeyedAggHeader* state_arg(FunctionCallInfo fcinfo, int argno);

// The serialized bytes of a live state (portable keys), in the current
// memory context. The state is not consumed.
bytea* flatten_state(KeyedAggHeader* agg);

// The type of argument argno as the call site sees it. Without an
// expression tree (Citus's worker_partial_agg calls the transition
// function through an FmgrInfo of its own), it is the declared type of the
// matching argument of the aggregate that Citus names in its first
// argument, provided that aggregate's transition function is this function
// and the type is not polymorphic (Citus has checked the actual argument
// type against it). InvalidOid if it cannot be determined.
Oid call_arg_type(FunctionCallInfo fcinfo, int argno);

// The executor's per-query memory context of an aggregate support call
// (the key of its QueryBudget).
MemoryContext query_context(FunctionCallInfo fcinfo);

}  // namespace spillagg
