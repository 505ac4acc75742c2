// Paged attention against every paged backend present (reference and tiled on the CPU; cuda with the same inputs in
// device memory when a GPU is usable): paged equals dense (the fp64 dense reference on the contiguous K/V, with the
// library's bound), batched equals one at a time, split equals no split, plans, errors, and the cache write and page
// copy. Every check is shown to fire on a corrupted page id or result (ChecksCanFail).
#include <gtest/gtest.h>

#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "api/paged_problem.hpp"
#include "cpu/paged_tiled_kernel.hpp"
#include "ioattn/error.hpp"
#include "ioattn/paged.hpp"
#include "paged/paged_support.hpp"
#include "support/random.hpp"

namespace ioattn::test::paged {
namespace {

using numerics::Comparison;

const Mask kCausalBR = Mask::causal();
const Mask kCausalTL = Mask::causal(Alignment::top_left);

// The table. Lengths: an exact page boundary, a short context and odd ones in most cases; 0 new tokens in the
// packed ones.
std::vector<PagedCase> table() {
  std::vector<PagedCase> t;
  auto add = [&](PagedCase c) { t.push_back(std::move(c)); };
  {
    PagedCase c{.name = "decode_bf16_d128_p16_gqa4", .q_lens = {1, 1, 1, 1}, .k_lens = {1, 48, 333, 130}};
    add(c);
  }
  {
    PagedCase c{.name = "decode_f16_d64_p1_mha_causal", .dtype = DType::f16, .dim_qk = 64, .dim_v = 64,
                .heads_q = 4, .heads_kv = 4, .page_size = 1, .q_lens = {1, 1, 1}, .k_lens = {1, 17, 70},
                .mask = kCausalBR};
    add(c);
  }
  {
    PagedCase c{.name = "decode_f32_d80_p5_mqa", .dtype = DType::f32, .dim_qk = 80, .dim_v = 80, .heads_q = 8,
                .heads_kv = 1, .page_size = 5, .q_lens = {1, 1, 1}, .k_lens = {5, 23, 101}};
    add(c);
  }
  {
    PagedCase c{.name = "decode_bf16_d128_p256_gqa8_sinks", .heads_q = 16, .heads_kv = 2, .page_size = 256,
                .q_lens = {1, 1, 1}, .k_lens = {256, 700, 9}, .sinks = true};
    add(c);
  }
  {
    PagedCase c{.name = "decode_bf16_d128_p64_window", .page_size = 64, .q_lens = {1, 1, 1},
                .k_lens = {64, 500, 2}, .mask = Mask::window(32, 0)};
    add(c);
  }
  {
    PagedCase c{.name = "decode_bf16_d128_p16_softcap_alibi_bh", .q_lens = {1, 1}, .k_lens = {160, 77},
                .softcap = 2.0f, .alibi = Alibi::per_batch_head};
    add(c);
  }
  {
    PagedCase c{.name = "append_bf16_d128_p16_q3_causal_br", .q_lens = {3, 3, 3}, .k_lens = {3, 48, 250},
                .mask = kCausalBR};
    add(c);
  }
  {
    PagedCase c{.name = "append_f16_d64_p64_q3_causal_tl_gqa8", .dtype = DType::f16, .dim_qk = 64, .dim_v = 64,
                .heads_q = 8, .heads_kv = 1, .page_size = 64, .q_lens = {3, 3}, .k_lens = {128, 71},
                .mask = kCausalTL};
    add(c);
  }
  {
    PagedCase c{.name = "prefill_bf16_d128_p16_q17_causal", .q_lens = {17, 17, 17}, .k_lens = {17, 64, 400},
                .mask = kCausalBR};
    add(c);
  }
  {
    PagedCase c{.name = "packed_bf16_d128_p16_causal", .q_lens = {1, 0, 3, 17, 5}, .k_lens = {40, 9, 64, 200, 5},
                .packed = true, .mask = kCausalBR};
    add(c);
  }
  {
    PagedCase c{.name = "packed_f32_d192x128_p16_alibi_h", .dtype = DType::f32, .dim_qk = 192, .dim_v = 128,
                .heads_q = 4, .heads_kv = 2, .q_lens = {2, 1, 0, 0}, .k_lens = {100, 16, 33, 0}, .packed = true,
                .alibi = Alibi::per_head};
    add(c);
  }
  {
    PagedCase c{.name = "decode_bf16_d128_p16_split64_sinks", .q_lens = {1, 1, 1, 1}, .k_lens = {1000, 64, 130, 7},
                .sinks = true, .split = SplitKV::fixed(64)};
    add(c);
  }
  {
    PagedCase c{.name = "packed_bf16_d128_p16_split128_window", .q_lens = {17, 1, 4}, .k_lens = {600, 300, 4},
                .packed = true, .mask = Mask::window(100, 0), .split = SplitKV::fixed(128)};
    add(c);
  }
  {
    PagedCase c{.name = "decode_bf16_d128_p16_auto_gqa4_b1", .heads_q = 4, .heads_kv = 1, .q_lens = {1},
                .k_lens = {3000}, .split = SplitKV::automatic()};
    add(c);
  }
  {
    PagedCase c{.name = "append_f16_d40_p5_q3_padded_sinks", .dtype = DType::f16, .dim_qk = 40, .dim_v = 40,
                .heads_q = 6, .heads_kv = 3, .page_size = 5, .q_lens = {3, 3, 3}, .k_lens = {3, 25, 93},
                .mask = kCausalBR, .sinks = true, .padded_cache = true};
    add(c);
  }
  {
    PagedCase c{.name = "decode_f32_d256_p16_split64_tl_window_alibi", .dtype = DType::f32, .dim_qk = 256,
                .dim_v = 256, .heads_q = 2, .heads_kv = 1, .q_lens = {1, 1}, .k_lens = {260, 31},
                .mask = Mask::window(90, 0, Alignment::top_left), .alibi = Alibi::per_head,
                .split = SplitKV::fixed(64)};
    add(c);
  }
  {
    PagedCase c{.name = "prefill_f32_d64_p1_q17_causal_tl_split64", .dtype = DType::f32, .dim_qk = 64, .dim_v = 64,
                .heads_q = 4, .heads_kv = 1, .page_size = 1, .q_lens = {17, 17}, .k_lens = {300, 17},
                .mask = kCausalTL, .split = SplitKV::fixed(64)};
    add(c);
  }
  {
    PagedCase c{.name = "packed_bf16_d128_p16_q17_gqa8_softcap_split64", .heads_q = 16, .heads_kv = 2,
                .q_lens = {17, 0, 2}, .k_lens = {200, 16, 90}, .packed = true, .mask = kCausalBR, .softcap = 3.0f,
                .sinks = true, .split = SplitKV::fixed(64)};
    add(c);
  }
  return t;
}

const std::vector<PagedCase>& cases() {
  static const std::vector<PagedCase> t = table();
  return t;
}

// Runs `fn` on every backend present, or notes why a backend cannot take part (no GPU; not supported).
template <class Fn>
void for_each_backend(Fn&& fn) {
  for (const PagedBackendName& be : paged_backends_present()) {
    SCOPED_TRACE("backend " + be.name);
    if (be.device == Device::cuda && !gpu_available()) {
      std::printf("[  NOTE    ] backend '%s' needs a GPU; none is usable on this machine\n", be.name.c_str());
      continue;
    }
    try {
      fn(be);
    } catch (const Error& e) {
      if (e.code() != ErrorCode::unsupported) throw;
      std::printf("[  NOTE    ] backend '%s' does not support this: %s\n", be.name.c_str(), e.what());
    }
  }
}

void expect_within_bound(const std::vector<Comparison>& all, const std::string& what) {
  static const bool verbose = std::getenv("IOATTN_TEST_VERBOSE") != nullptr;
  for (const Comparison& c : all) {
    if (verbose) std::printf("  %s: %s\n", what.c_str(), c.describe().c_str());
    EXPECT_TRUE(c.ok()) << what << ": " << c.describe();
  }
}

// ---- paged equals dense, over the table -------------------------------------------------------------------------

struct Param {
  PagedBackendName backend;
  const PagedCase* kase;
};

std::vector<Param> all_params() {
  std::vector<Param> list;
  for (const PagedCase& c : cases())
    for (const PagedBackendName& b : paged_backends_present()) list.push_back({b, &c});
  return list;
}

PagedData& case_data(const PagedCase& c) {
  static std::unique_ptr<PagedData> last;
  if (!last || last->kase().name != c.name) {
    last.reset();
    last = std::make_unique<PagedData>(c);
  }
  return *last;
}

class PagedTable : public ::testing::TestWithParam<Param> {};

TEST_P(PagedTable, PagedEqualsDense) {
  SCOPED_TRACE(seed_text() + " reproduces these inputs");
  const Param& p = GetParam();
  if (p.backend.device == Device::cuda && !gpu_available()) {
    GTEST_SKIP() << "backend '" << p.backend.name << "' needs a GPU; none is usable on this machine";
  }
  PagedData& data = case_data(*p.kase);
  auto batch = data.make_batch();
  RunResult got;
  try {
    got = data.run(*batch, p.backend.name, p.backend.device, {.split = p.kase->split});
  } catch (const Error& e) {
    if (e.code() != ErrorCode::unsupported) throw;
    GTEST_SKIP() << "backend '" << p.backend.name << "' does not support this case: " << e.what();
  }
  EXPECT_EQ(got.plan.impl, p.backend.name);
  EXPECT_TRUE(got.inputs_untouched) << "the run wrote to q, a cache or a table";
  expect_within_bound(data.judge(*batch, got), "with lse");

  // No lse asked for: the same out within the bound, and the lse buffer left alone. The partial results in an
  // internal buffer this time (params.workspace null).
  const RunResult without = data.run(*batch, p.backend.name, p.backend.device,
                                     {.split = p.kase->split, .with_lse = false, .caller_workspace = false});
  expect_within_bound(data.judge(*batch, without), "without lse");
  EXPECT_TRUE(without.lse_untouched) << "lse was written although no lse view was given";
}

std::string param_name(const ::testing::TestParamInfo<Param>& info) {
  return info.param.backend.name + "_" + info.param.kase->name;
}

INSTANTIATE_TEST_SUITE_P(Paged, PagedTable, ::testing::ValuesIn(all_params()), param_name);

// ---- batch composition ------------------------------------------------------------------------------------------

// Decode over contexts from 1 to 700 (split over several 64-key chunks, or not).
PagedCase decode_case(const std::string& name) {
  return PagedCase{.name = name, .q_lens = {1, 1, 1, 1, 1}, .k_lens = {700, 1, 64, 333, 129}, .sinks = true};
}

TEST(PagedBatch, BatchedDecodeEqualsOneAtATime) {
  SCOPED_TRACE(seed_text());
  PagedData data(decode_case("batched_vs_single"));
  for_each_backend([&](const PagedBackendName& be) {
    for (const SplitKV split : {SplitKV::none(), SplitKV::fixed(64)}) {
      SCOPED_TRACE(split.mode == SplitKV::Mode::none ? "split none" : "split fixed 64");
      auto all = data.make_batch();
      const RunResult batched = data.run(*all, be.name, be.device, {.split = split});
      expect_within_bound(data.judge(*all, batched), "batched");
      for (int b = 0; b < data.batch(); ++b) {
        auto one = data.make_batch({b});
        const RunResult single = data.run(*one, be.name, be.device, {.split = split});
        EXPECT_TRUE(same_bits(single.out[0], batched.out[b])) << "out of sequence " << b << " alone differs";
        EXPECT_TRUE(same_bits(single.lse[0], batched.lse[b])) << "lse of sequence " << b << " alone differs";
      }
      // Other thread counts: the same bits (each output row is summed by one thread in a fixed order).
      for (const int threads : {1, 3}) {
        all->params.num_threads = threads;
        const RunResult other = data.run(*all, be.name, be.device, {.split = split});
        for (int b = 0; b < data.batch(); ++b) {
          EXPECT_TRUE(same_bits(other.out[b], batched.out[b])) << threads << " threads, sequence " << b;
          EXPECT_TRUE(same_bits(other.lse[b], batched.lse[b])) << threads << " threads, sequence " << b;
        }
      }
      // Another batch around the same sequences, in another order and with a repeat.
      auto mixed = data.make_batch({3, 0, 3, 2});
      const RunResult other = data.run(*mixed, be.name, be.device, {.split = split});
      const int where[] = {3, 0, 3, 2};
      for (int j = 0; j < 4; ++j) {
        EXPECT_TRUE(same_bits(other.out[j], batched.out[where[j]])) << "sequence " << where[j] << " at " << j;
        EXPECT_TRUE(same_bits(other.lse[j], batched.lse[where[j]])) << "sequence " << where[j] << " at " << j;
      }
    }
  });
}

// ---- split-KV -----------------------------------------------------------------------------------------------------

TEST(PagedSplit, SplitEqualsNoSplit) {
  SCOPED_TRACE(seed_text());
  for (const PagedCase& c :
       {PagedCase{.name = "split_decode", .q_lens = {1, 1, 1, 1}, .k_lens = {1500, 260, 64, 1}, .sinks = true},
        PagedCase{.name = "split_packed_causal", .q_lens = {3, 5, 0}, .k_lens = {900, 130, 7}, .packed = true,
                  .mask = kCausalBR, .alibi = Alibi::per_head}}) {
    SCOPED_TRACE(c.name);
    PagedData data(c);
    for_each_backend([&](const PagedBackendName& be) {
      auto batch = data.make_batch();
      const RunResult none = data.run(*batch, be.name, be.device, {.split = SplitKV::none()});
      const auto none_cmp = data.judge(*batch, none);
      expect_within_bound(none_cmp, "none");
      for (const SplitKV split : {SplitKV::fixed(64), SplitKV::fixed(256), SplitKV::automatic()}) {
        SCOPED_TRACE("split tokens " + std::to_string(split.tokens));
        const RunResult got = data.run(*batch, be.name, be.device, {.split = split});
        const auto cmp = data.judge(*batch, got);
        expect_within_bound(cmp, "split");
        // Split against no split: within the bound either must meet against the reference.
        for (std::size_t j = 0; j < got.out.size(); ++j) {
          for (std::size_t e = 0; e < got.out[j].size(); ++e) {
            ASSERT_LE(std::fabs(got.out[j][e] - none.out[j][e]), cmp[0].bound) << "sequence " << j << " element " << e;
          }
        }
      }
      // Fixed splits: a sequence's result does not depend on the batch around it.
      auto sub = data.make_batch({0});
      const RunResult full = data.run(*batch, be.name, be.device, {.split = SplitKV::fixed(64)});
      const RunResult alone = data.run(*sub, be.name, be.device, {.split = SplitKV::fixed(64)});
      EXPECT_TRUE(same_bits(full.out[0], alone.out[0]));
      EXPECT_TRUE(same_bits(full.lse[0], alone.lse[0]));
    });
  }
}

TEST(PagedSplit, AutomaticSplitSmallAndLargeContexts) {
  SCOPED_TRACE(seed_text());
  for (const std::int64_t len : {std::int64_t{200}, std::int64_t{5000}}) {
    PagedData data(PagedCase{.name = "auto_" + std::to_string(len), .heads_q = 4, .heads_kv = 1, .q_lens = {1},
                             .k_lens = {len}, .sinks = true});
    for_each_backend([&](const PagedBackendName& be) {
      auto batch = data.make_batch();
      for (const std::int64_t expected : {std::int64_t{0}, len, std::int64_t{64}}) {
        SCOPED_TRACE("context " + std::to_string(len) + ", expected_seqlen_k " + std::to_string(expected));
        for (const bool own : {true, false}) {
          const RunResult got = data.run(*batch, be.name, be.device,
                                         {.split = SplitKV::automatic(), .expected_seqlen_k = expected,
                                          .caller_workspace = own});
          const PagedPlan& plan = got.plan;
          const std::int64_t capacity = data.max_pages_per_seq() * data.kase().page_size;
          EXPECT_GE(plan.split_tokens, 1);
          EXPECT_EQ(plan.max_splits, detail::split_count(capacity, plan.split_tokens));
          if (plan.max_splits == 1) {
            EXPECT_EQ(plan.workspace_bytes, 0u);
          } else {
            EXPECT_GE(plan.workspace_bytes, static_cast<std::size_t>(plan.max_splits * 4 * 129 * 4));
          }
          if (be.name == "tiled" && plan.split_tokens < capacity) {
            EXPECT_EQ(plan.split_tokens % 64, 0);
            EXPECT_GE(plan.split_tokens, 256);
          }
          expect_within_bound(data.judge(*batch, got), "automatic");
        }
      }
    });
  }
}

// ---- plans ----------------------------------------------------------------------------------------------------------

TEST(PagedPlan, ReusedAcrossLayersAndRefusedForOtherShapes) {
  SCOPED_TRACE(seed_text());
  // Two "layers": the same shapes, different K/V and different page layouts.
  PagedCase c{.name = "layer0", .q_lens = {1, 1, 1}, .k_lens = {300, 17, 64}, .mask = kCausalBR};
  PagedData layer0(c);
  c.name = "layer1";
  PagedData layer1(c);
  for_each_backend([&](const PagedBackendName& be) {
    auto b0 = layer0.make_batch();
    auto b1 = layer1.make_batch();
    ASSERT_EQ(layer0.num_pages(), layer1.num_pages());
    const RunResult r0 = layer0.run(*b0, be.name, be.device, {.split = SplitKV::fixed(64)});
    const PagedPlan plan = r0.plan;
    const RunResult r1 = layer1.run(*b1, be.name, be.device, {.plan = &plan});
    const RunResult again = layer0.run(*b0, be.name, be.device, {.plan = &plan});
    expect_within_bound(layer0.judge(*b0, r0), "layer 0");
    expect_within_bound(layer1.judge(*b1, r1), "layer 1");
    EXPECT_TRUE(same_bits(again.out[1], r0.out[1]));

    // A plan for a batch of one sequence, used on three: refused, naming the plan, with the outputs untouched.
    auto one = layer0.make_batch({0});
    const RunResult r_one = layer0.run(*one, be.name, be.device, {});
    try {
      layer0.run(*b0, be.name, be.device, {.plan = &r_one.plan});
      ADD_FAILURE() << "a plan for batch 1 ran a batch of 3";
    } catch (const Error& e) {
      EXPECT_EQ(e.code(), ErrorCode::invalid_argument);
      EXPECT_NE(std::string(e.what()).find("plan"), std::string::npos) << e.what();
    }
    for (std::int64_t e = 0; e < b0->out.elements(); ++e) ASSERT_TRUE(std::isnan(b0->out.get(e))) << "out written";
  });
}


// ---- errors -------------------------------------------------------------------------------------------------------

bool all_nan(const HostBuffer& b) {
  for (std::int64_t e = 0; e < b.elements(); ++e)
    if (!std::isnan(b.get(e))) return false;
  return true;
}

// Runs `run` (which must throw), and checks the error names `argument` and that out and lse still hold the poison.
template <class Run>
void expect_rejected(const std::string& argument, Batch& batch, Run&& run) {
  SCOPED_TRACE("bad " + argument);
  try {
    run();
    ADD_FAILURE() << "accepted a bad " << argument;
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), ErrorCode::invalid_argument) << e.what();
    EXPECT_NE(std::string(e.what()).find(argument), std::string::npos) << "the message does not name " << argument
                                                                       << ": " << e.what();
  }
  EXPECT_TRUE(all_nan(batch.out)) << "out was written by a rejected call";
  EXPECT_TRUE(all_nan(batch.lse)) << "lse was written by a rejected call";
}

TEST(PagedErrors, EachBadArgumentIsNamedAndNothingIsWritten) {
  SCOPED_TRACE(seed_text());
  PagedData data(PagedCase{.name = "errors", .q_lens = {3, 3}, .k_lens = {40, 17}, .mask = kCausalBR});
  const PagedCase& c = data.kase();
  const std::int64_t capacity = data.max_pages_per_seq() * c.page_size;
  for_each_backend([&](const PagedBackendName& be) {
    // Contents of tables and lengths are checked on the CPU only (paged.hpp: device-resident ones are trusted).
    const bool checks_contents = be.device == Device::cpu;
    auto good = data.make_batch();
    const PagedPlan plan = data.run(*good, be.name, be.device, {.split = SplitKV::fixed(64)}).plan;
    // Each mutation on a fresh batch, run with the good plan: the forward itself must refuse it.
    const auto with = [&](const std::string& argument, auto&& mutate) {
      auto batch = data.make_batch();
      mutate(*batch);
      expect_rejected(argument, *batch, [&] { data.run(*batch, be.name, be.device, {.plan = &plan}); });
    };
    const TensorView k = data.k_cache_view(), v = data.v_cache_view();
    with("kv.k_cache", [&](Batch& b) {
      b.args.kv.k_cache = TensorView::strided(k.data, k.dtype, {k.shape[0], k.shape[1], k.shape[2] * k.shape[3]},
                                              {k.stride[0], k.stride[1], 1}, k.device);
    });
    with("kv.v_cache", [&](Batch& b) {
      b.args.kv.v_cache = TensorView::strided(v.data, v.dtype, {v.shape[0], v.shape[1] - 1, v.shape[2], v.shape[3]},
                                              {v.stride[0], v.stride[1], v.stride[2], 1}, v.device);
    });
    with("kv.block_table", [&](Batch& b) {
      const TensorView t = b.args.kv.block_table;
      b.args.kv.block_table = TensorView::strided(t.data, DType::f32, {t.shape[0], t.shape[1]}, {t.stride[0], 1});
    });
    with("kv.block_table", [&](Batch& b) {
      const TensorView t = b.args.kv.block_table;
      b.args.kv.block_table = TensorView::strided(t.data, DType::i32, {t.shape[0] - 1, t.shape[1]}, {t.stride[0], 1});
    });
    with("q", [&](Batch& b) {  // 7 query heads over 2 kv heads
      const TensorView q = b.args.q;
      b.args.q = TensorView::strided(q.data, q.dtype, {q.shape[0], q.shape[1], q.shape[2] - 1, q.shape[3]},
                                     {q.stride[0], q.stride[1], q.stride[2], 1});
    });
    with("lse", [&](Batch& b) { b.args.lse = b.lse.view({2, c.heads_q - 1, 3}); });
    if (checks_contents) {
      with("kv.seqlens_k", [&](Batch& b) { b.seqlens_k.set(1, static_cast<double>(capacity + 1)); });
      with("kv.seqlens_k", [&](Batch& b) { b.seqlens_k.set(0, 2.0); });  // fewer than its 3 new tokens
      with("kv.block_table", [&](Batch& b) { b.block_table.set(1, static_cast<double>(data.num_pages())); });
    }
    // Split and expected length: refused by the planning call.
    auto batch = data.make_batch();
    expect_rejected("split.tokens", *batch, [&] {
      data.run(*batch, be.name, be.device, {.split = SplitKV::fixed(100)});
    });
    expect_rejected("expected_seqlen_k", *batch, [&] {
      data.run(*batch, be.name, be.device, {.split = SplitKV::automatic(), .expected_seqlen_k = capacity + 1});
    });
  });
}

// ---- the cache write and the page copy ----------------------------------------------------------------------------

TEST(PagedCache, WriteSlotsAndCopyPages) {
  SCOPED_TRACE(seed_text());
  const DType dtype = DType::bf16;
  const std::int64_t pages = 13, ps = 5, hkv = 2, dqk = 64, dv = 40;
  Rng rng("paged/cache");
  for_each_backend([&](const PagedBackendName& be) {
    HostBuffer k_cache(dtype, pages * ps * hkv * dqk), v_cache(dtype, pages * ps * hkv * dv);
    k_cache.poison();
    v_cache.poison();
    // Slots as a block manager hands them out: three sequences with tables drawn from a shuffled pool, each
    // appending tokens after its current length; padding rows (slot -1) in between.
    std::vector<std::int32_t> pool(pages);
    for (std::int64_t e = 0; e < pages; ++e) pool[e] = static_cast<std::int32_t>(e);
    for (std::int64_t e = pages - 1; e > 0; --e) std::swap(pool[e], pool[rng.uniform_int(0, e)]);
    const std::int64_t lengths[] = {0, 7, 12}, appends[] = {6, 1, 9};
    std::vector<std::int32_t> slots;
    std::size_t next = 0;
    for (int s = 0; s < 3; ++s) {
      std::vector<std::int32_t> table;
      for (std::int64_t pos = lengths[s]; pos < lengths[s] + appends[s]; ++pos) {
        while (static_cast<std::int64_t>(table.size()) <= pos / ps) table.push_back(pool[next++]);
        slots.push_back(static_cast<std::int32_t>(table[pos / ps] * ps + pos % ps));
        if (pos % 4 == 1) slots.push_back(-1);
      }
    }
    const auto tokens = static_cast<std::int64_t>(slots.size());
    HostBuffer k_new(dtype, tokens * hkv * dqk), v_new(dtype, tokens * hkv * dv), slot_buf(DType::i32, tokens);
    k_new.fill([&] { return rng.normal(); });
    v_new.fill([&] { return rng.normal(); });
    for (std::int64_t t = 0; t < tokens; ++t) slot_buf.set(t, slots[t]);

    // What must come out: the slots' rows replaced byte for byte, every other byte as it was.
    HostBuffer want_k = k_cache, want_v = v_cache;
    const std::size_t es = dtype_size(dtype);
    for (std::int64_t t = 0; t < tokens; ++t) {
      if (slots[t] < 0) continue;
      std::memcpy(static_cast<char*>(want_k.data()) + slots[t] * hkv * dqk * es,
                  static_cast<const char*>(k_new.data()) + t * hkv * dqk * es, hkv * dqk * es);
      std::memcpy(static_cast<char*>(want_v.data()) + slots[t] * hkv * dv * es,
                  static_cast<const char*>(v_new.data()) + t * hkv * dv * es, hkv * dv * es);
    }
    const std::int32_t copies[][2] = {{pool[0], pool[next]}, {pool[2], pool[next + 1]}};
    HostBuffer copy_buf(DType::i32, 4);
    for (int e = 0; e < 4; ++e) copy_buf.set(e, copies[e / 2][e % 2]);
    HostBuffer want_k2 = want_k, want_v2 = want_v;
    for (const auto& cp : copies) {
      std::memcpy(static_cast<char*>(want_k2.data()) + cp[1] * ps * hkv * dqk * es,
                  static_cast<const char*>(want_k.data()) + cp[0] * ps * hkv * dqk * es, ps * hkv * dqk * es);
      std::memcpy(static_cast<char*>(want_v2.data()) + cp[1] * ps * hkv * dv * es,
                  static_cast<const char*>(want_v.data()) + cp[0] * ps * hkv * dv * es, ps * hkv * dv * es);
    }

    AttentionParams params;
    params.impl = be.name;
    const auto same = [](const HostBuffer& a, const HostBuffer& b) {
      return a.bytes() == b.bytes() && std::memcmp(a.data(), b.data(), a.bytes()) == 0;
    };
    const auto run_on = [&](auto&& body) {  // body(k_cache view, v_cache view, k_new, v_new, slots, copies)
      if (be.device == Device::cpu) {
        body(k_cache.view({pages, ps, hkv, dqk}), v_cache.view({pages, ps, hkv, dv}), k_new.view({tokens, hkv, dqk}),
             v_new.view({tokens, hkv, dv}), slot_buf.view({tokens}), copy_buf.view({2, 2}));
        return;
      }
      DeviceBuffer dk(k_cache), dvb(v_cache), dkn(k_new), dvn(v_new), ds(slot_buf), dc(copy_buf);
      body(dk.rebase(k_cache.view({pages, ps, hkv, dqk}), k_cache), dvb.rebase(v_cache.view({pages, ps, hkv, dv}), v_cache),
           dkn.rebase(k_new.view({tokens, hkv, dqk}), k_new), dvn.rebase(v_new.view({tokens, hkv, dv}), v_new),
           ds.rebase(slot_buf.view({tokens}), slot_buf), dc.rebase(copy_buf.view({2, 2}), copy_buf));
      dk.download(k_cache);
      dvb.download(v_cache);
    };
    run_on([&](TensorView kc, TensorView vc, TensorView kn, TensorView vn, TensorView sl, TensorView) {
      paged_kv_write({kn, vn, sl, kc, vc}, params);
    });
    EXPECT_TRUE(same(k_cache, want_k)) << "k_cache after paged_kv_write";
    EXPECT_TRUE(same(v_cache, want_v)) << "v_cache after paged_kv_write";
    run_on([&](TensorView kc, TensorView vc, TensorView, TensorView, TensorView, TensorView cp) {
      paged_kv_copy_pages(kc, vc, cp, params);
    });
    EXPECT_TRUE(same(k_cache, want_k2)) << "k_cache after paged_kv_copy_pages";
    EXPECT_TRUE(same(v_cache, want_v2)) << "v_cache after paged_kv_copy_pages";

    if (be.device == Device::cpu) {  // slot contents are checked where they can be read
      slot_buf.set(tokens / 2, static_cast<double>(pages * ps));
      try {
        run_on([&](TensorView kc, TensorView vc, TensorView kn, TensorView vn, TensorView sl, TensorView) {
          paged_kv_write({kn, vn, sl, kc, vc}, params);
        });
        ADD_FAILURE() << "a slot past the cache was accepted";
      } catch (const Error& e) {
        EXPECT_NE(std::string(e.what()).find("slot_mapping"), std::string::npos) << e.what();
      }
      EXPECT_TRUE(same(k_cache, want_k2) && same(v_cache, want_v2)) << "a rejected write changed the cache";
    }
  });
}

// ---- the checks above can fail -----------------------------------------------------------------------------------

bool all_ok(const std::vector<Comparison>& all) {
  for (const Comparison& c : all)
    if (!c.ok()) return false;
  return true;
}

TEST(PagedChecks, ChecksCanFail) {
  SCOPED_TRACE(seed_text());
  PagedData data(PagedCase{.name = "can_fail", .q_lens = {1, 1}, .k_lens = {40, 70}, .mask = kCausalBR});
  std::int32_t unused = -1;
  for (std::int32_t page = 0; page < data.num_pages() && unused < 0; ++page) {
    bool taken = false;
    for (int b = 0; b < 2; ++b)
      for (std::int32_t q : data.pages_of(b)) taken = taken || q == page;
    if (!taken) unused = page;
  }
  ASSERT_GE(unused, 0);
  for_each_backend([&](const PagedBackendName& be) {
    auto batch = data.make_batch();
    const RunResult good = data.run(*batch, be.name, be.device, {});
    ASSERT_TRUE(all_ok(data.judge(*batch, good)));

    RunResult tampered = good;  // one element off by more than the bf16 bound allows
    tampered.out[1][17] += 0.5;
    EXPECT_FALSE(all_ok(data.judge(*batch, tampered))) << "a wrong out element passed";
    tampered = good;
    tampered.lse[0][3] += 0.5;
    EXPECT_FALSE(all_ok(data.judge(*batch, tampered))) << "a wrong lse element passed";

    auto bad = data.make_batch();
    bad->block_table.set(1, unused);  // sequence 0's second page replaced by a page of NaN
    EXPECT_FALSE(all_ok(data.judge(*bad, data.run(*bad, be.name, be.device, {})))) << "a NaN page went unseen";
    auto swapped = data.make_batch();
    swapped->block_table.set(0, data.pages_of(1)[0]);  // sequence 0 reading a page of sequence 1
    EXPECT_FALSE(all_ok(data.judge(*swapped, data.run(*swapped, be.name, be.device, {})))) << "a wrong page passed";
    auto longer = data.make_batch();
    longer->seqlens_k.set(0, 41.0);  // one key past the end: the NaN slot after it
    EXPECT_FALSE(all_ok(data.judge(*longer, data.run(*longer, be.name, be.device, {})))) << "a NaN slot went unseen";

    // A changed cache element (as a kernel writing to its input would leave it) is seen.
    const double kept = data.k_cache().get(0);
    data.k_cache().set(0, 3.0);
    EXPECT_FALSE(data.run(*batch, be.name, be.device, {}).inputs_untouched) << "a write to k_cache went unseen";
    data.k_cache().set(0, kept);
  });
}


// ---- the tiled kernel's fp16 widening ------------------------------------------------------------------------------

// Every fp16 bit pattern (subnormals, infinities, NaNs included) widened by the kernel's vector path and by the
// scalar conversion: the same fp32 bits.
template <int VW>
void widen_all_fp16(const std::vector<std::uint16_t>& in, std::vector<float>& out) {
  cpu::paged::widen_row<VW, DType::f16>(in.data(), 0, static_cast<std::int64_t>(in.size()), out.data());
}
__attribute__((target("avx2,fma"))) void widen_all_fp16_avx2(const std::vector<std::uint16_t>& in,
                                                              std::vector<float>& out) {
  widen_all_fp16<8>(in, out);
}

TEST(PagedKernel, Fp16WideningIsExact) {
  std::vector<std::uint16_t> in(65536 + 3);  // 3 more: the scalar tail runs too
  for (std::size_t e = 0; e < in.size(); ++e) in[e] = static_cast<std::uint16_t>(e);
  std::vector<float> got(in.size());
  std::vector<int> widths = {4};
  if (cpu::tiled::cpu_has_avx2_fma()) widths.push_back(8);
  for (const int vw : widths) {
    std::fill(got.begin(), got.end(), 0.0f);
    if (vw == 4) widen_all_fp16<4>(in, got);
    else widen_all_fp16_avx2(in, got);
    int bad = 0;
    for (std::size_t e = 0; e < in.size() && bad < 5; ++e) {
      const float want = core::fp16_to_float(in[e]);
      if (std::memcmp(&want, &got[e], sizeof want) != 0) {
        ++bad;
        ADD_FAILURE() << vw << " lanes: fp16 0x" << std::hex << in[e] << " widened to " << got[e] << ", want " << want;
      }
    }
  }
}

}  // namespace
}  // namespace ioattn::test::paged
