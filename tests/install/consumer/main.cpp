// Built against an installed ioattn (tests/install.cmake): the public C++ and C headers alone, a tiny CPU forward
// checked by hand, and the installed library's version against the package config's.
#include <ioattn/ioattn.h>
#include <ioattn/ioattn.hpp>

#include <cmath>
#include <cstdio>
#include <cstring>
#include <vector>

int main() {
  // One query over two keys, head dim 2, scale 1: out is the softmax-weighted mean of the value rows.
  std::vector<float> q = {1, 0}, k = {1, 0, 0, 1}, v = {1, 2, 3, 4}, out(2, NAN), lse(1, NAN);
  ioattn::ForwardArgs args;
  args.q = ioattn::TensorView::contiguous(q.data(), ioattn::DType::f32, {1, 1, 1, 2});
  args.k = ioattn::TensorView::contiguous(k.data(), ioattn::DType::f32, {1, 2, 1, 2});
  args.v = ioattn::TensorView::contiguous(v.data(), ioattn::DType::f32, {1, 2, 1, 2});
  args.out = ioattn::TensorView::contiguous(out.data(), ioattn::DType::f32, {1, 1, 1, 2});
  args.lse = ioattn::TensorView::contiguous(lse.data(), ioattn::DType::f32, {1, 1, 1});
  ioattn::AttentionParams params;
  params.softmax_scale = 1.0f;
  ioattn::attention_forward(args, params);
  const double w0 = std::exp(1.0) / (std::exp(1.0) + 1.0), w1 = 1.0 - w0;
  const bool ok = std::fabs(out[0] - (w0 + 3 * w1)) < 1e-5 && std::fabs(out[1] - (2 * w0 + 4 * w1)) < 1e-5 &&
                  std::fabs(lse[0] - std::log(std::exp(1.0) + 1.0)) < 1e-5;
  if (!ok) {
    std::fprintf(stderr, "wrong result: out %g %g lse %g\n", out[0], out[1], lse[0]);
    return 1;
  }
  if (std::strcmp(ioattn::version(), EXPECTED_VERSION) != 0 || std::strcmp(ioattn_version(), EXPECTED_VERSION) != 0) {
    std::fprintf(stderr, "version %s, package config says %s\n", ioattn::version(), EXPECTED_VERSION);
    return 1;
  }
  std::printf("installed ioattn %s works (backends: %s)\n", ioattn_version(), ioattn_backends());
  return 0;
}
