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

// A span from offsets that no argument check has read (they live in device memory) clamped into the packed tensors
// of total_q and total_k rows: a bad offset then gives a wrong result but never a read or write outside the tensors
// the call was given.
IOATTN_HD SeqSpan clamp_to_packed(SeqSpan s, std::int64_t total_q, std::int64_t total_k) {
  s.q_offset = s.q_offset < 0 ? 0 : (s.q_offset > total_q ? total_q : s.q_offset);
  s.k_offset = s.k_offset < 0 ? 0 : (s.k_offset > total_k ? total_k : s.k_offset);
  s.q_len = s.q_len < 0 ? 0 : (s.q_len > total_q - s.q_offset ? total_q - s.q_offset : s.q_len);
  s.k_len = s.k_len < 0 ? 0 : (s.k_len > total_k - s.k_offset ? total_k - s.k_offset : s.k_len);
  return s;
}

}  // namespace ioattn::core
