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

template <int kDimQK_, int kDimV_, int kBc_, int kBr_, int kWm1_, int kWm2_, int kWm3_, bool kPipe_, int kMinBlocks_ = 1>
struct Config {
  static constexpr int kMinBlocks = kMinBlocks_;  // CTAs per SM the register budget is cut for (__launch_bounds__)
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
//   1 (pipelined fragments, 32x32 dQ warp tiles): +1% over 0 at head dim 128, -1% at 64;
//   2, 3, 4 (64-key tiles, some at two CTAs per SM): 5-40% slower than 0 everywhere except head dim 64 with
//   causal masks at seqlen <= 1024, where 3 was up to 17% faster. 64-key tiles double the dQ reductions.
template <int kDimQK, int kDimV, int kVariant = 0>
struct ConfigFor;
template <>
struct ConfigFor<64, 64, 0> {
  using type = Config<64, 64, 128, 64, 4, 4, 4, false>;
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
struct ConfigFor<96, 96, 0> {
  using type = Config<96, 96, 128, 64, 4, 4, 4, false>;
};
template <>
struct ConfigFor<128, 128, 0> {
  using type = Config<128, 128, 128, 64, 4, 4, 4, false>;
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
