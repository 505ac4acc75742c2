// The materialized fp32 baseline on CBLAS (see materialized.hpp). Its GEMMs are the BLAS's, threaded by the BLAS;
// the softmax between them is threaded with OpenMP over rows and uses the same vectorized exp as the tiled kernels
// (on AVX2 machines), so that the comparison is about memory traffic, not about two different exp routines.
#include "materialized.hpp"

#include <cblas.h>

#include <cmath>
#include <limits>

#include "cpu/tiled_simd.hpp"

namespace ioattn::bench {

namespace {

// x[j] = exp(x[j] - offset) for j < n; returns the sum.
__attribute__((target("avx2,fma"))) float exp_shifted_avx2(float* x, std::int64_t n, float offset) {
  using V = cpu::tiled::Simd<8>;
  V::vf sum{};
  std::int64_t j = 0;
  for (; j + 8 <= n; j += 8) {
    const V::vf e = V::exp(V::load(x + j) - offset);
    V::store(x + j, e);
    sum += e;
  }
  float total = V::hsum(sum);
  for (; j < n; ++j) total += (x[j] = std::exp(x[j] - offset));
  return total;
}

float exp_shifted(float* x, std::int64_t n, float offset) {
  static const bool avx2 = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
  if (avx2) return exp_shifted_avx2(x, n, offset);
  float total = 0.0f;
  for (std::int64_t j = 0; j < n; ++j) total += (x[j] = std::exp(x[j] - offset));
  return total;
}

}  // namespace

std::int64_t materialized_forward_bytes(const MaterializedShape& s) { return s.seqlen * s.seqlen * 4; }
std::int64_t materialized_backward_bytes(const MaterializedShape& s) { return 2 * s.seqlen * s.seqlen * 4; }

namespace {

// S[n][n] = scale * Q_h K_h^T for head h; the heads interleave, so every row stride is heads * head_dim.
void scores(const MaterializedShape& s, const float* q, const float* k, std::int64_t h, float* S) {
  const int n = static_cast<int>(s.seqlen);
  const int d = static_cast<int>(s.head_dim);
  const int ld = static_cast<int>(s.heads * s.head_dim);
  const float scale = 1.0f / std::sqrt(static_cast<float>(s.head_dim));
  cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, n, n, d, scale, q + h * d, ld, k + h * d, ld, 0.0f, S, n);
}

}  // namespace

void materialized_forward(const MaterializedShape& s, const float* q, const float* k, const float* v, float* out,
                          float* lse, float* S) {
  const std::int64_t n = s.seqlen;
  const int d = static_cast<int>(s.head_dim);
  const int ld = static_cast<int>(s.heads * s.head_dim);
  for (std::int64_t h = 0; h < s.heads; ++h) {
    scores(s, q, k, h, S);
#pragma omp parallel for schedule(static)
    for (std::int64_t i = 0; i < n; ++i) {
      float* row = S + i * n;
      const std::int64_t visible = s.causal ? i + 1 : n;
      float m = -std::numeric_limits<float>::infinity();
      for (std::int64_t j = 0; j < visible; ++j) m = row[j] > m ? row[j] : m;
      const float sum = exp_shifted(row, visible, m);
      const float inv = 1.0f / sum;
      for (std::int64_t j = 0; j < visible; ++j) row[j] *= inv;
      for (std::int64_t j = visible; j < n; ++j) row[j] = 0.0f;
      lse[h * n + i] = m + std::log(sum);
    }
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, static_cast<int>(n), d, static_cast<int>(n), 1.0f, S,
                static_cast<int>(n), v + h * d, ld, 0.0f, out + h * d, ld);
  }
}

void materialized_backward(const MaterializedShape& s, const float* q, const float* k, const float* v,
                           const float* out, const float* dout, const float* lse, float* dq, float* dk, float* dv,
                           float* scratch) {
  const std::int64_t n = s.seqlen;
  const int ni = static_cast<int>(n);
  const int d = static_cast<int>(s.head_dim);
  const int ld = static_cast<int>(s.heads * s.head_dim);
  const float scale = 1.0f / std::sqrt(static_cast<float>(s.head_dim));
  float* P = scratch;
  float* dP = scratch + n * n;
  for (std::int64_t h = 0; h < s.heads; ++h) {
    scores(s, q, k, h, P);
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, ni, ni, d, 1.0f, dout + h * d, ld, v + h * d, ld, 0.0f, dP,
                ni);
#pragma omp parallel for schedule(static)
    for (std::int64_t i = 0; i < n; ++i) {
      float* p = P + i * n;
      float* dp = dP + i * n;
      double di = 0.0;
      for (int c = 0; c < d; ++c) di += static_cast<double>(dout[i * ld + h * d + c]) * out[i * ld + h * d + c];
      const float l = lse[h * n + i];
      const std::int64_t visible = s.causal ? i + 1 : n;
      exp_shifted(p, visible, l);
      for (std::int64_t j = 0; j < visible; ++j) dp[j] = p[j] * (dp[j] - static_cast<float>(di)) * scale;
      for (std::int64_t j = visible; j < n; ++j) p[j] = dp[j] = 0.0f;
    }
    // dV = P^T dO, dQ = dS K, dK = dS^T Q (dP now holds dS, already times the softmax scale).
    cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, ni, d, ni, 1.0f, P, ni, dout + h * d, ld, 0.0f, dv + h * d,
                ld);
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, ni, d, ni, 1.0f, dP, ni, k + h * d, ld, 0.0f, dq + h * d,
                ld);
    cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, ni, d, ni, 1.0f, dP, ni, q + h * d, ld, 0.0f, dk + h * d,
                ld);
  }
}

}  // namespace ioattn::bench
