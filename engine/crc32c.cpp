#include "engine/crc32c.h"

#include <array>
#include <cstdio>
#include <cstring>

#if defined(__x86_64__)
#include <nmmintrin.h>
#endif

namespace loom {

namespace {

constexpr uint32_t kReflectedPolynomial = 0x82F63B78;

// tables[k][b]: the CRC of byte b followed by k zero bytes, so that eight bytes
// are folded with eight lookups (slicing by 8).
using Tables = std::array<std::array<uint32_t, 256>, 8>;

constexpr Tables make_tables() {
  Tables t{};
  for (uint32_t b = 0; b < 256; ++b) {
    uint32_t crc = b;
    for (int bit = 0; bit < 8; ++bit) crc = crc & 1 ? (crc >> 1) ^ kReflectedPolynomial : crc >> 1;
    t[0][b] = crc;
  }
  for (int k = 1; k < 8; ++k)
    for (uint32_t b = 0; b < 256; ++b) t[k][b] = (t[k - 1][b] >> 8) ^ t[0][t[k - 1][b] & 0xFF];
  return t;
}

constexpr Tables kTables = make_tables();

uint32_t update_portable(uint32_t crc, const unsigned char* p, size_t n) {
  for (; n >= 8; p += 8, n -= 8) {
    uint64_t word;
    std::memcpy(&word, p, 8);  // little-endian hosts only, as the safetensors reader
    word ^= crc;
    crc = kTables[7][word & 0xFF] ^ kTables[6][(word >> 8) & 0xFF] ^ kTables[5][(word >> 16) & 0xFF] ^
          kTables[4][(word >> 24) & 0xFF] ^ kTables[3][(word >> 32) & 0xFF] ^ kTables[2][(word >> 40) & 0xFF] ^
          kTables[1][(word >> 48) & 0xFF] ^ kTables[0][word >> 56];
  }
  for (; n > 0; ++p, --n) crc = (crc >> 8) ^ kTables[0][(crc ^ *p) & 0xFF];
  return crc;
}

#if defined(__x86_64__)
__attribute__((target("sse4.2"))) uint32_t update_sse42(uint32_t crc, const unsigned char* p, size_t n) {
  uint64_t wide = crc;
  for (; n >= 8; p += 8, n -= 8) {
    uint64_t word;
    std::memcpy(&word, p, 8);
    wide = _mm_crc32_u64(wide, word);
  }
  crc = static_cast<uint32_t>(wide);
  for (; n > 0; ++p, --n) crc = _mm_crc32_u8(crc, *p);
  return crc;
}

const bool kHaveSse42 = __builtin_cpu_supports("sse4.2");
#endif

}  // namespace

namespace detail {
uint32_t crc32c_portable(const void* data, size_t bytes) {
  return ~update_portable(0xFFFFFFFFu, static_cast<const unsigned char*>(data), bytes);
}
}  // namespace detail

uint32_t crc32c(const void* data, size_t bytes) {
#if defined(__x86_64__)
  if (kHaveSse42) return ~update_sse42(0xFFFFFFFFu, static_cast<const unsigned char*>(data), bytes);
#endif
  return detail::crc32c_portable(data, bytes);
}

std::string crc32c_hex(const void* data, size_t bytes) {
  char text[9];
  std::snprintf(text, sizeof text, "%08x", crc32c(data, bytes));
  return text;
}

}  // namespace loom
