// fp8 e4m3 conversions: every code round-trips, and float -> fp8 equals a brute-force nearest-value search (ties to
// the even code, saturation at 448, NaN kept) on ties, subnormals, values past 448 and many random floats.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdint>
#include <limits>
#include <vector>

#include "ioattn/core/convert.hpp"
#include "support/random.hpp"

namespace {

using ioattn::core::float_to_fp8e4m3;
using ioattn::core::fp8e4m3_to_float;

bool is_nan_code(std::uint8_t c) { return (c & 0x7f) == 0x7f; }

// The e4m3 value of a code from its definition, independently of the bit tricks in convert.hpp.
double value_by_definition(std::uint8_t c) {
  const int sign = c & 0x80 ? -1 : 1, exp = (c >> 3) & 0xf, man = c & 0x7;
  const double mag = exp == 0 ? man * std::ldexp(1.0, -9) : (1.0 + man / 8.0) * std::ldexp(1.0, exp - 7);
  return sign * mag;
}

// Nearest finite e4m3 value to x by trying every non-negative code; a tie goes to the even code (mantissa bit 0
// clear); beyond 448 the nearest finite value is 448, which is what saturation gives. The sign is put back last, so
// that -0.0 and tiny negatives give 0x80.
std::uint8_t nearest_by_search(float x) {
  if (std::isinf(x)) return x > 0 ? 0x7e : 0xfe;  // the nearest finite value to an infinity: saturation
  const double a = std::fabs(static_cast<double>(x));
  int best = 0;
  double best_dist = std::numeric_limits<double>::infinity();
  for (int c = 0; c < 0x7f; ++c) {
    const double d = std::fabs(value_by_definition(static_cast<std::uint8_t>(c)) - a);
    if (d < best_dist || (d == best_dist && (c & 1) == 0)) {
      best = c;
      best_dist = d;
    }
  }
  return static_cast<std::uint8_t>(best | (std::signbit(x) ? 0x80 : 0));
}

TEST(Fp8Convert, EveryCodeDecodesByDefinitionAndRoundTrips) {
  int nans = 0;
  for (int c = 0; c < 256; ++c) {
    const auto code = static_cast<std::uint8_t>(c);
    const float f = fp8e4m3_to_float(code);
    if (is_nan_code(code)) {
      EXPECT_TRUE(std::isnan(f)) << "code " << c;
      EXPECT_TRUE(is_nan_code(float_to_fp8e4m3(f))) << "code " << c;
      ++nans;
      continue;
    }
    EXPECT_EQ(static_cast<double>(f), value_by_definition(code)) << "code " << c;
    EXPECT_EQ(std::signbit(f), (c & 0x80) != 0) << "code " << c;
    EXPECT_EQ(float_to_fp8e4m3(f), code) << "code " << c;
  }
  EXPECT_EQ(nans, 2);  // S.1111.111 only: E4M3FN has no infinities
  EXPECT_EQ(fp8e4m3_to_float(0x7e), 448.0f);
  EXPECT_EQ(fp8e4m3_to_float(0x01), std::ldexp(1.0f, -9));
  EXPECT_EQ(fp8e4m3_to_float(0x08), std::ldexp(1.0f, -6));
}

TEST(Fp8Convert, SpecialValues) {
  const float inf = std::numeric_limits<float>::infinity();
  EXPECT_EQ(float_to_fp8e4m3(inf), 0x7e);
  EXPECT_EQ(float_to_fp8e4m3(-inf), 0xfe);
  EXPECT_EQ(float_to_fp8e4m3(1e30f), 0x7e);
  EXPECT_EQ(float_to_fp8e4m3(std::numeric_limits<float>::max()), 0x7e);
  EXPECT_EQ(float_to_fp8e4m3(-500.0f), 0xfe);
  EXPECT_EQ(float_to_fp8e4m3(463.99f), 0x7e);
  EXPECT_TRUE(is_nan_code(float_to_fp8e4m3(std::numeric_limits<float>::quiet_NaN())));
  EXPECT_TRUE(is_nan_code(float_to_fp8e4m3(-std::numeric_limits<float>::quiet_NaN())));
  EXPECT_EQ(float_to_fp8e4m3(0.0f), 0x00);
  EXPECT_EQ(float_to_fp8e4m3(-0.0f), 0x80);
  EXPECT_EQ(float_to_fp8e4m3(std::numeric_limits<float>::denorm_min()), 0x00);
  EXPECT_EQ(float_to_fp8e4m3(std::ldexp(1.0f, -10)), 0x00);                // half the smallest subnormal: tie to 0
  EXPECT_EQ(float_to_fp8e4m3(std::nextafter(std::ldexp(1.0f, -10), 1.0f)), 0x01);
  EXPECT_EQ(float_to_fp8e4m3(3 * std::ldexp(1.0f, -10)), 0x02);           // 1.5 subnormal steps: tie to even 2
  EXPECT_EQ(float_to_fp8e4m3(1.0625f), 0x38);                              // between 1 and 1.125: tie to even 1
  EXPECT_EQ(float_to_fp8e4m3(1.1875f), 0x3a);                              // between 1.125 and 1.25: to 1.25
}

// Every midpoint between neighbouring codes, the values one float ulp either side of it, and each code itself.
TEST(Fp8Convert, MidpointsAndNeighboursMatchSearch) {
  for (int c = 0; c < 0x7e; ++c) {
    const double lo = value_by_definition(static_cast<std::uint8_t>(c));
    const double hi = value_by_definition(static_cast<std::uint8_t>(c + 1));
    const float mid = static_cast<float>((lo + hi) / 2);  // exact: a few significant bits
    for (float x : {mid, std::nextafter(mid, 0.0f), std::nextafter(mid, 1000.0f), static_cast<float>(lo)}) {
      for (float s : {x, -x}) {
        ASSERT_EQ(float_to_fp8e4m3(s), nearest_by_search(s)) << "x = " << s << " (codes " << c << ", " << c + 1 << ")";
      }
    }
  }
}

TEST(Fp8Convert, RandomFloatsMatchSearch) {
  ioattn::test::Rng rng("fp8_convert_random");
  for (int n = 0; n < 200000; ++n) {
    // Log-uniform magnitudes from far below the smallest subnormal to far past 448, both signs.
    const float x = static_cast<float>((rng.uniform(0, 1) < 0.5 ? -1 : 1) * std::exp2(rng.uniform(-14, 12)));
    ASSERT_EQ(float_to_fp8e4m3(x), nearest_by_search(x)) << "x = " << x << "; " << ioattn::test::seed_text();
  }
  for (int n = 0; n < 20000; ++n) {  // random bit patterns: every float class
    const auto bits = static_cast<std::uint32_t>(rng.uniform_int(0, 0xffffffffLL));
    const float x = ioattn::core::bits_to_float(bits);
    if (std::isnan(x)) {
      ASSERT_TRUE(is_nan_code(float_to_fp8e4m3(x)));
    } else {
      ASSERT_EQ(float_to_fp8e4m3(x), nearest_by_search(x)) << "bits " << bits << "; " << ioattn::test::seed_text();
    }
  }
}

}  // namespace
