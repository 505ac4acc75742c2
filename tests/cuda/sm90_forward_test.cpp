// GPU-only checks of the Hopper forward ("cuda_sm90") beyond the shared case table (tests/attention): every
// compiled head dim (64, 128, 256) and dtype on multi-tile shapes that are no multiple of the tile sizes, under
// every mask kind, with GQA, sinks, padded strides and varlen with empty sequences; a second run must agree bit for
// bit (a missing barrier or a pipeline phase error would show as a moving result); and the refusals that send work
// to the sm80 backend. Judged by the fp64 reference and the 2x-naive bound (src/numerics/error_bound.hpp). Without a
// Hopper GPU every test skips, saying why.
#include <gtest/gtest.h>

#include <sstream>
#include <string>
#include <vector>

#include "ioattn/attention.hpp"
#include "ioattn/error.hpp"
#include "support/buffers.hpp"
#include "support/cases.hpp"
#include "support/harness.hpp"
#include "support/random.hpp"

#ifndef IOATTN_TEST_CUDA_HEAD_DIMS
#define IOATTN_TEST_CUDA_HEAD_DIMS "64,128,256"
#endif
#ifndef IOATTN_TEST_CUDA_DTYPES
#define IOATTN_TEST_CUDA_DTYPES "bf16,fp16"
#endif

namespace ioattn::test {
namespace {

constexpr const char* kImpl = "cuda_sm90";

bool listed(const std::string& list, const std::string& item) {
  std::istringstream in(list);
  for (std::string token; std::getline(in, token, ',');) {
    if (token == item) return true;
  }
  return false;
}

// Empty when the sm90 backend runs here; otherwise why not (no GPU, not a Hopper GPU, no 90a code in the build).
std::string why_no_sm90() {
  static const std::string why = [] {
    if (!gpu_available()) return std::string("no usable GPU on this machine");
    Case c;
    c.dim_qk = c.dim_v = 128;
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
  }();
  return why;
}

std::vector<Case> sm90_cases() {
  std::vector<Case> cases;
  const std::vector<Mask> masks = {Mask::none(), Mask::causal(), Mask::causal(Alignment::top_left),
                                   Mask::window(100, 50), Mask::window(0, 0, Alignment::top_left)};
  for (DType dtype : {DType::bf16, DType::f16}) {
    if (!listed(IOATTN_TEST_CUDA_DTYPES, dtype == DType::bf16 ? "bf16" : "fp16")) continue;
    for (int dim : {64, 128, 256}) {
      if (!listed(IOATTN_TEST_CUDA_HEAD_DIMS, std::to_string(dim))) continue;
      Case base;
      base.dtype = dtype;
      base.dim_qk = base.dim_v = dim;
      base.backward = false;
      // Several query and key tiles, both ends ragged; GQA group 2.
      for (const Mask& m : masks) {
        Case c = base;
        c.batch = 2, c.heads_q = 4, c.heads_kv = 2, c.seqlen_q = 333, c.seqlen_k = 1029;
        c.mask = m;
        cases.push_back(c);
      }
      // Whole tiles only, causal: the diagonal tiles are the only masked ones.
      Case whole = base;
      whole.batch = 1, whole.heads_q = 2, whole.heads_kv = 2, whole.seqlen_q = 512, whole.seqlen_k = 512;
      whole.mask = Mask::causal();
      cases.push_back(whole);
      // More queries than keys: bottom-right causal leaves the first rows empty; the sinks must still be right.
      Case empty_rows = base;
      empty_rows.batch = 1, empty_rows.heads_q = 3, empty_rows.heads_kv = 1;
      empty_rows.seqlen_q = 517, empty_rows.seqlen_k = 300;
      empty_rows.mask = Mask::causal();
      empty_rows.sinks = true;
      cases.push_back(empty_rows);
      // Padded strides (head stride dim + 8, slack in seq and batch strides), MQA.
      Case padded = base;
      padded.batch = 2, padded.heads_q = 4, padded.heads_kv = 1, padded.seqlen_q = 200, padded.seqlen_k = 391;
      padded.layout = Layout::padded;
      padded.mask = Mask::causal(Alignment::top_left);
      cases.push_back(padded);
      // Varlen with empty sequences on either side, sliding window, sinks.
      Case var = base;
      var.heads_q = 2, var.heads_kv = 1;
      var.varlen_q = {0, 257, 1, 700, 64};
      var.varlen_k = {300, 0, 129, 700, 64};
      var.mask = Mask::window(64, 0);
      var.sinks = true;
      cases.push_back(var);
      // Varlen, causal, one long sequence among short ones.
      Case var_causal = base;
      var_causal.heads_q = 4, var_causal.heads_kv = 2;
      var_causal.varlen_q = {17, 1100, 128, 3};
      var_causal.varlen_k = {17, 1100, 200, 129};
      var_causal.mask = Mask::causal();
      cases.push_back(var_causal);
    }
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

TEST(Sm90ForwardRefusals, SoftcapAlibiBackwardAndOddHeadDims) {
  if (std::string why = why_no_sm90(); !why.empty()) GTEST_SKIP() << "cuda_sm90 not exercised: " << why;
  Case c;
  c.dim_qk = c.dim_v = 128;
  c.backward = false;
  Case soft = c;
  soft.softcap = 30.0f;
  expect_refused(soft, false, "softcap");
  Case alibi = c;
  alibi.alibi = Alibi::per_head;
  expect_refused(alibi, false, "ALiBi");
  Case odd = c;
  odd.dim_qk = odd.dim_v = 96;
  expect_refused(odd, false, "64, 128 and 256");
  Case back = c;
  back.backward = true;
  expect_refused(back, true, "no backward");
}

// "auto" must still run what the Hopper kernel refuses (through the sm80 kernel) and get it right.
TEST(Sm90ForwardRefusals, AutoFallsBackForSoftcap) {
  if (std::string why = why_no_sm90(); !why.empty()) GTEST_SKIP() << "cuda_sm90 not exercised: " << why;
  Case c;
  c.dim_qk = c.dim_v = 128;
  c.backward = false;
  c.softcap = 30.0f;
  c.seqlen_q = 150, c.seqlen_k = 270;
  CaseData data(c);
  const Results got = data.run("auto", Device::cuda, false);
  for (const Comparison& cmp : data.compare_all(got, false)) EXPECT_TRUE(cmp.ok()) << cmp.describe();
}

}  // namespace
}  // namespace ioattn::test
