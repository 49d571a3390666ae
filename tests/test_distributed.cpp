// Data parallelism's pure parts (models/programs/distributed.h). The collectives themselves
// run in the `mpi` suite (tests/test_mpi.sh), under mpirun against one process.
#include <doctest/doctest.h>

#include <algorithm>
#include <cstdlib>
#include <set>
#include <string>
#include <vector>

#include "engine/comm/comm.h"
#include "models/programs/distributed.h"
#include "tests/test_util.h"

using namespace loom;

TEST_CASE("batch_slice: the ranks' slices tile the batch in order, rank 0 the widest") {
  for (int64_t columns : {0, 1, 2, 5, 8, 31, 32, 33})
    for (int size : {1, 2, 3, 4, 7}) {
      CAPTURE(columns);
      CAPTURE(size);
      int64_t next = 0, widest = 0, narrowest = columns + 1;
      for (int rank = 0; rank < size; ++rank) {
        const auto [begin, end] = models::batch_slice(columns, rank, size);
        CHECK(begin == next);  // contiguous, in rank order, no gap or overlap
        CHECK(end >= begin);
        next = end;
        widest = std::max(widest, end - begin);
        narrowest = std::min(narrowest, end - begin);
        if (rank == 0) CHECK(end - begin == (columns + size - 1) / size);  // ceil: rank 0 is never narrower
      }
      CHECK(next == columns);
      CHECK(widest - narrowest <= 1);
    }
}

TEST_CASE("dropout_seed_for_rank: rank 0 keeps the model's seed, every rank its own key") {
  for (uint64_t seed : {uint64_t{0}, uint64_t{1}, ~uint64_t{0}}) {
    CHECK(models::dropout_seed_for_rank(seed, 0) == seed);
    std::set<uint64_t> keys;
    for (int rank = 0; rank < 1024; ++rank) keys.insert(models::dropout_seed_for_rank(seed, rank));
    CHECK(keys.size() == 1024);
  }
}

TEST_CASE("visible_device_for_rank: one GPU per rank, picked by the local rank") {
  comm::Launch alone;
  alone.launched = true;
  CHECK(comm::visible_device_for_rank(alone, nullptr).empty());  // one rank here: leave it
  CHECK(comm::visible_device_for_rank(alone, "0,1").empty());
  comm::Launch second;
  second.launched = true;
  second.size = 4;
  second.rank = 3;
  second.local_rank = 1;
  second.local_size = 2;
  CHECK(comm::visible_device_for_rank(second, nullptr) == "1");
  CHECK(comm::visible_device_for_rank(second, "") == "1");
  CHECK(comm::visible_device_for_rank(second, "4,5,6") == "5");
  CHECK(comm::visible_device_for_rank(second, "GPU-aa,GPU-bb") == "GPU-bb");
  CHECK(comm::visible_device_for_rank(second, "7").empty());  // the launcher chose this rank's GPU
  comm::Launch third = second;
  third.local_rank = 2;
  third.local_size = 3;
  test::check_mentions(test::error_of([&] { comm::visible_device_for_rank(third, "4,5"); }),
                 {"CUDA_VISIBLE_DEVICES=4,5", "2 devices", "3 ranks", "local rank 2"});
}

TEST_CASE("launch_from_environment reads OpenMPI's and PMI's variables") {
  // Restores the variables this test sets, whatever they were.
  struct Saved {
    std::string name;
    bool had;
    std::string value;
  };
  std::vector<Saved> saved;
  for (const char* name : {"OMPI_COMM_WORLD_SIZE", "OMPI_COMM_WORLD_RANK", "OMPI_COMM_WORLD_LOCAL_RANK",
                           "OMPI_COMM_WORLD_LOCAL_SIZE", "PMI_SIZE", "PMI_RANK", "PMIX_SIZE", "PMIX_RANK",
                           "MPI_LOCALNRANKS", "MPI_LOCALRANKID"}) {
    const char* v = std::getenv(name);
    saved.push_back({name, v != nullptr, v ? v : ""});
    ::unsetenv(name);
  }
  CHECK_FALSE(comm::launch_from_environment().launched);
  ::setenv("OMPI_COMM_WORLD_SIZE", "4", 1);
  ::setenv("OMPI_COMM_WORLD_RANK", "3", 1);
  ::setenv("OMPI_COMM_WORLD_LOCAL_RANK", "1", 1);
  ::setenv("OMPI_COMM_WORLD_LOCAL_SIZE", "2", 1);
  comm::Launch l = comm::launch_from_environment();
  CHECK(l.launched);
  CHECK(l.size == 4);
  CHECK(l.rank == 3);
  CHECK(l.local_rank == 1);
  CHECK(l.local_size == 2);
  for (const char* name : {"OMPI_COMM_WORLD_SIZE", "OMPI_COMM_WORLD_RANK", "OMPI_COMM_WORLD_LOCAL_RANK",
                           "OMPI_COMM_WORLD_LOCAL_SIZE"})
    ::unsetenv(name);
  ::setenv("PMI_SIZE", "2", 1);
  ::setenv("PMI_RANK", "1", 1);
  l = comm::launch_from_environment();
  CHECK(l.launched);
  CHECK(l.size == 2);
  CHECK(l.rank == 1);
  CHECK(l.local_rank == 1);  // no local variables: the world's
  ::setenv("PMI_RANK", "x", 1);  // not a number: not launched
  CHECK_FALSE(comm::launch_from_environment().launched);
  for (const Saved& s : saved) {
    if (s.had) ::setenv(s.name.c_str(), s.value.c_str(), 1);
    else ::unsetenv(s.name.c_str());
  }
}
