// ioattn sm80 backward: tile shapes per head dim, and the shared-memory plan they imply.
//
// One CTA of 8 warps owns kBc keys of one (batch, kv head) and walks kBr-row query tiles. Each of the three
// product phases splits its output over the 8 warps as kWm (rows) x (8 / kWm) (columns):
//   phase 1  S^T, dP^T   [kBc keys][kBr queries]
//   phase 2  dV, dK      [kBc keys][dim]          (accumulated in registers across every query tile)
//   phase 3  dQ          [kBr queries][dim_qk]    (added to the fp32 accumulator in global memory)
// Register budget (fp32 per thread): dK + dV = kBc (dim_qk + dim_v) / 256 live throughout, plus S^T and dP^T
// (kBc kBr / 128) in phase 1. kBc = 128 for head dims up to 128 and 64 beyond keeps that under about 200.
#pragma once

#include <cstddef>

namespace ioattn::detail::sm80::bwd {

template <int kDimQK_, int kDimV_, int kBc_, int kBr_, int kWm1_, int kWm2_, int kWm3_, bool kPipe_, int kMinBlocks_ = 1,
          bool kDqFirst_ = false, bool kHeavyFirst_ = false, bool kExpEarly_ = false, bool kMaskFast_ = false,
          bool kRedV4_ = false>
struct Config {
  static constexpr int kMinBlocks = kMinBlocks_;  // CTAs per SM the register budget is cut for (__launch_bounds__)
  // dQ (phase 3) before dV / dK (phase 2): its fire-and-forget reductions drain while phase 2 keeps the tensor
  // cores busy, instead of queuing up right before the next tile's barrier.
  static constexpr bool kDqFirst = kDqFirst_;
  // Blocks numbered key tile slowest (every (batch, kv head)'s first key tile, then every second, ...): with causal
  // masks the first key tiles see the most query tiles, so the heaviest CTAs start first and the last wave is light.
  static constexpr bool kHeavyFirst = kHeavyFirst_;
  // Unmasked tiles: P = exp(S - lse) computed and stored between the S^T and dP^T products rather than after both,
  // so the exponentials (special-function unit) can issue under the dP^T mma instructions.
  static constexpr bool kExpEarly = kExpEarly_;
  // Masked tiles without softcap or ALiBi (causal diagonals, windows, ragged ends): each row's visible keys as two
  // int32 bounds local to the tile, then the plain path's exponent plus one select, instead of the general path's
  // 64-bit mask test and separate scale per element.
  static constexpr bool kMaskFast = kMaskFast_;
  // dQ reductions four floats wide (Hopper's red.v4.f32): lane pairs swap halves of their fragments with one
  // shuffle pair so that each lane holds 4 consecutive columns of one row; half the reduction instructions.
  static constexpr bool kRedV4 = kRedV4_;
  static constexpr int kDimQK = kDimQK_, kDimV = kDimV_, kBc = kBc_, kBr = kBr_;
  static constexpr bool kPipe = kPipe_;  // double-buffered ldmatrix fragments (backward_mma.cuh)
  static constexpr int kWarps = 8, kThreads = 32 * kWarps;
  static constexpr int kWm1 = kWm1_, kWn1 = kWarps / kWm1_;
  static constexpr int kWm2 = kWm2_, kWn2 = kWarps / kWm2_;
  static constexpr int kWm3 = kWm3_, kWn3 = kWarps / kWm3_;
  static constexpr int kStages = 2;  // Q, dO, lse2, D of the next query tile load while this one computes

  // Warp tiles in m16 x n8 units.
  static constexpr int kMt1 = kBc / kWm1 / 16, kNt1 = kBr / kWn1 / 8;
  static constexpr int kMt2 = kBc / kWm2 / 16, kNtK = kDimQK / kWn2 / 8, kNtV = kDimV / kWn2 / 8;
  static constexpr int kMt3 = kBr / kWm3 / 16, kNt3 = kDimQK / kWn3 / 8;
  static_assert(kMt1 * kWm1 * 16 == kBc && kNt1 * kWn1 * 8 == kBr && kNt1 % 2 == 0);
  static_assert(kMt2 * kWm2 * 16 == kBc && kNtK * kWn2 * 8 == kDimQK && kNtV * kWn2 * 8 == kDimV);
  static_assert(kNtK % 2 == 0 && kNtV % 2 == 0);
  static_assert(kMt3 * kWm3 * 16 == kBr && kNt3 * kWn3 * 8 == kDimQK && kNt3 % 2 == 0);

  // Padded row strides (elements), see backward_mma.cuh.
  static constexpr int kStrQK = kDimQK + 8, kStrV = kDimV + 8, kStrP = kBr + 8;

  // Shared memory, in 16-bit elements then fp32.
  static constexpr std::size_t kOffK = 0;
  static constexpr std::size_t kOffV = kOffK + std::size_t(kBc) * kStrQK;
  static constexpr std::size_t kOffQ = kOffV + std::size_t(kBc) * kStrV;
  static constexpr std::size_t kOffDO = kOffQ + std::size_t(kStages) * kBr * kStrQK;
  static constexpr std::size_t kOffP = kOffDO + std::size_t(kStages) * kBr * kStrV;
  static constexpr std::size_t kOffDS = kOffP + std::size_t(kBc) * kStrP;
  static constexpr std::size_t kElems = kOffDS + std::size_t(kBc) * kStrP;
  static constexpr std::size_t kFloatOffset = kElems * 2;  // bytes; a multiple of 16
  static constexpr std::size_t kSmemBytes = kFloatOffset + 2 * std::size_t(kStages) * kBr * sizeof(float);
};

// Variant 0 is what a build uses; the others are alternative tilings for head dims 64 and 128 kept for tuning on
// the device (IOATTN_SM80_BWD_VARIANT, read by backward.cu), compiled only with IOATTN_SM80_BWD_VARIANTS=ON.
// Measured 2026-11-21 on one H200 (bf16, 16k tokens, hidden 2048, seqlen 512..16k, tests/cuda/backward_variants.py):
//   1 (pipelined fragments, 32x32 dQ warp tiles): +1% over the then variant 0 (128 x 64 tiles) at head dim 128,
//   -1% at 64;
//   2, 3, 4 (64-key tiles, some at two CTAs per SM): 5-40% slower than 0 everywhere except head dim 64 with
//   causal masks at seqlen <= 1024, where 3 was up to 17% faster. 64-key tiles double the dQ reductions.
// Second round, same day and GPU (tests/cuda/backward_tune.sh; geometric mean over the grid of the ratio to flash):
//   head dim 64, 128 x 128 tiles (FlashAttention-2's; now variant 0): 0.710 against 0.625 for 128 x 64, +13-19%
//   unmasked, +1-17% causal (least at 512); on top of it dQ before dV / dK -1%, early exponentials -3%,
//   heavy-first -2% (it loses up to 9% on short causal sequences: concurrent CTAs no longer share Q and dO in L2).
//   head dim 128: dQ first with 32 x 32 dQ warp tiles -0.3%, plus pipelined fragments -0.5%, plus early
//   exponentials -3%; heavy key tiles first +1-6% on causal problems of 512-8k, 0 at 16k (now in variant 0);
//   9 below is dQ first + 32 x 32 dQ tiles + heavy first, the best measured combination at head dim 128 then.
// Third round, same day and GPU: the fast masked path (kMaskFast, now in variant 0) over the second round's variant
//   0: +30% at head dim 64 causal 512 (74 -> 96 TFLOP/s), +20% at 1024, +2-12% on causal 2k-16k; head dim 128
//   +13% causal 512, +2-9% causal 1k-16k; unmasked within 1%; geometric mean of the ratio to flash 0.709 -> 0.751
//   (64) and 0.754 -> 0.778 (128). Four-wide dQ reductions (kRedV4): 0 to -1%, with or without the fast masked
//   path; variant 13 is variant 0 with them.
template <int kDimQK, int kDimV, int kVariant = 0>
struct ConfigFor;
template <>
struct ConfigFor<64, 64, 0> {
  using type = Config<64, 64, 128, 128, 4, 4, 4, false, 1, false, false, false, true>;
};
template <>
struct ConfigFor<64, 64, 1> {
  using type = Config<64, 64, 128, 64, 4, 4, 2, true>;
};
template <>
struct ConfigFor<64, 64, 2> {
  using type = Config<64, 64, 64, 64, 4, 4, 2, true>;
};
template <>
struct ConfigFor<64, 64, 3> {
  using type = Config<64, 64, 64, 64, 4, 4, 2, true, 2>;  // 74 KB of shared memory: two CTAs per SM
};
template <>
struct ConfigFor<64, 64, 9> {
  using type = Config<64, 64, 128, 128, 4, 4, 4, false, 1, true, true>;
};
template <>
struct ConfigFor<64, 64, 13> {
  using type = Config<64, 64, 128, 128, 4, 4, 4, false, 1, false, false, false, true, true>;
};
template <>
struct ConfigFor<96, 96, 0> {
  using type = Config<96, 96, 128, 64, 4, 4, 4, false>;
};
template <>
struct ConfigFor<128, 128, 0> {
  using type = Config<128, 128, 128, 64, 4, 4, 4, false, 1, false, true, false, true>;
};
template <>
struct ConfigFor<128, 128, 1> {
  using type = Config<128, 128, 128, 64, 4, 4, 2, true>;
};
template <>
struct ConfigFor<128, 128, 2> {
  using type = Config<128, 128, 64, 64, 4, 4, 2, true>;
};
template <>
struct ConfigFor<128, 128, 3> {
  using type = Config<128, 128, 64, 128, 4, 4, 4, true>;
};
template <>
struct ConfigFor<128, 128, 4> {
  using type = Config<128, 128, 64, 32, 4, 4, 2, true, 2>;  // 80 KB of shared memory: two CTAs per SM
};
template <>
struct ConfigFor<128, 128, 9> {  // dQ first, 32 x 32 dQ warp tiles, heavy key tiles first
  using type = Config<128, 128, 128, 64, 4, 4, 2, false, 1, true, true>;
};
template <>
struct ConfigFor<128, 128, 13> {
  using type = Config<128, 128, 128, 64, 4, 4, 4, false, 1, false, true, false, true, true>;
};
template <>
struct ConfigFor<192, 128, 0> {
  using type = Config<192, 128, 64, 64, 4, 4, 4, false>;
};
template <>
struct ConfigFor<256, 256, 0> {
  using type = Config<256, 256, 64, 64, 4, 4, 4, false>;
};

// Tilings for GPUs whose blocks cannot hold variant 0's shared memory (backward.cu picks them from the device's
// opt-in limit): at most 99 KB (L40, RTX 4090) for head dims up to 192, 145 KB (A100) for 256. The ones for 64 and
// 128 are tuning variants 3 and 4, checked on an H200; the others have not run on a GPU yet.
inline constexpr int kSmallSmemVariant = 5;
template <>
struct ConfigFor<64, 64, kSmallSmemVariant> : ConfigFor<64, 64, 3> {};
template <>
struct ConfigFor<96, 96, kSmallSmemVariant> {
  using type = Config<96, 96, 64, 64, 4, 4, 4, false>;
};
template <>
struct ConfigFor<128, 128, kSmallSmemVariant> : ConfigFor<128, 128, 4> {};
template <>
struct ConfigFor<192, 128, kSmallSmemVariant> {
  using type = Config<192, 128, 64, 32, 4, 4, 2, false>;
};
template <>
struct ConfigFor<256, 256, kSmallSmemVariant> {
  using type = Config<256, 256, 64, 32, 4, 4, 2, false>;
};

}  // namespace ioattn::detail::sm80::bwd
