// Bad arguments of the FP8 entry points, and fp8 operands at the other APIs: each rejection names the argument
// (message "<argument>: expected ...") and leaves every output byte as it was.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdint>
#include <cstring>
#include <functional>
#include <string>
#include <vector>

#include "fp8/fp8_util.hpp"
#include "ioattn/error.hpp"
#include "ioattn/ioattn.h"
#include "support/random.hpp"

namespace ioattn::fp8test {
namespace {

constexpr float kSentinel = 7.25f;

// A valid FP8 forward (batch 2, seqlen 35 x 40, 4 query heads over 2 kv heads, head dims 16 / 8, blocks of 16)
// with outputs holding a sentinel.
struct Fixture {
  std::int64_t b = 2, sq = 35, sk = 40, hq = 4, hkv = 2, d = 16, dv = 8, block = 16;
  Fp8Operand q{b, sq, hq, d, block}, k{b, sk, hkv, d, block}, v{b, sk, hkv, dv, block};
  std::vector<float> out = std::vector<float>(static_cast<std::size_t>(b * sq * hq * dv), kSentinel);
  std::vector<float> lse = std::vector<float>(static_cast<std::size_t>(b * hq * sq), kSentinel);
  std::vector<float> spare = std::vector<float>(4096, 0.5f);  // any other tensor a case needs

  Fp8ForwardArgs args() {
    Fp8ForwardArgs a;
    a.q = q.view();
    a.k = k.view();
    a.v = v.view();
    a.scales = {q.descale_view(), k.descale_view(), v.descale_view(), block};
    a.out = TensorView::contiguous(out.data(), DType::f32, {b, sq, hq, dv});
    a.lse = TensorView::contiguous(lse.data(), DType::f32, {b, hq, sq});
    return a;
  }
  bool untouched() const {
    for (float x : out) if (std::memcmp(&x, &kSentinel, 4) != 0) return false;
    for (float x : lse) if (std::memcmp(&x, &kSentinel, 4) != 0) return false;
    return true;
  }
};

void expect_rejected(const std::function<void()>& call, const std::string& argument,
                     const std::vector<std::string>& fragments, const std::function<bool()>& untouched,
                     ErrorCode code = ErrorCode::invalid_argument) {
  try {
    call();
    ADD_FAILURE() << "accepted; expected a rejection naming " << argument;
  } catch (const Error& e) {
    const std::string msg = e.what();
    EXPECT_EQ(e.code(), code) << msg;
    EXPECT_EQ(msg.rfind(argument + ": ", 0), 0u) << "message does not start with '" << argument << ": ': " << msg;
    for (const auto& f : fragments) EXPECT_NE(msg.find(f), std::string::npos) << "'" << f << "' not in: " << msg;
  }
  EXPECT_TRUE(untouched()) << "an output was written by a rejected call (" << argument << ")";
}

void expect_forward_rejected(Fixture& f, const Fp8ForwardArgs& a, const std::string& argument,
                             const std::vector<std::string>& fragments = {}, const AttentionParams& params = {},
                             ErrorCode code = ErrorCode::invalid_argument) {
  expect_rejected([&] { attention_forward_fp8(a, params); }, argument, fragments, [&] { return f.untouched(); },
                  code);
}

TEST(Fp8Validate, BaseCaseIsAcceptedAndWrites) {
  // The starting point of every case below must pass, or the cases would prove nothing.
  Fixture f;
  attention_forward_fp8(f.args());
  EXPECT_FALSE(f.untouched());
}

TEST(Fp8Validate, Operands) {
  Fixture f;
  Fp8ForwardArgs a = f.args();
  a.q.dtype = DType::bf16;
  expect_forward_rejected(f, a, "q", {"dtype fp8_e4m3", "got bf16[2, 35, 4, 16]"});
  a = f.args();
  a.q = TensorView::contiguous(f.q.codes.data(), DType::f8e4m3, {70, 4, 16});
  expect_forward_rejected(f, a, "q", {"rank 4"});
  a = f.args();
  a.k.dtype = DType::f32;
  expect_forward_rejected(f, a, "k", {"dtype fp8_e4m3 (the dtype of q)"});
  a = f.args();
  a.k = TensorView::contiguous(f.k.codes.data(), DType::f8e4m3, {1, 40, 2, 16});
  expect_forward_rejected(f, a, "k", {"batch"});
  a = f.args();
  a.k = TensorView::contiguous(f.k.codes.data(), DType::f8e4m3, {2, 40, 2, 8});
  expect_forward_rejected(f, a, "k", {"head_dim_qk as in q"});
  a = f.args();
  a.k = TensorView::contiguous(f.k.codes.data(), DType::f8e4m3, {2, 20, 3, 16});
  a.v = TensorView::contiguous(f.v.codes.data(), DType::f8e4m3, {2, 20, 3, 8});
  expect_forward_rejected(f, a, "q", {"multiple of heads_kv = 3"});
  a = f.args();
  a.v = TensorView::contiguous(f.v.codes.data(), DType::f8e4m3, {2, 39, 2, 8});
  expect_forward_rejected(f, a, "v", {"[2, 40, 2, 8]"});
  a = f.args();
  a.v.stride[3] = 2;
  expect_forward_rejected(f, a, "v", {"contiguous last dimension"});
  a = f.args();
  a.k.data = nullptr;
  expect_forward_rejected(f, a, "k", {"non-null data"});
  a = f.args();
  a.k.device = Device::cuda;
  expect_forward_rejected(f, a, "k", {"on cpu (where q is)"});
}

TEST(Fp8Validate, Outputs) {
  Fixture f;
  Fp8ForwardArgs a = f.args();
  a.out.dtype = DType::f8e4m3;
  expect_forward_rejected(f, a, "out", {"fp32, fp16 or bf16", "got fp8_e4m3"});
  a = f.args();
  a.out = TensorView::contiguous(f.out.data(), DType::f32, {2, 35, 4, 16});
  expect_forward_rejected(f, a, "out", {"[2, 35, 4, 8]"});
  a = f.args();
  a.out.stride[1] = 0;
  expect_forward_rejected(f, a, "out", {"do not overlap"});
  a = f.args();
  a.lse.dtype = DType::bf16;
  expect_forward_rejected(f, a, "lse", {"fp32"});
  a = f.args();
  a.lse = TensorView::contiguous(f.lse.data(), DType::f32, {2, 35, 4});
  expect_forward_rejected(f, a, "lse", {"[2, 4, 35]"});
}

TEST(Fp8Validate, Scales) {
  Fixture f;
  Fp8ForwardArgs a = f.args();
  a.scales.block_rows = 8;
  expect_forward_rejected(f, a, "scales.block_rows", {"multiple of 16", "got 8"});
  a.scales.block_rows = -16;
  expect_forward_rejected(f, a, "scales.block_rows", {"got -16"});
  a = f.args();
  a.scales.q_descale = {};
  expect_forward_rejected(f, a, "scales.q_descale", {"got none"});
  a = f.args();
  a.scales.block_rows = 0;  // per-head descales wanted, block descales given
  expect_forward_rejected(f, a, "scales.q_descale", {"[2, 4]", "[batch, heads_q]"});
  a = f.args();
  a.scales.block_rows = 32;  // ceil(35 / 32) = 2 blocks of q, 3 given
  expect_forward_rejected(f, a, "scales.q_descale", {"[2, 4, 2]", "ceil(seqlen_q / block_rows = 32)"});
  a = f.args();
  a.scales.k_descale.dtype = DType::f16;
  expect_forward_rejected(f, a, "scales.k_descale", {"fp32"});
  a = f.args();
  a.scales.v_descale = TensorView::contiguous(f.spare.data(), DType::f32, {2, 4, 3});
  expect_forward_rejected(f, a, "scales.v_descale", {"[2, 2, 3]", "heads_kv"});
  a = f.args();
  a.scales.k_descale.device = Device::cuda;
  expect_forward_rejected(f, a, "scales.k_descale", {"on cpu"});
}

TEST(Fp8Validate, ParamsAndUnsupported) {
  Fixture f;
  AttentionParams p;
  p.softcap = -1.0f;
  expect_forward_rejected(f, f.args(), "params.softcap", {}, p);
  p = {};
  p.sinks = TensorView::contiguous(f.spare.data(), DType::f32, {3});
  expect_forward_rejected(f, f.args(), "params.sinks", {"[4]"}, p);
  p = {};
  p.impl = "tiled";
  expect_forward_rejected(f, f.args(), "params.impl", {"'reference'", "got 'tiled'"}, p);

  Fp8ForwardArgs a = f.args();
  a.varlen = Varlen{};
  expect_forward_rejected(f, a, "varlen", {"dense layout only"}, {}, ErrorCode::unsupported);
  a = f.args();
  for (TensorView* t : {&a.q, &a.k, &a.v, &a.out, &a.lse, &a.scales.q_descale, &a.scales.k_descale,
                        &a.scales.v_descale}) {
    t->device = Device::cuda;
  }
  try {
    attention_forward_fp8(a);
    ADD_FAILURE() << "CUDA tensors accepted";
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), ErrorCode::unsupported);
    // Host memory labelled cuda: refused before any kernel (fp32 out, no Hopper GPU, or no CUDA in the build).
    EXPECT_NE(std::string(e.what()).find("attention_forward_fp8: "), std::string::npos) << e.what();
  }
  EXPECT_TRUE(f.untouched());
}

TEST(Fp8Validate, EmptyProblemsWriteNothingAndPass) {
  Fixture f;
  Fp8Operand q(2, 0, 4, 16, 16);
  Fp8ForwardArgs a = f.args();
  a.q = q.view();
  a.scales.q_descale = q.descale_view();
  a.out = TensorView::contiguous(f.out.data(), DType::f32, {2, 0, 4, 8});
  a.lse = TensorView::contiguous(f.lse.data(), DType::f32, {2, 4, 0});
  EXPECT_NO_THROW(attention_forward_fp8(a));
  EXPECT_TRUE(f.untouched());
}

// The dense API refuses fp8 operands, naming the operand.
TEST(Fp8Validate, DenseApiRefusesFp8) {
  Fixture f;
  std::vector<float> q(static_cast<std::size_t>(2 * 35 * 4 * 16), 1.0f), k(2 * 40 * 2 * 16, 1.0f),
      v(2 * 40 * 2 * 8, 1.0f);
  ForwardArgs a;
  a.q = f.q.view();  // fp8
  a.k = TensorView::contiguous(k.data(), DType::f32, {2, 40, 2, 16});
  a.v = TensorView::contiguous(v.data(), DType::f32, {2, 40, 2, 8});
  a.out = TensorView::contiguous(f.out.data(), DType::f32, {2, 35, 4, 8});
  auto untouched = [&] { return f.untouched(); };
  expect_rejected([&] { attention_forward(a); }, "q", {"dtype fp32, fp16 or bf16", "got fp8_e4m3[2, 35, 4, 16]"},
                  untouched);
  a.q = TensorView::contiguous(q.data(), DType::f32, {2, 35, 4, 16});
  a.k = f.k.view();
  expect_rejected([&] { attention_forward(a); }, "k", {"dtype fp32 (the dtype of q)", "got fp8_e4m3"}, untouched);

  // Through the C ABI too: IOATTN_DTYPE_F8E4M3 is a known dtype there, refused by the attention call for q.
  ioattn_forward_args c{};
  auto to_c = [](const TensorView& t) {
    ioattn_tensor r{};
    r.data = t.data;
    r.dtype = static_cast<int32_t>(t.dtype);
    r.device = IOATTN_DEVICE_CPU;
    r.rank = t.rank;
    for (int d = 0; d < t.rank; ++d) r.shape[d] = t.shape[d], r.stride[d] = t.stride[d];
    return r;
  };
  c.q = to_c(f.q.view());
  c.k = to_c(TensorView::contiguous(k.data(), DType::f32, {2, 40, 2, 16}));
  c.v = to_c(a.v);
  c.out = to_c(a.out);
  EXPECT_EQ(c.q.dtype, IOATTN_DTYPE_F8E4M3);
  EXPECT_EQ(ioattn_forward(&c, nullptr), IOATTN_ERROR_INVALID_ARGUMENT);
  EXPECT_EQ(std::string(ioattn_last_error()).rfind("q: expected dtype fp32, fp16 or bf16, got fp8_e4m3", 0), 0u)
      << ioattn_last_error();
  EXPECT_TRUE(f.untouched());
}

// quantize_fp8's arguments; outputs (codes and descales) keep their sentinels on every rejection.
TEST(Fp8Validate, Quantize) {
  const std::int64_t b = 1, s = 20, h = 2, d = 16;
  test::Rng rng("fp8_validate_quantize");
  std::vector<float> x(static_cast<std::size_t>(b * s * h * d));
  for (auto& e : x) e = static_cast<float>(rng.normal());
  std::vector<std::uint8_t> codes(x.size(), 0x5a);
  std::vector<float> descale(16, kSentinel);
  auto untouched = [&] {
    for (auto c : codes) if (c != 0x5a) return false;
    for (float s_ : descale) if (std::memcmp(&s_, &kSentinel, 4) != 0) return false;
    return true;
  };
  const TensorView in = TensorView::contiguous(x.data(), DType::f32, {b, s, h, d});
  const TensorView out = TensorView::contiguous(codes.data(), DType::f8e4m3, {b, s, h, d});
  const TensorView ds = TensorView::contiguous(descale.data(), DType::f32, {b, h});
  const TensorView ds_blocks = TensorView::contiguous(descale.data(), DType::f32, {b, h, 2});

  TensorView bad = in;
  bad.dtype = DType::f8e4m3;
  expect_rejected([&] { quantize_fp8(bad, out, ds); }, "input", {"fp32, fp16 or bf16"}, untouched);
  bad = TensorView::contiguous(x.data(), DType::f32, {s, h, d});
  expect_rejected([&] { quantize_fp8(bad, out, ds); }, "input", {"rank 4"}, untouched);
  bad = out;
  bad.dtype = DType::bf16;
  expect_rejected([&] { quantize_fp8(in, bad, ds); }, "output", {"dtype fp8_e4m3"}, untouched);
  bad = TensorView::contiguous(codes.data(), DType::f8e4m3, {b, s, h, 8});
  expect_rejected([&] { quantize_fp8(in, bad, ds); }, "output", {"[1, 20, 2, 16]"}, untouched);
  expect_rejected([&] { quantize_fp8(in, out, ds_blocks); }, "descale", {"[1, 2]"}, untouched);
  expect_rejected([&] { quantize_fp8(in, out, ds, 16); }, "descale", {"[1, 2, 2]"}, untouched);
  expect_rejected([&] { quantize_fp8(in, out, ds_blocks, 20); }, "block_rows", {"multiple of 16"}, untouched);
  std::vector<float> x12(static_cast<std::size_t>(b * s * h * 12), 1.0f);
  const TensorView in12 = TensorView::contiguous(x12.data(), DType::f32, {b, s, h, 12});
  const TensorView out12 = TensorView::contiguous(codes.data(), DType::f8e4m3, {b, s, h, 12});
  expect_rejected([&] { quantize_fp8(in12, out12, ds, 0, true); }, "rotate", {"power of two"}, untouched);
  bad = in;
  bad.device = Device::cuda;
  expect_rejected([&] { quantize_fp8(bad, out, ds); }, "output", {"on cuda:0 (where q is)"}, untouched);
  bad = in;
  bad.data = nullptr;
  expect_rejected([&] { quantize_fp8(bad, out, ds); }, "input", {"non-null data"}, untouched);
  // Non-finite values are found before anything is written, wherever they are (here in the last row).
  x.back() = std::nanf("");
  expect_rejected([&] { quantize_fp8(in, out, ds_blocks, 16, true); }, "input", {"Inf or NaN", "head 1"},
                  untouched);
  x.back() = -INFINITY;
  expect_rejected([&] { quantize_fp8(in, out, ds); }, "input", {"Inf or NaN"}, untouched);
  // Finite, but its rotation is not: the first coordinate of H x / sqrt(16) is sum(x) / 4 = 1.2e39.
  for (std::int64_t c = 0; c < d; ++c) x[x.size() - 1 - c] = 3e38f;
  expect_rejected([&] { quantize_fp8(in, out, ds, 0, true); }, "input", {"Hadamard rotation fits in fp32"},
                  untouched);
  for (std::int64_t c = 0; c < d; ++c) x[x.size() - 1 - c] = 1.0f;
  quantize_fp8(in, out, ds, 0, true);
  EXPECT_FALSE(untouched());  // the base case is accepted
}

}  // namespace
}  // namespace ioattn::fp8test
