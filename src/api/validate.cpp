// ioattn internal: every check of the public arguments, and the normalized Problem (see validate.hpp).
#include "api/validate.hpp"

#include <cmath>
#include <cstdint>
#include <sstream>
#include <string>
#include <utility>
#include <vector>

#include "ioattn/error.hpp"

namespace ioattn::detail {
namespace {

[[noreturn]] void fail(const std::string& argument, const std::string& expected, const std::string& got) {
  throw Error(ErrorCode::invalid_argument, argument + ": expected " + expected + ", got " + got);
}

std::string shape_text(const std::vector<std::int64_t>& shape) {
  std::ostringstream os;
  os << "[";
  for (std::size_t i = 0; i < shape.size(); ++i) os << (i ? ", " : "") << shape[i];
  os << "]";
  return os.str();
}

std::string number_text(double x) {
  std::ostringstream os;
  os << x;
  return os.str();
}

std::int64_t extent(const TensorView& t, int dim) { return t.shape[static_cast<std::size_t>(dim)]; }
std::int64_t stride_of(const TensorView& t, int dim) { return t.stride[static_cast<std::size_t>(dim)]; }

// Whether no two index tuples of `t` reach the same element, by the usual sufficient rule: taking the dimensions of
// extent above 1 from the smallest stride up, each stride is at least the span the smaller ones cover. Every
// layout of distinct elements met in practice (row-major, slices, permutations, padding) passes. Overlapping output
// elements would be written by several threads at once, with an unspecified result.
bool elements_distinct(const TensorView& t) {
  std::int64_t strides[kMaxRank], extents[kMaxRank];
  int n = 0;
  for (int d = 0; d < t.rank; ++d) {
    if (extent(t, d) > 1) {
      strides[n] = stride_of(t, d);
      extents[n] = extent(t, d);
      ++n;
    }
  }
  for (int i = 1; i < n; ++i) {  // insertion sort by stride: at most four entries
    for (int j = i; j > 0 && strides[j] < strides[j - 1]; --j) {
      std::swap(strides[j], strides[j - 1]);
      std::swap(extents[j], extents[j - 1]);
    }
  }
  std::int64_t span = 1;  // elements covered by the dimensions taken so far
  for (int i = 0; i < n; ++i) {
    if (strides[i] < span) return false;
    // Saturating: an overflowing span means the next stride cannot clear it (and check_view rejects such sizes).
    std::int64_t reach = 0;
    if (__builtin_mul_overflow(extents[i] - 1, strides[i], &reach) || __builtin_add_overflow(span, reach, &span)) {
      span = INT64_MAX;
    }
  }
  return true;
}

// What every view must satisfy, whatever its role: a rank we know, non-negative extents and strides, a contiguous
// last dimension, data when it has elements, and element (and byte) offsets that fit in int64. Outputs additionally
// may not repeat an element (a zero stride over an extent above 1), since concurrent writes to it would race.
void check_view(const TensorView& t, const std::string& name, bool is_output) {
  if (t.rank < 1 || t.rank > kMaxRank) fail(name, "a tensor of rank 1 to " + std::to_string(kMaxRank), t.describe());
  if (t.device != Device::cpu && t.device != Device::cuda) fail(name, "device cpu or cuda", t.describe());
  if (t.device == Device::cuda && t.device_index < 0) {
    fail(name, "a CUDA device ordinal >= 0", "ordinal " + std::to_string(t.device_index));
  }
  for (int d = 0; d < t.rank; ++d) {
    if (extent(t, d) < 0) fail(name, "non-negative sizes", t.describe());
    if (stride_of(t, d) < 0) fail(name, "non-negative strides", t.describe());
  }
  if (is_output && !elements_distinct(t)) {
    fail(name, "an output whose elements do not overlap (each stride past the span of the smaller ones)",
         t.describe());
  }
  const int last = t.rank - 1;
  if (extent(t, last) > 1 && stride_of(t, last) != 1) {
    fail(name, "a contiguous last dimension (stride 1)", t.describe());
  }
  std::int64_t count = 1;
  std::int64_t max_offset = 0;
  bool has_elements = true;
  for (int d = 0; d < t.rank; ++d) {
    if (extent(t, d) == 0) has_elements = false;
  }
  if (has_elements) {
    for (int d = 0; d < t.rank; ++d) {
      std::int64_t term = 0;
      if (__builtin_mul_overflow(count, extent(t, d), &count) ||
          __builtin_mul_overflow(extent(t, d) - 1, stride_of(t, d), &term) ||
          __builtin_add_overflow(max_offset, term, &max_offset)) {
        fail(name, "sizes and strides whose element offsets fit in int64", t.describe());
      }
    }
    std::int64_t end_byte = 0;
    if (__builtin_add_overflow(max_offset, std::int64_t{1}, &end_byte) ||
        __builtin_mul_overflow(end_byte, static_cast<std::int64_t>(dtype_size(t.dtype)), &end_byte)) {
      fail(name, "sizes and strides whose byte offsets fit in int64", t.describe());
    }
    if (t.data == nullptr) fail(name, "non-null data for a tensor with elements", t.describe());
  }
}

void check_float_dtype(const TensorView& t, const std::string& name) {
  if (t.dtype != DType::f32 && t.dtype != DType::f16 && t.dtype != DType::bf16) {
    fail(name, "dtype fp32, fp16 or bf16", t.describe());
  }
}

void check_dtype(const TensorView& t, const std::string& name, DType want, const std::string& why) {
  if (t.dtype != want) fail(name, std::string("dtype ") + to_string(want) + why, t.describe());
}

void check_device(const TensorView& t, const std::string& name, const TensorView& q) {
  const bool same = t.device == q.device && (q.device == Device::cpu || t.device_index == q.device_index);
  if (!same) {
    std::string where = to_string(q.device);
    if (q.device == Device::cuda) where.append(":").append(std::to_string(q.device_index));
    fail(name, "a tensor on " + where + " (where q is)", t.describe());
  }
}

void check_shape(const TensorView& t, const std::string& name, const std::vector<std::int64_t>& want,
                 const std::string& meaning) {
  bool same = t.rank == static_cast<int>(want.size());
  for (int d = 0; same && d < t.rank; ++d) same = extent(t, d) == want[static_cast<std::size_t>(d)];
  if (!same) fail(name, "shape " + shape_text(want) + " " + meaning, t.describe());
}

// An operand of the attention layouts: same dtype as q, on q's device, a valid view.
void check_operand(const TensorView& t, const std::string& name, const TensorView& q, bool is_output) {
  check_view(t, name, is_output);
  if (t.dtype != q.dtype) fail(name, std::string("dtype ") + to_string(q.dtype) + " (the dtype of q)", t.describe());
  check_device(t, name, q);
}

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

std::int64_t check_offsets(const TensorView& cu, const std::string& name, const TensorView& q, std::int64_t rows,
                           const std::string& rows_name, std::int64_t max_seqlen, const std::string& max_name) {
  check_view(cu, name, false);
  check_dtype(cu, name, DType::i32, " (cumulative sequence offsets)");
  if (cu.rank != 1 || extent(cu, 0) < 1) fail(name, "int32 [batch + 1] (rank 1, at least one element)", cu.describe());
  check_device(cu, name, q);
  if (max_seqlen < 0) {
    fail(max_name, "0 (read off the offsets) or a positive maximum length", std::to_string(max_seqlen));
  }
  if (cu.device != Device::cpu) {
    // Device-resident offsets: their contents are the backend's to check (see validate.hpp).
    return max_seqlen > 0 ? max_seqlen : rows;
  }
  const auto* offsets = static_cast<const std::int32_t*>(cu.data);
  const std::int64_t n = extent(cu, 0);
  if (offsets[0] != 0) fail(name, "offsets starting at 0", std::to_string(offsets[0]) + " at index 0");
  std::int64_t longest = 0;
  for (std::int64_t i = 1; i < n; ++i) {
    const std::int64_t len = static_cast<std::int64_t>(offsets[i]) - offsets[i - 1];
    if (len < 0) {
      fail(name, "non-decreasing offsets", std::to_string(offsets[i - 1]) + " at index " + std::to_string(i - 1) +
                                               " then " + std::to_string(offsets[i]) + " at index " +
                                               std::to_string(i));
    }
    if (len > longest) longest = len;
  }
  if (offsets[n - 1] > rows) {
    fail(name, "a last offset <= " + std::to_string(rows) + " (" + rows_name + ", the packed rows)",
         std::to_string(offsets[n - 1]));
  }
  if (max_seqlen > 0 && max_seqlen < longest) {
    fail(max_name, "0 or at least the longest sequence, " + std::to_string(longest), std::to_string(max_seqlen));
  }
  return max_seqlen > 0 ? max_seqlen : longest;
}

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

void check_window(std::int64_t w, const char* name) {
  if (w < -1) fail(name, "-1 (unbounded) or a window size >= 0", std::to_string(w));
}

// The parameters, and the fields of the problem they fill.
void apply_params(const AttentionParams& params, const TensorView& q, const Dims& dims, Problem& p) {
  if (params.softmax_scale.has_value()) {
    if (!std::isfinite(*params.softmax_scale)) {
      fail("params.softmax_scale", "a finite number", number_text(*params.softmax_scale));
    }
    p.scale = *params.softmax_scale;
  } else {
    p.scale = static_cast<float>(1.0 / std::sqrt(static_cast<double>(dims.dim_qk)));
  }
  if (!(params.softcap >= 0.0f) || !std::isfinite(params.softcap)) {
    fail("params.softcap", "0 (off) or a finite cap > 0", number_text(params.softcap));
  }
  p.softcap = params.softcap;
  check_window(params.mask.window_left, "params.mask.window_left");
  check_window(params.mask.window_right, "params.mask.window_right");
  if (params.mask.alignment != Alignment::bottom_right && params.mask.alignment != Alignment::top_left) {
    fail("params.mask.alignment", "bottom_right or top_left",
         std::to_string(static_cast<int>(params.mask.alignment)));
  }
  p.mask = params.mask;

  const TensorView& alibi = params.alibi_slopes;
  if (!alibi.empty()) {
    check_view(alibi, "params.alibi_slopes", false);
    check_dtype(alibi, "params.alibi_slopes", DType::f32, "");
    check_device(alibi, "params.alibi_slopes", q);
    const bool per_head = alibi.rank == 1 && extent(alibi, 0) == dims.heads_q;
    const bool per_batch = alibi.rank == 2 && extent(alibi, 0) == p.batch && extent(alibi, 1) == dims.heads_q;
    if (!per_head && !per_batch) {
      fail("params.alibi_slopes",
           "fp32 [heads_q] = [" + std::to_string(dims.heads_q) + "] or [batch, heads_q] = [" +
               std::to_string(p.batch) + ", " + std::to_string(dims.heads_q) + "]",
           alibi.describe());
    }
    p.alibi_slopes = static_cast<const float*>(alibi.data);
    p.alibi_batch_stride = per_batch ? alibi.stride[0] : 0;
  }
  const TensorView& sinks = params.sinks;
  if (!sinks.empty()) {
    check_view(sinks, "params.sinks", false);
    check_dtype(sinks, "params.sinks", DType::f32, "");
    check_device(sinks, "params.sinks", q);
    check_shape(sinks, "params.sinks", {dims.heads_q}, "[heads_q], one logit per query head");
    p.sinks = static_cast<const float*>(sinks.data);
  }
  if (params.num_threads < 0) {
    fail("params.num_threads", "0 (the OpenMP default) or a positive count", std::to_string(params.num_threads));
  }
  p.deterministic = params.deterministic;
  p.stream = params.stream;
  p.workspace = params.workspace;
  p.num_threads = params.num_threads;
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
  apply_params(params, q, dims, p);
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
