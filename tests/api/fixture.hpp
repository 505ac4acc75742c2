// tests/api: small fp32 problems with owned buffers, outputs pre-filled with a sentinel so that a rejected call can be
// shown to have written nothing, and a helper that runs a call expected to be rejected.
#pragma once

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <vector>

#include "ioattn/ioattn.hpp"
#include "support/random.hpp"

namespace ioattn::apitest {

inline constexpr float kSentinel = 7.25f;

inline std::vector<float> random_vector(test::Rng& rng, std::int64_t n) {
  std::vector<float> x(static_cast<std::size_t>(n));
  for (float& e : x) e = static_cast<float>(rng.normal());
  return x;
}

// A dense ([batch, seqlen, heads, dim]) or varlen ([total, heads, dim]) fp32 problem with every buffer it can need.
struct Problem {
  std::int64_t batch, seqlen_q, seqlen_k, heads_q, heads_kv, dim_qk, dim_v;
  bool varlen = false;
  std::vector<std::int32_t> cu_q, cu_k;  // varlen only
  std::vector<float> q, k, v, out, lse, dout, dq, dk, dv, sinks, dsinks;

  std::int64_t rows_q() const { return varlen ? cu_q.back() : batch * seqlen_q; }
  std::int64_t rows_k() const { return varlen ? cu_k.back() : batch * seqlen_k; }

  // Dense.
  Problem(std::int64_t b, std::int64_t sq, std::int64_t sk, std::int64_t hq, std::int64_t hkv, std::int64_t d,
          std::int64_t dv_)
      : batch(b), seqlen_q(sq), seqlen_k(sk), heads_q(hq), heads_kv(hkv), dim_qk(d), dim_v(dv_) {
    allocate();
  }
  // Varlen, from per-sequence lengths.
  Problem(const std::vector<std::int32_t>& lens_q, const std::vector<std::int32_t>& lens_k, std::int64_t hq,
          std::int64_t hkv, std::int64_t d, std::int64_t dv_)
      : batch(static_cast<std::int64_t>(lens_q.size())), seqlen_q(0), seqlen_k(0), heads_q(hq), heads_kv(hkv),
        dim_qk(d), dim_v(dv_), varlen(true) {
    cu_q.push_back(0);
    cu_k.push_back(0);
    for (std::size_t b = 0; b < lens_q.size(); ++b) {
      cu_q.push_back(cu_q.back() + lens_q[b]);
      cu_k.push_back(cu_k.back() + lens_k[b]);
      seqlen_q = std::max<std::int64_t>(seqlen_q, lens_q[b]);
      seqlen_k = std::max<std::int64_t>(seqlen_k, lens_k[b]);
    }
    allocate();
  }

  void allocate() {
    test::Rng rng("apitest.Problem");
    q = random_vector(rng, rows_q() * heads_q * dim_qk);
    k = random_vector(rng, rows_k() * heads_kv * dim_qk);
    v = random_vector(rng, rows_k() * heads_kv * dim_v);
    dout = random_vector(rng, rows_q() * heads_q * dim_v);
    sinks = random_vector(rng, heads_q);
    out.assign(static_cast<std::size_t>(rows_q() * heads_q * dim_v), kSentinel);
    lse.assign(static_cast<std::size_t>(rows_q() * heads_q), kSentinel);
    dq.assign(q.size(), kSentinel);
    dk.assign(k.size(), kSentinel);
    dv.assign(v.size(), kSentinel);
    dsinks.assign(static_cast<std::size_t>(heads_q), kSentinel);
  }

  TensorView seq_view(std::vector<float>& x, std::int64_t rows, std::int64_t seqlen, std::int64_t heads,
                      std::int64_t dim) {
    if (varlen) return TensorView::contiguous(x.data(), DType::f32, {rows, heads, dim});
    return TensorView::contiguous(x.data(), DType::f32, {batch, seqlen, heads, dim});
  }
  TensorView q_view() { return seq_view(q, rows_q(), seqlen_q, heads_q, dim_qk); }
  TensorView k_view() { return seq_view(k, rows_k(), seqlen_k, heads_kv, dim_qk); }
  TensorView v_view() { return seq_view(v, rows_k(), seqlen_k, heads_kv, dim_v); }
  TensorView out_view() { return seq_view(out, rows_q(), seqlen_q, heads_q, dim_v); }
  TensorView dout_view() { return seq_view(dout, rows_q(), seqlen_q, heads_q, dim_v); }
  TensorView dq_view() { return seq_view(dq, rows_q(), seqlen_q, heads_q, dim_qk); }
  TensorView dk_view() { return seq_view(dk, rows_k(), seqlen_k, heads_kv, dim_qk); }
  TensorView dv_view() { return seq_view(dv, rows_k(), seqlen_k, heads_kv, dim_v); }
  TensorView lse_view() {
    if (varlen) return TensorView::contiguous(lse.data(), DType::f32, {heads_q, rows_q()});
    return TensorView::contiguous(lse.data(), DType::f32, {batch, heads_q, seqlen_q});
  }
  TensorView sinks_view() { return TensorView::contiguous(sinks.data(), DType::f32, {heads_q}); }
  TensorView dsinks_view() { return TensorView::contiguous(dsinks.data(), DType::f32, {heads_q}); }

  std::optional<Varlen> varlen_arg() {
    if (!varlen) return std::nullopt;
    Varlen vl;
    vl.cu_seqlens_q = TensorView::contiguous(cu_q.data(), DType::i32, {batch + 1});
    vl.cu_seqlens_k = TensorView::contiguous(cu_k.data(), DType::i32, {batch + 1});
    return vl;
  }

  ForwardArgs forward_args() { return {q_view(), k_view(), v_view(), out_view(), lse_view(), varlen_arg()}; }
  BackwardArgs backward_args() {
    // out and lse hold the sentinel: fine for argument checks, which never read tensor contents.
    return {q_view(), k_view(), v_view(), out_view(), dout_view(), lse_view(),
            dq_view(), dk_view(), dv_view(), TensorView{}, varlen_arg()};
  }

  static bool all_sentinel(const std::vector<float>& x) {
    for (float e : x) {
      if (!(e == kSentinel)) return false;
    }
    return true;
  }
  // Every buffer a call could write still holds the sentinel.
  bool outputs_untouched() const {
    return all_sentinel(out) && all_sentinel(lse) && all_sentinel(dq) && all_sentinel(dk) && all_sentinel(dv) &&
           all_sentinel(dsinks);
  }
};

struct Rejection {
  bool thrown = false;
  ErrorCode code = ErrorCode::invalid_argument;
  std::string message;
};

inline Rejection run_rejected(const std::function<void()>& call) {
  Rejection r;
  try {
    call();
  } catch (const Error& e) {
    r.thrown = true;
    r.code = e.code();
    r.message = e.what();
  }
  return r;
}

// The call must throw ioattn::Error with `code`, a message that starts with "<argument>: expected" (argument named
// first, the expectation stated) and contains each of `fragments`, and leave every output of `p` untouched.
inline void expect_rejected(Problem& p, const std::function<void()>& call, const std::string& argument,
                            std::vector<std::string> fragments = {},
                            ErrorCode code = ErrorCode::invalid_argument) {
  const Rejection r = run_rejected(call);
  ASSERT_TRUE(r.thrown) << "accepted, but expected an error naming " << argument;
  EXPECT_EQ(static_cast<int>(r.code), static_cast<int>(code)) << r.message;
  if (code == ErrorCode::invalid_argument) {
    EXPECT_EQ(r.message.rfind(argument + ": expected", 0), 0u) << "message: " << r.message;
  } else {
    EXPECT_NE(r.message.find(argument), std::string::npos) << "message: " << r.message;
  }
  if (code == ErrorCode::invalid_argument) {
    EXPECT_NE(r.message.find(", got "), std::string::npos) << "message: " << r.message;
  }
  for (const std::string& f : fragments) EXPECT_NE(r.message.find(f), std::string::npos) << "message: " << r.message;
  EXPECT_TRUE(p.outputs_untouched()) << "a rejected call wrote an output: " << r.message;
}

// fp64 attention for dense fp32 problems without mask or extras: what a successful call must produce.
inline void naive_attention(const Problem& p, std::vector<double>& out, std::vector<double>& lse,
                            double scale) {
  out.assign(p.out.size(), 0.0);
  lse.assign(p.lse.size(), 0.0);
  const std::int64_t group = p.heads_q / p.heads_kv;
  for (std::int64_t b = 0; b < p.batch; ++b) {
    for (std::int64_t h = 0; h < p.heads_q; ++h) {
      for (std::int64_t i = 0; i < p.seqlen_q; ++i) {
        std::vector<double> s(static_cast<std::size_t>(p.seqlen_k));
        double m = -INFINITY;
        for (std::int64_t j = 0; j < p.seqlen_k; ++j) {
          double dot = 0;
          for (std::int64_t c = 0; c < p.dim_qk; ++c) {
            dot += double(p.q[((b * p.seqlen_q + i) * p.heads_q + h) * p.dim_qk + c]) *
                   p.k[((b * p.seqlen_k + j) * p.heads_kv + h / group) * p.dim_qk + c];
          }
          s[j] = dot * scale;
          m = std::max(m, s[j]);
        }
        double sum = 0;
        for (double x : s) sum += std::exp(x - m);
        const double l = m + std::log(sum);
        lse[(b * p.heads_q + h) * p.seqlen_q + i] = l;
        for (std::int64_t j = 0; j < p.seqlen_k; ++j) {
          for (std::int64_t c = 0; c < p.dim_v; ++c) {
            out[((b * p.seqlen_q + i) * p.heads_q + h) * p.dim_v + c] +=
                std::exp(s[j] - l) * p.v[((b * p.seqlen_k + j) * p.heads_kv + h / group) * p.dim_v + c];
          }
        }
      }
    }
  }
}

}  // namespace ioattn::apitest
