// The tiled CPU backend: a quick check against the fp64 reference on shapes chosen to stress the tiling (rows and
// keys that do not fill a tile, tiles straddling the mask edges, more than one query tile per head), bitwise
// determinism across thread counts, and caller-owned workspace. The shared case table (tests/attention) covers the
// features in full. CTest runs this binary twice: as is, and with IOATTN_TILED_ISA=baseline (the SSE2 variant).
#include <gtest/gtest.h>
#include <omp.h>

#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <string>
#include <vector>

#include "ioattn/attention.hpp"
#include "ioattn/error.hpp"
#include "support/cases.hpp"
#include "support/harness.hpp"
#include "support/random.hpp"

namespace ioattn::test {
namespace {

std::vector<Case> tiled_cases() {
  std::vector<Case> cases;
  Case c;
  c.dtype = DType::f32;
  c.heads_q = 2;
  c.heads_kv = 1;
  c.seqlen_q = 517;  // more than one query tile, the last one ragged
  c.seqlen_k = 389;
  c.dim_qk = 64;
  c.dim_v = 64;
  c.mask = Mask::causal();
  cases.push_back(c);

  c.dtype = DType::bf16;
  c.mask = Mask::window(70, 5, Alignment::top_left);  // band crosses tiles: skip, full and partial tiles all occur
  c.dim_qk = 72;                                     // head dims that are not multiples of the 16-float padding
  c.dim_v = 40;
  c.sinks = true;
  cases.push_back(c);

  c.dtype = DType::f16;
  c.mask = Mask::none();
  c.sinks = false;
  c.softcap = 20.0f;
  c.alibi = Alibi::per_head;
  c.seqlen_q = 300;
  c.seqlen_k = 1;
  c.dim_qk = c.dim_v = 128;
  cases.push_back(c);

  Case v;  // varlen: empty sequences and a long one
  v.dtype = DType::bf16;
  v.heads_q = 4;
  v.heads_kv = 2;
  v.dim_qk = v.dim_v = 96;
  v.varlen_q = {0, 300, 7, 0};
  v.varlen_k = {5, 410, 0, 0};
  v.mask = Mask::causal(Alignment::top_left);
  cases.push_back(v);
  return cases;
}

class TiledVsReference : public ::testing::TestWithParam<Case> {};

TEST_P(TiledVsReference, ForwardAndBackward) {
  CaseData data(GetParam());
  const Results got = data.run("tiled", Device::cpu, /*backward=*/true);
  for (const Comparison& cmp : data.compare_all(got, /*backward=*/true)) {
    EXPECT_TRUE(cmp.ok()) << cmp.describe() << "  (" << seed_text() << ")";
  }
}

INSTANTIATE_TEST_SUITE_P(Shapes, TiledVsReference, ::testing::ValuesIn(tiled_cases()),
                         [](const auto& info) { return info.param.name(); });

// The backward has two schedules (src/cpu/tiled_backward.cpp): a fused single pass with per-thread dQ partials when
// there are at least 4 key tiles per thread and the partials are small, else two passes. With 700 keys at head dim
// 64 (128-key tiles) one thread takes the fused pass and three threads the two passes; both must match the reference.
TEST(TiledBackwardSchedules, FusedAndTwoPassBothMatchTheReference) {
  Case c;
  c.dtype = DType::bf16;
  c.heads_q = 4;
  c.heads_kv = 2;
  c.seqlen_q = 150;
  c.seqlen_k = 700;
  c.dim_qk = c.dim_v = 64;
  c.mask = Mask::causal();
  c.sinks = true;
  CaseData data(c);
  const int saved = omp_get_max_threads();
  for (int threads : {1, 3}) {
    omp_set_num_threads(threads);
    const Results got = data.run("tiled", Device::cpu, /*backward=*/true);
    for (const Comparison& cmp : data.compare_all(got, /*backward=*/true)) {
      EXPECT_TRUE(cmp.ok()) << threads << " threads: " << cmp.describe() << "  (" << seed_text() << ")";
    }
  }
  omp_set_num_threads(saved);
}

// A problem with every feature on, held in fp32 buffers, run through the public API.
struct Problem {
  std::int64_t batch = 2, seq_q = 333, seq_k, heads_q = 4, heads_kv = 2, dim = 80;
  std::vector<float> q, k, v, out, lse, dout, dq, dk, dv, sinks, dsinks, slopes;

  explicit Problem(const std::string& stream, std::int64_t keys = 301) : seq_k(keys) {
    Rng rng(stream);
    auto fill = [&](std::vector<float>& x, std::int64_t n) {
      x.resize(static_cast<std::size_t>(n));
      for (float& e : x) e = static_cast<float>(rng.normal());
    };
    fill(q, batch * seq_q * heads_q * dim);
    fill(k, batch * seq_k * heads_kv * dim);
    fill(v, batch * seq_k * heads_kv * dim);
    fill(dout, batch * seq_q * heads_q * dim);
    fill(sinks, heads_q);
    slopes = {0.5f, 0.25f, 0.125f, 0.0625f};
    poison();
  }
  void poison() {
    const float nan = std::numeric_limits<float>::quiet_NaN();
    out.assign(q.size(), nan);
    dq.assign(q.size(), nan);
    dk.assign(k.size(), nan);
    dv.assign(v.size(), nan);
    lse.assign(static_cast<std::size_t>(batch * heads_q * seq_q), nan);
    dsinks.assign(static_cast<std::size_t>(heads_q), nan);
  }
  TensorView qview(std::vector<float>& x) { return TensorView::contiguous(x.data(), DType::f32, {batch, seq_q, heads_q, dim}); }
  TensorView kview(std::vector<float>& x) { return TensorView::contiguous(x.data(), DType::f32, {batch, seq_k, heads_kv, dim}); }
  ForwardArgs forward_args() {
    ForwardArgs a;
    a.q = qview(q);
    a.k = kview(k);
    a.v = kview(v);
    a.out = qview(out);
    a.lse = TensorView::contiguous(lse.data(), DType::f32, {batch, heads_q, seq_q});
    return a;
  }
  BackwardArgs backward_args() {
    BackwardArgs a;
    a.q = qview(q);
    a.k = kview(k);
    a.v = kview(v);
    a.out = qview(out);
    a.dout = qview(dout);
    a.lse = TensorView::contiguous(lse.data(), DType::f32, {batch, heads_q, seq_q});
    a.dq = qview(dq);
    a.dk = kview(dk);
    a.dv = kview(dv);
    a.dsinks = TensorView::contiguous(dsinks.data(), DType::f32, {heads_q});
    return a;
  }
  AttentionParams params(int threads) {
    AttentionParams p;
    p.impl = "tiled";
    p.num_threads = threads;
    p.mask = Mask::window(100, 20);
    p.softcap = 15.0f;
    p.alibi_slopes = TensorView::contiguous(slopes.data(), DType::f32, {heads_q});
    p.sinks = TensorView::contiguous(sinks.data(), DType::f32, {heads_q});
    return p;
  }
  // Forward then backward; every output concatenated.
  std::vector<float> run(const AttentionParams& params) {
    poison();
    attention_forward(forward_args(), params);
    attention_backward(backward_args(), params);
    std::vector<float> all;
    for (const auto* x : {&out, &lse, &dq, &dk, &dv, &dsinks}) all.insert(all.end(), x->begin(), x->end());
    return all;
  }
};

bool bitwise_equal(const std::vector<float>& a, const std::vector<float>& b) {
  return a.size() == b.size() && std::memcmp(a.data(), b.data(), a.size() * sizeof(float)) == 0;
}

// Each output element comes from one work item in a fixed order: no result may depend on the thread count.
TEST(TiledDeterminism, BitwiseAcrossThreadCounts) {
  Problem p("TiledDeterminism");
  const std::vector<float> one = p.run(p.params(1));
  for (float x : one) ASSERT_FALSE(std::isnan(x)) << "an output was left unwritten";
  for (int threads : {2, 3, 5}) {
    EXPECT_TRUE(bitwise_equal(one, p.run(p.params(threads)))) << threads << " threads";
  }
  AttentionParams det = p.params(2);
  det.deterministic = true;
  EXPECT_TRUE(bitwise_equal(one, p.run(det)));
}

// The fused backward (seqlen_k 1100 >= 4 threads' worth of key tiles) sums per-thread dQ partials in thread order:
// reproducible for a given thread count.
TEST(TiledDeterminism, FusedBackwardBitwiseForAFixedThreadCount) {
  Problem fused("TiledDeterminismFused", 1100);
  const std::vector<float> first = fused.run(fused.params(2));
  for (float x : first) ASSERT_FALSE(std::isnan(x)) << "an output was left unwritten";
  EXPECT_TRUE(bitwise_equal(first, fused.run(fused.params(2))));
}

TEST(TiledWorkspace, CallerOwnedGivesTheSameResult) {
  Problem p("TiledWorkspace");
  const std::vector<float> own = p.run(p.params(2));
  AttentionParams params = p.params(2);
  const std::size_t fwd = forward_workspace_bytes(p.forward_args(), params);
  const std::size_t bwd = backward_workspace_bytes(p.backward_args(), params);
  EXPECT_GT(fwd, 0u);
  EXPECT_GT(bwd, 0u);
  // Offset by 4 bytes: the backend must cope with a buffer that is not 64-byte aligned.
  std::vector<char> buffer(std::max(fwd, bwd) + 4);
  params.workspace = {buffer.data() + 4, std::max(fwd, bwd)};
  EXPECT_TRUE(bitwise_equal(own, p.run(params)));
}

TEST(TiledWorkspace, TooSmallIsRejectedAndNothingIsWritten) {
  Problem p("TiledWorkspaceSmall");
  AttentionParams params = p.params(2);
  const std::size_t fwd = forward_workspace_bytes(p.forward_args(), params);
  std::vector<char> buffer(fwd);
  params.workspace = {buffer.data(), fwd - 1};
  p.poison();
  try {
    attention_forward(p.forward_args(), params);
    FAIL() << "a workspace one byte short was accepted";
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), ErrorCode::invalid_argument);
    EXPECT_NE(std::string(e.what()).find("workspace"), std::string::npos) << e.what();
  }
  for (float x : p.out) ASSERT_TRUE(std::isnan(x)) << "out was written by a rejected call";
}

TEST(TiledBackend, IsTheCpuDefault) { EXPECT_EQ(default_backend(Device::cpu), "tiled"); }

}  // namespace
}  // namespace ioattn::test
