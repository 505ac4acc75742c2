// core/convert.hpp: fp16 and bf16 decode every 16-bit pattern to the value the format defines, encode it back to the
// same pattern, and encode random floats to the nearest 16-bit value (ties to even), checked against a rounding done
// by search in double over the table of every representable value.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <vector>

#include "ioattn/core/convert.hpp"
#include "support/random.hpp"

namespace {

using namespace ioattn::core;

struct Format {
  int exp_bits;
  int man_bits;
  float (*decode)(std::uint16_t);
  std::uint16_t (*encode)(float);
  const char* name;
};

const Format kFp16{5, 10, fp16_to_float, float_to_fp16, "fp16"};
const Format kBf16{8, 7, bf16_to_float, float_to_bf16, "bf16"};

std::uint16_t exp_mask(const Format& f) { return static_cast<std::uint16_t>(((1u << f.exp_bits) - 1u) << f.man_bits); }
std::uint16_t man_mask(const Format& f) { return static_cast<std::uint16_t>((1u << f.man_bits) - 1u); }

bool is_nan_pattern(const Format& f, std::uint16_t h) {
  return (h & exp_mask(f)) == exp_mask(f) && (h & man_mask(f)) != 0;
}

// The magnitude a non-negative pattern stands for, from the format's definition. The infinity pattern is given the
// value the next binade would start at, so it takes part in rounding as "the value after the largest finite one".
double magnitude(const Format& f, std::uint16_t h) {
  const int bias = (1 << (f.exp_bits - 1)) - 1;
  const int e = (h & exp_mask(f)) >> f.man_bits;
  const double m = h & man_mask(f);
  if (e == 0) return std::ldexp(m, 1 - bias - f.man_bits);  // zero and subnormals
  return std::ldexp(1.0 + m / (1 << f.man_bits), e - bias);
}

TEST(Convert, EveryPatternDecodesToItsValueAndRoundTrips) {
  for (const Format& f : {kFp16, kBf16}) {
    for (std::uint32_t bits = 0; bits <= 0xffffu; ++bits) {
      const auto h = static_cast<std::uint16_t>(bits);
      const float x = f.decode(h);
      const bool negative = (h & 0x8000u) != 0;
      const auto abs_h = static_cast<std::uint16_t>(h & 0x7fffu);
      if (is_nan_pattern(f, abs_h)) {
        ASSERT_TRUE(std::isnan(x)) << f.name << " pattern " << bits;
        ASSERT_TRUE(is_nan_pattern(f, static_cast<std::uint16_t>(f.encode(x) & 0x7fffu))) << f.name << " " << bits;
        continue;
      }
      if (abs_h == exp_mask(f)) {
        ASSERT_TRUE(std::isinf(x)) << f.name << " pattern " << bits;
      } else {
        ASSERT_EQ(static_cast<double>(std::fabs(x)), magnitude(f, abs_h)) << f.name << " pattern " << bits;
      }
      ASSERT_EQ(std::signbit(x), negative) << f.name << " pattern " << bits;
      ASSERT_EQ(f.encode(x), h) << f.name << " pattern " << bits;
    }
  }
}

// Round-to-nearest-even by search: the two table neighbours of |x|, the nearer wins, a tie goes to the even pattern.
std::uint16_t round_by_search(const Format& f, const std::vector<double>& table, float x) {
  const double ax = std::fabs(static_cast<double>(x));
  const auto sign = static_cast<std::uint16_t>(std::signbit(x) ? 0x8000u : 0u);
  if (ax >= table.back()) return static_cast<std::uint16_t>(sign | exp_mask(f));  // at or past "inf": inf
  const auto hi_it = std::lower_bound(table.begin(), table.end(), ax);
  const auto hi = static_cast<std::uint16_t>(hi_it - table.begin());
  if (*hi_it == ax) return static_cast<std::uint16_t>(sign | hi);
  const auto lo = static_cast<std::uint16_t>(hi - 1);
  const double d_lo = ax - table[lo], d_hi = table[hi] - ax;  // exact: all values involved fit in a double
  std::uint16_t pick;
  if (d_lo < d_hi) pick = lo;
  else if (d_hi < d_lo) pick = hi;
  else pick = (lo & 1u) == 0 ? lo : hi;
  return static_cast<std::uint16_t>(sign | pick);
}

std::vector<double> magnitude_table(const Format& f) {
  std::vector<double> table;
  for (std::uint16_t h = 0; h <= exp_mask(f); ++h) table.push_back(magnitude(f, h));  // up to and including inf
  return table;
}

void check_rounding(const Format& f, float x, const std::vector<double>& table) {
  const std::uint16_t want = round_by_search(f, table, x);
  ASSERT_EQ(f.encode(x), want) << f.name << " of " << x << " (bits " << float_to_bits(x) << ") "
                               << ioattn::test::seed_text();
}

TEST(Convert, RandomFloatsRoundToNearestEven) {
  for (const Format& f : {kFp16, kBf16}) {
    const std::vector<double> table = magnitude_table(f);
    ioattn::test::Rng rng(std::string("Convert.Random.") + f.name);
    const int bias = (1 << (f.exp_bits - 1)) - 1;
    for (int trial = 0; trial < 300000; ++trial) {
      float x;
      if (trial % 2 == 0) {
        // Any float bit pattern (NaN aside): covers float subnormals, huge values, and everything between.
        x = bits_to_float(static_cast<std::uint32_t>(rng.uniform_int(0, 0xffffffffll)));
        if (std::isnan(x)) continue;
      } else {
        // Concentrated on the format's own range, subnormals and overflow edge included.
        const int e = static_cast<int>(rng.uniform_int(-bias - f.man_bits - 2, bias + 2));
        x = static_cast<float>(std::ldexp(rng.uniform(1.0, 2.0), e) * (rng.uniform_int(0, 1) ? -1.0 : 1.0));
      }
      check_rounding(f, x, table);
    }
  }
}

TEST(Convert, ExactMidpointsRoundToEven) {
  // Every midpoint between neighbouring values (and between the largest finite value and "inf") is a float; this is
  // where ties-to-even and the overflow threshold are decided.
  for (const Format& f : {kFp16, kBf16}) {
    const std::vector<double> table = magnitude_table(f);
    for (std::size_t i = 0; i + 1 < table.size(); ++i) {
      const double mid = 0.5 * (table[i] + table[i + 1]);
      const auto x = static_cast<float>(mid);
      ASSERT_EQ(static_cast<double>(x), mid) << f.name << " midpoint " << i;
      const std::uint16_t even = (i & 1u) == 0 ? static_cast<std::uint16_t>(i) : static_cast<std::uint16_t>(i + 1);
      ASSERT_EQ(f.encode(x), even) << f.name << " midpoint after pattern " << i;
      ASSERT_EQ(f.encode(-x), static_cast<std::uint16_t>(0x8000u | even)) << f.name << " -midpoint " << i;
      // Just off the midpoint, the nearer neighbour wins whatever its parity.
      ASSERT_EQ(f.encode(std::nextafter(x, 0.0f)), static_cast<std::uint16_t>(i)) << f.name << " below mid " << i;
      const float above = std::nextafter(x, std::numeric_limits<float>::infinity());
      ASSERT_EQ(f.encode(above), static_cast<std::uint16_t>(i + 1)) << f.name << " above mid " << i;
    }
  }
}

TEST(Convert, SpecialValues) {
  const float inf = std::numeric_limits<float>::infinity();
  const float nan = std::numeric_limits<float>::quiet_NaN();
  EXPECT_EQ(float_to_fp16(inf), 0x7c00u);
  EXPECT_EQ(float_to_fp16(-inf), 0xfc00u);
  EXPECT_EQ(float_to_bf16(inf), 0x7f80u);
  EXPECT_EQ(float_to_bf16(-inf), 0xff80u);
  EXPECT_TRUE(std::isnan(fp16_to_float(float_to_fp16(nan))));
  EXPECT_TRUE(std::isnan(bf16_to_float(float_to_bf16(nan))));
  EXPECT_TRUE(std::isnan(bf16_to_float(float_to_bf16(-nan))));
  // A NaN whose payload sits only in the low bits must not truncate to infinity.
  EXPECT_TRUE(std::isnan(bf16_to_float(float_to_bf16(bits_to_float(0x7f800001u)))));
  EXPECT_TRUE(std::isnan(fp16_to_float(float_to_fp16(bits_to_float(0x7f800001u)))));
  EXPECT_EQ(float_to_fp16(-0.0f), 0x8000u);
  EXPECT_EQ(float_to_bf16(-0.0f), 0x8000u);
  EXPECT_EQ(float_to_fp16(65504.0f), 0x7bffu);
  EXPECT_EQ(float_to_fp16(65519.99f), 0x7bffu);
  EXPECT_EQ(float_to_fp16(65520.0f), 0x7c00u);     // the tie past the largest finite value goes to inf
  const float tiny = std::ldexp(1.0f, -24);  // smallest fp16 subnormal
  EXPECT_EQ(float_to_fp16(tiny), 0x0001u);
  EXPECT_EQ(float_to_fp16(tiny / 2), 0x0000u);                       // half of it: tie to even (zero)
  EXPECT_EQ(float_to_fp16(std::nextafter(tiny / 2, 1.0f)), 0x0001u);  // just above half: up
  EXPECT_EQ(float_to_fp16(tiny * 1.5f), 0x0002u);                     // 1.5 ulp: tie to even (2)
  EXPECT_EQ(float_to_bf16(bits_to_float(0x00000001u)), 0x0000u);  // float's smallest subnormal underflows bf16
  EXPECT_EQ(float_to_bf16(bits_to_float(0x00010000u)), 0x0001u);  // bf16's smallest subnormal is exact
  EXPECT_EQ(fp16_to_float(0x3c00u), 1.0f);
  EXPECT_EQ(bf16_to_float(0x3f80u), 1.0f);
}

}  // namespace
