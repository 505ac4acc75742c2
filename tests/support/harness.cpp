#include "support/harness.hpp"

#include <algorithm>
#include <array>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <map>
#include <numeric>
#include <stdexcept>

#include "api/validate.hpp"
#include "cpu/reference.hpp"
#include "cpu/tensor_access.hpp"
#include "support/random.hpp"

namespace ioattn::test {
namespace {

// An operand [batch, rows, heads, dim] (dense) or [rows, heads, dim] (varlen) in its own buffer. Padded operands
// leave gaps after each head, each row and each batch, so a backend that assumes contiguity reads the wrong data.
TensorView make_operand(HostBuffer& buf, DType dtype, bool varlen, std::int64_t batch, std::int64_t rows,
                        std::int64_t heads, std::int64_t dim, bool padded) {
  const std::int64_t head_stride = padded ? dim + 8 : dim;
  const std::int64_t row_stride = padded ? heads * head_stride + 16 : heads * dim;
  if (varlen) {
    buf = HostBuffer(dtype, std::max<std::int64_t>(rows * row_stride, 1));
    return buf.view({rows, heads, dim}, {row_stride, head_stride, 1});
  }
  const std::int64_t batch_stride = padded ? rows * row_stride + 32 : rows * row_stride;
  buf = HostBuffer(dtype, std::max<std::int64_t>(batch * batch_stride, 1));
  return buf.view({batch, rows, heads, dim}, {batch_stride, row_stride, head_stride, 1});
}

// Marks every element offset `v` (a view into `buf`) addresses.
void mark_view(const TensorView& v, const HostBuffer& buf, std::vector<char>& marked) {
  if (v.data == nullptr) return;
  const std::int64_t base = (static_cast<const std::byte*>(v.data) - static_cast<const std::byte*>(buf.data())) /
                            static_cast<std::int64_t>(dtype_size(buf.dtype()));
  std::array<std::int64_t, kMaxRank> extent{1, 1, 1, 1}, stride{0, 0, 0, 0};
  for (int d = 0; d < v.rank; ++d) {
    extent[kMaxRank - v.rank + d] = v.shape[d];
    stride[kMaxRank - v.rank + d] = v.stride[d];
  }
  for (std::int64_t a = 0; a < extent[0]; ++a)
    for (std::int64_t b = 0; b < extent[1]; ++b)
      for (std::int64_t c = 0; c < extent[2]; ++c)
        for (std::int64_t d = 0; d < extent[3]; ++d) {
          marked[static_cast<std::size_t>(base + a * stride[0] + b * stride[1] + c * stride[2] + d * stride[3])] = 1;
        }
}

}  // namespace

CaseData::CaseData(const Case& c) : case_(c) {
  allocate();
  draw_inputs();
  inputs_drawn_ = snapshot_inputs();
  problem_ = detail::make_backward_problem(backward_args(), params("reference"));

  const detail::Problem& p = problem_;
  const cpu::ref::Canonical canon(p);
  q64_ = cpu::ref::gather(p, p.q, c.dtype, true, c.heads_q, c.dim_qk);
  k64_ = cpu::ref::gather(p, p.k, c.dtype, false, c.heads_kv, c.dim_qk);
  v64_ = cpu::ref::gather(p, p.v, c.dtype, false, c.heads_kv, c.dim_v);
  for (Results* r : {&ref_, &naive_}) {
    r->out.resize(static_cast<std::size_t>(canon.tokens_q * c.heads_q * c.dim_v));
    r->lse.resize(static_cast<std::size_t>(canon.tokens_q * c.heads_q));
  }
  cpu::ref::forward_f64(p, q64_.data(), k64_.data(), v64_.data(), ref_.out.data(), ref_.lse.data());
  cpu::naive::forward(p, c.dtype, q64_.data(), k64_.data(), v64_.data(), naive_.out.data(), naive_.lse.data());
}

// The backward yardsticks cost twice the forward ones: computed on first need only (forward-only tests, and a
// process that ctest starts for one forward test, never pay for them).
void CaseData::ensure_backward_yardsticks() {
  if (have_backward_) return;
  const Case& c = case_;
  const detail::Problem& p = problem_;
  const auto dout = cpu::ref::gather(p, problem_.dout, c.dtype, true, c.heads_q, c.dim_v);
  for (Results* r : {&ref_, &naive_}) {
    r->dq.resize(q64_.size());
    r->dk.resize(k64_.size());
    r->dv.resize(v64_.size());
    r->dsinks.resize(c.sinks ? static_cast<std::size_t>(c.heads_q) : 0);
  }
  // The oracle's gradient is the exact one: from the fp64 out and lse, not from anything rounded.
  cpu::ref::backward_f64(p, q64_.data(), k64_.data(), v64_.data(), ref_.out.data(), ref_.lse.data(), dout.data(),
                         ref_.dq.data(), ref_.dk.data(), ref_.dv.data(), ref_.dsinks.data());
  cpu::naive::backward(p, c.dtype, q64_.data(), k64_.data(), v64_.data(), dout.data(), naive_.dq.data(),
                       naive_.dk.data(), naive_.dv.data(), naive_.dsinks.data());

  // The FlashAttention formulation in fp32, from out and lse as a backend finds them: out in dtype, lse in fp32.
  std::vector<double> out_stored(ref_.out.size()), lse_stored(ref_.lse.size());
  for (std::size_t e = 0; e < out_stored.size(); ++e) {
    out_stored[e] = cpu::round_to(c.dtype, static_cast<float>(ref_.out[e]));
  }
  for (std::size_t e = 0; e < lse_stored.size(); ++e) lse_stored[e] = static_cast<float>(ref_.lse[e]);
  stored_ = ref_;
  cpu::naive::backward_from_stored(p, c.dtype, q64_.data(), k64_.data(), v64_.data(), out_stored.data(),
                                   lse_stored.data(), dout.data(), stored_.dq.data(), stored_.dk.data(),
                                   stored_.dv.data(), stored_.dsinks.data());
  have_backward_ = true;
}

void CaseData::allocate() {
  const Case& c = case_;
  const bool varlen = c.is_varlen();
  const bool padded = c.layout != Layout::contiguous;  // packed_qkv pads out and the gradients
  batch_ = varlen ? static_cast<std::int64_t>(c.varlen_q.size()) : c.batch;
  total_q_ = varlen ? std::accumulate(c.varlen_q.begin(), c.varlen_q.end(), std::int64_t{0}) : c.seqlen_q;
  total_k_ = varlen ? std::accumulate(c.varlen_k.begin(), c.varlen_k.end(), std::int64_t{0}) : c.seqlen_k;
  const std::int64_t rows_q = total_q_, rows_k = total_k_;

  if (c.layout == Layout::packed_qkv) {
    // [batch, seq, heads_q + 2 * heads_kv, dim]: q, k and v interleaved per token, as a fused QKV projection writes.
    const std::int64_t width = c.heads_q + 2 * c.heads_kv, d = c.dim_qk, s = c.seqlen_q;
    qkv_ = HostBuffer(c.dtype, c.batch * s * width * d);
    vq_ = qkv_.view({c.batch, s, c.heads_q, d}, {s * width * d, width * d, d, 1}, 0);
    vk_ = qkv_.view({c.batch, s, c.heads_kv, d}, {s * width * d, width * d, d, 1}, c.heads_q * d);
    vv_ = qkv_.view({c.batch, s, c.heads_kv, d}, {s * width * d, width * d, d, 1}, (c.heads_q + c.heads_kv) * d);
  } else {
    vq_ = make_operand(q_, c.dtype, varlen, batch_, rows_q, c.heads_q, c.dim_qk, padded);
    vk_ = make_operand(k_, c.dtype, varlen, batch_, rows_k, c.heads_kv, c.dim_qk, padded);
    vv_ = make_operand(v_, c.dtype, varlen, batch_, rows_k, c.heads_kv, c.dim_v, padded);
  }
  vout_ = make_operand(out_, c.dtype, varlen, batch_, rows_q, c.heads_q, c.dim_v, padded);
  vdout_ = make_operand(dout_, c.dtype, varlen, batch_, rows_q, c.heads_q, c.dim_v, padded);
  vdq_ = make_operand(dq_, c.dtype, varlen, batch_, rows_q, c.heads_q, c.dim_qk, padded);
  vdk_ = make_operand(dk_, c.dtype, varlen, batch_, rows_k, c.heads_kv, c.dim_qk, padded);
  vdv_ = make_operand(dv_, c.dtype, varlen, batch_, rows_k, c.heads_kv, c.dim_v, padded);

  const std::int64_t lse_row = padded ? rows_q + 3 : rows_q;
  if (varlen) {
    lse_ = HostBuffer(DType::f32, std::max<std::int64_t>(c.heads_q * lse_row, 1));
    vlse_ = lse_.view({c.heads_q, rows_q}, {lse_row, 1});
  } else {
    const std::int64_t lse_batch = padded ? c.heads_q * lse_row + 5 : c.heads_q * lse_row;
    lse_ = HostBuffer(DType::f32, batch_ * lse_batch);
    vlse_ = lse_.view({batch_, c.heads_q, rows_q}, {lse_batch, lse_row, 1});
  }

  if (c.alibi == Alibi::per_head) {
    alibi_ = HostBuffer(DType::f32, c.heads_q);
    valibi_ = alibi_.view({c.heads_q});
  } else if (c.alibi == Alibi::per_batch_head) {
    alibi_ = HostBuffer(DType::f32, batch_ * c.heads_q);
    valibi_ = alibi_.view({batch_, c.heads_q});
  }
  if (c.sinks) {
    sinks_ = HostBuffer(DType::f32, c.heads_q);
    vsinks_ = sinks_.view({c.heads_q});
    dsinks_ = HostBuffer(DType::f32, c.heads_q);
    vdsinks_ = dsinks_.view({c.heads_q});
  }
  if (varlen) {
    cu_q_ = HostBuffer(DType::i32, batch_ + 1);
    cu_k_ = HostBuffer(DType::i32, batch_ + 1);
    vcu_q_ = cu_q_.view({batch_ + 1});
    vcu_k_ = cu_k_.view({batch_ + 1});
  }
}

void CaseData::draw_inputs() {
  const Case& c = case_;
  Rng rng(c.name());
  auto normal = [&] { return rng.normal(); };
  for (HostBuffer* b : {&qkv_, &q_, &k_, &v_, &dout_}) b->fill(normal);
  // Slopes as FlashAttention's tests draw them; they make far keys nearly invisible at the long lengths.
  alibi_.fill([&] { return rng.uniform(0.0, 0.3); });
  // Sinks around the size of a row's lse, so that they matter without drowning the keys.
  sinks_.fill([&] { return rng.normal(1.0, 1.5); });
  if (c.is_varlen()) {
    std::int64_t q = 0, k = 0;
    cu_q_.set(0, 0);
    cu_k_.set(0, 0);
    for (std::size_t b = 0; b < c.varlen_q.size(); ++b) {
      cu_q_.set(static_cast<std::int64_t>(b) + 1, static_cast<double>(q += c.varlen_q[b]));
      cu_k_.set(static_cast<std::int64_t>(b) + 1, static_cast<double>(k += c.varlen_k[b]));
    }
  }
}

ForwardArgs CaseData::forward_args() const {
  ForwardArgs a;
  a.q = vq_;
  a.k = vk_;
  a.v = vv_;
  a.out = vout_;
  a.lse = vlse_;
  if (case_.is_varlen()) a.varlen = Varlen{vcu_q_, vcu_k_, 0, 0};
  return a;
}

BackwardArgs CaseData::backward_args() const {
  BackwardArgs a;
  a.q = vq_;
  a.k = vk_;
  a.v = vv_;
  a.out = vout_;
  a.dout = vdout_;
  a.lse = vlse_;
  a.dq = vdq_;
  a.dk = vdk_;
  a.dv = vdv_;
  a.dsinks = vdsinks_;
  if (case_.is_varlen()) a.varlen = Varlen{vcu_q_, vcu_k_, 0, 0};
  return a;
}

AttentionParams CaseData::params(const std::string& impl) const {
  AttentionParams p;
  p.softmax_scale = case_.scale;
  p.mask = case_.mask;
  p.softcap = case_.softcap;
  p.alibi_slopes = valibi_;
  p.sinks = vsinks_;
  p.deterministic = case_.deterministic;
  p.impl = impl;
  return p;
}

std::vector<HostBuffer> CaseData::snapshot_inputs() const {
  return {qkv_, q_, k_, v_, dout_, alibi_, sinks_, cu_q_, cu_k_};
}

void CaseData::check_untouched(Results& r) const {
  const std::vector<HostBuffer>& inputs_before = inputs_drawn_;
  auto stray = [&](const char* name, std::int64_t e) {
    if (r.stray_writes++ == 0) r.stray_where = std::string(name) + " element " + std::to_string(e);
  };
  const std::vector<HostBuffer> inputs_after = snapshot_inputs();
  const char* input_names[] = {"qkv", "q", "k", "v", "dout", "alibi_slopes", "sinks", "cu_seqlens_q", "cu_seqlens_k"};
  for (std::size_t i = 0; i < inputs_after.size(); ++i) {
    const HostBuffer &before = inputs_before[i], &after = inputs_after[i];
    if (before.bytes() > 0 && std::memcmp(before.data(), after.data(), before.bytes()) != 0) stray(input_names[i], -1);
  }
  const std::pair<const HostBuffer*, const TensorView*> outputs[] = {
      {&out_, &vout_}, {&lse_, &vlse_}, {&dq_, &vdq_}, {&dk_, &vdk_}, {&dv_, &vdv_}, {&dsinks_, &vdsinks_}};
  const char* output_names[] = {"out", "lse", "dq", "dk", "dv", "dsinks"};
  for (std::size_t o = 0; o < std::size(outputs); ++o) {
    const HostBuffer& buf = *outputs[o].first;
    std::vector<char> marked(static_cast<std::size_t>(buf.elements()), 0);
    mark_view(*outputs[o].second, buf, marked);
    for (std::int64_t e = 0; e < buf.elements(); ++e) {
      if (!marked[static_cast<std::size_t>(e)] && !std::isnan(buf.get(e))) stray(output_names[o], e);
    }
  }
}

Results CaseData::run(const std::string& impl, Device device, bool backward, bool with_lse) {
  if (backward && !with_lse) throw std::logic_error("CaseData::run: the backward needs the forward's lse");
  if (backward) ensure_backward_yardsticks();
  for (HostBuffer* b : {&out_, &lse_, &dq_, &dk_, &dv_, &dsinks_}) b->poison();
  ForwardArgs fa = forward_args();
  BackwardArgs ba = backward_args();
  AttentionParams params = this->params(impl);
  if (!with_lse) fa.lse = TensorView{};
  if (device == Device::cpu) {
    attention_forward(fa, params);
    if (backward) attention_backward(ba, params);
    return collect(backward);
  }

  // The same bytes on the GPU (poison included); every view keeps its offset within its buffer.
  HostBuffer& qkv_owner_q = case_.layout == Layout::packed_qkv ? qkv_ : q_;
  HostBuffer& qkv_owner_k = case_.layout == Layout::packed_qkv ? qkv_ : k_;
  HostBuffer& qkv_owner_v = case_.layout == Layout::packed_qkv ? qkv_ : v_;
  std::map<HostBuffer*, DeviceBuffer> dev;
  for (HostBuffer* b : {&qkv_, &q_, &k_, &v_, &out_, &lse_, &dout_, &dq_, &dk_, &dv_, &alibi_, &sinks_, &dsinks_,
                        &cu_q_, &cu_k_}) {
    if (b->bytes() > 0) dev.emplace(b, DeviceBuffer(*b));
  }
  auto on_device = [&](const TensorView& v, HostBuffer& owner) {
    return v.data == nullptr ? v : dev.at(&owner).rebase(v, owner);
  };
  fa.q = ba.q = on_device(vq_, qkv_owner_q);
  fa.k = ba.k = on_device(vk_, qkv_owner_k);
  fa.v = ba.v = on_device(vv_, qkv_owner_v);
  fa.out = ba.out = on_device(vout_, out_);
  ba.lse = on_device(vlse_, lse_);
  if (with_lse) fa.lse = ba.lse;
  ba.dout = on_device(vdout_, dout_);
  ba.dq = on_device(vdq_, dq_);
  ba.dk = on_device(vdk_, dk_);
  ba.dv = on_device(vdv_, dv_);
  ba.dsinks = on_device(vdsinks_, dsinks_);
  if (case_.is_varlen()) {
    fa.varlen = ba.varlen = Varlen{on_device(vcu_q_, cu_q_), on_device(vcu_k_, cu_k_), 0, 0};
  }
  params.alibi_slopes = on_device(valibi_, alibi_);
  params.sinks = on_device(vsinks_, sinks_);

  attention_forward(fa, params);
  if (backward) attention_backward(ba, params);
  // Every buffer comes back, inputs included, so that writes to them are seen too.
  for (auto& [host, device_copy] : dev) device_copy.download(*host);
  return collect(backward);
}

Results CaseData::collect(bool backward) const {
  Results r = gather_outputs(backward);
  check_untouched(r);
  return r;
}

Results CaseData::gather_outputs(bool backward) const {
  const detail::BackwardProblem& p = problem_;
  const Case& c = case_;
  Results r;
  r.out = cpu::ref::gather(p, p.out, c.dtype, true, c.heads_q, c.dim_v);
  r.lse = cpu::ref::gather(p, p.lse, DType::f32, true, c.heads_q, 1);
  if (!backward) return r;
  r.dq = cpu::ref::gather(p, p.dq, c.dtype, true, c.heads_q, c.dim_qk);
  r.dk = cpu::ref::gather(p, p.dk, c.dtype, false, c.heads_kv, c.dim_qk);
  r.dv = cpu::ref::gather(p, p.dv, c.dtype, false, c.heads_kv, c.dim_v);
  for (std::int64_t h = 0; h < dsinks_.elements(); ++h) r.dsinks.push_back(dsinks_.get(h));
  return r;
}

void poison_rows_nonfinite(const detail::Operand& x, DType dtype, std::int64_t row_begin, std::int64_t row_end,
                           std::int64_t heads, std::int64_t dim, bool keys) {
  if (dtype != DType::f16 && dtype != DType::bf16) throw std::logic_error("poison_rows_nonfinite: fp16 or bf16 only");
  const bool bf16 = dtype == DType::bf16;
  const std::uint16_t pos_inf = bf16 ? 0x7F80 : 0x7C00, neg_inf = bf16 ? 0xFF80 : 0xFC00,
                      nan = bf16 ? 0x7FC0 : 0x7E00;
  auto* base = static_cast<std::uint16_t*>(x.ptr);
  for (std::int64_t row = row_begin; row < row_end; ++row) {
    for (std::int64_t h = 0; h < heads; ++h) {
      for (std::int64_t d = 0; d < dim; ++d) {
        const std::int64_t pick = (row + h + d) % 3;
        std::uint16_t value = pick == 0 ? nan : pick == 1 ? pos_inf : neg_inf;
        if (!keys && pick == 2) value = pos_inf;
        base[x.offset(0, row, h) + d] = value;
      }
    }
  }
}

std::vector<Comparison> CaseData::compare_all(const Results& got, bool backward) const {
  if (backward && !have_backward_) throw std::logic_error("CaseData::compare_all: run(..., backward = true) first");
  const double eps = dtype_eps(case_.dtype), eps32 = dtype_eps(DType::f32);
  std::vector<Comparison> all;
  all.push_back(compare("out", got.out, ref_.out, naive_.out, eps));
  all.push_back(compare("lse", got.lse, ref_.lse, naive_.lse, eps32));
  if (!backward) return all;
  all.push_back(compare("dq", got.dq, ref_.dq, naive_.dq, eps, &stored_.dq));
  all.push_back(compare("dk", got.dk, ref_.dk, naive_.dk, eps, &stored_.dk));
  all.push_back(compare("dv", got.dv, ref_.dv, naive_.dv, eps, &stored_.dv));
  // dsinks is fp32, but a sum of terms D_i = dout_i . out_i over the dtype out: its accuracy is the dtype's.
  if (case_.sinks) all.push_back(compare("dsinks", got.dsinks, ref_.dsinks, naive_.dsinks, eps, &stored_.dsinks));
  return all;
}

}  // namespace ioattn::test
