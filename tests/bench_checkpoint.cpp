// bench_checkpoint: what the checksums of a checkpoint cost (not a test).
//
//   ./build/tests/bench_checkpoint [config.json] [rounds] [directory]
//
// Builds the config's model (default examples/configs/primer_ez.json, vocabulary 65
// as for Tiny Shakespeare) and its Adam state after one step: the tensors of its
// checkpoint's model.safetensors and optimizer.safetensors. Then
//  1. the time to checksum all their bytes with SHA-256 (datasets/sha256.h), with
//     CRC-32C by the SSE4.2 instruction where there is one, and by the table loop;
//  2. the time to save and to load both files with and without the checksums,
//     alternating the two in each round (so a machine busy with other work slows
//     both alike), as medians over the rounds.
// The files go to `directory` (default: the system's temporary directory).
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <string>
#include <string_view>
#include <vector>

#include "datasets/sha256.h"
#include "engine/crc32c.h"
#include "engine/ops.h"
#include "engine/safetensors.h"
#include "engine/timing.h"
#include "models/programs/config.h"
#include "models/families/language_model.h"
#include "models/blocks/optim.h"

using namespace loom;
using timing::Clock;
using timing::median;
using timing::seconds_since;

namespace {

template <class Fn>
double timed(Fn&& fn) {
  const auto start = Clock::now();
  fn();
  return seconds_since(start);
}

}  // namespace

int main(int argc, char** argv) {
  const std::string config_path =
      argc > 1 ? argv[1] : std::string(LOOM_SOURCE_ROOT) + "/examples/configs/primer_ez.json";
  const int rounds = argc > 2 ? std::stoi(argv[2]) : 5;
  const std::filesystem::path dir =
      std::filesystem::path(argc > 3 ? argv[3] : std::filesystem::temp_directory_path().string()) /
      "loom-bench-checkpoint";
  std::filesystem::create_directories(dir);

  models::TrainConfig config = models::load_train_config(config_path);
  config.model.vocab = 65;
  const std::unique_ptr<models::LanguageModel> model = models::make_model(config.model);
  models::Adam adam(model->named_parameters(), models::AdamOptions{}, models::LrSchedule::constant(1e-3));
  Generator gen(1);
  for (const Tensor& p : model->parameters()) p.set_grad(normal(p.shape(), 0, 1, gen));
  adam.step();
  NamedTensors model_tensors = model->named_parameters();
  for (auto& entry : model->named_buffers()) model_tensors.push_back(entry);
  const NamedTensors optimizer_tensors = adam.state_tensors();
  const NamedTensors* const both_files[] = {&model_tensors, &optimizer_tensors};

  size_t bytes = 0;
  for (const NamedTensors* list : both_files)
    for (const auto& [name, t] : *list) bytes += static_cast<size_t>(t.numel()) * dtype_size(t.dtype());
  std::printf("%s: %zu tensors, %.1f MB (model and optimizer files), %d rounds\n", config_path.c_str(),
              model_tensors.size() + optimizer_tensors.size(), bytes / 1e6, rounds);

  // 1. The checksums alone, over every tensor as the writer computes them.
  std::vector<double> sha256(rounds), crc_best(rounds), crc_table(rounds);
  volatile size_t sink = 0;
  for (int r = 0; r < rounds; ++r)
    for (const NamedTensors* list : both_files)
      for (const auto& [name, t] : *list) {
        const size_t n = static_cast<size_t>(t.numel()) * dtype_size(t.dtype());
        const std::string_view view(static_cast<const char*>(t.raw_data()), n);
        sha256[r] += timed([&] { sink = sink + datasets::sha256_hex(view).size(); });
        crc_best[r] += timed([&] { sink = sink + crc32c(view.data(), n); });
        crc_table[r] += timed([&] { sink = sink + detail::crc32c_portable(view.data(), n); });
      }
  std::printf("checksums of all tensors, median: SHA-256 %.3f s, CRC-32C %.3f s (instruction where the CPU has it), "
              "CRC-32C table %.3f s\n",
              median(sha256), median(crc_best), median(crc_table));

  // 2. Save and load of both files, with and without checksums, alternating.
  std::vector<double> save_with, save_without, load_with, load_without;
  const std::string model_file = (dir / "model.safetensors").string();
  const std::string optimizer_file = (dir / "optimizer.safetensors").string();
  for (int r = 0; r < rounds; ++r)
    for (const bool checksums : {r % 2 == 0, r % 2 != 0}) {
      const double save = timed([&] {
        save_safetensors(model_file, model_tensors, {{"format", "loom"}}, checksums);
        save_safetensors(optimizer_file, optimizer_tensors, {{"format", "loom"}}, checksums);
      });
      const double load = timed([&] {
        if (read_safetensors(model_file).checksummed != checksums) std::abort();
        if (read_safetensors(optimizer_file).checksummed != checksums) std::abort();
      });
      (checksums ? save_with : save_without).push_back(save);
      (checksums ? load_with : load_without).push_back(load);
    }
  std::printf("save, median: %.3f s with checksums, %.3f s without\n", median(save_with), median(save_without));
  std::printf("load, median: %.3f s with checksums (verified), %.3f s without\n", median(load_with),
              median(load_without));
  std::filesystem::remove_all(dir);
  return 0;
}
