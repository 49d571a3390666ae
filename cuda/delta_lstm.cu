// delta_lstm.cu: CUDA kernels of the Delta LSTM's recurrence (not written yet:
// the op runs on the CPU only, and refuses CUDA tensors with an error).
#include "cuda/cuda_backend.h"

namespace loom::cuda {

void CudaBackend::delta_lstm(const Tensor&, const Tensor&, const Tensor&, const Tensor&, const Tensor&, const Tensor&,
                             const Tensor&, const Tensor&, const Tensor&, const Tensor&, const Tensor&, const Tensor&,
                             const Tensor&) {
  LOOM_CHECK(false, "delta_lstm: no CUDA kernel yet; run it on the CPU");
}

void CudaBackend::delta_lstm_backward(const Tensor&, const Tensor&, const Tensor&, const Tensor&, const Tensor&,
                                      const Tensor&, const Tensor&, const Tensor&, const Tensor&, const Tensor&,
                                      const Tensor&, const Tensor&, const Tensor&, const Tensor&, const Tensor&) {
  LOOM_CHECK(false, "delta_lstm_backward: no CUDA kernel yet; run it on the CPU");
}

}  // namespace loom::cuda
