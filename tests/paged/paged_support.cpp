#include "paged/paged_support.hpp"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <map>
#include <numeric>
#include <stdexcept>

#include "api/validate.hpp"
#include "cpu/reference.hpp"
#include "support/random.hpp"

namespace ioattn::test::paged {
namespace {

std::int64_t sum(const std::vector<std::int64_t>& v) { return std::accumulate(v.begin(), v.end(), std::int64_t{0}); }

AttentionParams case_params(const PagedCase& c) {
  AttentionParams params;
  params.mask = c.mask;
  params.softcap = c.softcap;
  return params;
}

}  // namespace

bool same_bits(const std::vector<double>& a, const std::vector<double>& b) {
  return a.size() == b.size() && (a.empty() || std::memcmp(a.data(), b.data(), a.size() * sizeof(double)) == 0);
}

std::vector<PagedBackendName> paged_backends_present() {
  std::vector<PagedBackendName> list = {{"reference", Device::cpu}, {"tiled", Device::cpu}};
#if IOATTN_HAVE_CUDA
  list.push_back({"cuda", Device::cuda});
#endif
  return list;
}

PagedData::PagedData(const PagedCase& c) : case_(c) {
  if (c.q_lens.size() != c.k_lens.size()) throw std::logic_error("PagedCase " + c.name + ": q_lens and k_lens differ");
  Rng rng("paged/" + c.name);
  const std::int64_t batch = this->batch(), hq = c.heads_q, hkv = c.heads_kv, dqk = c.dim_qk, dv = c.dim_v;
  const std::int64_t total_q = sum(c.q_lens), total_k = sum(c.k_lens);

  q_all_ = HostBuffer(c.dtype, std::max<std::int64_t>(total_q * hq * dqk, 1));
  q_all_.fill([&] { return rng.normal(); });
  HostBuffer k(c.dtype, std::max<std::int64_t>(total_k * hkv * dqk, 1)), v(c.dtype, std::max<std::int64_t>(total_k * hkv * dv, 1));
  k.fill([&] { return rng.normal(); });
  v.fill([&] { return rng.normal(); });
  sinks_ = HostBuffer(DType::f32, hq);
  sinks_.fill([&] { return rng.normal(0.0, 2.0); });
  sinks_view_ = sinks_.view({hq});
  alibi_all_ = HostBuffer(DType::f32, batch * hq);
  alibi_all_.fill([&] { return rng.uniform(0.01, 0.25); });

  // Pages: each sequence's pages are drawn from a shuffled pool, so neighbours in a sequence are anywhere in the
  // cache; the spare pages and the slots past each sequence's end keep the NaN poison.
  std::vector<std::int64_t> cu_k(static_cast<std::size_t>(batch + 1), 0);
  std::int64_t used = 0;
  for (std::int64_t b = 0; b < batch; ++b) {
    cu_k[b + 1] = cu_k[b] + c.k_lens[b];
    used += (c.k_lens[b] + c.page_size - 1) / c.page_size;
  }
  num_pages_ = used + c.spare_pages;
  std::vector<std::int32_t> pool(static_cast<std::size_t>(num_pages_));
  std::iota(pool.begin(), pool.end(), 0);
  for (std::int64_t e = num_pages_ - 1; e > 0; --e) std::swap(pool[e], pool[rng.uniform_int(0, e)]);
  std::size_t next = 0;
  pages_.resize(static_cast<std::size_t>(batch));
  for (std::int64_t b = 0; b < batch; ++b) {
    const std::int64_t n = (c.k_lens[b] + c.page_size - 1) / c.page_size;
    for (std::int64_t j = 0; j < n; ++j) pages_[b].push_back(pool[next++]);
    max_pages_ = std::max(max_pages_, n);
  }
  max_pages_ += 1;  // one column no sequence fills (holds -1): never read

  const auto make_cache = [&](HostBuffer& buf, TensorView& view, const HostBuffer& src, std::int64_t dim) {
    const std::int64_t hs = c.padded_cache ? dim + 8 : dim;
    const std::int64_t ts = c.padded_cache ? hkv * hs + 16 : hkv * dim;
    const std::int64_t ps = c.padded_cache ? c.page_size * ts + 32 : c.page_size * ts;
    buf = HostBuffer(c.dtype, num_pages_ * ps);
    buf.poison();
    view = buf.view({num_pages_, c.page_size, hkv, dim}, {ps, ts, hs, 1});
    for (std::int64_t b = 0; b < batch; ++b)
      for (std::int64_t j = 0; j < c.k_lens[b]; ++j) {
        const std::int64_t slot = pages_[b][j / c.page_size] * ps + (j % c.page_size) * ts;
        for (std::int64_t h = 0; h < hkv; ++h)
          for (std::int64_t e = 0; e < dim; ++e) buf.set(slot + h * hs + e, src.get(((cu_k[b] + j) * hkv + h) * dim + e));
      }
  };
  make_cache(k_cache_, k_view_, k, dqk);
  make_cache(v_cache_, v_view_, v, dv);
  k_cache_drawn_ = k_cache_;
  v_cache_drawn_ = v_cache_;

  // The yardsticks: the dense varlen problem on the contiguous K/V, through the dense API's own validation.
  HostBuffer cu_q_buf(DType::i32, batch + 1), cu_k_buf(DType::i32, batch + 1);
  q_offset_.assign(static_cast<std::size_t>(batch), 0);
  std::int64_t row = 0;
  for (std::int64_t b = 0; b <= batch; ++b) {
    cu_q_buf.set(b, static_cast<double>(row));
    cu_k_buf.set(b, static_cast<double>(cu_k[b]));
    if (b < batch) {
      q_offset_[b] = row;
      row += c.q_lens[b];
    }
  }
  HostBuffer out(c.dtype, std::max<std::int64_t>(total_q * hq * dv, 1)), lse(DType::f32, std::max<std::int64_t>(total_q * hq, 1));
  ForwardArgs fa;
  fa.q = q_all_.view({total_q, hq, dqk});
  fa.k = k.view({total_k, hkv, dqk});
  fa.v = v.view({total_k, hkv, dv});
  fa.out = out.view({total_q, hq, dv});
  fa.lse = lse.view({hq, total_q});
  fa.varlen = Varlen{cu_q_buf.view({batch + 1}), cu_k_buf.view({batch + 1}), 0, 0};
  AttentionParams params = case_params(c);
  params.impl = "reference";
  if (c.alibi == Alibi::per_head) params.alibi_slopes = alibi_all_.view({hq});
  if (c.alibi == Alibi::per_batch_head) params.alibi_slopes = alibi_all_.view({batch, hq});
  if (c.sinks) params.sinks = sinks_view_;
  const detail::Problem p = detail::make_forward_problem(fa, params);
  const auto q64 = cpu::ref::gather(p, p.q, c.dtype, true, hq, dqk);
  const auto k64 = cpu::ref::gather(p, p.k, c.dtype, false, hkv, dqk);
  const auto v64 = cpu::ref::gather(p, p.v, c.dtype, false, hkv, dv);
  std::vector<double> ref_out(static_cast<std::size_t>(total_q * hq * dv)), ref_lse(static_cast<std::size_t>(total_q * hq));
  std::vector<double> naive_out(ref_out.size()), naive_lse(ref_lse.size());
  cpu::ref::forward_f64(p, q64.data(), k64.data(), v64.data(), ref_out.data(), ref_lse.data());
  cpu::naive::forward(p, c.dtype, q64.data(), k64.data(), v64.data(), naive_out.data(), naive_lse.data());
  for (std::int64_t b = 0; b < batch; ++b) {
    const auto o0 = ref_out.begin() + q_offset_[b] * hq * dv, o1 = o0 + c.q_lens[b] * hq * dv;
    const auto l0 = ref_lse.begin() + q_offset_[b] * hq, l1 = l0 + c.q_lens[b] * hq;
    ref_out_.emplace_back(o0, o1);
    ref_lse_.emplace_back(l0, l1);
    naive_out_.emplace_back(naive_out.begin() + (o0 - ref_out.begin()), naive_out.begin() + (o1 - ref_out.begin()));
    naive_lse_.emplace_back(naive_lse.begin() + (l0 - ref_lse.begin()), naive_lse.begin() + (l1 - ref_lse.begin()));
  }
}

std::unique_ptr<Batch> PagedData::make_batch(std::vector<int> seqs) const {
  const PagedCase& c = case_;
  if (seqs.empty()) {
    seqs.resize(static_cast<std::size_t>(batch()));
    std::iota(seqs.begin(), seqs.end(), 0);
  }
  auto bt = std::make_unique<Batch>();
  Batch& t = *bt;
  t.seqs = seqs;
  t.packed = c.packed;
  const auto n = static_cast<std::int64_t>(seqs.size());
  const std::int64_t hq = c.heads_q, dqk = c.dim_qk, dv = c.dim_v;
  for (int b : seqs) {
    t.total_q += c.q_lens[b];
    t.seqlen_q = std::max(t.seqlen_q, c.q_lens[b]);
    if (!c.packed && c.q_lens[b] != c.q_lens[seqs[0]]) throw std::logic_error("dense q needs equal q_lens");
  }
  t.q = HostBuffer(c.dtype, std::max<std::int64_t>(t.total_q * hq * dqk, 1));
  t.out = HostBuffer(c.dtype, std::max<std::int64_t>(t.total_q * hq * dv, 1));
  t.lse = HostBuffer(DType::f32, std::max<std::int64_t>(t.total_q * hq, 1));
  t.block_table = HostBuffer(DType::i32, n * max_pages_);
  t.seqlens_k = HostBuffer(DType::i32, n);
  t.cu_q = HostBuffer(DType::i32, n + 1);
  t.alibi = HostBuffer(DType::f32, n * hq);
  std::int64_t row = 0;
  for (std::int64_t j = 0; j < n; ++j) {
    const int b = seqs[j];
    t.cu_q.set(j, static_cast<double>(row));
    for (std::int64_t e = 0; e < c.q_lens[b] * hq * dqk; ++e) t.q.set(row * hq * dqk + e, q_all_.get(q_offset_[b] * hq * dqk + e));
    row += c.q_lens[b];
    for (std::int64_t p = 0; p < max_pages_; ++p) {
      const auto& pages = pages_[b];
      t.block_table.set(j * max_pages_ + p, p < static_cast<std::int64_t>(pages.size()) ? pages[p] : -1);
    }
    t.seqlens_k.set(j, static_cast<double>(c.k_lens[b]));
    for (std::int64_t h = 0; h < hq; ++h) {
      t.alibi.set(j * hq + h, alibi_all_.get((c.alibi == Alibi::per_batch_head ? b * hq : 0) + h));
    }
  }
  t.cu_q.set(n, static_cast<double>(row));
  t.out.poison();
  t.lse.poison();

  PagedForwardArgs& a = t.args;
  a.q = c.packed ? t.q.view({t.total_q, hq, dqk}) : t.q.view({n, t.seqlen_q, hq, dqk});
  a.out = c.packed ? t.out.view({t.total_q, hq, dv}) : t.out.view({n, t.seqlen_q, hq, dv});
  a.lse = c.packed ? t.lse.view({hq, t.total_q}) : t.lse.view({n, hq, t.seqlen_q});
  a.kv = {k_view_, v_view_, t.block_table.view({n, max_pages_}), t.seqlens_k.view({n})};
  if (c.packed) a.cu_seqlens_q = t.cu_q.view({n + 1});
  t.params = case_params(c);
  if (c.alibi == Alibi::per_head) t.params.alibi_slopes = t.alibi.view({hq});
  if (c.alibi == Alibi::per_batch_head) t.params.alibi_slopes = t.alibi.view({n, hq});
  if (c.sinks) t.params.sinks = sinks_view_;
  return bt;
}

RunResult PagedData::run(Batch& t, const std::string& impl, Device device, const RunOptions& opt) {
  const PagedCase& c = case_;
  t.out.poison();
  t.lse.poison();
  PagedForwardArgs args = t.args;
  AttentionParams params = t.params;
  params.impl = impl;
  if (!opt.with_lse) args.lse = TensorView{};
  RunResult r;
  HostBuffer ws;
  if (device == Device::cpu) {
    r.plan = opt.plan != nullptr ? *opt.plan : paged_attention_plan(args, params, opt.split, opt.expected_seqlen_k);
    if (opt.caller_workspace && r.plan.workspace_bytes > 0) {
      ws = HostBuffer(DType::f32, static_cast<std::int64_t>(r.plan.workspace_bytes / 4 + 1));
      ws.poison();  // partial results never written but read would show as NaN
      params.workspace = {ws.data(), r.plan.workspace_bytes};
    }
    paged_attention_forward(args, r.plan, params);
  } else {
    // The same bytes in device memory (poison included); the caches travel too.
    std::map<HostBuffer*, DeviceBuffer> dev;
    for (HostBuffer* h : {&t.q, &t.out, &t.lse, &t.block_table, &t.seqlens_k, &t.cu_q, &t.alibi, &k_cache_, &v_cache_,
                          &sinks_}) {
      dev.emplace(h, DeviceBuffer(*h));
    }
    const auto on = [&](const TensorView& v, HostBuffer& owner) {
      return v.data == nullptr ? v : dev.at(&owner).rebase(v, owner);
    };
    args.q = on(args.q, t.q);
    args.out = on(args.out, t.out);
    args.lse = on(args.lse, t.lse);
    args.cu_seqlens_q = on(args.cu_seqlens_q, t.cu_q);
    args.kv = {on(args.kv.k_cache, k_cache_), on(args.kv.v_cache, v_cache_), on(args.kv.block_table, t.block_table),
               on(args.kv.seqlens_k, t.seqlens_k)};
    params.alibi_slopes = on(params.alibi_slopes, t.alibi);
    params.sinks = on(params.sinks, sinks_);
    r.plan = opt.plan != nullptr ? *opt.plan : paged_attention_plan(args, params, opt.split, opt.expected_seqlen_k);
    DeviceBuffer dws;
    if (opt.caller_workspace && r.plan.workspace_bytes > 0) {
      ws = HostBuffer(DType::f32, static_cast<std::int64_t>(r.plan.workspace_bytes / 4 + 1));
      ws.poison();
      dws = DeviceBuffer(ws);
      params.workspace = {dws.rebase(ws.view({ws.elements()}), ws).data, r.plan.workspace_bytes};
    }
    // Outputs come back on the error path too, so that a rejected call can be seen to have written nothing.
    try {
      paged_attention_forward(args, r.plan, params);
    } catch (...) {
      dev.at(&t.out).download(t.out);
      dev.at(&t.lse).download(t.lse);
      throw;
    }
    // Every buffer comes back, inputs included, so that a write to them shows.
    for (auto& [host, device_copy] : dev) device_copy.download(*host);
  }

  // Inputs as they were: the caches as built, and the batch's q and tables as make_batch wrote them (compared with a
  // fresh copy of the same batch).
  const auto same = [](const HostBuffer& a, const HostBuffer& b) {
    return a.bytes() == b.bytes() && std::memcmp(a.data(), b.data(), a.bytes()) == 0;
  };
  const auto fresh = make_batch(t.seqs);
  r.inputs_untouched = same(k_cache_, k_cache_drawn_) && same(v_cache_, v_cache_drawn_) && same(t.q, fresh->q) &&
                       same(t.block_table, fresh->block_table) && same(t.seqlens_k, fresh->seqlens_k) &&
                       same(t.cu_q, fresh->cu_q) && same(t.alibi, fresh->alibi);

  const std::int64_t hq = c.heads_q, dv = c.dim_v;
  std::int64_t row = 0;
  for (std::size_t j = 0; j < t.seqs.size(); ++j) {
    const std::int64_t q_len = c.q_lens[t.seqs[j]];
    std::vector<double> out(static_cast<std::size_t>(q_len * hq * dv)), lse(static_cast<std::size_t>(q_len * hq));
    for (std::int64_t e = 0; e < q_len * hq * dv; ++e) out[e] = t.out.get(row * hq * dv + e);
    for (std::int64_t i = 0; i < q_len; ++i)
      for (std::int64_t h = 0; h < hq; ++h) {
        const std::int64_t at = t.packed ? h * t.total_q + row + i
                                         : (static_cast<std::int64_t>(j) * hq + h) * t.seqlen_q + i;
        lse[i * hq + h] = t.lse.get(at);
      }
    r.out.push_back(std::move(out));
    r.lse.push_back(std::move(lse));
    row += q_len;
  }
  r.with_lse = opt.with_lse;
  if (!opt.with_lse) {
    for (std::int64_t e = 0; e < t.lse.elements(); ++e) r.lse_untouched = r.lse_untouched && std::isnan(t.lse.get(e));
  }
  return r;
}

std::vector<numerics::Comparison> PagedData::judge(const Batch& t, const RunResult& got) const {
  std::vector<double> out, lse, ref_out, ref_lse, naive_out, naive_lse;
  for (std::size_t j = 0; j < t.seqs.size(); ++j) {
    const auto b = static_cast<std::size_t>(t.seqs[j]);
    out.insert(out.end(), got.out[j].begin(), got.out[j].end());
    lse.insert(lse.end(), got.lse[j].begin(), got.lse[j].end());
    ref_out.insert(ref_out.end(), ref_out_[b].begin(), ref_out_[b].end());
    ref_lse.insert(ref_lse.end(), ref_lse_[b].begin(), ref_lse_[b].end());
    naive_out.insert(naive_out.end(), naive_out_[b].begin(), naive_out_[b].end());
    naive_lse.insert(naive_lse.end(), naive_lse_[b].begin(), naive_lse_[b].end());
  }
  std::vector<numerics::Comparison> all;
  all.push_back(numerics::compare("out", out, ref_out, naive_out, numerics::dtype_eps(case_.dtype)));
  if (got.with_lse) all.push_back(numerics::compare("lse", lse, ref_lse, naive_lse, numerics::dtype_eps(DType::f32)));
  return all;
}

}  // namespace ioattn::test::paged
