// Every argument the API rejects: the error names the argument, says what was expected and what came, and no
// output is touched. Each case starts from a valid problem and breaks one thing.
#include <gtest/gtest.h>

#include <cmath>
#include <limits>

#include "api/fixture.hpp"

namespace ioattn::apitest {
namespace {

// Dense: batch 2, seqlen 5 x 7, 4 query heads over 2 kv heads, head dims 8 / 6.
Problem dense() { return Problem(2, 5, 7, 4, 2, 8, 6); }
// Varlen: three sequences, the middle one empty on the query side.
Problem packed() { return Problem({3, 0, 4}, {2, 5, 1}, 4, 2, 8, 6); }

void expect_forward_rejected(Problem& p, const ForwardArgs& args, const AttentionParams& params,
                             const std::string& argument, std::vector<std::string> fragments = {},
                             ErrorCode code = ErrorCode::invalid_argument) {
  expect_rejected(p, [&] { attention_forward(args, params); }, argument, fragments, code);
  // The workspace query checks the same arguments the same way.
  expect_rejected(p, [&] { (void)forward_workspace_bytes(args, params); }, argument, fragments, code);
}

void expect_backward_rejected(Problem& p, const BackwardArgs& args, const AttentionParams& params,
                              const std::string& argument, std::vector<std::string> fragments = {},
                              ErrorCode code = ErrorCode::invalid_argument) {
  expect_rejected(p, [&] { attention_backward(args, params); }, argument, fragments, code);
  expect_rejected(p, [&] { (void)backward_workspace_bytes(args, params); }, argument, fragments, code);
}

TEST(Validate, ValidBaseCasesAreAccepted) {
  // The starting points of every case below must pass, or the cases would prove nothing.
  Problem p = dense();
  EXPECT_NO_THROW(forward_workspace_bytes(p.forward_args()));
  EXPECT_NO_THROW(backward_workspace_bytes(p.backward_args()));
  Problem v = packed();
  EXPECT_NO_THROW(forward_workspace_bytes(v.forward_args()));
  EXPECT_NO_THROW(backward_workspace_bytes(v.backward_args()));
}

TEST(Validate, WrongRanks) {
  Problem p = dense();
  ForwardArgs a = p.forward_args();
  a.q = TensorView::contiguous(p.q.data(), DType::f32, {10, 4, 8});
  expect_forward_rejected(p, a, {}, "q", {"rank 4", a.q.describe()});
  a = p.forward_args();
  a.k = TensorView::contiguous(p.k.data(), DType::f32, {14, 2, 8});
  expect_forward_rejected(p, a, {}, "k", {"rank 4"});
  a = p.forward_args();
  a.v = TensorView::contiguous(p.v.data(), DType::f32, {2, 7, 12});
  expect_forward_rejected(p, a, {}, "v", {"rank 4"});
  a = p.forward_args();
  a.out = TensorView::contiguous(p.out.data(), DType::f32, {2, 5, 24});
  expect_forward_rejected(p, a, {}, "out", {"[2, 5, 4, 6]"});
  a = p.forward_args();
  a.lse = TensorView::contiguous(p.lse.data(), DType::f32, {40});
  expect_forward_rejected(p, a, {}, "lse", {"[2, 4, 5]"});
  TensorView five_d;  // rank beyond the view's capacity, as a C caller could write it
  five_d.data = p.q.data();
  five_d.rank = 5;
  a = p.forward_args();
  a.q = five_d;
  expect_forward_rejected(p, a, {}, "q", {"rank"});
}

TEST(Validate, ShapeMismatches) {
  Problem p = dense();
  ForwardArgs a = p.forward_args();
  a.k = TensorView::contiguous(p.k.data(), DType::f32, {1, 7, 2, 8});
  expect_forward_rejected(p, a, {}, "k", {"batch", a.k.describe()});
  a = p.forward_args();
  a.k = TensorView::contiguous(p.k.data(), DType::f32, {2, 7, 2, 4});
  expect_forward_rejected(p, a, {}, "k", {"[2, 7, 2, 8]"});
  a = p.forward_args();
  a.v = TensorView::contiguous(p.v.data(), DType::f32, {2, 6, 2, 6});
  expect_forward_rejected(p, a, {}, "v", {"[2, 7, 2, 6]"});
  a = p.forward_args();
  a.v = TensorView::contiguous(p.v.data(), DType::f32, {2, 7, 1, 6});
  expect_forward_rejected(p, a, {}, "v", {"heads_kv"});
  a = p.forward_args();
  a.out = TensorView::contiguous(p.out.data(), DType::f32, {2, 5, 4, 8});
  expect_forward_rejected(p, a, {}, "out", {"[2, 5, 4, 6]", a.out.describe()});
  a = p.forward_args();
  a.lse = TensorView::contiguous(p.lse.data(), DType::f32, {2, 5, 4});
  expect_forward_rejected(p, a, {}, "lse", {"[2, 4, 5]", "[batch, heads_q, seqlen_q]"});
}

TEST(Validate, DtypeMismatches) {
  Problem p = dense();
  ForwardArgs a = p.forward_args();
  a.q.dtype = DType::i32;
  expect_forward_rejected(p, a, {}, "q", {"fp32, fp16 or bf16", "int32["});
  a = p.forward_args();
  a.k.dtype = DType::bf16;
  expect_forward_rejected(p, a, {}, "k", {"dtype fp32", "bf16["});
  a = p.forward_args();
  a.v.dtype = DType::f16;
  expect_forward_rejected(p, a, {}, "v", {"dtype fp32"});
  a = p.forward_args();
  a.out.dtype = DType::bf16;
  expect_forward_rejected(p, a, {}, "out", {"dtype fp32"});
  // lse is fp32 whatever the operands are.
  a = p.forward_args();
  a.lse.dtype = DType::bf16;
  expect_forward_rejected(p, a, {}, "lse", {"fp32"});
  a = p.forward_args();
  for (TensorView* t : {&a.q, &a.k, &a.v, &a.out}) t->dtype = DType::bf16;
  a.lse.dtype = DType::bf16;
  expect_forward_rejected(p, a, {}, "lse", {"fp32"});
}

TEST(Validate, HeadsAndHeadDims) {
  Problem p(1, 4, 4, 6, 4, 8, 8);  // 6 query heads over 4 kv heads
  expect_forward_rejected(p, p.forward_args(), {}, "q", {"multiple of heads_kv = 4"});
  Problem z(1, 4, 4, 2, 1, 8, 8);
  ForwardArgs a = z.forward_args();
  a.q = TensorView::contiguous(z.q.data(), DType::f32, {1, 4, 2, 0});
  a.k = TensorView::contiguous(z.k.data(), DType::f32, {1, 4, 1, 0});
  expect_forward_rejected(z, a, {}, "q", {"head_dim_qk", ">= 1"});
  a = z.forward_args();
  a.v = TensorView::contiguous(z.v.data(), DType::f32, {1, 4, 1, 0});
  a.out = TensorView::contiguous(z.out.data(), DType::f32, {1, 4, 2, 0});
  expect_forward_rejected(z, a, {}, "v", {"head_dim_v"});
  a = z.forward_args();
  a.k = TensorView::contiguous(z.k.data(), DType::f32, {1, 4, 0, 8});
  a.v = TensorView::contiguous(z.v.data(), DType::f32, {1, 4, 0, 8});
  expect_forward_rejected(z, a, {}, "k", {"heads_kv"});
}

TEST(Validate, HeadDimAboveTheBackendLimitIsUnsupported) {
  // 520 > 512, the CPU backends' limit: valid input, but no CPU backend runs it.
  Problem p(1, 2, 3, 1, 1, 520, 8);
  for (const char* impl : {"auto", "reference", "tiled"}) {
    AttentionParams params;
    params.impl = impl;
    expect_forward_rejected(p, p.forward_args(), params, std::string("impl '") + impl + "'", {"512"},
                            ErrorCode::unsupported);
    expect_backward_rejected(p, p.backward_args(), params, std::string("impl '") + impl + "'", {"512"},
                             ErrorCode::unsupported);
  }
}

TEST(Validate, LastDimensionMustBeContiguous) {
  Problem p = dense();
  ForwardArgs a = p.forward_args();
  // Every other element of a buffer twice as wide: strides fine elsewhere, but the last one is 2.
  std::vector<float> wide(p.q.size() * 4, 0.0f);
  a.q = TensorView::strided(wide.data(), DType::f32, {2, 5, 4, 8}, {320, 64, 16, 2});
  expect_forward_rejected(p, a, {}, "q", {"contiguous last dimension", a.q.describe()});
  a = p.forward_args();
  a.lse = TensorView::strided(p.lse.data(), DType::f32, {2, 4, 5}, {20, 1, 4});
  expect_forward_rejected(p, a, {}, "lse", {"contiguous"});
  // Non-contiguous leading strides are fine: q as a strided slice of a wider buffer.
  Problem ok = dense();
  ForwardArgs b = ok.forward_args();
  b.q = TensorView::strided(wide.data(), DType::f32, {2, 5, 4, 8}, {640, 128, 16, 1});
  EXPECT_NO_THROW(forward_workspace_bytes(b));
}

TEST(Validate, NegativeSizesAndStrides) {
  Problem p = dense();
  ForwardArgs a = p.forward_args();
  a.k.shape[1] = -7;
  expect_forward_rejected(p, a, {}, "k", {"non-negative sizes"});
  a = p.forward_args();
  a.v.stride[0] = -84;
  expect_forward_rejected(p, a, {}, "v", {"non-negative strides"});
}

TEST(Validate, NullDataWithElements) {
  Problem p = dense();
  for (int which = 0; which < 5; ++which) {
    ForwardArgs a = p.forward_args();
    TensorView* t[] = {&a.q, &a.k, &a.v, &a.out, &a.lse};
    const char* names[] = {"q", "k", "v", "out", "lse"};
    t[which]->data = nullptr;
    expect_forward_rejected(p, a, {}, names[which], {"non-null data", "(data null)"});
  }
  BackwardArgs b = p.backward_args();
  b.dk.data = nullptr;
  expect_backward_rejected(p, b, {}, "dk", {"non-null data"});
}

TEST(Validate, TensorsOnDifferentDevices) {
  Problem p = dense();
  ForwardArgs a = p.forward_args();
  a.v.device = Device::cuda;
  expect_forward_rejected(p, a, {}, "v", {"on cpu (where q is)", "on cuda:0"});
  a = p.forward_args();
  a.lse.device = Device::cuda;
  expect_forward_rejected(p, a, {}, "lse", {"on cpu"});
  // Two GPUs: same kind, different ordinal.
  a = p.forward_args();
  for (TensorView* t : {&a.q, &a.k, &a.v, &a.out, &a.lse}) t->device = Device::cuda;
  a.k.device_index = 1;
  expect_forward_rejected(p, a, {}, "k", {"cuda:0", "cuda:1"});
  BackwardArgs b = p.backward_args();
  b.dq.device = Device::cuda;
  expect_backward_rejected(p, b, {}, "dq", {"on cpu"});
  a = p.forward_args();
  for (TensorView* t : {&a.q, &a.k, &a.v, &a.out, &a.lse}) t->device = Device::cuda;
  a.q.device_index = -1;
  expect_forward_rejected(p, a, {}, "q", {"ordinal >= 0", "got ordinal -1"});
  a = p.forward_args();
  a.q.device = static_cast<Device>(5);
  expect_forward_rejected(p, a, {}, "q", {"device cpu or cuda"});
  AttentionParams params;
  params.sinks = p.sinks_view();
  params.sinks.device = Device::cuda;
  expect_forward_rejected(p, p.forward_args(), params, "params.sinks", {"on cpu"});
}

TEST(Validate, OffsetsThatOverflowInt64) {
  Problem p = dense();
  ForwardArgs a = p.forward_args();
  // Sizes whose element offsets pass 2^63: must be refused, never wrap into a small number.
  a.q = TensorView::strided(p.q.data(), DType::f32, {2, 5, 4, 8}, {std::int64_t{1} << 62, 32, 8, 1});
  expect_forward_rejected(p, a, {}, "q", {"int64"});
  a = p.forward_args();
  a.k = TensorView::strided(p.k.data(), DType::f32, {2, std::int64_t{1} << 40, 2, 8}, {0, std::int64_t{1} << 30, 8, 1});
  expect_forward_rejected(p, a, {}, "k", {"int64"});
  // Offsets that fit int64 as elements but not as bytes.
  a = p.forward_args();
  a.v = TensorView::strided(p.v.data(), DType::f32, {2, 7, 2, 6}, {std::int64_t{1} << 61, 12, 6, 1});
  expect_forward_rejected(p, a, {}, "v", {"byte offsets"});
}

TEST(Validate, OutputsThatOverlapThemselves) {
  Problem p = dense();
  ForwardArgs a = p.forward_args();
  a.out = TensorView::strided(p.out.data(), DType::f32, {2, 5, 4, 6}, {0, 24, 6, 1});
  expect_forward_rejected(p, a, {}, "out", {"do not overlap"});
  // Heads three elements apart while each head is six wide: rows overlap without any zero stride.
  a.out = TensorView::strided(p.out.data(), DType::f32, {2, 5, 4, 6}, {120, 24, 3, 1});
  expect_forward_rejected(p, a, {}, "out", {"do not overlap"});
  a = p.forward_args();
  a.lse = TensorView::strided(p.lse.data(), DType::f32, {2, 4, 5}, {20, 4, 1});
  expect_forward_rejected(p, a, {}, "lse", {"do not overlap"});
  // Permuted and padded outputs are fine: out stored as [batch, heads, seqlen, dim] with room between batches.
  std::vector<float> roomy(2 * 200);
  ForwardArgs c = p.forward_args();
  c.out = TensorView::strided(roomy.data(), DType::f32, {2, 5, 4, 6}, {200, 6, 30, 1});
  EXPECT_NO_THROW(forward_workspace_bytes(c));
  // Broadcast inputs are fine (k shared over the batch by a zero stride).
  ForwardArgs b = p.forward_args();
  b.k = TensorView::strided(p.k.data(), DType::f32, {2, 7, 2, 8}, {0, 16, 8, 1});
  EXPECT_NO_THROW(forward_workspace_bytes(b));
}

TEST(Validate, Windows) {
  Problem p = dense();
  AttentionParams params;
  params.mask = Mask::window(-2, 0);
  expect_forward_rejected(p, p.forward_args(), params, "params.mask.window_left", {"-1 (unbounded)", "got -2"});
  params.mask = Mask::window(3, -7);
  expect_forward_rejected(p, p.forward_args(), params, "params.mask.window_right", {"got -7"});
  expect_backward_rejected(p, p.backward_args(), params, "params.mask.window_right");
  params.mask = Mask::causal();
  params.mask.alignment = static_cast<Alignment>(9);
  expect_forward_rejected(p, p.forward_args(), params, "params.mask.alignment");
}

TEST(Validate, ScalarParameters) {
  Problem p = dense();
  AttentionParams params;
  params.softcap = -1.0f;
  expect_forward_rejected(p, p.forward_args(), params, "params.softcap", {"got -1"});
  params.softcap = std::numeric_limits<float>::quiet_NaN();
  expect_forward_rejected(p, p.forward_args(), params, "params.softcap", {"got nan"});
  params.softcap = std::numeric_limits<float>::infinity();
  expect_forward_rejected(p, p.forward_args(), params, "params.softcap", {"got inf"});
  params = {};
  params.softmax_scale = std::numeric_limits<float>::infinity();
  expect_forward_rejected(p, p.forward_args(), params, "params.softmax_scale", {"finite", "got inf"});
  params.softmax_scale = std::numeric_limits<float>::quiet_NaN();
  expect_backward_rejected(p, p.backward_args(), params, "params.softmax_scale", {"got nan"});
  params = {};
  params.num_threads = -2;
  expect_forward_rejected(p, p.forward_args(), params, "params.num_threads", {"got -2"});
}

TEST(Validate, AlibiSlopes) {
  Problem p = dense();
  std::vector<float> slopes(16, 0.5f);
  AttentionParams params;
  params.alibi_slopes = TensorView::contiguous(slopes.data(), DType::f32, {3});
  expect_forward_rejected(p, p.forward_args(), params, "params.alibi_slopes", {"[heads_q] = [4]", "[2, 4]"});
  params.alibi_slopes = TensorView::contiguous(slopes.data(), DType::f32, {4, 2});
  expect_forward_rejected(p, p.forward_args(), params, "params.alibi_slopes");
  params.alibi_slopes = TensorView::contiguous(slopes.data(), DType::f16, {4});
  expect_forward_rejected(p, p.forward_args(), params, "params.alibi_slopes", {"fp32"});
  params.alibi_slopes = TensorView::strided(slopes.data(), DType::f32, {4}, {2});
  expect_forward_rejected(p, p.forward_args(), params, "params.alibi_slopes", {"contiguous"});
  // Both documented shapes pass.
  params.alibi_slopes = TensorView::contiguous(slopes.data(), DType::f32, {4});
  EXPECT_NO_THROW(forward_workspace_bytes(p.forward_args(), params));
  params.alibi_slopes = TensorView::contiguous(slopes.data(), DType::f32, {2, 4});
  EXPECT_NO_THROW(forward_workspace_bytes(p.forward_args(), params));
}

TEST(Validate, SinksAndTheirGradient) {
  Problem p = dense();
  AttentionParams params;
  params.sinks = TensorView::contiguous(p.sinks.data(), DType::f32, {2});
  expect_forward_rejected(p, p.forward_args(), params, "params.sinks", {"[4]"});
  params.sinks = TensorView::contiguous(p.sinks.data(), DType::bf16, {4});
  expect_forward_rejected(p, p.forward_args(), params, "params.sinks", {"fp32"});
  params.sinks = p.sinks_view();
  BackwardArgs b = p.backward_args();
  expect_backward_rejected(p, b, params, "dsinks", {"since params.sinks is given", "(none)"});
  b.dsinks = TensorView::contiguous(p.dsinks.data(), DType::f32, {2, 2});
  expect_backward_rejected(p, b, params, "dsinks", {"[heads_q]"});
  b.dsinks = TensorView::contiguous(p.dsinks.data(), DType::f16, {4});
  expect_backward_rejected(p, b, params, "dsinks", {"fp32"});
  // A gradient for sinks that were not given would never be written: refused rather than silently left alone.
  b.dsinks = p.dsinks_view();
  expect_backward_rejected(p, b, {}, "dsinks", {"params.sinks is not given"});
  b = p.backward_args();
  b.dsinks = p.dsinks_view();
  EXPECT_NO_THROW(backward_workspace_bytes(b, params));
}

TEST(Validate, BackwardOperands) {
  Problem p = dense();
  BackwardArgs b = p.backward_args();
  b.dq = TensorView::contiguous(p.dq.data(), DType::f32, {2, 5, 4, 6});
  expect_backward_rejected(p, b, {}, "dq", {"[2, 5, 4, 8]", "the shape of q"});
  b = p.backward_args();
  b.dk.dtype = DType::f16;
  expect_backward_rejected(p, b, {}, "dk", {"dtype fp32"});
  b = p.backward_args();
  b.dv = TensorView::contiguous(p.dv.data(), DType::f32, {2, 7, 4, 6});
  expect_backward_rejected(p, b, {}, "dv", {"[2, 7, 2, 6]"});
  b = p.backward_args();
  b.dout = TensorView::contiguous(p.dout.data(), DType::f32, {2, 5, 4, 5});
  expect_backward_rejected(p, b, {}, "dout", {"the shape of out"});
  b = p.backward_args();
  b.lse = TensorView{};
  expect_backward_rejected(p, b, {}, "lse", {"as written by the forward", "(none)"});
  b = p.backward_args();
  b.out = TensorView::contiguous(p.out.data(), DType::f32, {2, 5, 4, 7});
  expect_backward_rejected(p, b, {}, "out");
  b = p.backward_args();
  b.dq = TensorView::strided(p.dq.data(), DType::f32, {2, 5, 4, 8}, {160, 32, 0, 1});
  expect_backward_rejected(p, b, {}, "dq", {"do not overlap"});
}

TEST(Validate, VarlenOffsets) {
  Problem p = packed();  // cu_q {0, 3, 3, 7}, cu_k {0, 2, 7, 8}
  ForwardArgs a = p.forward_args();
  a.varlen->cu_seqlens_q.dtype = DType::f32;
  expect_forward_rejected(p, a, {}, "varlen.cu_seqlens_q", {"int32"});
  a = p.forward_args();
  a.varlen->cu_seqlens_k = TensorView::contiguous(p.cu_k.data(), DType::i32, {3});
  expect_forward_rejected(p, a, {}, "varlen.cu_seqlens_k", {"[4]"});
  a = p.forward_args();
  a.varlen->cu_seqlens_q = TensorView::contiguous(p.cu_q.data(), DType::i32, {2, 2});
  expect_forward_rejected(p, a, {}, "varlen.cu_seqlens_q", {"rank 1"});
  a = p.forward_args();
  a.varlen->cu_seqlens_k.device = Device::cuda;
  expect_forward_rejected(p, a, {}, "varlen.cu_seqlens_k", {"on cpu"});

  std::vector<std::int32_t> bad = {1, 3, 3, 7};
  a = p.forward_args();
  a.varlen->cu_seqlens_q = TensorView::contiguous(bad.data(), DType::i32, {4});
  expect_forward_rejected(p, a, {}, "varlen.cu_seqlens_q", {"starting at 0", "got 1"});
  bad = {0, 3, 2, 7};
  expect_forward_rejected(p, a, {}, "varlen.cu_seqlens_q", {"non-decreasing", "3 at index 1 then 2 at index 2"});
  bad = {0, 3, 3, 8};  // q has 7 rows
  expect_forward_rejected(p, a, {}, "varlen.cu_seqlens_q", {"<= 7", "got 8"});
  bad = {0, 2, 7, 9};  // k has 8 rows
  a = p.forward_args();
  a.varlen->cu_seqlens_k = TensorView::contiguous(bad.data(), DType::i32, {4});
  expect_forward_rejected(p, a, {}, "varlen.cu_seqlens_k", {"<= 8"});

  a = p.forward_args();
  a.varlen->max_seqlen_q = 3;  // the longest query sequence has 4 rows
  expect_forward_rejected(p, a, {}, "varlen.max_seqlen_q", {"longest sequence, 4", "got 3"});
  a = p.forward_args();
  a.varlen->max_seqlen_k = -1;
  expect_forward_rejected(p, a, {}, "varlen.max_seqlen_k", {"got -1"});
  BackwardArgs b = p.backward_args();
  b.varlen->max_seqlen_k = 4;  // the longest key sequence has 5
  expect_backward_rejected(p, b, {}, "varlen.max_seqlen_k", {"5"});
}

TEST(Validate, VarlenLayouts) {
  Problem p = packed();
  ForwardArgs a = p.forward_args();
  a.q = TensorView::contiguous(p.q.data(), DType::f32, {1, 7, 4, 8});
  expect_forward_rejected(p, a, {}, "q", {"rank 3", "varlen"});
  a = p.forward_args();
  a.lse = TensorView::contiguous(p.lse.data(), DType::f32, {7, 4});
  expect_forward_rejected(p, a, {}, "lse", {"[4, 7]", "[heads_q, total_q]"});
  a = p.forward_args();
  a.k = TensorView::contiguous(p.k.data(), DType::f32, {8, 2, 6});
  expect_forward_rejected(p, a, {}, "k", {"[8, 2, 8]"});
  // alibi [batch, heads_q]: batch is the number of sequences.
  std::vector<float> slopes(12, 0.25f);
  AttentionParams params;
  params.alibi_slopes = TensorView::contiguous(slopes.data(), DType::f32, {2, 4});
  expect_forward_rejected(p, p.forward_args(), params, "params.alibi_slopes", {"[3, 4]"});
  params.alibi_slopes = TensorView::contiguous(slopes.data(), DType::f32, {3, 4});
  EXPECT_NO_THROW(forward_workspace_bytes(p.forward_args(), params));
}

TEST(Validate, UnknownImplListsTheKnownOnes) {
  Problem p = dense();
  AttentionParams params;
  params.impl = "flash3";
  expect_forward_rejected(p, p.forward_args(), params, "params.impl", {"auto", "reference", "tiled", "'flash3'"});
  expect_backward_rejected(p, p.backward_args(), params, "params.impl", {"'flash3'"});
}

}  // namespace
}  // namespace ioattn::apitest
