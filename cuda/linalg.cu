// linalg.cu: CUDA matmul on cuBLAS.
//
// cuBLAS is column-major and loom is row-major. A row-major matrix is the
// column-major storage of its transpose, so we ask cuBLAS for
//   out^T [N, M] = b^T [N, K] · a^T [K, M]
// and it writes out in row-major order. An operand that is a transposed view
// (unit row stride) is column-major already and goes in with the transpose
// flag, so neither layout is copied; only other layouts are made contiguous.
// Batch dims become one strided-batched call when each operand's batch offset
// is a fixed stride times the batch index (broadcast operands: stride 0), and
// a short host loop over the leading batch dims otherwise.
#include <cublas_v2.h>

#include <algorithm>
#include <climits>
#include <mutex>
#include <vector>

#include "cuda/cuda_backend.h"
#include "cuda/runtime.h"

#define LOOM_CUBLAS_CHECK(call, op)                                                              \
  do {                                                                                           \
    const cublasStatus_t loom_cublas_status_ = (call);                                           \
    if (loom_cublas_status_ != CUBLAS_STATUS_SUCCESS)                                            \
      LOOM_FAIL(op, ": ", #call, " failed: ", cublasGetStatusString(loom_cublas_status_));       \
  } while (0)

namespace loom::cuda {

namespace {

bool g_allow_tf32 = false;

cublasHandle_t handle() {
  // Created on first use and never destroyed (tensors may outlive main).
  static cublasHandle_t h = [] {
    cublasHandle_t created = nullptr;
    LOOM_CUBLAS_CHECK(cublasCreate(&created), "matmul");
    LOOM_CUBLAS_CHECK(cublasSetStream(created, stream()), "matmul");
    return created;
  }();
  // Plain float32 by default (TF32 would keep only 10 mantissa bits of the
  // inputs and break agreement with the CPU); set_matmul_tf32 opts in.
  LOOM_CUBLAS_CHECK(cublasSetMathMode(h, g_allow_tf32 ? CUBLAS_TF32_TENSOR_OP_MATH : CUBLAS_DEFAULT_MATH), "matmul");
  return h;
}

// How cuBLAS reads one row-major logical matrix (rows x cols): its op flag and
// leading dimension; `ok` is false for layouts it cannot read in place.
struct GemmOperand {
  bool ok = false;
  cublasOperation_t op = CUBLAS_OP_N;
  int64_t ld = 0;
};

GemmOperand gemm_operand(const Tensor& t) {
  const int64_t rows = t.size(-2), cols = t.size(-1);
  const int64_t rs = t.strides()[t.dim() - 2], cs = t.strides()[t.dim() - 1];
  if ((cs == 1 || cols == 1) && (rs >= cols || rows == 1))  // row-major: cuBLAS sees the transpose, no flag
    return {true, CUBLAS_OP_N, std::max<int64_t>({rs, cols, 1})};
  if ((rs == 1 || rows == 1) && (cs >= rows || cols == 1))  // a transposed view: column-major, flag T
    return {true, CUBLAS_OP_T, std::max<int64_t>({cs, rows, 1})};
  return {};
}

int as_int(int64_t v, const char* what) {
  LOOM_CHECK(v <= INT_MAX, "matmul on cuda: ", what, " ", v, " exceeds cuBLAS's int range");
  return static_cast<int>(v);
}

// True when, over batch dims [from, end), `strides` give offset = index * stride
// for the flat batch index (size-1 dims ignored); `stride` receives it.
bool linear_batch(const Shape& shape, const Strides& strides, size_t from, int64_t* stride) {
  int64_t expected = -1;  // stride the next outer non-1 dim must have
  *stride = 0;
  for (size_t d = shape.size(); d-- > from;) {
    if (shape[d] == 1) continue;
    if (expected < 0) *stride = strides[d];
    else if (strides[d] != expected) return false;
    expected = strides[d] * shape[d];
  }
  return true;
}

// One cuBLAS strided-batched call, in cuBLAS's (column-major) terms:
// C [m, n] = op_b(B) · op_a(A) for `count` matrices, where B is our b, A our a
// and C our out; offsets locate the first matrices (in elements).
struct GemmCall {
  cublasOperation_t op_b, op_a;
  int m, n, k, ldb, lda, ldc, count;
  int64_t stride_b, stride_a, stride_c;
  int64_t offset_b, offset_a, offset_c;
};

// The calls that compute out = a · b; both operands must be readable in place
// (gemm_operand(...).ok) and out contiguous. Host-only arithmetic on shapes and
// strides, kept apart from the launches so it can be checked without a GPU.
std::vector<GemmCall> plan_matmul(const Tensor& a, const Tensor& b, const Tensor& out) {
  const int64_t M = a.size(-2), K = a.size(-1), N = b.size(-1);
  const GemmOperand ga = gemm_operand(a), gb = gemm_operand(b);
  // Batch dims [0, split) are looped here; [split, end) go into one cuBLAS call.
  const size_t nb = out.shape().size() - 2;
  const Shape batch(out.shape().begin(), out.shape().begin() + nb);
  const Strides a_bs(a.strides().begin(), a.strides().begin() + nb);
  const Strides b_bs(b.strides().begin(), b.strides().begin() + nb);
  const Strides o_bs(out.strides().begin(), out.strides().begin() + nb);
  size_t split = 0;
  int64_t sa = 0, sb = 0, so = 0;
  while (!(linear_batch(batch, a_bs, split, &sa) && linear_batch(batch, b_bs, split, &sb) &&
           linear_batch(batch, o_bs, split, &so)))
    ++split;  // ends by split == nb at the latest: an empty group is linear
  int64_t inner = 1, outer = 1;
  for (size_t d = 0; d < nb; ++d) (d < split ? outer : inner) *= batch[d];

  GemmCall call{gb.op, ga.op, as_int(N, "N"), as_int(M, "M"), as_int(K, "K"),
                as_int(gb.ld, "leading dimension"), as_int(ga.ld, "leading dimension"), as_int(N, "N"),
                as_int(inner, "batch count"), sb, sa, so, 0, 0, 0};
  std::vector<GemmCall> calls;
  for (int64_t i = 0; i < outer; ++i) {
    int64_t rest = i;
    call.offset_a = call.offset_b = call.offset_c = 0;
    for (size_t d = split; d-- > 0;) {
      const int64_t idx = rest % batch[d];
      rest /= batch[d];
      call.offset_a += idx * a_bs[d];
      call.offset_b += idx * b_bs[d];
      call.offset_c += idx * o_bs[d];
    }
    calls.push_back(call);
  }
  return calls;
}

// out = a·b, or out += a·b when `accumulate` (cuBLAS's beta = 1).
template <class T>
void run_gemm(const GemmCall& c, const T* a, const T* b, T* out, bool accumulate) {
  const T one = 1, zero = accumulate ? 1 : 0;
  if constexpr (sizeof(T) == 4) {
    LOOM_CUBLAS_CHECK(cublasSgemmStridedBatched(handle(), c.op_b, c.op_a, c.m, c.n, c.k, &one, b + c.offset_b, c.ldb,
                                                c.stride_b, a + c.offset_a, c.lda, c.stride_a, &zero,
                                                out + c.offset_c, c.ldc, c.stride_c, c.count),
                      "matmul");
  } else {
    LOOM_CUBLAS_CHECK(cublasDgemmStridedBatched(handle(), c.op_b, c.op_a, c.m, c.n, c.k, &one, b + c.offset_b, c.ldb,
                                                c.stride_b, a + c.offset_a, c.lda, c.stride_a, &zero,
                                                out + c.offset_c, c.ldc, c.stride_c, c.count),
                      "matmul");
  }
}

template <class T>
void matmul_typed(Tensor a, Tensor b, const Tensor& out, bool accumulate) {
  if (out.numel() == 0) return;
  if (a.size(-1) == 0) {  // an empty sum: zeros, or out as it is (cuBLAS leaves C alone when k == 0)
    if (!accumulate) backend().fill(out, 0.0);
    return;
  }
  // Layouts cuBLAS cannot read in place (broadcast rows, column strides) are copied.
  auto dense = [](const Tensor& t) {
    Tensor c = Tensor::empty(t.shape(), t.dtype(), t.device());
    backend().copy(t, c);
    return c;
  };
  if (!gemm_operand(a).ok) a = dense(a);
  if (!gemm_operand(b).ok) b = dense(b);
  for (const GemmCall& call : plan_matmul(a, b, out)) run_gemm<T>(call, a.data<T>(), b.data<T>(), out.data<T>(), accumulate);
}

}  // namespace

void set_matmul_tf32(bool allow) { g_allow_tf32 = allow; }

void CudaBackend::matmul(const Tensor& a, const Tensor& b, const Tensor& out) {
  LOOM_CHECK(out.is_contiguous(), "matmul on cuda: the output must be contiguous, got ", out.describe());
  dispatch_float(out.dtype(), "matmul", [&](auto zero) {
    using T = decltype(zero);
    matmul_typed<T>(a, b, out, false);
  });
}

void CudaBackend::matmul_add(const Tensor& a, const Tensor& b, const Tensor& out) {
  LOOM_CHECK(out.is_contiguous(), "matmul_add on cuda: the output must be contiguous, got ", out.describe());
  dispatch_float(out.dtype(), "matmul_add", [&](auto zero) {
    using T = decltype(zero);
    matmul_typed<T>(a, b, out, true);
  });
}

}  // namespace loom::cuda
