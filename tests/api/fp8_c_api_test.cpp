// The FP8 C ABI: quantize and forward through the C structs give the bits the C++ calls give; failures come back as a
// status and a message naming the argument, with nothing written.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdint>
#include <random>
#include <string>
#include <vector>

#include "api/c_views.hpp"
#include "ioattn/fp8.hpp"
#include "ioattn/ioattn.h"

namespace {

using ioattn::apitest::c_tensor;

// batch 1, seqlen 40, heads 4 (q) / 2 (k, v), head dim 16; blocks of 16 rows; q and k rotated.
constexpr int64_t kB = 1, kS = 40, kHq = 4, kHk = 2, kD = 16, kBlock = 16, kBlocks = 3;

struct Quantized {
  std::vector<std::uint8_t> q = std::vector<std::uint8_t>(kB * kS * kHq * kD);
  std::vector<std::uint8_t> k = std::vector<std::uint8_t>(kB * kS * kHk * kD), v = k;
  std::vector<float> q_descale = std::vector<float>(kB * kHq * kBlocks);
  std::vector<float> k_descale = std::vector<float>(kB * kHk * kBlocks), v_descale = k_descale;
};

// Quantizes the same random inputs through the C ABI (c = true) or the C++ API.
Quantized quantize(bool c) {
  std::mt19937 gen(5);
  std::normal_distribution<float> normal;
  std::vector<float> q(kB * kS * kHq * kD), k(kB * kS * kHk * kD), v(k.size());
  for (auto* x : {&q, &k, &v}) {
    for (float& e : *x) e = normal(gen);
  }
  Quantized out;
  struct Job {
    std::vector<float>* in;
    std::vector<std::uint8_t>* codes;
    std::vector<float>* descale;
    int64_t heads;
    bool rotate;
  };
  for (const Job& j : {Job{&q, &out.q, &out.q_descale, kHq, true}, Job{&k, &out.k, &out.k_descale, kHk, true},
                       Job{&v, &out.v, &out.v_descale, kHk, false}}) {
    if (c) {
      const ioattn_tensor in = c_tensor(j.in->data(), IOATTN_DTYPE_F32, {kB, kS, j.heads, kD});
      const ioattn_tensor codes = c_tensor(j.codes->data(), IOATTN_DTYPE_F8E4M3, {kB, kS, j.heads, kD});
      const ioattn_tensor descale = c_tensor(j.descale->data(), IOATTN_DTYPE_F32, {kB, j.heads, kBlocks});
      EXPECT_EQ(ioattn_quantize_fp8(&in, &codes, &descale, kBlock, j.rotate ? 1 : 0), IOATTN_OK)
          << ioattn_last_error();
    } else {
      using ioattn::DType, ioattn::TensorView;
      ioattn::quantize_fp8(TensorView::contiguous(j.in->data(), DType::f32, {kB, kS, j.heads, kD}),
                           TensorView::contiguous(j.codes->data(), DType::f8e4m3, {kB, kS, j.heads, kD}),
                           TensorView::contiguous(j.descale->data(), DType::f32, {kB, j.heads, kBlocks}), kBlock,
                           j.rotate);
    }
  }
  return out;
}

ioattn_fp8_forward_args c_args(Quantized& t, std::vector<float>& out, std::vector<float>& lse) {
  ioattn_fp8_forward_args a{};
  a.q = c_tensor(t.q.data(), IOATTN_DTYPE_F8E4M3, {kB, kS, kHq, kD});
  a.k = c_tensor(t.k.data(), IOATTN_DTYPE_F8E4M3, {kB, kS, kHk, kD});
  a.v = c_tensor(t.v.data(), IOATTN_DTYPE_F8E4M3, {kB, kS, kHk, kD});
  a.scales.q_descale = c_tensor(t.q_descale.data(), IOATTN_DTYPE_F32, {kB, kHq, kBlocks});
  a.scales.k_descale = c_tensor(t.k_descale.data(), IOATTN_DTYPE_F32, {kB, kHk, kBlocks});
  a.scales.v_descale = c_tensor(t.v_descale.data(), IOATTN_DTYPE_F32, {kB, kHk, kBlocks});
  a.scales.block_rows = kBlock;
  a.out = c_tensor(out.data(), IOATTN_DTYPE_F32, {kB, kS, kHq, kD});
  a.lse = c_tensor(lse.data(), IOATTN_DTYPE_F32, {kB, kHq, kS});
  return a;
}

TEST(Fp8CApi, QuantizeAndForwardMatchTheCppCalls) {
  Quantized c = quantize(true), cpp = quantize(false);
  EXPECT_EQ(c.q, cpp.q);
  EXPECT_EQ(c.k, cpp.k);
  EXPECT_EQ(c.v, cpp.v);
  EXPECT_EQ(c.q_descale, cpp.q_descale);
  EXPECT_EQ(c.v_descale, cpp.v_descale);

  std::vector<float> out(kB * kS * kHq * kD, NAN), lse(kB * kHq * kS, NAN);
  ioattn_params params;
  ioattn_params_init(&params);
  params.mask.window_right = 0;  // causal
  const ioattn_fp8_forward_args args = c_args(c, out, lse);
  ASSERT_EQ(ioattn_forward_fp8(&args, &params), IOATTN_OK) << ioattn_last_error();

  std::vector<float> out_cpp(out.size(), NAN), lse_cpp(lse.size(), NAN);
  using ioattn::DType, ioattn::TensorView;
  ioattn::Fp8ForwardArgs a;
  a.q = TensorView::contiguous(cpp.q.data(), DType::f8e4m3, {kB, kS, kHq, kD});
  a.k = TensorView::contiguous(cpp.k.data(), DType::f8e4m3, {kB, kS, kHk, kD});
  a.v = TensorView::contiguous(cpp.v.data(), DType::f8e4m3, {kB, kS, kHk, kD});
  a.scales = {TensorView::contiguous(cpp.q_descale.data(), DType::f32, {kB, kHq, kBlocks}),
              TensorView::contiguous(cpp.k_descale.data(), DType::f32, {kB, kHk, kBlocks}),
              TensorView::contiguous(cpp.v_descale.data(), DType::f32, {kB, kHk, kBlocks}), kBlock};
  a.out = TensorView::contiguous(out_cpp.data(), DType::f32, {kB, kS, kHq, kD});
  a.lse = TensorView::contiguous(lse_cpp.data(), DType::f32, {kB, kHq, kS});
  ioattn::AttentionParams same;
  same.mask = ioattn::Mask::causal();
  ioattn::attention_forward_fp8(a, same);
  EXPECT_EQ(out, out_cpp);
  EXPECT_EQ(lse, lse_cpp);
  for (float x : out) ASSERT_TRUE(std::isfinite(x));
}

TEST(Fp8CApi, FailuresNameTheArgumentAndWriteNothing) {
  Quantized t = quantize(true);
  std::vector<float> out(kB * kS * kHq * kD, NAN), lse(kB * kHq * kS, NAN);
  ioattn_fp8_forward_args args = c_args(t, out, lse);
  args.scales.k_descale.shape[2] = 2;  // one block short
  EXPECT_EQ(ioattn_forward_fp8(&args, nullptr), IOATTN_ERROR_INVALID_ARGUMENT);
  EXPECT_EQ(std::string(ioattn_last_error()).rfind("scales.k_descale: expected", 0), 0u) << ioattn_last_error();
  args = c_args(t, out, lse);
  args.q.dtype = IOATTN_DTYPE_BF16;
  EXPECT_EQ(ioattn_forward_fp8(&args, nullptr), IOATTN_ERROR_INVALID_ARGUMENT);
  EXPECT_EQ(std::string(ioattn_last_error()).rfind("q: expected", 0), 0u) << ioattn_last_error();
  EXPECT_EQ(ioattn_forward_fp8(nullptr, nullptr), IOATTN_ERROR_INVALID_ARGUMENT);
  for (float x : out) EXPECT_TRUE(std::isnan(x));
  for (float x : lse) EXPECT_TRUE(std::isnan(x));

  std::vector<float> in(kS * kD, 1.0f), descale(1, NAN);
  std::vector<std::uint8_t> codes(kS * kD, 0xAB);
  const ioattn_tensor in_view = c_tensor(in.data(), IOATTN_DTYPE_F32, {1, kS, 1, kD});
  const ioattn_tensor codes_view = c_tensor(codes.data(), IOATTN_DTYPE_F8E4M3, {1, kS, 1, kD});
  const ioattn_tensor descale_view = c_tensor(descale.data(), IOATTN_DTYPE_F32, {1, 1});
  EXPECT_EQ(ioattn_quantize_fp8(&in_view, &codes_view, &descale_view, 10, 0), IOATTN_ERROR_INVALID_ARGUMENT);
  EXPECT_NE(std::string(ioattn_last_error()).find("block_rows"), std::string::npos) << ioattn_last_error();
  EXPECT_EQ(ioattn_quantize_fp8(&in_view, nullptr, &descale_view, 0, 0), IOATTN_ERROR_INVALID_ARGUMENT);
  for (std::uint8_t b : codes) EXPECT_EQ(b, 0xAB);
  EXPECT_TRUE(std::isnan(descale[0]));
}

}  // namespace
