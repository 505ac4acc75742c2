// ioattn CPU: quantize_fp8 (fp32/fp16/bf16 -> e4m3 codes + fp32 descales, optionally Hadamard-rotated first).
//
// Each row goes input -> fp32 -> fp64 -> (rotation in fp64) -> fp32: the fp32 value is what a GPU quantizer would
// hold in registers, and the same value is used for the group's largest |value| and for the code, so the largest
// maps to 448 up to one rounding of value / descale, which float_to_fp8e4m3 rounds back to 448 (never past it).
#include <algorithm>
#include <cfloat>
#include <cmath>
#include <cstdint>
#include <string>
#include <vector>

#include "cpu/fp8.hpp"
#include "cpu/tensor_access.hpp"
#include "ioattn/core/convert.hpp"
#include "ioattn/error.hpp"

namespace ioattn::cpu::fp8 {

void hadamard_rotate(double* x, std::int64_t dim) {
  for (std::int64_t half = 1; half < dim; half *= 2) {
    for (std::int64_t base = 0; base < dim; base += 2 * half) {
      for (std::int64_t j = base; j < base + half; ++j) {
        const double a = x[j], b = x[j + half];
        x[j] = a + b;
        x[j + half] = a - b;
      }
    }
  }
  const double norm = 1.0 / std::sqrt(static_cast<double>(dim));
  for (std::int64_t j = 0; j < dim; ++j) x[j] *= norm;
}

namespace {

enum class RowStatus { ok, nonfinite_input, rotation_overflow };

// The fp32 values to quantize of row (b, i, h): loaded, and rotated when asked.
RowStatus load_values(const detail::Fp8QuantizeProblem& qp, std::int64_t b, std::int64_t i, std::int64_t h,
                      std::vector<float>& values, std::vector<double>& wide) {
  load_row(qp.input.ptr, qp.input_dtype, qp.input.offset(b, i, h), qp.dim, values.data());
  for (std::int64_t c = 0; c < qp.dim; ++c) {
    if (!std::isfinite(values[c])) return RowStatus::nonfinite_input;
  }
  if (!qp.rotate) return RowStatus::ok;
  for (std::int64_t c = 0; c < qp.dim; ++c) wide[c] = values[c];
  hadamard_rotate(wide.data(), qp.dim);
  for (std::int64_t c = 0; c < qp.dim; ++c) {
    values[c] = static_cast<float>(wide[c]);
    if (!std::isfinite(values[c])) return RowStatus::rotation_overflow;
  }
  return RowStatus::ok;
}

// The group's descale: its largest |value| maps to 448. Floored at the smallest normal fp32 so that value / descale
// never divides by zero or a subnormal (the group's codes then simply stay below 448); 1 for a group of zeros.
float descale_for(float amax) {
  if (amax == 0.0f) return 1.0f;
  const float d = amax / core::kFp8E4M3Max;
  return d < FLT_MIN ? FLT_MIN : d;
}

// Group g of the quantization: (batch b, head h, block blk) and its rows [first, last). block_rows 0: one group of
// all rows per (batch, head), written (as 1) even when there are no rows.
struct Group {
  std::int64_t b, h, blk, first, last;
};

struct Groups {
  std::int64_t rows_per_group, blocks, count;

  explicit Groups(const detail::Fp8QuantizeProblem& qp)
      : rows_per_group(qp.block_rows > 0 ? qp.block_rows : qp.seqlen),
        blocks(qp.block_rows > 0 ? (qp.seqlen + qp.block_rows - 1) / qp.block_rows : 1),
        count(qp.batch * qp.heads * blocks) {}

  Group operator()(const detail::Fp8QuantizeProblem& qp, std::int64_t g) const {
    const std::int64_t blk = g % blocks, h = (g / blocks) % qp.heads, b = g / (blocks * qp.heads);
    const std::int64_t first = blk * rows_per_group;
    return {b, h, blk, first, std::min(first + rows_per_group, qp.seqlen)};
  }
};

}  // namespace

void quantize(const detail::Fp8QuantizeProblem& qp) {
  const Groups group_of(qp);
  const std::int64_t groups = group_of.count;
  std::vector<float> descales(static_cast<std::size_t>(groups), 1.0f);
  std::vector<int> status(static_cast<std::size_t>(groups), 0);  // RowStatus of the group's first bad row

  // Pass 1, writing nothing: every group's descale, and whether every value is usable.
#pragma omp parallel
  {
    std::vector<float> values(static_cast<std::size_t>(qp.dim));
    std::vector<double> wide(static_cast<std::size_t>(qp.dim));
#pragma omp for schedule(static)
    for (std::int64_t g = 0; g < groups; ++g) {
      const Group gr = group_of(qp, g);
      float amax = 0.0f;
      for (std::int64_t i = gr.first; i < gr.last; ++i) {
        const RowStatus st = load_values(qp, gr.b, i, gr.h, values, wide);
        if (st != RowStatus::ok) {
          status[g] = static_cast<int>(st);
          break;
        }
        for (std::int64_t c = 0; c < qp.dim; ++c) amax = std::max(amax, std::fabs(values[c]));
      }
      descales[g] = descale_for(amax);
    }
  }
  for (std::int64_t g = 0; g < groups; ++g) {
    if (status[g] == 0) continue;
    const Group gr = group_of(qp, g);
    const std::string where = "batch " + std::to_string(gr.b) + ", head " + std::to_string(gr.h) + ", rows from " +
                              std::to_string(gr.first);
    if (status[g] == static_cast<int>(RowStatus::nonfinite_input)) {
      throw Error(ErrorCode::invalid_argument, "input: expected finite values, got Inf or NaN at " + where);
    }
    throw Error(ErrorCode::invalid_argument,
                "input: expected values whose Hadamard rotation fits in fp32, got an overflow at " + where);
  }

  // Pass 2: the codes and the descales.
#pragma omp parallel
  {
    std::vector<float> values(static_cast<std::size_t>(qp.dim));
    std::vector<double> wide(static_cast<std::size_t>(qp.dim));
#pragma omp for schedule(static)
    for (std::int64_t g = 0; g < groups; ++g) {
      const Group gr = group_of(qp, g);
      const float descale = descales[g];
      for (std::int64_t i = gr.first; i < gr.last; ++i) {
        load_values(qp, gr.b, i, gr.h, values, wide);
        auto* codes = static_cast<std::uint8_t*>(qp.output.ptr) + qp.output.offset(gr.b, i, gr.h);
        // Division, not a multiplication by 448 / amax: value / descale is one correctly rounded step, and for the
        // largest value it lands within an ulp of 448.
        for (std::int64_t c = 0; c < qp.dim; ++c) codes[c] = core::float_to_fp8e4m3(values[c] / descale);
      }
      qp.descale[gr.b * qp.descale_batch_stride + gr.h * qp.descale_head_stride + gr.blk * qp.descale_block_stride] =
          descale;
    }
  }
}

}  // namespace ioattn::cpu::fp8
