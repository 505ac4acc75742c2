// ioattn core: where sequence b of a batch starts and how long it is, for dense and varlen (packed) layouts alike.
#pragma once

#include <cstdint>

#include "ioattn/core/config.hpp"

namespace ioattn::core {

struct SeqSpan {
  std::int64_t q_offset;  // first query row of the sequence in the seq dimension (0 for dense)
  std::int64_t q_len;
  std::int64_t k_offset;
  std::int64_t k_len;
};

// cu_q / cu_k: int32 cumulative offsets [batch + 1] for varlen, or null for dense layouts, where every sequence
// has seqlen_q queries and seqlen_k keys and starts at row 0 of its own batch slice.
IOATTN_HD SeqSpan seq_span(std::int64_t b, const std::int32_t* cu_q, const std::int32_t* cu_k, std::int64_t seqlen_q,
                           std::int64_t seqlen_k) {
  SeqSpan span{0, seqlen_q, 0, seqlen_k};
  if (cu_q != nullptr) {
    span.q_offset = cu_q[b];
    span.q_len = cu_q[b + 1] - cu_q[b];
  }
  if (cu_k != nullptr) {
    span.k_offset = cu_k[b];
    span.k_len = cu_k[b + 1] - cu_k[b];
  }
  return span;
}

}  // namespace ioattn::core
