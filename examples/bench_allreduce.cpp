// bench_allreduce: the time of one gradient all-reduce over MPI, without training.
//
//   mpirun -np 2 ./build/examples/bench_allreduce [--bytes B ...] [--repeats R]
//
// For each buffer size (float32; default: the flat gradients of bigram,
// primer_ez_small and primer_ez), all ranks meet at a barrier, then time R
// in-place sum all-reduces one after another; rank 0 prints the median time per
// call and the bus bandwidth, 2 (N - 1) / N x bytes / time (what each rank sends
// and receives in a ring all-reduce, the figure NCCL's tests print too). Inside
// `train` the same call also waits for the slowest rank's backward; this
// measures the collective alone.
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <vector>

#include "engine/comm/comm.h"
#include "engine/error.h"
#include "examples/command_line.h"
#include "engine/tensor.h"

using namespace loom;

int main(int argc, char** argv) {
  try {
    std::vector<int64_t> sizes;
    int repeats = 50;
    examples::CommandLine cli(
        "bench_allreduce",
        "the time of one gradient all-reduce over MPI, without training. For each buffer size all ranks meet at a "
        "barrier, then time R in-place float32 sum all-reduces; rank 0 prints the median time per call and the bus "
        "bandwidth 2 (N - 1) / N x bytes / time to stdout (nothing is written to disk). Start it with mpirun.",
        "mpirun -np 2 ./build/examples/bench_allreduce --bytes 1657092 --repeats 20");
    cli.option("--bytes", "B", "the flat gradients of bigram, primer_ez_small and primer_ez",
               "a buffer size in bytes; give it several times for several sizes.",
               [&](const auto& v) { sizes.push_back(v.positive_integer()); });
    cli.option("--repeats", "R", "50", "timed all-reduces per size.",
               [&](const auto& v) { repeats = static_cast<int>(v.positive_integer()); });
    if (cli.parse(argc, argv).exit) return 0;
    // 4 bytes x parameters: bigram 8,385; primer_ez_small 414,273; primer_ez at labml's size 18,986,561 (models/FAMILIES.md).
    if (sizes.empty()) sizes = {4 * 8385, 4 * 414273, 4 * 18986561};
    LOOM_CHECK(comm::launch_from_environment().launched, "start it with mpirun -np N");
    std::unique_ptr<comm::Communicator> world = comm::make_mpi_communicator();
    const int n = world->size();
    if (world->rank() == 0)
      std::printf("%d ranks, %d all-reduces per size (median)\n%12s %12s %14s\n", n, repeats, "bytes", "ms/call",
                  "bus GB/s");
    for (const int64_t bytes : sizes) {
      const Tensor buffer = Tensor::ones({std::max<int64_t>(1, bytes / 4)});
      std::vector<double> seconds;
      world->all_reduce_sum(buffer);  // warm-up: connections, pinned pages
      for (int r = 0; r < repeats; ++r) {
        world->barrier();
        const auto start = std::chrono::steady_clock::now();
        world->all_reduce_sum(buffer);
        seconds.push_back(std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count());
      }
      std::sort(seconds.begin(), seconds.end());
      const double median = seconds[seconds.size() / 2];
      if (world->rank() == 0)
        std::printf("%12lld %12.3f %14.2f\n", (long long)bytes, median * 1e3,
                    2.0 * (n - 1) / n * static_cast<double>(bytes) / median / 1e9);
    }
    return 0;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "error: %s\n", e.what());
    return 1;
  }
}
