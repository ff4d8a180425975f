// 64-bit hashing of key images (the bytes of keys whose equality is bytewise).
// Keys with a type-specific equality are hashed by PostgreSQL's own hash
// support function instead; see src/pg/key_type.cpp.
#pragma once

#include <cstddef>
#include <cstdint>
#include <cstring>

namespace spillagg {

// Finaliser of MurmurHash3: a bijective mix, so distinct 8-byte keys never collide.
inline uint64_t mix64(uint64_t x) {
  x ^= x >> 33;
  x *= 0xff51afd7ed558ccdULL;
  x ^= x >> 33;
  x *= 0xc4ceb9fe1a85ec53ULL;
  x ^= x >> 33;
  return x;
}

inline uint64_t load64(const uint8_t* p) {
  uint64_t v;
  std::memcpy(&v, p, 8);
  return v;
}

// The first len (<= 8) bytes at p as a zero-padded word: the image of an
// inline key. The common lengths are single loads, not a memcpy call.
inline uint64_t load_padded(const uint8_t* p, size_t len) {
  uint64_t v = 0;
  switch (len) {
    case 8: std::memcpy(&v, p, 8); break;
    case 4: { uint32_t w; std::memcpy(&w, p, 4); v = w; break; }
    case 2: { uint16_t w; std::memcpy(&w, p, 2); v = w; break; }
    case 1: v = p[0]; break;
    default: for (size_t i = 0; i < len; ++i) v |= uint64_t{p[i]} << (8 * i);  // (little-endian)
  }
  return v;
}

// The hash of an inline key (at most 8 bytes, bytewise equality).
inline uint64_t inline_key_hash(const uint8_t* p, size_t len) { return mix64(load_padded(p, len)); }

// Multiply-fold of two words (the core of wyhash-style hashes).
inline uint64_t fold_mul(uint64_t a, uint64_t b) {
  __uint128_t r = static_cast<__uint128_t>(a) * b;
  return static_cast<uint64_t>(r) ^ static_cast<uint64_t>(r >> 64);
}

// Hash of an arbitrary byte string; reads 8 bytes at a time.
inline uint64_t hash_bytes(const uint8_t* p, size_t n) {
  const uint64_t k0 = 0xa0761d6478bd642fULL, k1 = 0xe7037ed1a0b428dbULL,
                 k2 = 0x8ebc6af09c88c6e3ULL;
  uint64_t h = k0 ^ (n * k1);
  while (n >= 16) {
    h = fold_mul(load64(p) ^ k1, load64(p + 8) ^ h);
    p += 16;
    n -= 16;
  }
  uint64_t a = 0, b = 0;
  if (n >= 8) {
    a = load64(p);
    b = load64(p + n - 8);  // overlapping tail read stays in bounds
  } else if (n > 0) {
    uint8_t tail[8] = {0};
    std::memcpy(tail, p, n);
    a = load64(tail);
  }
  return mix64(fold_mul(a ^ k2, b ^ h) ^ n);
}

}  // namespace spillagg
