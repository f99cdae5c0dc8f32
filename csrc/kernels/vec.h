// A 16-lane float vector for the kernels, one implementation per ISA (included by common.h
// inside namespace attnkern::<isa>):
//   AVX-512  one __m512 (each function is the one intrinsic the kernels used before, so the
//            AVX-512 arithmetic is unchanged)
//   AVX2     two __m256 (8-lane rcp_ps: 12 bits; the callers' Newton step brings it to ~23)
//   NEON     four float32x4_t (vrecpe is 8 bits: one Newton step here, one in the callers)
// The kernels are written once against vf / vmask; lane count 16 everywhere (padding of H,
// key tiles). vmaskz_load / vmask_store never touch memory of the masked-off lanes.
#pragma once

#if ATTNKERN_ISA_ID == ATTNKERN_ISA_AVX512 || ATTNKERN_ISA_ID == ATTNKERN_ISA_AVX2
#include <immintrin.h>
#elif ATTNKERN_ISA_ID == ATTNKERN_ISA_NEON
#include <arm_neon.h>
#endif

#define ATTNKERN_VEC (ATTNKERN_ISA_ID != ATTNKERN_ISA_SCALAR)

#if ATTNKERN_ISA_ID == ATTNKERN_ISA_AVX512
using vf = __m512;
using vmask = __mmask16;
static inline vmask vtail(int64_t rem) {
  return rem >= 16 ? (vmask)0xFFFF : rem <= 0 ? (vmask)0 : (vmask)((1u << rem) - 1u);
}
static inline vf vset1(float x) { return _mm512_set1_ps(x); }
static inline vf vzero() { return _mm512_setzero_ps(); }
static inline vf vload(const float* p) { return _mm512_loadu_ps(p); }
static inline void vstore(float* p, vf v) { _mm512_storeu_ps(p, v); }
static inline vf vmaskz_load(vmask m, const float* p) { return _mm512_maskz_loadu_ps(m, p); }
static inline void vmask_store(float* p, vmask m, vf v) { _mm512_mask_storeu_ps(p, m, v); }
static inline vf vadd(vf a, vf b) { return _mm512_add_ps(a, b); }
static inline vf vsub(vf a, vf b) { return _mm512_sub_ps(a, b); }
static inline vf vmul(vf a, vf b) { return _mm512_mul_ps(a, b); }
static inline vf vfmadd(vf a, vf b, vf c) { return _mm512_fmadd_ps(a, b, c); }    // a b + c
static inline vf vfnmadd(vf a, vf b, vf c) { return _mm512_fnmadd_ps(a, b, c); }  // c - a b
// min/max return their second operand when either is NaN (as the x86 instructions do).
static inline vf vmin(vf a, vf b) { return _mm512_min_ps(a, b); }
static inline vf vmax(vf a, vf b) { return _mm512_max_ps(a, b); }
static inline vf vabs(vf a) { return _mm512_abs_ps(a); }
static inline vf vrcp(vf a) { return _mm512_rcp14_ps(a); }  // ~14 bits
static inline vf vround(vf a) {
  return _mm512_roundscale_ps(a, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
}
// p * 2^n for integral n in [-126, 127]
static inline vf vscale2n(vf p, vf n) { return _mm512_scalef_ps(p, n); }
static inline float vreduce_add(vf a) { return _mm512_reduce_add_ps(a); }
// every lane a <= b (false where either is NaN)
static inline bool vall_le(vf a, vf b) { return _mm512_cmp_ps_mask(a, b, _CMP_LE_OQ) == 0xFFFF; }
// lanes of m where a != b (true where either is NaN)
static inline vmask vcmp_neq_mask(vmask m, vf a, vf b) {
  return _mm512_mask_cmp_ps_mask(m, a, b, _CMP_NEQ_UQ);
}
static inline vf vmaskz_mov(vmask m, vf a) { return _mm512_maskz_mov_ps(m, a); }

// 16x16 transpose of r[0..15] in registers (row i lane j -> row j lane i).
static inline void vtranspose16(vf (&r)[16]) {
  __m512 t[16];
#pragma GCC unroll 8
  for (int i = 0; i < 8; ++i) {
    t[2 * i] = _mm512_unpacklo_ps(r[2 * i], r[2 * i + 1]);
    t[2 * i + 1] = _mm512_unpackhi_ps(r[2 * i], r[2 * i + 1]);
  }
#pragma GCC unroll 4
  for (int i = 0; i < 4; ++i) {
    r[4 * i] = _mm512_shuffle_ps(t[4 * i], t[4 * i + 2], _MM_SHUFFLE(1, 0, 1, 0));
    r[4 * i + 1] = _mm512_shuffle_ps(t[4 * i], t[4 * i + 2], _MM_SHUFFLE(3, 2, 3, 2));
    r[4 * i + 2] = _mm512_shuffle_ps(t[4 * i + 1], t[4 * i + 3], _MM_SHUFFLE(1, 0, 1, 0));
    r[4 * i + 3] = _mm512_shuffle_ps(t[4 * i + 1], t[4 * i + 3], _MM_SHUFFLE(3, 2, 3, 2));
  }
#pragma GCC unroll 4
  for (int i = 0; i < 4; ++i) {
    t[i] = _mm512_shuffle_f32x4(r[i], r[i + 4], 0x88);
    t[i + 4] = _mm512_shuffle_f32x4(r[i], r[i + 4], 0xdd);
    t[i + 8] = _mm512_shuffle_f32x4(r[i + 8], r[i + 12], 0x88);
    t[i + 12] = _mm512_shuffle_f32x4(r[i + 8], r[i + 12], 0xdd);
  }
#pragma GCC unroll 8
  for (int i = 0; i < 8; ++i) {
    r[i] = _mm512_shuffle_f32x4(t[i], t[i + 8], 0x88);
    r[i + 8] = _mm512_shuffle_f32x4(t[i], t[i + 8], 0xdd);
  }
}

#elif ATTNKERN_ISA_ID == ATTNKERN_ISA_AVX2
struct vf {
  __m256 lo, hi;
};
// full: every lane selected, so loads and stores need no mask (vmaskmovps stores are
// microcoded and slow on AMD Zen; the kernels' masks are full except in tails).
struct vmask {
  __m256 lo, hi;  // all-ones lanes are selected
  bool full;
};
static inline vmask vtail(int64_t rem) {
  const __m256i idx = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
  const int r = (int)std::min<int64_t>(std::max<int64_t>(rem, 0), 16);
  const __m256i lo = _mm256_cmpgt_epi32(_mm256_set1_epi32(r), idx);
  const __m256i hi = _mm256_cmpgt_epi32(_mm256_set1_epi32(r - 8), idx);
  return {_mm256_castsi256_ps(lo), _mm256_castsi256_ps(hi), r == 16};
}
static inline vf vset1(float x) { return {_mm256_set1_ps(x), _mm256_set1_ps(x)}; }
static inline vf vzero() { return {_mm256_setzero_ps(), _mm256_setzero_ps()}; }
static inline vf vload(const float* p) { return {_mm256_loadu_ps(p), _mm256_loadu_ps(p + 8)}; }
static inline void vstore(float* p, vf v) {
  _mm256_storeu_ps(p, v.lo);
  _mm256_storeu_ps(p + 8, v.hi);
}
static inline vf vmaskz_load(vmask m, const float* p) {
  if (m.full) return {_mm256_loadu_ps(p), _mm256_loadu_ps(p + 8)};
  return {_mm256_maskload_ps(p, _mm256_castps_si256(m.lo)),
          _mm256_maskload_ps(p + 8, _mm256_castps_si256(m.hi))};
}
static inline void vmask_store(float* p, vmask m, vf v) {
  if (m.full) {
    _mm256_storeu_ps(p, v.lo);
    _mm256_storeu_ps(p + 8, v.hi);
    return;
  }
  _mm256_maskstore_ps(p, _mm256_castps_si256(m.lo), v.lo);
  _mm256_maskstore_ps(p + 8, _mm256_castps_si256(m.hi), v.hi);
}
#define ATTNKERN_V2(name, expr)                            \
  static inline vf name(vf a, vf b) {                     \
    return {expr(a.lo, b.lo), expr(a.hi, b.hi)};          \
  }
ATTNKERN_V2(vadd, _mm256_add_ps)
ATTNKERN_V2(vsub, _mm256_sub_ps)
ATTNKERN_V2(vmul, _mm256_mul_ps)
ATTNKERN_V2(vmin, _mm256_min_ps)
ATTNKERN_V2(vmax, _mm256_max_ps)
#undef ATTNKERN_V2
static inline vf vfmadd(vf a, vf b, vf c) {
  return {_mm256_fmadd_ps(a.lo, b.lo, c.lo), _mm256_fmadd_ps(a.hi, b.hi, c.hi)};
}
static inline vf vfnmadd(vf a, vf b, vf c) {
  return {_mm256_fnmadd_ps(a.lo, b.lo, c.lo), _mm256_fnmadd_ps(a.hi, b.hi, c.hi)};
}
static inline vf vabs(vf a) {
  const __m256 s = _mm256_set1_ps(-0.f);
  return {_mm256_andnot_ps(s, a.lo), _mm256_andnot_ps(s, a.hi)};
}
static inline vf vrcp(vf a) { return {_mm256_rcp_ps(a.lo), _mm256_rcp_ps(a.hi)}; }  // ~12 bits
static inline vf vround(vf a) {
  constexpr int r = _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC;
  return {_mm256_round_ps(a.lo, r), _mm256_round_ps(a.hi, r)};
}
static inline __m256 pow2n8(__m256 n) {  // 2^n, integral n in [-126, 127]
  const __m256i e = _mm256_add_epi32(_mm256_cvtps_epi32(n), _mm256_set1_epi32(127));
  return _mm256_castsi256_ps(_mm256_slli_epi32(e, 23));
}
static inline vf vscale2n(vf p, vf n) {
  return {_mm256_mul_ps(p.lo, pow2n8(n.lo)), _mm256_mul_ps(p.hi, pow2n8(n.hi))};
}
static inline float vreduce_add(vf a) {
  const __m256 s = _mm256_add_ps(a.lo, a.hi);
  __m128 x = _mm_add_ps(_mm256_castps256_ps128(s), _mm256_extractf128_ps(s, 1));
  x = _mm_add_ps(x, _mm_movehl_ps(x, x));
  x = _mm_add_ss(x, _mm_movehdup_ps(x));
  return _mm_cvtss_f32(x);
}
static inline bool vall_le(vf a, vf b) {
  const __m256 m = _mm256_and_ps(_mm256_cmp_ps(a.lo, b.lo, _CMP_LE_OQ),
                                 _mm256_cmp_ps(a.hi, b.hi, _CMP_LE_OQ));
  return _mm256_movemask_ps(m) == 0xFF;
}
static inline vmask vcmp_neq_mask(vmask m, vf a, vf b) {
  return {_mm256_and_ps(m.lo, _mm256_cmp_ps(a.lo, b.lo, _CMP_NEQ_UQ)),
          _mm256_and_ps(m.hi, _mm256_cmp_ps(a.hi, b.hi, _CMP_NEQ_UQ)), false};
}
static inline vf vmaskz_mov(vmask m, vf a) {
  return {_mm256_and_ps(m.lo, a.lo), _mm256_and_ps(m.hi, a.hi)};
}

static inline void transpose8(__m256* r) {  // r[0..7], 8x8 in registers
  __m256 t[8], u[8];
  for (int i = 0; i < 4; ++i) {
    t[2 * i] = _mm256_unpacklo_ps(r[2 * i], r[2 * i + 1]);
    t[2 * i + 1] = _mm256_unpackhi_ps(r[2 * i], r[2 * i + 1]);
  }
  for (int i = 0; i < 2; ++i) {
    u[4 * i] = _mm256_shuffle_ps(t[4 * i], t[4 * i + 2], _MM_SHUFFLE(1, 0, 1, 0));
    u[4 * i + 1] = _mm256_shuffle_ps(t[4 * i], t[4 * i + 2], _MM_SHUFFLE(3, 2, 3, 2));
    u[4 * i + 2] = _mm256_shuffle_ps(t[4 * i + 1], t[4 * i + 3], _MM_SHUFFLE(1, 0, 1, 0));
    u[4 * i + 3] = _mm256_shuffle_ps(t[4 * i + 1], t[4 * i + 3], _MM_SHUFFLE(3, 2, 3, 2));
  }
  for (int i = 0; i < 4; ++i) {
    r[i] = _mm256_permute2f128_ps(u[i], u[i + 4], 0x20);
    r[i + 4] = _mm256_permute2f128_ps(u[i], u[i + 4], 0x31);
  }
}
// 16x16 as four 8x8 blocks: [A B; C D]^T = [A^T C^T; B^T D^T].
static inline void vtranspose16(vf (&r)[16]) {
  __m256 a[8], b[8], c[8], d[8];
  for (int i = 0; i < 8; ++i) {
    a[i] = r[i].lo;
    b[i] = r[i].hi;
    c[i] = r[i + 8].lo;
    d[i] = r[i + 8].hi;
  }
  transpose8(a);
  transpose8(b);
  transpose8(c);
  transpose8(d);
  for (int i = 0; i < 8; ++i) {
    r[i] = {a[i], c[i]};
    r[i + 8] = {b[i], d[i]};
  }
}

#elif ATTNKERN_ISA_ID == ATTNKERN_ISA_NEON
struct vf {
  float32x4_t v[4];
};
struct vmask {
  uint32x4_t v[4];
  bool full;  // every lane selected: plain loads and stores
};
static inline vmask vtail(int64_t rem) {
  const int32_t r = (int32_t)std::min<int64_t>(std::max<int64_t>(rem, 0), 16);
  const int32_t base[4] = {0, 1, 2, 3};
  const int32x4_t idx = vld1q_s32(base);
  vmask m;
  for (int i = 0; i < 4; ++i) m.v[i] = vcltq_s32(vaddq_s32(idx, vdupq_n_s32(4 * i)), vdupq_n_s32(r));
  m.full = r == 16;
  return m;
}
static inline vf vset1(float x) { return {{vdupq_n_f32(x), vdupq_n_f32(x), vdupq_n_f32(x), vdupq_n_f32(x)}}; }
static inline vf vzero() { return vset1(0.f); }
static inline vf vload(const float* p) {
  return {{vld1q_f32(p), vld1q_f32(p + 4), vld1q_f32(p + 8), vld1q_f32(p + 12)}};
}
static inline void vstore(float* p, vf a) {
  for (int i = 0; i < 4; ++i) vst1q_f32(p + 4 * i, a.v[i]);
}
// No masked loads on NEON: lanes are copied one by one (tails only).
static inline vf vmaskz_load(vmask m, const float* p) {
  if (m.full) return vload(p);
  alignas(16) float buf[16];
  alignas(16) uint32_t mb[16];
  for (int i = 0; i < 4; ++i) vst1q_u32(mb + 4 * i, m.v[i]);
  for (int l = 0; l < 16; ++l) buf[l] = mb[l] ? p[l] : 0.f;
  return vload(buf);
}
static inline void vmask_store(float* p, vmask m, vf a) {
  if (m.full) {
    vstore(p, a);
    return;
  }
  alignas(16) float buf[16];
  alignas(16) uint32_t mb[16];
  for (int i = 0; i < 4; ++i) {
    vst1q_f32(buf + 4 * i, a.v[i]);
    vst1q_u32(mb + 4 * i, m.v[i]);
  }
  for (int l = 0; l < 16; ++l)
    if (mb[l]) p[l] = buf[l];
}
#define ATTNKERN_V4(name, expr)                                        \
  static inline vf name(vf a, vf b) {                                 \
    vf r;                                                             \
    for (int i = 0; i < 4; ++i) r.v[i] = expr(a.v[i], b.v[i]);         \
    return r;                                                         \
  }
ATTNKERN_V4(vadd, vaddq_f32)
ATTNKERN_V4(vsub, vsubq_f32)
ATTNKERN_V4(vmul, vmulq_f32)
#undef ATTNKERN_V4
// x86 semantics: the second operand when either is NaN.
static inline vf vmin(vf a, vf b) {
  vf r;
  for (int i = 0; i < 4; ++i) r.v[i] = vbslq_f32(vcltq_f32(a.v[i], b.v[i]), a.v[i], b.v[i]);
  return r;
}
static inline vf vmax(vf a, vf b) {
  vf r;
  for (int i = 0; i < 4; ++i) r.v[i] = vbslq_f32(vcgtq_f32(a.v[i], b.v[i]), a.v[i], b.v[i]);
  return r;
}
static inline vf vfmadd(vf a, vf b, vf c) {
  vf r;
  for (int i = 0; i < 4; ++i) r.v[i] = vfmaq_f32(c.v[i], a.v[i], b.v[i]);
  return r;
}
static inline vf vfnmadd(vf a, vf b, vf c) {
  vf r;
  for (int i = 0; i < 4; ++i) r.v[i] = vfmsq_f32(c.v[i], a.v[i], b.v[i]);
  return r;
}
static inline vf vabs(vf a) {
  vf r;
  for (int i = 0; i < 4; ++i) r.v[i] = vabsq_f32(a.v[i]);
  return r;
}
static inline vf vrcp(vf a) {  // 8-bit estimate plus one Newton step: ~16 bits
  vf r;
  for (int i = 0; i < 4; ++i) {
    const float32x4_t e = vrecpeq_f32(a.v[i]);
    r.v[i] = vmulq_f32(e, vrecpsq_f32(a.v[i], e));
  }
  return r;
}
static inline vf vround(vf a) {
  vf r;
  for (int i = 0; i < 4; ++i) r.v[i] = vrndnq_f32(a.v[i]);
  return r;
}
static inline vf vscale2n(vf p, vf n) {
  vf r;
  for (int i = 0; i < 4; ++i) {
    const int32x4_t e = vaddq_s32(vcvtq_s32_f32(n.v[i]), vdupq_n_s32(127));
    r.v[i] = vmulq_f32(p.v[i], vreinterpretq_f32_s32(vshlq_n_s32(e, 23)));
  }
  return r;
}
static inline float vreduce_add(vf a) {
  return vaddvq_f32(vaddq_f32(vaddq_f32(a.v[0], a.v[1]), vaddq_f32(a.v[2], a.v[3])));
}
static inline bool vall_le(vf a, vf b) {
  uint32x4_t m = vcleq_f32(a.v[0], b.v[0]);
  for (int i = 1; i < 4; ++i) m = vandq_u32(m, vcleq_f32(a.v[i], b.v[i]));
  return vminvq_u32(m) != 0;
}
static inline vmask vcmp_neq_mask(vmask m, vf a, vf b) {
  vmask r;
  for (int i = 0; i < 4; ++i) r.v[i] = vandq_u32(m.v[i], vmvnq_u32(vceqq_f32(a.v[i], b.v[i])));
  r.full = false;
  return r;
}
static inline vf vmaskz_mov(vmask m, vf a) {
  vf r;
  for (int i = 0; i < 4; ++i)
    r.v[i] = vreinterpretq_f32_u32(vandq_u32(m.v[i], vreinterpretq_u32_f32(a.v[i])));
  return r;
}
// Through memory (only the factorised key tiles use it, once per key block).
static inline void vtranspose16(vf (&r)[16]) {
  alignas(16) float m[16][16];
  for (int i = 0; i < 16; ++i) vstore(m[i], r[i]);
  for (int i = 0; i < 16; ++i) {
    alignas(16) float c[16];
    for (int j = 0; j < 16; ++j) c[j] = m[j][i];
    r[i] = vload(c);
  }
}
#endif
