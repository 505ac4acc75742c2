// ioattn sm90 FP8 forward: tile choice per head dim, the tensor maps, the parameter block and the launch. Included
// by the instantiation files only.
#pragma once

#include <cstdint>
#include <cstdlib>
#include <type_traits>

#include <cuda_runtime.h>
#include <cutlass/numeric_types.h>

#include "api/fp8_problem.hpp"
#include "cuda/shared_memory.hpp"
#include "cuda/sm80/common/cuda_check.cuh"
#include "cuda/sm90/fp8_forward.hpp"
#include "cuda/sm90/fp8_kernel.cuh"
#include "cuda/sm90/fp8_traits.cuh"
#include "cuda/sm90/packed_gqa.cuh"
#include "cuda/sm90/tma_view.cuh"

namespace ioattn::detail::sm90 {

template <DType kOut>
using Fp8OutElementOf = std::conditional_t<kOut == DType::f16, cutlass::half_t, cutlass::bfloat16_t>;

// Key tiles: Q (128 x d) + 2 stages of K, staged V and Vt (kBlockN x d each), one byte an element: 112 KB at d 128
// with 128 keys; d 256 takes 64 keys (128 KB) so that O (128 registers a thread) and S fit the consumers' 232. O's
// buffers for the TMA stores (out_store.cuh) add 32 and 64 KB.
template <int kDim>
constexpr int fp8_block_n() {
  return kDim <= 128 ? 128 : 64;
}

template <class Traits>
Fp8ForwardParams<Traits> make_fp8_params(const Fp8Problem& fp) {
  const Problem& p = fp.attn;
  constexpr int kDim = Traits::kDim;
  Fp8ForwardParams<Traits> kp{};
  const auto view = [&](const Operand& x, std::int64_t rows, std::int64_t heads) {
    return make_gmem_view<typename Traits::Element, kDim>(x, rows, heads, p.batch);
  };
  using TileKV = Shape<Int<Traits::kBlockN>, Int<kDim>>;
  kp.tma_q = make_tma_copy(SM90_TMA_LOAD{}, view(p.q, p.seqlen_q, p.heads_q), typename Traits::SmemLayoutQ{},
                           Shape<Int<Traits::kBlockM>, Int<kDim>>{}, _1{});
  kp.tma_k = make_tma_copy(SM90_TMA_LOAD{}, view(p.k, p.seqlen_k, p.heads_kv),
                           take<0, 2>(typename Traits::SmemLayoutK{}), TileKV{}, _1{});
  kp.tma_v = make_tma_copy(SM90_TMA_LOAD{}, view(p.v, p.seqlen_k, p.heads_kv),
                           take<0, 2>(typename Traits::SmemLayoutV{}), TileKV{}, _1{});
  kp.map_rows_q = int(p.seqlen_q > 1 ? p.seqlen_q : 1);
  kp.map_rows_k = int(p.seqlen_k > 1 ? p.seqlen_k : 1);
  kp.map_batch = int(p.batch);
  kp.out_tma = make_out_tma<typename Traits::OutStore>(p.out, p.seqlen_q, p.heads_q, p.batch, kp.tma_out);
  kp.heads_q = int(p.heads_q);
  kp.heads_kv = int(p.heads_kv);
  kp.batch = int(p.batch);
  kp.seqlen_q = int(p.seqlen_q);
  kp.seqlen_k = int(p.seqlen_k);
  kp.group_size = int(p.group_size());
  // Packed GQA with per-head descales (a block descale's row would need its head's and token's block).
  kp.pack_gqa = fp.block_rows > 0 ? 1 : choose_pack_gqa(p, Traits::kBlockM);
  make_packed_q<typename Traits::Element>(p, kDim, Traits::kBlockM, p.seqlen_q, p.batch, kp.pack_gqa,
                                          &kp.tma_q_packed, kp.q_tile_bytes);
  const int tile_tokens = Traits::kBlockM / kp.pack_gqa;
  kp.num_m_blocks = int((p.seqlen_q + tile_tokens - 1) / tile_tokens);
  // Block descales come in powers of two of rows (fp8_forward_unsupported), so a row's block is a shift away.
  int shift = 0;
  while (fp.block_rows > 0 && (std::int64_t(1) << shift) < fp.block_rows) ++shift;
  const auto descale = [&](const Descale& d) {
    return Fp8DescaleView{d.ptr, d.batch_stride, d.head_stride, fp.block_rows > 0 ? d.block_stride : 0, shift};
  };
  kp.q_descale = descale(fp.q_descale);
  kp.k_descale = descale(fp.k_descale);
  kp.v_descale = descale(fp.v_descale);
  kp.descale_blocks_k = fp.block_rows > 0 ? int((p.seqlen_k + fp.block_rows - 1) / fp.block_rows) : 1;
  kp.out = p.out.ptr;
  kp.o_batch_stride = p.out.batch_stride, kp.o_row_stride = p.out.seq_stride, kp.o_head_stride = p.out.head_stride;
  kp.lse = static_cast<float*>(p.lse.ptr);
  kp.lse_batch_stride = p.lse.batch_stride, kp.lse_row_stride = p.lse.seq_stride;
  kp.lse_head_stride = p.lse.head_stride;
  kp.scale = p.scale;
  kp.sinks = p.sinks;
  kp.window_left = p.mask.window_left;
  kp.window_right = p.mask.window_right;
  kp.top_left = p.mask.alignment == Alignment::top_left;
  return kp;
}

// IOATTN_SM90_FP8_VARIANT (read once) picks the consumers' schedule, for side-by-side timing: 0 serial, 1 overlapped
// without ping-pong, 2 overlapped with ping-pong. Unset: kDefaultFp8Variant.
constexpr int kDefaultFp8Variant = 0;
inline int fp8_variant_from_env() {
  static const int variant = [] {
    const char* env = std::getenv("IOATTN_SM90_FP8_VARIANT");
    const int v = env && *env ? std::atoi(env) : kDefaultFp8Variant;
    return v >= 0 && v <= 2 ? v : kDefaultFp8Variant;
  }();
  return variant;
}

template <class Traits, ForwardSchedule kSchedule, bool kBlockScales = false>
void launch_fp8_kernel(const Fp8Problem& fp) {
  const Problem& p = fp.attn;
  constexpr int kSmem = Traits::kSmemBytes;
  auto kernel = &fp8_forward_kernel<Traits, kSchedule, kBlockScales>;
  sm80::DeviceScope device(p.device_index);
  opt_in_shared_memory(reinterpret_cast<const void*>(kernel), kSmem, p.device_index, "cuda_sm90 fp8 forward");
  const Fp8ForwardParams<Traits> kp = make_fp8_params<Traits>(fp);
  const dim3 grid{unsigned(std::int64_t(kp.num_m_blocks) * (p.heads_q / kp.pack_gqa) * p.batch)};
  kernel<<<grid, Traits::kThreads, kSmem, static_cast<cudaStream_t>(p.stream)>>>(kp);
  sm80::cuda_check(cudaGetLastError(), "cuda_sm90 fp8 forward kernel launch");
}

template <DType kOut, int kDim>
void launch_forward_fp8(const Fp8Problem& fp) {
  using Traits = Fp8ForwardTraits<Fp8OutElementOf<kOut>, kDim, fp8_block_n<kDim>()>;
  const Problem& p = fp.attn;
  if (p.seqlen_q == 0 || p.batch == 0 || p.heads_q == 0) return;
  // Block descales: the serial schedule only (one more kernel, not three).
  if (fp.block_rows > 0) return launch_fp8_kernel<Traits, ForwardSchedule::serial, true>(fp);
  switch (fp8_variant_from_env()) {
    case 1:
      return launch_fp8_kernel<Traits, ForwardSchedule::overlapped_no_pingpong>(fp);
    case 2:
      return launch_fp8_kernel<Traits, ForwardSchedule::overlapped>(fp);
    default:
      return launch_fp8_kernel<Traits, ForwardSchedule::serial>(fp);
  }
}

}  // namespace ioattn::detail::sm90
