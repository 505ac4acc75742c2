// ioattn CPU: the fp64 reference of the FP8 forward. The math is cpu::ref::forward_f64's, unchanged; this file only
// turns e4m3 codes and their descales into the reference's canonical fp64 layout (see reference.hpp).
#include <cstdint>
#include <vector>

#include "cpu/fp8.hpp"
#include "cpu/reference.hpp"
#include "ioattn/core/convert.hpp"

namespace ioattn::cpu::fp8 {
namespace {

// Canonical [batch * rows, heads, dim] fp64 values of an fp8 operand (dense layout: token t = b * rows + i).
std::vector<double> dequantize(const detail::Operand& op, const detail::Descale& descale, std::int64_t batch,
                               std::int64_t rows, std::int64_t heads, std::int64_t dim) {
  std::vector<double> dst(static_cast<std::size_t>(batch * rows * heads * dim));
  const auto* codes = static_cast<const std::uint8_t*>(op.ptr);
#pragma omp parallel for collapse(2) schedule(static)
  for (std::int64_t b = 0; b < batch; ++b) {
    for (std::int64_t i = 0; i < rows; ++i) {
      for (std::int64_t h = 0; h < heads; ++h) {
        const double scale = descale.at(b, h, i);
        const std::uint8_t* src = codes + op.offset(b, i, h);
        double* row = dst.data() + ((b * rows + i) * heads + h) * dim;
        for (std::int64_t c = 0; c < dim; ++c) row[c] = static_cast<double>(core::fp8e4m3_to_float(src[c])) * scale;
      }
    }
  }
  return dst;
}

}  // namespace

void reference_forward(const detail::Fp8Problem& fp) {
  const detail::Problem& p = fp.attn;
  const auto q = dequantize(p.q, fp.q_descale, p.batch, p.seqlen_q, p.heads_q, p.dim_qk);
  const auto k = dequantize(p.k, fp.k_descale, p.batch, p.seqlen_k, p.heads_kv, p.dim_qk);
  const auto v = dequantize(p.v, fp.v_descale, p.batch, p.seqlen_k, p.heads_kv, p.dim_v);
  const ref::Canonical canon(p);
  std::vector<double> out(static_cast<std::size_t>(canon.tokens_q * p.heads_q * p.dim_v));
  std::vector<double> lse(static_cast<std::size_t>(canon.tokens_q * p.heads_q));
  ref::forward_f64(p, q.data(), k.data(), v.data(), out.data(), lse.data());
  ref::scatter(p, out, p.out, p.dtype, true, p.heads_q, p.dim_v);
  if (p.lse.ptr) ref::scatter(p, lse, p.lse, DType::f32, true, p.heads_q, 1);
}

}  // namespace ioattn::cpu::fp8
