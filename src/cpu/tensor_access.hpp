// ioattn internal: typed element access for the CPU backends and the tests.
//
// Tensors hold fp32, fp16 or bf16; all CPU arithmetic is fp32 (fp64 in the reference). Two ways in:
//   - Elem<DType::x>: compile-time storage type and conversions, for hot loops templated on the dtype
//     (dispatch once per call with visit_dtype, then load_row/store_row without a switch per element);
//   - load/store/load_row/store_row taking a runtime DType, for the reference and the tests.
// Offsets are in elements, as in detail::Operand; rows are contiguous (the API requires a unit last stride).
// Stores round to nearest, ties to even (core/convert.hpp), so an fp32 value lands where a GPU store would put it.
#pragma once

#include <cstdint>
#include <stdexcept>
#include <utility>

#include "ioattn/core/convert.hpp"
#include "ioattn/tensor.hpp"

namespace ioattn::cpu {

template <DType D>
struct Elem;

template <>
struct Elem<DType::f32> {
  using storage = float;
  static float to_float(storage x) { return x; }
  static storage from_float(float x) { return x; }
};

template <>
struct Elem<DType::f16> {
  using storage = std::uint16_t;
  static float to_float(storage x) { return core::fp16_to_float(x); }
  static storage from_float(float x) { return core::float_to_fp16(x); }
};

template <>
struct Elem<DType::bf16> {
  using storage = std::uint16_t;
  static float to_float(storage x) { return core::bf16_to_float(x); }
  static storage from_float(float x) { return core::float_to_bf16(x); }
};

// Calls fn(std::integral_constant<DType, D>{}) for the floating dtype `dtype`, so the body is compiled once per
// dtype. i32 and fp8 are not operand dtypes of these kernels and throw std::logic_error: validation must have
// rejected them (fp8 inputs go through attention_forward_fp8, which dequantizes first).
template <class Fn>
decltype(auto) visit_dtype(DType dtype, Fn&& fn) {
  switch (dtype) {
    case DType::f32: return std::forward<Fn>(fn)(std::integral_constant<DType, DType::f32>{});
    case DType::f16: return std::forward<Fn>(fn)(std::integral_constant<DType, DType::f16>{});
    case DType::bf16: return std::forward<Fn>(fn)(std::integral_constant<DType, DType::bf16>{});
    case DType::i32:
    case DType::f8e4m3: break;
  }
  throw std::logic_error("ioattn::cpu::visit_dtype: not a floating dtype");
}

// ---- compile-time dtype -------------------------------------------------------------------------------------------

template <DType D>
inline float load(const void* base, std::int64_t offset) {
  return Elem<D>::to_float(static_cast<const typename Elem<D>::storage*>(base)[offset]);
}

template <DType D>
inline void store(void* base, std::int64_t offset, float value) {
  static_cast<typename Elem<D>::storage*>(base)[offset] = Elem<D>::from_float(value);
}

// dst[0..n) = elements [offset, offset + n) of base, widened to fp32.
template <DType D>
inline void load_row(const void* base, std::int64_t offset, std::int64_t n, float* dst) {
  const auto* src = static_cast<const typename Elem<D>::storage*>(base) + offset;
  for (std::int64_t c = 0; c < n; ++c) dst[c] = Elem<D>::to_float(src[c]);
}

// Elements [offset, offset + n) of base = src[0..n), rounded to D.
template <DType D>
inline void store_row(void* base, std::int64_t offset, std::int64_t n, const float* src) {
  auto* dst = static_cast<typename Elem<D>::storage*>(base) + offset;
  for (std::int64_t c = 0; c < n; ++c) dst[c] = Elem<D>::from_float(src[c]);
}

// ---- runtime dtype ------------------------------------------------------------------------------------------------

inline float load(const void* base, DType dtype, std::int64_t offset) {
  return visit_dtype(dtype, [&](auto d) { return load<decltype(d)::value>(base, offset); });
}

inline void store(void* base, DType dtype, std::int64_t offset, float value) {
  visit_dtype(dtype, [&](auto d) { store<decltype(d)::value>(base, offset, value); });
}

inline void load_row(const void* base, DType dtype, std::int64_t offset, std::int64_t n, float* dst) {
  visit_dtype(dtype, [&](auto d) { load_row<decltype(d)::value>(base, offset, n, dst); });
}

inline void store_row(void* base, DType dtype, std::int64_t offset, std::int64_t n, const float* src) {
  visit_dtype(dtype, [&](auto d) { store_row<decltype(d)::value>(base, offset, n, src); });
}

// Rounds an fp32 value to `dtype` and back: what storing to and reloading from a tensor of that dtype does.
inline float round_to(DType dtype, float value) {
  switch (dtype) {
    case DType::f16: return core::fp16_to_float(core::float_to_fp16(value));
    case DType::bf16: return core::bf16_to_float(core::float_to_bf16(value));
    default: return value;
  }
}

}  // namespace ioattn::cpu
