// crc32c.h: CRC-32C (Castagnoli), the checksum of the tensors in a safetensors file.
//
// The polynomial 0x1EDC6F41 (reflected 0x82F63B78), initial value and final XOR
// 0xFFFFFFFF, as in iSCSI, ext4 and SSE4.2's crc32 instruction; crc32c("123456789")
// is 0xE3069283. It detects every single-bit error and every burst of up to 32
// flipped bits in a block, which is what storage and copies do to files; it is
// no defence against deliberate tampering.
//
// On x86-64 CPUs with SSE4.2 the crc32 instruction computes it (chosen at run
// time); elsewhere a table-driven loop (slicing by 8) does.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>

namespace loom {

// The CRC-32C of `bytes` bytes at `data`.
uint32_t crc32c(const void* data, size_t bytes);

// As 8 lowercase hex digits, most significant first ("e3069283").
std::string crc32c_hex(const void* data, size_t bytes);

namespace detail {
// The table-driven loop alone, whatever the CPU (the tests compare it with the instruction).
uint32_t crc32c_portable(const void* data, size_t bytes);
}  // namespace detail

}  // namespace loom
