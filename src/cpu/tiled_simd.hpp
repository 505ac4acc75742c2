// ioattn internal: the SIMD vocabulary of the tiled CPU kernels: a vector of VW floats, a vectorized exp, row
// reductions and the register-blocked GEMM micro-kernel that every tile product goes through.
//
// Portability: the code is plain C++ on GCC/Clang vector extensions, templated on the vector width VW. The kernels
// are compiled twice (tiled_dispatch.hpp): VW = 8 in functions marked target("avx2,fma"), VW = 4 with the baseline
// x86-64 ISA (SSE2), and the first is chosen at run time only on CPUs that have AVX2 and FMA. Nothing here needs
// AVX-512 at build time. Everything is force-inlined so that it is compiled with the ISA of the function it lands in.
//
// The width is fixed at 4 or 8 lanes rather than "whatever the target has" because every reduction below runs
// lane by lane in a fixed order: results are bitwise reproducible for a given VW, whatever the thread count.
#pragma once

#include <cstdint>
#include <cstring>
#include <limits>

#define IOATTN_TILED_INLINE inline __attribute__((always_inline))

// The 8-lane helpers take and return 32-byte vectors; GCC warns that their ABI differs without AVX. They are always
// inlined into functions compiled for AVX2, so no call with that ABI exists.
#pragma GCC diagnostic ignored "-Wpsabi"

namespace ioattn::cpu::tiled {

// Every fp32 tile row is padded to a multiple of this many floats (64 bytes), so vector loops over a row never
// need a scalar tail and the micro-kernel's column panels (2 * VW wide) always divide the row.
inline constexpr std::int64_t kColumnPad = 16;
// Rows of the GEMM micro-kernel. With 2 vectors per row that is 12 accumulators: under the 16 vector registers of
// SSE2 and AVX2 (with room for the two B vectors and the broadcast A value), so nothing spills.
inline constexpr int kMicroRows = 6;

constexpr std::int64_t pad_columns(std::int64_t n) { return (n + kColumnPad - 1) / kColumnPad * kColumnPad; }

// GCC does not take a template-dependent vector_size, hence one specialization per width.
template <int VW>
struct VectorTypes;
template <>
struct VectorTypes<4> {
  typedef float vf __attribute__((vector_size(16)));
  typedef std::int32_t vi __attribute__((vector_size(16)));
};
template <>
struct VectorTypes<8> {
  typedef float vf __attribute__((vector_size(32)));
  typedef std::int32_t vi __attribute__((vector_size(32)));
};

template <int VW>
struct Simd {
  static_assert(VW == 4 || VW == 8, "vector width: 4 (SSE2) or 8 (AVX2)");
  using vf = typename VectorTypes<VW>::vf;
  using vi = typename VectorTypes<VW>::vi;
  static constexpr int width = VW;

  static IOATTN_TILED_INLINE vf load(const float* p) {
    vf v;
    std::memcpy(&v, p, sizeof v);
    return v;
  }
  static IOATTN_TILED_INLINE void store(float* p, vf v) { std::memcpy(p, &v, sizeof v); }
  static IOATTN_TILED_INLINE vf splat(float x) { return vf{} + x; }
  static IOATTN_TILED_INLINE vf vmax(vf a, vf b) { return a > b ? a : b; }

  static IOATTN_TILED_INLINE float hmax(vf v) {
    float m = v[0];
    for (int l = 1; l < VW; ++l) m = v[l] > m ? v[l] : m;
    return m;
  }
  static IOATTN_TILED_INLINE float hsum(vf v) {
    float s = v[0];
    for (int l = 1; l < VW; ++l) s += v[l];
    return s;
  }

  // exp(x) for x <= 0 (the only range the softmax uses; larger x up to 88 is still right), to about 2 ulp.
  //   x = n ln2 + r with n = round(x / ln2), |r| <= ln2 / 2; ln2 split in a 16-bit head (n * head is exact for
  //   |n| <= 128) and a tail, so r keeps full precision. exp(r) by its Taylor series to degree 7: the first dropped
  //   term is below 0.347^8 / 8! < 6e-9, under half an ulp. 2^n is assembled in the exponent bits.
  //   Below -87.33 the result would leave the normal range: it is flushed to 0, and -inf gives exactly 0.
  static IOATTN_TILED_INLINE vf exp(vf x) {
    const vf lo = splat(-87.33f);
    const vf hi = splat(88.0f);
    const vf xc = x < lo ? lo : (x > hi ? hi : x);
    const vf round_magic = splat(12582912.0f);  // 1.5 * 2^23: adding it rounds to an integer held in the low bits
    const vf t = xc * 1.44269504088896341f + round_magic;
    const vf n = t - round_magic;
    vf r = xc - n * 0.693145751953125f;
    r = r - n * 1.42860682030941723e-06f;
    vf p = splat(1.0f / 5040.0f);
    p = p * r + (1.0f / 720.0f);
    p = p * r + (1.0f / 120.0f);
    p = p * r + (1.0f / 24.0f);
    p = p * r + (1.0f / 6.0f);
    p = p * r + 0.5f;
    p = p * r + 1.0f;
    p = p * r + 1.0f;
    vi n_int;
    vi t_bits;
    vi magic_bits;
    std::memcpy(&t_bits, &t, sizeof t);
    std::memcpy(&magic_bits, &round_magic, sizeof round_magic);
    n_int = t_bits - magic_bits;
    const vi scale_bits = (n_int + 127) << 23;
    vf scale;
    std::memcpy(&scale, &scale_bits, sizeof scale);
    const vf result = p * scale;
    return x < lo ? vf{} : result;  // NaN compares false and stays NaN
  }
};

// C[M x N] (+)= A[M x K] * B[K x N], all row-major fp32 with leading dimensions in floats.
// The micro-kernel holds an MR x (2 VW) block of C in registers across the whole K loop; B's column panel
// (K x 2 VW, a few KiB) stays in L1 while the kernel walks down A.
template <int VW, int MR>
IOATTN_TILED_INLINE void gemm_micro(std::int64_t K, const float* A, std::int64_t lda, const float* B, std::int64_t ldb,
                                    float* C, std::int64_t ldc, bool accumulate) {
  using S = Simd<VW>;
  using vf = typename S::vf;
  vf acc[MR][2];
  for (int r = 0; r < MR; ++r) {
    acc[r][0] = accumulate ? S::load(C + r * ldc) : vf{};
    acc[r][1] = accumulate ? S::load(C + r * ldc + VW) : vf{};
  }
  for (std::int64_t k = 0; k < K; ++k) {
    const vf b0 = S::load(B + k * ldb);
    const vf b1 = S::load(B + k * ldb + VW);
    for (int r = 0; r < MR; ++r) {
      const float a = A[r * lda + k];
      acc[r][0] += a * b0;
      acc[r][1] += a * b1;
    }
  }
  for (int r = 0; r < MR; ++r) {
    S::store(C + r * ldc, acc[r][0]);
    S::store(C + r * ldc + VW, acc[r][1]);
  }
}

// N must be a multiple of 2 VW (tile rows are padded to kColumnPad). K = 0 with accumulate = false zeroes C.
template <int VW>
IOATTN_TILED_INLINE void gemm_nn(std::int64_t M, std::int64_t N, std::int64_t K, const float* A, std::int64_t lda,
                                 const float* B, std::int64_t ldb, float* C, std::int64_t ldc, bool accumulate) {
  for (std::int64_t j = 0; j < N; j += 2 * VW) {
    std::int64_t i = 0;
    for (; i + kMicroRows <= M; i += kMicroRows) {
      gemm_micro<VW, kMicroRows>(K, A + i * lda, lda, B + j, ldb, C + i * ldc + j, ldc, accumulate);
    }
    const float* a = A + i * lda;
    float* c = C + i * ldc + j;
    switch (M - i) {
      case 5: gemm_micro<VW, 5>(K, a, lda, B + j, ldb, c, ldc, accumulate); break;
      case 4: gemm_micro<VW, 4>(K, a, lda, B + j, ldb, c, ldc, accumulate); break;
      case 3: gemm_micro<VW, 3>(K, a, lda, B + j, ldb, c, ldc, accumulate); break;
      case 2: gemm_micro<VW, 2>(K, a, lda, B + j, ldb, c, ldc, accumulate); break;
      case 1: gemm_micro<VW, 1>(K, a, lda, B + j, ldb, c, ldc, accumulate); break;
      default: break;
    }
  }
}

// dst[c * ld_dst + r] = src[r * ld_src + c] for r < rows, c < cols: P and dS turned around for dV and dK.
IOATTN_TILED_INLINE void transpose(std::int64_t rows, std::int64_t cols, const float* src, std::int64_t ld_src,
                                   float* dst, std::int64_t ld_dst) {
  constexpr std::int64_t kBlock = 8;  // 8 x 8 blocks: both sides touch whole cache lines
  for (std::int64_t r0 = 0; r0 < rows; r0 += kBlock) {
    const std::int64_t r1 = r0 + kBlock < rows ? r0 + kBlock : rows;
    for (std::int64_t c0 = 0; c0 < cols; c0 += kBlock) {
      const std::int64_t c1 = c0 + kBlock < cols ? c0 + kBlock : cols;
      for (std::int64_t r = r0; r < r1; ++r)
        for (std::int64_t c = c0; c < c1; ++c) dst[c * ld_dst + r] = src[r * ld_src + c];
    }
  }
}

}  // namespace ioattn::cpu::tiled
