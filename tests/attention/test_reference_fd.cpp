// Checks of the oracle itself, which everything else is judged by:
//   - its forward against a literal transcription of the definition in include/ioattn/attention.hpp (mask written
//     out from the formula there, not through core::MaskRule), on shapes with every feature;
//   - its backward against central finite differences of its forward, in fp64, for q, k, v and the sinks;
//   - the reference backend through the public API on table cases (dtype round trip, strides, varlen).
#include <gtest/gtest.h>

#include <cmath>
#include <limits>
#include <string>
#include <vector>

#include "cpu/reference.hpp"
#include "ioattn/error.hpp"
#include "support/cases.hpp"
#include "support/harness.hpp"
#include "support/random.hpp"

namespace ioattn::test {
namespace {

constexpr double kInf = std::numeric_limits<double>::infinity();

// A small fp64 problem: metadata in a detail::Problem (the fp64 functions ignore its operand pointers) and the
// canonical inputs next to it.
struct Small {
  std::string name;
  detail::Problem p;
  std::vector<float> alibi, sinks;
  std::vector<std::int32_t> cu_q, cu_k;
  std::vector<double> q, k, v, dout;

  std::int64_t tokens_q() const { return cpu::ref::Canonical(p).tokens_q; }
  std::int64_t tokens_k() const { return cpu::ref::Canonical(p).tokens_k; }
};

struct SmallSpec {
  const char* name;
  std::vector<std::int32_t> lens_q, lens_k;  // one entry per sequence; dense when all equal and !varlen
  bool varlen;
  std::int64_t heads_q, heads_kv, dim_qk, dim_v;
  Mask mask;
  float softcap;
  Alibi alibi;
  bool sinks;
};

void PrintTo(const SmallSpec& s, std::ostream* os) { *os << s.name; }

Small make_small(const SmallSpec& s) {
  Rng rng(std::string("fd.") + s.name);
  Small m;
  m.name = s.name;
  detail::Problem& p = m.p;
  p.batch = static_cast<std::int64_t>(s.lens_q.size());
  p.heads_q = s.heads_q;
  p.heads_kv = s.heads_kv;
  p.dim_qk = s.dim_qk;
  p.dim_v = s.dim_v;
  p.scale = 0.375f;  // exact in fp32, so the fp64 math sees the same scale
  p.softcap = s.softcap;
  p.mask = s.mask;
  if (s.varlen) {
    m.cu_q = {0};
    m.cu_k = {0};
    for (std::size_t b = 0; b < s.lens_q.size(); ++b) {
      m.cu_q.push_back(m.cu_q.back() + s.lens_q[b]);
      m.cu_k.push_back(m.cu_k.back() + s.lens_k[b]);
      p.seqlen_q = std::max<std::int64_t>(p.seqlen_q, s.lens_q[b]);
      p.seqlen_k = std::max<std::int64_t>(p.seqlen_k, s.lens_k[b]);
    }
    p.cu_seqlens_q = m.cu_q.data();
    p.cu_seqlens_k = m.cu_k.data();
    p.total_q = m.cu_q.back();
    p.total_k = m.cu_k.back();
  } else {
    p.seqlen_q = s.lens_q[0];
    p.seqlen_k = s.lens_k[0];
  }
  if (s.alibi != Alibi::none) {
    const std::int64_t rows = s.alibi == Alibi::per_batch_head ? p.batch : 1;
    for (std::int64_t e = 0; e < rows * p.heads_q; ++e) m.alibi.push_back(static_cast<float>(rng.uniform(0, 0.5)));
    p.alibi_slopes = m.alibi.data();
    p.alibi_batch_stride = s.alibi == Alibi::per_batch_head ? p.heads_q : 0;
  }
  if (s.sinks) {
    // Multiples of 2^-8: sink +- 2^-12 stays exact in the fp32 the Problem holds sinks in.
    for (std::int64_t h = 0; h < p.heads_q; ++h) m.sinks.push_back(std::ldexp(std::round(rng.normal() * 256), -8));
    p.sinks = m.sinks.data();
  }
  auto fill = [&](std::vector<double>& x, std::int64_t n) {
    x.resize(static_cast<std::size_t>(n));
    for (double& e : x) e = rng.normal();
  };
  fill(m.q, m.tokens_q() * p.heads_q * p.dim_qk);
  fill(m.k, m.tokens_k() * p.heads_kv * p.dim_qk);
  fill(m.v, m.tokens_k() * p.heads_kv * p.dim_v);
  fill(m.dout, m.tokens_q() * p.heads_q * p.dim_v);
  return m;
}

const std::vector<SmallSpec>& small_specs() {
  static const std::vector<SmallSpec> specs = {
      {"softcap_alibi_sinks_gqa2_dqk6_dv5", {5, 5}, {7, 7}, false, 4, 2, 6, 5, Mask::none(), 1.5f, Alibi::per_head,
       true},
      {"causal_br_more_queries_than_keys", {7}, {4}, false, 2, 2, 4, 4, Mask::causal(), 0.0f, Alibi::none, false},
      {"causal_tl_alibi_bh_gqa4", {6, 6}, {9, 9}, false, 4, 1, 5, 3, Mask::causal(Alignment::top_left), 0.0f,
       Alibi::per_batch_head, false},
      {"window_br_softcap_sinks_empty_rows", {9}, {4}, false, 3, 1, 4, 6, Mask::window(1, 0), 2.0f, Alibi::none,
       true},
      {"window_tl_one_sided_alibi", {6}, {8}, false, 2, 1, 3, 3, Mask::window(-1, 2, Alignment::top_left), 0.0f,
       Alibi::per_head, false},
      {"varlen_empty_sequences_window_tl_sinks_gqa2", {3, 0, 4, 2}, {5, 2, 0, 3}, true, 2, 1, 4, 3,
       Mask::window(2, 1, Alignment::top_left), 1.0f, Alibi::per_batch_head, true},
  };
  return specs;
}

// sum(dout * out): the loss whose gradient the backward returns.
double loss(const Small& m) {
  std::vector<double> out(m.dout.size()), lse(static_cast<std::size_t>(m.tokens_q() * m.p.heads_q));
  cpu::ref::forward_f64(m.p, m.q.data(), m.k.data(), m.v.data(), out.data(), lse.data());
  double l = 0;
  for (std::size_t e = 0; e < out.size(); ++e) l += m.dout[e] * out[e];
  return l;
}

// A transcription of attention.hpp's definition for one (sequence, head): no core/ helpers beyond tanh.
void definition_forward(const Small& m, std::vector<double>& out, std::vector<double>& lse) {
  const detail::Problem& p = m.p;
  out.assign(m.dout.size(), 0.0);
  lse.assign(static_cast<std::size_t>(m.tokens_q() * p.heads_q), 0.0);
  for (std::int64_t b = 0; b < p.batch; ++b) {
    const std::int64_t sq = p.cu_seqlens_q ? p.cu_seqlens_q[b + 1] - p.cu_seqlens_q[b] : p.seqlen_q;
    const std::int64_t sk = p.cu_seqlens_k ? p.cu_seqlens_k[b + 1] - p.cu_seqlens_k[b] : p.seqlen_k;
    const std::int64_t tq0 = p.cu_seqlens_q ? p.cu_seqlens_q[b] : b * p.seqlen_q;
    const std::int64_t tk0 = p.cu_seqlens_k ? p.cu_seqlens_k[b] : b * p.seqlen_k;
    for (std::int64_t h = 0; h < p.heads_q; ++h) {
      const std::int64_t hk = h / (p.heads_q / p.heads_kv);
      for (std::int64_t i = 0; i < sq; ++i) {
        const std::int64_t diag = i + (p.mask.alignment == Alignment::bottom_right ? sk - sq : 0);
        std::vector<double> s(static_cast<std::size_t>(sk), -kInf);
        for (std::int64_t j = 0; j < sk; ++j) {
          const bool left_ok = p.mask.window_left < 0 || j >= diag - p.mask.window_left;
          const bool right_ok = p.mask.window_right < 0 || j <= diag + p.mask.window_right;
          if (!left_ok || !right_ok) continue;
          double x = 0;
          for (std::int64_t c = 0; c < p.dim_qk; ++c) {
            x += m.q[((tq0 + i) * p.heads_q + h) * p.dim_qk + c] * m.k[((tk0 + j) * p.heads_kv + hk) * p.dim_qk + c];
          }
          x *= p.scale;
          if (p.softcap > 0) x = p.softcap * std::tanh(x / p.softcap);
          if (p.alibi_slopes) x -= p.alibi_slopes[b * p.alibi_batch_stride + h] * std::fabs(double(j - diag));
          s[j] = x;
        }
        double sum = p.sinks ? std::exp(double(p.sinks[h])) : 0.0;
        for (double x : s) sum += std::exp(x);  // inputs are small: no overflow without the max shift
        const std::size_t row = static_cast<std::size_t>((tq0 + i) * p.heads_q + h);
        lse[row] = sum > 0 ? std::log(sum) : -kInf;
        if (sum == 0) continue;
        for (std::int64_t j = 0; j < sk; ++j) {
          const double w = std::exp(s[j]) / sum;
          for (std::int64_t c = 0; c < p.dim_v; ++c) out[row * p.dim_v + c] += w * m.v[((tk0 + j) * p.heads_kv + hk) * p.dim_v + c];
        }
      }
    }
  }
}

class ReferenceSmall : public ::testing::TestWithParam<SmallSpec> {};

TEST_P(ReferenceSmall, ForwardMatchesTheDefinition) {
  SCOPED_TRACE(seed_text());
  const Small m = make_small(GetParam());
  std::vector<double> out(m.dout.size()), lse(static_cast<std::size_t>(m.tokens_q() * m.p.heads_q));
  cpu::ref::forward_f64(m.p, m.q.data(), m.k.data(), m.v.data(), out.data(), lse.data());
  std::vector<double> want_out, want_lse;
  definition_forward(m, want_out, want_lse);
  bool saw_empty_row = false;
  for (std::size_t r = 0; r < lse.size(); ++r) {
    if (std::isinf(want_lse[r])) {
      saw_empty_row = true;
      EXPECT_TRUE(std::isinf(lse[r]) && lse[r] < 0) << "row " << r << " sees nothing; lse " << lse[r];
    } else {
      EXPECT_NEAR(lse[r], want_lse[r], 1e-12 * (1 + std::fabs(want_lse[r]))) << "row " << r;
    }
  }
  for (std::size_t e = 0; e < out.size(); ++e) {
    ASSERT_FALSE(std::isnan(out[e])) << "element " << e;
    EXPECT_NEAR(out[e], want_out[e], 1e-12) << "element " << e;
  }
  if (std::string(GetParam().name).find("empty") != std::string::npos ||
      std::string(GetParam().name).find("more_queries") != std::string::npos) {
    EXPECT_TRUE(saw_empty_row || m.p.sinks) << "the spec meant to have rows that see nothing";
  }
}

TEST_P(ReferenceSmall, BackwardMatchesFiniteDifferences) {
  SCOPED_TRACE(seed_text());
  Small m = make_small(GetParam());
  const detail::Problem& p = m.p;
  std::vector<double> out(m.dout.size()), lse(static_cast<std::size_t>(m.tokens_q() * p.heads_q));
  cpu::ref::forward_f64(p, m.q.data(), m.k.data(), m.v.data(), out.data(), lse.data());
  std::vector<double> dq(m.q.size(), kInf), dk(m.k.size(), kInf), dv(m.v.size(), kInf), dsinks(m.sinks.size(), kInf);
  cpu::ref::backward_f64(p, m.q.data(), m.k.data(), m.v.data(), out.data(), lse.data(), m.dout.data(), dq.data(),
                         dk.data(), dv.data(), dsinks.data());

  // Central differences: truncation ~h^2 * |f'''| ~ 1e-10, cancellation ~1e-16 * |loss| / h ~ 1e-10.
  constexpr double h = 1e-5, tol = 1e-7;
  auto check = [&](const char* what, std::vector<double>& x, const std::vector<double>& grad) {
    for (std::size_t e = 0; e < x.size(); ++e) {
      const double saved = x[e];
      x[e] = saved + h;
      const double up = loss(m);
      x[e] = saved - h;
      const double down = loss(m);
      x[e] = saved;
      const double fd = (up - down) / (2 * h);
      ASSERT_FALSE(std::isnan(grad[e])) << what << "[" << e << "]";
      EXPECT_NEAR(grad[e], fd, tol * (1 + std::fabs(fd))) << what << "[" << e << "]";
    }
  };
  check("dq", m.q, dq);
  check("dk", m.k, dk);
  check("dv", m.v, dv);

  // Sinks live in fp32: steps of 2^-12 and 2^-13 are exact there, and Richardson extrapolation of the two central
  // differences cancels the h^2 term that so large a step would leave.
  for (std::size_t hh = 0; hh < m.sinks.size(); ++hh) {
    const float saved = m.sinks[hh];
    auto central = [&](float step) {
      m.sinks[hh] = saved + step;
      const double up = loss(m);
      m.sinks[hh] = saved - step;
      const double down = loss(m);
      m.sinks[hh] = saved;
      return (up - down) / (2.0 * step);
    };
    const double d1 = central(std::ldexp(1.0f, -12)), d2 = central(std::ldexp(1.0f, -13));
    const double fd = (4 * d2 - d1) / 3;
    EXPECT_NEAR(dsinks[hh], fd, 1e-7 * (1 + std::fabs(fd))) << "dsinks[" << hh << "]";
  }

  // Rows that see nothing: zero gradient in dq (their dk/dv contributions are zero by the same token).
  for (std::int64_t r = 0; r < static_cast<std::int64_t>(lse.size()); ++r) {
    if (!std::isinf(lse[r])) continue;
    for (std::int64_t c = 0; c < p.dim_qk; ++c) EXPECT_EQ(dq[r * p.dim_qk + c], 0.0) << "empty row " << r;
    for (std::int64_t c = 0; c < p.dim_v; ++c) EXPECT_EQ(out[r * p.dim_v + c], 0.0) << "empty row " << r;
  }
}

INSTANTIATE_TEST_SUITE_P(Fd, ReferenceSmall, ::testing::ValuesIn(small_specs()),
                         [](const ::testing::TestParamInfo<SmallSpec>& info) { return std::string(info.param.name); });

// The backend around the fp64 core: gather, dtype round trip, strides, varlen, lse layout, dsinks, through the API.
class ReferenceBackend : public ::testing::TestWithParam<Case> {};

TEST_P(ReferenceBackend, ThroughTheApiMatchesTheOracle) {
  SCOPED_TRACE(seed_text());
  CaseData data(GetParam());
  const Results got = data.run("reference", Device::cpu, true);
  for (const Comparison& cmp : data.compare_all(got, true)) {
    EXPECT_TRUE(cmp.ok()) << cmp.describe();
    // out and lse are the oracle's, rounded once to their dtype: within half an ulp (one for the fp32 detour).
    // The gradients start from that rounded out and lse, as a FlashAttention backward does, so only the bound holds.
    if (cmp.what == "out" || cmp.what == "lse") {
      EXPECT_LE(cmp.err, dtype_eps(cmp.what == "lse" ? DType::f32 : GetParam().dtype) * cmp.ref_max) << cmp.describe();
    }
  }
}

// Head dims above the API's 512 are refused by name, before anything is written.
TEST(ReferenceBackend, RefusesHeadDimsAbove512) {
  const std::int64_t dim = 520;
  std::vector<float> q(dim, 0.5f), k(dim, 0.5f), v(dim, 0.5f), out(dim, -7.0f), lse(1, -7.0f);
  ForwardArgs args;
  args.q = TensorView::contiguous(q.data(), DType::f32, {1, 1, 1, dim});
  args.k = TensorView::contiguous(k.data(), DType::f32, {1, 1, 1, dim});
  args.v = TensorView::contiguous(v.data(), DType::f32, {1, 1, 1, dim});
  args.out = TensorView::contiguous(out.data(), DType::f32, {1, 1, 1, dim});
  args.lse = TensorView::contiguous(lse.data(), DType::f32, {1, 1, 1});
  AttentionParams params;
  params.impl = "reference";
  try {
    attention_forward(args, params);
    FAIL() << "head dim 520 was accepted";
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), ErrorCode::unsupported);
    EXPECT_NE(std::string(e.what()).find("520"), std::string::npos) << e.what();
  }
  EXPECT_EQ(out[0], -7.0f);
  EXPECT_EQ(lse[0], -7.0f);
}

std::vector<Case> reference_backend_cases() {
  std::vector<Case> picked;
  for (const Case& c : attention_cases()) {
    const bool small = c.is_varlen() || c.seqlen_q * c.seqlen_k <= 113 * 203;
    if (small && (c.is_varlen() || c.layout != Layout::contiguous || c.sinks)) picked.push_back(c);
  }
  return picked;
}

INSTANTIATE_TEST_SUITE_P(Cases, ReferenceBackend, ::testing::ValuesIn(reference_backend_cases()),
                         [](const ::testing::TestParamInfo<Case>& info) { return info.param.name(); });

}  // namespace
}  // namespace ioattn::test
