// A decoder step's linear layer on a few rows, y = x W^T, and its input gradient dx = g W:
//   y[m, n]  = sum_k x[m, k] W[n, k]     x (M, K), W (N, K) (nn.Linear's layout), y (M, N)
//   dx[m, k] = sum_n g[m, n] W[n, k]     g (M, N), dx (M, K)
// for M up to a few dozen rows (a decoder step's batch: the query layer, ESPnet's mlp_dec).
//
// Why a kernel: at these shapes the product is a pass over W (0.5-2 MB for a 1024 -> 128 or
// 512 layer) with M multiply-adds per weight; MKL's sgemm for M = 4 rows ran at 23 GB/s of
// W on AMD Zen 4 (1024 -> 128: 38 us through F.linear, 22 us from a contiguous W^T; 1024 ->
// 512: 147 us), about a fifth of what one core streams from L2/L3. Here each W element is
// loaded once per block of kMB rows and multiplied into kMB x kNB register accumulators.
//
// Each output element is one fixed-order sum (16 lanes of partial sums, then the lanes), so
// results do not depend on the thread count or the range a call covers. float32 on the
// vector ISAs only (the table holds null elsewhere, and the glue uses at::matmul: float64
// is for checks, and the scalar path's loops would not beat the BLAS).
#include <algorithm>
#include <type_traits>

#include "kernels.h"

namespace attnkern {
namespace ATTNKERN_ISA {

#if ATTNKERN_VEC
namespace {

// Register blocks (vf is 16 lanes: one zmm, two ymm, four q registers): the forward keeps
// kMB x kNB accumulators plus kNB vectors of W and one of x; the dx pass kMB x kCV
// accumulators plus kCV vectors of W (64 or 32 columns of dx per block).
#if ATTNKERN_ISA_ID == ATTNKERN_ISA_AVX512
constexpr int64_t kMB = 4, kNB = 4, kCV = 4;
#else
constexpr int64_t kMB = 4, kNB = 1, kCV = 2;
#endif

// y[m0 + i, n0 + j] for i < MB, j < NB: K in vectors of 16 (the tail masked).
template <int64_t MB, int64_t NB>
inline void block_fwd(const float* __restrict x, const float* __restrict W, int64_t K,
                      int64_t N, int64_t m0, int64_t n0, float* __restrict y) {
  vf acc[MB][NB];
#pragma GCC unroll 4
  for (int64_t i = 0; i < MB; ++i)
#pragma GCC unroll 4
    for (int64_t j = 0; j < NB; ++j) acc[i][j] = vzero();
  const float* xr = x + m0 * K;
  const float* wr = W + n0 * K;
  int64_t k = 0;
  for (; k + 16 <= K; k += 16) {
    vf w[NB];
#pragma GCC unroll 4
    for (int64_t j = 0; j < NB; ++j) w[j] = vload(wr + j * K + k);
#pragma GCC unroll 4
    for (int64_t i = 0; i < MB; ++i) {
      const vf xv = vload(xr + i * K + k);
#pragma GCC unroll 4
      for (int64_t j = 0; j < NB; ++j) acc[i][j] = vfmadd(xv, w[j], acc[i][j]);
    }
  }
  if (k < K) {
    const vmask m = vtail(K - k);
    vf w[NB];
#pragma GCC unroll 4
    for (int64_t j = 0; j < NB; ++j) w[j] = vmaskz_load(m, wr + j * K + k);
#pragma GCC unroll 4
    for (int64_t i = 0; i < MB; ++i) {
      const vf xv = vmaskz_load(m, xr + i * K + k);
#pragma GCC unroll 4
      for (int64_t j = 0; j < NB; ++j) acc[i][j] = vfmadd(xv, w[j], acc[i][j]);
    }
  }
  for (int64_t i = 0; i < MB; ++i)
    for (int64_t j = 0; j < NB; ++j) y[(m0 + i) * N + n0 + j] = vreduce_add(acc[i][j]);
}

template <int64_t MB>
inline void rows_fwd(const float* x, const float* W, int64_t K, int64_t N, int64_t m0,
                     int64_t n0, int64_t n1, float* y) {
  int64_t n = n0;
  for (; n + kNB <= n1; n += kNB) block_fwd<MB, kNB>(x, W, K, N, m0, n, y);
  for (; n < n1; ++n) block_fwd<MB, 1>(x, W, K, N, m0, n, y);
}

// dx[m0 + i, k0 .. k0 + 16 CV) for i < MB, the columns past `width` masked (not read from
// W, not written).
template <int64_t MB, int64_t CV>
inline void block_bwd(const float* __restrict g, const float* __restrict W, int64_t N,
                      int64_t K, int64_t m0, int64_t k0, int64_t width, float* __restrict dx) {
  vmask m[CV];
#pragma GCC unroll 4
  for (int64_t c = 0; c < CV; ++c) m[c] = vtail(width - 16 * c);
  vf acc[MB][CV];
#pragma GCC unroll 4
  for (int64_t i = 0; i < MB; ++i)
#pragma GCC unroll 4
    for (int64_t c = 0; c < CV; ++c) acc[i][c] = vzero();
  const float* gr = g + m0 * N;
  for (int64_t n = 0; n < N; ++n) {
    const float* wr = W + n * K + k0;
    vf w[CV];
    if (width == 16 * CV) {
#pragma GCC unroll 4
      for (int64_t c = 0; c < CV; ++c) w[c] = vload(wr + 16 * c);
    } else {
#pragma GCC unroll 4
      for (int64_t c = 0; c < CV; ++c) w[c] = vmaskz_load(m[c], wr + 16 * c);
    }
#pragma GCC unroll 4
    for (int64_t i = 0; i < MB; ++i) {
      const vf a = vset1(gr[i * N + n]);
#pragma GCC unroll 4
      for (int64_t c = 0; c < CV; ++c) acc[i][c] = vfmadd(a, w[c], acc[i][c]);
    }
  }
  for (int64_t i = 0; i < MB; ++i) {
    float* out = dx + (m0 + i) * K + k0;
    for (int64_t c = 0; c < CV; ++c) {
      if (width >= 16 * (c + 1)) {
        vstore(out + 16 * c, acc[i][c]);
      } else if (width > 16 * c) {
        vmask_store(out + 16 * c, m[c], acc[i][c]);
      }
    }
  }
}

template <int64_t MB>
inline void rows_bwd(const float* g, const float* W, int64_t N, int64_t K, int64_t m0,
                     int64_t k0, int64_t k1, float* dx) {
  constexpr int64_t kC = 16 * kCV;
  for (int64_t k = k0; k < k1; k += kC)
    block_bwd<MB, kCV>(g, W, N, K, m0, k, std::min(kC, k1 - k), dx);
}

// body(rows, m0) for each block of rows of [0, M): kMB-row blocks, then the 1-3 rows left,
// rows a compile-time constant (std::integral_constant) so each block size is its own code.
template <typename Body>
inline void for_row_blocks(int64_t M, Body&& body) {
  static_assert(kMB == 4, "the tail below covers 1-3 rows");
  int64_t m = 0;
  for (; m + kMB <= M; m += kMB) body(std::integral_constant<int64_t, kMB>{}, m);
  switch (M - m) {
    case 3: body(std::integral_constant<int64_t, 3>{}, m); break;
    case 2: body(std::integral_constant<int64_t, 2>{}, m); break;
    case 1: body(std::integral_constant<int64_t, 1>{}, m); break;
    default: break;
  }
}

}  // namespace

void rows_linear_impl(const float* x, const float* W, int64_t M, int64_t K, int64_t N,
                      int64_t n0, int64_t n1, float* y) {
  for_row_blocks(M, [&](auto rows, int64_t m) {
    rows_fwd<decltype(rows)::value>(x, W, K, N, m, n0, n1, y);
  });
}

void rows_linear_grad_impl(const float* g, const float* W, int64_t M, int64_t N, int64_t K,
                           int64_t k0, int64_t k1, float* dx) {
  for_row_blocks(M, [&](auto rows, int64_t m) {
    rows_bwd<decltype(rows)::value>(g, W, N, K, m, k0, k1, dx);
  });
}
#endif  // ATTNKERN_VEC

}  // namespace ATTNKERN_ISA
}  // namespace attnkern
