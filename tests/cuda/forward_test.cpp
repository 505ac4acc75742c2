// GPU-only checks of the cuda forward beyond the shared case table (tests/attention): every compiled head dim and
// dtype on multi-tile shapes that are no multiple of any tile size, under every mask kind, with the score mods,
// sinks, GQA and varlen with empty sequences; a row's bits with and without key tiles it cannot see (here and on
// cuda_sm90); and the backend's refusals. Judged by the same fp64 reference and 2x-naive bound
// (src/numerics/error_bound.hpp). Without a GPU every test skips, saying so.
#include <gtest/gtest.h>

#include <cstdint>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "ioattn/attention.hpp"
#include "ioattn/error.hpp"
#include "support/buffers.hpp"
#include "support/cases.hpp"
#include "support/harness.hpp"
#include "support/random.hpp"

#ifndef IOATTN_TEST_CUDA_HEAD_DIMS
#define IOATTN_TEST_CUDA_HEAD_DIMS "64,96,128,192,256"
#endif
#ifndef IOATTN_TEST_CUDA_DTYPES
#define IOATTN_TEST_CUDA_DTYPES "bf16,fp16"
#endif

namespace ioattn::test {
namespace {

std::vector<Case> forward_cases() {
  std::vector<Case> cases;
  const std::vector<std::pair<int, int>> dims = {{64, 64}, {96, 96}, {128, 128}, {192, 128}, {256, 256}};
  const std::vector<Mask> masks = {Mask::none(), Mask::causal(), Mask::causal(Alignment::top_left),
                                   Mask::window(100, 50), Mask::window(0, 0, Alignment::top_left)};
  for (DType dtype : {DType::bf16, DType::f16}) {
    if (!listed(IOATTN_TEST_CUDA_DTYPES, dtype == DType::bf16 ? "bf16" : "fp16")) continue;
    for (auto [dqk, dv] : dims) {
      if (!listed(IOATTN_TEST_CUDA_HEAD_DIMS, std::to_string(dqk))) continue;
      Case base;
      base.dtype = dtype;
      base.dim_qk = dqk;
      base.dim_v = dv;
      base.backward = false;
      // Several query and key tiles, both ends ragged; GQA group 2.
      for (const Mask& m : masks) {
        Case c = base;
        c.batch = 2, c.heads_q = 4, c.heads_kv = 2, c.seqlen_q = 333, c.seqlen_k = 1029;
        c.mask = m;
        cases.push_back(c);
      }
      // More queries than keys: bottom-right causal leaves the first rows empty; the sinks must still be right.
      Case mods = base;
      mods.batch = 1, mods.heads_q = 3, mods.heads_kv = 1, mods.seqlen_q = 517, mods.seqlen_k = 300;
      mods.mask = Mask::causal();
      mods.softcap = 20.0f, mods.alibi = Alibi::per_batch_head, mods.sinks = true;
      cases.push_back(mods);
      // Varlen with empty sequences on either side, sliding window.
      Case var = base;
      var.heads_q = 2, var.heads_kv = 1;
      var.varlen_q = {0, 257, 1, 700, 64};
      var.varlen_k = {300, 0, 129, 700, 64};
      var.mask = Mask::window(64, 0);
      var.softcap = 30.0f;
      var.sinks = true;
      cases.push_back(var);
    }
  }
  return cases;
}

const std::vector<Case>& cached_cases() {
  static const std::vector<Case> cases = forward_cases();
  return cases;
}

class CudaForward : public ::testing::TestWithParam<const Case*> {};

TEST_P(CudaForward, MatchesReference) {
  if (!gpu_available()) GTEST_SKIP() << "no usable GPU on this machine: the cuda forward is not exercised";
  SCOPED_TRACE(seed_text() + " reproduces these inputs");
  CaseData data(*GetParam());
  const Results got = data.run("cuda", Device::cuda, false);
  for (const Comparison& cmp : data.compare_all(got, false)) EXPECT_TRUE(cmp.ok()) << cmp.describe();
  // The forward has no cross-CTA reduction: a second run must agree bit for bit (a race would show here).
  const Results again = data.run("cuda", Device::cuda, false);
  EXPECT_EQ(got.out, again.out);
  EXPECT_EQ(got.lse, again.lse);
}

std::vector<const Case*> case_pointers() {
  std::vector<const Case*> out;
  for (const Case& c : cached_cases()) out.push_back(&c);
  return out;
}

INSTANTIATE_TEST_SUITE_P(Shapes, CudaForward, ::testing::ValuesIn(case_pointers()),
                         [](const ::testing::TestParamInfo<const Case*>& info) { return info.param->name(); });
GTEST_ALLOW_UNINSTANTIATED_PARAMETERIZED_TEST(CudaForward);

// A head dim outside the kernel set is refused with a reason that names what is supported.
// A row's bits must not depend on key tiles it cannot see. Under a sliding window the last row of a query tile
// shares it with rows that see the key tiles before its window, so the kernel visits those for it too, all masked.
// Alone (one query, the same window about the same diagonal) the row visits only the tiles it sees. Both runs must
// give its out and lse the same bits: where a row's max did not move, the online softmax's rescale factor must be
// exactly 1 (an FMA-contracted m_old * s - m_new * s gave 1 + an ulp). q is scaled up so that the row maxima, and
// the rounding such a product shows, are large.
TEST(CudaForwardBits, InvisibleKeyTilesLeaveARowAlone) {
  if (!gpu_available()) GTEST_SKIP() << "no usable GPU on this machine";
  SCOPED_TRACE(seed_text());
  const int dim = listed(IOATTN_TEST_CUDA_HEAD_DIMS, "128") ? 128 : 64;
  const DType dtype = listed(IOATTN_TEST_CUDA_DTYPES, "bf16") ? DType::bf16 : DType::f16;
  constexpr std::int64_t kKeys = 512, kHeads = 16;
  std::mt19937_64 rng(test_seed());
  std::normal_distribution<double> normal(0.0, 1.0);
  HostBuffer q(dtype, kKeys * kHeads * dim), k(dtype, kKeys * kHeads * dim), v(dtype, kKeys * kHeads * dim);
  q.fill([&] { return 4.0 * normal(rng); });
  k.fill([&] { return normal(rng); });
  v.fill([&] { return normal(rng); });
  HostBuffer out(dtype, kKeys * kHeads * dim), lse(DType::f32, kKeys * kHeads);
  const DeviceBuffer dq(q), dk(k), dv(v);
  DeviceBuffer dout(out), dlse(lse);
  // Queries [first, kKeys) against all keys, window 10 keys left of each diagonal (bottom-right: the last query's
  // diagonal is the last key either way). Returns the last row's out and lse bits, every head.
  const auto last_row_bits = [&](const std::string& impl, std::int64_t first) {
    const std::int64_t rows = kKeys - first;
    out.poison();
    lse.poison();
    dout.upload(out);
    dlse.upload(lse);
    ForwardArgs args;
    args.q = dq.rebase(q.view({1, rows, kHeads, dim}, {}, first * kHeads * dim), q);
    args.k = dk.rebase(k.view({1, kKeys, kHeads, dim}), k);
    args.v = dv.rebase(v.view({1, kKeys, kHeads, dim}), v);
    args.out = dout.rebase(out.view({1, rows, kHeads, dim}), out);
    args.lse = dlse.rebase(lse.view({1, kHeads, rows}), lse);
    AttentionParams params;
    params.impl = impl;
    params.mask = Mask::window(10, 0);
    attention_forward(args, params);
    dout.download(out);
    dlse.download(lse);
    std::vector<std::uint32_t> bits;
    const std::int64_t last = rows - 1;
    for (std::int64_t h = 0; h < kHeads; ++h) {
      std::uint32_t x;
      std::memcpy(&x, static_cast<const float*>(lse.data()) + h * rows + last, sizeof x);
      bits.push_back(x);
      const auto* o = static_cast<const std::uint16_t*>(out.data()) + (last * kHeads + h) * dim;
      bits.insert(bits.end(), o, o + dim);
    }
    return bits;
  };
  for (const char* impl : {"cuda", "cuda_sm90"}) {
    SCOPED_TRACE(impl);
    std::vector<std::uint32_t> in_tile;
    try {
      in_tile = last_row_bits(impl, 0);
    } catch (const Error& e) {
      if (e.code() == ErrorCode::unsupported) continue;  // cuda_sm90 off Hopper, or not built
      throw;
    }
    EXPECT_EQ(last_row_bits(impl, kKeys - 1), in_tile) << "the last row alone against in its query tile";
  }
}

TEST(CudaForwardRefusals, UnsupportedHeadDimNamesTheSupportedOnes) {
  if (!gpu_available()) GTEST_SKIP() << "no usable GPU on this machine";
  Case c;
  c.dim_qk = 80, c.dim_v = 80, c.backward = false;
  CaseData data(c);
  try {
    data.run("cuda", Device::cuda, false);
    FAIL() << "head dim 80 was accepted";
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), ErrorCode::unsupported);
    EXPECT_NE(std::string(e.what()).find("64, 96, 128, 192/128"), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("80"), std::string::npos) << e.what();
  }
}

TEST(CudaForwardRefusals, Fp32IsRefused) {
  if (!gpu_available()) GTEST_SKIP() << "no usable GPU on this machine";
  Case c;
  c.dtype = DType::f32, c.backward = false;
  CaseData data(c);
  try {
    data.run("cuda", Device::cuda, false);
    FAIL() << "fp32 was accepted";
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), ErrorCode::unsupported);
    EXPECT_NE(std::string(e.what()).find("fp16 or bf16"), std::string::npos) << e.what();
  }
}

}  // namespace
}  // namespace ioattn::test
