// Calls that must succeed: through every CPU impl, with nothing to do, varlen batches with empty sequences; the
// backend choice; and the normalized Problem that validation hands the backends.
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <limits>
#include <regex>

#include "api/fixture.hpp"
#include "api/validate.hpp"

namespace ioattn::apitest {
namespace {

const float kNaN = std::numeric_limits<float>::quiet_NaN();

bool listed(const std::string& list, const std::string& name) {
  return (" " + list + " ").find(" " + name + " ") != std::string::npos;
}

TEST(Dispatch, ForwardMatchesNaiveAttentionThroughEveryCpuImpl) {
  for (const char* impl : {"auto", "reference", "tiled"}) {
    Problem p(2, 9, 13, 4, 2, 16, 12);  // GQA 2, head_dim_qk != head_dim_v
    std::fill(p.out.begin(), p.out.end(), kNaN);
    std::fill(p.lse.begin(), p.lse.end(), kNaN);
    AttentionParams params;
    params.impl = impl;
    ASSERT_NO_THROW(attention_forward(p.forward_args(), params)) << impl;
    std::vector<double> out, lse;
    naive_attention(p, out, lse, 1.0 / std::sqrt(16.0));
    for (std::size_t e = 0; e < out.size(); ++e) ASSERT_NEAR(p.out[e], out[e], 2e-5) << impl << " out " << e;
    for (std::size_t e = 0; e < lse.size(); ++e) ASSERT_NEAR(p.lse[e], lse[e], 2e-5) << impl << " lse " << e;
  }
}

TEST(Dispatch, DefaultScaleIsInverseSqrtOfHeadDimQk) {
  Problem a(1, 6, 6, 2, 2, 25, 7), b(1, 6, 6, 2, 2, 25, 7), c(1, 6, 6, 2, 2, 25, 7);
  attention_forward(a.forward_args());
  AttentionParams explicit_scale;
  explicit_scale.softmax_scale = 0.2f;  // 1 / sqrt(25)
  attention_forward(b.forward_args(), explicit_scale);
  AttentionParams unit_scale;
  unit_scale.softmax_scale = 1.0f;
  attention_forward(c.forward_args(), unit_scale);
  EXPECT_EQ(a.out, b.out);
  EXPECT_NE(a.out, c.out);
  const detail::Problem prob = detail::make_forward_problem(a.forward_args(), {});
  EXPECT_EQ(prob.scale, 0.2f);
}

TEST(Dispatch, BackwardWritesEveryGradient) {
  Problem p(1, 7, 5, 4, 1, 8, 8);  // MQA
  AttentionParams params;
  params.sinks = p.sinks_view();
  params.mask = Mask::causal();
  attention_forward(p.forward_args(), params);
  BackwardArgs b = p.backward_args();
  b.dsinks = p.dsinks_view();
  for (auto* g : {&p.dq, &p.dk, &p.dv, &p.dsinks}) std::fill(g->begin(), g->end(), kNaN);
  ASSERT_NO_THROW(attention_backward(b, params));
  for (auto* g : {&p.dq, &p.dk, &p.dv, &p.dsinks}) {
    for (float x : *g) ASSERT_TRUE(std::isfinite(x));
  }
}

TEST(Dispatch, CallsWithNothingToDoSucceed) {
  for (const char* impl : {"auto", "reference"}) {
    AttentionParams params;
    params.impl = impl;
    Problem no_batch(0, 5, 7, 4, 2, 8, 8);  // every buffer empty: data may be null
    EXPECT_NO_THROW(attention_forward(no_batch.forward_args(), params)) << impl;
    EXPECT_NO_THROW(attention_backward(no_batch.backward_args(), params)) << impl;
    EXPECT_EQ(forward_workspace_bytes(no_batch.forward_args(), params), 0u);
    Problem no_rows(2, 0, 0, 4, 2, 8, 8);
    EXPECT_NO_THROW(attention_forward(no_rows.forward_args(), params)) << impl;
    EXPECT_NO_THROW(attention_backward(no_rows.backward_args(), params)) << impl;
    Problem no_sequences(std::vector<std::int32_t>{}, std::vector<std::int32_t>{}, 4, 2, 8, 8);  // cu = {0}
    EXPECT_NO_THROW(attention_forward(no_sequences.forward_args(), params)) << impl;
    EXPECT_NO_THROW(attention_backward(no_sequences.backward_args(), params)) << impl;
  }
  // Nothing to do is no excuse for bad arguments.
  Problem bad(0, 5, 7, 6, 4, 8, 8);
  EXPECT_THROW(attention_forward(bad.forward_args()), Error);
}

TEST(Dispatch, QueriesWithoutKeysGiveZeroOutputAndMinusInfinityLse) {
  Problem p(2, 3, 0, 2, 2, 4, 4);
  std::fill(p.out.begin(), p.out.end(), kNaN);
  std::fill(p.lse.begin(), p.lse.end(), kNaN);
  attention_forward(p.forward_args());
  for (float x : p.out) ASSERT_EQ(x, 0.0f);
  for (float x : p.lse) ASSERT_EQ(x, -std::numeric_limits<float>::infinity());
}

// A varlen batch equals its sequences run one by one as dense batches of one, empty sequences included.
TEST(Dispatch, VarlenWithEmptySequencesEqualsPerSequenceDenseCalls) {
  const std::vector<std::int32_t> lens_q = {3, 0, 4, 2, 0}, lens_k = {2, 5, 0, 3, 0};
  for (const char* impl : {"auto", "reference"}) {
    Problem p(lens_q, lens_k, 4, 2, 8, 6);
    std::fill(p.out.begin(), p.out.end(), kNaN);
    std::fill(p.lse.begin(), p.lse.end(), kNaN);
    AttentionParams params;
    params.impl = impl;
    params.mask = Mask::causal();
    ASSERT_NO_THROW(attention_forward(p.forward_args(), params)) << impl;
    for (std::size_t b = 0; b < lens_q.size(); ++b) {
      const std::int64_t q0 = p.cu_q[b], k0 = p.cu_k[b], lq = lens_q[b], lk = lens_k[b];
      std::vector<float> out(static_cast<std::size_t>(lq * 4 * 6), kNaN), lse(static_cast<std::size_t>(4 * lq), kNaN);
      ForwardArgs one;
      one.q = TensorView::contiguous(p.q.data() + q0 * 4 * 8, DType::f32, {1, lq, 4, 8});
      one.k = TensorView::contiguous(p.k.data() + k0 * 2 * 8, DType::f32, {1, lk, 2, 8});
      one.v = TensorView::contiguous(p.v.data() + k0 * 2 * 6, DType::f32, {1, lk, 2, 6});
      one.out = TensorView::contiguous(out.data(), DType::f32, {1, lq, 4, 6});
      one.lse = TensorView::contiguous(lse.data(), DType::f32, {1, 4, lq});
      attention_forward(one, params);
      for (std::int64_t i = 0; i < lq; ++i) {
        for (std::int64_t h = 0; h < 4; ++h) {
          ASSERT_EQ(p.lse[static_cast<std::size_t>(h * p.rows_q() + q0 + i)], lse[static_cast<std::size_t>(h * lq + i)])
              << impl << " sequence " << b;
          for (std::int64_t c = 0; c < 6; ++c) {
            ASSERT_EQ(p.out[static_cast<std::size_t>(((q0 + i) * 4 + h) * 6 + c)],
                      out[static_cast<std::size_t>((i * 4 + h) * 6 + c)])
                << impl << " sequence " << b;
          }
        }
      }
    }
    // Backward on the same batch: every gradient row written, and keys no query sees get zero gradients.
    std::fill(p.dq.begin(), p.dq.end(), kNaN);
    std::fill(p.dk.begin(), p.dk.end(), kNaN);
    std::fill(p.dv.begin(), p.dv.end(), kNaN);
    ASSERT_NO_THROW(attention_backward(p.backward_args(), params)) << impl;
    for (float x : p.dq) ASSERT_TRUE(std::isfinite(x)) << impl;
    for (float x : p.dk) ASSERT_TRUE(std::isfinite(x)) << impl;
    for (std::int64_t row = p.cu_k[1]; row < p.cu_k[2]; ++row) {  // sequence 1 has keys but no queries
      for (std::int64_t e = 0; e < 2 * 6; ++e) ASSERT_EQ(p.dv[static_cast<std::size_t>(row * 12 + e)], 0.0f) << impl;
    }
  }
}

TEST(Dispatch, CallerWorkspaceIsCheckedAndUsed) {
  int checked = 0;
  for (const char* impl : {"reference", "tiled"}) {
    Problem p(2, 33, 47, 4, 2, 16, 16);
    AttentionParams params;
    params.impl = impl;
    const std::size_t fwd = forward_workspace_bytes(p.forward_args(), params);
    const std::size_t bwd = backward_workspace_bytes(p.backward_args(), params);
    if (fwd == 0 || bwd == 0) continue;  // this backend needs no scratch: nothing to check
    ++checked;
    std::vector<unsigned char> scratch(std::max(fwd, bwd));
    params.workspace = {scratch.data(), fwd - 1};
    expect_rejected(p, [&] { attention_forward(p.forward_args(), params); }, "params.workspace",
                    {"at least " + std::to_string(fwd) + " bytes", "got " + std::to_string(fwd - 1)});
    params.workspace = {scratch.data(), bwd - 1};
    expect_rejected(p, [&] { attention_backward(p.backward_args(), params); }, "params.workspace",
                    {"at least " + std::to_string(bwd) + " bytes"});
    // Exactly the size asked for is enough, and gives the result of a self-allocating call.
    Problem self(2, 33, 47, 4, 2, 16, 16);
    AttentionParams own;
    own.impl = impl;
    attention_forward(self.forward_args(), own);
    params.workspace = {scratch.data(), fwd};
    ASSERT_NO_THROW(attention_forward(p.forward_args(), params)) << impl;
    EXPECT_EQ(p.out, self.out) << impl;
    params.workspace = {scratch.data(), bwd};
    ASSERT_NO_THROW(attention_backward(p.backward_args(), params)) << impl;
  }
  if (checked == 0) GTEST_SKIP() << "no CPU backend in this build asks for workspace";
}

TEST(Dispatch, BackendListsAndDefaults) {
  const std::string list = backends();
  EXPECT_TRUE(listed(list, "reference")) << list;
  EXPECT_TRUE(listed(list, "tiled")) << list;
  const std::string cpu = default_backend(Device::cpu);
  EXPECT_TRUE(listed(list, cpu)) << cpu;
  EXPECT_NE(cpu, "reference") << "the fp64 oracle should never be the default";
  EXPECT_TRUE(std::regex_match(std::string(version()), std::regex("[0-9]+\\.[0-9]+\\.[0-9]+"))) << version();
#if !IOATTN_HAVE_CUDA
  EXPECT_EQ(default_backend(Device::cuda), "");
  EXPECT_EQ(cuda_device_count(), 0);
  EXPECT_FALSE(listed(list, "cuda"));
#else
  EXPECT_GE(cuda_device_count(), 0);
  EXPECT_TRUE(listed(list, default_backend(Device::cuda)));
#endif
}

TEST(Dispatch, NamedImplOnTheWrongDevice) {
  Problem p(1, 4, 4, 2, 2, 8, 8);
  ForwardArgs a = p.forward_args();
  for (TensorView* t : {&a.q, &a.k, &a.v, &a.out, &a.lse}) t->device = Device::cuda;
  AttentionParams params;
  params.impl = "reference";
  expect_rejected(p, [&] { attention_forward(a, params); }, "params.impl", {"cuda:0", "runs on cpu"});
#if !IOATTN_HAVE_CUDA
  // CUDA tensors in a CPU-only build: valid arguments, but nothing here can run them.
  expect_rejected(p, [&] { attention_forward(a); }, "impl 'auto'", {"no backend for tensors on cuda"},
                  ErrorCode::unsupported);
#else
  params.impl = "cuda";
  expect_rejected(p, [&] { attention_forward(p.forward_args(), params); }, "params.impl", {"runs on cuda"});
#endif
}

TEST(Problem, DenseOperandsFollowTheViewStrides) {
  Problem p(2, 5, 7, 4, 2, 8, 6);
  std::vector<float> wide(2 * 5 * 4 * 16);
  ForwardArgs a = p.forward_args();
  a.q = TensorView::strided(wide.data(), DType::f32, {2, 5, 4, 8}, {320, 64, 16, 1});  // a slice of [2, 5, 4, 16]
  const detail::Problem prob = detail::make_forward_problem(a, {});
  EXPECT_FALSE(prob.is_varlen());
  EXPECT_EQ(prob.batch, 2);
  EXPECT_EQ(prob.seqlen_q, 5);
  EXPECT_EQ(prob.seqlen_k, 7);
  EXPECT_EQ(prob.heads_q, 4);
  EXPECT_EQ(prob.heads_kv, 2);
  EXPECT_EQ(prob.group_size(), 2);
  EXPECT_EQ(prob.dim_qk, 8);
  EXPECT_EQ(prob.dim_v, 6);
  EXPECT_EQ(prob.q.batch_stride, 320);
  EXPECT_EQ(prob.q.seq_stride, 64);
  EXPECT_EQ(prob.q.head_stride, 16);
  EXPECT_EQ(prob.k.offset(1, 3, 1), 1 * 7 * 16 + 3 * 16 + 8);
  // lse [batch, heads_q, seqlen_q]: the seq stride is its last one.
  EXPECT_EQ(prob.lse.batch_stride, 20);
  EXPECT_EQ(prob.lse.head_stride, 5);
  EXPECT_EQ(prob.lse.seq_stride, 1);
  EXPECT_EQ(prob.out.ptr, p.out.data());
  EXPECT_TRUE(detail::fits_int32_indexing(prob));
  EXPECT_EQ(detail::max_element_offset(prob), 320 + 4 * 64 + 3 * 16 + 7);  // q's last element is the farthest
}

TEST(Problem, VarlenOperandsHaveNoBatchStride) {
  Problem p({3, 0, 4}, {2, 5, 1}, 4, 2, 8, 6);
  ForwardArgs a = p.forward_args();
  const detail::Problem prob = detail::make_forward_problem(a, {});
  EXPECT_TRUE(prob.is_varlen());
  EXPECT_EQ(prob.batch, 3);
  EXPECT_EQ(prob.seqlen_q, 4);  // the longest sequences
  EXPECT_EQ(prob.seqlen_k, 5);
  EXPECT_EQ(prob.total_q, 7);
  EXPECT_EQ(prob.total_k, 8);
  EXPECT_EQ(prob.q.batch_stride, 0);
  EXPECT_EQ(prob.q.seq_stride, 32);
  EXPECT_EQ(prob.lse.batch_stride, 0);
  EXPECT_EQ(prob.lse.head_stride, 7);  // lse [heads_q, total_q]
  EXPECT_EQ(prob.lse.seq_stride, 1);
  const core::SeqSpan s = prob.span(2);
  EXPECT_EQ(s.q_offset, 3);
  EXPECT_EQ(s.q_len, 4);
  EXPECT_EQ(s.k_offset, 7);
  EXPECT_EQ(s.k_len, 1);
  // A given max_seqlen is kept (it bounds, e.g., a GPU grid); it may exceed the true longest.
  a.varlen->max_seqlen_q = 6;
  EXPECT_EQ(detail::make_forward_problem(a, {}).seqlen_q, 6);
}

TEST(Problem, ThirtyTwoBitIndexingLimit) {
  Problem p(2, 5, 7, 4, 2, 8, 6);
  ForwardArgs a = p.forward_args();
  // Strides past INT32_MAX (never dereferenced: the problem is only built, not run).
  a.k = TensorView::strided(p.k.data(), DType::f32, {2, 7, 2, 8}, {std::int64_t{1} << 31, 16, 8, 1});
  const detail::Problem prob = detail::make_forward_problem(a, {});
  EXPECT_EQ(detail::max_element_offset(prob), (std::int64_t{1} << 31) + 6 * 16 + 8 + 7);
  EXPECT_FALSE(detail::fits_int32_indexing(prob));
  BackwardArgs b = p.backward_args();
  b.dv = TensorView::strided(p.dv.data(), DType::f32, {2, 7, 2, 6}, {std::int64_t{1} << 32, 12, 6, 1});
  const detail::BackwardProblem bprob = detail::make_backward_problem(b, {});
  EXPECT_FALSE(detail::fits_int32_indexing(bprob));
  EXPECT_TRUE(detail::fits_int32_indexing(static_cast<const detail::Problem&>(bprob)));
}

}  // namespace
}  // namespace ioattn::apitest
