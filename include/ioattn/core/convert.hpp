// ioattn core: fp16 and bf16 to and from fp32 by their bit patterns, for host code (the CPU backends and the tests),
// and fp8 e4m3 to and from fp32 for host and device code. Conversions to the narrow types round to nearest, ties to
// even, like the hardware's.
#pragma once

#include <cstdint>
#include <cstring>

#include "ioattn/core/config.hpp"

namespace ioattn::core {

inline float bits_to_float(std::uint32_t bits) {
  float f;
  std::memcpy(&f, &bits, sizeof f);
  return f;
}
inline std::uint32_t float_to_bits(float f) {
  std::uint32_t bits;
  std::memcpy(&bits, &f, sizeof bits);
  return bits;
}

inline float bf16_to_float(std::uint16_t h) { return bits_to_float(static_cast<std::uint32_t>(h) << 16); }

inline std::uint16_t float_to_bf16(float f) {
  std::uint32_t bits = float_to_bits(f);
  if ((bits & 0x7f800000u) == 0x7f800000u && (bits & 0x007fffffu) != 0) {
    return static_cast<std::uint16_t>((bits >> 16) | 0x0040u);  // NaN stays a (quiet) NaN
  }
  bits += 0x7fffu + ((bits >> 16) & 1u);
  return static_cast<std::uint16_t>(bits >> 16);
}

inline float fp16_to_float(std::uint16_t h) {
  const std::uint32_t sign = static_cast<std::uint32_t>(h & 0x8000u) << 16;
  const std::uint32_t exp = (h >> 10) & 0x1fu;
  const std::uint32_t man = h & 0x3ffu;
  if (exp == 0x1f) return bits_to_float(sign | 0x7f800000u | (man << 13));  // inf, NaN
  if (exp != 0) return bits_to_float(sign | ((exp + 112u) << 23) | (man << 13));
  // Zero or subnormal: man * 2^-24, exact in fp32.
  const float mag = static_cast<float>(man) * 5.9604644775390625e-08f;
  return sign ? -mag : mag;
}

inline std::uint16_t float_to_fp16(float f) {
  const std::uint32_t bits = float_to_bits(f);
  const std::uint16_t sign = static_cast<std::uint16_t>((bits >> 16) & 0x8000u);
  const std::uint32_t abs = bits & 0x7fffffffu;
  if (abs >= 0x7f800000u) return static_cast<std::uint16_t>(sign | 0x7c00u | (abs > 0x7f800000u ? 0x200u : 0u));
  if (abs >= 0x477ff000u) return static_cast<std::uint16_t>(sign | 0x7c00u);  // rounds past 65504: inf
  if (abs < 0x38800000u) {
    // Result is subnormal (or zero): round abs * 2^24 to an integer, ties to even.
    if (abs < 0x33000000u) return sign;  // below half the smallest subnormal
    const std::uint32_t exp = abs >> 23;
    const std::uint32_t man = (abs & 0x7fffffu) | 0x800000u;
    const std::uint32_t shift = 126u - exp;  // 14 .. 24 for the range handled here
    std::uint32_t half = man >> shift;
    const std::uint32_t rem = man & ((1u << shift) - 1u);
    const std::uint32_t midpoint = 1u << (shift - 1u);
    if (rem > midpoint || (rem == midpoint && (half & 1u))) ++half;
    return static_cast<std::uint16_t>(sign | half);
  }
  // Normal: rebias the exponent and round the 13 dropped mantissa bits, ties to even (carry may bump the exponent).
  std::uint32_t h = ((abs - 0x38000000u) >> 13);
  const std::uint32_t rem = abs & 0x1fffu;
  if (rem > 0x1000u || (rem == 0x1000u && (h & 1u))) ++h;
  return static_cast<std::uint16_t>(sign | h);
}

// ---- fp8 e4m3 (OCP E4M3FN): sign, 4 exponent bits (bias 7), 3 mantissa bits ---------------------------------------
// Normal values (1 + m/8) * 2^(e-7) for e = 1..15, subnormals m * 2^-9 for e = 0, largest finite 448 = S.1111.110,
// NaN = S.1111.111, no infinities.

inline constexpr float kFp8E4M3Max = 448.0f;

namespace fp8_detail {
// Bit casts for host and device code alike (the intrinsics on the device).
IOATTN_HD float bits_to_float(std::uint32_t bits) {
#if defined(__CUDA_ARCH__)
  return __uint_as_float(bits);
#else
  float f;
  std::memcpy(&f, &bits, sizeof f);
  return f;
#endif
}
IOATTN_HD std::uint32_t float_to_bits(float f) {
#if defined(__CUDA_ARCH__)
  return __float_as_uint(f);
#else
  std::uint32_t bits;
  std::memcpy(&bits, &f, sizeof bits);
  return bits;
#endif
}
}  // namespace fp8_detail

// Exact: every e4m3 value is an fp32 value.
IOATTN_HD float fp8e4m3_to_float(std::uint8_t code) {
  const std::uint32_t sign = static_cast<std::uint32_t>(code & 0x80u) << 24;
  const std::uint32_t exp = (code >> 3) & 0xfu;
  const std::uint32_t man = code & 0x7u;
  if (exp == 0xf && man == 0x7) return fp8_detail::bits_to_float(sign | 0x7fc00000u);  // NaN
  if (exp != 0) return fp8_detail::bits_to_float(sign | ((exp + 120u) << 23) | (man << 20));
  const float mag = static_cast<float>(man) * 0.001953125f;  // subnormal: man * 2^-9, exact
  return sign ? -mag : mag;
}

// Round to nearest, ties to even, saturating to +-448 (infinities too); NaN stays NaN. Saturating rather than
// producing NaN (e4m3 has no infinity): quantization picks each scale so that the group's largest |value| maps to
// 448 exactly, so only a rounding accident in the scaled value (448 * (1 + 2^-24), say) can pass 448, and it must
// stay a finite 448 rather than poison a whole attention row.
IOATTN_HD std::uint8_t float_to_fp8e4m3(float f) {
  const std::uint32_t bits = fp8_detail::float_to_bits(f);
  const std::uint8_t sign = static_cast<std::uint8_t>((bits >> 24) & 0x80u);
  const std::uint32_t abs = bits & 0x7fffffffu;
  if (abs > 0x7f800000u) return static_cast<std::uint8_t>(sign | 0x7fu);  // NaN
  if (abs >= 0x43e80000u) return static_cast<std::uint8_t>(sign | 0x7eu);  // >= 464 (the midpoint past 448): 448
  if (abs < 0x3c800000u) {
    // Below 2^-6, the smallest normal: the result is man * 2^-9, so round |f| * 2^9 (exact, < 8) to an integer,
    // ties to even; 8 comes out as the code of 2^-6.
    const float scaled = fp8_detail::bits_to_float(abs) * 512.0f;
    std::uint32_t n = static_cast<std::uint32_t>(scaled);
    const float frac = scaled - static_cast<float>(n);  // exact: scaled < 8 has at most 23 fraction bits
    if (frac > 0.5f || (frac == 0.5f && (n & 1u))) ++n;
    return static_cast<std::uint8_t>(sign | n);
  }
  // Normal: rebias the exponent (127 -> 7) and round the 20 dropped mantissa bits, ties to even; a carry bumps the
  // exponent, and values in [448, 464) carry no further than 448 since 464 and up were handled above.
  std::uint32_t h = ((abs >> 23) - 120u) << 3 | ((abs >> 20) & 0x7u);
  const std::uint32_t rem = abs & 0xfffffu;
  if (rem > 0x80000u || (rem == 0x80000u && (h & 1u))) ++h;
  return static_cast<std::uint8_t>(sign | h);
}

}  // namespace ioattn::core
