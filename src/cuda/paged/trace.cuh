// ioattn cuda paged: an opt-in timeline of one paged forward, for finding where a small grid's time goes.
// Built only with -DIOATTN_PAGED_TRACE (e.g. IOATTN_QUICK_CMAKE_ARGS=-DCMAKE_CUDA_FLAGS=-DIOATTN_PAGED_TRACE with
// scripts/device-quick); run with IOATTN_PAGED_TRACE_FILE=path and each call overwrites path with one line per CTA
// of the decode and combine kernels: kernel, cta, sm, then %globaltimer (ns) at the events below (0: not reached).
// The dump synchronizes the stream, so traced calls are slower: read the timeline, not the call's time.
#pragma once

#include <cstdint>

namespace ioattn::detail::paged::trace {

// Events: decode: start, first tile in shared memory, key loop done (and its partial rows in shared memory),
// results written. combine: start, decode grid complete (after griddepcontrol.wait), row written.
enum Event : int { kSm = 0, kStart = 1, kFirst = 2, kLoopEnd = 3, kEnd = 4, kEvents = 5 };
constexpr int kMaxCtas = 1 << 14;  // per kernel; CTAs past it are not recorded

#if defined(IOATTN_PAGED_TRACE) && defined(__CUDACC__)
__device__ __forceinline__ void mark(std::uint64_t* buffer, int event) {
  if (buffer == nullptr || threadIdx.x != 0) return;
  const unsigned cta = blockIdx.x + gridDim.x * (blockIdx.y + gridDim.y * blockIdx.z);
  if (cta >= kMaxCtas) return;
  std::uint64_t now;
  asm volatile("mov.u64 %0, %%globaltimer;" : "=l"(now));
  buffer[cta * kEvents + event] = now;
  if (event == kStart) {
    unsigned sm;
    asm volatile("mov.u32 %0, %%smid;" : "=r"(sm));
    buffer[cta * kEvents + kSm] = sm;
  }
}
#define IOATTN_PAGED_MARK(buffer, event) ::ioattn::detail::paged::trace::mark(buffer, event)
#else
#define IOATTN_PAGED_MARK(buffer, event) ((void)0)
#endif

}  // namespace ioattn::detail::paged::trace
