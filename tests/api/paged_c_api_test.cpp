// The paged C ABI: kv write, plan and forward through the C structs give what the dense C++ call gives on the same
// keys and values; failures come back as a status and a message naming the argument, with nothing written.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdint>
#include <random>
#include <string>
#include <vector>

#include "api/c_views.hpp"
#include "ioattn/attention.hpp"
#include "ioattn/ioattn.h"

namespace {

using ioattn::apitest::c_tensor;

// Two sequences (5 and 11 cached tokens, 2 and 3 of them new) in pages of 4 tokens, heads 4 / 2, head dim 8, fp32.
struct PagedBatch {
  static constexpr int64_t kPageSize = 4, kPages = 8, kHeadsQ = 4, kHeadsKv = 2, kDim = 8, kMaxPages = 3;
  std::vector<int32_t> lengths{5, 11}, q_lens{2, 3};
  std::vector<float> k_cache = std::vector<float>(kPages * kPageSize * kHeadsKv * kDim, NAN);
  std::vector<float> v_cache = k_cache;
  std::vector<float> k_dense, v_dense;  // the same keys and values, packed back to back
  std::vector<int32_t> table{6, 1, 0, 3, 7, 2};  // [2, 3]; sequence 0 uses pages 6, 1
  std::vector<int32_t> slots;
  std::vector<int32_t> cu_q{0, 2, 5}, cu_k{0, 5, 16};
  std::vector<float> q = std::vector<float>(5 * kHeadsQ * kDim);
  std::vector<float> out = std::vector<float>(5 * kHeadsQ * kDim, NAN), lse = std::vector<float>(kHeadsQ * 5, NAN);

  PagedBatch() {
    std::mt19937 gen(7);
    std::normal_distribution<float> normal;
    k_dense.resize(16 * kHeadsKv * kDim);
    v_dense.resize(k_dense.size());
    for (auto& x : k_dense) x = normal(gen);
    for (auto& x : v_dense) x = normal(gen);
    for (auto& x : q) x = normal(gen);
    for (int b = 0; b < 2; ++b) {
      for (int j = 0; j < lengths[static_cast<std::size_t>(b)]; ++j) {
        slots.push_back(table[static_cast<std::size_t>(b * kMaxPages + j / kPageSize)] * kPageSize + j % kPageSize);
      }
    }
  }
  ioattn_paged_forward_args args() {
    ioattn_paged_forward_args a{};
    a.q = c_tensor(q.data(), IOATTN_DTYPE_F32, {5, kHeadsQ, kDim});
    a.kv.k_cache = c_tensor(k_cache.data(), IOATTN_DTYPE_F32, {kPages, kPageSize, kHeadsKv, kDim});
    a.kv.v_cache = c_tensor(v_cache.data(), IOATTN_DTYPE_F32, {kPages, kPageSize, kHeadsKv, kDim});
    a.kv.block_table = c_tensor(table.data(), IOATTN_DTYPE_I32, {2, kMaxPages});
    a.kv.seqlens_k = c_tensor(lengths.data(), IOATTN_DTYPE_I32, {2});
    a.out = c_tensor(out.data(), IOATTN_DTYPE_F32, {5, kHeadsQ, kDim});
    a.lse = c_tensor(lse.data(), IOATTN_DTYPE_F32, {kHeadsQ, 5});
    a.cu_seqlens_q = c_tensor(cu_q.data(), IOATTN_DTYPE_I32, {3});
    return a;
  }
  void write_cache() {
    ioattn_paged_write_args w{};
    w.k_new = c_tensor(k_dense.data(), IOATTN_DTYPE_F32, {16, kHeadsKv, kDim});
    w.v_new = c_tensor(v_dense.data(), IOATTN_DTYPE_F32, {16, kHeadsKv, kDim});
    w.slot_mapping = c_tensor(slots.data(), IOATTN_DTYPE_I32, {16});
    w.k_cache = c_tensor(k_cache.data(), IOATTN_DTYPE_F32, {kPages, kPageSize, kHeadsKv, kDim});
    w.v_cache = c_tensor(v_cache.data(), IOATTN_DTYPE_F32, {kPages, kPageSize, kHeadsKv, kDim});
    ASSERT_EQ(ioattn_paged_kv_write(&w, nullptr), IOATTN_OK) << ioattn_last_error();
  }
};

TEST(PagedCApi, MatchesTheDenseCallOnTheSameKeys) {
  PagedBatch batch;
  batch.write_cache();
  ioattn_params params;
  ioattn_params_init(&params);
  params.impl = "reference";
  params.mask.window_right = 0;  // causal among the new tokens
  const ioattn_paged_forward_args args = batch.args();
  ioattn_paged_plan_info plan;
  ASSERT_EQ(ioattn_paged_plan(&args, &params, IOATTN_SPLIT_NONE, 0, 0, &plan), IOATTN_OK) << ioattn_last_error();
  EXPECT_STREQ(plan.impl, "reference");
  EXPECT_EQ(plan.max_splits, 1);
  ASSERT_EQ(ioattn_paged_forward(&args, &plan, &params), IOATTN_OK) << ioattn_last_error();

  // The dense reference on the packed keys: the same fp64 oracle, so the same bits.
  std::vector<float> out(batch.out.size(), NAN), lse(batch.lse.size(), NAN);
  ioattn::ForwardArgs dense;
  const auto f32 = ioattn::DType::f32;
  const int64_t H = PagedBatch::kHeadsQ, Hk = PagedBatch::kHeadsKv, D = PagedBatch::kDim;
  dense.q = ioattn::TensorView::contiguous(batch.q.data(), f32, {5, H, D});
  dense.k = ioattn::TensorView::contiguous(batch.k_dense.data(), f32, {16, Hk, D});
  dense.v = ioattn::TensorView::contiguous(batch.v_dense.data(), f32, {16, Hk, D});
  dense.out = ioattn::TensorView::contiguous(out.data(), f32, {5, H, D});
  dense.lse = ioattn::TensorView::contiguous(lse.data(), f32, {H, 5});
  dense.varlen = ioattn::Varlen{ioattn::TensorView::contiguous(batch.cu_q.data(), ioattn::DType::i32, {3}),
                                ioattn::TensorView::contiguous(batch.cu_k.data(), ioattn::DType::i32, {3}), 0, 0};
  ioattn::AttentionParams same;
  same.impl = "reference";
  same.mask = ioattn::Mask::causal();
  ioattn::attention_forward(dense, same);
  EXPECT_EQ(batch.out, out);
  EXPECT_EQ(batch.lse, lse);
}

// The plan carries the split mode it was made with (a backend may pick its kernels by it: fixed and none splits
// promise batch-invariant bits).
TEST(PagedCApi, PlanCarriesTheSplitMode) {
  PagedBatch batch;
  batch.write_cache();
  ioattn_paged_forward_args args = batch.args();
  ioattn_paged_plan_info plan;
  for (int32_t mode : {IOATTN_SPLIT_AUTO, IOATTN_SPLIT_NONE, IOATTN_SPLIT_FIXED}) {
    ASSERT_EQ(ioattn_paged_plan(&args, nullptr, mode, mode == IOATTN_SPLIT_FIXED ? 64 : 0, 0, &plan), IOATTN_OK)
        << ioattn_last_error();
    EXPECT_EQ(plan.planned[11], mode) << "split mode " << mode;
    EXPECT_EQ(ioattn_paged_forward(&args, &plan, nullptr), IOATTN_OK) << ioattn_last_error();
  }
}

TEST(PagedCApi, FailuresNameTheArgumentAndWriteNothing) {
  PagedBatch batch;
  batch.write_cache();
  ioattn_paged_forward_args args = batch.args();
  ioattn_paged_plan_info plan;
  EXPECT_EQ(ioattn_paged_plan(&args, nullptr, 7, 0, 0, &plan), IOATTN_ERROR_INVALID_ARGUMENT);
  EXPECT_EQ(std::string(ioattn_last_error()).rfind("split_mode: expected", 0), 0u) << ioattn_last_error();
  EXPECT_EQ(ioattn_paged_plan(&args, nullptr, IOATTN_SPLIT_FIXED, 100, 0, &plan), IOATTN_ERROR_INVALID_ARGUMENT);
  EXPECT_EQ(std::string(ioattn_last_error()).rfind("split.tokens: expected", 0), 0u) << ioattn_last_error();
  EXPECT_EQ(ioattn_paged_plan(&args, nullptr, IOATTN_SPLIT_AUTO, 0, 0, nullptr), IOATTN_ERROR_INVALID_ARGUMENT);
  ASSERT_EQ(ioattn_paged_plan(&args, nullptr, IOATTN_SPLIT_AUTO, 0, 0, &plan), IOATTN_OK) << ioattn_last_error();

  std::vector<int32_t> wrong_table = batch.table;
  wrong_table[1] = 99;  // sequence 0's second page: out of range
  args.kv.block_table.data = wrong_table.data();
  EXPECT_EQ(ioattn_paged_forward(&args, &plan, nullptr), IOATTN_ERROR_INVALID_ARGUMENT);
  EXPECT_EQ(std::string(ioattn_last_error()).rfind("kv.block_table: expected", 0), 0u) << ioattn_last_error();

  args = batch.args();
  args.q.shape[1] = 3;  // heads_q no longer a multiple of heads_kv
  EXPECT_EQ(ioattn_paged_forward(&args, &plan, nullptr), IOATTN_ERROR_INVALID_ARGUMENT);
  EXPECT_EQ(std::string(ioattn_last_error()).rfind("q: expected", 0), 0u) << ioattn_last_error();

  args = batch.args();
  ioattn_paged_plan_info altered = plan;
  altered.planned[11] = 9;  // no such split mode
  EXPECT_EQ(ioattn_paged_forward(&args, &altered, nullptr), IOATTN_ERROR_INVALID_ARGUMENT);
  EXPECT_EQ(std::string(ioattn_last_error()).rfind("plan: expected a plan from ioattn_paged_plan()", 0), 0u)
      << ioattn_last_error();

  plan.planned[2] = 3;  // a plan for another batch size
  EXPECT_EQ(ioattn_paged_forward(&args, &plan, nullptr), IOATTN_ERROR_INVALID_ARGUMENT);
  EXPECT_EQ(std::string(ioattn_last_error()).rfind("plan: made for batch 3", 0), 0u) << ioattn_last_error();
  for (float x : batch.out) EXPECT_TRUE(std::isnan(x));
  for (float x : batch.lse) EXPECT_TRUE(std::isnan(x));
}

}  // namespace
