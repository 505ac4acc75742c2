// Unit tests of the ioattn tool's parts: the flag parser, the FLOP count, and the reference checker, which must
// catch a wrong value, a NaN and an lse of -inf where a row sees keys, whether it checks whole or samples rows.
#include <gtest/gtest.h>

#include <cmath>
#include <limits>
#include <memory>
#include <string>
#include <vector>

#include "args.hpp"
#include "check.hpp"
#include "problem.hpp"
#include "run.hpp"

namespace ioattn::cli {
namespace {

// ---- FLOP count ----

// The mask rule written out from attention.hpp's documentation, independently of core::MaskRule.
double brute_force_pairs(std::int64_t sq, std::int64_t sk, const Mask& m) {
  double pairs = 0;
  const std::int64_t offset = m.alignment == Alignment::top_left ? 0 : sk - sq;
  for (std::int64_t i = 0; i < sq; ++i) {
    for (std::int64_t j = 0; j < sk; ++j) {
      const bool left_ok = m.window_left < 0 || j >= i + offset - m.window_left;
      const bool right_ok = m.window_right < 0 || j <= i + offset + m.window_right;
      pairs += (left_ok && right_ok) ? 1 : 0;
    }
  }
  return pairs;
}

TEST(CliFlops, VisiblePairsMatchBruteForce) {
  const Mask masks[] = {Mask::none(),
                        Mask::causal(),
                        Mask::causal(Alignment::top_left),
                        Mask::window(5, 2),
                        Mask::window(-1, 3, Alignment::top_left),
                        Mask::window(0, 0),
                        Mask::window(7, -1)};
  const std::pair<std::int64_t, std::int64_t> lengths[] = {{1, 1}, {17, 17}, {13, 29}, {29, 13}, {1, 40}, {40, 1}};
  for (const Mask& mask : masks) {
    for (const auto& [sq, sk] : lengths) {
      ProblemSpec s;
      s.batch = 2;
      s.heads_q = 3;
      s.seqlen_q = sq;
      s.seqlen_k = sk;
      s.mask = mask;
      EXPECT_EQ(visible_pairs(s), 6 * brute_force_pairs(sq, sk, mask))
          << describe_mask(mask) << " " << sq << "x" << sk;
    }
  }
}

TEST(CliFlops, ConventionsOfTheBrief) {
  ProblemSpec s;  // the demo's problem, causal
  s.mask = Mask::none();
  const double dense = 4.0 * 2 * 16 * 4096.0 * 4096.0 * 128;
  EXPECT_DOUBLE_EQ(forward_flops(s), dense);
  EXPECT_DOUBLE_EQ(backward_flops(s), 2.5 * dense);
  s.mask = Mask::causal();  // exactly the visible pairs: half the square plus the diagonal
  EXPECT_DOUBLE_EQ(forward_flops(s), dense * (4096.0 * 4097.0 / 2) / (4096.0 * 4096.0));
}

// ---- flags ----

ParsedFlags parse(const std::vector<FlagSpec>& specs, std::vector<std::string> args) {
  std::vector<char*> argv;
  for (std::string& a : args) argv.push_back(a.data());
  return parse_flags("ioattn test", specs, static_cast<int>(argv.size()), argv.data());
}

std::vector<FlagSpec> test_specs() {
  std::vector<FlagSpec> specs = problem_flag_specs(ProblemSpec{});
  specs.push_back({"json", FlagKind::boolean, "", "", ""});
  return specs;
}

TEST(CliFlags, ParsesBothFormsAndAppliesThem) {
  const ParsedFlags f = parse(test_specs(), {"--batch", "3", "--seqlen=100", "--seqlen-k", "7", "--head-dim", "192",
                                             "--head-dim-v", "128", "--window", "-1,0", "--top-left", "--json",
                                             "--dtype", "fp16", "--softcap", "30.5"});
  EXPECT_TRUE(f.has("json"));
  EXPECT_FALSE(f.help_requested);
  const ProblemSpec s = problem_from_flags(f, ProblemSpec{});
  EXPECT_EQ(s.batch, 3);
  EXPECT_EQ(s.seqlen_q, 100);
  EXPECT_EQ(s.seqlen_k, 7);
  EXPECT_EQ(s.dim_qk, 192);
  EXPECT_EQ(s.dim_v, 128);
  EXPECT_TRUE(s.mask.is_causal());
  EXPECT_EQ(s.mask.alignment, Alignment::top_left);
  EXPECT_EQ(s.dtype, DType::f16);
  EXPECT_FLOAT_EQ(s.softcap, 30.5f);
  EXPECT_EQ(s.heads_q, 16);  // untouched defaults stay

  const ProblemSpec v = problem_from_flags(parse(test_specs(), {"--head-dim", "64", "--no-mask"}), ProblemSpec{});
  EXPECT_EQ(v.dim_v, 64);  // follows --head-dim unless given
  EXPECT_TRUE(v.mask.is_none());
  EXPECT_TRUE(parse(test_specs(), {"-h"}).help_requested);
}

TEST(CliFlags, RejectsWhatItMust) {
  const auto specs = test_specs();
  const std::vector<std::vector<std::string>> bad = {
      {"--frobnicate"},        {"--batch"},           {"--batch", "3x"},       {"--batch", "1", "--batch", "2"},
      {"--json=1"},            {"stray"},             {"--softcap", "nan"},    {"--seqlen", "--causal"},
  };
  for (const auto& args : bad) {
    EXPECT_THROW(parse(specs, args), UsageError) << args[0];
  }
  const auto applied = [&](std::vector<std::string> args) { problem_from_flags(parse(specs, args), ProblemSpec{}); };
  EXPECT_THROW(applied({"--batch", "-1"}), UsageError);
  EXPECT_THROW(applied({"--window", "3"}), UsageError);
  EXPECT_THROW(applied({"--window", "3,x"}), UsageError);
  EXPECT_THROW(applied({"--causal", "--no-mask"}), UsageError);
  EXPECT_THROW(applied({"--no-mask", "--top-left"}), UsageError);
  EXPECT_THROW(applied({"--dtype", "fp64"}), UsageError);
  try {
    parse(specs, {"--batch", "two"});
    FAIL() << "no throw";
  } catch (const UsageError& e) {
    EXPECT_NE(std::string(e.what()).find("--batch"), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("'two'"), std::string::npos) << e.what();
  }
}

// ---- the checker ----

// One run of the fp64 reference itself as the "tested" backend: every check must pass with errors at rounding
// level, and each corruption below must be caught.
struct RunResult {
  ProblemSpec spec;
  std::unique_ptr<AttentionRun> run;
  HostOutputs outputs;
};

RunResult run_reference(const ProblemSpec& spec) {
  RunOptions options;
  options.impl = "reference";
  options.device = Device::cpu;
  RunResult r{spec, std::make_unique<AttentionRun>(spec, options, true), {}};
  r.run->forward();
  r.run->backward();
  r.outputs = r.run->download();
  return r;
}

std::int64_t at4(const HostTensor& t, std::int64_t b, std::int64_t row, std::int64_t h, std::int64_t d) {
  return ((b * t.shape[1] + row) * t.shape[2] + h) * t.shape[3] + d;
}

class CliCheck : public ::testing::TestWithParam<bool> {  // param: sampled (large) or whole (small) problem
 protected:
  static ProblemSpec spec_for(bool sampled) {
    ProblemSpec s;
    s.batch = 2;
    s.heads_q = 4;
    s.heads_kv = 2;
    s.seqlen_q = sampled ? 768 : 37;
    s.seqlen_k = sampled ? 768 : 53;
    s.dim_qk = s.dim_v = 16;
    s.dtype = DType::f32;
    s.mask = Mask::causal();
    s.seed = 7;
    return s;
  }
  static RunResult& cached(bool sampled) {
    static RunResult runs[2] = {run_reference(spec_for(false)), run_reference(spec_for(true))};
    return runs[sampled ? 1 : 0];
  }
  CheckReport check(const HostOutputs& outputs) {
    const RunResult& r = cached(GetParam());
    return check_against_reference(r.spec, r.run->inputs(), outputs, true, 0);
  }
};

TEST_P(CliCheck, PassesOnCorrectOutputs) {
  const RunResult& r = cached(GetParam());
  const CheckReport report = check(r.outputs);
  EXPECT_TRUE(report.pass);
  EXPECT_EQ(report.nonfinite, 0);
  EXPECT_EQ(report.sample == "all rows", !GetParam()) << report.sample;
  for (const TensorError* e : {&report.out, &report.lse, &report.dq, &report.dk, &report.dv}) {
    EXPECT_TRUE(e->checked);
    EXPECT_LE(e->max_abs, 1e-6);
    EXPECT_GT(e->max_ref, 0.0);
  }
  EXPECT_GT(report.keys_checked, 0);
}

TEST_P(CliCheck, CatchesAWrongOutputInTheLastRow) {
  const RunResult& r = cached(GetParam());
  HostOutputs bad = r.outputs;
  const std::int64_t i = at4(bad.out, 0, r.spec.seqlen_q - 1, 0, 3);  // sampled: rows at the end are checked
  bad.out.set(i, bad.out.at(i) + 0.25f);
  const CheckReport report = check(bad);
  EXPECT_FALSE(report.pass);
  EXPECT_NEAR(report.out.max_abs, 0.25, 1e-5);
}

TEST_P(CliCheck, CatchesAWrongKeyGradient) {
  const RunResult& r = cached(GetParam());
  HostOutputs bad = r.outputs;
  const std::int64_t i = at4(bad.dk, 0, r.spec.seqlen_k - 1, 0, 0);  // the last key: complete in the last block
  bad.dk.set(i, bad.dk.at(i) - 1.0f);
  const CheckReport report = check(bad);
  EXPECT_FALSE(report.pass);
  EXPECT_NEAR(report.dk.max_abs, 1.0, 1e-5);
}

TEST_P(CliCheck, CatchesNaNAnywhere) {
  const RunResult& r = cached(GetParam());
  HostOutputs bad = r.outputs;
  bad.dv.set(at4(bad.dv, 1, r.spec.seqlen_k / 2, 1, 5), std::numeric_limits<float>::quiet_NaN());
  const CheckReport report = check(bad);
  EXPECT_FALSE(report.pass);
  EXPECT_EQ(report.nonfinite, 1);
}

TEST_P(CliCheck, CatchesMinusInfinityLseOnARowThatSeesKeys) {
  const RunResult& r = cached(GetParam());
  HostOutputs bad = r.outputs;
  bad.lse.set(r.spec.seqlen_q / 2, -std::numeric_limits<float>::infinity());  // batch 0, head 0, a middle row
  const CheckReport report = check(bad);
  EXPECT_FALSE(report.pass);
  EXPECT_EQ(report.nonfinite, 1);
}

INSTANTIATE_TEST_SUITE_P(WholeAndSampled, CliCheck, ::testing::Values(false, true),
                         [](const auto& info) { return info.param ? "sampled" : "whole"; });

// No mask and too large to check whole: one whole (batch, kv head) slice still compares dK and dV on every key.
TEST(CliCheckSlice, ComparesKeyGradientsWithoutAMask) {
  ProblemSpec s;
  s.batch = 4;
  s.heads_q = 4;
  s.heads_kv = 2;
  s.seqlen_q = s.seqlen_k = 400;
  s.dim_qk = s.dim_v = 16;
  s.dtype = DType::f32;
  s.mask = Mask::none();
  const RunResult r = run_reference(s);
  const CheckReport good = check_against_reference(s, r.run->inputs(), r.outputs, true, 0);
  EXPECT_TRUE(good.pass);
  EXPECT_EQ(good.sample.rfind("all rows of (batch 0, kv head 0); rows ", 0), 0u) << good.sample;
  EXPECT_TRUE(good.dk.checked);
  EXPECT_EQ(good.keys_checked, s.seqlen_k);

  HostOutputs bad = r.outputs;
  const std::int64_t i = at4(bad.dv, 0, 200, 0, 1);  // a middle key: only the whole slice can judge it
  bad.dv.set(i, bad.dv.at(i) + 0.5f);
  const CheckReport report = check_against_reference(s, r.run->inputs(), bad, true, 0);
  EXPECT_FALSE(report.pass);
  EXPECT_NEAR(report.dv.max_abs, 0.5, 1e-5);
}

TEST(CliCheckTolerance, ScalesWithTheDtype) {
  EXPECT_LT(check_tolerance(DType::f32), check_tolerance(DType::f16));
  EXPECT_LT(check_tolerance(DType::f16), check_tolerance(DType::bf16));
  EXPECT_LE(check_tolerance(DType::bf16), 0.07);
}

}  // namespace
}  // namespace ioattn::cli
