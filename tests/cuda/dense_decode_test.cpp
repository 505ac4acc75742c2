// GPU-only checks of the dense decode backend ("cuda_decode", src/cuda/paged/dense_decode.cu: dense K and V through
// the paged split-KV kernels): out and lse against the fp64 reference and the 2x-naive bound on decode shapes of
// every head dim and dtype (1 to 64 query rows per kv head, contexts from 1 key to 33k, every mask kind, softcap,
// ALiBi, sinks, padded strides, rows that see no key); "auto" taking them (the same bits); deterministic runs
// giving a sequence the same bits whatever batch it is in; and the refusals that leave other problems to the dense
// kernels. Without a GPU every test skips, saying so.
#include <gtest/gtest.h>

#include <cstdint>
#include <cstdio>
#include <random>
#include <string>
#include <vector>

#include "ioattn/attention.hpp"
#include "ioattn/error.hpp"
#include "support/buffers.hpp"
#include "support/cases.hpp"
#include "support/harness.hpp"
#include "support/random.hpp"

namespace ioattn::test {
namespace {

constexpr const char* kImpl = "cuda_decode";
constexpr const char* kNoGpu = "no usable GPU on this machine: cuda_decode is not exercised";

std::vector<Case> decode_cases() {
  std::vector<Case> cases;
  for (DType dtype : {DType::bf16, DType::f16}) {
    for (auto [dqk, dv] : {std::pair{64, 64}, {128, 128}, {256, 256}, {192, 128}}) {
      Case base;
      base.dtype = dtype;
      base.dim_qk = dqk, base.dim_v = dv;
      base.batch = 3, base.heads_q = 8, base.heads_kv = 2;
      base.seqlen_q = 1, base.seqlen_k = 1000;
      base.backward = false;
      cases.push_back(base);
      // Two new tokens per sequence under a causal mask: the second sees one key more.
      Case two = base;
      two.seqlen_q = 2, two.seqlen_k = 777;
      two.mask = Mask::causal();
      two.sinks = true;
      cases.push_back(two);
    }
  }
  Case base;
  base.dim_qk = base.dim_v = 128;
  base.backward = false;
  base.seqlen_q = 1;
  // The benchmark's shape (GQA 32/8) over one long context: many chunks and their combine.
  Case long_ctx = base;
  long_ctx.heads_q = 32, long_ctx.heads_kv = 8, long_ctx.seqlen_k = 33000;
  cases.push_back(long_ctx);
  // Contexts around the 64-key tile and tiny ones.
  for (std::int64_t keys : {1, 17, 64, 65, 5000}) {
    Case c = base;
    c.batch = 2, c.heads_q = 4, c.heads_kv = 1, c.seqlen_k = keys;
    cases.push_back(c);
  }
  // 16 rows per kv head (4 tokens x group 4), bottom-right causal; MHA with 16 tokens, top-left causal; a window.
  Case rows16 = base;
  rows16.batch = 2, rows16.heads_q = 8, rows16.heads_kv = 2, rows16.seqlen_q = 4, rows16.seqlen_k = 3000;
  rows16.mask = Mask::causal();
  cases.push_back(rows16);
  Case mha = base;
  mha.batch = 2, mha.heads_q = 3, mha.heads_kv = 3, mha.seqlen_q = 16, mha.seqlen_k = 500;
  mha.mask = Mask::causal(Alignment::top_left);
  cases.push_back(mha);
  // 32 and 64 rows per kv head (8 and 16 tokens x group 4): the 64-row decode kernel.
  Case rows32 = rows16;
  rows32.seqlen_q = 8, rows32.seqlen_k = 5000;
  cases.push_back(rows32);
  Case rows64 = rows16;
  rows64.batch = 1, rows64.seqlen_q = 16, rows64.seqlen_k = 20000;
  rows64.mask = Mask::causal(Alignment::top_left);
  rows64.sinks = true;
  cases.push_back(rows64);
  Case window = base;
  window.batch = 2, window.heads_q = 8, window.heads_kv = 2, window.seqlen_q = 3, window.seqlen_k = 2500;
  window.mask = Mask::window(300, 0);
  cases.push_back(window);
  // More queries than keys, bottom-right causal: the first rows see nothing (lse -inf, out 0) but their sinks.
  Case empty_rows = base;
  empty_rows.heads_q = 4, empty_rows.heads_kv = 2, empty_rows.seqlen_q = 6, empty_rows.seqlen_k = 3;
  empty_rows.mask = Mask::causal();
  empty_rows.sinks = true;
  cases.push_back(empty_rows);
  // Score mods and padded strides.
  Case soft = base;
  soft.batch = 2, soft.heads_q = 16, soft.heads_kv = 2, soft.seqlen_k = 4000, soft.softcap = 5.0f;
  cases.push_back(soft);
  Case alibi = base;
  alibi.batch = 3, alibi.heads_q = 8, alibi.heads_kv = 8, alibi.seqlen_q = 2, alibi.seqlen_k = 2100;
  alibi.mask = Mask::causal();
  alibi.alibi = Alibi::per_batch_head;
  cases.push_back(alibi);
  Case padded = base;
  padded.dtype = DType::f16;
  padded.batch = 2, padded.heads_q = 4, padded.heads_kv = 1, padded.seqlen_k = 1500;
  padded.layout = Layout::padded;
  padded.alibi = Alibi::per_head;
  cases.push_back(padded);
  Case fixed = long_ctx;
  fixed.seqlen_k = 9000;
  fixed.deterministic = true;  // fixed chunks
  cases.push_back(fixed);
  return cases;
}

const std::vector<Case>& cached_cases() {
  static const std::vector<Case> cases = decode_cases();
  return cases;
}

class DenseDecode : public ::testing::TestWithParam<std::size_t> {};

TEST_P(DenseDecode, MatchesReferenceAndAutoTakesIt) {
  if (!gpu_available()) GTEST_SKIP() << kNoGpu;
  const Case& c = cached_cases()[GetParam()];
  SCOPED_TRACE(c.name() + ", " + seed_text() + " reproduces these inputs");
  CaseData data(c);
  const Results got = data.run(kImpl, Device::cuda, false);
  for (const Comparison& cmp : data.compare_all(got, false)) EXPECT_TRUE(cmp.ok()) << cmp.describe();
  const Results with_auto = data.run("auto", Device::cuda, false);
  EXPECT_EQ(with_auto.out, got.out) << "auto did not take the decode path (or it is not deterministic)";
  EXPECT_EQ(with_auto.lse, got.lse);
  // Without an lse view the lse buffer must stay untouched (CaseData checks) and out must not change.
  const Results no_lse = data.run(kImpl, Device::cuda, false, false);
  EXPECT_EQ(no_lse.out, got.out);
}

std::vector<std::size_t> case_indices() {
  std::vector<std::size_t> out;
  for (std::size_t i = 0; i < cached_cases().size(); ++i) out.push_back(i);
  return out;
}

INSTANTIATE_TEST_SUITE_P(Shapes, DenseDecode, ::testing::ValuesIn(case_indices()),
                         [](const ::testing::TestParamInfo<std::size_t>& info) {
                           return cached_cases()[info.param].name() + "_" + std::to_string(info.param);
                         });

// With AttentionParams::deterministic the chunks do not follow the batch: each sequence of a batch of 5 gets the
// bits it gets alone (views into the same device buffers). The control: the automatic split of the same runs cuts
// a batch of 5 and a batch of 1 differently, which this test prints (not required).
TEST(DenseDecodeDeterministic, BatchInvariant) {
  if (!gpu_available()) GTEST_SKIP() << kNoGpu;
  SCOPED_TRACE(seed_text());
  constexpr std::int64_t kBatch = 5, kHq = 32, kHkv = 8, kKeys = 6000, kDim = 128;
  std::mt19937_64 rng(test_seed());
  std::normal_distribution<double> normal(0.0, 1.0);
  HostBuffer q(DType::bf16, kBatch * kHq * kDim), k(DType::bf16, kBatch * kKeys * kHkv * kDim),
      v(DType::bf16, kBatch * kKeys * kHkv * kDim);
  for (HostBuffer* b : {&q, &k, &v}) b->fill([&] { return normal(rng); });
  HostBuffer out(DType::bf16, kBatch * kHq * kDim), lse(DType::f32, kBatch * kHq);
  const DeviceBuffer dq(q), dk(k), dv(v);
  DeviceBuffer dout(out), dlse(lse);

  // Runs sequences [first, first + n) as a batch (views into the same buffers, outputs poisoned first) and returns
  // the out and lse bits of sequence `who`.
  const auto run = [&](std::int64_t first, std::int64_t n, bool deterministic, std::int64_t who) {
    out.poison();
    lse.poison();
    dout.upload(out);
    dlse.upload(lse);
    ForwardArgs args;
    args.q = dq.rebase(q.view({n, 1, kHq, kDim}, {}, first * kHq * kDim), q);
    args.k = dk.rebase(k.view({n, kKeys, kHkv, kDim}, {}, first * kKeys * kHkv * kDim), k);
    args.v = dv.rebase(v.view({n, kKeys, kHkv, kDim}, {}, first * kKeys * kHkv * kDim), v);
    args.out = dout.rebase(out.view({n, 1, kHq, kDim}, {}, first * kHq * kDim), out);
    args.lse = dlse.rebase(lse.view({n, kHq, 1}, {}, first * kHq), lse);
    AttentionParams params;
    params.impl = kImpl;
    params.deterministic = deterministic;
    attention_forward(args, params);
    dout.download(out);
    dlse.download(lse);
    const auto* o = static_cast<const std::uint16_t*>(out.data());
    const auto* l = static_cast<const std::uint32_t*>(lse.data());
    std::vector<std::uint32_t> bits(o + who * kHq * kDim, o + (who + 1) * kHq * kDim);
    bits.insert(bits.end(), l + who * kHq, l + (who + 1) * kHq);
    return bits;
  };
  for (std::int64_t b : {0, 2, 4}) {
    EXPECT_EQ(run(b, 1, true, b), run(0, kBatch, true, b)) << "sequence " << b << " alone against in the batch";
  }
  const bool moved = run(0, kBatch, false, 0) != run(0, 1, false, 0);
  std::printf("control, automatic split: sequence 0 alone %s its bits in the batch of %d\n",
              moved ? "differs from" : "equals", int(kBatch));
}

// What cuda_decode refuses names the reason, and "auto" then runs the problem on the dense kernels.
TEST(DenseDecodeRefusals, LeaveTheRestToTheDenseKernels) {
  if (!gpu_available()) GTEST_SKIP() << kNoGpu;
  Case many_rows;
  many_rows.dim_qk = many_rows.dim_v = 128;
  many_rows.heads_q = 8, many_rows.heads_kv = 2, many_rows.seqlen_q = 17, many_rows.seqlen_k = 300;  // 68 rows
  Case var = many_rows;
  var.seqlen_q = 1;
  var.varlen_q = {1, 1}, var.varlen_k = {100, 300};
  for (const auto& [c, reason] : {std::pair<Case, std::string>{many_rows, "query rows"}, {var, "dense q, k and v"}}) {
    SCOPED_TRACE(c.name());
    CaseData data(c);
    try {
      data.run(kImpl, Device::cuda, false);
      ADD_FAILURE() << "cuda_decode accepted a problem it should refuse (" << reason << ")";
    } catch (const Error& e) {
      EXPECT_EQ(e.code(), ErrorCode::unsupported) << e.what();
      EXPECT_NE(std::string(e.what()).find(reason), std::string::npos) << e.what();
    }
    const Results got = data.run("auto", Device::cuda, true);
    for (const Comparison& cmp : data.compare_all(got, true)) EXPECT_TRUE(cmp.ok()) << cmp.describe();
  }
  // The backward of a decode shape goes to the dense kernels too.
  Case decode;
  decode.dim_qk = decode.dim_v = 128;
  decode.heads_q = 8, decode.heads_kv = 2, decode.seqlen_q = 1, decode.seqlen_k = 700;
  CaseData data(decode);
  EXPECT_THROW(data.run(kImpl, Device::cuda, true), Error);
  const Results got = data.run("auto", Device::cuda, true);
  for (const Comparison& cmp : data.compare_all(got, true)) EXPECT_TRUE(cmp.ok()) << cmp.describe();
}

}  // namespace
}  // namespace ioattn::test
