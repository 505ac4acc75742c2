// The C ABI: status codes, the thread-local last error, nothing written on failure, and a call that matches C++.
#include <gtest/gtest.h>

#include <cstring>
#include <string>
#include <thread>

#include "api/fixture.hpp"
#include "ioattn/ioattn.h"

namespace ioattn::apitest {
namespace {

ioattn_tensor to_c(const TensorView& t) {
  ioattn_tensor c{};
  c.data = t.data;
  c.dtype = static_cast<int32_t>(t.dtype);
  c.device = static_cast<int32_t>(t.device);
  c.device_index = t.device_index;
  c.rank = t.rank;
  for (int d = 0; d < t.rank; ++d) {
    c.shape[d] = t.shape[static_cast<std::size_t>(d)];
    c.stride[d] = t.stride[static_cast<std::size_t>(d)];
  }
  return c;
}

ioattn_forward_args forward_c(Problem& p) {
  ioattn_forward_args a{};
  a.q = to_c(p.q_view());
  a.k = to_c(p.k_view());
  a.v = to_c(p.v_view());
  a.out = to_c(p.out_view());
  a.lse = to_c(p.lse_view());
  return a;
}

ioattn_backward_args backward_c(Problem& p) {
  ioattn_backward_args a{};
  a.q = to_c(p.q_view());
  a.k = to_c(p.k_view());
  a.v = to_c(p.v_view());
  a.out = to_c(p.out_view());
  a.dout = to_c(p.dout_view());
  a.lse = to_c(p.lse_view());
  a.dq = to_c(p.dq_view());
  a.dk = to_c(p.dk_view());
  a.dv = to_c(p.dv_view());
  return a;
}

// The enum values of the C header are the C++ ones, which to_c() relies on.
static_assert(IOATTN_DTYPE_F32 == static_cast<int>(DType::f32) && IOATTN_DTYPE_F16 == static_cast<int>(DType::f16) &&
              IOATTN_DTYPE_BF16 == static_cast<int>(DType::bf16) && IOATTN_DTYPE_I32 == static_cast<int>(DType::i32));
static_assert(IOATTN_DEVICE_CPU == static_cast<int>(Device::cpu) &&
              IOATTN_DEVICE_CUDA == static_cast<int>(Device::cuda));
static_assert(IOATTN_MAX_RANK == kMaxRank);

void expect_status(Problem& p, ioattn_status got, ioattn_status want, const std::string& argument,
                   const std::string& fragment = "") {
  EXPECT_EQ(got, want) << ioattn_status_string(got) << ": " << ioattn_last_error();
  const std::string message = ioattn_last_error();
  EXPECT_EQ(message.rfind(argument + ": expected", 0), 0u) << message;
  if (!fragment.empty()) EXPECT_NE(message.find(fragment), std::string::npos) << message;
  EXPECT_TRUE(p.outputs_untouched()) << message;
}

TEST(CApi, ForwardMatchesTheCppCall) {
  Problem c(2, 6, 9, 4, 2, 8, 8), cpp(2, 6, 9, 4, 2, 8, 8);
  ioattn_params params;
  ioattn_params_init(&params);
  params.mask.window_right = 0;  // causal
  params.mask.alignment = IOATTN_ALIGN_TOP_LEFT;
  params.softcap = 5.0f;
  const ioattn_forward_args args = forward_c(c);
  ASSERT_EQ(ioattn_forward(&args, &params), IOATTN_OK) << ioattn_last_error();
  EXPECT_STREQ(ioattn_last_error(), "");
  AttentionParams same;
  same.mask = Mask::causal(Alignment::top_left);
  same.softcap = 5.0f;
  attention_forward(cpp.forward_args(), same);
  EXPECT_EQ(c.out, cpp.out);
  EXPECT_EQ(c.lse, cpp.lse);
  // NULL params: the defaults.
  Problem d(2, 6, 9, 4, 2, 8, 8), dcpp(2, 6, 9, 4, 2, 8, 8);
  const ioattn_forward_args dargs = forward_c(d);
  ASSERT_EQ(ioattn_forward(&dargs, nullptr), IOATTN_OK) << ioattn_last_error();
  attention_forward(dcpp.forward_args());
  EXPECT_EQ(d.out, dcpp.out);
}

TEST(CApi, BackwardAndWorkspaceQueries) {
  Problem p(1, 5, 5, 2, 1, 8, 4);
  const ioattn_forward_args fargs = forward_c(p);
  ASSERT_EQ(ioattn_forward(&fargs, nullptr), IOATTN_OK) << ioattn_last_error();
  const ioattn_backward_args bargs = backward_c(p);
  size_t bytes = 12345;
  ASSERT_EQ(ioattn_backward_workspace_bytes(&bargs, nullptr, &bytes), IOATTN_OK) << ioattn_last_error();
  EXPECT_EQ(bytes, backward_workspace_bytes(p.backward_args()));
  bytes = 12345;
  ASSERT_EQ(ioattn_forward_workspace_bytes(&fargs, nullptr, &bytes), IOATTN_OK) << ioattn_last_error();
  EXPECT_EQ(bytes, forward_workspace_bytes(p.forward_args()));
  ASSERT_EQ(ioattn_backward(&bargs, nullptr), IOATTN_OK) << ioattn_last_error();
  EXPECT_FALSE(Problem::all_sentinel(p.dq));
  EXPECT_EQ(ioattn_forward_workspace_bytes(&fargs, nullptr, nullptr), IOATTN_ERROR_INVALID_ARGUMENT);
  EXPECT_EQ(std::string(ioattn_last_error()).rfind("bytes: expected", 0), 0u) << ioattn_last_error();
}

TEST(CApi, VarlenThroughTheCStruct) {
  Problem p({3, 0, 2}, {1, 4, 2}, 2, 2, 4, 4);
  ioattn_forward_args args = forward_c(p);
  ioattn_varlen varlen{};
  varlen.cu_seqlens_q = to_c(TensorView::contiguous(p.cu_q.data(), DType::i32, {4}));
  varlen.cu_seqlens_k = to_c(TensorView::contiguous(p.cu_k.data(), DType::i32, {4}));
  args.varlen = &varlen;
  ASSERT_EQ(ioattn_forward(&args, nullptr), IOATTN_OK) << ioattn_last_error();
  Problem bad({3, 0, 2}, {1, 4, 2}, 2, 2, 4, 4);
  ioattn_forward_args bad_args = forward_c(bad);
  std::vector<std::int32_t> offsets = {0, 3, 2, 5};
  varlen.cu_seqlens_q = to_c(TensorView::contiguous(offsets.data(), DType::i32, {4}));
  bad_args.varlen = &varlen;
  expect_status(bad, ioattn_forward(&bad_args, nullptr), IOATTN_ERROR_INVALID_ARGUMENT, "varlen.cu_seqlens_q",
                "non-decreasing");
}

TEST(CApi, InvalidArgumentsGiveStatusAndMessage) {
  Problem p(2, 5, 7, 4, 2, 8, 6);
  ioattn_forward_args args = forward_c(p);
  args.k.shape[3] = 4;
  expect_status(p, ioattn_forward(&args, nullptr), IOATTN_ERROR_INVALID_ARGUMENT, "k", "[2, 7, 2, 8]");
  args = forward_c(p);
  args.q.rank = 9;
  expect_status(p, ioattn_forward(&args, nullptr), IOATTN_ERROR_INVALID_ARGUMENT, "q.rank", "got 9");
  args = forward_c(p);
  args.v.dtype = 42;
  expect_status(p, ioattn_forward(&args, nullptr), IOATTN_ERROR_INVALID_ARGUMENT, "v.dtype", "got 42");
  args = forward_c(p);
  args.out.device = -1;
  expect_status(p, ioattn_forward(&args, nullptr), IOATTN_ERROR_INVALID_ARGUMENT, "out.device");
  expect_status(p, ioattn_forward(nullptr, nullptr), IOATTN_ERROR_INVALID_ARGUMENT, "args", "NULL");
  expect_status(p, ioattn_backward(nullptr, nullptr), IOATTN_ERROR_INVALID_ARGUMENT, "args");

  ioattn_params params;
  ioattn_params_init(&params);
  params.mask.alignment = 3;
  args = forward_c(p);
  expect_status(p, ioattn_forward(&args, &params), IOATTN_ERROR_INVALID_ARGUMENT, "params.mask.alignment");
  ioattn_params_init(&params);
  params.impl = "nope";
  expect_status(p, ioattn_forward(&args, &params), IOATTN_ERROR_INVALID_ARGUMENT, "params.impl", "reference");
  ioattn_params_init(&params);
  params.sinks = to_c(p.sinks_view());
  ioattn_backward_args bargs = backward_c(p);
  expect_status(p, ioattn_backward(&bargs, &params), IOATTN_ERROR_INVALID_ARGUMENT, "dsinks");
  ioattn_params_init(&params);
  params.softmax_scale = std::numeric_limits<float>::infinity();
  expect_status(p, ioattn_forward(&args, &params), IOATTN_ERROR_INVALID_ARGUMENT, "params.softmax_scale");
}

TEST(CApi, UnsupportedStatus) {
  Problem p(1, 2, 2, 1, 1, 600, 8);
  const ioattn_forward_args args = forward_c(p);
  ioattn_params params;
  ioattn_params_init(&params);
  params.impl = "reference";
  EXPECT_EQ(ioattn_forward(&args, &params), IOATTN_ERROR_UNSUPPORTED);
  EXPECT_NE(std::string(ioattn_last_error()).find("reference"), std::string::npos) << ioattn_last_error();
  EXPECT_TRUE(p.outputs_untouched());
}

TEST(CApi, LastErrorIsPerThreadAndClearedBySuccess) {
  Problem p(1, 3, 3, 1, 1, 4, 4);
  ioattn_forward_args bad = forward_c(p);
  bad.k.shape[3] = 5;
  ASSERT_EQ(ioattn_forward(&bad, nullptr), IOATTN_ERROR_INVALID_ARGUMENT);
  const std::string mine = ioattn_last_error();
  ASSERT_FALSE(mine.empty());
  std::string theirs = "unset";
  std::thread other([&] {
    theirs = ioattn_last_error();  // a fresh thread has seen no error
    ioattn_forward(nullptr, nullptr);
  });
  other.join();
  EXPECT_EQ(theirs, "");
  EXPECT_EQ(ioattn_last_error(), mine);  // the other thread's failure did not overwrite this one's
  const ioattn_forward_args good = forward_c(p);
  ASSERT_EQ(ioattn_forward(&good, nullptr), IOATTN_OK);
  EXPECT_STREQ(ioattn_last_error(), "");
}

TEST(CApi, LibraryQueries) {
  EXPECT_EQ(std::string(ioattn_backends()), backends());
  EXPECT_EQ(std::string(ioattn_default_backend(IOATTN_DEVICE_CPU)), default_backend(Device::cpu));
  EXPECT_EQ(std::string(ioattn_default_backend(IOATTN_DEVICE_CUDA)), default_backend(Device::cuda));
  EXPECT_STREQ(ioattn_default_backend(7), "");
  EXPECT_STREQ(ioattn_version(), version());
  EXPECT_EQ(ioattn_cuda_device_count(), cuda_device_count());
  EXPECT_STREQ(ioattn_status_string(IOATTN_OK), "IOATTN_OK");
  EXPECT_STREQ(ioattn_status_string(IOATTN_ERROR_UNSUPPORTED), "IOATTN_ERROR_UNSUPPORTED");
  ioattn_params params;
  std::memset(&params, 0xff, sizeof params);
  ioattn_params_init(&params);
  EXPECT_EQ(params.softmax_scale, 0.0f);
  EXPECT_EQ(params.mask.window_left, -1);
  EXPECT_EQ(params.mask.window_right, -1);
  EXPECT_EQ(params.impl, nullptr);
  EXPECT_EQ(params.alibi_slopes.data, nullptr);
  EXPECT_EQ(params.alibi_slopes.rank, 0);
  EXPECT_EQ(params.workspace, nullptr);
}

}  // namespace
}  // namespace ioattn::apitest
