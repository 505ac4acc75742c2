// ioattn internal: every check of the public arguments, and the normalized Problem (see validate.hpp).
#include "api/validate.hpp"

#include <cmath>
#include <cstdint>
#include <sstream>
#include <string>
#include <utility>
#include <vector>

#include "api/checks.hpp"
#include "ioattn/error.hpp"

namespace ioattn::detail {
namespace {

// Sizes read off q, k and v; every other tensor is checked against these.
struct Dims {
  bool varlen = false;
  std::int64_t batch = 0;
  std::int64_t rows_q = 0;  // dense: seqlen_q; varlen: total_q
  std::int64_t rows_k = 0;
  std::int64_t heads_q = 0;
  std::int64_t heads_kv = 0;
  std::int64_t dim_qk = 0;
  std::int64_t dim_v = 0;

  std::vector<std::int64_t> q_shape() const { return with_batch({rows_q, heads_q, dim_qk}); }
  std::vector<std::int64_t> k_shape() const { return with_batch({rows_k, heads_kv, dim_qk}); }
  std::vector<std::int64_t> v_shape() const { return with_batch({rows_k, heads_kv, dim_v}); }
  std::vector<std::int64_t> out_shape() const { return with_batch({rows_q, heads_q, dim_v}); }
  std::vector<std::int64_t> lse_shape() const {
    return varlen ? std::vector<std::int64_t>{heads_q, rows_q} : std::vector<std::int64_t>{batch, heads_q, rows_q};
  }
  std::vector<std::int64_t> with_batch(std::vector<std::int64_t> rest) const {
    if (!varlen) rest.insert(rest.begin(), batch);
    return rest;
  }
  const char* q_meaning() const {
    return varlen ? "[total_q, heads_q, head_dim_qk]" : "[batch, seqlen_q, heads_q, head_dim_qk]";
  }
  const char* k_meaning() const {
    return varlen ? "[total_k, heads_kv, head_dim_qk]" : "[batch, seqlen_k, heads_kv, head_dim_qk]";
  }
  const char* v_meaning() const {
    return varlen ? "[total_k, heads_kv, head_dim_v]" : "[batch, seqlen_k, heads_kv, head_dim_v]";
  }
  const char* out_meaning() const {
    return varlen ? "[total_q, heads_q, head_dim_v]" : "[batch, seqlen_q, heads_q, head_dim_v]";
  }
  const char* lse_meaning() const { return varlen ? "[heads_q, total_q]" : "[batch, heads_q, seqlen_q]"; }
};

// q, k, v: their ranks fix dense or varlen, and their sizes fix every other shape.
Dims read_dims(const TensorView& q, const TensorView& k, const TensorView& v, bool varlen) {
  Dims dims;
  dims.varlen = varlen;
  const int rank = varlen ? 3 : 4;
  const std::string layout = varlen ? " (varlen layout)" : " (dense layout; rank 3 with varlen)";
  check_view(q, "q", false);
  check_float_dtype(q, "q");
  if (q.rank != rank) fail("q", "rank " + std::to_string(rank) + " " + dims.q_meaning() + layout, q.describe());
  check_operand(k, "k", q, false);
  if (k.rank != rank) fail("k", "rank " + std::to_string(rank) + " " + dims.k_meaning() + layout, k.describe());
  check_operand(v, "v", q, false);
  if (v.rank != rank) fail("v", "rank " + std::to_string(rank) + " " + dims.v_meaning() + layout, v.describe());

  const int o = varlen ? 0 : 1;  // index of the seq dim
  dims.batch = varlen ? 0 : extent(q, 0);
  dims.rows_q = extent(q, o);
  dims.heads_q = extent(q, o + 1);
  dims.dim_qk = extent(q, o + 2);
  dims.rows_k = extent(k, o);
  dims.heads_kv = extent(k, o + 1);
  dims.dim_v = extent(v, o + 2);

  if (dims.dim_qk < 1) fail("q", "head_dim_qk (last dim) >= 1", q.describe());
  if (!varlen && extent(k, 0) != dims.batch) {
    fail("k", "batch (dim 0) " + std::to_string(dims.batch) + " as in q", k.describe());
  }
  if (dims.heads_kv < 1) fail("k", "heads_kv (dim " + std::to_string(o + 1) + ") >= 1", k.describe());
  check_shape(k, "k", dims.k_shape(), std::string(dims.k_meaning()) + " (head_dim_qk as in q)");
  if (dims.heads_q < 1 || dims.heads_q % dims.heads_kv != 0) {
    fail("q", "heads_q (dim " + std::to_string(o + 1) + ") a positive multiple of heads_kv = " +
                  std::to_string(dims.heads_kv) + " (from k)",
         q.describe());
  }
  if (dims.dim_v < 1) fail("v", "head_dim_v (last dim) >= 1", v.describe());
  check_shape(v, "v", dims.v_shape(), std::string(dims.v_meaning()) + " (batch, seqlen_k and heads_kv as in k)");
  return dims;
}

void check_out_and_lse(const Dims& dims, const TensorView& q, const TensorView& out, const TensorView& lse,
                       const std::string& out_name, bool out_is_output, bool lse_required) {
  check_operand(out, out_name, q, out_is_output);
  check_shape(out, out_name, dims.out_shape(), dims.out_meaning());
  if (lse.empty()) {
    if (lse_required) fail("lse", std::string("fp32 ") + shape_text(dims.lse_shape()) + " " + dims.lse_meaning() +
                                      " as written by the forward", lse.describe());
    return;
  }
  check_view(lse, "lse", !lse_required);
  check_dtype(lse, "lse", DType::f32, " (log-sum-exp is always fp32)");
  check_device(lse, "lse", q);
  check_shape(lse, "lse", dims.lse_shape(), dims.lse_meaning());
}

Operand seq_operand(const TensorView& t, bool varlen) {
  if (varlen) return {t.data, 0, t.stride[0], t.stride[1]};
  return {t.data, t.stride[0], t.stride[1], t.stride[2]};
}

Operand lse_operand(const TensorView& t, bool varlen) {
  if (t.empty()) return {};
  if (varlen) return {t.data, 0, t.stride[1], t.stride[0]};
  return {t.data, t.stride[0], t.stride[2], t.stride[1]};
}

// cu_seqlens_q/k: int32 [batch + 1] on q's device; on the CPU also their contents.
struct VarlenInfo {
  std::int64_t batch = 0;
  std::int64_t seqlen_q = 0;
  std::int64_t seqlen_k = 0;
};

VarlenInfo check_varlen(const Varlen& varlen, const TensorView& q, const Dims& dims) {
  VarlenInfo info;
  info.seqlen_q = check_offsets(varlen.cu_seqlens_q, "varlen.cu_seqlens_q", q, dims.rows_q, "q dim 0",
                                varlen.max_seqlen_q, "varlen.max_seqlen_q");
  info.seqlen_k = check_offsets(varlen.cu_seqlens_k, "varlen.cu_seqlens_k", q, dims.rows_k, "k dim 0",
                                varlen.max_seqlen_k, "varlen.max_seqlen_k");
  info.batch = extent(varlen.cu_seqlens_q, 0) - 1;
  if (extent(varlen.cu_seqlens_k, 0) != info.batch + 1) {
    fail("varlen.cu_seqlens_k", "int32 [" + std::to_string(info.batch + 1) + "] (batch + 1, as cu_seqlens_q)",
         varlen.cu_seqlens_k.describe());
  }
  return info;
}

// Fills everything the forward and backward problems share.
Problem make_common(const TensorView& q, const TensorView& k, const TensorView& v, const TensorView& out,
                    const TensorView& lse, const std::optional<Varlen>& varlen, const AttentionParams& params,
                    bool backward, Dims& dims) {
  dims = read_dims(q, k, v, varlen.has_value());
  // In the backward out and lse are inputs; in the forward both are written (lse optionally).
  check_out_and_lse(dims, q, out, lse, "out", !backward, backward);

  Problem p;
  p.dtype = q.dtype;
  p.device = q.device;
  p.device_index = q.device == Device::cuda ? q.device_index : 0;
  p.heads_q = dims.heads_q;
  p.heads_kv = dims.heads_kv;
  p.dim_qk = dims.dim_qk;
  p.dim_v = dims.dim_v;
  if (varlen) {
    const VarlenInfo info = check_varlen(*varlen, q, dims);
    p.batch = info.batch;
    p.seqlen_q = info.seqlen_q;
    p.seqlen_k = info.seqlen_k;
    p.cu_seqlens_q = static_cast<const std::int32_t*>(varlen->cu_seqlens_q.data);
    p.cu_seqlens_k = static_cast<const std::int32_t*>(varlen->cu_seqlens_k.data);
    p.total_q = dims.rows_q;
    p.total_k = dims.rows_k;
  } else {
    p.batch = dims.batch;
    p.seqlen_q = dims.rows_q;
    p.seqlen_k = dims.rows_k;
    p.total_q = dims.batch * dims.rows_q;
    p.total_k = dims.batch * dims.rows_k;
  }
  p.q = seq_operand(q, dims.varlen);
  p.k = seq_operand(k, dims.varlen);
  p.v = seq_operand(v, dims.varlen);
  p.out = seq_operand(out, dims.varlen);
  p.lse = lse_operand(lse, dims.varlen);
  apply_params(params, q, dims.heads_q, dims.dim_qk, p);
  return p;
}

// The largest offset an operand of `extents` (batch, rows, heads, dim) reaches; 0 when it has no elements.
std::int64_t operand_reach(const Operand& op, std::int64_t batch, std::int64_t rows, std::int64_t heads,
                           std::int64_t dim) {
  if (op.ptr == nullptr || batch <= 0 || rows <= 0 || heads <= 0 || dim <= 0) return 0;
  return (batch - 1) * op.batch_stride + (rows - 1) * op.seq_stride + (heads - 1) * op.head_stride + (dim - 1);
}

std::int64_t rows_q(const Problem& p) { return p.is_varlen() ? p.total_q : p.seqlen_q; }
std::int64_t rows_k(const Problem& p) { return p.is_varlen() ? p.total_k : p.seqlen_k; }
std::int64_t batches(const Problem& p) { return p.is_varlen() ? 1 : p.batch; }

}  // namespace

Problem make_forward_problem(const ForwardArgs& args, const AttentionParams& params) {
  Dims dims;
  return make_common(args.q, args.k, args.v, args.out, args.lse, args.varlen, params, false, dims);
}

BackwardProblem make_backward_problem(const BackwardArgs& args, const AttentionParams& params) {
  Dims dims;
  BackwardProblem bp;
  static_cast<Problem&>(bp) = make_common(args.q, args.k, args.v, args.out, args.lse, args.varlen, params, true, dims);

  check_operand(args.dout, "dout", args.q, false);
  check_shape(args.dout, "dout", dims.out_shape(), std::string(dims.out_meaning()) + " (the shape of out)");
  check_operand(args.dq, "dq", args.q, true);
  check_shape(args.dq, "dq", dims.q_shape(), std::string(dims.q_meaning()) + " (the shape of q)");
  check_operand(args.dk, "dk", args.q, true);
  check_shape(args.dk, "dk", dims.k_shape(), std::string(dims.k_meaning()) + " (the shape of k)");
  check_operand(args.dv, "dv", args.q, true);
  check_shape(args.dv, "dv", dims.v_shape(), std::string(dims.v_meaning()) + " (the shape of v)");

  if (params.sinks.empty()) {
    if (!args.dsinks.empty()) fail("dsinks", "none, since params.sinks is not given", args.dsinks.describe());
  } else {
    const std::string want = "fp32 [heads_q] = [" + std::to_string(dims.heads_q) + "] since params.sinks is given";
    if (args.dsinks.empty()) fail("dsinks", want, args.dsinks.describe());
    check_view(args.dsinks, "dsinks", true);
    check_dtype(args.dsinks, "dsinks", DType::f32, " since params.sinks is given");
    check_device(args.dsinks, "dsinks", args.q);
    check_shape(args.dsinks, "dsinks", {dims.heads_q}, "[heads_q], the gradient of params.sinks");
    bp.dsinks = static_cast<float*>(args.dsinks.data);
  }
  bp.dout = seq_operand(args.dout, dims.varlen);
  bp.dq = seq_operand(args.dq, dims.varlen);
  bp.dk = seq_operand(args.dk, dims.varlen);
  bp.dv = seq_operand(args.dv, dims.varlen);
  return bp;
}

std::int64_t max_element_offset(const Problem& p) {
  const std::int64_t b = batches(p), rq = rows_q(p), rk = rows_k(p);
  std::int64_t reach = 0;
  auto keep = [&reach](std::int64_t r) { reach = r > reach ? r : reach; };
  keep(operand_reach(p.q, b, rq, p.heads_q, p.dim_qk));
  keep(operand_reach(p.k, b, rk, p.heads_kv, p.dim_qk));
  keep(operand_reach(p.v, b, rk, p.heads_kv, p.dim_v));
  keep(operand_reach(p.out, b, rq, p.heads_q, p.dim_v));
  keep(operand_reach(p.lse, b, rq, p.heads_q, 1));
  if (p.alibi_slopes != nullptr) keep((p.batch > 0 ? p.batch - 1 : 0) * p.alibi_batch_stride + p.heads_q - 1);
  return reach;
}

std::int64_t max_element_offset(const BackwardProblem& p) {
  const std::int64_t b = batches(p), rq = rows_q(p), rk = rows_k(p);
  std::int64_t reach = max_element_offset(static_cast<const Problem&>(p));
  auto keep = [&reach](std::int64_t r) { reach = r > reach ? r : reach; };
  keep(operand_reach(p.dout, b, rq, p.heads_q, p.dim_v));
  keep(operand_reach(p.dq, b, rq, p.heads_q, p.dim_qk));
  keep(operand_reach(p.dk, b, rk, p.heads_kv, p.dim_qk));
  keep(operand_reach(p.dv, b, rk, p.heads_kv, p.dim_v));
  return reach;
}

bool nothing_to_do(const Problem& p) { return batches(p) * rows_q(p) == 0; }

bool nothing_to_do(const BackwardProblem& p) {
  return batches(p) * rows_q(p) == 0 && batches(p) * rows_k(p) == 0 && p.dsinks == nullptr;
}

}  // namespace ioattn::detail
