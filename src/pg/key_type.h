// How keys of one SQL type become bytes, hashes and text (per call site).
//
// Equality is the type's own. When the type's default btree opclass says
// equal values have identical images (its "equalimage" support function:
// integers, uuid, text under a deterministic collation, ...) keys are hashed
// and compared as bytes, and by-value keys are stored inline in the table.
// bpchar under a deterministic collation is compared and hashed as its bytes
// without trailing blanks (what bpchareq/hashbpchar do), also without calling
// PostgreSQL. Otherwise (numeric, float, interval, nondeterministic
// collations, records, arrays...) the type's hash and equality functions are
// called.
//
// Key bytes: by-value types their typlen bytes; fixed-length by-reference
// types their typlen bytes; varlena types the detoasted value with a 4-byte
// header, so the bytes are themselves a valid, aligned Datum.
#pragma once

#include "postgres_api.h"

#include "hash.h"
#include "keyed_table.h"

namespace spillagg {

struct KeyType {
  Oid type;
  Oid collation;
  int16 typlen;
  bool typbyval;
  bool bytewise;
  bool blank_padded;  // bpchar, deterministic collation: bytes minus trailing blanks
  bool hash_extended;
  FmgrInfo eq_fn;
  FmgrInfo hash_fn;
  FmgrInfo out_fn;
  Oid json_key_type;   // base type if bool/date/timestamp[tz] (jsonb_object_agg's key style)
  uint64 byval_buf;    // bytes of the current by-value key
  uint8* scratch;      // bytes of the current short-header varlena key
  size_t scratch_cap;
  MemoryContext cxt;   // lives as long as the query
  bool binary_io_ready;
  // smallint, integer, bigint, oid: the send format is the value's bytes in
  // network order, and receive accepts any such bytes, so both are a byte
  // swap here (keys of partial states cross processes by the million).
  bool integer_io;
  FmgrInfo send_fn;
  FmgrInfo recv_fn;
  Oid recv_ioparam;

  // May raise a PostgreSQL ERROR (type without hash opclass).
  void init(Oid type, Oid collation, MemoryContext cxt);

  bool inline_keys() const { return bytewise && typbyval; }
  KeyEquality equality() {
    return KeyEquality{bytewise ? nullptr : blank_padded ? &equal_blank_padded : &equal, this};
  }

  // These call PostgreSQL directly: use them outside run_core.
  KeyView bytes_of(Datum d);  // valid until the next call
  uint64 hash(KeyView k) { return inline_keys() ? hash_inline(k) : hash_other(k); }
  // For a table of this type's keys: the hash from the key's bytes, if
  // that needs no PostgreSQL call (SpillingTable then leaves it out of runs).
  Rehash rehash() const { return inline_keys() ? &hash_inline : nullptr; }
  Datum datum_of(KeyView k) const;  // k must be 8-byte aligned
  // The key as a JSON object key: as jsonb_object_agg makes it (true/false,
  // ISO 8601 dates and timestamps), otherwise the type's text output.
  char* output(KeyView k);
  // The key in its type's binary send format (in `scratch8` for integers,
  // else palloc'd in the current context), and back through the type's
  // receive function (which validates untrusted bytes; valid until the
  // next call). PostgreSQL ERRORs.
  KeyView send(KeyView k, uint8 (&scratch8)[8]);
  KeyView receive(const uint8* p, uint32 len);

 private:
  uint64 hash_other(KeyView k);  // keys that are not inline
  static uint64 hash_inline(KeyView k) { return inline_key_hash(k.data, k.len); }
  static bool equal(void* self, KeyView a, KeyView b);  // through pg_call
  static bool equal_blank_padded(void* self, KeyView a, KeyView b);  // no PostgreSQL call
  void init_binary_io();
};

}  // namespace spillagg
