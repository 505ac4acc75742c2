// quantize_fp8: each group's descale maps its largest |value| to 448 and nothing saturates; codes are the nearest
// e4m3 values of value / descale; blocks take their own rows; the Hadamard rotation is orthogonal (scores kept).
#include <gtest/gtest.h>

#include <cmath>
#include <cstdint>
#include <vector>

#include "cpu/fp8.hpp"
#include "fp8/fp8_util.hpp"
#include "ioattn/core/convert.hpp"
#include "ioattn/error.hpp"
#include "support/random.hpp"

namespace ioattn::fp8test {
namespace {

using test::Rng;

std::vector<float> normal_values(Rng& rng, std::size_t n, double stddev = 1.0) {
  std::vector<float> x(n);
  for (auto& e : x) e = static_cast<float>(rng.normal(0.0, stddev));
  return x;
}

// Checks every group of a quantized operand against the values it was made from (already rotated if it was).
void check_groups(const Fp8Operand& op, const std::vector<float>& values) {
  for (std::int64_t b = 0; b < op.batch; ++b) {
    for (std::int64_t h = 0; h < op.heads; ++h) {
      for (std::int64_t blk = 0; blk < op.blocks(); ++blk) {
        const std::int64_t first = blk * (op.block_rows ? op.block_rows : op.rows);
        const std::int64_t last = op.block_rows ? std::min(first + op.block_rows, op.rows) : op.rows;
        float amax = 0.0f;
        for (std::int64_t i = first; i < last; ++i) {
          for (std::int64_t c = 0; c < op.dim; ++c) {
            amax = std::max(amax, std::fabs(values[((b * op.rows + i) * op.heads + h) * op.dim + c]));
          }
        }
        const float descale = op.descale_at(b, h, first);
        if (amax == 0.0f) {
          ASSERT_EQ(descale, 1.0f);
        } else {
          ASSERT_EQ(descale, amax / 448.0f) << "b " << b << " h " << h << " block " << blk;
        }
        bool hit_448 = amax == 0.0f;
        for (std::int64_t i = first; i < last; ++i) {
          for (std::int64_t c = 0; c < op.dim; ++c) {
            const std::size_t e = static_cast<std::size_t>(((b * op.rows + i) * op.heads + h) * op.dim + c);
            const double scaled = static_cast<double>(values[e]) / descale;
            // Saturation never needed: every scaled value is within a rounding of 448.
            ASSERT_LE(std::fabs(scaled), 448.0 * (1 + std::ldexp(1.0, -22))) << "element " << e;
            const float got = core::fp8e4m3_to_float(op.codes[e]);
            // Nearest e4m3 value: within half a step (2^-4 relative for normals, 2^-10 absolute below 2^-6).
            const double step = std::fabs(scaled) < std::ldexp(1.0, -6)
                                    ? std::ldexp(1.0, -9)
                                    : std::ldexp(1.0, static_cast<int>(std::floor(std::log2(std::fabs(scaled)))) - 3);
            ASSERT_LE(std::fabs(got - scaled), step / 2 * (1 + 1e-6)) << "element " << e << " scaled " << scaled;
            if (std::fabs(got) == 448.0f) hit_448 = true;
          }
        }
        EXPECT_TRUE(hit_448) << "the largest value of group (" << b << ", " << h << ", " << blk << ") maps to 448";
      }
    }
  }
}

TEST(Fp8Quantize, PerHeadScales) {
  Rng rng("fp8_quantize_per_head");
  const std::int64_t b = 2, s = 37, h = 3, d = 24;
  std::vector<float> x = normal_values(rng, static_cast<std::size_t>(b * s * h * d), 3.0);
  for (std::int64_t e = 0; e < s * h * d; e += h * d) x[e + d] = 0.0f;  // nothing special: zeros inside a group
  check_groups(quantize(x, b, s, h, d, 0, false), x);
}

TEST(Fp8Quantize, BlockScalesWithPartialLastBlock) {
  Rng rng("fp8_quantize_blocks");
  const std::int64_t b = 2, s = 50, h = 2, d = 16;
  std::vector<float> x = normal_values(rng, static_cast<std::size_t>(b * s * h * d));
  // Blocks of very different magnitudes, so a block taking another's descale would be caught.
  for (std::int64_t i = 16; i < 32; ++i) {
    for (std::int64_t c = 0; c < h * d; ++c) x[(1 * s + i) * h * d + c] *= 1000.0f;
  }
  for (std::int64_t block : {16, 32, 64}) check_groups(quantize(x, b, s, h, d, block, false), x);
}

TEST(Fp8Quantize, ZeroGroupsTinyValuesAndOtherInputDtypes) {
  const std::int64_t b = 1, s = 20, h = 2, d = 8;
  std::vector<float> x(static_cast<std::size_t>(b * s * h * d), 0.0f);
  for (std::int64_t i = 0; i < s; ++i) x[(i * h + 1) * d + 3] = 1e-41f * static_cast<float>(i + 1);  // subnormal
  const Fp8Operand op = quantize(x, b, s, h, d, 16, false);
  EXPECT_EQ(op.descale_at(0, 0, 0), 1.0f);
  EXPECT_EQ(op.descale_at(0, 0, 17), 1.0f);
  for (std::int64_t i = 0; i < s; ++i) EXPECT_EQ(op.codes[(i * h + 0) * d], 0);
  // Subnormal inputs: the descale floors at the smallest normal fp32, so nothing divides by a subnormal.
  EXPECT_EQ(op.descale_at(0, 1, 0), 1.1754943508222875e-38f);
  for (std::uint8_t code : op.codes) EXPECT_NE(code & 0x7f, 0x7f);

  // bf16 and fp16 inputs: the same codes as their values given in fp32.
  Rng rng("fp8_quantize_dtypes");
  std::vector<float> y = normal_values(rng, x.size());
  std::vector<std::uint16_t> y16(y.size()), ybf(y.size());
  for (std::size_t e = 0; e < y.size(); ++e) {
    y16[e] = core::float_to_fp16(y[e]);
    ybf[e] = core::float_to_bf16(y[e]);
  }
  for (DType dt : {DType::f16, DType::bf16}) {
    std::vector<float> widened(y.size());
    for (std::size_t e = 0; e < y.size(); ++e) {
      widened[e] = dt == DType::f16 ? core::fp16_to_float(y16[e]) : core::bf16_to_float(ybf[e]);
    }
    const Fp8Operand want = quantize(widened, b, s, h, d, 0, false);
    Fp8Operand got(b, s, h, d, 0);
    quantize_fp8(TensorView::contiguous(dt == DType::f16 ? y16.data() : ybf.data(), dt, {b, s, h, d}), got.view(),
                 got.descale_view(), 0, false);
    EXPECT_EQ(got.codes, want.codes) << to_string(dt);
    EXPECT_EQ(got.descale, want.descale) << to_string(dt);
  }
}

// Strided views (padded rows of input and output, a padded descale) give the same codes and descales as contiguous
// ones, and the padding is neither read (NaN there) nor written.
TEST(Fp8Quantize, StridedViews) {
  Rng rng("fp8_quantize_strided");
  const std::int64_t b = 2, s = 33, h = 3, d = 32, block = 16, blocks = 3, pad = 7;
  const std::vector<float> x = normal_values(rng, static_cast<std::size_t>(b * s * h * d));
  const Fp8Operand want = quantize(x, b, s, h, d, block, true);
  std::vector<float> in(static_cast<std::size_t>(b * s * h * (d + pad)), std::nanf(""));
  for (std::int64_t t = 0; t < b * s * h; ++t) {
    std::copy(x.begin() + t * d, x.begin() + (t + 1) * d, in.begin() + t * (d + pad));
  }
  std::vector<std::uint8_t> codes(in.size(), 0x5a);
  std::vector<float> descale(static_cast<std::size_t>(b * h * (blocks + 1)), -1.0f);
  const std::initializer_list<std::int64_t> shape = {b, s, h, d};
  const std::initializer_list<std::int64_t> stride = {s * h * (d + pad), h * (d + pad), d + pad, 1};
  quantize_fp8(TensorView::strided(in.data(), DType::f32, shape, stride),
               TensorView::strided(codes.data(), DType::f8e4m3, shape, stride),
               TensorView::strided(descale.data(), DType::f32, {b, h, blocks}, {h * (blocks + 1), blocks + 1, 1}),
               block, true);
  for (std::int64_t t = 0; t < b * s * h; ++t) {
    for (std::int64_t c = 0; c < d + pad; ++c) {
      const std::uint8_t got = codes[static_cast<std::size_t>(t * (d + pad) + c)];
      ASSERT_EQ(got, c < d ? want.codes[static_cast<std::size_t>(t * d + c)] : 0x5a) << "row " << t << " col " << c;
    }
  }
  for (std::int64_t g = 0; g < b * h; ++g) {
    for (std::int64_t blk = 0; blk <= blocks; ++blk) {
      const float got = descale[static_cast<std::size_t>(g * (blocks + 1) + blk)];
      ASSERT_EQ(got, blk < blocks ? want.descale[static_cast<std::size_t>(g * blocks + blk)] : -1.0f);
    }
  }
}

// H / sqrt(d) by its definition: entry (i, j) = (-1)^popcount(i & j) / sqrt(d).
TEST(Fp8Hadamard, MatchesDefinitionAndIsAnInvolution) {
  for (std::int64_t d : {1, 2, 8, 64, 256}) {
    for (std::int64_t j = 0; j < d; ++j) {
      std::vector<double> e(static_cast<std::size_t>(d), 0.0);
      e[j] = 1.0;
      cpu::fp8::hadamard_rotate(e.data(), d);
      for (std::int64_t i = 0; i < d; ++i) {
        const double want = (__builtin_popcountll(static_cast<unsigned long long>(i & j)) % 2 ? -1.0 : 1.0) /
                            std::sqrt(static_cast<double>(d));
        ASSERT_NEAR(e[i], want, 1e-15) << "d " << d << " (" << i << ", " << j << ")";
      }
      cpu::fp8::hadamard_rotate(e.data(), d);  // symmetric and orthogonal: applying it twice is the identity
      for (std::int64_t i = 0; i < d; ++i) ASSERT_NEAR(e[i], i == j ? 1.0 : 0.0, 1e-14);
    }
  }
}

// Rotating q and k keeps every score: in fp64 to 1e-13, and after rounding the rotated values to fp32 (what the
// quantizer holds before quantizing) to fp32 rounding, |<q', k'> - <q, k>| <= 2^-23 * (|q| |k|) * 2.
TEST(Fp8Hadamard, KeepsScores) {
  Rng rng("fp8_hadamard_scores");
  const std::int64_t d = 128;
  for (int trial = 0; trial < 200; ++trial) {
    std::vector<double> q(d), k(d);
    for (auto& e : q) e = static_cast<float>(rng.normal());
    for (auto& e : k) e = static_cast<float>(rng.normal());
    if (trial % 2) q[static_cast<std::size_t>(rng.uniform_int(0, d - 1))] = 100.0f;  // an outlier
    double dot = 0, nq = 0, nk = 0;
    for (std::int64_t c = 0; c < d; ++c) dot += q[c] * k[c], nq += q[c] * q[c], nk += k[c] * k[c];
    std::vector<double> qr = q, kr = k;
    cpu::fp8::hadamard_rotate(qr.data(), d);
    cpu::fp8::hadamard_rotate(kr.data(), d);
    double dot_r = 0, dot_r32 = 0;
    for (std::int64_t c = 0; c < d; ++c) {
      dot_r += qr[c] * kr[c];
      dot_r32 += static_cast<double>(static_cast<float>(qr[c])) * static_cast<float>(kr[c]);
    }
    const double norms = std::sqrt(nq * nk);
    ASSERT_NEAR(dot_r, dot, 1e-13 * norms);
    ASSERT_NEAR(dot_r32, dot, std::ldexp(2.0, -23) * norms);
  }
}

// With rotate, the codes are the quantization of the rotated values (checked group by group), and an outlier's
// group gets a smaller descale than without rotation.
TEST(Fp8Quantize, RotatedQuantizesTheRotatedValuesAndShrinksOutlierScales) {
  Rng rng("fp8_quantize_rotate");
  const std::int64_t b = 1, s = 40, h = 2, d = 64;
  std::vector<float> x = normal_values(rng, static_cast<std::size_t>(b * s * h * d));
  x[(5 * h + 1) * d + 9] = 60.0f;  // one outlier in head 1
  std::vector<float> rotated(x.size());
  for (std::int64_t t = 0; t < b * s * h; ++t) {
    std::vector<double> row(x.begin() + t * d, x.begin() + (t + 1) * d);
    cpu::fp8::hadamard_rotate(row.data(), d);
    for (std::int64_t c = 0; c < d; ++c) rotated[t * d + c] = static_cast<float>(row[c]);
  }
  const Fp8Operand op = quantize(x, b, s, h, d, 16, true);
  check_groups(op, rotated);
  const Fp8Operand plain = quantize(x, b, s, h, d, 16, false);
  EXPECT_LT(op.descale_at(0, 1, 5) * 4, plain.descale_at(0, 1, 5));  // 60 spread over 64 coordinates
}

}  // namespace
}  // namespace ioattn::fp8test
