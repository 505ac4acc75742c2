// ioattn internal: the CPU side of the FP8 entry points (src/cpu/fp8_reference.cpp, src/cpu/fp8_quantize.cpp).
#pragma once

#include <cstdint>

#include "api/fp8_problem.hpp"

namespace ioattn::cpu::fp8 {

// The oracle of the FP8 forward: q, k, v dequantized exactly into fp64 (an e4m3 code has 4 significant bits and a
// descale 24, so code x descale is exact in fp64), then cpu::ref::forward_f64, then out rounded to its dtype.
void reference_forward(const detail::Fp8Problem& problem);

// quantize_fp8 on CPU tensors. Reads everything first and throws invalid_argument ("input: ...") on a non-finite
// value before writing anything.
void quantize(const detail::Fp8QuantizeProblem& problem);

// x <- (H / sqrt(dim)) x in place, with H the Sylvester-ordered Walsh-Hadamard matrix (H[i][j] = (-1)^popcount(i&j));
// dim a power of two. Fast transform in fp64: log2(dim) butterfly stages, then one scaling.
void hadamard_rotate(double* x, std::int64_t dim);

}  // namespace ioattn::cpu::fp8
