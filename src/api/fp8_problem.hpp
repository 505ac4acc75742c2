// ioattn internal: validated FP8 problems (src/api/fp8_validate.cpp builds them, src/api/fp8_dispatch.cpp hands them
// to the CPU code in src/cpu/fp8_*.cpp). A backend may trust every field.
#pragma once

#include <cstdint>

#include "api/problem.hpp"
#include "ioattn/fp8.hpp"

namespace ioattn::detail {

// One descale tensor: the factor of (batch b, head h, row i) is at ptr[b * batch_stride + h * head_stride +
// (i / block_rows) * block_stride], with block_stride 0 and block_rows 1 when there is one factor per (b, h).
struct Descale {
  const float* ptr = nullptr;
  std::int64_t batch_stride = 0;
  std::int64_t head_stride = 0;
  std::int64_t block_stride = 0;
  std::int64_t block_rows = 1;

  float at(std::int64_t b, std::int64_t h, std::int64_t row) const {
    return ptr[b * batch_stride + h * head_stride + (row / block_rows) * block_stride];
  }
};

struct Fp8Problem {
  // The attention problem: shapes, masks, params and the operand addressing of q, k, v (fp8 codes), out, lse.
  // attn.dtype is out's dtype; the operands' dtype is f8e4m3.
  Problem attn;
  Descale q_descale, k_descale, v_descale;
  std::int64_t block_rows = 0;
};

struct Fp8QuantizeProblem {
  DType input_dtype = DType::f32;
  std::int64_t batch = 0, seqlen = 0, heads = 0, dim = 0;
  Operand input, output;  // output holds fp8 codes
  float* descale = nullptr;
  std::int64_t descale_batch_stride = 0, descale_head_stride = 0, descale_block_stride = 0;
  std::int64_t block_rows = 0;  // 0: one group per (batch, head)
  bool rotate = false;
};

Fp8Problem make_fp8_forward_problem(const Fp8ForwardArgs& args, const AttentionParams& params);
Fp8QuantizeProblem make_fp8_quantize_problem(const TensorView& input, const TensorView& output,
                                             const TensorView& descale, std::int64_t block_rows, bool rotate);

}  // namespace ioattn::detail
