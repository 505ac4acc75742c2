// attention_forward_fp8 against the fp64 oracle on the dequantized operands: the oracle's inputs are dequantized
// here (fp8_util.cpp), independently of the library's code, and every output element must match bit for bit what
// storing the oracle's result gives (out in fp32, fp16 or bf16; lse in fp32). Outputs are poisoned with NaN first.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdint>
#include <cstring>
#include <sstream>
#include <string>
#include <vector>

#include "fp8/fp8_util.hpp"
#include "ioattn/core/convert.hpp"
#include "ioattn/error.hpp"
#include "support/random.hpp"

namespace ioattn::fp8test {
namespace {

using test::Rng;

struct Case {
  std::string name;
  std::int64_t batch, seqlen_q, seqlen_k, heads_q, heads_kv, dim_qk, dim_v, block_rows;
  Mask mask;
  DType out_dtype = DType::f32;
  bool lse = true;
  float softcap = 0.0f;
  int alibi = 0;  // 0 none, 1 [heads_q], 2 [batch, heads_q]
  bool sinks = false;
  bool random_codes = false;  // codes and descales drawn directly, not through quantize_fp8
  bool rotate = false;
  bool padded_q = false;  // q rows strided with NaN codes in the gaps
};

void PrintTo(const Case& c, std::ostream* os) { *os << c.name; }

std::vector<Case> cases() {
  const Mask none = Mask::none(), causal = Mask::causal(), causal_tl = Mask::causal(Alignment::top_left);
  const Mask window = Mask::window(7, 3);
  std::vector<Case> c;
  c.push_back({"one_row", 1, 1, 1, 1, 1, 16, 16, 0, none});
  c.push_back({"no_keys", 2, 5, 0, 2, 1, 16, 16, 16, none});  // every row sees nothing: out 0, lse -inf
  c.push_back({"q17_k17_causal", 2, 17, 17, 2, 2, 32, 32, 16, causal});
  c.push_back({"q113_k203_none_bf16", 1, 113, 203, 4, 2, 64, 64, 16, none, DType::bf16});
  c.push_back({"q113_k203_causal_fp16", 1, 113, 203, 4, 2, 64, 64, 64, causal, DType::f16});
  c.push_back({"q203_k113_causal_tl", 1, 203, 113, 2, 1, 32, 48, 32, causal_tl});
  c.push_back({"q64_k80_window_nolse", 2, 64, 80, 4, 4, 128, 128, 0, window, DType::f32, false});
  Case s{"softcap_alibi_sinks_gqa4", 2, 33, 47, 4, 1, 64, 32, 16, causal};
  s.softcap = 20.0f;
  s.alibi = 2;
  s.sinks = true;
  c.push_back(s);
  Case a{"alibi_heads_random_codes", 1, 40, 40, 2, 2, 16, 16, 16, none};
  a.alibi = 1;
  a.random_codes = true;
  c.push_back(a);
  Case r{"rotated_blocks_padded_q", 2, 50, 70, 4, 2, 64, 64, 16, causal, DType::bf16};
  r.rotate = true;
  r.padded_q = true;
  c.push_back(r);
  Case z{"random_codes_per_head_fp16", 1, 31, 29, 3, 1, 8, 24, 0, window, DType::f16};
  z.random_codes = true;
  c.push_back(z);
  return c;
}

Fp8Operand make_operand(Rng& rng, const Case& c, std::int64_t rows, std::int64_t heads, std::int64_t dim,
                        bool rotate) {
  if (c.random_codes) {
    Fp8Operand op(c.batch, rows, heads, dim, c.block_rows);
    for (auto& code : op.codes) {
      do code = static_cast<std::uint8_t>(rng.uniform_int(0, 255));
      while ((code & 0x7f) == 0x7f || std::fabs(core::fp8e4m3_to_float(code)) > 64.0f);
    }
    for (auto& d : op.descale) d = static_cast<float>(rng.uniform(0.001, 0.05));
    return op;
  }
  std::vector<float> x(static_cast<std::size_t>(c.batch * rows * heads * dim));
  for (auto& e : x) e = static_cast<float>(rng.normal());
  return quantize(x, c.batch, rows, heads, dim, c.block_rows, rotate);
}

// Poisoned output storage of any float dtype, read back as doubles.
struct OutBuffer {
  DType dtype;
  std::vector<std::uint8_t> bytes;
  OutBuffer(DType d, std::int64_t n) : dtype(d), bytes(static_cast<std::size_t>(n) * dtype_size(d)) { poison(); }
  void poison() {
    const std::size_t n = bytes.size() / dtype_size(dtype);
    for (std::size_t e = 0; e < n; ++e) {
      if (dtype == DType::f32) {
        const float nan = std::nanf("");
        std::memcpy(&bytes[e * 4], &nan, 4);
      } else {
        const std::uint16_t nan = dtype == DType::bf16 ? 0x7fc0 : 0x7e00;
        std::memcpy(&bytes[e * 2], &nan, 2);
      }
    }
  }
  double get(std::size_t e) const {
    if (dtype == DType::f32) {
      float f;
      std::memcpy(&f, &bytes[e * 4], 4);
      return f;
    }
    std::uint16_t h;
    std::memcpy(&h, &bytes[e * 2], 2);
    return dtype == DType::bf16 ? core::bf16_to_float(h) : core::fp16_to_float(h);
  }
};

// Mismatches between stored outputs and the oracle's values as the library would store them; "" when none.
std::string compare(const OutBuffer& out, const std::vector<float>* lse, const F64Result& want,
                    const detail::Problem& p) {
  std::ostringstream why;
  std::int64_t bad = 0;
  for (std::size_t e = 0; e < want.out.size(); ++e) {
    const double expect = stored_as(out.dtype, want.out[e]), got = out.get(e);
    if (!(got == expect) && bad++ == 0) why << "out element " << e << ": got " << got << ", want " << expect << "; ";
  }
  if (lse) {
    // lse is [batch, heads_q, seqlen_q]; the oracle's is canonical [batch * seqlen_q, heads_q].
    for (std::int64_t b = 0; b < p.batch; ++b) {
      for (std::int64_t h = 0; h < p.heads_q; ++h) {
        for (std::int64_t i = 0; i < p.seqlen_q; ++i) {
          const float expect = static_cast<float>(want.lse[(b * p.seqlen_q + i) * p.heads_q + h]);
          const float got = (*lse)[(b * p.heads_q + h) * p.seqlen_q + i];
          if (!(got == expect) && bad++ == 0) {
            why << "lse (" << b << ", " << h << ", " << i << "): got " << got << ", want " << expect << "; ";
          }
        }
      }
    }
  }
  if (bad) why << bad << " mismatches";
  return why.str();
}

struct CaseRun {
  Case c;
  Fp8Operand q, k, v;
  std::vector<float> alibi, sinks;
  AttentionParams params;
  OutBuffer out;
  std::vector<float> lse;
  detail::Problem problem;
};

CaseRun run_case(const Case& c) {
  Rng rng("fp8_forward_" + c.name);
  CaseRun r{c,
        make_operand(rng, c, c.seqlen_q, c.heads_q, c.dim_qk, c.rotate),
        make_operand(rng, c, c.seqlen_k, c.heads_kv, c.dim_qk, c.rotate),
        make_operand(rng, c, c.seqlen_k, c.heads_kv, c.dim_v, false),
        {},
        {},
        {},
        OutBuffer(c.out_dtype, c.batch * c.seqlen_q * c.heads_q * c.dim_v),
        std::vector<float>(static_cast<std::size_t>(c.batch * c.heads_q * c.seqlen_q), std::nanf("")),
        {}};
  r.params.mask = c.mask;
  r.params.softcap = c.softcap;
  if (c.alibi) {
    r.alibi.resize(static_cast<std::size_t>((c.alibi == 2 ? c.batch : 1) * c.heads_q));
    for (auto& s : r.alibi) s = static_cast<float>(rng.uniform(0.01, 0.5));
    r.params.alibi_slopes = c.alibi == 2
        ? TensorView::contiguous(r.alibi.data(), DType::f32, {c.batch, c.heads_q})
        : TensorView::contiguous(r.alibi.data(), DType::f32, {c.heads_q});
  }
  if (c.sinks) {
    r.sinks.resize(static_cast<std::size_t>(c.heads_q));
    for (auto& s : r.sinks) s = static_cast<float>(rng.normal(0.0, 2.0));
    r.params.sinks = TensorView::contiguous(r.sinks.data(), DType::f32, {c.heads_q});
  }
  r.problem = dense_problem(c.batch, c.seqlen_q, c.seqlen_k, c.heads_q, c.heads_kv, c.dim_qk, c.dim_v, r.params);

  Fp8ForwardArgs args;
  std::vector<std::uint8_t> padded;
  args.q = r.q.view();
  if (c.padded_q) {
    const std::int64_t row = c.dim_qk + 5;  // gaps of NaN codes between heads' rows
    padded.assign(static_cast<std::size_t>(c.batch * c.seqlen_q * c.heads_q * row), 0x7f);
    for (std::int64_t t = 0; t < c.batch * c.seqlen_q * c.heads_q; ++t) {
      std::memcpy(&padded[t * row], &r.q.codes[t * c.dim_qk], static_cast<std::size_t>(c.dim_qk));
    }
    args.q = TensorView::strided(padded.data(), DType::f8e4m3, {c.batch, c.seqlen_q, c.heads_q, c.dim_qk},
                                 {c.seqlen_q * c.heads_q * row, c.heads_q * row, row, 1});
  }
  args.k = r.k.view();
  args.v = r.v.view();
  args.scales = {r.q.descale_view(), r.k.descale_view(), r.v.descale_view(), c.block_rows};
  args.out = TensorView::contiguous(r.out.bytes.data(), c.out_dtype, {c.batch, c.seqlen_q, c.heads_q, c.dim_v});
  if (c.lse) args.lse = TensorView::contiguous(r.lse.data(), DType::f32, {c.batch, c.heads_q, c.seqlen_q});
  attention_forward_fp8(args, r.params);
  return r;
}

class Fp8Forward : public ::testing::TestWithParam<Case> {};

TEST_P(Fp8Forward, EqualsOracleOnDequantizedOperandsBitwise) {
  const CaseRun r = run_case(GetParam());
  const F64Result want = forward_f64(r.problem, r.q.dequantize(), r.k.dequantize(), r.v.dequantize());
  EXPECT_EQ(compare(r.out, r.c.lse ? &r.lse : nullptr, want, r.problem), "") << test::seed_text();
  if (!r.c.lse) {
    for (float x : r.lse) ASSERT_TRUE(std::isnan(x)) << "lse written though not given";
  }
}

INSTANTIATE_TEST_SUITE_P(Cases, Fp8Forward, ::testing::ValuesIn(cases()),
                         [](const ::testing::TestParamInfo<Case>& info) { return info.param.name; });

// The check above fires on a wrong descale: the same run judged with one block's descale off by one ulp (as a
// backend applying the wrong block's factor, or rounding the product in fp32, would be) fails it.
TEST(Fp8ForwardCheck, FiresOnOneUlpDescaleError) {
  Case c = cases()[3];  // q113_k203_causal_fp16 has per-block descales
  c.out_dtype = DType::f32;
  const CaseRun r = run_case(c);
  for (int which = 0; which < 3; ++which) {
    Fp8Operand q = r.q, k = r.k, v = r.v;
    Fp8Operand& hit = which == 0 ? q : which == 1 ? k : v;
    hit.descale[1] = std::nextafter(hit.descale[1], 1.0f);
    const F64Result want = forward_f64(r.problem, q.dequantize(), k.dequantize(), v.dequantize());
    EXPECT_NE(compare(r.out, &r.lse, want, r.problem), "") << "operand " << which;
  }
}

// The FP8 forward equals the dense API's reference backend run on the dequantized operands in fp32. Descales are
// powers of two here, so that the dequantized values are exact in fp32 and both calls see the same numbers.
TEST(Fp8Forward, EqualsDenseReferenceOnDequantizedFp32) {
  for (const Mask mask : {Mask::none(), Mask::causal(), Mask::causal(Alignment::top_left), Mask::window(5, 0)}) {
    Rng rng("fp8_dense_equal");
    const std::int64_t b = 2, sq = 37, sk = 45, hq = 4, hkv = 2, d = 32, block = 16;
    Fp8Operand ops[3] = {Fp8Operand(b, sq, hq, d, block), Fp8Operand(b, sk, hkv, d, block),
                         Fp8Operand(b, sk, hkv, d, block)};
    std::vector<float> dense[3];
    for (auto& op : ops) {
      for (auto& code : op.codes) {
        do code = static_cast<std::uint8_t>(rng.uniform_int(0, 255));
        while ((code & 0x7f) == 0x7f);
      }
      for (auto& s : op.descale) s = std::ldexp(1.0f, static_cast<int>(rng.uniform_int(-12, -6)));
    }
    for (int o = 0; o < 3; ++o) {
      const std::vector<double> x = ops[o].dequantize();
      dense[o].assign(x.begin(), x.end());  // exact: code x 2^n
    }
    AttentionParams params;
    params.mask = mask;
    params.impl = "reference";
    std::vector<float> out_fp8(static_cast<std::size_t>(b * sq * hq * d), std::nanf(""));
    std::vector<float> out_dense(out_fp8.size(), std::nanf(""));
    std::vector<float> lse_fp8(static_cast<std::size_t>(b * hq * sq), std::nanf(""));
    std::vector<float> lse_dense(lse_fp8.size(), std::nanf(""));
    Fp8ForwardArgs f;
    f.q = ops[0].view();
    f.k = ops[1].view();
    f.v = ops[2].view();
    f.scales = {ops[0].descale_view(), ops[1].descale_view(), ops[2].descale_view(), block};
    f.out = TensorView::contiguous(out_fp8.data(), DType::f32, {b, sq, hq, d});
    f.lse = TensorView::contiguous(lse_fp8.data(), DType::f32, {b, hq, sq});
    attention_forward_fp8(f, params);
    ForwardArgs a;
    a.q = TensorView::contiguous(dense[0].data(), DType::f32, {b, sq, hq, d});
    a.k = TensorView::contiguous(dense[1].data(), DType::f32, {b, sk, hkv, d});
    a.v = TensorView::contiguous(dense[2].data(), DType::f32, {b, sk, hkv, d});
    a.out = TensorView::contiguous(out_dense.data(), DType::f32, {b, sq, hq, d});
    a.lse = TensorView::contiguous(lse_dense.data(), DType::f32, {b, hq, sq});
    attention_forward(a, params);
    ASSERT_EQ(std::memcmp(out_fp8.data(), out_dense.data(), out_fp8.size() * 4), 0) << test::seed_text();
    ASSERT_EQ(std::memcmp(lse_fp8.data(), lse_dense.data(), lse_fp8.size() * 4), 0) << test::seed_text();
    for (float x : out_fp8) ASSERT_FALSE(std::isnan(x));
  }
}

}  // namespace
}  // namespace ioattn::fp8test
