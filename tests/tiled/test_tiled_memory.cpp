// The tiled backend at seqlen 32768, head dim 128, forward and backward: its extra memory stays at a few MiB, where
// a materialized score matrix of one head would take 32768^2 * 4 bytes = 4 GiB.
//
// Measured twice: the workspace the backend reports (*_workspace_bytes) and the growth of the process's peak
// resident set (VmHWM in /proc/self/status) across each call, which also catches any allocation the workspace
// size does not account for. Results are spot-checked against fp64 sums computed here, row by row (O(N) each).
// Causal, one head, bf16: about half a minute on 2 cores.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdint>
#include <fstream>
#include <limits>
#include <string>
#include <vector>

#include "ioattn/attention.hpp"
#include "ioattn/core/convert.hpp"
#include "support/random.hpp"

namespace ioattn::test {
namespace {

constexpr std::int64_t kSeq = 32768;
constexpr std::int64_t kDim = 128;
constexpr std::int64_t kQuadraticBytes = kSeq * kSeq * 4;    // one head's fp32 score matrix: 4 GiB
constexpr std::int64_t kWorkspaceLimit = 8 << 20;              // "a few MiB"
constexpr std::int64_t kPeakGrowthLimit = 32 << 20;            // workspace + allocator and thread slack

// Peak resident set of this process so far, in bytes.
std::int64_t peak_rss_bytes() {
  std::ifstream status("/proc/self/status");
  for (std::string line; std::getline(status, line);) {
    if (line.rfind("VmHWM:", 0) == 0) return std::stoll(line.substr(6)) * 1024;  // reported in kB
  }
  return -1;
}

using Bf16 = std::uint16_t;
float f(Bf16 x) { return core::bf16_to_float(x); }

struct Long {
  std::vector<Bf16> q, k, v, out, dout, dq, dk, dv;
  std::vector<float> lse;
  TensorView view(std::vector<Bf16>& x) { return TensorView::contiguous(x.data(), DType::bf16, {1, kSeq, 1, kDim}); }
  TensorView lse_view() { return TensorView::contiguous(lse.data(), DType::f32, {1, 1, kSeq}); }
};

// fp64 sums for one query row i (causal: keys 0..i): out_i, lse_i, and dq_i.
struct RowTruth {
  std::vector<double> out, dq;
  double lse = 0;
};
RowTruth row_truth(const Long& t, std::int64_t i, double scale) {
  RowTruth r;
  std::vector<double> s(static_cast<std::size_t>(i + 1));
  double m = -std::numeric_limits<double>::infinity();
  for (std::int64_t j = 0; j <= i; ++j) {
    double dot = 0;
    for (std::int64_t c = 0; c < kDim; ++c) dot += double(f(t.q[i * kDim + c])) * f(t.k[j * kDim + c]);
    s[j] = dot * scale;
    m = std::max(m, s[j]);
  }
  double l = 0;
  for (std::int64_t j = 0; j <= i; ++j) l += std::exp(s[j] - m);
  r.lse = m + std::log(l);
  r.out.assign(kDim, 0.0);
  for (std::int64_t j = 0; j <= i; ++j)
    for (std::int64_t c = 0; c < kDim; ++c) r.out[c] += std::exp(s[j] - r.lse) * f(t.v[j * kDim + c]);
  // dq_i = scale * sum_j P_ij (dP_ij - D_i) k_j, with D_i from the stored output as the backward uses it.
  double d = 0;
  for (std::int64_t c = 0; c < kDim; ++c) d += double(f(t.dout[i * kDim + c])) * f(t.out[i * kDim + c]);
  r.dq.assign(kDim, 0.0);
  for (std::int64_t j = 0; j <= i; ++j) {
    double dp = 0;
    for (std::int64_t c = 0; c < kDim; ++c) dp += double(f(t.dout[i * kDim + c])) * f(t.v[j * kDim + c]);
    const double ds = std::exp(s[j] - double(t.lse[i])) * (dp - d);
    for (std::int64_t c = 0; c < kDim; ++c) r.dq[c] += scale * ds * f(t.k[j * kDim + c]);
  }
  return r;
}

// dv_j = sum over rows i >= j of P_ij dout_i: one key's column of P, recomputed from the stored lse.
std::vector<double> dv_truth(const Long& t, std::int64_t j, double scale) {
  std::vector<double> dv(kDim, 0.0);
  for (std::int64_t i = j; i < kSeq; ++i) {
    double dot = 0;
    for (std::int64_t c = 0; c < kDim; ++c) dot += double(f(t.q[i * kDim + c])) * f(t.k[j * kDim + c]);
    const double p = std::exp(dot * scale - double(t.lse[i]));
    for (std::int64_t c = 0; c < kDim; ++c) dv[c] += p * f(t.dout[i * kDim + c]);
  }
  return dv;
}

// max |got - want| over a row, against a bf16 allowance scaled by the row's magnitude.
void expect_close(const char* what, std::int64_t index, const Bf16* got, const std::vector<double>& want) {
  double err = 0, mag = 0;
  for (std::int64_t c = 0; c < kDim; ++c) {
    err = std::max(err, std::abs(double(f(got[c])) - want[c]));
    mag = std::max(mag, std::abs(want[c]));
  }
  EXPECT_LE(err, 2e-2 * mag + 1e-6) << what << " row " << index << " (" << seed_text() << ")";
}

TEST(TiledMemory, Seqlen32kHeadDim128ForwardAndBackward) {
  Long t;
  Rng rng("TiledMemory");
  const std::size_t n = static_cast<std::size_t>(kSeq * kDim);
  for (auto* x : {&t.q, &t.k, &t.v, &t.dout}) {
    x->resize(n);
    for (Bf16& e : *x) e = core::float_to_bf16(static_cast<float>(rng.normal()));
  }
  const Bf16 nan_bf16 = core::float_to_bf16(std::numeric_limits<float>::quiet_NaN());
  for (auto* x : {&t.out, &t.dq, &t.dk, &t.dv}) x->assign(n, nan_bf16);
  t.lse.assign(static_cast<std::size_t>(kSeq), std::numeric_limits<float>::quiet_NaN());

  ForwardArgs fa;
  fa.q = t.view(t.q);
  fa.k = t.view(t.k);
  fa.v = t.view(t.v);
  fa.out = t.view(t.out);
  fa.lse = t.lse_view();
  BackwardArgs ba;
  ba.q = fa.q;
  ba.k = fa.k;
  ba.v = fa.v;
  ba.out = fa.out;
  ba.lse = fa.lse;
  ba.dout = t.view(t.dout);
  ba.dq = t.view(t.dq);
  ba.dk = t.view(t.dk);
  ba.dv = t.view(t.dv);
  AttentionParams params;
  params.impl = "tiled";
  params.mask = Mask::causal();
  // Two threads whatever the machine: the backward's fused single pass keeps a dQ partial per thread and is used
  // only while those stay within 16 MiB (src/cpu/tiled_backward.cpp); at this length, with two or more threads, it
  // is the two-pass backward that runs, the one whose workspace stays flat in seqlen.
  params.num_threads = 2;

  const std::int64_t fwd_ws = static_cast<std::int64_t>(forward_workspace_bytes(fa, params));
  const std::int64_t bwd_ws = static_cast<std::int64_t>(backward_workspace_bytes(ba, params));
  RecordProperty("forward_workspace_bytes", std::to_string(fwd_ws));
  RecordProperty("backward_workspace_bytes", std::to_string(bwd_ws));
  EXPECT_LE(fwd_ws, kWorkspaceLimit);
  EXPECT_LE(bwd_ws, kWorkspaceLimit);

  // Start the OpenMP threads (their stacks) before the baseline is taken.
  {
    float a = 1, b = 1, c = 1, o = 0;
    ForwardArgs tiny;
    tiny.q = TensorView::contiguous(&a, DType::f32, {1, 1, 1, 1});
    tiny.k = TensorView::contiguous(&b, DType::f32, {1, 1, 1, 1});
    tiny.v = TensorView::contiguous(&c, DType::f32, {1, 1, 1, 1});
    tiny.out = TensorView::contiguous(&o, DType::f32, {1, 1, 1, 1});
    attention_forward(tiny, params);
  }

  const std::int64_t before = peak_rss_bytes();
  ASSERT_GT(before, 0) << "no VmHWM in /proc/self/status";
  attention_forward(fa, params);
  const std::int64_t after_forward = peak_rss_bytes();
  attention_backward(ba, params);
  const std::int64_t after_backward = peak_rss_bytes();
  const std::int64_t growth = after_backward - before;
  RecordProperty("peak_rss_growth_bytes", std::to_string(growth));
  std::printf("workspace: forward %.2f MiB, backward %.2f MiB; peak RSS growth: forward %.2f MiB, total %.2f MiB "
              "(materialized scores: %.0f MiB per head)\n",
              fwd_ws / 1048576.0, bwd_ws / 1048576.0, (after_forward - before) / 1048576.0, growth / 1048576.0,
              kQuadraticBytes / 1048576.0);
  EXPECT_LE(growth, kPeakGrowthLimit);
  EXPECT_LT(growth, kQuadraticBytes / 100);

  // Every output written, and finite (causal: every row sees at least its diagonal key).
  for (auto* x : {&t.out, &t.dq, &t.dk, &t.dv}) {
    for (Bf16 e : *x) ASSERT_TRUE(std::isfinite(f(e))) << "an output was left unwritten or is not finite";
  }
  for (float e : t.lse) ASSERT_TRUE(std::isfinite(e));

  // Spot checks against fp64: the first and last rows, rows at tile edges, and a few random ones.
  const double scale = 1.0 / std::sqrt(double(kDim));
  std::vector<std::int64_t> rows = {0, 1, 255, 256, kSeq - 1};
  for (int r = 0; r < 3; ++r) rows.push_back(rng.uniform_int(0, kSeq - 1));
  for (std::int64_t i : rows) {
    const RowTruth truth = row_truth(t, i, scale);
    EXPECT_NEAR(t.lse[i], truth.lse, 1e-3 * std::max(1.0, std::abs(truth.lse))) << "lse row " << i;
    expect_close("out", i, &t.out[i * kDim], truth.out);
    expect_close("dq", i, &t.dq[i * kDim], truth.dq);
  }
  for (std::int64_t j : {std::int64_t{0}, kSeq / 2 + 7, kSeq - 1}) {
    expect_close("dv", j, &t.dv[j * kDim], dv_truth(t, j, scale));
  }
}

}  // namespace
}  // namespace ioattn::test
