#include "key_type.h"

#include <cstring>

#include "boundary.h"
#include "hash.h"

namespace spillagg {

// Asks the btree opclass whether equality implies identical images (what
// nbtree deduplication relies on).
static bool equality_is_bytewise(TypeCacheEntry* tc, Oid collation) {
  if (!OidIsValid(tc->btree_opf)) return false;
  Oid proc = get_opfamily_proc(tc->btree_opf, tc->btree_opintype, tc->btree_opintype,
                               BTEQUALIMAGE_PROC);
  if (!OidIsValid(proc)) return false;
  return DatumGetBool(OidFunctionCall1Coll(proc, collation, ObjectIdGetDatum(tc->type_id)));
}

void KeyType::init(Oid t, Oid coll, MemoryContext c) {
  type = t;
  collation = coll;
  cxt = c;
  TypeCacheEntry* tc = lookup_type_cache(
      t, TYPECACHE_EQ_OPR | TYPECACHE_HASH_PROC | TYPECACHE_HASH_EXTENDED_PROC |
             TYPECACHE_BTREE_OPFAMILY);
  Oid hash_proc = tc->hash_proc, hash_extended_proc = tc->hash_extended_proc;
  if (t == RECORDOID && !OidIsValid(hash_proc)) {
    // The type cache cannot vouch for the fields of an anonymous record;
    // hash_record raises a clean ERROR at run time if one is not hashable.
    hash_proc = F_HASH_RECORD;
    hash_extended_proc = F_HASH_RECORD_EXTENDED;
  }
  if (!OidIsValid(hash_proc) || !OidIsValid(tc->eq_opr))
    ereport(ERROR, (errcode(ERRCODE_UNDEFINED_FUNCTION),
                    errmsg("could not identify a hash function for type %s", format_type_be(t)),
                    errhint("spillagg keys need a type with a default hash operator class.")));
  typlen = tc->typlen;
  typbyval = tc->typbyval;
  if (type_is_collatable(t) && !OidIsValid(coll))
    ereport(ERROR, (errcode(ERRCODE_INDETERMINATE_COLLATION),
                    errmsg("could not determine which collation to use for keys of type %s",
                           format_type_be(t)),
                    errhint("Use the COLLATE clause to set the collation explicitly.")));
  // bpchar (and domains over it) is never "bytewise": its equality ignores
  // trailing blanks ('a' = 'a  '), yet btvarstrequalimage, the equalimage
  // proc of bpchar_ops, answers true for any deterministic collation in
  // upstream PostgreSQL (nbtree deduplication may merge 'a' and 'a ').
  // PostgreSQL 15 as Debian ships it (15.20) answers false for bpchar,
  // which hid this until PostgreSQL 18. Under a deterministic collation bpchar
  // equality is equality of the bytes without trailing blanks (bpchareq,
  // hashbpchar), compared and hashed here without calling PostgreSQL.
  bool is_bpchar = getBaseType(t) == BPCHAROID;
  bytewise = typlen != -2 && !is_bpchar && equality_is_bytewise(tc, coll);
  blank_padded = is_bpchar && get_collation_isdeterministic(coll);
  hash_extended = OidIsValid(hash_extended_proc);
#if PG_VERSION_NUM < 160000
  // PostgreSQL 15's hashbpcharextended hashes the trailing blanks under a
  // nondeterministic collation ('a' and 'a ' hash apart although equal);
  // its hashbpchar trims them, as 16 and later do in both.
  if (is_bpchar && !blank_padded) hash_extended = false;
#endif
  fmgr_info_cxt(get_opcode(tc->eq_opr), &eq_fn, c);
  fmgr_info_cxt(hash_extended ? hash_extended_proc : hash_proc, &hash_fn, c);
  Oid base = getBaseType(t);
  json_key_type = (base == BOOLOID || base == DATEOID || base == TIMESTAMPOID || base == TIMESTAMPTZOID)
                      ? base : InvalidOid;
  Oid out;
  bool varlena;
  getTypeOutputInfo(t, &out, &varlena);
  fmgr_info_cxt(out, &out_fn, c);
  scratch = nullptr;
  scratch_cap = 0;
  binary_io_ready = false;
}

KeyView KeyType::bytes_of(Datum d) {
  if (typbyval) {
    byval_buf = 0;
    store_att_byval(&byval_buf, d, typlen);
    return KeyView{reinterpret_cast<const uint8_t*>(&byval_buf), static_cast<uint32_t>(typlen)};
  }
  if (typlen > 0)
    return KeyView{reinterpret_cast<const uint8_t*>(DatumGetPointer(d)),
                   static_cast<uint32_t>(typlen)};
  if (typlen == -2) {
    const char* s = DatumGetCString(d);
    return KeyView{reinterpret_cast<const uint8_t*>(s), static_cast<uint32_t>(strlen(s) + 1)};
  }
  struct varlena* v = pg_detoast_datum_packed(reinterpret_cast<struct varlena*>(DatumGetPointer(d)));
  if (!VARATT_IS_SHORT(v))
    return KeyView{reinterpret_cast<const uint8_t*>(v), static_cast<uint32_t>(VARSIZE(v))};
  // Short (1-byte) header: rewrite with a 4-byte one so equal values have equal bytes.
  size_t payload = VARSIZE_SHORT(v) - VARHDRSZ_SHORT;
  if (payload + VARHDRSZ > scratch_cap) {
    size_t cap = Max(payload + VARHDRSZ, 2 * scratch_cap);
    if (scratch) pfree(scratch);
    scratch = static_cast<uint8*>(MemoryContextAlloc(cxt, Max(cap, 64)));
    scratch_cap = Max(cap, 64);
  }
  SET_VARSIZE(scratch, payload + VARHDRSZ);
  memcpy(VARDATA(scratch), VARDATA_SHORT(v), payload);
  return KeyView{scratch, static_cast<uint32_t>(payload + VARHDRSZ)};
}

// Payload length of a bpchar key (4-byte header) without trailing blanks.
static uint32 blank_trimmed_len(KeyView k) {
  uint32 n = k.len - VARHDRSZ;
  while (n > 0 && k.data[VARHDRSZ + n - 1] == ' ') n--;
  return n;
}

bool KeyType::equal_blank_padded(void*, KeyView a, KeyView b) {
  uint32 n = blank_trimmed_len(a);
  return n == blank_trimmed_len(b) && memcmp(a.data + VARHDRSZ, b.data + VARHDRSZ, n) == 0;
}

uint64 KeyType::hash_other(KeyView k) {
  if (blank_padded) return hash_bytes(k.data + VARHDRSZ, blank_trimmed_len(k));
  if (bytewise) return hash_bytes(k.data, k.len);
  Datum d = datum_of(k);
  if (hash_extended) return DatumGetUInt64(FunctionCall2Coll(&hash_fn, collation, d, UInt64GetDatum(0)));
  return mix64(DatumGetUInt32(FunctionCall1Coll(&hash_fn, collation, d)));
}

Datum KeyType::datum_of(KeyView k) const {
  if (!typbyval) return PointerGetDatum(k.data);
  uint64 v = 0;
  memcpy(&v, k.data, k.len);
  switch (typlen) {
    case 1: return CharGetDatum(static_cast<char>(v));
    case 2: return Int16GetDatum(static_cast<int16>(v));
    case 4: return Int32GetDatum(static_cast<int32>(v));
    default: return Int64GetDatum(static_cast<int64>(v));
  }
}

char* KeyType::output(KeyView k) {
  Datum d = datum_of(k);
  switch (json_key_type) {
    case BOOLOID: return pstrdup(DatumGetBool(d) ? "true" : "false");
    case DATEOID:
    case TIMESTAMPOID:
    case TIMESTAMPTZOID: return JsonEncodeDateTime(nullptr, d, json_key_type, nullptr);
    default: return OutputFunctionCall(&out_fn, d);
  }
}

void KeyType::init_binary_io() {
  if (binary_io_ready) return;
  Oid send, recv;
  bool varlena;
  getTypeBinaryOutputInfo(type, &send, &varlena);  // ERRORs if the type has none
  getTypeBinaryInputInfo(type, &recv, &recv_ioparam);
  fmgr_info_cxt(send, &send_fn, cxt);
  fmgr_info_cxt(recv, &recv_fn, cxt);
  integer_io = (type == INT2OID || type == INT4OID || type == INT8OID || type == OIDOID) && typbyval;
  binary_io_ready = true;
}

// Reverses n <= 8 bytes (little-endian image <-> network order).
static void reverse_bytes(const uint8* from, uint8* to, uint32 n) {
  for (uint32 i = 0; i < n; ++i) to[i] = from[n - 1 - i];
}

KeyView KeyType::send(KeyView k, uint8 (&scratch8)[8]) {
  init_binary_io();
  if (integer_io) {
    reverse_bytes(k.data, scratch8, k.len);
    return KeyView{scratch8, k.len};
  }
  bytea* b = SendFunctionCall(&send_fn, datum_of(k));
  return KeyView{reinterpret_cast<const uint8*>(VARDATA(b)), static_cast<uint32>(VARSIZE(b) - VARHDRSZ)};
}

KeyView KeyType::receive(const uint8* p, uint32 len) {
  init_binary_io();
  if (integer_io) {
    if (len != static_cast<uint32>(typlen))
      ereport(ERROR, (errcode(ERRCODE_INVALID_BINARY_REPRESENTATION),
                      errmsg("invalid spillagg state: malformed key of type %s", format_type_be(type))));
    byval_buf = 0;
    reverse_bytes(p, reinterpret_cast<uint8*>(&byval_buf), len);
    return KeyView{reinterpret_cast<const uint8*>(&byval_buf), len};
  }
  StringInfoData buf;
  buf.data = static_cast<char*>(palloc(len + 1));
  memcpy(buf.data, p, len);
  buf.data[len] = '\0';
  buf.len = static_cast<int>(len);
  buf.maxlen = static_cast<int>(len + 1);
  buf.cursor = 0;
  Datum d = ReceiveFunctionCall(&recv_fn, &buf, recv_ioparam, -1);
  if (buf.cursor != buf.len)
    ereport(ERROR, (errcode(ERRCODE_INVALID_BINARY_REPRESENTATION),
                    errmsg("invalid spillagg state: malformed key of type %s", format_type_be(type))));
  return bytes_of(d);
}

bool KeyType::equal(void* self, KeyView a, KeyView b) {
  KeyType* kt = static_cast<KeyType*>(self);
  bool eq = false;
  pg_call(CurrentMemoryContext, [&] {
    eq = DatumGetBool(FunctionCall2Coll(&kt->eq_fn, kt->collation, kt->datum_of(a), kt->datum_of(b)));
  });
  return eq;
}

}  // namespace spillagg
