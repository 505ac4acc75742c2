// ioattn: the whole public C++ API in one include. The C ABI is ioattn/ioattn.h.
#pragma once

#include "ioattn/attention.hpp"  // attention_forward / attention_backward, masks, params, backends()
#include "ioattn/error.hpp"      // ioattn::Error, the one exception type
#include "ioattn/tensor.hpp"     // TensorView, DType, Device
