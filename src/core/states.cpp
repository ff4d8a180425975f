#include "states.h"

#include <cstring>

namespace spillagg {

// Writes the decimal digits of the little-endian words (destroying them),
// with a leading '-' if negative.
static void words_to_decimal(uint64_t* w, int n, bool negative, char (&out)[kDecimalBuf]) {
  char rev[kDecimalBuf];
  size_t len = 0;
  bool nonzero;
  do {
    unsigned __int128 rem = 0;
    nonzero = false;
    for (int i = n - 1; i >= 0; --i) {  // w /= 10, rem = w % 10
      unsigned __int128 cur = (rem << 64) | w[i];
      w[i] = static_cast<uint64_t>(cur / 10);
      rem = cur % 10;
      nonzero |= w[i] != 0;
    }
    rev[len++] = static_cast<char>('0' + static_cast<int>(rem));
  } while (nonzero);
  size_t o = 0;
  if (negative) out[o++] = '-';
  while (len > 0) out[o++] = rev[--len];
  out[o] = '\0';
}

void to_decimal(__int128 v, char (&out)[kDecimalBuf]) {
  unsigned __int128 a = v < 0 ? -static_cast<unsigned __int128>(v) : static_cast<unsigned __int128>(v);
  uint64_t w[2] = {static_cast<uint64_t>(a), static_cast<uint64_t>(a >> 64)};
  words_to_decimal(w, 2, v < 0, out);
}

void to_decimal(const U192& v, char (&out)[kDecimalBuf]) {
  uint64_t w[3] = {v.w[0], v.w[1], v.w[2]};
  words_to_decimal(w, 3, false, out);
}

}  // namespace spillagg
