// The two small matrix products of a tile, register-blocked:
//   gemm_acc: C (M, N) += A (M, K) X (K, N), A read through strides (so A or A^T)
//             forward acc += P V; backward dV += P^T dO
//   gemm_nt:  D (M, K) = A (M, N) B (K, N)^T           backward dP = dO V^T
// A zero coefficient of A never touches its row of X: a masked key's value (or a row's
// grad) is not read into rows that cannot see it, even when it is NaN or Inf.
#pragma once

#include "common.h"

namespace attnkern {
namespace ATTNKERN_ISA {

template <typename T>
inline void gemm_acc_ref(const T* A, int64_t sr, int64_t si, const T* X, int64_t ldx, T* C,
                         int64_t ldc, int64_t M, int64_t K, int64_t N) {
  for (int64_t r = 0; r < M; ++r)
    for (int64_t i = 0; i < K; ++i) {
      const T a = A[r * sr + i * si];
      if (a != T(0)) axpy(a, X + i * ldx, C + r * ldc, N);
    }
}

template <typename T>
inline void gemm_nt_ref(const T* A, int64_t lda, const T* B, int64_t ldb, T* D, int64_t ldd,
                        int64_t M, int64_t K, int64_t N) {
  for (int64_t r = 0; r < M; ++r)
    for (int64_t c = 0; c < K; ++c) D[r * ldd + c] = dot(A + r * lda, B + c * ldb, N);
}

#if ATTNKERN_VEC
static inline vmask tail_mask(int64_t rem) { return vtail(rem); }

template <int NR>
static inline void gemm_acc_block(const float* A, int64_t sr, int64_t si, const float* X,
                                  int64_t ldx, float* C, int64_t ldc, int64_t K,
                                  const vmask (&m)[kGemmVecs]) {
  vf c[NR][kGemmVecs];
#pragma GCC unroll 4
  for (int r = 0; r < NR; ++r)
#pragma GCC unroll 4
    for (int v = 0; v < kGemmVecs; ++v) c[r][v] = vmaskz_load(m[v], C + r * ldc + 16 * v);
  for (int64_t i = 0; i < K; ++i) {
    vf x[kGemmVecs];
#pragma GCC unroll 4
    for (int v = 0; v < kGemmVecs; ++v) x[v] = vmaskz_load(m[v], X + i * ldx + 16 * v);
    bool all = true;
#pragma GCC unroll 4
    for (int r = 0; r < NR; ++r) all = all && A[r * sr + i * si] != 0.f;
    if (all) {
#pragma GCC unroll 4
      for (int r = 0; r < NR; ++r) {
        const vf a = vset1(A[r * sr + i * si]);
#pragma GCC unroll 4
        for (int v = 0; v < kGemmVecs; ++v) c[r][v] = vfmadd(a, x[v], c[r][v]);
      }
    } else {
#pragma GCC unroll 4
      for (int r = 0; r < NR; ++r) {
        const float s = A[r * sr + i * si];
        if (s == 0.f) continue;
        const vf a = vset1(s);
#pragma GCC unroll 4
        for (int v = 0; v < kGemmVecs; ++v) c[r][v] = vfmadd(a, x[v], c[r][v]);
      }
    }
  }
#pragma GCC unroll 4
  for (int r = 0; r < NR; ++r)
#pragma GCC unroll 4
    for (int v = 0; v < kGemmVecs; ++v) vmask_store(C + r * ldc + 16 * v, m[v], c[r][v]);
}

// Few rows of C (a decoder step's forward, M = query rows): walk X row by row, each row
// read once, front to back, with C's rows (M x N) held in L1. The register-blocked order
// below instead reads X in column slices down all K rows (a 2 KiB stride for Dv = 512),
// which the prefetchers follow poorly when X is not in cache (the value rows of a step).
// Per element the FMA sequence over i is the same in both orders, so results are bitwise
// identical.
static inline void gemm_acc_rows(const float* A, int64_t sr, int64_t si, const float* X,
                                 int64_t ldx, float* C, int64_t ldc, int64_t M, int64_t K,
                                 int64_t N) {
  for (int64_t i = 0; i < K; ++i) {
    const float* x = X + i * ldx;
    for (int64_t n = 0; i + 1 < K && n < N; n += 16) __builtin_prefetch(x + ldx + n);
    for (int64_t r = 0; r < M; ++r) {
      const float a = A[r * sr + i * si];
      if (a == 0.f) continue;  // a zero coefficient never reads its row of X
      const vf av = vset1(a);
      float* c = C + r * ldc;
      int64_t n = 0;
      for (; n + 16 <= N; n += 16) vstore(c + n, vfmadd(av, vload(x + n), vload(c + n)));
      if (n < N) {
        const vmask m = tail_mask(N - n);
        vmask_store(c + n, m, vfmadd(av, vmaskz_load(m, x + n), vmaskz_load(m, c + n)));
      }
    }
  }
}

// Few terms (K <= kBQ: the backward's dV = P^T dO, K = query rows): each row of C is
// computed in one pass over its N columns from the K rows of X (in L1) and written once,
// front to back. ACC: C += A X, else C = A X (C not read: rows written for the first time).
// Per element the FMA sequence over i is that of gemm_acc_block (zero coefficients
// skipped), so both give bitwise the same C.
template <bool ACC>
static inline void gemm_fewk(const float* A, int64_t sr, int64_t si, const float* X,
                             int64_t ldx, float* C, int64_t ldc, int64_t M, int64_t K,
                             int64_t N) {
  for (int64_t r = 0; r < M; ++r) {
    float a[kBQ];
    const float* x[kBQ];
    int nz = 0;
    for (int64_t i = 0; i < K; ++i) {
      const float ai = A[r * sr + i * si];
      if (ai == 0.f) continue;  // a zero coefficient never reads its row of X
      a[nz] = ai;
      x[nz++] = X + i * ldx;
    }
    float* c = C + r * ldc;
    for (int64_t n = 0; n < N; n += 16) {
      const vmask m = tail_mask(N - n);
      vf acc = ACC ? vmaskz_load(m, c + n) : vzero();
      for (int t = 0; t < nz; ++t) acc = vfmadd(vset1(a[t]), vmaskz_load(m, x[t] + n), acc);
      vmask_store(c + n, m, acc);
    }
  }
}

// C (M, N) += A X, register-blocked: column slices of X (K x W) stay in L1 while every
// row group of C sweeps them.
static inline void gemm_acc_avx(const float* A, int64_t sr, int64_t si, const float* X,
                                int64_t ldx, float* C, int64_t ldc, int64_t M, int64_t K,
                                int64_t N) {
  for (int64_t n0 = 0; n0 < N; n0 += 16 * kGemmVecs) {
    vmask m[kGemmVecs];
    for (int v = 0; v < kGemmVecs; ++v) m[v] = tail_mask(N - n0 - 16 * v);
    int64_t r = 0;
    for (; r + 4 <= M; r += 4)
      gemm_acc_block<4>(A + r * sr, sr, si, X + n0, ldx, C + r * ldc + n0, ldc, K, m);
    switch (M - r) {
      case 3: gemm_acc_block<3>(A + r * sr, sr, si, X + n0, ldx, C + r * ldc + n0, ldc, K, m); break;
      case 2: gemm_acc_block<2>(A + r * sr, sr, si, X + n0, ldx, C + r * ldc + n0, ldc, K, m); break;
      case 1: gemm_acc_block<1>(A + r * sr, sr, si, X + n0, ldx, C + r * ldc + n0, ldc, K, m); break;
      default: break;
    }
  }
}

#if ATTNKERN_AVX512
// Sums of four vectors, one per lane of the result.
static inline __m128 reduce4(vf a, vf b, vf c, vf d) {
  const vf t0 = vadd(_mm512_unpacklo_ps(a, b), _mm512_unpackhi_ps(a, b));
  const vf t1 = vadd(_mm512_unpacklo_ps(c, d), _mm512_unpackhi_ps(c, d));
  const vf u = vadd(_mm512_shuffle_ps(t0, t1, _MM_SHUFFLE(1, 0, 1, 0)),
                                 _mm512_shuffle_ps(t0, t1, _MM_SHUFFLE(3, 2, 3, 2)));
  const __m256 h = _mm256_add_ps(_mm512_castps512_ps256(u), _mm512_extractf32x8_ps(u, 1));
  return _mm_add_ps(_mm256_castps256_ps128(h), _mm256_extractf128_ps(h, 1));
}
#endif

static inline void gemm_nt_avx(const float* A, int64_t lda, const float* B, int64_t ldb,
                               float* D, int64_t ldd, int64_t M, int64_t K, int64_t N) {
  for (int64_t r0 = 0; r0 < M; r0 += kNt) {
    const float* a[kNt];
    for (int u = 0; u < kNt; ++u) a[u] = A + std::min<int64_t>(r0 + u, M - 1) * lda;
    for (int64_t c0 = 0; c0 < K; c0 += kNt) {
      const float* b[kNt];
      for (int u = 0; u < kNt; ++u) b[u] = B + std::min<int64_t>(c0 + u, K - 1) * ldb;
      vf acc[kNt][kNt];
#pragma GCC unroll 4
      for (int x = 0; x < kNt; ++x)
#pragma GCC unroll 4
        for (int y = 0; y < kNt; ++y) acc[x][y] = vzero();
      for (int64_t n = 0; n < N; n += 16) {
        const vmask m = tail_mask(N - n);
        // B's next rows (the value rows of the next keys), one line per row per step: a
        // row is only a few lines long, too short for the hardware prefetchers to ramp up
        // when the values are not in cache.
#pragma GCC unroll 4
        for (int y = 0; y < kNt; ++y) __builtin_prefetch(b[y] + n + kNt * ldb);
        vf bv[kNt];
#pragma GCC unroll 4
        for (int y = 0; y < kNt; ++y) bv[y] = vmaskz_load(m, b[y] + n);
#pragma GCC unroll 4
        for (int x = 0; x < kNt; ++x) {
          const vf av = vmaskz_load(m, a[x] + n);
#pragma GCC unroll 4
          for (int y = 0; y < kNt; ++y) acc[x][y] = vfmadd(av, bv[y], acc[x][y]);
        }
      }
      // reduce with constant indices only (a variable index would spill acc to memory)
      alignas(16) float s[4][4];
#if ATTNKERN_AVX512
#pragma GCC unroll 4
      for (int x = 0; x < kNt; ++x)
        _mm_store_ps(s[x], reduce4(acc[x][0], acc[x][1], acc[x][2], acc[x][3]));
#else
#pragma GCC unroll 4
      for (int x = 0; x < kNt; ++x)
#pragma GCC unroll 4
        for (int y = 0; y < kNt; ++y) s[x][y] = vreduce_add(acc[x][y]);
#endif
      const int64_t nx = std::min<int64_t>(4, M - r0), ny = std::min<int64_t>(4, K - c0);
      for (int x = 0; x < nx; ++x)
        for (int y = 0; y < ny; ++y) D[(r0 + x) * ldd + c0 + y] = s[x][y];
    }
  }
}
#endif

template <typename T>
inline void gemm_acc(const T* A, int64_t sr, int64_t si, const T* X, int64_t ldx, T* C,
                     int64_t ldc, int64_t M, int64_t K, int64_t N) {
#if ATTNKERN_VEC
  if constexpr (std::is_same<T, float>::value) {
    if (M <= kStreamRows)
      gemm_acc_rows(A, sr, si, X, ldx, C, ldc, M, K, N);
    else if (K <= kBQ)
      gemm_fewk<true>(A, sr, si, X, ldx, C, ldc, M, K, N);
    else
      gemm_acc_avx(A, sr, si, X, ldx, C, ldc, M, K, N);
    return;
  }
#endif
  gemm_acc_ref(A, sr, si, X, ldx, C, ldc, M, K, N);
}

// C (M, N) = A X: gemm_acc onto zeros, without reading C first (C is being written for the
// first time, e.g. a decoder step's dV rows).
template <typename T>
inline void gemm_set(const T* A, int64_t sr, int64_t si, const T* X, int64_t ldx, T* C,
                     int64_t ldc, int64_t M, int64_t K, int64_t N) {
#if ATTNKERN_VEC
  if constexpr (std::is_same<T, float>::value) {
    if (K <= kBQ) {
      gemm_fewk<false>(A, sr, si, X, ldx, C, ldc, M, K, N);
      return;
    }
    for (int64_t r = 0; r < M; ++r) std::fill(C + r * ldc, C + r * ldc + N, 0.f);
    gemm_acc_avx(A, sr, si, X, ldx, C, ldc, M, K, N);
    return;
  }
#endif
  for (int64_t r = 0; r < M; ++r) std::fill(C + r * ldc, C + r * ldc + N, T(0));
  gemm_acc_ref(A, sr, si, X, ldx, C, ldc, M, K, N);
}

template <typename T>
inline void gemm_nt(const T* A, int64_t lda, const T* B, int64_t ldb, T* D, int64_t ldd,
                    int64_t M, int64_t K, int64_t N) {
#if ATTNKERN_VEC
  if constexpr (std::is_same<T, float>::value) {
    gemm_nt_avx(A, lda, B, ldb, D, ldd, M, K, N);
    return;
  }
#endif
  gemm_nt_ref(A, lda, B, ldb, D, ldd, M, K, N);
}

}  // namespace ATTNKERN_ISA
}  // namespace attnkern
