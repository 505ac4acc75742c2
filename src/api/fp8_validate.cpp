// ioattn internal: the checks of the FP8 entry points' arguments, and the problems built from arguments that pass
// them. Messages have the form of every other check ("<argument>: expected <what>, got <what came>", see
// checks.hpp); nothing here writes to any tensor.
#include <cstdint>
#include <string>
#include <vector>

#include "api/checks.hpp"
#include "api/fp8_problem.hpp"
#include "ioattn/error.hpp"

namespace ioattn::detail {
namespace {

const char* const kFp8Why = " (FP8 operands are e4m3 codes; quantize_fp8 makes them)";

std::int64_t ceil_div(std::int64_t a, std::int64_t b) { return (a + b - 1) / b; }

void check_block_rows(std::int64_t block_rows, const std::string& name) {
  if (block_rows < 0 || block_rows % 16 != 0) {
    fail(name, "0 (one descale per batch and head) or a positive multiple of 16", std::to_string(block_rows));
  }
}

// A descale tensor of `heads` heads over `rows` sequence rows; on `where`'s device.
Descale check_descale(const TensorView& t, const std::string& name, const TensorView& where, std::int64_t batch,
                      std::int64_t heads, std::int64_t rows, std::int64_t block_rows, const std::string& heads_name,
                      const std::string& rows_name) {
  if (t.empty()) {
    fail(name, block_rows == 0 ? "fp32 [batch, " + heads_name + "] descales" : "fp32 block descales", "none");
  }
  check_view(t, name, false);
  check_dtype(t, name, DType::f32, " (descale factors are fp32)");
  check_device(t, name, where);
  Descale d;
  d.ptr = static_cast<const float*>(t.data);
  if (block_rows == 0) {
    check_shape(t, name, {batch, heads}, "[batch, " + heads_name + "] (one descale per batch and head)");
  } else {
    const std::int64_t blocks = ceil_div(rows, block_rows);
    check_shape(t, name, {batch, heads, blocks},
                "[batch, " + heads_name + ", ceil(" + rows_name + " / block_rows = " + std::to_string(block_rows) +
                    ")]");
    d.block_stride = extent(t, 2) > 1 ? stride_of(t, 2) : 0;
    d.block_rows = block_rows;
  }
  d.batch_stride = stride_of(t, 0);
  d.head_stride = stride_of(t, 1);
  return d;
}

void check_rank4(const TensorView& t, const std::string& name, const char* meaning) {
  if (t.rank != 4) fail(name, std::string("rank 4 ") + meaning + " (dense layout)", t.describe());
}

Operand seq_operand(const TensorView& t) { return {t.data, t.stride[0], t.stride[1], t.stride[2]}; }

}  // namespace

Fp8Problem make_fp8_forward_problem(const Fp8ForwardArgs& args, const AttentionParams& params) {
  const TensorView &q = args.q, &k = args.k, &v = args.v;
  check_view(q, "q", false);
  check_dtype(q, "q", DType::f8e4m3, kFp8Why);
  if (args.varlen.has_value()) {
    throw Error(ErrorCode::unsupported,
                "varlen: the FP8 forward takes the dense layout only for now (leave varlen empty, or use "
                "attention_forward on the dequantized tensors)");
  }
  check_rank4(q, "q", "[batch, seqlen_q, heads_q, head_dim_qk]");
  check_operand(k, "k", q, false);
  check_rank4(k, "k", "[batch, seqlen_k, heads_kv, head_dim_qk]");
  check_operand(v, "v", q, false);
  check_rank4(v, "v", "[batch, seqlen_k, heads_kv, head_dim_v]");

  Fp8Problem fp;
  Problem& p = fp.attn;
  p.batch = extent(q, 0);
  p.seqlen_q = extent(q, 1);
  p.heads_q = extent(q, 2);
  p.dim_qk = extent(q, 3);
  p.seqlen_k = extent(k, 1);
  p.heads_kv = extent(k, 2);
  p.dim_v = extent(v, 3);
  if (p.dim_qk < 1) fail("q", "head_dim_qk (last dim) >= 1", q.describe());
  if (extent(k, 0) != p.batch) fail("k", "batch (dim 0) " + std::to_string(p.batch) + " as in q", k.describe());
  if (p.heads_kv < 1) fail("k", "heads_kv (dim 2) >= 1", k.describe());
  check_shape(k, "k", {p.batch, p.seqlen_k, p.heads_kv, p.dim_qk},
              "[batch, seqlen_k, heads_kv, head_dim_qk] (head_dim_qk as in q)");
  if (p.heads_q < 1 || p.heads_q % p.heads_kv != 0) {
    fail("q", "heads_q (dim 2) a positive multiple of heads_kv = " + std::to_string(p.heads_kv) + " (from k)",
         q.describe());
  }
  if (p.dim_v < 1) fail("v", "head_dim_v (last dim) >= 1", v.describe());
  check_shape(v, "v", {p.batch, p.seqlen_k, p.heads_kv, p.dim_v},
              "[batch, seqlen_k, heads_kv, head_dim_v] (batch, seqlen_k and heads_kv as in k)");

  check_view(args.out, "out", true);
  check_float_dtype(args.out, "out");
  check_device(args.out, "out", q);
  check_shape(args.out, "out", {p.batch, p.seqlen_q, p.heads_q, p.dim_v}, "[batch, seqlen_q, heads_q, head_dim_v]");
  if (!args.lse.empty()) {
    check_view(args.lse, "lse", true);
    check_dtype(args.lse, "lse", DType::f32, " (log-sum-exp is always fp32)");
    check_device(args.lse, "lse", q);
    check_shape(args.lse, "lse", {p.batch, p.heads_q, p.seqlen_q}, "[batch, heads_q, seqlen_q]");
  }

  const Fp8Scales& s = args.scales;
  check_block_rows(s.block_rows, "scales.block_rows");
  fp.block_rows = s.block_rows;
  fp.q_descale = check_descale(s.q_descale, "scales.q_descale", q, p.batch, p.heads_q, p.seqlen_q, s.block_rows,
                               "heads_q", "seqlen_q");
  fp.k_descale = check_descale(s.k_descale, "scales.k_descale", q, p.batch, p.heads_kv, p.seqlen_k, s.block_rows,
                               "heads_kv", "seqlen_k");
  fp.v_descale = check_descale(s.v_descale, "scales.v_descale", q, p.batch, p.heads_kv, p.seqlen_k, s.block_rows,
                               "heads_kv", "seqlen_k");

  p.dtype = args.out.dtype;
  p.device = q.device;
  p.device_index = q.device == Device::cuda ? q.device_index : 0;
  p.total_q = p.batch * p.seqlen_q;
  p.total_k = p.batch * p.seqlen_k;
  p.q = seq_operand(q);
  p.k = seq_operand(k);
  p.v = seq_operand(v);
  p.out = seq_operand(args.out);
  if (!args.lse.empty()) p.lse = {args.lse.data, args.lse.stride[0], args.lse.stride[2], args.lse.stride[1]};
  apply_params(params, q, p.heads_q, p.dim_qk, p);
  return fp;
}

Fp8QuantizeProblem make_fp8_quantize_problem(const TensorView& input, const TensorView& output,
                                             const TensorView& descale, std::int64_t block_rows, bool rotate) {
  check_view(input, "input", false);
  check_float_dtype(input, "input");
  check_rank4(input, "input", "[batch, seqlen, heads, head_dim]");
  Fp8QuantizeProblem qp;
  qp.input_dtype = input.dtype;
  qp.batch = extent(input, 0);
  qp.seqlen = extent(input, 1);
  qp.heads = extent(input, 2);
  qp.dim = extent(input, 3);

  check_view(output, "output", true);
  check_dtype(output, "output", DType::f8e4m3, " (quantize_fp8 writes e4m3 codes)");
  check_device(output, "output", input);
  check_shape(output, "output", {qp.batch, qp.seqlen, qp.heads, qp.dim}, "(the shape of input)");

  check_block_rows(block_rows, "block_rows");
  if (rotate && (qp.dim < 1 || (qp.dim & (qp.dim - 1)) != 0)) {
    fail("rotate", "false, or an input head_dim (last dim) that is a power of two for the Walsh-Hadamard rotation",
         "true with " + input.describe());
  }
  check_view(descale, "descale", true);
  check_dtype(descale, "descale", DType::f32, " (descale factors are fp32)");
  check_device(descale, "descale", input);
  if (block_rows == 0) {
    check_shape(descale, "descale", {qp.batch, qp.heads}, "[batch, heads] (one descale per batch and head)");
  } else {
    check_shape(descale, "descale", {qp.batch, qp.heads, ceil_div(qp.seqlen, block_rows)},
                "[batch, heads, ceil(seqlen / block_rows = " + std::to_string(block_rows) + ")]");
    qp.descale_block_stride = stride_of(descale, 2);
  }
  qp.descale_batch_stride = stride_of(descale, 0);
  qp.descale_head_stride = stride_of(descale, 1);
  qp.descale = static_cast<float*>(descale.data);
  qp.input = seq_operand(input);
  qp.output = seq_operand(output);
  qp.block_rows = block_rows;
  qp.rotate = rotate;
  return qp;
}

}  // namespace ioattn::detail
