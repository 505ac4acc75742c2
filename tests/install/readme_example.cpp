// The README's usage example, built and run by the test suite (tests/install.cmake) so that it cannot rot.
#include <ioattn/ioattn.hpp>

#include <cstdint>
#include <cstdio>
#include <vector>

int main() {
  using ioattn::DType, ioattn::TensorView;
  const std::int64_t batch = 1, seqlen = 128, heads = 8, kv_heads = 2, head_dim = 64;
  std::vector<float> q(batch * seqlen * heads * head_dim, 0.5f), out(q.size());
  std::vector<float> k(batch * seqlen * kv_heads * head_dim, 0.25f), v(k.size(), 1.0f);
  std::vector<float> lse(batch * heads * seqlen);  // fp32, natural log

  ioattn::ForwardArgs args;  // [batch, seqlen, heads, head_dim]; kv heads shared by groups of query heads (GQA)
  args.q = TensorView::contiguous(q.data(), DType::f32, {batch, seqlen, heads, head_dim});
  args.k = TensorView::contiguous(k.data(), DType::f32, {batch, seqlen, kv_heads, head_dim});
  args.v = TensorView::contiguous(v.data(), DType::f32, {batch, seqlen, kv_heads, head_dim});
  args.out = TensorView::contiguous(out.data(), DType::f32, {batch, seqlen, heads, head_dim});
  args.lse = TensorView::contiguous(lse.data(), DType::f32, {batch, heads, seqlen});

  ioattn::AttentionParams params;
  params.mask = ioattn::Mask::causal();  // bottom-right aligned, as in FlashAttention
  try {
    ioattn::attention_forward(args, params);  // "auto": the fastest backend for the tensors' device
  } catch (const ioattn::Error& e) {        // names the bad argument; outputs untouched
    std::fprintf(stderr, "ioattn: %s\n", e.what());
    return 1;
  }
  std::printf("out[0] = %g, lse[0] = %g (backends: %s)\n", out[0], lse[0], ioattn::backends().c_str());
  return out[0] == 1.0f ? 0 : 1;
}
