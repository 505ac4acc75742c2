// ioattn: the whole public C++ API in one include. The C ABI is ioattn/ioattn.h.
#pragma once

#include "ioattn/attention.hpp"  // attention_forward / attention_backward, masks, params, backends()
#include "ioattn/block_manager.hpp"  // BlockManager: pages, block tables, copy-on-write forks
#include "ioattn/error.hpp"      // ioattn::Error, the one exception type
#include "ioattn/fp8.hpp"        // attention_forward_fp8, quantize_fp8: e4m3 inputs with descales (CPU reference)
#include "ioattn/paged.hpp"      // paged_attention_plan / _forward, paged_kv_write: decoding over a paged KV cache
#include "ioattn/tensor.hpp"     // TensorView, DType, Device
