// ioattn sm80 backward: the main kernel, one CTA per (key tile, kv head, batch).
//
// For each query head of the kv head's GQA group and each query tile that sees a key of this tile, it recomputes
// S^T = K Q^T and P^T = exp(S^T - lse), then
//   dV += P^T dO,   dP^T = V dO^T,   dS^T = P^T * (dP^T - D) * softcap'(S),   dK += dS^T Q,   dQ += dS K.
// dK and dV stay in registers for the whole walk, so each is written once, summed over the group in a fixed order
// (deterministic by construction). dQ goes to the fp32 accumulator with atomics, ordered per query tile by a
// semaphore when the caller asked for determinism. The scale is applied once at the end (dK here, dQ in the
// post-pass), not per tile.
//
// Pipeline: Q, dO, lse2 and D of the next query tile are fetched with cp.async into the other of two stages while
// this one computes. Two barriers per tile: one before the stage is read (and the other stage overwritten), one
// between writing P^T / dS^T to shared memory and reading them back as operands.
#pragma once

#include <cuda_runtime.h>

#include <cmath>
#include <cstdint>

#include "cuda/sm80/backward_config.hpp"
#include "cuda/sm80/backward_mma.cuh"
#include "cuda/sm80/backward_params.hpp"
#include "ioattn/core/mask.hpp"
#include "ioattn/core/score_mod.hpp"
#include "ioattn/core/seqlen.hpp"
#include "ioattn/error.hpp"

namespace ioattn::detail::sm80::bwd {

__device__ __forceinline__ int load_acquire(const int* ptr) {
  int v;
  asm volatile("ld.acquire.gpu.global.b32 %0, [%1];" : "=r"(v) : "l"(ptr) : "memory");
  return v;
}
__device__ __forceinline__ void store_release(int* ptr, int v) {
  asm volatile("st.release.gpu.global.b32 [%0], %1;" ::"l"(ptr), "r"(v) : "memory");
}

template <class Elem>
__device__ __forceinline__ Elem* operand_row(const BwdOperand& op, std::int64_t b, std::int64_t row, std::int64_t h) {
  return static_cast<Elem*>(op.ptr) + b * op.sb + row * op.ss + h * op.sh;
}

template <class Cfg, class Elem>
__global__ void __launch_bounds__(Cfg::kThreads, Cfg::kMinBlocks) backward_main_kernel(const BwdMainParams p) {
  constexpr int kBc = Cfg::kBc, kBr = Cfg::kBr, kDimQK = Cfg::kDimQK, kDimV = Cfg::kDimV;
  constexpr int kThreads = Cfg::kThreads;
  constexpr int kStrQK = Cfg::kStrQK, kStrV = Cfg::kStrV, kStrP = Cfg::kStrP;
  constexpr float kLog2e = 1.4426950408889634f;

  extern __shared__ __align__(16) unsigned char smem_raw[];
  Elem* const sK = reinterpret_cast<Elem*>(smem_raw) + Cfg::kOffK;    // [kBc][kStrQK]
  Elem* const sV = reinterpret_cast<Elem*>(smem_raw) + Cfg::kOffV;    // [kBc][kStrV]
  Elem* const sQ = reinterpret_cast<Elem*>(smem_raw) + Cfg::kOffQ;    // [stage][kBr][kStrQK]
  Elem* const sdO = reinterpret_cast<Elem*>(smem_raw) + Cfg::kOffDO;  // [stage][kBr][kStrV]
  Elem* const sP = reinterpret_cast<Elem*>(smem_raw) + Cfg::kOffP;    // P^T  [kBc][kStrP]
  Elem* const sdS = reinterpret_cast<Elem*>(smem_raw) + Cfg::kOffDS;  // dS^T [kBc][kStrP]
  float* const sLse = reinterpret_cast<float*>(smem_raw + Cfg::kFloatOffset);  // [stage][kBr]
  float* const sDpre = sLse + Cfg::kStages * kBr;                               // [stage][kBr]

  const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
  const int g = lane >> 2, t = lane & 3;
  int n_tile = blockIdx.x, hk = blockIdx.y, b = blockIdx.z;
  if constexpr (Cfg::kHeavyFirst) {
    // Same grid, blocks renumbered key tile slowest when the mask is causal-like (the first key tiles carry the
    // most query tiles); unmasked problems keep (batch, head) slowest, whose CTAs share Q and dO in L2.
    if (p.window_right >= 0) {
      const unsigned linear = blockIdx.x + gridDim.x * (blockIdx.y + gridDim.y * blockIdx.z);
      const unsigned per_tile = gridDim.y * gridDim.z;
      n_tile = static_cast<int>(linear / per_tile);
      const unsigned rest = linear % per_tile;
      hk = static_cast<int>(rest % gridDim.y);
      b = static_cast<int>(rest / gridDim.y);
    }
  }

  const core::SeqSpan span = core::seq_span(b, p.cu_q, p.cu_k, p.seqlen_q, p.seqlen_k);
  const std::int64_t k_begin = std::int64_t(n_tile) * kBc;
  if (k_begin >= span.k_len) return;  // varlen: this sequence is shorter than the longest
  const int k_valid = static_cast<int>(span.k_len - k_begin < kBc ? span.k_len - k_begin : kBc);
  const std::int64_t k_end = k_begin + k_valid;
  const std::int64_t q_len = span.q_len;
  const core::MaskRule rule =
      core::MaskRule::make(p.window_left, p.window_right, p.top_left, span.q_len, span.k_len);
  const std::int64_t flat_q0 = p.cu_q ? span.q_offset : std::int64_t(b) * p.seqlen_q;

  // The query tiles that see a key of this tile: one run [m_lo, m_lo + n_m).
  const core::MaskRule::TileRun run = rule.query_tiles_seeing(k_begin, k_end, kBr, q_len);
  const int m_lo = run.first;
  const int n_m = run.last - run.first;
  const int group = p.group;
  const int total = group * n_m;

  load_rows_async<kBc, kDimQK, kThreads>(sK, kStrQK, operand_row<const Elem>(p.k, b, span.k_offset + k_begin, hk),
                                         p.k.ss, k_valid, tid);
  load_rows_async<kBc, kDimV, kThreads>(sV, kStrV, operand_row<const Elem>(p.v, b, span.k_offset + k_begin, hk),
                                        p.v.ss, k_valid, tid);
  cute::cp_async_fence();

  auto load_item = [&](int it, int stage) {
    const int h = hk * group + it / n_m;
    const std::int64_t q0 = std::int64_t(m_lo + it % n_m) * kBr;
    const int q_valid = static_cast<int>(q_len - q0 < kBr ? q_len - q0 : kBr);
    load_rows_async<kBr, kDimQK, kThreads>(sQ + stage * kBr * kStrQK, kStrQK,
                                           operand_row<const Elem>(p.q, b, span.q_offset + q0, h), p.q.ss, q_valid,
                                           tid);
    load_rows_async<kBr, kDimV, kThreads>(sdO + stage * kBr * kStrV, kStrV,
                                          operand_row<const Elem>(p.dout, b, span.q_offset + q0, h), p.dout.ss,
                                          q_valid, tid);
    // Rows past the sequence get lse2 = 0 and D = 0: their Q and dO rows are zero, so in the plain path S = 0,
    // P = 1 and dS = P * (0 - 0) = 0, and P times a zero dO row adds nothing: no mask code needed there.
    if (tid < 2 * kBr) {
      const int r = tid % kBr;
      const bool ok = r < q_valid;
      const float* src = (tid < kBr ? p.lse2 : p.dpre) + std::int64_t(h) * p.rows + flat_q0 + q0 + (ok ? r : 0);
      float* dst = (tid < kBr ? sLse : sDpre) + stage * kBr + r;
      cute::SM80_CP_ASYNC_CACHEALWAYS_ZFILL<float>::copy(*src, *dst, ok);
    }
    cute::cp_async_fence();
  };

  float acc_dk[Cfg::kMt2][Cfg::kNtK][4];
  float acc_dv[Cfg::kMt2][Cfg::kNtV][4];
  clear(acc_dk);
  clear(acc_dv);

  if (total > 0) load_item(0, 0);
  for (int it = 0; it < total; ++it) {
    const int stage = it & 1;
    cute::cp_async_wait<0>();
    __syncthreads();  // this stage has landed; every warp is done with the other stage and with sP / sdS
    if (it + 1 < total) load_item(it + 1, stage ^ 1);

    const int h = hk * group + it / n_m;
    const int m = m_lo + it % n_m;
    const std::int64_t q0 = std::int64_t(m) * kBr;
    const std::int64_t q_end = q0 + kBr < q_len ? q0 + kBr : q_len;
    const Elem* const sQs = sQ + stage * kBr * kStrQK;
    const Elem* const sdOs = sdO + stage * kBr * kStrV;
    const float* const sL = sLse + stage * kBr;
    const float* const sD = sDpre + stage * kBr;

    // Phase 1: S^T and dP^T for this warp's keys x queries, then P^T and dS^T to shared memory.
    {
      constexpr int kMt = Cfg::kMt1, kNt = Cfg::kNt1;
      const int key0 = (warp / Cfg::kWn1) * (kBc / Cfg::kWm1);
      const int qc0 = (warp % Cfg::kWn1) * (kBr / Cfg::kWn1);
      float acc_s[kMt][kNt][4];
      float acc_dp[kMt][kNt][4];
      clear(acc_s);
      clear(acc_dp);
      // A key tile overhanging the sequence is masked too: its zero rows give S = 0, not -inf.
      const bool masked = rule.classify(q0, q_end, k_begin, k_end) != core::TileKind::full || k_valid < kBc;
      const float slope = p.alibi ? p.alibi[std::int64_t(b) * p.alibi_bstride + h] : 0.0f;
      const bool plain = !masked && !(p.softcap > 0.0f) && slope == 0.0f;
      const float scale_log2 = p.scale * kLog2e;
      warp_gemm<kMt, kNt, kDimQK, false, false, Cfg::kPipe>(acc_s, sK + key0 * kStrQK, kStrQK, sQs + qc0 * kStrQK, kStrQK, lane);
      if constexpr (Cfg::kExpEarly) {
        if (plain) {  // acc_s becomes P^T here; the plain path below reads it as such
#pragma unroll
          for (int nt = 0; nt < kNt; ++nt) {
            const int q_l = qc0 + nt * 8 + 2 * t;
            const float lse2[2] = {sL[q_l], sL[q_l + 1]};
#pragma unroll
            for (int mt = 0; mt < kMt; ++mt) {
#pragma unroll
              for (int half = 0; half < 2; ++half) {
#pragma unroll
                for (int e2 = 0; e2 < 2; ++e2) {
                  float& x = acc_s[mt][nt][half * 2 + e2];
                  x = exp2_approx(fmaf(x, scale_log2, -lse2[e2]));
                }
                const int key_l = key0 + mt * 16 + g + half * 8;
                *reinterpret_cast<std::uint32_t*>(sP + key_l * kStrP + q_l) =
                    pack2<Elem>(acc_s[mt][nt][half * 2], acc_s[mt][nt][half * 2 + 1]);
              }
            }
          }
        }
      }
      warp_gemm<kMt, kNt, kDimV, false, false, Cfg::kPipe>(acc_dp, sV + key0 * kStrV, kStrV, sdOs + qc0 * kStrV, kStrV, lane);
      // Element (mt, nt, half, e2) of the warp tile is key key0 + mt*16 + g + 8*half, query qc0 + nt*8 + 2t + e2;
      // each (mt, nt, half) is one 32-bit pair in P^T and dS^T.
      const auto store_pair = [&](int mt, int nt, int half, const float (&prob)[2], const float (&dsc)[2]) {
        const int key_l = key0 + mt * 16 + g + half * 8;
        const int q_l = qc0 + nt * 8 + 2 * t;
        *reinterpret_cast<std::uint32_t*>(sP + key_l * kStrP + q_l) = pack2<Elem>(prob[0], prob[1]);
        *reinterpret_cast<std::uint32_t*>(sdS + key_l * kStrP + q_l) = pack2<Elem>(dsc[0], dsc[1]);
      };
      if (plain) {
        // Inside the mask, no score transform: the scale folds into the exponent's FFMA.
#pragma unroll
        for (int nt = 0; nt < kNt; ++nt) {
          const int q_l = qc0 + nt * 8 + 2 * t;
          [[maybe_unused]] const float lse2[2] = {sL[q_l], sL[q_l + 1]};
          const float dpre[2] = {sD[q_l], sD[q_l + 1]};
#pragma unroll
          for (int mt = 0; mt < kMt; ++mt) {
#pragma unroll
            for (int half = 0; half < 2; ++half) {
              if constexpr (Cfg::kExpEarly) {
                const int key_l = key0 + mt * 16 + g + half * 8;
                *reinterpret_cast<std::uint32_t*>(sdS + key_l * kStrP + q_l) =
                    pack2<Elem>(acc_s[mt][nt][half * 2] * (acc_dp[mt][nt][half * 2] - dpre[0]),
                                acc_s[mt][nt][half * 2 + 1] * (acc_dp[mt][nt][half * 2 + 1] - dpre[1]));
              } else {
                float prob[2], dsc[2];
#pragma unroll
                for (int e2 = 0; e2 < 2; ++e2) {
                  prob[e2] = exp2_approx(fmaf(acc_s[mt][nt][half * 2 + e2], scale_log2, -lse2[e2]));
                  dsc[e2] = prob[e2] * (acc_dp[mt][nt][half * 2 + e2] - dpre[e2]);
                }
                store_pair(mt, nt, half, prob, dsc);
              }
            }
          }
        }
      } else if (Cfg::kMaskFast && !(p.softcap > 0.0f) && slope == 0.0f) {
        // Row i sees the tile's local keys [lo, hi); rows past the sequence see none. Hidden pairs get P = 0, as
        // exp2(-inf - lse2) gives in the general path (lse2 is finite, 0 for rows that see nothing).
#pragma unroll
        for (int nt = 0; nt < kNt; ++nt) {
          const int q_l = qc0 + nt * 8 + 2 * t;
          const float lse2[2] = {sL[q_l], sL[q_l + 1]};
          const float dpre[2] = {sD[q_l], sD[q_l + 1]};
          int lo[2], hi[2];
#pragma unroll
          for (int e2 = 0; e2 < 2; ++e2) {
            const std::int64_t i = q0 + q_l + e2;
            const std::int64_t kb = rule.key_begin(i) - k_begin, ke = rule.key_end(i) - k_begin;
            lo[e2] = static_cast<int>(kb < 0 ? 0 : (kb > kBc ? kBc : kb));
            hi[e2] = i >= q_len ? 0 : static_cast<int>(ke < 0 ? 0 : (ke > kBc ? kBc : ke));
          }
#pragma unroll
          for (int mt = 0; mt < kMt; ++mt) {
#pragma unroll
            for (int half = 0; half < 2; ++half) {
              const int j_l = key0 + mt * 16 + g + half * 8;
              float prob[2], dsc[2];
#pragma unroll
              for (int e2 = 0; e2 < 2; ++e2) {
                const float e = exp2_approx(fmaf(acc_s[mt][nt][half * 2 + e2], scale_log2, -lse2[e2]));
                prob[e2] = (j_l >= lo[e2] && j_l < hi[e2]) ? e : 0.0f;
                dsc[e2] = prob[e2] * (acc_dp[mt][nt][half * 2 + e2] - dpre[e2]);
              }
              store_pair(mt, nt, half, prob, dsc);
            }
          }
        }
      } else {
#pragma unroll
        for (int nt = 0; nt < kNt; ++nt) {
          const int q_l = qc0 + nt * 8 + 2 * t;
          const float lse2[2] = {sL[q_l], sL[q_l + 1]};
          const float dpre[2] = {sD[q_l], sD[q_l + 1]};
#pragma unroll
          for (int mt = 0; mt < kMt; ++mt) {
#pragma unroll
            for (int half = 0; half < 2; ++half) {
              const std::int64_t j = k_begin + key0 + mt * 16 + g + half * 8;
              float prob[2], dsc[2];
#pragma unroll
              for (int e2 = 0; e2 < 2; ++e2) {
                float s = acc_s[mt][nt][half * 2 + e2] * p.scale;
                float cap_grad = 1.0f;
                if (p.softcap > 0.0f) {
                  const float th = tanhf(s / p.softcap);
                  s = p.softcap * th;
                  cap_grad = 1.0f - th * th;  // core::softcap_grad_from_capped, with the tanh at hand
                }
                const std::int64_t i = q0 + q_l + e2;
                if (slope != 0.0f) s += core::alibi_bias(slope, j, rule.diag(i));
                // Rows past the sequence too: with a negative ALiBi slope their bias could overflow exp2.
                if ((masked && !rule.visible(i, j)) || i >= q_len) s = -INFINITY;
                prob[e2] = exp2_approx(fmaf(s, kLog2e, -lse2[e2]));
                dsc[e2] = prob[e2] * (acc_dp[mt][nt][half * 2 + e2] - dpre[e2]) * cap_grad;
              }
              store_pair(mt, nt, half, prob, dsc);
            }
          }
        }
      }
    }
    __syncthreads();  // P^T and dS^T complete

    // Phase 2: dV += P^T dO and dK += dS^T Q for this warp's keys x dims.
    const auto phase2 = [&] {
      const int key0 = (warp / Cfg::kWn2) * (kBc / Cfg::kWm2);
      const int wn = warp % Cfg::kWn2;
      warp_gemm<Cfg::kMt2, Cfg::kNtV, kBr, false, true, Cfg::kPipe>(acc_dv, sP + key0 * kStrP, kStrP,
                                                        sdOs + wn * (kDimV / Cfg::kWn2), kStrV, lane);
      warp_gemm<Cfg::kMt2, Cfg::kNtK, kBr, false, true, Cfg::kPipe>(acc_dk, sdS + key0 * kStrP, kStrP,
                                                        sQs + wn * (kDimQK / Cfg::kWn2), kStrQK, lane);
    };

    // Phase 3: dQ += dS K for this warp's queries x dims, into the fp32 accumulator.
    const auto phase3 = [&] {
      constexpr int kMt = Cfg::kMt3, kNt = Cfg::kNt3;
      const int qr0 = (warp / Cfg::kWn3) * (kBr / Cfg::kWm3);
      const int d0 = (warp % Cfg::kWn3) * (kDimQK / Cfg::kWn3);
      float acc_dq[kMt][kNt][4];
      clear(acc_dq);
      warp_gemm<kMt, kNt, kBc, true, true, Cfg::kPipe>(acc_dq, sdS + qr0, kStrP, sK + d0, kStrQK, lane);

      // Deterministic mode: the key tiles that see query tile m are the run [key_begin(q0) / kBc, ...); each adds
      // only when the semaphore says all earlier ones have, so the fp32 sums happen in key-tile order every run.
      int* sem = nullptr;
      int my_turn = 0;
      if (p.dq_sem != nullptr) {
        sem = p.dq_sem + (std::int64_t(b) * p.heads_q + h) * p.n_qtiles + m;
        my_turn = n_tile - static_cast<int>(rule.key_begin(q0) / kBc);
        if (tid == 0) {
          while (load_acquire(sem) != my_turn) {
          }
        }
        __syncthreads();
      }
      const std::int64_t row_stride = std::int64_t(p.heads_q) * kDimQK;
      float* const dq_tile = p.dq_accum + (flat_q0 + q0) * row_stride + std::int64_t(h) * kDimQK;
      if constexpr (Cfg::kRedV4) {
        // Lane pair (t even, t odd) of one row group: the even lane takes row g, columns 2t..2t+3; the odd lane
        // row g + 8, columns 2t-2..2t+1. Each sends the half it gives away and receives the partner's.
        const bool odd = (t & 1) != 0;
#pragma unroll
        for (int mt = 0; mt < kMt; ++mt) {
          const int r = qr0 + mt * 16 + g + (odd ? 8 : 0);
          const bool row_ok = q0 + r < q_len;
#pragma unroll
          for (int nt = 0; nt < kNt; ++nt) {
            const float* c = acc_dq[mt][nt];
            const float x = __shfl_xor_sync(0xffffffffu, odd ? c[0] : c[2], 1);
            const float y = __shfl_xor_sync(0xffffffffu, odd ? c[1] : c[3], 1);
            if (row_ok) {
              float* dst = dq_tile + r * row_stride + d0 + nt * 8 + 2 * (t & ~1);
              if (odd) {
                red_add4(dst, x, y, c[2], c[3]);
              } else {
                red_add4(dst, c[0], c[1], x, y);
              }
            }
          }
        }
      } else {
#pragma unroll
        for (int mt = 0; mt < kMt; ++mt) {
#pragma unroll
          for (int half = 0; half < 2; ++half) {
            const int r = qr0 + mt * 16 + g + half * 8;
            if (q0 + r < q_len) {
#pragma unroll
              for (int nt = 0; nt < kNt; ++nt) {
                red_add2(dq_tile + r * row_stride + d0 + nt * 8 + 2 * t, acc_dq[mt][nt][half * 2],
                         acc_dq[mt][nt][half * 2 + 1]);
              }
            }
          }
        }
      }
      if (sem != nullptr) {
        __threadfence();
        __syncthreads();
        if (tid == 0) store_release(sem, my_turn + 1);
      }
    };
    if constexpr (Cfg::kDqFirst) {
      phase3();
      phase2();
    } else {
      phase2();
      phase3();
    }
  }
  cute::cp_async_wait<0>();  // a tile seen by no query still has its K / V copies in flight

  // Epilogue: dK (scaled) and dV, rows of this key tile inside the sequence.
  {
    const int key0 = (warp / Cfg::kWn2) * (kBc / Cfg::kWm2);
    const int wn = warp % Cfg::kWn2;
    Elem* const dk_base = operand_row<Elem>(p.dk, b, span.k_offset + k_begin, hk) + wn * (kDimQK / Cfg::kWn2);
    Elem* const dv_base = operand_row<Elem>(p.dv, b, span.k_offset + k_begin, hk) + wn * (kDimV / Cfg::kWn2);
#pragma unroll
    for (int mt = 0; mt < Cfg::kMt2; ++mt) {
#pragma unroll
      for (int half = 0; half < 2; ++half) {
        const int r = key0 + mt * 16 + g + half * 8;
        if (r < k_valid) {
#pragma unroll
          for (int nt = 0; nt < Cfg::kNtK; ++nt) {
            *reinterpret_cast<std::uint32_t*>(dk_base + r * p.dk.ss + nt * 8 + 2 * t) = pack2<Elem>(
                acc_dk[mt][nt][half * 2] * p.scale, acc_dk[mt][nt][half * 2 + 1] * p.scale);
          }
#pragma unroll
          for (int nt = 0; nt < Cfg::kNtV; ++nt) {
            *reinterpret_cast<std::uint32_t*>(dv_base + r * p.dv.ss + nt * 8 + 2 * t) =
                pack2<Elem>(acc_dv[mt][nt][half * 2], acc_dv[mt][nt][half * 2 + 1]);
          }
        }
      }
    }
  }
}

// Launches the main kernel for one (dtype, head dims) on `stream`; one explicit instantiation per source file in
// instantiations/.
template <class Elem, int kDimQK, int kDimV, int kVariant>
void launch_backward_main(const BwdMainParams& p, cudaStream_t stream) {
  using Cfg = typename ConfigFor<kDimQK, kDimV, kVariant>::type;
  auto* kernel = &backward_main_kernel<Cfg, Elem>;
  cudaError_t err =
      cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, static_cast<int>(Cfg::kSmemBytes));
  if (err == cudaSuccess) {
    const dim3 grid(static_cast<unsigned>((p.seqlen_k + Cfg::kBc - 1) / Cfg::kBc), static_cast<unsigned>(p.heads_kv),
                    static_cast<unsigned>(p.batch));
    kernel<<<grid, Cfg::kThreads, Cfg::kSmemBytes, stream>>>(p);
    err = cudaGetLastError();
  }
  if (err != cudaSuccess) {
    throw Error(ErrorCode::backend_failure,
                std::string("cuda backward: main kernel launch failed: ") + cudaGetErrorString(err));
  }
}

}  // namespace ioattn::detail::sm80::bwd
