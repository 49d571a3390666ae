// mpi_tool: the checks of tests/test_mpi.sh, which compares data-parallel runs of
// `train` under mpirun with one process.
//
//   mpi_tool loopback-up                           bring the loopback interface up if it is down
//   mpi_tool losses A.jsonl B.jsonl FIRST LAST TOL  per-step losses of two metrics logs agree
//   mpi_tool checkpoints DIR_A DIR_B TOL            two checkpoints hold the same tensors
//
// loopback-up: a fresh network namespace (`unshare -n`, as CI runs the tests)
// has its loopback interface down, and OpenMPI's runtime (PMIx) will not start
// without an interface; the namespace's root may bring it up, nobody else is
// touched. TOL 0 means bit-identical. Exit status 0 when the check holds, 1 with
// the differences listed otherwise.
#include <net/if.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <map>
#include <nlohmann/json.hpp>
#include <string>

#include "engine/safetensors.h"
#include "models/programs/checkpoint.h"

namespace {

int loopback_up() {
  const int fd = ::socket(AF_INET, SOCK_DGRAM, 0);
  if (fd < 0) return std::fprintf(stderr, "loopback-up: socket: %s\n", std::strerror(errno)), 1;
  struct ifreq request = {};
  std::strncpy(request.ifr_name, "lo", IFNAMSIZ - 1);
  if (::ioctl(fd, SIOCGIFFLAGS, &request) != 0)
    return std::fprintf(stderr, "loopback-up: no interface 'lo': %s\n", std::strerror(errno)), 1;
  if (request.ifr_flags & IFF_UP) return 0;
  request.ifr_flags |= IFF_UP;
  if (::ioctl(fd, SIOCSIFFLAGS, &request) != 0)
    return std::fprintf(stderr, "loopback-up: 'lo' is down and cannot be brought up: %s\n", std::strerror(errno)), 1;
  std::printf("the loopback interface was down (a fresh network namespace): brought it up for mpirun\n");
  return 0;
}

// step -> loss; a later line of the same step replaces an earlier one (a resumed log).
std::map<long long, double> read_losses(const std::string& path) {
  std::ifstream in(path);
  if (!in) throw std::runtime_error("cannot read " + path);
  std::map<long long, double> losses;
  std::string line;
  while (std::getline(in, line)) {
    const nlohmann::json entry = nlohmann::json::parse(line);
    if (entry.contains("step") && entry.contains("loss")) losses[entry["step"].get<long long>()] = entry["loss"].get<double>();
  }
  return losses;
}

int compare_losses(const std::string& a, const std::string& b, long long first, long long last, double tol) {
  const auto la = read_losses(a), lb = read_losses(b);
  int bad = 0;
  double worst = 0;
  for (long long step = first; step <= last; ++step) {
    const auto ia = la.find(step), ib = lb.find(step);
    if (ia == la.end() || ib == lb.end()) {
      std::fprintf(stderr, "step %lld: no loss in %s\n", step, ia == la.end() ? a.c_str() : b.c_str());
      ++bad;
      continue;
    }
    const double difference = std::fabs(ia->second - ib->second);
    worst = std::max(worst, difference);
    if (!(difference <= tol)) {
      std::fprintf(stderr, "step %lld: loss %.9g against %.9g (difference %.3g > %.3g)\n", step, ia->second,
                   ib->second, difference, tol);
      ++bad;
    }
  }
  std::printf("losses of steps %lld..%lld: largest difference %.3g (limit %.3g)\n", first, last, worst, tol);
  return bad == 0 ? 0 : 1;
}

// Every tensor of one safetensors file of both checkpoints: the same names, shapes,
// dtypes, and values within tol; the metadata equal but for the config and the time.
int compare_file(const std::string& a, const std::string& b, double tol, double& worst, std::string& worst_name) {
  const loom::SafetensorsFile fa = loom::read_safetensors(a), fb = loom::read_safetensors(b);
  int bad = 0;
  if (fa.tensors.size() != fb.tensors.size()) {
    std::fprintf(stderr, "%s has %zu tensors, %s %zu\n", a.c_str(), fa.tensors.size(), b.c_str(), fb.tensors.size());
    return 1;
  }
  for (size_t i = 0; i < fa.tensors.size(); ++i) {
    const auto& [name, x] = fa.tensors[i];
    const auto& [name_b, y] = fb.tensors[i];
    if (name != name_b || x.shape() != y.shape() || x.dtype() != y.dtype()) {
      std::fprintf(stderr, "%s: tensor %zu is %s %s there, %s %s here\n", a.c_str(), i, name.c_str(),
                   x.describe().c_str(), name_b.c_str(), y.describe().c_str());
      ++bad;
      continue;
    }
    const std::vector<double> vx = x.to(loom::DType::f64).to_vector<double>(), vy = y.to(loom::DType::f64).to_vector<double>();
    double largest = 0;
    for (size_t j = 0; j < vx.size(); ++j) largest = std::max(largest, std::fabs(vx[j] - vy[j]));
    if (largest > worst) {
      worst = largest;
      worst_name = name;
    }
    if (!(largest <= tol)) {
      std::fprintf(stderr, "%s: %s differs by up to %.3g (> %.3g)\n", a.c_str(), name.c_str(), largest, tol);
      ++bad;
    }
  }
  for (const auto& [key, value] : fa.metadata) {
    if (key == "config" || key == "elapsed_seconds") continue;  // out_dir and wall time differ by design
    const auto other = fb.metadata.find(key);
    if (other == fb.metadata.end() || other->second != value) {
      std::fprintf(stderr, "%s: metadata %s is %s there, %s here\n", a.c_str(), key.c_str(), value.c_str(),
                   other == fb.metadata.end() ? "(absent)" : other->second.c_str());
      ++bad;
    }
  }
  return bad;
}

int compare_checkpoints(const std::string& a, const std::string& b, double tol) {
  const std::string da = loom::models::find_checkpoint(a), db = loom::models::find_checkpoint(b);
  double worst = 0;
  std::string worst_name = "-";
  int bad = 0;
  for (const char* file : {loom::models::kModelFile, loom::models::kOptimizerFile})
    bad += compare_file((std::filesystem::path(da) / file).string(), (std::filesystem::path(db) / file).string(), tol,
                        worst, worst_name);
  std::printf("checkpoints %s and %s: largest difference %.3g, in %s (limit %.3g)\n", da.c_str(), db.c_str(), worst,
              worst_name.c_str(), tol);
  return bad == 0 ? 0 : 1;
}

}  // namespace

int main(int argc, char** argv) {
  try {
    const std::string command = argc > 1 ? argv[1] : "";
    if (command == "loopback-up" && argc == 2) return loopback_up();
    if (command == "losses" && argc == 7)
      return compare_losses(argv[2], argv[3], std::stoll(argv[4]), std::stoll(argv[5]), std::stod(argv[6]));
    if (command == "checkpoints" && argc == 5) return compare_checkpoints(argv[2], argv[3], std::stod(argv[4]));
    std::fprintf(stderr, "usage: mpi_tool loopback-up | losses A B FIRST LAST TOL | checkpoints A B TOL\n");
    return 2;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "mpi_tool: %s\n", e.what());
    return 1;
  }
}
