// device.h: where a tensor's memory lives.
#pragma once

namespace loom {

enum class Device { cpu, cuda };

inline const char* device_name(Device d) { return d == Device::cpu ? "cpu" : "cuda"; }

// True when this build has the CUDA backend and a GPU is visible.
bool cuda_available();

// Number of CPU threads the kernels use (OMP_NUM_THREADS, or set_num_threads).
int num_threads();
void set_num_threads(int n);

}  // namespace loom
