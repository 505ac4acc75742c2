// ioattn: the fp64 reference backend, the oracle every other backend is judged by.
//
// Straightforward on purpose: each query row's scores are computed in full in fp64, row by row, with the mask rule,
// score transforms and sequence spans taken from core/ so that the math is defined in one place. Row by row keeps the
// memory at O(seqlen_k) per thread: no score matrix is ever materialized for a whole head. The backward is also
// instantiated in fp32, as the yardstick naive::backward_from_stored (the tests' bound) uses it.
#include "cpu/reference.hpp"

#include <omp.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <string>

#include "api/backend.hpp"
#include "cpu/tensor_access.hpp"
#include "ioattn/core/score_mod.hpp"
#include "ioattn/core/softmax_state.hpp"

namespace ioattn::cpu::ref {
namespace {

using detail::Problem;

constexpr double kNegInf = -std::numeric_limits<double>::infinity();

int thread_count(const Problem& p) { return p.num_threads > 0 ? p.num_threads : omp_get_max_threads(); }

// fp64 (the oracle): four partial sums, independent chains the compiler can pipeline; the reassociation is harmless.
double dot(const double* a, const double* b, std::int64_t n) {
  double s0 = 0, s1 = 0, s2 = 0, s3 = 0;
  std::int64_t c = 0;
  for (; c + 4 <= n; c += 4) {
    s0 += a[c] * b[c];
    s1 += a[c + 1] * b[c + 1];
    s2 += a[c + 2] * b[c + 2];
    s3 += a[c + 3] * b[c + 3];
  }
  for (; c < n; ++c) s0 += a[c] * b[c];
  return (s0 + s1) + (s2 + s3);
}

// fp32 (the yardstick): one sequential chain, the plainest program, so the most rounding a backend may show.
float dot(const float* a, const float* b, std::int64_t n) {
  float s = 0;
  for (std::int64_t c = 0; c < n; ++c) s += a[c] * b[c];
  return s;
}

template <class T>
void axpy(T alpha, const T* x, T* y, std::int64_t n) {
  for (std::int64_t c = 0; c < n; ++c) y[c] += alpha * x[c];
}

// The masked logit of (i, j) for a visible j, before any softmax: scale, softcap, ALiBi, in that order.
template <class T>
struct ScoreFn {
  T scale, softcap, slope;
  const core::MaskRule& rule;

  // Returns the final logit; *capped receives the value after softcap (the backward's derivative needs it).
  T operator()(T qk, std::int64_t i, std::int64_t j, T* capped = nullptr) const {
    T s = core::apply_softcap(scale * qk, softcap);
    if (capped) *capped = s;
    if (slope != T(0)) s += core::alibi_bias(slope, j, rule.diag(i));
    return s;
  }
};

}  // namespace

std::vector<double> gather(const Problem& p, const detail::Operand& op, DType dtype, bool query_side,
                           std::int64_t heads, std::int64_t dim) {
  const Canonical canon(p);
  std::vector<double> dst(static_cast<std::size_t>((query_side ? canon.tokens_q : canon.tokens_k) * heads * dim), 0.0);
  std::vector<float> row(static_cast<std::size_t>(dim));
  for (std::int64_t b = 0; b < p.batch; ++b) {
    const core::SeqSpan s = p.span(b);
    const std::int64_t len = query_side ? s.q_len : s.k_len;
    const std::int64_t first = query_side ? s.q_offset : s.k_offset;
    for (std::int64_t i = 0; i < len; ++i) {
      const std::int64_t t = query_side ? Canonical::token_q(p, b, s, i) : Canonical::token_k(p, b, s, i);
      for (std::int64_t h = 0; h < heads; ++h) {
        load_row(op.ptr, dtype, op.offset(b, first + i, h), dim, row.data());
        std::copy(row.begin(), row.end(), dst.begin() + (t * heads + h) * dim);
      }
    }
  }
  return dst;
}

void scatter(const Problem& p, const std::vector<double>& src, const detail::Operand& op, DType dtype,
             bool query_side, std::int64_t heads, std::int64_t dim) {
  std::vector<float> row(static_cast<std::size_t>(dim));
  for (std::int64_t b = 0; b < p.batch; ++b) {
    const core::SeqSpan s = p.span(b);
    const std::int64_t len = query_side ? s.q_len : s.k_len;
    const std::int64_t first = query_side ? s.q_offset : s.k_offset;
    for (std::int64_t i = 0; i < len; ++i) {
      const std::int64_t t = query_side ? Canonical::token_q(p, b, s, i) : Canonical::token_k(p, b, s, i);
      for (std::int64_t h = 0; h < heads; ++h) {
        // Via fp32: the store to fp16/bf16 then rounds once more (double rounding), at most a half-ulp of fp32 off.
        for (std::int64_t c = 0; c < dim; ++c) row[c] = static_cast<float>(src[(t * heads + h) * dim + c]);
        store_row(op.ptr, dtype, op.offset(b, first + i, h), dim, row.data());
      }
    }
  }
}

void forward_f64(const Problem& p, const double* q, const double* k, const double* v, double* out, double* lse) {
  const std::int64_t H = p.heads_q, Hk = p.heads_kv, G = p.group_size(), dqk = p.dim_qk, dv = p.dim_v;
  const std::int64_t tasks = p.batch * H;
#pragma omp parallel num_threads(thread_count(p))
  {
    std::vector<double> score(static_cast<std::size_t>(std::max<std::int64_t>(p.seqlen_k, 1)));
#pragma omp for schedule(dynamic, 1)
    for (std::int64_t task = 0; task < tasks; ++task) {
      const std::int64_t b = task / H, h = task % H, hk = h / G;
      const core::SeqSpan s = p.span(b);
      const core::MaskRule rule = p.mask_rule(s);
      const ScoreFn<double> score_of{p.scale, p.softcap, p.alibi_slope(b, h), rule};
      if (static_cast<std::int64_t>(score.size()) < s.k_len) score.resize(static_cast<std::size_t>(s.k_len));
      for (std::int64_t i = 0; i < s.q_len; ++i) {
        const std::int64_t tq = Canonical::token_q(p, b, s, i);
        const double* q_row = q + (tq * H + h) * dqk;
        double* out_row = out + (tq * H + h) * dv;
        const std::int64_t j0 = rule.key_begin(i), j1 = std::max(rule.key_end(i), j0);
        double m = p.sinks ? static_cast<double>(p.sinks[h]) : kNegInf;
        for (std::int64_t j = j0; j < j1; ++j) {
          const double* k_row = k + (Canonical::token_k(p, b, s, j) * Hk + hk) * dqk;
          score[j] = score_of(dot(q_row, k_row, dqk), i, j);
          m = std::max(m, score[j]);
        }
        std::fill(out_row, out_row + dv, 0.0);
        if (m == kNegInf) {  // sees no key and has no sink: out = 0, lse = -inf by the API's definition
          lse[tq * H + h] = kNegInf;
          continue;
        }
        double sum = p.sinks ? std::exp(static_cast<double>(p.sinks[h]) - m) : 0.0;
        for (std::int64_t j = j0; j < j1; ++j) sum += std::exp(score[j] - m);
        const double row_lse = m + std::log(sum);
        for (std::int64_t j = j0; j < j1; ++j) {
          const double* v_row = v + (Canonical::token_k(p, b, s, j) * Hk + hk) * dv;
          axpy(std::exp(score[j] - row_lse), v_row, out_row, dv);
        }
        lse[tq * H + h] = row_lse;
      }
    }
  }
}

namespace {

// The FlashAttention backward, materialized row by row in arithmetic T: fp64 for the oracle, fp32 for the
// same-precision yardstick of the FlashAttention formulation (naive::backward_from_stored).
template <class T>
void backward_rows(const Problem& p, const T* q, const T* k, const T* v, const T* out, const T* lse, const T* dout,
                   T* dq, T* dk, T* dv_out, T* dsinks) {
  const std::int64_t H = p.heads_q, Hk = p.heads_kv, G = p.group_size(), dqk = p.dim_qk, dv = p.dim_v;
  const Canonical canon(p);
  const T neg_inf = core::neg_inf<T>();
  std::fill(dq, dq + canon.tokens_q * H * dqk, T(0));
  std::fill(dk, dk + canon.tokens_k * Hk * dqk, T(0));
  std::fill(dv_out, dv_out + canon.tokens_k * Hk * dv, T(0));
  // One partial dsink per (batch, head), summed afterwards in a fixed order: reproducible for any thread count.
  std::vector<T> dsink_part(static_cast<std::size_t>(p.batch * H), T(0));

  // A task owns kv head hk of sequence b, so the dk/dv rows it accumulates into are its alone, and so are the dq
  // rows of the query heads of its group.
  const std::int64_t tasks = p.batch * Hk;
#pragma omp parallel for schedule(dynamic, 1) num_threads(thread_count(p))
  for (std::int64_t task = 0; task < tasks; ++task) {
    const std::int64_t b = task / Hk, hk = task % Hk;
    const core::SeqSpan s = p.span(b);
    const core::MaskRule rule = p.mask_rule(s);
    for (std::int64_t h = hk * G; h < (hk + 1) * G; ++h) {
      const ScoreFn<T> score_of{p.scale, p.softcap, p.alibi_slope(b, h), rule};
      T dsink = 0;
      for (std::int64_t i = 0; i < s.q_len; ++i) {
        const std::int64_t tq = Canonical::token_q(p, b, s, i);
        const T row_lse = lse[tq * H + h];
        // lse = -inf: the row saw nothing; P = 0 and every gradient of the row is zero, so skip it (no -inf - -inf).
        if (row_lse == neg_inf) continue;
        const T* q_row = q + (tq * H + h) * dqk;
        const T* do_row = dout + (tq * H + h) * dv;
        T* dq_row = dq + (tq * H + h) * dqk;
        const T D = dot(do_row, out + (tq * H + h) * dv, dv);
        if (p.sinks) dsink -= std::exp(static_cast<T>(p.sinks[h]) - row_lse) * D;
        const std::int64_t j0 = rule.key_begin(i), j1 = rule.key_end(i);
        for (std::int64_t j = j0; j < j1; ++j) {
          const std::int64_t tk = Canonical::token_k(p, b, s, j);
          const T* k_row = k + (tk * Hk + hk) * dqk;
          const T* v_row = v + (tk * Hk + hk) * dv;
          T capped = 0;
          const T P = std::exp(score_of(dot(q_row, k_row, dqk), i, j, &capped) - row_lse);
          const T dS = P * (dot(do_row, v_row, dv) - D);
          // Back through softcap (ALiBi is additive, so it passes dS unchanged) to the raw product, then the scale.
          const T d_raw = dS * core::softcap_grad_from_capped(capped, static_cast<T>(p.softcap)) * static_cast<T>(p.scale);
          axpy(d_raw, k_row, dq_row, dqk);
          axpy(d_raw, q_row, dk + (tk * Hk + hk) * dqk, dqk);
          axpy(P, do_row, dv_out + (tk * Hk + hk) * dv, dv);
        }
      }
      dsink_part[static_cast<std::size_t>(b * H + h)] = dsink;
    }
  }
  if (p.sinks && dsinks) {
    for (std::int64_t h = 0; h < H; ++h) {
      T sum = 0;
      for (std::int64_t b = 0; b < p.batch; ++b) sum += dsink_part[static_cast<std::size_t>(b * H + h)];
      dsinks[h] = sum;
    }
  }
}

}  // namespace

void backward_f64(const Problem& p, const double* q, const double* k, const double* v, const double* out,
                  const double* lse, const double* dout, double* dq, double* dk, double* dv, double* dsinks) {
  backward_rows<double>(p, q, k, v, out, lse, dout, dq, dk, dv, dsinks);
}

void backward_f32(const Problem& p, const float* q, const float* k, const float* v, const float* out,
                  const float* lse, const float* dout, float* dq, float* dk, float* dv, float* dsinks) {
  backward_rows<float>(p, q, k, v, out, lse, dout, dq, dk, dv, dsinks);
}

}  // namespace ioattn::cpu::ref

namespace ioattn::detail {
namespace {

using cpu::ref::gather;
using cpu::ref::scatter;

std::string reference_unsupported(const Problem& p, bool /*backward*/) {
  if (p.device != Device::cpu) {
    return std::string("the reference backend runs on the CPU; the tensors are on ") + to_string(p.device);
  }
  // Not a limit of the math: the API promises head dims up to 512, and every backend refuses the same beyond.
  constexpr std::int64_t kMaxHeadDim = 512;
  if (p.dim_qk > kMaxHeadDim || p.dim_v > kMaxHeadDim) {
    return "head dims up to " + std::to_string(kMaxHeadDim) + ", got head_dim_qk " + std::to_string(p.dim_qk) +
           " and head_dim_v " + std::to_string(p.dim_v);
  }
  return {};
}

std::size_t no_workspace(const Problem&) { return 0; }
std::size_t no_backward_workspace(const BackwardProblem&) { return 0; }

void reference_forward(const Problem& p) {
  const cpu::ref::Canonical canon(p);
  const auto q = gather(p, p.q, p.dtype, true, p.heads_q, p.dim_qk);
  const auto k = gather(p, p.k, p.dtype, false, p.heads_kv, p.dim_qk);
  const auto v = gather(p, p.v, p.dtype, false, p.heads_kv, p.dim_v);
  std::vector<double> out(static_cast<std::size_t>(canon.tokens_q * p.heads_q * p.dim_v));
  std::vector<double> lse(static_cast<std::size_t>(canon.tokens_q * p.heads_q));
  cpu::ref::forward_f64(p, q.data(), k.data(), v.data(), out.data(), lse.data());
  scatter(p, out, p.out, p.dtype, true, p.heads_q, p.dim_v);
  if (p.lse.ptr) scatter(p, lse, p.lse, DType::f32, true, p.heads_q, 1);
}

void reference_backward(const BackwardProblem& p) {
  const cpu::ref::Canonical canon(p);
  const auto q = gather(p, p.q, p.dtype, true, p.heads_q, p.dim_qk);
  const auto k = gather(p, p.k, p.dtype, false, p.heads_kv, p.dim_qk);
  const auto v = gather(p, p.v, p.dtype, false, p.heads_kv, p.dim_v);
  const auto out = gather(p, p.out, p.dtype, true, p.heads_q, p.dim_v);
  const auto dout = gather(p, p.dout, p.dtype, true, p.heads_q, p.dim_v);
  const auto lse = gather(p, p.lse, DType::f32, true, p.heads_q, 1);
  std::vector<double> dq(q.size()), dk(k.size()), dv(v.size()), dsinks(static_cast<std::size_t>(p.heads_q));
  cpu::ref::backward_f64(p, q.data(), k.data(), v.data(), out.data(), lse.data(), dout.data(), dq.data(), dk.data(),
                         dv.data(), dsinks.data());
  scatter(p, dq, p.dq, p.dtype, true, p.heads_q, p.dim_qk);
  scatter(p, dk, p.dk, p.dtype, false, p.heads_kv, p.dim_qk);
  scatter(p, dv, p.dv, p.dtype, false, p.heads_kv, p.dim_v);
  if (p.sinks && p.dsinks) {
    for (std::int64_t h = 0; h < p.heads_q; ++h) p.dsinks[h] = static_cast<float>(dsinks[static_cast<std::size_t>(h)]);
  }
}

}  // namespace

// Priority 0, the lowest of the CPU backends: "auto" picks it only when nothing faster supports the problem.
const Backend kReferenceBackend{"reference",           Device::cpu,       0,
                                reference_unsupported, no_workspace,      no_backward_workspace,
                                reference_forward,     reference_backward};

}  // namespace ioattn::detail
