// GPU-only checks of the cuda paged backend (src/cuda/paged/) beyond the shared paged table: long contexts with
// automatic splits, a batch of mixed lengths, every page size, GQA/MQA/MHA, decode and multi-token appends (dense and
// packed), every mask, the score mods and sinks, every head dim and both 16-bit dtypes, each run with no split, a
// fixed split and the automatic one and judged against the fp64 dense reference on the contiguous K/V with the
// library's bound (2x the same-precision naive error + 2 ulps). Caches hold NaN in every slot no sequence owns,
// outputs and the caller's workspace are NaN before each run. Also: batch invariance (bitwise) with SplitKV::fixed, a
// plan reused on a second cache, the allocation path without a workspace, empty sequences, the write and copy
// kernels against the CPU reference backend, and the refusals. Without a GPU every test skips, saying so.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

#include "ioattn/error.hpp"
#include "ioattn/paged.hpp"
#include "paged/paged_support.hpp"
#include "support/buffers.hpp"
#include "support/random.hpp"

namespace ioattn::test::paged {
namespace {

using numerics::Comparison;

constexpr const char* kNoGpu = "no usable GPU on this machine: the cuda paged backend is not exercised";

std::vector<std::int64_t> repeat(std::int64_t value, std::size_t n) { return std::vector<std::int64_t>(n, value); }

// The GPU table. Lengths straddle key tiles (64), chunks and pages; every case runs three ways (see RunsAllSplits).
std::vector<PagedCase> gpu_cases() {
  std::vector<PagedCase> t;
  // The benchmark's shape: GQA 32/8, d128, bf16, decode.
  t.push_back({.name = "long32k_b1_gqa32_8", .heads_q = 32, .heads_kv = 8, .q_lens = {1}, .k_lens = {32768}});
  t.push_back({.name = "b16_mixed_1_to_8k",
               .heads_q = 32,
               .heads_kv = 8,
               .q_lens = repeat(1, 16),
               .k_lens = {1, 8192, 63, 64, 65, 4097, 2048, 777, 8000, 129, 5000, 3, 1500, 6001, 256, 7777}});
  // Page sizes below, equal to, above and not dividing the 64-key tile, and pages a loading thread's rows cross.
  for (std::int64_t ps : {1, 4, 12, 16, 64, 256}) {
    PagedCase c{.name = "pages" + std::to_string(ps), .heads_q = 8, .heads_kv = 2, .page_size = ps,
                .q_lens = {1, 1, 1, 1}, .k_lens = {1, 300, 1000, 2049}};
    t.push_back(c);
  }
  t.push_back({.name = "mqa8_1", .heads_q = 8, .heads_kv = 1, .q_lens = {1, 1, 1}, .k_lens = {17, 1025, 3000}});
  t.push_back({.name = "mha4_4", .heads_q = 4, .heads_kv = 4, .q_lens = {1, 1, 1}, .k_lens = {5, 640, 2222}});
  // Several new tokens: 4 x group 4 = 16 rows (one 16-row tile), 33 x 4 = 132 rows (64-row tiles).
  t.push_back({.name = "q4_causal_br", .q_lens = {4, 4, 4}, .k_lens = {4, 700, 1500}, .mask = Mask::causal()});
  t.push_back({.name = "q33_causal_br", .q_lens = {33, 33}, .k_lens = {33, 1200}, .mask = Mask::causal()});
  t.push_back({.name = "q33_causal_tl", .q_lens = {33, 33}, .k_lens = {40, 1200},
               .mask = Mask::causal(Alignment::top_left)});
  t.push_back({.name = "packed_q_1_4_33_0", .q_lens = {1, 4, 33, 0, 2}, .k_lens = {900, 4, 1333, 70, 2},
               .packed = true, .mask = Mask::causal()});
  t.push_back({.name = "packed_q1_window", .q_lens = {1, 3, 1}, .k_lens = {2000, 800, 10}, .packed = true,
               .mask = Mask::window(300, 0)});
  t.push_back({.name = "window_q4_both_sides", .q_lens = {4, 4}, .k_lens = {1000, 64},
               .mask = Mask::window(100, 2)});
  t.push_back({.name = "softcap_alibi_sinks", .heads_q = 16, .heads_kv = 4, .q_lens = {1, 1, 1},
               .k_lens = {1, 900, 2500}, .softcap = 5.0f, .alibi = Alibi::per_batch_head, .sinks = true});
  t.push_back({.name = "sinks_q33_causal", .q_lens = {33}, .k_lens = {1100}, .mask = Mask::causal(), .sinks = true});
  // Every head dim in both dtypes, with the score mods on the append path.
  for (DType dtype : {DType::bf16, DType::f16}) {
    for (auto [dqk, dv] : {std::pair<std::int64_t, std::int64_t>{64, 64}, {128, 128}, {192, 128}, {256, 256}}) {
      const std::string tag = std::string(dtype == DType::bf16 ? "bf16" : "f16") + "_d" + std::to_string(dqk) +
                              "_" + std::to_string(dv);
      t.push_back({.name = "dims_decode_" + tag, .dtype = dtype, .dim_qk = dqk, .dim_v = dv, .heads_q = 8,
                   .heads_kv = 2, .q_lens = {1, 1}, .k_lens = {1500, 77}, .sinks = true});
      t.push_back({.name = "dims_append_" + tag, .dtype = dtype, .dim_qk = dqk, .dim_v = dv, .heads_q = 8,
                   .heads_kv = 2, .page_size = 64, .q_lens = {20, 20}, .k_lens = {20, 1300}, .mask = Mask::causal(),
                   .softcap = 10.0f, .alibi = Alibi::per_head});
    }
  }
  return t;
}

const std::vector<PagedCase>& cached_cases() {
  static const std::vector<PagedCase> cases = gpu_cases();
  return cases;
}

void expect_ok(const std::vector<Comparison>& all, const std::string& what) {
  for (const Comparison& c : all) EXPECT_TRUE(c.ok()) << what << ": " << c.describe();
}

class CudaPaged : public ::testing::TestWithParam<const PagedCase*> {};

// No split, a fixed split of 256 keys (many chunks) and the automatic one (judged too: its chunks differ per batch).
TEST_P(CudaPaged, RunsAllSplits) {
  if (!gpu_available()) GTEST_SKIP() << kNoGpu;
  SCOPED_TRACE(seed_text() + " reproduces these inputs");
  PagedData data(*GetParam());
  auto batch = data.make_batch();
  for (const SplitKV split : {SplitKV::none(), SplitKV::fixed(256), SplitKV::automatic()}) {
    const std::string what = split.mode == SplitKV::Mode::none    ? "split none"
                             : split.mode == SplitKV::Mode::fixed ? "split fixed 256"
                                                                  : "split automatic";
    RunOptions opt;
    opt.split = split;
    const RunResult got = data.run(*batch, "cuda", Device::cuda, opt);
    expect_ok(data.judge(*batch, got), what + " (split_tokens " + std::to_string(got.plan.split_tokens) +
                                           ", max_splits " + std::to_string(got.plan.max_splits) + ")");
    // No atomics: a second run agrees bit for bit (a race would show here).
    const RunResult again = data.run(*batch, "cuda", Device::cuda, opt);
    for (std::size_t j = 0; j < got.out.size(); ++j) {
      EXPECT_TRUE(same_bits(got.out[j], again.out[j])) << what << ": out of sequence " << j << " changed on rerun";
      EXPECT_TRUE(same_bits(got.lse[j], again.lse[j])) << what << ": lse of sequence " << j << " changed on rerun";
    }
  }
}

std::vector<const PagedCase*> case_pointers() {
  std::vector<const PagedCase*> out;
  for (const PagedCase& c : cached_cases()) out.push_back(&c);
  return out;
}

INSTANTIATE_TEST_SUITE_P(Gpu, CudaPaged, ::testing::ValuesIn(case_pointers()),
                         [](const ::testing::TestParamInfo<const PagedCase*>& info) { return info.param->name; });

// The automatic split must actually split a lone long context (else the 32k case above proves nothing about the
// combine), and must not split a batch that fills the machine.
TEST(CudaPagedPlan, AutomaticSplitsLongContextsOnly) {
  if (!gpu_available()) GTEST_SKIP() << kNoGpu;
  PagedData data({.name = "plan_long", .heads_q = 32, .heads_kv = 8, .q_lens = {1}, .k_lens = {32768}});
  auto batch = data.make_batch();
  const RunResult r = data.run(*batch, "cuda", Device::cuda, RunOptions{.split = SplitKV::automatic()});
  EXPECT_GE(r.plan.max_splits, 8) << "split_tokens " << r.plan.split_tokens;
  EXPECT_EQ(r.plan.split_tokens % 64, 0);
  EXPECT_GT(r.plan.workspace_bytes, 0u);

  PagedData wide({.name = "plan_wide", .heads_q = 32, .heads_kv = 8, .q_lens = repeat(1, 256),
                  .k_lens = repeat(512, 256)});
  auto wb = wide.make_batch();
  const RunResult w = wide.run(*wb, "cuda", Device::cuda, RunOptions{.split = SplitKV::automatic()});
  EXPECT_EQ(w.plan.max_splits, 1) << "2048 CTAs fill any GPU; split_tokens " << w.plan.split_tokens;
  expect_ok(wide.judge(*wb, w), "batch 256");
}

// With SplitKV::fixed a sequence's result depends only on its own length: bitwise the same alone, in a batch, and in
// another order.
TEST(CudaPagedSplit, FixedSplitIsBatchInvariant) {
  if (!gpu_available()) GTEST_SKIP() << kNoGpu;
  SCOPED_TRACE(seed_text());
  PagedData data({.name = "invariance", .heads_q = 32, .heads_kv = 8, .q_lens = repeat(1, 6),
                  .k_lens = {5000, 1, 700, 3000, 64, 2500}, .sinks = true});
  RunOptions opt;
  opt.split = SplitKV::fixed(512);
  auto all = data.make_batch();
  const RunResult batched = data.run(*all, "cuda", Device::cuda, opt);
  expect_ok(data.judge(*all, batched), "batched");
  for (int b : {0, 3, 4}) {
    auto one = data.make_batch({b});
    const RunResult alone = data.run(*one, "cuda", Device::cuda, opt);
    EXPECT_TRUE(same_bits(alone.out[0], batched.out[b])) << "out of sequence " << b << " alone";
    EXPECT_TRUE(same_bits(alone.lse[0], batched.lse[b])) << "lse of sequence " << b << " alone";
  }
  const std::vector<int> order = {5, 2, 0};  // (see also PackedRowsAreBatchInvariant)
  auto other = data.make_batch(order);
  const RunResult shuffled = data.run(*other, "cuda", Device::cuda, opt);
  for (std::size_t j = 0; j < order.size(); ++j) {
    EXPECT_TRUE(same_bits(shuffled.out[j], batched.out[order[j]])) << "sequence " << order[j] << " at " << j;
  }
}

// Packed q: a sequence with few new tokens runs the 16-row variant whether or not a long append (64-row variant)
// shares its batch, so it too is bitwise batch invariant under SplitKV::fixed.
TEST(CudaPagedSplit, PackedRowsAreBatchInvariant) {
  if (!gpu_available()) GTEST_SKIP() << kNoGpu;
  SCOPED_TRACE(seed_text());
  PagedData data({.name = "packed_invariance", .q_lens = {3, 33, 1}, .k_lens = {900, 1000, 77}, .packed = true,
                  .mask = Mask::causal(), .alibi = Alibi::per_head});
  RunOptions opt;
  opt.split = SplitKV::fixed(128);
  auto all = data.make_batch();
  const RunResult batched = data.run(*all, "cuda", Device::cuda, opt);
  expect_ok(data.judge(*all, batched), "batched");
  for (int b : {0, 1, 2}) {
    auto one = data.make_batch({b});
    const RunResult alone = data.run(*one, "cuda", Device::cuda, opt);
    EXPECT_TRUE(same_bits(alone.out[0], batched.out[b])) << "out of sequence " << b << " alone";
    EXPECT_TRUE(same_bits(alone.lse[0], batched.lse[b])) << "lse of sequence " << b << " alone";
  }
}

// The 16-row decode at head dims 64 and 128 runs as two key groups (one CTA per SM) on small grids and as one group
// with two states per warp on larger ones (src/cuda/paged/decode.hpp): both must give the same bits, or a fixed (or
// no) split would stop being batch invariant. Each kernel is forced in turn (IOATTN_PAGED_KEY_GROUPS) on mixed
// lengths (an odd count of key tiles, a partial tile, an empty part), masks, sinks and ALiBi, with every split; both
// are judged too.
TEST(CudaPagedSplit, KeyGroupsGiveTheSameBits) {
  if (!gpu_available()) GTEST_SKIP() << kNoGpu;
  SCOPED_TRACE(seed_text());
  const std::vector<PagedCase> cases = {
      {.name = "groups_decode", .heads_q = 32, .heads_kv = 8, .q_lens = repeat(1, 5),
       .k_lens = {5000, 1, 64, 700, 2049}, .sinks = true},
      {.name = "groups_packed_window_alibi", .q_lens = {2, 4, 1}, .k_lens = {1500, 130, 999}, .packed = true,
       .mask = Mask::window(200, 0), .alibi = Alibi::per_head},
      {.name = "groups_decode_d64", .dim_qk = 64, .dim_v = 64, .heads_q = 16, .heads_kv = 4, .q_lens = repeat(1, 4),
       .k_lens = {3000, 65, 1, 1200}, .sinks = true},
  };
  for (const PagedCase& c : cases) {
    PagedData data(c);
    auto batch = data.make_batch();
    for (const SplitKV split : {SplitKV::none(), SplitKV::fixed(256), SplitKV::fixed(192), SplitKV::automatic()}) {
      RunOptions opt;
      opt.split = split;
      std::vector<RunResult> results;
      // Forced one group, forced two, and the backend's own choice (for a fixed or no split: one of the two).
      for (const char* groups : {"1", "2", "default"}) {
        if (std::string(groups) != "default") setenv("IOATTN_PAGED_KEY_GROUPS", groups, 1);
        results.push_back(data.run(*batch, "cuda", Device::cuda, opt));
        unsetenv("IOATTN_PAGED_KEY_GROUPS");
        expect_ok(data.judge(*batch, results.back()), c.name + " with " + groups + " key group(s)");
      }
      // An automatic split plans for the kernel it expects, so forcing one may change the chunks (and the bits),
      // and on a grid of several waves it runs a one-part kernel of its own; at head dim 64 a fixed split runs
      // the one-part kernel too (backend.cu, narrow_kernel).
      if (split.mode == SplitKV::Mode::automatic || (c.dim_qk == 64 && split.mode == SplitKV::Mode::fixed)) {
        results.pop_back();
      }
      for (std::size_t r = 1; r < results.size(); ++r) {
        if (results[0].plan.split_tokens != results[r].plan.split_tokens) continue;
        for (std::size_t j = 0; j < results[0].out.size(); ++j) {
          EXPECT_TRUE(same_bits(results[0].out[j], results[r].out[j]))
              << c.name << ": out of sequence " << j << " differs between one key group and run " << r
              << " (split_tokens " << results[0].plan.split_tokens << " and " << results[r].plan.split_tokens << ")";
          EXPECT_TRUE(same_bits(results[0].lse[j], results[r].lse[j]))
              << c.name << ": lse of sequence " << j << " differs between one key group and run " << r;
        }
      }
    }
  }
}

// One plan serves a second cache of the same shapes (the next layer) and grows with the contexts: planned for
// shorter sequences (expected 2000 keys), run on longer ones.
TEST(CudaPagedPlan, PlanReusedOnAnotherCache) {
  if (!gpu_available()) GTEST_SKIP() << kNoGpu;
  SCOPED_TRACE(seed_text());
  const PagedCase layer0{.name = "layer0", .heads_q = 16, .heads_kv = 4, .q_lens = {1, 1, 1},
                         .k_lens = {3000, 100, 4096}};
  PagedCase layer1 = layer0;
  layer1.name = "layer1";
  PagedData d0(layer0), d1(layer1);
  auto b0 = d0.make_batch();
  auto b1 = d1.make_batch();
  RunOptions opt;
  opt.split = SplitKV::automatic();
  opt.expected_seqlen_k = 2000;
  const RunResult r0 = d0.run(*b0, "cuda", Device::cuda, opt);
  expect_ok(d0.judge(*b0, r0), "layer 0");
  opt.plan = &r0.plan;
  const RunResult r1 = d1.run(*b1, "cuda", Device::cuda, opt);
  expect_ok(d1.judge(*b1, r1), "layer 1 with layer 0's plan");
  EXPECT_GT(r0.plan.max_splits, 1) << "the plan should split these contexts; split_tokens " << r0.plan.split_tokens;
}

// Without params.workspace the forward takes its partial buffer from the stream's pool.
TEST(CudaPagedSplit, NoWorkspaceAllocatesOnTheStream) {
  if (!gpu_available()) GTEST_SKIP() << kNoGpu;
  SCOPED_TRACE(seed_text());
  PagedData data({.name = "no_workspace", .q_lens = {5, 5}, .k_lens = {4000, 2100}, .mask = Mask::causal()});
  auto batch = data.make_batch();
  RunOptions opt;
  opt.split = SplitKV::fixed(320);
  opt.caller_workspace = false;
  opt.with_lse = false;
  const RunResult got = data.run(*batch, "cuda", Device::cuda, opt);
  EXPECT_GT(got.plan.workspace_bytes, 0u);
  expect_ok(data.judge(*batch, got), "no workspace");
  EXPECT_TRUE(got.lse_untouched) << "lse was not asked for but written";
}

// Sequences with no keys (a device-resident length the CPU would refuse): out 0 and lse -inf, or the sink's share.
TEST(CudaPaged, EmptySequences) {
  if (!gpu_available()) GTEST_SKIP() << kNoGpu;
  SCOPED_TRACE(seed_text());
  for (bool sinks : {false, true}) {
    PagedData data({.name = std::string("empty") + (sinks ? "_sinks" : ""), .q_lens = {1, 1, 1},
                    .k_lens = {0, 700, 0}, .sinks = sinks});
    auto batch = data.make_batch();
    for (const SplitKV split : {SplitKV::none(), SplitKV::fixed(128)}) {
      RunOptions opt;
      opt.split = split;
      const RunResult got = data.run(*batch, "cuda", Device::cuda, opt);
      expect_ok(data.judge(*batch, got), sinks ? "with sinks" : "without sinks");
      for (double x : got.out[0]) EXPECT_EQ(x, 0.0);
    }
  }
}

// The write and copy kernels byte for byte against the CPU reference backend: fp16 with 16-byte rows (vector path)
// and fp32 with an odd head dim (element path), slots -1 skipped.
TEST(CudaPagedCache, WriteAndCopyMatchTheCpu) {
  if (!gpu_available()) GTEST_SKIP() << kNoGpu;
  SCOPED_TRACE(seed_text());
  Rng rng("cuda_paged/cache");
  for (auto [dtype, dim] : {std::pair<DType, std::int64_t>{DType::f16, 128}, {DType::f32, 13}}) {
    const std::int64_t pages = 40, ps = 16, hkv = 3, tokens = 100;
    HostBuffer k_cache(dtype, pages * ps * hkv * dim), v_cache(dtype, pages * ps * hkv * dim);
    k_cache.fill([&] { return rng.normal(); });
    v_cache.fill([&] { return rng.normal(); });
    HostBuffer k_new(dtype, tokens * hkv * dim), v_new(dtype, tokens * hkv * dim), slots(DType::i32, tokens);
    k_new.fill([&] { return rng.normal(); });
    v_new.fill([&] { return rng.normal(); });
    std::vector<std::int32_t> perm(pages * ps);
    for (std::size_t e = 0; e < perm.size(); ++e) perm[e] = static_cast<std::int32_t>(e);
    for (std::size_t e = perm.size() - 1; e > 0; --e) std::swap(perm[e], perm[rng.uniform_int(0, e)]);
    for (std::int64_t t = 0; t < tokens; ++t) slots.set(t, t % 7 == 3 ? -1 : perm[t]);
    HostBuffer copies(DType::i32, 6);
    const std::int32_t pairs[] = {3, 30, 17, 4, 0, 39};
    for (int e = 0; e < 6; ++e) copies.set(e, pairs[e]);

    HostBuffer want_k = k_cache, want_v = v_cache;
    AttentionParams cpu;
    cpu.impl = "reference";
    paged_kv_write({k_new.view({tokens, hkv, dim}), v_new.view({tokens, hkv, dim}), slots.view({tokens}),
                    want_k.view({pages, ps, hkv, dim}), want_v.view({pages, ps, hkv, dim})},
                   cpu);
    paged_kv_copy_pages(want_k.view({pages, ps, hkv, dim}), want_v.view({pages, ps, hkv, dim}), copies.view({3, 2}),
                        cpu);

    DeviceBuffer dk(k_cache), dv(v_cache), dkn(k_new), dvn(v_new), ds(slots), dc(copies);
    AttentionParams gpu;
    gpu.impl = "cuda";
    const TensorView kc = dk.rebase(k_cache.view({pages, ps, hkv, dim}), k_cache);
    const TensorView vc = dv.rebase(v_cache.view({pages, ps, hkv, dim}), v_cache);
    paged_kv_write({dkn.rebase(k_new.view({tokens, hkv, dim}), k_new),
                    dvn.rebase(v_new.view({tokens, hkv, dim}), v_new), ds.rebase(slots.view({tokens}), slots), kc, vc},
                   gpu);
    paged_kv_copy_pages(kc, vc, dc.rebase(copies.view({3, 2}), copies), gpu);
    dk.download(k_cache);
    dv.download(v_cache);
    EXPECT_EQ(std::memcmp(k_cache.data(), want_k.data(), want_k.bytes()), 0) << to_string(dtype) << " k_cache";
    EXPECT_EQ(std::memcmp(v_cache.data(), want_v.data(), want_v.bytes()), 0) << to_string(dtype) << " v_cache";
  }
}

// What the backend cannot run is refused with the reason, before anything is written.
TEST(CudaPagedRefusals, Fp32AndOddHeadDims) {
  if (!gpu_available()) GTEST_SKIP() << kNoGpu;
  struct Refusal {
    PagedCase c;
    const char* says;
  };
  const Refusal refusals[] = {
      {{.name = "fp32", .dtype = DType::f32, .dim_qk = 64, .dim_v = 64, .q_lens = {1}, .k_lens = {10}},
       "fp16 or bf16"},
      {{.name = "d80", .dim_qk = 80, .dim_v = 80, .q_lens = {1}, .k_lens = {10}}, "64, 128, 192/128"},
  };
  for (const Refusal& r : refusals) {
    PagedData data(r.c);
    auto batch = data.make_batch();
    try {
      data.run(*batch, "cuda", Device::cuda, RunOptions{});
      ADD_FAILURE() << r.c.name << " was accepted";
    } catch (const Error& e) {
      EXPECT_EQ(e.code(), ErrorCode::unsupported) << e.what();
      EXPECT_NE(std::string(e.what()).find(r.says), std::string::npos) << e.what();
    }
    for (std::int64_t e = 0; e < batch->out.elements(); ++e) {
      ASSERT_TRUE(std::isnan(batch->out.get(e))) << r.c.name << ": out written by a refused call at " << e;
    }
  }
}

}  // namespace
}  // namespace ioattn::test::paged
