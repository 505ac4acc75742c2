// TensorView: contiguous strides, explicit strides, numel, and the text error messages quote.
#include <gtest/gtest.h>

#include <cstdint>

#include "ioattn/ioattn.hpp"

namespace ioattn {
namespace {

TEST(TensorView, ContiguousIsRowMajor) {
  float x = 0;
  const TensorView t = TensorView::contiguous(&x, DType::bf16, {2, 4096, 16, 128});
  EXPECT_EQ(t.rank, 4);
  EXPECT_EQ(t.stride[0], 8388608);
  EXPECT_EQ(t.stride[1], 2048);
  EXPECT_EQ(t.stride[2], 128);
  EXPECT_EQ(t.stride[3], 1);
  EXPECT_EQ(t.numel(), 2 * 4096 * 16 * 128);
  EXPECT_EQ(t.describe(), "bf16[2, 4096, 16, 128] strides [8388608, 2048, 128, 1] on cpu");
  EXPECT_FALSE(t.empty());
}

TEST(TensorView, EmptyExtentsKeepUsableStrides) {
  const TensorView t = TensorView::contiguous(nullptr, DType::f32, {3, 0, 5});
  EXPECT_EQ(t.numel(), 0);
  EXPECT_EQ(t.stride[0], 5);  // a zero extent does not zero the strides before it
  EXPECT_EQ(t.stride[1], 5);
  EXPECT_FALSE(t.empty());  // shaped, just with no elements; only a default view is "not given"
  EXPECT_TRUE(TensorView{}.empty());
  EXPECT_EQ(TensorView{}.describe(), "(none)");
}

TEST(TensorView, StridedAndDeviceText) {
  int v = 0;
  const TensorView t = TensorView::strided(&v, DType::i32, {7, 3}, {8, 1}, Device::cuda, 2);
  EXPECT_EQ(t.stride[0], 8);
  EXPECT_EQ(t.numel(), 21);
  EXPECT_EQ(t.describe(), "int32[7, 3] strides [8, 1] on cuda:2");
  const TensorView null_data = TensorView::contiguous(nullptr, DType::f16, {4});
  EXPECT_EQ(null_data.describe(), "fp16[4] strides [1] on cpu (data null)");
}

TEST(TensorView, BadConstructionThrows) {
  EXPECT_THROW(TensorView::contiguous(nullptr, DType::f32, {1, 2, 3, 4, 5}), Error);
  EXPECT_THROW(TensorView::strided(nullptr, DType::f32, {1, 2}, {2}), Error);
  try {
    TensorView::strided(nullptr, DType::f32, {1, 2}, {2});
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), ErrorCode::invalid_argument);
    EXPECT_NE(std::string(e.what()).find("expected as many strides as dimensions (2), got 1"), std::string::npos);
  }
}

TEST(TensorView, NumelSaturatesInsteadOfWrapping) {
  const TensorView t = TensorView::contiguous(nullptr, DType::f32, {std::int64_t{1} << 40, std::int64_t{1} << 40});
  EXPECT_EQ(t.numel(), INT64_MAX);
}

TEST(TensorView, DtypeNames) {
  EXPECT_STREQ(to_string(DType::f32), "fp32");
  EXPECT_STREQ(to_string(DType::f16), "fp16");
  EXPECT_STREQ(to_string(DType::bf16), "bf16");
  EXPECT_STREQ(to_string(DType::i32), "int32");
  EXPECT_STREQ(to_string(Device::cuda), "cuda");
  EXPECT_EQ(dtype_size(DType::bf16), 2u);
}

}  // namespace
}  // namespace ioattn
