// The case table (tests/support/cases.cpp) run against every backend in this build, judged by the fp64 reference
// with the bound of src/numerics/error_bound.hpp. A backend joins by being compiled in: ioattn::backends() lists it.
// "reference" is left out here (it would be compared with itself); tests/attention/test_reference_fd.cpp checks it.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <memory>
#include <set>
#include <sstream>
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

struct BackendUnderTest {
  std::string name;
  Device device;
};

// Which device a backend wants, through the public API alone: a 1x1 problem on the CPU. A backend for another
// device refuses it by naming params.impl (before touching any memory); a CPU backend runs it.
Device probe_device(const std::string& name) {
  float q = 0.5f, k = 0.25f, v = 1.0f, out = 0.0f, lse = 0.0f;
  ForwardArgs args;
  args.q = TensorView::contiguous(&q, DType::f32, {1, 1, 1, 1});
  args.k = TensorView::contiguous(&k, DType::f32, {1, 1, 1, 1});
  args.v = TensorView::contiguous(&v, DType::f32, {1, 1, 1, 1});
  args.out = TensorView::contiguous(&out, DType::f32, {1, 1, 1, 1});
  args.lse = TensorView::contiguous(&lse, DType::f32, {1, 1, 1});
  AttentionParams params;
  params.impl = name;
  try {
    attention_forward(args, params);
  } catch (const Error& e) {
    if (e.code() == ErrorCode::invalid_argument && std::string(e.what()).find("params.impl") != std::string::npos) {
      return Device::cuda;
    }
  }
  return Device::cpu;
}

std::vector<BackendUnderTest> backends_under_test() {
  std::vector<BackendUnderTest> list;
  std::istringstream names(ioattn::backends());
  for (std::string name; names >> name;) {
    if (name != "reference") list.push_back({name, probe_device(name)});
  }
  return list;
}

struct Param {
  BackendUnderTest backend;
  const Case* kase;
};
void PrintTo(const Param& p, std::ostream* os) { *os << p.backend.name << " " << p.kase->name(); }

// Case-major order, so that consecutive tests share one CaseData (inputs, oracle and naive computed once per case).
std::vector<Param> all_params() {
  std::vector<Param> params;
  const auto backends = backends_under_test();
  for (const Case& c : attention_cases()) {
    for (const auto& b : backends) params.push_back({b, &c});
  }
  return params;
}

CaseData& case_data(const Case& c) {
  static std::unique_ptr<CaseData> last;
  if (!last || last->kase().name() != c.name()) {
    last.reset();  // free the previous case's buffers first: the large cases are a few hundred MB of fp64
    last = std::make_unique<CaseData>(c);
  }
  return *last;
}

class AttentionTable : public ::testing::TestWithParam<Param> {
 protected:
  // Runs the backend, or marks the test skipped when this machine or backend cannot run the case.
  void run(bool backward, Results* got, bool with_lse = true) {
    const Param& p = GetParam();
    if (backward && !p.kase->backward) {
      GTEST_SKIP() << "forward-only case";
    }
    if (p.backend.device == Device::cuda && !gpu_available()) {
      GTEST_SKIP() << "backend '" << p.backend.name << "' needs a GPU; none is usable on this machine";
    }
    try {
      *got = case_data(*p.kase).run(p.backend.name, p.backend.device, backward, with_lse);
    } catch (const Error& e) {
      if (e.code() != ErrorCode::unsupported) throw;
      GTEST_SKIP() << "backend '" << p.backend.name << "' does not support this case: " << e.what();
    }
  }

  void expect_all_within_bound(const Results& got, bool backward) {
    EXPECT_EQ(got.stray_writes, 0) << "elements changed outside the outputs' views or in the inputs, first: "
                                   << got.stray_where;
    static const bool verbose = std::getenv("IOATTN_TEST_VERBOSE") != nullptr;
    for (const Comparison& cmp : case_data(*GetParam().kase).compare_all(got, backward)) {
      if (verbose) std::printf("  %s\n", cmp.describe().c_str());
      EXPECT_TRUE(cmp.ok()) << cmp.describe();
    }
  }
};

TEST_P(AttentionTable, Forward) {
  SCOPED_TRACE(seed_text() + " reproduces these inputs");
  Results got;
  run(false, &got);
  if (IsSkipped()) return;
  expect_all_within_bound(got, false);

  // Again with no lse asked for (the API allows an empty view): the same out, and the lse buffer left alone.
  Results without_lse;
  run(false, &without_lse, false);
  const Comparison out = case_data(*GetParam().kase).compare_all(without_lse, false)[0];
  EXPECT_TRUE(out.ok()) << "without lse: " << out.describe();
  EXPECT_EQ(without_lse.stray_writes, 0) << "without lse: " << without_lse.stray_where;
  std::int64_t lse_written = 0;
  for (double x : without_lse.lse) lse_written += std::isnan(x) ? 0 : 1;
  EXPECT_EQ(lse_written, 0) << "lse elements written although no lse was passed";
}

// The backward from the backend's own out and lse, against the exact (fp64) gradient.
TEST_P(AttentionTable, Backward) {
  SCOPED_TRACE(seed_text() + " reproduces these inputs");
  Results got;
  run(true, &got);
  if (IsSkipped()) return;
  expect_all_within_bound(got, true);
}

std::string param_name(const ::testing::TestParamInfo<Param>& info) {
  return info.param.backend.name + "_" + info.param.kase->name();
}

INSTANTIATE_TEST_SUITE_P(Table, AttentionTable, ::testing::ValuesIn(all_params()), param_name);
GTEST_ALLOW_UNINSTANTIATED_PARAMETERIZED_TEST(AttentionTable);  // a build whose only backend is "reference"

// The table is what it claims to be: unique names, and every value of every axis of issue 2 present.
TEST(CaseTable, NamesAreUniqueAndCoverEveryAxis) {
  std::set<std::string> names;
  std::set<DType> dtypes;
  std::set<std::pair<std::int64_t, std::int64_t>> dims, lengths;
  std::set<std::string> masks;
  std::set<std::int64_t> groups;
  bool softcap = false, alibi_h = false, alibi_bh = false, sinks = false, packed = false, padded = false;
  bool deterministic = false;
  bool varlen_empty_q = false, varlen_empty_k = false, empty_rows = false, sinks_with_empty_rows = false;
  for (const Case& c : attention_cases()) {
    EXPECT_TRUE(names.insert(c.name()).second) << "duplicate case name " << c.name();
    dtypes.insert(c.dtype);
    dims.insert({c.dim_qk, c.dim_v});
    if (!c.is_varlen()) lengths.insert({c.seqlen_q, c.seqlen_k});
    const Mask& m = c.mask;
    const std::string align = m.alignment == Alignment::top_left ? "tl" : "br";
    masks.insert(m.is_none() ? "none" : m.is_causal() ? "causal_" + align : "window_" + align);
    if (!m.is_none() && !m.is_causal() && (m.window_left < 0 || m.window_right < 0)) masks.insert("one_sided");
    groups.insert(c.group());
    softcap |= c.softcap > 0;
    alibi_h |= c.alibi == Alibi::per_head;
    alibi_bh |= c.alibi == Alibi::per_batch_head;
    sinks |= c.sinks;
    packed |= c.layout == Layout::packed_qkv;
    padded |= c.layout == Layout::padded;
    deterministic |= c.deterministic;
    for (std::size_t b = 0; b < c.varlen_q.size(); ++b) {
      varlen_empty_q |= c.varlen_q[b] == 0 && c.varlen_k[b] > 0;
      varlen_empty_k |= c.varlen_q[b] > 0 && c.varlen_k[b] == 0;
    }
    const bool rows_empty = !c.is_varlen() && c.seqlen_q > c.seqlen_k && !m.is_none();
    empty_rows |= rows_empty;
    sinks_with_empty_rows |= rows_empty && c.sinks;
  }
  EXPECT_EQ(dtypes, (std::set<DType>{DType::f32, DType::f16, DType::bf16}));
  for (std::pair<std::int64_t, std::int64_t> d :
       {std::pair<std::int64_t, std::int64_t>{32, 32}, {64, 64}, {80, 80}, {96, 96}, {128, 128}, {192, 128},
        {256, 256}, {512, 512}}) {
    EXPECT_TRUE(dims.count(d)) << "no case with head dims " << d.first << "/" << d.second;
  }
  for (std::pair<std::int64_t, std::int64_t> l :
       {std::pair<std::int64_t, std::int64_t>{1, 1}, {17, 17}, {113, 203}, {239, 1}, {1023, 1024}, {1024, 1023},
        {2048, 2048}}) {
    EXPECT_TRUE(lengths.count(l)) << "no case with seqlens " << l.first << "x" << l.second;
  }
  for (const char* m : {"none", "causal_br", "causal_tl", "window_br", "window_tl", "one_sided"}) {
    EXPECT_TRUE(masks.count(m)) << "no case with mask " << m;
  }
  for (std::int64_t g : {1, 2, 3, 8}) EXPECT_TRUE(groups.count(g)) << "no case with GQA group " << g;
  EXPECT_TRUE(softcap && alibi_h && alibi_bh && sinks && packed && padded && deterministic);
  EXPECT_TRUE(varlen_empty_q && varlen_empty_k && empty_rows && sinks_with_empty_rows);
}

}  // namespace
}  // namespace ioattn::test
