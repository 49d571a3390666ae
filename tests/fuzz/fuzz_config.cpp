// fuzz_config.cpp: libFuzzer target for the config parser (models/programs/config.h).
//
// Any input must parse or throw loom::Error; a config that parses must survive
// to_json and parse back to the same JSON.
#include <cstdint>
#include <cstdlib>
#include <string>

#include "engine/error.h"
#include "models/programs/config.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string text(reinterpret_cast<const char*>(data), size);
  try {
    const loom::models::TrainConfig config = loom::models::parse_train_config(text, "fuzz");
    const std::string once = loom::models::to_json(config);
    if (loom::models::to_json(loom::models::parse_train_config(once, "round trip")) != once) std::abort();
  } catch (const loom::Error&) {
  }
  return 0;
}
