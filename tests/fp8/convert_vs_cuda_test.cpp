// core::float_to_fp8e4m3 and fp8e4m3_to_float against the CUDA toolkit's own conversions (cuda_fp8.h,
// __nv_cvt_float_to_fp8 with __NV_SATFINITE and __NV_E4M3: the rounding of the cvt.rn.satfinite.e4m3x2.f32 instruction
// a kernel would use, here through the header's host emulation, so no GPU is needed). Every float whose magnitude is
// in [2^-11, 2^10) (all that round to something other than 0 or +-448) is compared, and a sparse sweep covers the
// rest. NaN: the toolkit returns one canonical NaN code, ours keeps the sign; both must be NaN.
#include <gtest/gtest.h>

#include <cuda_fp8.h>

#include <cstdint>

#include "ioattn/core/convert.hpp"

namespace {

bool nan_code(unsigned c) { return (c & 0x7fu) == 0x7fu; }

std::uint64_t mismatches(std::uint32_t first, std::uint32_t last, std::uint32_t step, std::uint32_t* example) {
  std::uint64_t bad = 0;
  for (std::uint64_t b = first; b <= last; b += step) {
    const float x = ioattn::core::bits_to_float(static_cast<std::uint32_t>(b));
    const unsigned ours = ioattn::core::float_to_fp8e4m3(x);
    const unsigned theirs = __nv_cvt_float_to_fp8(x, __NV_SATFINITE, __NV_E4M3);
    if (ours != theirs && !(nan_code(ours) && nan_code(theirs)) && bad++ == 0) *example = static_cast<std::uint32_t>(b);
  }
  return bad;
}

TEST(Fp8ConvertVsCuda, EncodeMatchesToolkit) {
  std::uint32_t example = 0;
  for (std::uint32_t sign : {0u, 0x80000000u}) {
    // Exponent fields 116 .. 136: magnitudes 2^-11 .. just below 2^10, every float.
    EXPECT_EQ(mismatches(sign | (116u << 23), sign | ((137u << 23) - 1), 1, &example), 0u)
        << "first at bits " << std::hex << example;
    EXPECT_EQ(mismatches(sign, sign | 0x7fffffffu, 4099, &example), 0u) << "first at bits " << std::hex << example;
  }
  for (std::uint32_t bits : {0x7f800000u, 0xff800000u, 0x7fc00000u, 0xffc00000u, 0x7f7fffffu, 0x00000001u}) {
    EXPECT_EQ(mismatches(bits, bits, 1, &example), 0u) << std::hex << bits;
  }
}

TEST(Fp8ConvertVsCuda, DecodeMatchesToolkit) {
  for (unsigned c = 0; c < 256; ++c) {
    const __half_raw h = __nv_cvt_fp8_to_halfraw(static_cast<__nv_fp8_storage_t>(c), __NV_E4M3);
    const float theirs = __half2float(__half(h));
    const float ours = ioattn::core::fp8e4m3_to_float(static_cast<std::uint8_t>(c));
    if (nan_code(c)) {
      EXPECT_TRUE(ours != ours && theirs != theirs) << c;
    } else {
      EXPECT_EQ(ours, theirs) << c;
    }
  }
}

}  // namespace
