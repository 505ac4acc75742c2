// The judge can convict: the comparison of src/numerics/error_bound.hpp fails on results that are wrong by little more
// than the bound, on a NaN left behind, and on a row that should see nothing but got a value. Without these, a
// bound that is accidentally vacuous (say, a naive error that came out huge) would pass every backend.
#include <gtest/gtest.h>

#include <cmath>
#include <limits>
#include <vector>

#include "cpu/reference.hpp"
#include "support/cases.hpp"
#include "support/harness.hpp"
#include "support/random.hpp"

namespace ioattn::test {
namespace {

TEST(Compare, ExactResultPassesAndOneBadElementFails) {
  Rng rng("Compare.Synthetic");
  std::vector<double> ref(1000), naive(1000);
  for (std::size_t e = 0; e < ref.size(); ++e) {
    ref[e] = rng.normal();
    naive[e] = ref[e] + rng.normal(0.0, 1e-3);
  }
  const double eps = dtype_eps(DType::bf16);
  const Comparison same = compare("x", ref, ref, naive, eps);
  EXPECT_TRUE(same.ok()) << same.describe();
  EXPECT_GT(same.bound, 0.0);

  std::vector<double> bad = ref;
  bad[417] += same.bound * 1.01;
  const Comparison off = compare("x", bad, ref, naive, eps);
  EXPECT_FALSE(off.ok()) << off.describe();
  EXPECT_EQ(off.worst, 417);

  bad = ref;
  bad[3] = std::numeric_limits<double>::quiet_NaN();
  const Comparison nan = compare("x", bad, ref, naive, eps);
  EXPECT_FALSE(nan.ok()) << "a NaN slipped through: " << nan.describe();
  EXPECT_EQ(nan.non_finite, 1);

  std::vector<double> ref_inf = ref;
  ref_inf[9] = -std::numeric_limits<double>::infinity();
  std::vector<double> naive_inf = naive;
  naive_inf[9] = ref_inf[9];
  const Comparison row = compare("lse", ref, ref_inf, naive_inf, eps);  // actual finite where -inf is required
  EXPECT_FALSE(row.ok()) << row.describe();
  EXPECT_EQ(row.inf_mismatch, 1);
  EXPECT_TRUE(compare("lse", ref_inf, ref_inf, naive_inf, eps).ok());
}

// On a real case: the reference backend's own dtype output passes; the same output with one element moved just
// past the bound, or with a poisoned element left in place, fails.
TEST(Compare, RealCaseFailsWhenOneOutputElementIsOff) {
  SCOPED_TRACE(seed_text());
  Case c;
  c.dtype = DType::f16;
  c.heads_q = 4;
  c.seqlen_q = 113;
  c.seqlen_k = 203;
  c.mask = Mask::causal();
  c.backward = false;
  CaseData data(c);
  const Results good = data.run("reference", Device::cpu, false);
  const auto ok = data.compare_all(good, false);
  for (const Comparison& cmp : ok) EXPECT_TRUE(cmp.ok()) << cmp.describe();
  ASSERT_GT(ok[0].naive_err, 0.0) << "fp16 naive with no error: the yardstick is broken";

  // Element 5 of row (token 50, head 1) lies inside the mask: the reference there is a real value.
  const std::int64_t e = (50 * c.heads_q + 1) * c.dim_v + 5;
  Results bad = good;
  bad.out[e] = data.ref().out[e] + ok[0].bound * 1.05 + 2 * dtype_eps(c.dtype) * std::fabs(data.ref().out[e]);
  const Comparison off = data.compare_all(bad, false)[0];
  EXPECT_FALSE(off.ok()) << off.describe();

  bad = good;
  bad.out[e] = std::numeric_limits<double>::quiet_NaN();
  EXPECT_FALSE(data.compare_all(bad, false)[0].ok());

  // A plausible bug, not a synthetic one: the same problem with the causal diagonal on the other side.
  Case wrong = c;
  wrong.mask = Mask::causal(Alignment::top_left);
  const detail::Problem& p = data.problem();
  detail::Problem q = p;
  q.mask = wrong.mask;
  const cpu::ref::Canonical canon(p);
  const auto qq = cpu::ref::gather(p, p.q, c.dtype, true, c.heads_q, c.dim_qk);
  const auto kk = cpu::ref::gather(p, p.k, c.dtype, false, c.heads_kv, c.dim_qk);
  const auto vv = cpu::ref::gather(p, p.v, c.dtype, false, c.heads_kv, c.dim_v);
  Results misaligned;
  misaligned.out.resize(good.out.size());
  misaligned.lse.resize(good.lse.size());
  cpu::ref::forward_f64(q, qq.data(), kk.data(), vv.data(), misaligned.out.data(), misaligned.lse.data());
  for (const Comparison& cmp : data.compare_all(misaligned, false)) {
    EXPECT_FALSE(cmp.ok()) << "a misaligned causal mask passed: " << cmp.describe();
  }
}

// The memory checks: a write into the gap after a head of a padded output, or into an input, is reported.
TEST(Compare, WritesOutsideTheOutputsAreCaught) {
  SCOPED_TRACE(seed_text());
  Case c;
  c.dtype = DType::bf16;
  c.seqlen_q = 17;
  c.seqlen_k = 33;
  c.layout = Layout::padded;
  c.backward = false;
  CaseData data(c);
  ASSERT_EQ(data.run("reference", Device::cpu, false).stray_writes, 0);

  // Element dim_v of (batch 0, row 0, head 0) is the first one of the 8-element gap after that head's row.
  data.out_buffer().set(c.dim_v, 1.0);
  const Results gap = data.collect(false);
  EXPECT_EQ(gap.stray_writes, 1) << gap.stray_where;
  data.out_buffer().set(c.dim_v, std::numeric_limits<double>::quiet_NaN());
  EXPECT_EQ(data.collect(false).stray_writes, 0);

  HostBuffer& q = data.q_buffer();
  q.set(0, q.get(0) + 1.0);
  const Results input = data.collect(false);
  EXPECT_EQ(input.stray_writes, 1) << input.stray_where;
}

}  // namespace
}  // namespace ioattn::test
