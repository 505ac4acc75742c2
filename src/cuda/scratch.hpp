// ioattn CUDA: a call's scratch memory (dQ accumulators, split-KV partials...).
#pragma once

#include <cstddef>

#include <cuda_runtime.h>

#include "ioattn/attention.hpp"

namespace ioattn::detail {

// The caller's workspace when it is given and holds `bytes`; otherwise memory from the stream's pool
// (cudaMallocAsync), given back on the same stream when this goes out of scope. Stream-ordered either way: no
// host synchronization, and the pool reuses the memory only after the kernels queued before the free are done with
// it. Nothing is allocated for 0 bytes. Throws ErrorCode::out_of_memory naming `what` when the pool has no room.
class StreamScratch {
 public:
  StreamScratch(const Workspace& given, std::size_t bytes, cudaStream_t stream, const char* what);
  ~StreamScratch();
  StreamScratch(const StreamScratch&) = delete;
  StreamScratch& operator=(const StreamScratch&) = delete;

  unsigned char* data() const { return data_; }

 private:
  cudaStream_t stream_;
  unsigned char* data_ = nullptr;
  bool owned_ = false;
};

}  // namespace ioattn::detail
