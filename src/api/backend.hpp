// ioattn internal: what a backend provides. src/api/dispatch.cpp is the one place that picks one.
#pragma once

#include <cstddef>
#include <string>

#include "api/problem.hpp"

namespace ioattn::detail {

struct Backend {
  const char* name;  // what AttentionParams::impl selects, e.g. "tiled"
  Device device;     // where its tensors must live
  int priority;      // "auto" picks the highest-priority backend for the device that supports the problem

  // Empty when the backend can run the problem; otherwise why not (goes into an ErrorCode::unsupported message).
  std::string (*unsupported)(const Problem& problem, bool backward);
  std::size_t (*forward_workspace_bytes)(const Problem& problem);
  std::size_t (*backward_workspace_bytes)(const BackwardProblem& problem);
  void (*forward)(const Problem& problem);
  void (*backward)(const BackwardProblem& problem);
  // Null for a general backend. A backend for some shapes only (cuda_decode: decode steps) says here where "auto"
  // should take it (before the general ones of lower priority); a named impl runs whatever `unsupported` accepts, and
  // default_backend() names the general backend.
  bool (*auto_prefers)(const Problem& problem) = nullptr;
};

// Each backend defines one of these in its own directory; dispatch.cpp lists the ones compiled in.
extern const Backend kReferenceBackend;  // src/cpu/reference.cpp
extern const Backend kTiledBackend;      // src/cpu/tiled_forward.cpp
#if IOATTN_HAVE_CUDA
extern const Backend kCudaSm80Backend;   // src/cuda/sm80/
extern const Backend kCudaSm90Backend;   // src/cuda/sm90/ (Hopper: TMA, wgmma, warp specialization)
extern const Backend kCudaDecodeBackend; // src/cuda/paged/dense_decode.cu (decode shapes, split-KV)
int cuda_device_count();                 // src/cuda/: 0 when no usable GPU or driver, never throws
#endif

}  // namespace ioattn::detail
