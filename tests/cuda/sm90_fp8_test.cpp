// GPU-only checks of the Hopper FP8 forward ("cuda_sm90", src/cuda/sm90/fp8_*): e4m3 q, k, v made by quantize_fp8
// from N(0, 1) values (one descale per (batch, head), or per block of rows, with and without the Hadamard rotation
// of q and k), against the fp64 oracle on the dequantized operands, within twice the error of a naive program in
// the kernel's own precision (the tensor cores' FP8 accumulation for the scores, fp32 softmax, P rounded to e4m3 as
// the kernel rounds it) plus the output's rounding allowance (src/numerics/error_bound.hpp). Out (bf16, fp16) and
// lse poisoned with NaN first; every mask kind, GQA, sinks, rows that see nothing, lengths that are no multiple of
// the tiles; a second run must agree bit for bit; the refusals name what is missing and write nothing. Without a
// Hopper GPU every test skips, saying why.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <optional>
#include <ostream>
#include <string>
#include <vector>

#include "fp8/fp8_util.hpp"
#include "ioattn/core/convert.hpp"
#include "ioattn/error.hpp"
#include "ioattn/fp8.hpp"
#include "numerics/error_bound.hpp"
#include "support/buffers.hpp"
#include "support/cases.hpp"
#include "support/random.hpp"
#include "support/scoped_env.hpp"

#ifndef IOATTN_TEST_CUDA_HEAD_DIMS
#define IOATTN_TEST_CUDA_HEAD_DIMS "128,256"
#endif
#ifndef IOATTN_TEST_CUDA_DTYPES
#define IOATTN_TEST_CUDA_DTYPES "bf16,fp16"
#endif

namespace ioattn::test {
namespace {

using fp8test::Fp8Operand;

struct Fp8Case {
  std::int64_t batch, seqlen_q, seqlen_k, heads_q, heads_kv, dim;
  Mask mask;
  DType out_dtype;
  bool sinks;
  std::int64_t block_rows = 0;  // 0: one descale per (batch, head)
  bool rotate = false;          // Hadamard rotation of q and k before quantizing
  bool pack = false;            // packed GQA forced on (IOATTN_SM90_PACK_GQA=1), where the launcher would not pack

  std::string name() const {
    return "b" + std::to_string(batch) + "_q" + std::to_string(seqlen_q) + "_k" + std::to_string(seqlen_k) + "_h" +
           std::to_string(heads_q) + "x" + std::to_string(heads_kv) + "_d" + std::to_string(dim) + "_" +
           (mask.is_none() ? "none" : mask.window_right == 0 && mask.window_left < 0 ? "causal" : "window") +
           (mask.alignment == Alignment::top_left ? "_tl" : "") + (out_dtype == DType::bf16 ? "_bf16" : "_fp16") +
           (sinks ? "_sinks" : "") + (block_rows > 0 ? "_blk" + std::to_string(block_rows) : "") +
           (rotate ? "_rot" : "") + (pack ? "_pack" : "");
  }
};

void PrintTo(const Fp8Case& c, std::ostream* os) { *os << c.name(); }

// The canonical index of (row of the packed batch, head) in an lse stored [batch, heads, seqlen].
std::int64_t lse_offset(const Fp8Case& c, std::int64_t flat_row, std::int64_t h) {
  return (flat_row / c.seqlen_q * c.heads_q + h) * c.seqlen_q + flat_row % c.seqlen_q;
}

// Hopper's FP8 wgmma keeps its running sum in fewer bits than fp32 (about 14 significant bits by the DeepSeek-V3
// report; an fp22 accumulator with 13 mantissa bits by SageAttention2's). With an fp32 yardstick the kernel's LSE
// came out 30-50x past the bound on an H200 (2026-11-21), and up to 2.45x past a yardstick truncating to 13 mantissa
// bits after each 32-value k-slice. The yardstick truncates to 13 mantissa bits after every 16 products of
// S = Q K^T.
constexpr std::int64_t kProductsPerTruncation = 16;
float fp22_toward_zero(float x) {
  std::uint32_t bits;
  std::memcpy(&bits, &x, 4);
  bits &= ~std::uint32_t(0x3ff);  // keep 13 of fp32's 23 mantissa bits
  std::memcpy(&x, &bits, 4);
  return x;
}

// The naive yardstick: the kernel's arithmetic done plainly, in fp32 with S accumulated as the tensor cores do. S
// from the dequantized operands, the row max over visible keys, P = exp(S - max) rounded to e4m3 at the kernel's
// scale for P V, the row sum (and the sink) from P unrounded, as the kernel sums it. With block descales the kernel
// rounds P times key j's v descale over the sequence's largest (r_j), in V's codes: the yardstick rounds P 2^8 r_j
// and divides r_j back out before multiplying the dequantized v.
fp8test::F64Result naive_fp8(const Fp8Case& c, const detail::Problem& p, const std::vector<double>& q,
                             const std::vector<double>& k, const Fp8Operand& v_fp8, const std::vector<double>& v,
                             const std::vector<float>& sinks) {
  constexpr float kPScale = 256.0f;  // as Fp8ForwardTraits::kPScale
  fp8test::F64Result r;
  r.out.assign(std::size_t(c.batch * c.seqlen_q * c.heads_q * c.dim), 0.0);
  r.lse.assign(std::size_t(c.batch * c.seqlen_q * c.heads_q), 0.0);
  const core::MaskRule rule = core::MaskRule::make(p.mask.window_left, p.mask.window_right,
                                                   p.mask.alignment == Alignment::top_left, c.seqlen_q, c.seqlen_k);
  std::vector<float> s(std::size_t(c.seqlen_k));
  for (std::int64_t b = 0; b < c.batch; ++b) {
    for (std::int64_t h = 0; h < c.heads_q; ++h) {
      const std::int64_t hk = h / (c.heads_q / c.heads_kv);
      for (std::int64_t i = 0; i < c.seqlen_q; ++i) {
        const std::int64_t row = b * c.seqlen_q + i;
        const double* q_row = &q[std::size_t((row * c.heads_q + h) * c.dim)];
        auto kv_row = [&](const std::vector<double>& x, std::int64_t j) {
          return &x[std::size_t(((b * c.seqlen_k + j) * c.heads_kv + hk) * c.dim)];
        };
        float m = -INFINITY;
        for (std::int64_t j = 0; j < c.seqlen_k; ++j) {
          float dot = 0.0f;
          const double* k_row = kv_row(k, j);
          for (std::int64_t d0 = 0; d0 < c.dim; d0 += kProductsPerTruncation) {
            float part = 0.0f;
            for (std::int64_t d = d0; d < d0 + kProductsPerTruncation; ++d) part += float(q_row[d]) * float(k_row[d]);
            dot = fp22_toward_zero(dot + part);
          }
          s[j] = rule.visible(i, j) ? dot * p.scale : -INFINITY;
          m = std::max(m, s[j]);
        }
        float l = 0.0f;
        std::vector<float> o(std::size_t(c.dim), 0.0f);
        float v_max = 0.0f;
        for (std::int64_t blk = 0; blk < v_fp8.blocks(); ++blk) {
          v_max = std::max(v_max, v_fp8.descale[std::size_t((b * c.heads_kv + hk) * v_fp8.blocks() + blk)]);
        }
        if (!(v_max > 0.0f)) v_max = 1.0f;
        if (m != -INFINITY) {
          for (std::int64_t j = 0; j < c.seqlen_k; ++j) {
            if (s[j] == -INFINITY) continue;
            const float pj = std::exp(s[j] - m);
            l += pj;
            const float r = c.block_rows > 0 ? v_fp8.descale_at(b, hk, j) * (1.0f / v_max) : 1.0f;
            const float pq = core::fp8e4m3_to_float(core::float_to_fp8e4m3(pj * kPScale * r)) / (kPScale * r);
            const double* v_row = kv_row(v, j);
            for (std::int64_t d = 0; d < c.dim; ++d) o[d] += pq * float(v_row[d]);
          }
        }
        double lse = m == -INFINITY ? -INFINITY : double(m) + std::log(double(l));
        if (c.sinks) {
          const float top = std::max(m, sinks[h]);
          l = (m == -INFINITY ? 0.0f : l * std::exp(m - top)) + std::exp(sinks[h] - top);
          for (float& x : o) x *= m == -INFINITY ? 0.0f : std::exp(m - top);
          m = top;
          lse = double(m) + std::log(double(l));
        }
        for (std::int64_t d = 0; d < c.dim; ++d) {
          r.out[(row * c.heads_q + h) * c.dim + d] = l > 0.0f ? fp8test::stored_as(c.out_dtype, o[d] / l) : 0.0;
        }
        r.lse[lse_offset(c, row, h)] = lse;
      }
    }
  }
  return r;
}

// One FP8 forward on a small problem (32 rows x one head, codes of 1.0, descales of 1): the ErrorCode::unsupported
// message when the kernel refuses it, empty when it ran.
std::string refusal_of_small_call(std::int64_t dim, DType out_dtype) {
  const std::int64_t rows = 32;
  HostBuffer codes(DType::f8e4m3, rows * dim), scales(DType::f32, 3), out(out_dtype, rows * dim);
  std::memset(codes.data(), 0x38, std::size_t(codes.bytes()));  // e4m3 1.0
  for (std::int64_t e = 0; e < 3; ++e) scales.set(e, 1.0);
  DeviceBuffer dcodes(codes), dscales(scales), dout(out);
  auto on_device = [](TensorView t) {
    t.device = Device::cuda;
    return t;
  };
  Fp8ForwardArgs args;
  args.q = args.k = args.v = on_device(dcodes.rebase(codes.view({1, rows, 1, dim}), codes));
  args.scales.q_descale = on_device(dscales.rebase(scales.view({1, 1}, {}, 0), scales));
  args.scales.k_descale = on_device(dscales.rebase(scales.view({1, 1}, {}, 1), scales));
  args.scales.v_descale = on_device(dscales.rebase(scales.view({1, 1}, {}, 2), scales));
  args.out = on_device(dout.rebase(out.view({1, rows, 1, dim}), out));
  AttentionParams params;
  params.impl = "cuda_sm90";
  try {
    attention_forward_fp8(args, params);
    return std::string();
  } catch (const Error& e) {
    if (e.code() != ErrorCode::unsupported) throw;
    return e.what();
  }
}

// Empty when the FP8 kernel runs here; otherwise why not (no GPU, not a Hopper GPU, no 90a code, no FP8 kernel of
// this build's head dims), read from the kernel's own refusal, as the other sm90 tests do.
std::string why_no_fp8_kernel() {
  static const std::string why = [] {
    if (!gpu_available()) return std::string("no usable GPU on this machine");
    const DType out = listed(IOATTN_TEST_CUDA_DTYPES, "bf16") ? DType::bf16 : DType::f16;
    for (const char* dim : {"128", "256"}) {
      if (!listed(IOATTN_TEST_CUDA_HEAD_DIMS, dim)) continue;
      const std::string what = refusal_of_small_call(std::stoi(dim), out);
      if (what.find("compute capability") == std::string::npos && what.find("sm_90a") == std::string::npos) {
        return std::string();  // it ran, or refused for a reason the tests should show
      }
      return what;
    }
    return std::string("this build has no FP8 kernel at head dim 128 or 256");
  }();
  return why;
}

std::vector<Fp8Case> fp8_cases() {
  std::vector<Fp8Case> cases;
  for (DType out : {DType::bf16, DType::f16}) {
    if (!listed(IOATTN_TEST_CUDA_DTYPES, out == DType::bf16 ? "bf16" : "fp16")) continue;
    for (int dim : {128, 256}) {
      if (!listed(IOATTN_TEST_CUDA_HEAD_DIMS, std::to_string(dim))) continue;
      for (const Mask& m : {Mask::none(), Mask::causal(), Mask::causal(Alignment::top_left), Mask::window(100, 50)}) {
        cases.push_back({2, 333, 1029, 4, 2, dim, m, out, false});
      }
      cases.push_back({1, 517, 300, 3, 1, dim, Mask::causal(), out, true});  // the first rows see nothing
      cases.push_back({1, 256, 256, 2, 2, dim, Mask::causal(), out, false});  // whole tiles
      // Block descales (blocks smaller than, equal to and straddling the tiles), with and without the rotation.
      cases.push_back({2, 333, 1029, 4, 2, dim, Mask::none(), out, false, 64, false});
      cases.push_back({2, 333, 1029, 4, 2, dim, Mask::causal(), out, false, 16, true});
      cases.push_back({1, 517, 300, 3, 1, dim, Mask::window(100, 50), out, true, 128, false});
      cases.push_back({1, 256, 700, 2, 1, dim, Mask::none(), out, false, 0, true});
      // Packed GQA (a kv head's query heads in one tile): decode shapes the launcher packs by itself, groups that
      // divide the 128-row tile and groups that do not (3: its last rows hold no query), and larger shapes forced.
      cases.push_back({3, 1, 1029, 8, 2, dim, Mask::none(), out, false});
      cases.push_back({2, 5, 700, 12, 4, dim, Mask::causal(), out, true});
      cases.push_back({1, 16, 333, 16, 2, dim, Mask::window(100, 50), out, true});
      cases.push_back({2, 333, 1029, 4, 2, dim, Mask::causal(), out, false, 0, false, true});
      cases.push_back({1, 200, 517, 6, 2, dim, Mask::causal(Alignment::top_left), out, true, 0, true, true});
    }
  }
  return cases;
}

class Sm90Fp8 : public ::testing::TestWithParam<Fp8Case> {};

TEST_P(Sm90Fp8, WithinTwiceTheNaiveFp8Error) {
  if (std::string why = why_no_fp8_kernel(); !why.empty()) GTEST_SKIP() << "cuda_sm90 FP8 not exercised: " << why;
  const Fp8Case& c = GetParam();
  Rng rng("Sm90Fp8." + c.name());
  SCOPED_TRACE(c.name() + ", " + seed_text() + " reproduces these inputs");
  auto draw = [&](std::int64_t rows, std::int64_t heads, bool rotate) {
    std::vector<float> x(std::size_t(c.batch * rows * heads * c.dim));
    for (float& e : x) e = float(rng.normal());
    return fp8test::quantize(x, c.batch, rows, heads, c.dim, c.block_rows, rotate);
  };
  Fp8Operand q = draw(c.seqlen_q, c.heads_q, c.rotate), k = draw(c.seqlen_k, c.heads_kv, c.rotate);
  Fp8Operand v = draw(c.seqlen_k, c.heads_kv, false);
  std::vector<float> sinks(std::size_t(c.heads_q));
  for (float& x : sinks) x = float(rng.normal());

  // Host buffers (raw bytes) and their device mirrors.
  auto host_of = [](DType dtype, const void* data, std::size_t bytes, std::int64_t elements) {
    HostBuffer b(dtype, elements);
    std::memcpy(b.data(), data, bytes);
    return b;
  };
  std::vector<HostBuffer> hosts;
  hosts.push_back(host_of(DType::f8e4m3, q.codes.data(), q.codes.size(), std::int64_t(q.codes.size())));
  hosts.push_back(host_of(DType::f8e4m3, k.codes.data(), k.codes.size(), std::int64_t(k.codes.size())));
  hosts.push_back(host_of(DType::f8e4m3, v.codes.data(), v.codes.size(), std::int64_t(v.codes.size())));
  hosts.push_back(host_of(DType::f32, q.descale.data(), q.descale.size() * 4, std::int64_t(q.descale.size())));
  hosts.push_back(host_of(DType::f32, k.descale.data(), k.descale.size() * 4, std::int64_t(k.descale.size())));
  hosts.push_back(host_of(DType::f32, v.descale.data(), v.descale.size() * 4, std::int64_t(v.descale.size())));
  hosts.push_back(host_of(DType::f32, sinks.data(), sinks.size() * 4, std::int64_t(sinks.size())));
  HostBuffer out(c.out_dtype, c.batch * c.seqlen_q * c.heads_q * c.dim);
  HostBuffer lse(DType::f32, c.batch * c.heads_q * c.seqlen_q);
  out.poison();
  lse.poison();
  std::vector<DeviceBuffer> dev;
  for (const HostBuffer& h : hosts) dev.emplace_back(h);
  DeviceBuffer dout(out), dlse(lse);
  auto on_device = [](TensorView t) {
    t.device = Device::cuda;
    return t;
  };
  Fp8ForwardArgs args;
  args.q = on_device(dev[0].rebase(hosts[0].view({c.batch, c.seqlen_q, c.heads_q, c.dim}), hosts[0]));
  args.k = on_device(dev[1].rebase(hosts[1].view({c.batch, c.seqlen_k, c.heads_kv, c.dim}), hosts[1]));
  args.v = on_device(dev[2].rebase(hosts[2].view({c.batch, c.seqlen_k, c.heads_kv, c.dim}), hosts[2]));
  auto descale_view = [&](std::size_t i, const Fp8Operand& x) {
    const TensorView t = c.block_rows > 0 ? hosts[i].view({c.batch, x.heads, x.blocks()})
                                          : hosts[i].view({c.batch, x.heads});
    return on_device(dev[i].rebase(t, hosts[i]));
  };
  args.scales.q_descale = descale_view(3, q);
  args.scales.k_descale = descale_view(4, k);
  args.scales.v_descale = descale_view(5, v);
  args.scales.block_rows = c.block_rows;
  args.out = on_device(dout.rebase(out.view({c.batch, c.seqlen_q, c.heads_q, c.dim}), out));
  args.lse = on_device(dlse.rebase(lse.view({c.batch, c.heads_q, c.seqlen_q}), lse));
  AttentionParams params;
  params.mask = c.mask;
  params.impl = "cuda_sm90";
  if (c.sinks) params.sinks = on_device(dev[6].rebase(hosts[6].view({c.heads_q}), hosts[6]));

  {
    std::optional<ScopedEnv> forced;
    if (c.pack) forced.emplace("IOATTN_SM90_PACK_GQA", "1");  // fails loudly where it cannot pack
    attention_forward_fp8(args, params);
  }
  dout.download(out);
  dlse.download(lse);

  // The oracle and the yardstick, on the host.
  AttentionParams host_params;
  host_params.mask = c.mask;
  if (c.sinks) host_params.sinks = TensorView::contiguous(sinks.data(), DType::f32, {c.heads_q});
  const detail::Problem p =
      fp8test::dense_problem(c.batch, c.seqlen_q, c.seqlen_k, c.heads_q, c.heads_kv, c.dim, c.dim, host_params);
  const std::vector<double> q64 = q.dequantize(), k64 = k.dequantize(), v64 = v.dequantize();
  const fp8test::F64Result ref = fp8test::forward_f64(p, q64, k64, v64);
  const fp8test::F64Result naive = naive_fp8(c, p, q64, k64, v, v64, sinks);
  std::vector<double> got_out(ref.out.size()), got_lse(ref.lse.size()), ref_lse(ref.lse.size());
  for (std::size_t e = 0; e < got_out.size(); ++e) got_out[e] = out.get(std::int64_t(e));
  for (std::int64_t row = 0; row < c.batch * c.seqlen_q; ++row) {
    for (std::int64_t h = 0; h < c.heads_q; ++h) {
      got_lse[std::size_t(lse_offset(c, row, h))] = lse.get(lse_offset(c, row, h));
      ref_lse[std::size_t(lse_offset(c, row, h))] = ref.lse[std::size_t(row * c.heads_q + h)];
    }
  }
  const numerics::Comparison cmp_out =
      numerics::compare("out", got_out, ref.out, naive.out, numerics::dtype_eps(c.out_dtype));
  const numerics::Comparison cmp_lse =
      numerics::compare("lse", got_lse, ref_lse, naive.lse, numerics::dtype_eps(DType::f32));
  EXPECT_TRUE(cmp_out.ok()) << cmp_out.describe();
  EXPECT_TRUE(cmp_lse.ok()) << cmp_lse.describe();
  // One line per case for docs/NUMERICS.md: the kernel's largest error against fp64 and the yardstick's.
  std::printf("[fp8 error] %s: out %.3g (naive %.3g, max|ref| %.3g), lse %.3g (naive %.3g)\n", c.name().c_str(),
              cmp_out.err, cmp_out.naive_err, cmp_out.ref_max, cmp_lse.err, cmp_lse.naive_err);

  // One CTA per tile, no cross-CTA reduction: a second run must agree bit for bit. With one query head per tile
  // (packing forced off) too: every row's products, masks and softmax steps are its own, whichever rows share its
  // tile, so a packed run must give the same bits. And with O stored from registers instead of by TMA.
  HostBuffer again(c.out_dtype, out.elements()), again_lse(DType::f32, lse.elements());
  {
    ScopedEnv unpacked("IOATTN_SM90_PACK_GQA", "0");
    attention_forward_fp8(args, params);
  }
  dout.download(again);
  dlse.download(again_lse);
  EXPECT_EQ(std::memcmp(again.data(), out.data(), out.bytes()), 0) << "a run with one head per tile differs";
  EXPECT_EQ(std::memcmp(again_lse.data(), lse.data(), lse.bytes()), 0) << "its lse differs";
  // O by TMA stores (the default where a tensor map describes out) and straight from registers: the same bits.
  HostBuffer from_registers(c.out_dtype, out.elements());
  {
    ScopedEnv unpacked("IOATTN_SM90_PACK_GQA", "0");
    ScopedEnv registers("IOATTN_SM90_FWD_OUT_STORE", "1");
    attention_forward_fp8(args, params);
  }
  dout.download(from_registers);
  EXPECT_EQ(std::memcmp(from_registers.data(), out.data(), out.bytes()), 0) << "O from registers differs";
}

// What the kernel lacks is refused with ErrorCode::unsupported naming it, and nothing is written.
TEST(Sm90Fp8Refusals, NameWhatIsMissing) {
  if (std::string why = why_no_fp8_kernel(); !why.empty()) GTEST_SKIP() << "cuda_sm90 FP8 not exercised: " << why;
  struct Refused {
    std::int64_t dim, block_rows;
    float softcap;
    const char* named;
  };
  for (const Refused& r : {Refused{128, 48, 0.0f, "block_rows"}, Refused{128, 0, 30.0f, "softcap"},
                           Refused{64, 0, 0.0f, "head dims"}}) {
    SCOPED_TRACE(r.named);
    const std::int64_t rows = 32, blocks = r.block_rows > 0 ? (rows + r.block_rows - 1) / r.block_rows : 1;
    HostBuffer codes(DType::f8e4m3, rows * r.dim), scales(DType::f32, 3 * blocks), out(DType::bf16, rows * r.dim);
    std::memset(codes.data(), 0x38, std::size_t(codes.bytes()));  // e4m3 1.0
    for (std::int64_t e = 0; e < 3 * blocks; ++e) static_cast<float*>(scales.data())[e] = 1.0f;
    out.poison();
    DeviceBuffer dcodes(codes), dscales(scales), dout(out);
    auto on_device = [](TensorView t) {
      t.device = Device::cuda;
      return t;
    };
    Fp8ForwardArgs args;
    args.q = args.k = args.v = on_device(dcodes.rebase(codes.view({1, rows, 1, r.dim}), codes));
    auto descale = [&](std::int64_t i) {
      const TensorView t = r.block_rows > 0 ? scales.view({1, 1, blocks}, {}, i * blocks) : scales.view({1, 1}, {}, i);
      return on_device(dscales.rebase(t, scales));
    };
    args.scales.q_descale = descale(0);
    args.scales.k_descale = descale(1);
    args.scales.v_descale = descale(2);
    args.scales.block_rows = r.block_rows;
    args.out = on_device(dout.rebase(out.view({1, rows, 1, r.dim}), out));
    AttentionParams params;
    params.impl = "cuda_sm90";
    params.softcap = r.softcap;
    try {
      attention_forward_fp8(args, params);
      ADD_FAILURE() << "not refused";
    } catch (const Error& e) {
      EXPECT_EQ(e.code(), ErrorCode::unsupported) << e.what();
      EXPECT_NE(std::string(e.what()).find(r.named), std::string::npos) << e.what();
    }
    HostBuffer after(DType::bf16, out.elements());
    dout.download(after);
    EXPECT_EQ(std::memcmp(after.data(), out.data(), std::size_t(out.bytes())), 0) << "out was written";
  }
}

INSTANTIATE_TEST_SUITE_P(Shapes, Sm90Fp8, ::testing::ValuesIn(fp8_cases()),
                         [](const ::testing::TestParamInfo<Fp8Case>& info) { return info.param.name(); });
GTEST_ALLOW_UNINSTANTIATED_PARAMETERIZED_TEST(Sm90Fp8);

}  // namespace
}  // namespace ioattn::test
