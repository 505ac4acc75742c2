// The FP8 error table of docs/NUMERICS.md: how far attention on quantized inputs lands from fp64 attention on the
// unquantized inputs, for bf16 inputs (the baseline), e4m3 with per-head descales, e4m3 with per-block descales
// (64 rows), and e4m3 per-block (and per-head) after a Walsh-Hadamard rotation of q and k (incoherent processing).
// The attention itself is exact (the fp64 reference; the FP8 rows through attention_forward_fp8 with fp32 out), so
// the table isolates the error of the inputs' quantization, the part a kernel cannot remove; a kernel adds its own
// rounding (P in fp8 or bf16, fp32 accumulation) on top. Two more rows split the per-head error into the part of
// q and k (through the scores) and the part of v, and two emulate an FP8 kernel's arithmetic (fp8_kernel_like).
//
// Inputs: q, k, v standard normal; "outliers": 0.1% of the entries of each replaced by N(0, 10^2) draws (the
// FlashAttention-3 paper's experiment). batch 1, 4 heads (no GQA), head dim 128, no mask and causal.
//
//   build-fp8/tests/ioattn_fp8_numerics [seqlen = 2048] [seed = 20261121]      (about a minute on 2 cores)
#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <random>
#include <string>
#include <vector>

#include "fp8/fp8_util.hpp"
#include "ioattn/core/convert.hpp"
#include "ioattn/fp8.hpp"

using namespace ioattn;
using namespace ioattn::fp8test;

namespace {

constexpr std::int64_t kBatch = 1, kHeads = 4, kDim = 128;

struct ErrStat {
  double max_rel = 0, rms_rel = 0;
};

ErrStat error_of(const std::vector<double>& x, const std::vector<double>& ref) {
  double scale = 0, max_abs = 0, sum_sq = 0;
  for (std::size_t e = 0; e < ref.size(); ++e) {
    scale = std::max(scale, std::fabs(ref[e]));
    const double d = std::isnan(x[e]) ? INFINITY : std::fabs(x[e] - ref[e]);
    max_abs = std::max(max_abs, d);
    sum_sq += d * d;
  }
  return {max_abs / scale, std::sqrt(sum_sq / static_cast<double>(ref.size())) / scale};
}

std::vector<float> draw(std::mt19937_64& gen, std::size_t n, bool outliers) {
  std::normal_distribution<double> normal(0.0, 1.0), big(0.0, 10.0);
  std::uniform_real_distribution<double> u(0.0, 1.0);
  std::vector<float> x(n);
  for (auto& e : x) e = static_cast<float>(normal(gen));
  if (outliers) {
    for (auto& e : x) {
      if (u(gen) < 0.001) e = static_cast<float>(big(gen));
    }
  }
  return x;
}

std::vector<double> widen(const std::vector<float>& x, bool to_bf16) {
  std::vector<double> y(x.size());
  for (std::size_t e = 0; e < x.size(); ++e) {
    y[e] = to_bf16 ? core::bf16_to_float(core::float_to_bf16(x[e])) : x[e];
  }
  return y;
}

// out of attention_forward_fp8 (fp32) on q, k, v quantized with these settings, widened to fp64.
std::vector<double> fp8_out(const std::vector<float>& q, const std::vector<float>& k, const std::vector<float>& v,
                            std::int64_t seqlen, std::int64_t block_rows, bool rotate, const AttentionParams& params) {
  Fp8Operand fq = quantize(q, kBatch, seqlen, kHeads, kDim, block_rows, rotate);
  Fp8Operand fk = quantize(k, kBatch, seqlen, kHeads, kDim, block_rows, rotate);
  Fp8Operand fv = quantize(v, kBatch, seqlen, kHeads, kDim, block_rows, false);  // v is never rotated
  std::vector<float> out(q.size(), std::nanf(""));
  Fp8ForwardArgs a;
  a.q = fq.view();
  a.k = fk.view();
  a.v = fv.view();
  a.scales = {fq.descale_view(), fk.descale_view(), fv.descale_view(), block_rows};
  a.out = TensorView::contiguous(out.data(), DType::f32, {kBatch, seqlen, kHeads, kDim});
  attention_forward_fp8(a, params);
  return std::vector<double>(out.begin(), out.end());
}

// What an FP8 kernel's arithmetic adds, emulated (materialized, not tiled): scores from the e4m3 codes accumulated in
// fp32 and scaled by q_descale * k_descale * softmax scale in fp32; softmax in fp32 with the row's exact max; the
// row sum from the fp32 probabilities; P rounded to e4m3 (unscaled: P is in [0, 1]) for the second product, which
// accumulates code(P) * code(v) * v_descale in fp32; out = that / row sum. No mask beyond none/causal (square).
std::vector<double> fp8_kernel_like(const std::vector<float>& q, const std::vector<float>& k,
                                    const std::vector<float>& v, std::int64_t seqlen, std::int64_t block_rows,
                                    bool rotate, bool causal) {
  const Fp8Operand fq = quantize(q, kBatch, seqlen, kHeads, kDim, block_rows, rotate);
  const Fp8Operand fk = quantize(k, kBatch, seqlen, kHeads, kDim, block_rows, rotate);
  const Fp8Operand fv = quantize(v, kBatch, seqlen, kHeads, kDim, block_rows, false);
  auto val = [](const Fp8Operand& op, std::int64_t i, std::int64_t h, std::int64_t c) {
    return core::fp8e4m3_to_float(op.codes[static_cast<std::size_t>((i * kHeads + h) * kDim + c)]);
  };
  const float scale = static_cast<float>(1.0 / std::sqrt(static_cast<double>(kDim)));
  std::vector<double> out(q.size());
#pragma omp parallel for collapse(2) schedule(dynamic, 16)
  for (std::int64_t h = 0; h < kHeads; ++h) {
    for (std::int64_t i = 0; i < seqlen; ++i) {
      const std::int64_t keys = causal ? i + 1 : seqlen;
      std::vector<float> s(static_cast<std::size_t>(keys));
      float m = -INFINITY;
      for (std::int64_t j = 0; j < keys; ++j) {
        float acc = 0.0f;
        for (std::int64_t c = 0; c < kDim; ++c) acc += val(fq, i, h, c) * val(fk, j, h, c);
        s[j] = acc * (fq.descale_at(0, h, i) * fk.descale_at(0, h, j) * scale);
        m = std::max(m, s[j]);
      }
      float l = 0.0f;
      std::vector<float> o(kDim, 0.0f);
      for (std::int64_t j = 0; j < keys; ++j) {
        const float pj = std::exp(s[j] - m);
        l += pj;
        const float p8 = core::fp8e4m3_to_float(core::float_to_fp8e4m3(pj));
        const float vd = fv.descale_at(0, h, j);
        for (std::int64_t c = 0; c < kDim; ++c) o[c] += p8 * (val(fv, j, h, c) * vd);
      }
      for (std::int64_t c = 0; c < kDim; ++c) out[(i * kHeads + h) * kDim + c] = o[c] / l;
    }
  }
  return out;
}

}  // namespace

int main(int argc, char** argv) {
  const std::int64_t seqlen = argc > 1 ? std::atoll(argv[1]) : 2048;
  const std::uint64_t seed = argc > 2 ? std::strtoull(argv[2], nullptr, 10) : 20261121;
  const auto start = std::chrono::steady_clock::now();
  const char* methods[] = {"bf16 inputs (baseline)", "fp8 e4m3, per-head scales", "fp8 e4m3, per-block scales (64 rows)",
                           "fp8 e4m3, per-block (64) + Hadamard on q, k", "fp8 e4m3, per-head + Hadamard on q, k",
                           "(where it comes from) fp8 per-head on q, k only; v exact",
                           "(where it comes from) fp8 per-head on v only; q, k exact",
                           "emulated FP8 kernel arithmetic (P in e4m3, fp32 sums), per-head",
                           "emulated FP8 kernel arithmetic, per-block (64) + Hadamard on q, k"};
  constexpr int kRows = 9;
  ErrStat table[kRows][2][2];  // method, inputs (normal, outliers), mask (none, causal)
  for (int kind = 0; kind < 2; ++kind) {
    std::mt19937_64 gen(seed + static_cast<std::uint64_t>(kind));
    const std::size_t n = static_cast<std::size_t>(kBatch * seqlen * kHeads * kDim);
    const std::vector<float> q = draw(gen, n, kind == 1), k = draw(gen, n, kind == 1), v = draw(gen, n, kind == 1);
    for (int m = 0; m < 2; ++m) {
      AttentionParams params;
      params.mask = m ? Mask::causal() : Mask::none();
      const detail::Problem p = dense_problem(kBatch, seqlen, seqlen, kHeads, kHeads, kDim, kDim, params);
      const F64Result ref = forward_f64(p, widen(q, false), widen(k, false), widen(v, false));
      const F64Result bf16 = forward_f64(p, widen(q, true), widen(k, true), widen(v, true));
      table[0][kind][m] = error_of(bf16.out, ref.out);
      table[1][kind][m] = error_of(fp8_out(q, k, v, seqlen, 0, false, params), ref.out);
      table[2][kind][m] = error_of(fp8_out(q, k, v, seqlen, 64, false, params), ref.out);
      table[3][kind][m] = error_of(fp8_out(q, k, v, seqlen, 64, true, params), ref.out);
      table[4][kind][m] = error_of(fp8_out(q, k, v, seqlen, 0, true, params), ref.out);
      const auto dequantized = [&](const std::vector<float>& x) {
        return quantize(x, kBatch, seqlen, kHeads, kDim, 0, false).dequantize();
      };
      table[5][kind][m] = error_of(forward_f64(p, dequantized(q), dequantized(k), widen(v, false)).out, ref.out);
      table[6][kind][m] = error_of(forward_f64(p, widen(q, false), widen(k, false), dequantized(v)).out, ref.out);
      table[7][kind][m] = error_of(fp8_kernel_like(q, k, v, seqlen, 0, false, m == 1), ref.out);
      table[8][kind][m] = error_of(fp8_kernel_like(q, k, v, seqlen, 64, true, m == 1), ref.out);
      std::fprintf(stderr, "inputs %s, %s: done\n", kind ? "outliers" : "normal", m ? "causal" : "no mask");
    }
  }
  const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  std::printf("seqlen %lld, batch %lld, heads %lld, head dim %lld, seed %llu, %.0f s\n\n",
              static_cast<long long>(seqlen), static_cast<long long>(kBatch), static_cast<long long>(kHeads),
              static_cast<long long>(kDim), static_cast<unsigned long long>(seed), seconds);
  std::printf("| quantization | N(0,1) none: max | rms | N(0,1) causal: max | rms "
              "| 0.1%% outliers none: max | rms | 0.1%% outliers causal: max | rms |\n");
  std::printf("|---|---|---|---|---|---|---|---|---|\n");
  for (int r = 0; r < kRows; ++r) {
    std::printf("| %s", methods[r]);
    for (int kind = 0; kind < 2; ++kind) {
      for (int m = 0; m < 2; ++m) std::printf(" | %.2e | %.2e", table[r][kind][m].max_rel, table[r][kind][m].rms_rel);
    }
    std::printf(" |\n");
  }
  return 0;
}
