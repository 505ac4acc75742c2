// GPU-only checks of the Hopper forward ("cuda_sm90") beyond the shared case table (tests/attention): every
// compiled head dim (64, 128, 256, 192/128) and dtype on multi-tile shapes that are no multiple of the tile sizes,
// under every mask kind, with GQA, sinks, padded strides, varlen with empty sequences, softcap and ALiBi; a second
// run must agree bit for bit (a missing barrier or a pipeline phase error would show as a moving result); packed
// GQA against the reference and against the bits of one head per tile; O's TMA stores against the register stores;
// varlen isolation (a neighbour's non-finite K and V rows must not reach a sequence's output); and the refusals
// that send work to the sm80 backend. Judged by the fp64 reference and the 2x-naive bound
// (src/numerics/error_bound.hpp). Without a Hopper GPU every test skips, saying why.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <string>
#include <utility>
#include <vector>

#include "ioattn/attention.hpp"
#include "ioattn/error.hpp"
#include "support/buffers.hpp"
#include "support/cases.hpp"
#include "support/harness.hpp"
#include "support/random.hpp"
#include "support/scoped_env.hpp"

#ifndef IOATTN_TEST_CUDA_HEAD_DIMS
#define IOATTN_TEST_CUDA_HEAD_DIMS "64,128,192,256"
#endif
#ifndef IOATTN_TEST_CUDA_DTYPES
#define IOATTN_TEST_CUDA_DTYPES "bf16,fp16"
#endif

namespace ioattn::test {
namespace {

constexpr const char* kImpl = "cuda_sm90";

// The Hopper kernel's head dims (qk, v) that this build compiled; "192" in the build's list is 192 / 128.
std::vector<std::pair<int, int>> sm90_dims() {
  std::vector<std::pair<int, int>> dims;
  for (auto [qk, v] : {std::pair{64, 64}, {128, 128}, {192, 128}, {256, 256}}) {
    if (listed(IOATTN_TEST_CUDA_HEAD_DIMS, std::to_string(qk))) dims.emplace_back(qk, v);
  }
  return dims;
}

// A forward case of each dtype and head dims this build compiled, for the tests to build their shapes on.
std::vector<Case> forward_bases() {
  std::vector<Case> bases;
  for (DType dtype : {DType::bf16, DType::f16}) {
    if (!listed(IOATTN_TEST_CUDA_DTYPES, dtype == DType::bf16 ? "bf16" : "fp16")) continue;
    for (auto [dim_qk, dim_v] : sm90_dims()) {
      Case base;
      base.dtype = dtype;
      base.dim_qk = dim_qk, base.dim_v = dim_v;
      base.backward = false;
      bases.push_back(base);
    }
  }
  return bases;
}

// Empty when the sm90 backend runs here; otherwise why not (no GPU, not a Hopper GPU, no 90a code in the build).
std::string why_no_sm90() {
  static const std::string why = [] {
    if (!gpu_available()) return std::string("no usable GPU on this machine");
    // Probe with a head dim and dtype this build has: a build of D 64 alone, or of fp16 alone, must still run
    // its cases rather than skip them all for want of the probe's kernel.
    for (const auto& [qk, v] : {std::pair{128, 128}, {64, 64}, {256, 256}, {192, 128}}) {
      if (!listed(IOATTN_TEST_CUDA_HEAD_DIMS, std::to_string(qk))) continue;
      Case c;
      c.dim_qk = qk, c.dim_v = v;
      c.dtype = listed(IOATTN_TEST_CUDA_DTYPES, "bf16") ? DType::bf16 : DType::f16;
      c.backward = false;
      CaseData data(c);
      try {
        data.run(kImpl, Device::cuda, false);
      } catch (const Error& e) {
        const std::string what = e.what();
        if (e.code() == ErrorCode::unsupported &&
            (what.find("compute capability") != std::string::npos || what.find("sm_90a") != std::string::npos ||
             what.find("not compiled") != std::string::npos)) {
          return what;
        }
      }
      return std::string();
    }
    return std::string("this build has no head dim 64, 128, 192 or 256");
  }();
  return why;
}

std::vector<Case> sm90_cases() {
  std::vector<Case> cases;
  for (const Case& base : forward_bases()) {
    for (const Case& c : kernel_shape_cases(base)) cases.push_back(c);
    // More queries than keys: bottom-right causal leaves the first rows empty; the sinks must still be right.
    Case empty_rows = base;
    empty_rows.batch = 1, empty_rows.heads_q = 3, empty_rows.heads_kv = 1;
    empty_rows.seqlen_q = 517, empty_rows.seqlen_k = 300;
    empty_rows.mask = Mask::causal();
    empty_rows.sinks = true;
    cases.push_back(empty_rows);
    // Score mods (the kScoreMod kernels).
    for (const Case& c : score_mod_cases(base)) cases.push_back(c);
  }
  return cases;
}

const std::vector<Case>& cached_cases() {
  static const std::vector<Case> cases = sm90_cases();
  return cases;
}

class Sm90Forward : public ::testing::TestWithParam<const Case*> {};

TEST_P(Sm90Forward, MatchesReference) {
  if (std::string why = why_no_sm90(); !why.empty()) GTEST_SKIP() << "cuda_sm90 not exercised: " << why;
  SCOPED_TRACE(seed_text() + " reproduces these inputs");
  CaseData data(*GetParam());
  const Results got = data.run(kImpl, Device::cuda, false);
  for (const Comparison& cmp : data.compare_all(got, false)) EXPECT_TRUE(cmp.ok()) << cmp.describe();
  // No cross-CTA reduction: a second run must agree bit for bit.
  const Results again = data.run(kImpl, Device::cuda, false);
  EXPECT_EQ(got.out, again.out);
  EXPECT_EQ(got.lse, again.lse);
}

std::vector<const Case*> case_pointers() {
  std::vector<const Case*> out;
  for (const Case& c : cached_cases()) out.push_back(&c);
  return out;
}

INSTANTIATE_TEST_SUITE_P(Shapes, Sm90Forward, ::testing::ValuesIn(case_pointers()),
                         [](const ::testing::TestParamInfo<const Case*>& info) { return info.param->name(); });
GTEST_ALLOW_UNINSTANTIATED_PARAMETERIZED_TEST(Sm90Forward);

// What the Hopper kernel does not do yet is refused with a reason, so that "auto" falls back to the sm80 kernel.
void expect_refused(Case c, bool backward, const std::string& reason_part) {
  CaseData data(c);
  try {
    data.run(kImpl, Device::cuda, backward);
    FAIL() << "cuda_sm90 accepted a case it should refuse (" << reason_part << ")";
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), ErrorCode::unsupported) << e.what();
    EXPECT_NE(std::string(e.what()).find(reason_part), std::string::npos) << e.what();
  }
}

// Head dims without a Hopper kernel go to the sm80 backend ("auto"), or are refused by name. (What the backward
// refuses is tested with the backward: tests/cuda/sm90_backward_test.cpp.)
TEST(Sm90ForwardRefusals, OddHeadDims) {
  if (std::string why = why_no_sm90(); !why.empty()) GTEST_SKIP() << "cuda_sm90 not exercised: " << why;
  Case odd;
  odd.backward = false;
  odd.dim_qk = odd.dim_v = 96;
  expect_refused(odd, false, "64, 128, 256 and 192/128");
  Case mla_inverse = odd;
  mla_inverse.dim_qk = 128, mla_inverse.dim_v = 192;
  expect_refused(mla_inverse, false, "64, 128, 256 and 192/128");
}

// "auto" picks the Hopper kernel for softcap and ALiBi now, and must get them right.
TEST(Sm90ForwardAuto, SoftcapAndAlibi) {
  if (std::string why = why_no_sm90(); !why.empty()) GTEST_SKIP() << "cuda_sm90 not exercised: " << why;
  Case c = forward_bases().front();  // a head dim and dtype this build has
  c.backward = false;
  c.softcap = 30.0f;
  c.alibi = Alibi::per_head;
  c.seqlen_q = 150, c.seqlen_k = 270;
  CaseData data(c);
  const Results got = data.run("auto", Device::cuda, false);
  for (const Comparison& cmp : data.compare_all(got, false)) EXPECT_TRUE(cmp.ok()) << cmp.describe();
}

// Packed GQA: a kv head's query heads share one query tile (row r = token r / group, head r % group), for few
// queries per head. Forced on (IOATTN_SM90_PACK_GQA=1, which fails loudly where it cannot pack) each case must
// match the reference, and forced off it must give the same bits: every row's products, masks and softmax steps are
// its own, whichever rows share its tile. Groups that divide the 128-row tile and groups that do not (3, 6, 7: the
// tile's last rows hold no query), one token per tile (128), every mask, sinks, softcap, padded strides, varlen.
std::vector<Case> packed_gqa_cases() {
  std::vector<Case> cases;
  for (const Case& base : forward_bases()) {
    auto add = [&](int heads_q, int heads_kv, int seqlen_q, int seqlen_k, Mask mask, auto&& more) {
      Case c = base;
      c.heads_q = heads_q, c.heads_kv = heads_kv, c.seqlen_q = seqlen_q, c.seqlen_k = seqlen_k;
      c.mask = mask;
      more(c);
      cases.push_back(c);
    };
    auto none = [](Case&) {};
    add(8, 2, 1, 1000, Mask::none(), [](Case& c) { c.batch = 3; });  // decoding: one token per sequence
    add(16, 2, 16, 777, Mask::causal(), [](Case& c) { c.batch = 2, c.sinks = true; });
    add(6, 2, 50, 300, Mask::window(64, 0), none);
    add(7, 1, 37, 515, Mask::causal(Alignment::top_left), [](Case& c) { c.layout = Layout::padded; });
    add(32, 2, 9, 129, Mask::causal(), [](Case& c) { c.softcap = 5.0f; });
    add(12, 2, 100, 260, Mask::causal(), none);   // group 6: five tiles of 21 tokens
    add(128, 1, 3, 70, Mask::none(), none);       // group 128: one token per tile
    add(8, 2, 20, 10, Mask::causal(), [](Case& c) { c.sinks = true; });  // the first rows see no key
    add(8, 2, 0, 0, Mask::causal(), [](Case& c) {
      c.sinks = true;
      c.varlen_q = {5, 0, 40, 1};
      c.varlen_k = {300, 17, 40, 0};
    });
  }
  return cases;
}

// Empty when a and b hold the same bits; else how many elements differ and the first few.
std::string bit_differences(const std::vector<double>& a, const std::vector<double>& b) {
  if (a.size() != b.size()) return "sizes " + std::to_string(a.size()) + " and " + std::to_string(b.size());
  std::int64_t n = 0;
  std::string first;
  for (std::size_t i = 0; i < a.size(); ++i) {
    if (std::memcmp(&a[i], &b[i], sizeof(double)) == 0) continue;
    if (++n <= 4) first += " [" + std::to_string(i) + "] " + std::to_string(a[i]) + " vs " + std::to_string(b[i]);
  }
  return n == 0 ? std::string() : std::to_string(n) + " of " + std::to_string(a.size()) + " differ:" + first;
}

TEST(Sm90PackedGqa, MatchesReferenceAndUnpackedBits) {
  if (std::string why = why_no_sm90(); !why.empty()) GTEST_SKIP() << "cuda_sm90 not exercised: " << why;
  for (const Case& c : packed_gqa_cases()) {
    SCOPED_TRACE(c.name() + ", " + seed_text() + " reproduces these inputs");
    CaseData data(c);
    Results packed, again, unpacked;
    {
      ScopedEnv on("IOATTN_SM90_PACK_GQA", "1");
      packed = data.run(kImpl, Device::cuda, false);
      again = data.run(kImpl, Device::cuda, false);
    }
    for (const Comparison& cmp : data.compare_all(packed, false)) EXPECT_TRUE(cmp.ok()) << cmp.describe();
    EXPECT_EQ(packed.stray_writes, 0) << "written outside the outputs' views, first: " << packed.stray_where;
    EXPECT_EQ(bit_differences(packed.out, again.out), "") << "out, two packed runs";
    EXPECT_EQ(bit_differences(packed.lse, again.lse), "") << "lse, two packed runs";
    {
      ScopedEnv off("IOATTN_SM90_PACK_GQA", "0");
      unpacked = data.run(kImpl, Device::cuda, false);
    }
    EXPECT_EQ(bit_differences(packed.out, unpacked.out), "") << "out, packed vs one head per tile";
    EXPECT_EQ(bit_differences(packed.lse, unpacked.lse), "") << "lse, packed vs one head per tile";
  }
}

// O leaves by TMA stores from a buffer per consumer warpgroup (in two chunks of columns at head dims 256 and
// 192/128), or straight from registers (IOATTN_SM90_FWD_OUT_STORE=1, and tiles a tensor map cannot store: a varlen
// sequence ending inside a warpgroup's rows). Both must give the same bits. The dense problems have more tiles than
// a persistent grid has CTAs, so each CTA reuses its buffers (a store still reading a buffer that the next tile
// overwrites would show here), and the varlen sequences end inside either warpgroup's rows.
std::vector<Case> out_store_cases() {
  std::vector<Case> cases;
  for (const Case& base : forward_bases()) {
    if (base.dtype != DType::bf16) continue;  // the same code in fp16
    Case c = base;
    c.heads_q = 32, c.heads_kv = 8;
    c.seqlen_q = 1100, c.seqlen_k = 160;  // 9 query tiles x 32 heads: 288 tiles
    cases.push_back(c);
    c.mask = Mask::causal();  // the heavy-first order
    c.sinks = true;
    cases.push_back(c);
    Case varlen = base;
    varlen.heads_q = 16, varlen.heads_kv = 16;
    varlen.varlen_q = {300, 64, 1000, 150, 0, 700};
    varlen.varlen_k = {160, 100, 200, 64, 50, 129};
    cases.push_back(varlen);
  }
  return cases;
}

TEST(Sm90OutStore, TmaMatchesReferenceAndRegisterBits) {
  if (std::string why = why_no_sm90(); !why.empty()) GTEST_SKIP() << "cuda_sm90 not exercised: " << why;
  for (const Case& c : out_store_cases()) {
    SCOPED_TRACE(c.name() + ", " + seed_text() + " reproduces these inputs");
    CaseData data(c);
    Results tma, registers;
    {
      ScopedEnv on("IOATTN_SM90_FWD_OUT_STORE", "0");
      tma = data.run(kImpl, Device::cuda, false);
    }
    for (const Comparison& cmp : data.compare_all(tma, false)) EXPECT_TRUE(cmp.ok()) << cmp.describe();
    EXPECT_EQ(tma.stray_writes, 0) << "written outside the outputs' views, first: " << tma.stray_where;
    {
      ScopedEnv off("IOATTN_SM90_FWD_OUT_STORE", "1");
      registers = data.run(kImpl, Device::cuda, false);
    }
    EXPECT_EQ(bit_differences(tma.out, registers.out), "") << "out, TMA vs register stores";
    EXPECT_EQ(bit_differences(tma.lse, registers.lse), "") << "lse, TMA vs register stores";
  }
}

// Varlen isolation: the packed tensor map lets a partial last key tile read the next sequence's K and V rows. Here
// that neighbour has keys but no queries, and its K rows are set to +-Inf and NaN and its V rows to NaN and Inf
// after the reference was taken: every output row belongs to the other sequences, whose reference did not change,
// so the outputs must still be finite and within bound. Without the kernel's zeroing of those V rows
// (IOATTN_SM90_UNSAFE_VARLEN_OVERHANG=1 turns it off, to show this test fails then), 0 x NaN in P V would make the
// first sequence's rows NaN.
std::vector<Case> isolation_cases() {
  std::vector<Case> cases;
  for (const Case& base : forward_bases()) {
    Case c = base;
    c.heads_q = 4, c.heads_kv = 2;
    // Sequence 0: 100 and 300 keys, each ending inside a key tile of 64 and of 128; sequence 1 (the poisoned
    // neighbour of both) has keys only.
    c.varlen_q = {150, 0, 90, 0, 40};
    c.varlen_k = {100, 64, 300, 200, 70};
    cases.push_back(c);
    Case mod = c;
    mod.mask = Mask::causal();
    mod.softcap = 10.0f;
    mod.alibi = Alibi::per_batch_head;
    cases.push_back(mod);
  }
  return cases;
}

TEST(Sm90VarlenIsolation, NeighbourInfNanStaysOut) {
  if (std::string why = why_no_sm90(); !why.empty()) GTEST_SKIP() << "cuda_sm90 not exercised: " << why;
  for (const Case& c : isolation_cases()) {
    SCOPED_TRACE(c.name() + ", " + seed_text() + " reproduces these inputs");
    CaseData data(c);
    // The neighbours with keys and no queries: sequences 1 and 3 (packed key rows [100, 164) and [464, 664)).
    // The problem's pointers are the host buffers that run() uploads; the reference was taken at construction.
    const detail::BackwardProblem& p = data.problem();
    std::int64_t row = 0;
    for (std::size_t b = 0; b < c.varlen_k.size(); ++b) {
      if (c.varlen_q[b] == 0) {
        poison_rows_nonfinite(p.k, c.dtype, row, row + c.varlen_k[b], c.heads_kv, c.dim_qk, true);
        poison_rows_nonfinite(p.v, c.dtype, row, row + c.varlen_k[b], c.heads_kv, c.dim_v, false);
      }
      row += c.varlen_k[b];
    }
    const Results got = data.run(kImpl, Device::cuda, false);
    // Rows that see no key (causal, more queries than keys) have lse -inf; nothing else may be non-finite.
    std::int64_t bad = 0;
    for (double x : got.out) bad += std::isfinite(x) ? 0 : 1;
    for (double x : got.lse) bad += std::isnan(x) || x == INFINITY ? 1 : 0;
    EXPECT_EQ(bad, 0) << "NaN or Inf outputs: a neighbour's K or V rows reached another sequence";
    for (const Comparison& cmp : data.compare_all(got, false)) EXPECT_TRUE(cmp.ok()) << cmp.describe();
  }
}

}  // namespace
}  // namespace ioattn::test
