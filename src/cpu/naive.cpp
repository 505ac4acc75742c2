// ioattn: the naive same-precision baseline (not a backend). Its error against the fp64 reference is the yardstick
// a backend's error is held to (src/numerics/error_bound.hpp), so it must round where a plain PyTorch program rounds:
//   qs = q * scale                  (dtype)          S  = qs k^T            (fp32 accumulate, dtype result)
//   S  = softcap * tanh(S / softcap) (each op in dtype)  S += alibi bias (fp32), masked -> -inf
//   P  = softmax(S [, sink])         (fp32, result in dtype)   O = P v      (fp32 accumulate, dtype result)
// and the autograd backward of exactly that, each product and softmax-backward rounded to dtype. GQA grads are
// rounded per query head and then summed, like the gradient of a repeat_interleave.
// Row by row, with fp32 accumulators for the dk/dv columns: no score matrix is stored.
// At the end, backward_from_stored: the second yardstick for gradients (src/cpu/reference.hpp says why).
#include <omp.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <vector>

#include "cpu/reference.hpp"
#include "cpu/tensor_access.hpp"

namespace ioattn::cpu::naive {
namespace {

using detail::Problem;
using ref::Canonical;

constexpr float kNegInf = -std::numeric_limits<float>::infinity();

int thread_count(const Problem& p) { return p.num_threads > 0 ? p.num_threads : omp_get_max_threads(); }

// A dtype-rounded matrix product entry: fp32 accumulation (as cuBLAS and the CPU GEMMs do), rounded result.
float dot_rounded(DType dtype, const float* a, const float* b, std::int64_t n) {
  float acc = 0.0f;
  for (std::int64_t c = 0; c < n; ++c) acc += a[c] * b[c];
  return round_to(dtype, acc);
}

std::vector<float> to_f32(const double* src, std::int64_t n) { return std::vector<float>(src, src + n); }

// The rounded scores of row i of (b, h) over keys [j0, j1), and the tanh values the softcap backward needs.
struct RowScores {
  std::vector<float> s;      // final logits (dtype-rounded up to the ALiBi add)
  std::vector<float> tanh_;  // softcap only: tanh(S / softcap) as rounded to dtype
};

class Head {
 public:
  Head(const Problem& p, DType dtype, const std::vector<float>& q, const std::vector<float>& k, std::int64_t b,
       std::int64_t h)
      : p_(p), dtype_(dtype), q_(q), k_(k), b_(b), h_(h), hk_(h / p.group_size()), span_(p.span(b)),
        rule_(p.mask_rule(span_)), qs_(static_cast<std::size_t>(p.dim_qk)) {}

  const core::SeqSpan& span() const { return span_; }
  const core::MaskRule& rule() const { return rule_; }
  const std::vector<float>& qs() const { return qs_; }
  std::int64_t key_row(std::int64_t j) const { return Canonical::token_k(p_, b_, span_, j) * p_.heads_kv + hk_; }
  std::int64_t query_row(std::int64_t i) const { return Canonical::token_q(p_, b_, span_, i) * p_.heads_q + h_; }

  // Fills r for query row i, keys [j0, j1). Also leaves the scaled, rounded query in qs().
  void scores(std::int64_t i, std::int64_t j0, std::int64_t j1, RowScores& r) {
    const float scale = p_.scale, cap = p_.softcap, slope = p_.alibi_slope(b_, h_);
    const float* q_row = q_.data() + query_row(i) * p_.dim_qk;
    for (std::int64_t c = 0; c < p_.dim_qk; ++c) qs_[c] = round_to(dtype_, q_row[c] * scale);
    r.s.assign(static_cast<std::size_t>(j1 - j0), 0.0f);
    r.tanh_.assign(static_cast<std::size_t>(j1 - j0), 0.0f);
    for (std::int64_t j = j0; j < j1; ++j) {
      float s = dot_rounded(dtype_, qs_.data(), k_.data() + key_row(j) * p_.dim_qk, p_.dim_qk);
      if (cap > 0.0f) {
        const float t = round_to(dtype_, std::tanh(round_to(dtype_, s / cap)));
        r.tanh_[j - j0] = t;
        s = round_to(dtype_, t * cap);
      }
      if (slope != 0.0f) {
        const std::int64_t dist = j > rule_.diag(i) ? j - rule_.diag(i) : rule_.diag(i) - j;
        s -= slope * static_cast<float>(dist);
      }
      r.s[j - j0] = s;
    }
  }

  // Softmax over the row (and the sink) in fp32; P rounded to dtype in place of r.s. Returns lse (fp32), -inf when
  // the row sees nothing; *p_sink receives the sink's rounded probability.
  float softmax(RowScores& r, float* p_sink) const {
    const bool has_sink = p_.sinks != nullptr;
    const float sink = has_sink ? p_.sinks[h_] : kNegInf;
    float m = sink;
    for (float s : r.s) m = std::max(m, s);
    *p_sink = 0.0f;
    if (m == kNegInf) {
      std::fill(r.s.begin(), r.s.end(), 0.0f);
      return kNegInf;
    }
    float sum = has_sink ? std::exp(sink - m) : 0.0f;
    for (float s : r.s) sum += std::exp(s - m);
    for (float& s : r.s) s = round_to(dtype_, std::exp(s - m) / sum);
    if (has_sink) *p_sink = round_to(dtype_, std::exp(sink - m) / sum);
    return m + std::log(sum);
  }

 private:
  const Problem& p_;
  DType dtype_;
  const std::vector<float>& q_;
  const std::vector<float>& k_;
  std::int64_t b_, h_, hk_;
  core::SeqSpan span_;
  core::MaskRule rule_;
  std::vector<float> qs_;
};

}  // namespace

void forward(const Problem& p, DType dtype, const double* q64, const double* k64, const double* v64, double* out,
             double* lse) {
  const Canonical canon(p);
  const auto q = to_f32(q64, canon.tokens_q * p.heads_q * p.dim_qk);
  const auto k = to_f32(k64, canon.tokens_k * p.heads_kv * p.dim_qk);
  const auto v = to_f32(v64, canon.tokens_k * p.heads_kv * p.dim_v);
  const std::int64_t tasks = p.batch * p.heads_q, dv = p.dim_v;
#pragma omp parallel num_threads(thread_count(p))
  {
    RowScores r;
    std::vector<float> acc(static_cast<std::size_t>(dv));
#pragma omp for schedule(dynamic, 1)
    for (std::int64_t task = 0; task < tasks; ++task) {
      Head head(p, dtype, q, k, task / p.heads_q, task % p.heads_q);
      for (std::int64_t i = 0; i < head.span().q_len; ++i) {
        const std::int64_t j0 = head.rule().key_begin(i), j1 = std::max(head.rule().key_end(i), j0);
        head.scores(i, j0, j1, r);
        float p_sink;
        const float row_lse = head.softmax(r, &p_sink);
        std::fill(acc.begin(), acc.end(), 0.0f);
        for (std::int64_t j = j0; j < j1; ++j) {
          const float* v_row = v.data() + head.key_row(j) * dv;
          for (std::int64_t c = 0; c < dv; ++c) acc[c] += r.s[j - j0] * v_row[c];
        }
        const std::int64_t row = head.query_row(i);
        for (std::int64_t c = 0; c < dv; ++c) out[row * dv + c] = round_to(dtype, acc[c]);
        lse[row] = row_lse;
      }
    }
  }
}

void backward(const Problem& p, DType dtype, const double* q64, const double* k64, const double* v64,
              const double* dout64, double* dq, double* dk, double* dv_out, double* dsinks) {
  const Canonical canon(p);
  const std::int64_t H = p.heads_q, Hk = p.heads_kv, G = p.group_size(), dqk = p.dim_qk, dv = p.dim_v;
  const auto q = to_f32(q64, canon.tokens_q * H * dqk);
  const auto k = to_f32(k64, canon.tokens_k * Hk * dqk);
  const auto v = to_f32(v64, canon.tokens_k * Hk * dv);
  const auto dout = to_f32(dout64, canon.tokens_q * H * dv);
  std::fill(dq, dq + canon.tokens_q * H * dqk, 0.0);
  std::fill(dk, dk + canon.tokens_k * Hk * dqk, 0.0);
  std::fill(dv_out, dv_out + canon.tokens_k * Hk * dv, 0.0);
  std::vector<float> dsink_part(static_cast<std::size_t>(p.batch * H), 0.0f);

  // A task owns kv head hk of sequence b (its dk/dv rows and the dq rows of its query heads), as in the reference.
  const std::int64_t tasks = p.batch * Hk;
#pragma omp parallel num_threads(thread_count(p))
  {
    RowScores r;
    std::vector<float> dp, ds, acc_dq(static_cast<std::size_t>(dqk));
    std::vector<float> head_dk, head_dv, group_dk, group_dv;  // [k_len, dim] fp32 column accumulators
#pragma omp for schedule(dynamic, 1)
    for (std::int64_t task = 0; task < tasks; ++task) {
      const std::int64_t b = task / Hk;
      const core::SeqSpan span = p.span(b);
      const std::size_t nk = static_cast<std::size_t>(span.k_len);
      group_dk.assign(nk * dqk, 0.0f);
      group_dv.assign(nk * dv, 0.0f);
      for (std::int64_t h = (task % Hk) * G; h < (task % Hk + 1) * G; ++h) {
        Head head(p, dtype, q, k, b, h);
        head_dk.assign(nk * dqk, 0.0f);
        head_dv.assign(nk * dv, 0.0f);
        float dsink = 0.0f;
        for (std::int64_t i = 0; i < span.q_len; ++i) {
          const std::int64_t j0 = head.rule().key_begin(i), j1 = std::max(head.rule().key_end(i), j0);
          head.scores(i, j0, j1, r);
          float p_sink;
          if (head.softmax(r, &p_sink) == kNegInf) continue;  // no key, no sink: zero gradients
          const std::int64_t row = head.query_row(i);
          const float* do_row = dout.data() + row * dv;
          dp.assign(static_cast<std::size_t>(j1 - j0), 0.0f);
          float row_dot = 0.0f;  // sum_j P_ij dP_ij, what softmax's backward subtracts
          for (std::int64_t j = j0; j < j1; ++j) {
            dp[j - j0] = dot_rounded(dtype, do_row, v.data() + head.key_row(j) * dv, dv);
            row_dot += r.s[j - j0] * dp[j - j0];
          }
          // The sink is one more softmax column, with dP = 0: its softmax-backward entry, rounded like the others.
          dsink += round_to(dtype, p_sink * (0.0f - row_dot));
          ds.assign(static_cast<std::size_t>(j1 - j0), 0.0f);
          for (std::int64_t j = j0; j < j1; ++j) {
            float d = round_to(dtype, r.s[j - j0] * (dp[j - j0] - row_dot));
            if (p.softcap > 0.0f) {
              const float t = r.tanh_[j - j0];
              d = round_to(dtype, d * round_to(dtype, 1.0f - t * t));
            }
            ds[j - j0] = d;
          }
          std::fill(acc_dq.begin(), acc_dq.end(), 0.0f);
          for (std::int64_t j = j0; j < j1; ++j) {
            const float* k_row = k.data() + head.key_row(j) * dqk;
            const float d = ds[j - j0], pj = r.s[j - j0];
            float* dk_col = head_dk.data() + j * dqk;
            float* dv_col = head_dv.data() + j * dv;
            for (std::int64_t c = 0; c < dqk; ++c) acc_dq[c] += d * k_row[c];
            for (std::int64_t c = 0; c < dqk; ++c) dk_col[c] += d * head.qs()[c];
            for (std::int64_t c = 0; c < dv; ++c) dv_col[c] += pj * do_row[c];
          }
          // d(q * scale)/dq: the gradient of the scaled query, rounded, then scaled and rounded again.
          for (std::int64_t c = 0; c < dqk; ++c) {
            dq[row * dqk + c] = round_to(dtype, round_to(dtype, acc_dq[c]) * p.scale);
          }
        }
        for (std::size_t e = 0; e < group_dk.size(); ++e) group_dk[e] += round_to(dtype, head_dk[e]);
        for (std::size_t e = 0; e < group_dv.size(); ++e) group_dv[e] += round_to(dtype, head_dv[e]);
        dsink_part[static_cast<std::size_t>(b * H + h)] = dsink;
      }
      Head any_head(p, dtype, q, k, b, (task % Hk) * G);
      for (std::int64_t j = 0; j < span.k_len; ++j) {
        const std::int64_t krow = any_head.key_row(j);
        for (std::int64_t c = 0; c < dqk; ++c) dk[krow * dqk + c] = round_to(dtype, group_dk[j * dqk + c]);
        for (std::int64_t c = 0; c < dv; ++c) dv_out[krow * dv + c] = round_to(dtype, group_dv[j * dv + c]);
      }
    }
  }
  if (p.sinks && dsinks) {
    for (std::int64_t h = 0; h < H; ++h) {
      float sum = 0.0f;
      for (std::int64_t b = 0; b < p.batch; ++b) sum += dsink_part[static_cast<std::size_t>(b * H + h)];
      dsinks[h] = round_to(dtype, sum);  // the sum of a dtype tensor is a dtype value
    }
  }
}

void backward_from_stored(const Problem& p, DType dtype, const double* q64, const double* k64, const double* v64,
                          const double* out64, const double* lse64, const double* dout64, double* dq, double* dk,
                          double* dv_out, double* dsinks) {
  const Canonical canon(p);
  const std::int64_t H = p.heads_q, Hk = p.heads_kv, dqk = p.dim_qk, dv = p.dim_v;
  const auto q = to_f32(q64, canon.tokens_q * H * dqk);
  const auto k = to_f32(k64, canon.tokens_k * Hk * dqk);
  const auto v = to_f32(v64, canon.tokens_k * Hk * dv);
  const auto out = to_f32(out64, canon.tokens_q * H * dv);
  const auto lse = to_f32(lse64, canon.tokens_q * H);
  const auto dout = to_f32(dout64, canon.tokens_q * H * dv);
  std::vector<float> gq(q.size()), gk(k.size()), gv(v.size()), gs(static_cast<std::size_t>(H));
  ref::backward_f32(p, q.data(), k.data(), v.data(), out.data(), lse.data(), dout.data(), gq.data(), gk.data(),
                    gv.data(), gs.data());
  for (std::size_t e = 0; e < gq.size(); ++e) dq[e] = round_to(dtype, gq[e]);
  for (std::size_t e = 0; e < gk.size(); ++e) dk[e] = round_to(dtype, gk[e]);
  for (std::size_t e = 0; e < gv.size(); ++e) dv_out[e] = round_to(dtype, gv[e]);
  if (p.sinks && dsinks) std::copy(gs.begin(), gs.end(), dsinks);
}

}  // namespace ioattn::cpu::naive
