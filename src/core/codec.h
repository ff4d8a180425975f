// Byte encoding shared by spill runs and serialized states: little-endian
// fixed-width words and LEB128 varints, buffered over a sink or source.
#pragma once

#include <cstddef>
#include <cstdint>
#include <cstring>
#include <stdexcept>

#include "memory.h"

namespace spillagg {

// Raised for a truncated or malformed encoding (spilled run or input state).
class CorruptData : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

class ByteSink {
 public:
  virtual void write(const void* p, size_t n) = 0;

 protected:
  ~ByteSink() = default;
};

class ByteSource {
 public:
  // Reads up to n bytes; returns fewer only at the end of the data.
  virtual size_t read(void* p, size_t n) = 0;

 protected:
  ~ByteSource() = default;
};

// Buffered writer. The buffer is caller-provided so it can live in PostgreSQL
// memory; flush() must be called at the end.
class Writer {
 public:
  Writer(ByteSink* sink, uint8_t* buf, size_t cap) : sink_(sink), buf_(buf), cap_(cap) {}

  void bytes(const void* p, size_t n) {
    if (n == 0) return;
    if (n > cap_ - len_) {
      flush();
      if (n > cap_) {
        sink_->write(p, n);
        return;
      }
    }
    std::memcpy(buf_ + len_, p, n);
    len_ += n;
  }
  template <class T>
  void fixed(T v) {  // little-endian hosts only (x86-64, aarch64), checked below
    bytes(&v, sizeof v);
  }
  void varint(uint64_t v) {
    uint8_t tmp[10];
    size_t n = 0;
    do {
      uint8_t b = v & 0x7f;
      v >>= 7;
      tmp[n++] = b | (v ? 0x80 : 0);
    } while (v);
    bytes(tmp, n);
  }
  void svarint(int64_t v) {  // zig-zag, so small negatives stay short
    varint((static_cast<uint64_t>(v) << 1) ^ static_cast<uint64_t>(v >> 63));
  }
  void flush() {
    if (len_) sink_->write(buf_, len_);
    len_ = 0;
  }
  size_t buffered() const { return len_; }

 private:
  ByteSink* sink_;
  uint8_t* buf_;
  size_t cap_;
  size_t len_ = 0;
};

// Reader over a byte range held in memory (a serialized state, or the
// refilled window of a RunReader). Every read is bounds-checked.
class Reader {
 public:
  Reader(const uint8_t* p, size_t n) : p_(p), end_(p + n) {}

  size_t remaining() const { return static_cast<size_t>(end_ - p_); }
  const uint8_t* position() const { return p_; }

  const uint8_t* take(size_t n) {
    if (n > remaining()) throw CorruptData("truncated data");
    const uint8_t* r = p_;
    p_ += n;
    return r;
  }
  template <class T>
  T fixed() {
    T v;
    std::memcpy(&v, take(sizeof v), sizeof v);
    return v;
  }
  uint64_t varint() {
    uint64_t v = 0;
    for (int shift = 0; shift < 64; shift += 7) {
      uint8_t b = *take(1);
      if (shift == 63 && b > 1) throw CorruptData("varint overflow");
      v |= static_cast<uint64_t>(b & 0x7f) << shift;
      if (!(b & 0x80)) return v;
    }
    throw CorruptData("varint too long");
  }
  int64_t svarint() {
    uint64_t u = varint();
    return static_cast<int64_t>((u >> 1) ^ (~(u & 1) + 1));
  }

 private:
  const uint8_t* p_;
  const uint8_t* end_;
};

static_assert(__BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__, "spill format assumes little-endian");

}  // namespace spillagg
