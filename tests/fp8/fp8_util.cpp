#include "fp8/fp8_util.hpp"

#include <cmath>

#include "api/validate.hpp"
#include "cpu/reference.hpp"
#include "ioattn/core/convert.hpp"

namespace ioattn::fp8test {

Fp8Operand::Fp8Operand(std::int64_t b, std::int64_t r, std::int64_t h, std::int64_t d, std::int64_t block)
    : batch(b), rows(r), heads(h), dim(d), block_rows(block),
      codes(static_cast<std::size_t>(b * r * h * d)),
      descale(static_cast<std::size_t>(b * h * blocks()), 1.0f) {}

std::int64_t Fp8Operand::blocks() const { return block_rows > 0 ? (rows + block_rows - 1) / block_rows : 1; }

TensorView Fp8Operand::view() {
  return TensorView::contiguous(codes.data(), DType::f8e4m3, {batch, rows, heads, dim});
}

TensorView Fp8Operand::descale_view() {
  if (block_rows == 0) return TensorView::contiguous(descale.data(), DType::f32, {batch, heads});
  return TensorView::contiguous(descale.data(), DType::f32, {batch, heads, blocks()});
}

float Fp8Operand::descale_at(std::int64_t b, std::int64_t h, std::int64_t row) const {
  const std::int64_t blk = block_rows > 0 ? row / block_rows : 0;
  return descale[static_cast<std::size_t>((b * heads + h) * blocks() + blk)];
}

std::vector<double> Fp8Operand::dequantize() const {
  std::vector<double> out(codes.size());
  for (std::int64_t b = 0; b < batch; ++b) {
    for (std::int64_t i = 0; i < rows; ++i) {
      for (std::int64_t h = 0; h < heads; ++h) {
        for (std::int64_t c = 0; c < dim; ++c) {
          const std::size_t e = static_cast<std::size_t>(((b * rows + i) * heads + h) * dim + c);
          out[e] = static_cast<double>(core::fp8e4m3_to_float(codes[e])) * descale_at(b, h, i);
        }
      }
    }
  }
  return out;
}

Fp8Operand quantize(const std::vector<float>& values, std::int64_t batch, std::int64_t rows, std::int64_t heads,
                    std::int64_t dim, std::int64_t block_rows, bool rotate) {
  Fp8Operand op(batch, rows, heads, dim, block_rows);
  std::vector<float> copy = values;
  const TensorView in = TensorView::contiguous(copy.data(), DType::f32, {batch, rows, heads, dim});
  quantize_fp8(in, op.view(), op.descale_view(), block_rows, rotate);
  return op;
}

detail::Problem dense_problem(std::int64_t batch, std::int64_t seqlen_q, std::int64_t seqlen_k, std::int64_t heads_q,
                              std::int64_t heads_kv, std::int64_t dim_qk, std::int64_t dim_v,
                              const AttentionParams& params) {
  // Views need non-null data only when they have elements; one float serves them all (nothing is read).
  static float dummy = 0.0f;
  ForwardArgs a;
  a.q = TensorView::strided(&dummy, DType::f32, {batch, seqlen_q, heads_q, dim_qk}, {0, 0, 0, 1});
  a.k = TensorView::strided(&dummy, DType::f32, {batch, seqlen_k, heads_kv, dim_qk}, {0, 0, 0, 1});
  a.v = TensorView::strided(&dummy, DType::f32, {batch, seqlen_k, heads_kv, dim_v}, {0, 0, 0, 1});
  std::vector<float> out(static_cast<std::size_t>(batch * seqlen_q * heads_q * dim_v) + 1);
  a.out = TensorView::contiguous(out.data(), DType::f32, {batch, seqlen_q, heads_q, dim_v});
  detail::Problem p = detail::make_forward_problem(a, params);
  p.q = p.k = p.v = p.out = p.lse = {};
  return p;
}

F64Result forward_f64(const detail::Problem& p, const std::vector<double>& q, const std::vector<double>& k,
                      const std::vector<double>& v) {
  F64Result r;
  r.out.assign(static_cast<std::size_t>(p.batch * p.seqlen_q * p.heads_q * p.dim_v), 0.0);
  r.lse.assign(static_cast<std::size_t>(p.batch * p.seqlen_q * p.heads_q), 0.0);
  cpu::ref::forward_f64(p, q.data(), k.data(), v.data(), r.out.data(), r.lse.data());
  return r;
}

double stored_as(DType dtype, double value) {
  const float f = static_cast<float>(value);
  switch (dtype) {
    case DType::f16: return core::fp16_to_float(core::float_to_fp16(f));
    case DType::bf16: return core::bf16_to_float(core::float_to_bf16(f));
    default: return f;
  }
}

}  // namespace ioattn::fp8test
