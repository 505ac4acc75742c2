// FP8 tests' shared pieces: fp8 operands (codes + descales) in the dense layout, their exact fp64 dequantization
// written independently of the library's, and the fp64 oracle run on canonical fp64 arrays.
#pragma once

#include <cstdint>
#include <vector>

#include "api/problem.hpp"
#include "ioattn/attention.hpp"
#include "ioattn/fp8.hpp"

namespace ioattn::fp8test {

// A contiguous fp8 operand [batch, rows, heads, dim] and its descales ([batch, heads] or [batch, heads, blocks]).
struct Fp8Operand {
  std::int64_t batch = 0, rows = 0, heads = 0, dim = 0, block_rows = 0;
  std::vector<std::uint8_t> codes;
  std::vector<float> descale;

  Fp8Operand(std::int64_t batch, std::int64_t rows, std::int64_t heads, std::int64_t dim, std::int64_t block_rows);
  std::int64_t blocks() const;  // 1 for block_rows 0
  TensorView view();
  TensorView descale_view();
  float descale_at(std::int64_t b, std::int64_t h, std::int64_t row) const;
  // Canonical fp64 [batch * rows, heads, dim] (the contiguous dense layout): code value x descale, exact in fp64.
  std::vector<double> dequantize() const;
};

// Quantizes fp32 values (contiguous [batch, rows, heads, dim]) with quantize_fp8.
Fp8Operand quantize(const std::vector<float>& values, std::int64_t batch, std::int64_t rows, std::int64_t heads,
                    std::int64_t dim, std::int64_t block_rows, bool rotate);

// The problem metadata forward_f64 needs (pointers unused), built by the dense API's own validation from fp32 views
// of these shapes, so that masks, scale, softcap, ALiBi and sinks are filled exactly as the API fills them.
detail::Problem dense_problem(std::int64_t batch, std::int64_t seqlen_q, std::int64_t seqlen_k, std::int64_t heads_q,
                              std::int64_t heads_kv, std::int64_t dim_qk, std::int64_t dim_v,
                              const AttentionParams& params);

struct F64Result {
  std::vector<double> out;  // canonical [batch * seqlen_q, heads_q, dim_v]
  std::vector<double> lse;  // canonical [batch * seqlen_q, heads_q]
};
F64Result forward_f64(const detail::Problem& p, const std::vector<double>& q, const std::vector<double>& k,
                      const std::vector<double>& v);

// value rounded as the library stores an fp64 result into `dtype` (via fp32, then to nearest even).
double stored_as(DType dtype, double value);

}  // namespace ioattn::fp8test
