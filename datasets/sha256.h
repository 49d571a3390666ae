// sha256.h: SHA-256 (FIPS 180-4), to check that a data file is the one expected.
//
// A plain, byte-at-a-time implementation: it hashes Tiny Shakespeare (1.1 MB) in
// a few milliseconds, and loom needs no crypto library for it.
#pragma once

#include <string>
#include <string_view>

namespace loom::datasets {

// The digest of `bytes` as 64 lowercase hex digits, as `sha256sum` prints it.
std::string sha256_hex(std::string_view bytes);

}  // namespace loom::datasets
