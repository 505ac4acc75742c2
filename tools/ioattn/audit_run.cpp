// `ioattn check`: one audit case (audit.hpp): inputs, yardsticks, each implementation on the same inputs, errors.
#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <limits>

#include "api/validate.hpp"
#include "args.hpp"
#include "audit.hpp"
#include "cpu/reference.hpp"
#include "cpu/tensor_access.hpp"
#include "device_memory.hpp"
#include "ioattn/error.hpp"
#include "problem.hpp"
#include "run.hpp"
#include "numerics/error_bound.hpp"

namespace ioattn::cli {
namespace {

using Canon = std::vector<double>;

struct Yardsticks {
  Canon out, lse, dq, dk, dv;
};

ProblemSpec spec_of(const AuditCase& c, const AuditProblem& ap) {
  ProblemSpec s;
  s.batch = c.batch;
  s.heads_q = c.heads_q;
  s.heads_kv = c.heads_kv;
  s.seqlen_q = ap.seqlen_q;
  s.seqlen_k = ap.seqlen_k;
  s.dim_qk = s.dim_v = c.dim;
  s.dtype = c.dtype;
  s.mask = ap.mask;
  s.softcap = ap.softcap;
  s.seed = c.seed;
  return s;
}

void scale_tensor(HostTensor& t, float factor) {
  for (std::int64_t e = 0; e < t.numel(); ++e) t.set(e, t.at(e) * factor);
}

// q_i = u + 0.3 z_i for one shared direction u per (batch, kv head), and one key k_j* = a u with a chosen so that
// its logit q_i . k_j* / sqrt(d) is near 12 while the other logits stay near N(0, 1): softmax mass
// 1 - O(seqlen * e^-12) on one key, the regime where the backward's D_i = dO_i . O_i cancels against dP_ij.
void make_dominant_key(const ProblemSpec& s, HostInputs& in) {
  const std::int64_t d = s.dim_qk, group = s.heads_q / s.heads_kv;
  for (std::int64_t b = 0; b < s.batch; ++b) {
    for (std::int64_t hk = 0; hk < s.heads_kv; ++hk) {
      // u: the first query row of the group, as drawn (standard normal, so |u|^2 is near d).
      const std::int64_t u_at = ((b * s.seqlen_q) * s.heads_q + hk * group) * d;
      std::vector<float> u(static_cast<std::size_t>(d));
      double norm2 = 0;
      for (std::int64_t c = 0; c < d; ++c) norm2 += double(u[c] = in.q.at(u_at + c)) * u[c];
      for (std::int64_t i = 0; i < s.seqlen_q; ++i) {
        for (std::int64_t h = hk * group; h < (hk + 1) * group; ++h) {
          const std::int64_t at = ((b * s.seqlen_q + i) * s.heads_q + h) * d;
          for (std::int64_t c = 0; c < d; ++c) {
            if (at != u_at) in.q.set(at + c, u[c] + 0.3f * in.q.at(at + c));
          }
        }
      }
      // logit = a * |u|^2 / sqrt(d) = 12  =>  a = 12 sqrt(d) / |u|^2.
      const double a = 12.0 * std::sqrt(double(d)) / std::max(norm2, 1e-6);
      const std::int64_t j = (b * 7919 + hk * 104729 + 13) % s.seqlen_k;
      const std::int64_t at = ((b * s.seqlen_k + j) * s.heads_kv + hk) * d;
      for (std::int64_t c = 0; c < d; ++c) in.k.set(at + c, static_cast<float>(a * u[c]));
    }
  }
}

HostInputs draw_inputs(const AuditCase& c, const ProblemSpec& s) {
  HostInputs in = make_inputs(s, /*with_backward=*/true);
  switch (c.input) {
    case AuditInput::large_logits:
      scale_tensor(in.q, 5.0f);
      scale_tensor(in.k, 5.0f);
      break;
    case AuditInput::softcap_limit:
      scale_tensor(in.q, 8.0f);
      scale_tensor(in.k, 8.0f);
      break;
    case AuditInput::dominant_key: make_dominant_key(s, in); break;
    case AuditInput::random:
    case AuditInput::masked_rows: break;
  }
  return in;
}

TensorView view_of(void* data, DType dtype, std::initializer_list<std::int64_t> shape, Device device) {
  return TensorView::contiguous(data, dtype, shape, device);
}

// The five output tensors of one run, in the canonical layout, or the yardsticks'.
struct Outputs {
  Canon out, lse, dq, dk, dv;
};

TensorAudit audit_tensor(const std::string& name, const Canon& got, const Canon& ref, const Canon& naive,
                         const Canon* stored, double eps) {
  const numerics::Comparison cmp = numerics::compare(name, got, ref, naive, eps, stored);
  TensorAudit t;
  t.tensor = name;
  t.count = cmp.count;
  double sum_abs = 0, sum_naive = 0, sum_ref = 0;
  std::int64_t n = 0;
  for (std::size_t e = 0; e < ref.size(); ++e) {
    if (!std::isfinite(ref[e]) || !std::isfinite(got[e])) continue;
    sum_abs += std::fabs(got[e] - ref[e]);
    sum_naive += std::fabs(naive[e] - ref[e]);
    sum_ref += std::fabs(ref[e]);
    ++n;
  }
  t.max_abs = cmp.err;
  t.mean_abs = n > 0 ? sum_abs / double(n) : 0.0;
  t.max_rel = cmp.ref_max > 0 ? cmp.err / cmp.ref_max : 0.0;
  t.mean_rel = sum_ref > 0 ? sum_abs / sum_ref : 0.0;
  t.naive_max_abs = cmp.naive_err;
  t.naive_mean_abs = n > 0 ? sum_naive / double(n) : 0.0;
  t.ratio = cmp.naive_err > 0 ? cmp.err / cmp.naive_err
                              : (cmp.err > 0 ? std::numeric_limits<double>::infinity() : 1.0);
  t.bound = cmp.bound;
  t.nonfinite = cmp.non_finite + cmp.inf_mismatch;
  t.pass = cmp.ok();
  return t;
}

// Sets IOATTN_CPU_TILES for the lifetime of one run (src/cpu/tiled_common.hpp reads it on every call).
class TileOverride {
 public:
  explicit TileOverride(const std::string& tiles) {
    if (tiles.empty() || tiles == "default") {
      ::unsetenv("IOATTN_CPU_TILES");
    } else {
      ::setenv("IOATTN_CPU_TILES", tiles.c_str(), 1);
    }
  }
  ~TileOverride() { ::unsetenv("IOATTN_CPU_TILES"); }
  TileOverride(const TileOverride&) = delete;
  TileOverride& operator=(const TileOverride&) = delete;
};

}  // namespace

const char* audit_input_name(AuditInput input) {
  switch (input) {
    case AuditInput::random: return "random";
    case AuditInput::large_logits: return "large_logits";
    case AuditInput::softcap_limit: return "softcap_limit";
    case AuditInput::dominant_key: return "dominant_key";
    case AuditInput::masked_rows: return "masked_rows";
  }
  return "?";
}

AuditInput parse_audit_input(const std::string& text) {
  for (AuditInput i : {AuditInput::random, AuditInput::large_logits, AuditInput::softcap_limit,
                       AuditInput::dominant_key, AuditInput::masked_rows}) {
    if (text == audit_input_name(i)) return i;
  }
  throw UsageError("--inputs expects random, large_logits, softcap_limit, dominant_key or masked_rows, got '" +
                   text + "'");
}

bool AuditRun::pass() const {
  if (!error.empty()) return true;  // a refusal is reported, not judged: the table says which problems were skipped
  return std::all_of(tensors.begin(), tensors.end(), [](const TensorAudit& t) { return t.pass; });
}

AuditProblem audit_problem(const AuditCase& c) {
  AuditProblem ap;
  ap.seqlen_q = ap.seqlen_k = c.seqlen;
  switch (c.input) {
    case AuditInput::random:
    case AuditInput::large_logits: ap.mask = c.causal ? Mask::causal() : Mask::none(); break;
    case AuditInput::softcap_limit:
      ap.mask = Mask::causal();
      ap.softcap = 5.0f;
      break;
    case AuditInput::dominant_key: ap.mask = Mask::none(); break;
    case AuditInput::masked_rows:
      ap.seqlen_k = std::max<std::int64_t>(c.seqlen / 2, 1);
      ap.mask = Mask::causal(Alignment::bottom_right);
      break;
  }
  return ap;
}

std::vector<AuditRun> run_audit_case(const AuditCase& c, const std::vector<AuditTarget>& targets,
                                     const AuditOptions& options) {
  const AuditProblem ap = audit_problem(c);
  const ProblemSpec s = spec_of(c, ap);
  const HostInputs in = draw_inputs(c, s);
  const std::int64_t B = s.batch, Sq = s.seqlen_q, Sk = s.seqlen_k, Hq = s.heads_q, Hk = s.heads_kv, D = s.dim_qk;

  // Host mirrors of the outputs: the problem below points at them, and every run's results land in them.
  HostTensor out(s.dtype, {B, Sq, Hq, D}), lse(DType::f32, {B, Hq, Sq});
  HostTensor dq(s.dtype, {B, Sq, Hq, D}), dk(s.dtype, {B, Sk, Hk, D}), dv(s.dtype, {B, Sk, Hk, D});
  const Device host = Device::cpu;
  BackwardArgs host_args;
  host_args.q = view_of(const_cast<std::byte*>(in.q.bytes.data()), s.dtype, {B, Sq, Hq, D}, host);
  host_args.k = view_of(const_cast<std::byte*>(in.k.bytes.data()), s.dtype, {B, Sk, Hk, D}, host);
  host_args.v = view_of(const_cast<std::byte*>(in.v.bytes.data()), s.dtype, {B, Sk, Hk, D}, host);
  host_args.dout = view_of(const_cast<std::byte*>(in.dout.bytes.data()), s.dtype, {B, Sq, Hq, D}, host);
  host_args.out = view_of(out.data(), s.dtype, {B, Sq, Hq, D}, host);
  host_args.lse = view_of(lse.data(), DType::f32, {B, Hq, Sq}, host);
  host_args.dq = view_of(dq.data(), s.dtype, {B, Sq, Hq, D}, host);
  host_args.dk = view_of(dk.data(), s.dtype, {B, Sk, Hk, D}, host);
  host_args.dv = view_of(dv.data(), s.dtype, {B, Sk, Hk, D}, host);
  AttentionParams ref_params;
  ref_params.mask = s.mask;
  ref_params.softcap = s.softcap;
  ref_params.impl = "reference";
  ref_params.num_threads = options.threads;
  const detail::BackwardProblem p = detail::make_backward_problem(host_args, ref_params);

  namespace ref = cpu::ref;
  const Canon q64 = ref::gather(p, p.q, s.dtype, true, Hq, D), k64 = ref::gather(p, p.k, s.dtype, false, Hk, D);
  const Canon v64 = ref::gather(p, p.v, s.dtype, false, Hk, D), dout64 = ref::gather(p, p.dout, s.dtype, true, Hq, D);
  const ref::Canonical canon(p);
  const auto nq = static_cast<std::size_t>(canon.tokens_q * Hq);
  Outputs want{Canon(nq * D), Canon(nq), Canon(q64.size()), Canon(k64.size()), Canon(v64.size())};
  Outputs naive = want, stored = want;
  Canon no_sinks;
  ref::forward_f64(p, q64.data(), k64.data(), v64.data(), want.out.data(), want.lse.data());
  cpu::naive::forward(p, s.dtype, q64.data(), k64.data(), v64.data(), naive.out.data(), naive.lse.data());
  if (c.backward) {
    // The exact gradient comes from the fp64 out and lse; the stored yardstick from them as a backend keeps them.
    ref::backward_f64(p, q64.data(), k64.data(), v64.data(), want.out.data(), want.lse.data(), dout64.data(),
                      want.dq.data(), want.dk.data(), want.dv.data(), nullptr);
    cpu::naive::backward(p, s.dtype, q64.data(), k64.data(), v64.data(), dout64.data(), naive.dq.data(),
                         naive.dk.data(), naive.dv.data(), nullptr);
    Canon out_stored(want.out.size()), lse_stored(want.lse.size());
    for (std::size_t e = 0; e < out_stored.size(); ++e) {
      out_stored[e] = cpu::round_to(s.dtype, static_cast<float>(want.out[e]));
    }
    for (std::size_t e = 0; e < lse_stored.size(); ++e) lse_stored[e] = static_cast<float>(want.lse[e]);
    cpu::naive::backward_from_stored(p, s.dtype, q64.data(), k64.data(), v64.data(), out_stored.data(),
                                     lse_stored.data(), dout64.data(), stored.dq.data(), stored.dk.data(),
                                     stored.dv.data(), nullptr);
  }

  const double eps = numerics::dtype_eps(s.dtype), eps_lse = numerics::dtype_eps(DType::f32);
  const auto judge = [&](const Outputs& got) {
    std::vector<TensorAudit> t;
    t.push_back(audit_tensor("out", got.out, want.out, naive.out, nullptr, eps));
    t.push_back(audit_tensor("lse", got.lse, want.lse, naive.lse, nullptr, eps_lse));
    if (c.backward) {
      t.push_back(audit_tensor("dq", got.dq, want.dq, naive.dq, &stored.dq, eps));
      t.push_back(audit_tensor("dk", got.dk, want.dk, naive.dk, &stored.dk, eps));
      t.push_back(audit_tensor("dv", got.dv, want.dv, naive.dv, &stored.dv, eps));
    }
    return t;
  };

  std::vector<AuditRun> runs;
  runs.push_back({"naive", "", judge(naive), ""});

  for (const AuditTarget& target : targets) {
    const std::vector<std::string> tiles = target.tiles.empty() ? std::vector<std::string>{""} : target.tiles;
    for (const std::string& tile : tiles) {
      AuditRun run{target.impl, tile.empty() ? "default" : tile, {}, ""};
      const TileOverride override_tiles(tile);
      const Device dev = target.device;
      void* stream = dev == Device::cuda ? gpu::create_stream() : nullptr;
      try {
        DeviceBuffer bq(dev, in.q.bytes.size()), bk(dev, in.k.bytes.size()), bv(dev, in.v.bytes.size());
        DeviceBuffer bdo(dev, in.dout.bytes.size()), bo(dev, out.bytes.size()), bl(dev, lse.bytes.size());
        DeviceBuffer bdq(dev, dq.bytes.size()), bdk(dev, dk.bytes.size()), bdv(dev, dv.bytes.size());
        bq.upload(in.q.data());
        bk.upload(in.k.data());
        bv.upload(in.v.data());
        bdo.upload(in.dout.data());
        for (DeviceBuffer* b : {&bo, &bl, &bdq, &bdk, &bdv}) b->poison(stream);
        if (dev == Device::cuda) gpu::synchronize_device();
        BackwardArgs a;
        a.q = view_of(bq.data(), s.dtype, {B, Sq, Hq, D}, dev);
        a.k = view_of(bk.data(), s.dtype, {B, Sk, Hk, D}, dev);
        a.v = view_of(bv.data(), s.dtype, {B, Sk, Hk, D}, dev);
        a.dout = view_of(bdo.data(), s.dtype, {B, Sq, Hq, D}, dev);
        a.out = view_of(bo.data(), s.dtype, {B, Sq, Hq, D}, dev);
        a.lse = view_of(bl.data(), DType::f32, {B, Hq, Sq}, dev);
        a.dq = view_of(bdq.data(), s.dtype, {B, Sq, Hq, D}, dev);
        a.dk = view_of(bdk.data(), s.dtype, {B, Sk, Hk, D}, dev);
        a.dv = view_of(bdv.data(), s.dtype, {B, Sk, Hk, D}, dev);
        ForwardArgs f{a.q, a.k, a.v, a.out, a.lse, std::nullopt};
        AttentionParams params = ref_params;
        params.impl = target.impl;
        params.stream = stream;
        DeviceBuffer fwd_ws(dev, forward_workspace_bytes(f, params));
        params.workspace = {fwd_ws.data(), fwd_ws.bytes()};
        attention_forward(f, params);
        if (c.backward) {
          params.workspace = {};
          DeviceBuffer bwd_ws(dev, backward_workspace_bytes(a, params));
          params.workspace = {bwd_ws.data(), bwd_ws.bytes()};
          attention_backward(a, params);
          if (dev == Device::cuda) gpu::synchronize(stream);
        }
        if (dev == Device::cuda) gpu::synchronize(stream);
        bo.download(out.data());
        bl.download(lse.data());
        bdq.download(dq.data());
        bdk.download(dk.data());
        bdv.download(dv.data());
      } catch (const Error& e) {
        run.error = e.what();
      }
      if (stream != nullptr) gpu::destroy_stream(stream);
      if (run.error.empty()) {
        Outputs got;
        got.out = ref::gather(p, p.out, s.dtype, true, Hq, D);
        got.lse = ref::gather(p, p.lse, DType::f32, true, Hq, 1);
        if (c.backward) {
          got.dq = ref::gather(p, p.dq, s.dtype, true, Hq, D);
          got.dk = ref::gather(p, p.dk, s.dtype, false, Hk, D);
          got.dv = ref::gather(p, p.dv, s.dtype, false, Hk, D);
        }
        if (options.inject_error > 0) {
          // Proves the judgement can fail: a perturbation the size of a real bug in one element per tensor.
          for (auto* t : {&got.out, &got.lse, &got.dq, &got.dk, &got.dv}) {
            if (t->empty()) continue;
            double scale = 0;
            for (double x : *t) scale = std::isfinite(x) ? std::max(scale, std::fabs(x)) : scale;
            const auto e = static_cast<std::size_t>(std::find_if(t->begin(), t->end(), [](double x) {
                                                      return std::isfinite(x);
                                                    }) - t->begin());
            if (e < t->size()) (*t)[e] += options.inject_error * std::max(scale, 1.0);
          }
        }
        run.tensors = judge(got);
      }
      runs.push_back(std::move(run));
    }
  }
  return runs;
}

}  // namespace ioattn::cli
