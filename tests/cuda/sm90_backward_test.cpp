// GPU-only checks of the Hopper backward ("cuda_sm90", src/cuda/sm90/backward_*) beyond the shared case table
// (tests/attention): dq, dk, dv (and dsinks) of every compiled head dim (64, 128, 256) and dtype against the fp64
// reference and the 2x-naive bound (src/numerics/error_bound.hpp), outputs poisoned before each run, on lengths
// that are no multiple of the tiles (1, 17, 129, 1000, ...), seqlen_q != seqlen_k both ways, every mask kind, GQA
// and MQA, varlen with empty sequences, rows that see no key, padded strides, softcap and ALiBi; the deterministic
// order (the same bits every run); and the refusal that sends head dim 256's deterministic backward to the sm80
// backend.
// Without a Hopper GPU (or without 90a code in the build) every test skips, saying why.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdint>
#include <cstdio>
#include <string>
#include <vector>

#include "ioattn/attention.hpp"
#include "ioattn/error.hpp"
#include "support/buffers.hpp"
#include "support/cases.hpp"
#include "support/harness.hpp"
#include "support/random.hpp"

#ifndef IOATTN_TEST_CUDA_HEAD_DIMS
#define IOATTN_TEST_CUDA_HEAD_DIMS "64,128"
#endif
#ifndef IOATTN_TEST_CUDA_DTYPES
#define IOATTN_TEST_CUDA_DTYPES "bf16,fp16"
#endif

namespace ioattn::test {
namespace {

constexpr const char* kImpl = "cuda_sm90";

// Empty when the sm90 backward runs here; otherwise why not (no GPU, not Hopper, no 90a code, no kernel).
std::string why_no_sm90_backward() {
  static const std::string why = [] {
    if (!gpu_available()) return std::string("no usable GPU on this machine");
    for (const char* dim : {"128", "64", "256"}) {
      if (!listed(IOATTN_TEST_CUDA_HEAD_DIMS, dim)) continue;
      Case c;
      c.dim_qk = c.dim_v = std::stoi(dim);
      c.dtype = listed(IOATTN_TEST_CUDA_DTYPES, "bf16") ? DType::bf16 : DType::f16;
      CaseData data(c);
      try {
        data.run(kImpl, Device::cuda, true);
        return std::string();
      } catch (const Error& e) {
        const std::string what = e.what();
        if (e.code() != ErrorCode::unsupported) return std::string();  // a real failure: let the tests show it
        if (what.find("compute capability") == std::string::npos && what.find("sm_90a") == std::string::npos &&
            what.find("not compiled") == std::string::npos && what.find("this build") == std::string::npos) {
          return std::string();
        }
        return what;
      }
    }
    return std::string("this build has no head dim 64, 128 or 256");
  }();
  return why;
}

// A case of each dtype and head dim this build compiled (the backward's: 64, 128, 256), to build the shapes on.
std::vector<Case> backward_bases() {
  std::vector<Case> bases;
  for (DType dtype : {DType::bf16, DType::f16}) {
    if (!listed(IOATTN_TEST_CUDA_DTYPES, dtype == DType::bf16 ? "bf16" : "fp16")) continue;
    for (int dim : {64, 128, 256}) {
      if (!listed(IOATTN_TEST_CUDA_HEAD_DIMS, std::to_string(dim))) continue;
      Case base;
      base.dtype = dtype;
      base.dim_qk = base.dim_v = dim;
      bases.push_back(base);
    }
  }
  return bases;
}

std::vector<Case> backward_cases() {
  std::vector<Case> cases;
  for (const Case& base : backward_bases()) {
    for (const Case& c : kernel_shape_cases(base)) cases.push_back(c);
    // More queries than keys: bottom-right causal leaves the first rows seeing nothing (lse -inf), with sinks.
    Case empty_rows = base;
    empty_rows.batch = 1, empty_rows.heads_q = 3, empty_rows.heads_kv = 1;
    empty_rows.seqlen_q = 517, empty_rows.seqlen_k = 300;
    empty_rows.mask = Mask::causal();
    empty_rows.sinks = true;
    cases.push_back(empty_rows);
    // Tiny and odd lengths.
    for (auto [sq, sk] : {std::pair{1, 1}, {1, 17}, {17, 1}, {17, 129}, {129, 129}}) {
      Case c = base;
      c.seqlen_q = sq, c.seqlen_k = sk;
      c.mask = sq == 129 ? Mask::causal() : Mask::none();
      cases.push_back(c);
    }
    // Long enough for many query tiles per key tile and the ring to wrap many times.
    Case long_case = base;
    long_case.batch = 1, long_case.heads_q = 2, long_case.heads_kv = 2, long_case.seqlen_q = 1000,
    long_case.seqlen_k = 1000;
    cases.push_back(long_case);
    Case long_causal = long_case;
    long_causal.mask = Mask::causal();
    cases.push_back(long_causal);
    // Varlen without a mask.
    Case var_none = base;
    var_none.heads_q = 2, var_none.heads_kv = 2;
    var_none.varlen_q = {300, 45, 129};
    var_none.varlen_k = {77, 500, 129};
    cases.push_back(var_none);
    // More items (128-key tile, kv head, sequence) than a Hopper GPU has SMs, so the persistent order gives a CTA
    // several, its query-tile ring, dS buffers and K/V hand-over running on from one item to the next: GQA under
    // a causal mask (192 items).
    Case many = base;
    many.batch = 8, many.heads_q = 16, many.heads_kv = 8, many.seqlen_q = 300, many.seqlen_k = 300;
    many.mask = Mask::causal();
    cases.push_back(many);
    // Varlen with many items (384): empty sequences, and under a top-left causal mask with more keys than queries,
    // key tiles that no query sees (their dK and dV must come out zero) between items that do work.
    Case many_var = base;
    many_var.heads_q = 8, many_var.heads_kv = 4;
    many_var.mask = Mask::causal(Alignment::top_left);
    for (int i = 0; i < 24; ++i) {
      many_var.varlen_q.push_back(i % 6 == 0 ? 0 : 20 + (i * 37) % 180);
      many_var.varlen_k.push_back(i % 7 == 3 ? 0 : 150 + (i * 53) % 250);
    }
    cases.push_back(many_var);
    // Score mods (the kScoreMod kernel).
    for (const Case& c : score_mod_cases(base)) cases.push_back(c);
  }
  return cases;
}

const std::vector<Case>& cached_cases() {
  static const std::vector<Case> cases = backward_cases();
  return cases;
}

class Sm90Backward : public ::testing::TestWithParam<std::size_t> {};

TEST_P(Sm90Backward, MatchesReference) {
  if (std::string why = why_no_sm90_backward(); !why.empty()) GTEST_SKIP() << "cuda_sm90 not exercised: " << why;
  const Case& c = cached_cases()[GetParam()];
  SCOPED_TRACE(c.name() + ", " + seed_text() + " reproduces these inputs");
  CaseData data(c);
  const Results got = data.run(kImpl, Device::cuda, true);
  for (const Comparison& cmp : data.compare_all(got, true)) EXPECT_TRUE(cmp.ok()) << cmp.describe();
}

std::vector<std::size_t> case_indices() {
  std::vector<std::size_t> out;
  for (std::size_t i = 0; i < cached_cases().size(); ++i) out.push_back(i);
  return out;
}

INSTANTIATE_TEST_SUITE_P(Shapes, Sm90Backward, ::testing::ValuesIn(case_indices()),
                         [](const ::testing::TestParamInfo<std::size_t>& info) {
                           return cached_cases()[info.param].name() + "_" + std::to_string(info.param);
                         });
GTEST_ALLOW_UNINSTANTIATED_PARAMETERIZED_TEST(Sm90Backward);

// What the Hopper backward does not do is refused with a reason naming it, and "auto" then runs the sm80 kernels
// and gets it right.
void expect_refused_then_auto(Case c, const std::string& reason_part) {
  SCOPED_TRACE(c.name());
  CaseData data(c);
  try {
    data.run(kImpl, Device::cuda, true);
    ADD_FAILURE() << "cuda_sm90 accepted a backward it should refuse (" << reason_part << ")";
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), ErrorCode::unsupported) << e.what();
    EXPECT_NE(std::string(e.what()).find(reason_part), std::string::npos) << e.what();
  }
  const Results got = data.run("auto", Device::cuda, true);
  for (const Comparison& cmp : data.compare_all(got, true)) EXPECT_TRUE(cmp.ok()) << cmp.describe();
}

TEST(Sm90BackwardRefusals, FallBackToSm80) {
  if (std::string why = why_no_sm90_backward(); !why.empty()) GTEST_SKIP() << "cuda_sm90 not exercised: " << why;
  // Head dims 192/128 (qk/v) have sm80 backward kernels and no Hopper ones.
  if (!listed(IOATTN_TEST_CUDA_HEAD_DIMS, "192")) GTEST_SKIP() << "no head dim 192 in this build (the refusal tested)";
  Case c;
  c.dim_qk = 192, c.dim_v = 128;
  c.dtype = listed(IOATTN_TEST_CUDA_DTYPES, "bf16") ? DType::bf16 : DType::f16;
  c.seqlen_q = 150, c.seqlen_k = 270;
  c.mask = Mask::causal();
  expect_refused_then_auto(c, "head dims 64, 128 and 256");
}

// The deterministic backward (AttentionParams::deterministic): the key tiles add into each query tile's dQ in key
// order (a semaphore per query tile), so three runs give the same bits of dq, dk, dv (and dsinks), each within the
// reference's bound. Cases with several key tiles per query tile: GQA under a causal mask with more items than SMs
// (CTAs wait on each other across waves), one long head, a window with sinks and empty rows, varlen with empty
// sequences, softcap with ALiBi. The same cases without the order run too, as a control: the printout says how many
// of them moved between runs (unordered fp32 adds usually do), which is what this test would catch if the order
// broke.
TEST(Sm90BackwardDeterministic, SameBitsEveryRun) {
  if (std::string why = why_no_sm90_backward(); !why.empty()) GTEST_SKIP() << "cuda_sm90 not exercised: " << why;
  int control_cases = 0, control_moved = 0;
  for (const Case& base_case : backward_bases()) {
    Case base = base_case;  // head dim 256 too: its two dQ warps keep an order each
    base.deterministic = true;
    std::vector<Case> cases;
    Case many = base;
    many.batch = 8, many.heads_q = 16, many.heads_kv = 8, many.seqlen_q = 300, many.seqlen_k = 1100;
    many.mask = Mask::causal();
    cases.push_back(many);
    Case long_head = base;
    long_head.batch = 1, long_head.heads_q = 2, long_head.heads_kv = 1, long_head.seqlen_q = 700;
    long_head.seqlen_k = 2000;
    cases.push_back(long_head);
    Case window = base;
    window.heads_q = 3, window.heads_kv = 1, window.seqlen_q = 517, window.seqlen_k = 450;
    window.mask = Mask::window(200, 40);
    window.sinks = true;
    cases.push_back(window);
    Case var = base;
    var.heads_q = 4, var.heads_kv = 2;
    var.mask = Mask::causal(Alignment::top_left);
    var.varlen_q = {300, 0, 129, 650};
    var.varlen_k = {900, 40, 0, 700};
    cases.push_back(var);
    Case score_mod = base;  // the kScoreMod kernel's dQ takes the same turns
    score_mod.batch = 2, score_mod.heads_q = 4, score_mod.heads_kv = 2, score_mod.seqlen_q = 400;
    score_mod.seqlen_k = 900;
    score_mod.mask = Mask::causal();
    score_mod.softcap = 2.0f;
    score_mod.alibi = Alibi::per_batch_head;
    cases.push_back(score_mod);
    for (const Case& c : cases) {
      SCOPED_TRACE(c.name() + ", " + seed_text() + " reproduces these inputs");
      CaseData data(c);
      const Results first = data.run(kImpl, Device::cuda, true);
      for (const Comparison& cmp : data.compare_all(first, true)) EXPECT_TRUE(cmp.ok()) << cmp.describe();
      for (int again = 0; again < 2; ++again) {
        const Results next = data.run(kImpl, Device::cuda, true);
        EXPECT_EQ(next.dq, first.dq) << "dq moved between deterministic runs";
        EXPECT_EQ(next.dk, first.dk) << "dk moved between deterministic runs";
        EXPECT_EQ(next.dv, first.dv) << "dv moved between deterministic runs";
        EXPECT_EQ(next.dsinks, first.dsinks) << "dsinks moved between deterministic runs";
      }
      Case unordered = c;
      unordered.deterministic = false;
      CaseData control(unordered);
      const Results a = control.run(kImpl, Device::cuda, true);
      bool moved = false;
      for (int again = 0; again < 2 && !moved; ++again) moved = control.run(kImpl, Device::cuda, true).dq != a.dq;
      ++control_cases;
      control_moved += moved ? 1 : 0;
    }
  }
  std::printf("control without the order: dq moved between runs in %d of %d cases\n", control_moved, control_cases);
}

// "auto" picks the Hopper backward for a plain problem and gets it right (the path most callers take).
TEST(Sm90BackwardAuto, PlainCausal) {
  if (std::string why = why_no_sm90_backward(); !why.empty()) GTEST_SKIP() << "cuda_sm90 not exercised: " << why;
  Case c = backward_bases().front();  // a dtype and head dim this build has
  c.batch = 2, c.heads_q = 4, c.heads_kv = 1, c.seqlen_q = 300, c.seqlen_k = 300;
  c.mask = Mask::causal();
  CaseData data(c);
  const Results got = data.run("auto", Device::cuda, true);
  for (const Comparison& cmp : data.compare_all(got, true)) EXPECT_TRUE(cmp.ok()) << cmp.describe();
}

// Varlen isolation: a tensor map bounds only the packed tensor, so a sequence's partial last key tile reads the next
// sequence's K and V rows, and its partial last query tile the next sequence's Q and dO rows. Here those neighbours
// have keys and no queries (their K and V set to +-Inf and NaN) or queries and no keys (their Q and dO), after a
// clean run took the reference: every gradient, theirs included (all zero), must come out finite and within bound.
// Without the kernel's zeroing of those rows (IOATTN_SM90_UNSAFE_VARLEN_OVERHANG=1 turns it off, to show this test
// fails then), 0 x Inf = NaN in dQ = dS K, dK += dS^T Q or dV += P^T dO would reach sequences 0 and 2.
TEST(Sm90BackwardVarlenIsolation, NeighbourInfNanStaysOut) {
  if (std::string why = why_no_sm90_backward(); !why.empty()) GTEST_SKIP() << "cuda_sm90 not exercised: " << why;
  for (DType dtype : {DType::bf16, DType::f16}) {
    if (!listed(IOATTN_TEST_CUDA_DTYPES, dtype == DType::bf16 ? "bf16" : "fp16")) continue;
    for (int dim : {64, 128, 256}) {
      if (!listed(IOATTN_TEST_CUDA_HEAD_DIMS, std::to_string(dim))) continue;
      for (const Mask& mask : {Mask::none(), Mask::causal()}) {
        Case c;
        c.dtype = dtype;
        c.dim_qk = c.dim_v = dim;
        c.heads_q = 4, c.heads_kv = 2;
        c.mask = mask;
        // Sequence 0's 100 keys end inside a key tile (128, or 64 at D 256), over sequence 1's poisoned keys;
        // sequence 2's 90 queries end inside a query tile (64 or 128), over sequence 3's poisoned queries.
        c.varlen_q = {150, 0, 90, 70};
        c.varlen_k = {100, 64, 300, 0};
        SCOPED_TRACE(c.name() + ", " + seed_text() + " reproduces these inputs");
        CaseData data(c);
        const Results clean = data.run(kImpl, Device::cuda, true);  // also takes the reference from clean inputs
        for (const Comparison& cmp : data.compare_all(clean, true)) EXPECT_TRUE(cmp.ok()) << cmp.describe();
        const detail::BackwardProblem& p = data.problem();  // host buffers, uploaded by run()
        std::int64_t row_q = 0, row_k = 0;
        for (std::size_t b = 0; b < c.varlen_q.size(); ++b) {
          if (c.varlen_q[b] == 0) {
            poison_rows_nonfinite(p.k, dtype, row_k, row_k + c.varlen_k[b], c.heads_kv, dim, true);
            poison_rows_nonfinite(p.v, dtype, row_k, row_k + c.varlen_k[b], c.heads_kv, dim, false);
          }
          if (c.varlen_k[b] == 0) {
            poison_rows_nonfinite(p.q, dtype, row_q, row_q + c.varlen_q[b], c.heads_q, dim, true);
            poison_rows_nonfinite(p.dout, dtype, row_q, row_q + c.varlen_q[b], c.heads_q, dim, false);
          }
          row_q += c.varlen_q[b];
          row_k += c.varlen_k[b];
        }
        const Results got = data.run(kImpl, Device::cuda, true);
        std::int64_t bad = 0;
        for (const std::vector<double>* grad : {&got.dq, &got.dk, &got.dv}) {
          for (double x : *grad) bad += std::isfinite(x) ? 0 : 1;
        }
        EXPECT_EQ(bad, 0) << "NaN or Inf gradients: a neighbour's rows reached another sequence";
        for (const Comparison& cmp : data.compare_all(got, true)) EXPECT_TRUE(cmp.ok()) << cmp.describe();
      }
    }
  }
}

}  // namespace
}  // namespace ioattn::test
