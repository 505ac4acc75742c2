// core/softmax_state.hpp: the online softmax over random chunks equals the direct softmax, empty rows stay finite,
// sinks join the denominator, and merging partial results over disjoint key sets gives the whole.
#include <gtest/gtest.h>

#include <cmath>
#include <limits>
#include <vector>

#include "ioattn/core/softmax_state.hpp"
#include "support/random.hpp"

namespace {

using ioattn::core::merge_weights;
using ioattn::core::SoftmaxState;

constexpr int kDim = 3;
const double kInf = std::numeric_limits<double>::infinity();

struct Result {
  double lse;
  std::vector<double> out;  // [kDim]
};

// Direct softmax in double: lse = log(sum exp(s) + exp(sink)); out = sum exp(s - lse) v.
Result direct(const std::vector<double>& s, const std::vector<double>& v, const double* sink) {
  double m = sink ? *sink : -kInf;
  for (double x : s) m = std::max(m, x);
  Result r{-kInf, std::vector<double>(kDim, 0.0)};
  if (m == -kInf) return r;
  double sum = sink ? std::exp(*sink - m) : 0.0;
  for (double x : s) sum += std::exp(x - m);
  r.lse = m + std::log(sum);
  for (std::size_t j = 0; j < s.size(); ++j) {
    for (int c = 0; c < kDim; ++c) r.out[c] += std::exp(s[j] - r.lse) * v[j * kDim + c];
  }
  return r;
}

// The online form every kernel uses: chunks of random size, the sink folded in at chunk `sink_at` (if any).
template <class T>
Result online(const std::vector<double>& s, const std::vector<double>& v, const double* sink, ioattn::test::Rng& rng) {
  SoftmaxState<T> state;
  std::vector<T> o(kDim, T(0));
  const std::int64_t chunks_before_sink = rng.uniform_int(0, 3);
  std::int64_t chunk_index = 0;
  bool sink_done = sink == nullptr;
  std::size_t j = 0;
  while (j < s.size() || !sink_done) {
    if (!sink_done && (chunk_index == chunks_before_sink || j == s.size())) {
      const T alpha = state.add_sink(static_cast<T>(*sink));
      for (T& x : o) x *= alpha;
      sink_done = true;
      continue;
    }
    const std::size_t len = static_cast<std::size_t>(rng.uniform_int(1, 9));
    const std::size_t end = std::min(s.size(), j + len);
    T tile_max = ioattn::core::neg_inf<T>();
    for (std::size_t t = j; t < end; ++t) tile_max = std::max(tile_max, static_cast<T>(s[t]));
    const T alpha = state.begin_tile(tile_max);
    for (T& x : o) x *= alpha;
    for (std::size_t t = j; t < end; ++t) {
      const T p = std::exp(static_cast<T>(s[t]) - state.offset());
      state.l += p;
      for (int c = 0; c < kDim; ++c) o[c] += p * static_cast<T>(v[t * kDim + c]);
    }
    j = end;
    ++chunk_index;
  }
  Result r{static_cast<double>(state.lse()), std::vector<double>(kDim)};
  for (int c = 0; c < kDim; ++c) r.out[c] = static_cast<double>(o[c] * state.inv_sum());
  return r;
}

// Scores with masked (-inf) entries and runs of them, over a wide range so that rescaling matters.
void draw_row(ioattn::test::Rng& rng, std::vector<double>& s, std::vector<double>& v) {
  const std::size_t n = static_cast<std::size_t>(rng.uniform_int(1, 60));
  const double spread = rng.uniform(0.1, 40.0);
  s.resize(n);
  v.resize(n * kDim);
  for (std::size_t j = 0; j < n; ++j) {
    s[j] = rng.uniform_int(0, 4) == 0 ? -kInf : rng.normal(0.0, spread);
    for (int c = 0; c < kDim; ++c) v[j * kDim + c] = rng.normal();
  }
}

template <class T>
void check_against_direct(const char* stream, double tol, bool with_sink) {
  ioattn::test::Rng rng(stream);
  std::vector<double> s, v;
  for (int trial = 0; trial < 2000; ++trial) {
    draw_row(rng, s, v);
    // Both sides see the same (T-rounded) inputs, so the difference is the online arithmetic alone.
    for (double& x : s) x = static_cast<double>(static_cast<T>(x));
    for (double& x : v) x = static_cast<double>(static_cast<T>(x));
    const double sink_value = static_cast<double>(static_cast<T>(rng.normal(0.0, 5.0)));
    const double* sink = with_sink ? &sink_value : nullptr;
    const Result want = direct(s, v, sink);
    const Result got = online<T>(s, v, sink, rng);
    if (want.lse == -kInf) {
      ASSERT_EQ(got.lse, -kInf) << ioattn::test::seed_text();
    } else {
      ASSERT_NEAR(got.lse, want.lse, tol * (1.0 + std::fabs(want.lse))) << ioattn::test::seed_text();
    }
    for (int c = 0; c < kDim; ++c) {
      ASSERT_FALSE(std::isnan(got.out[c])) << ioattn::test::seed_text();
      ASSERT_NEAR(got.out[c], want.out[c], tol * 8) << "trial " << trial << " " << ioattn::test::seed_text();
    }
  }
}

TEST(SoftmaxState, OnlineEqualsDirectInDouble) { check_against_direct<double>("SoftmaxState.Double", 1e-12, false); }
TEST(SoftmaxState, OnlineEqualsDirectInFloat) { check_against_direct<float>("SoftmaxState.Float", 2e-6, false); }
TEST(SoftmaxState, SinkJoinsTheDenominator) { check_against_direct<double>("SoftmaxState.Sink", 1e-12, true); }
TEST(SoftmaxState, SinkJoinsTheDenominatorInFloat) { check_against_direct<float>("SoftmaxState.SinkF", 2e-6, true); }

TEST(SoftmaxState, AllMaskedRowGivesMinusInfinityAndZeroOutput) {
  SoftmaxState<float> state;
  for (int tile = 0; tile < 3; ++tile) {
    const float alpha = state.begin_tile(-std::numeric_limits<float>::infinity());
    EXPECT_FALSE(std::isnan(alpha));
    EXPECT_EQ(state.offset(), 0.0f);  // never -inf, so exp(s - offset) cannot be exp(-inf + inf)
    state.l += std::exp(-std::numeric_limits<float>::infinity() - state.offset());
  }
  EXPECT_EQ(state.lse(), -std::numeric_limits<float>::infinity());
  EXPECT_EQ(state.inv_sum(), 0.0f);
  EXPECT_EQ(state.l, 0.0f);
}

TEST(SoftmaxState, MaskedTilesBeforeAndAfterVisibleOnesChangeNothing) {
  SoftmaxState<double> a, b;
  const double inf = kInf;
  a.begin_tile(-inf);
  a.begin_tile(2.0);
  a.l += std::exp(2.0 - a.offset());
  a.begin_tile(-inf);
  b.begin_tile(2.0);
  b.l += 1.0;
  EXPECT_DOUBLE_EQ(a.lse(), b.lse());
  EXPECT_DOUBLE_EQ(a.lse(), 2.0);
}

TEST(MergeWeights, MergingPartialsEqualsTheWhole) {
  ioattn::test::Rng rng("MergeWeights.Partials");
  std::vector<double> s, v;
  for (int trial = 0; trial < 2000; ++trial) {
    draw_row(rng, s, v);
    // Split the keys at random into two disjoint sets (either may be empty or all masked).
    std::vector<double> sa, va, sb, vb;
    const double p_a = rng.uniform(0.0, 1.0);
    for (std::size_t j = 0; j < s.size(); ++j) {
      const bool to_a = rng.uniform(0.0, 1.0) < p_a;
      (to_a ? sa : sb).push_back(s[j]);
      for (int c = 0; c < kDim; ++c) (to_a ? va : vb).push_back(v[j * kDim + c]);
    }
    const Result whole = direct(s, v, nullptr);
    const Result a = direct(sa, va, nullptr);
    const Result b = direct(sb, vb, nullptr);
    const auto w = merge_weights(a.lse, b.lse);
    if (whole.lse == -kInf) {
      ASSERT_EQ(w.lse, -kInf);
      ASSERT_EQ(w.w_a, 0.0);
      ASSERT_EQ(w.w_b, 0.0);
      continue;
    }
    ASSERT_NEAR(w.lse, whole.lse, 1e-12 * (1.0 + std::fabs(whole.lse))) << ioattn::test::seed_text();
    if (a.lse == -kInf) ASSERT_EQ(w.w_a, 0.0);
    if (b.lse == -kInf) ASSERT_EQ(w.w_b, 0.0);
    for (int c = 0; c < kDim; ++c) {
      const double merged = w.w_a * a.out[c] + w.w_b * b.out[c];
      ASSERT_NEAR(merged, whole.out[c], 1e-11) << ioattn::test::seed_text();
    }
  }
}

TEST(MergeWeights, EmptySides) {
  const auto both = merge_weights(-kInf, -kInf);
  EXPECT_EQ(both.lse, -kInf);
  EXPECT_EQ(both.w_a, 0.0);
  EXPECT_EQ(both.w_b, 0.0);
  const auto left = merge_weights(1.5, -kInf);
  EXPECT_EQ(left.lse, 1.5);
  EXPECT_EQ(left.w_a, 1.0);
  EXPECT_EQ(left.w_b, 0.0);
  const auto right = merge_weights(-std::numeric_limits<float>::infinity(), -3.0f);
  EXPECT_EQ(right.lse, -3.0f);
  EXPECT_EQ(right.w_a, 0.0f);
  EXPECT_EQ(right.w_b, 1.0f);
  // Equal halves: log 2 above each, weight one half each.
  const auto equal = merge_weights(0.25, 0.25);
  EXPECT_NEAR(equal.lse, 0.25 + std::log(2.0), 1e-15);
  EXPECT_EQ(equal.w_a, 0.5);
}

}  // namespace
