// Test support: THE case table. Every backend present runs every case (tests/attention/test_attention.cpp), and the
// fp64 reference judges each one (numerics/error_bound.hpp states the bound).
//
// Not the full cross product: a covering set in which every value of every axis appears at least once (dtypes,
// head dims, seqlen pairs, mask kinds, softcap, ALiBi, sinks, GQA groups, varlen, strides) and the risky combinations
// appear together (empty rows with sinks, GQA with windows, varlen with empty sequences and every feature). Large
// shapes are fp32/bf16 with few heads, so the whole table runs in minutes on 2 cores.
#pragma once

#include <cstdint>
#include <optional>
#include <ostream>
#include <string>
#include <vector>

#include "ioattn/attention.hpp"

namespace ioattn::test {

enum class Alibi : std::uint8_t { none, per_head, per_batch_head };

// How the operands sit in memory.
enum class Layout : std::uint8_t {
  contiguous,  // each operand its own dense [batch, seq, heads, dim] (or varlen [total, heads, dim]) tensor
  packed_qkv,  // q, k, v slices of one [batch, seq, heads_q + 2 * heads_kv, dim] tensor (needs seq_q == seq_k and
               // dim_qk == dim_v); out and the gradients padded
  padded,      // every operand with gaps: head stride dim + 8, seq and batch strides with slack
};

struct Case {
  DType dtype = DType::bf16;
  std::int64_t batch = 1;
  std::int64_t heads_q = 2;
  std::int64_t heads_kv = 2;
  std::int64_t seqlen_q = 17;  // dense only
  std::int64_t seqlen_k = 17;  // dense only
  std::int64_t dim_qk = 64;
  std::int64_t dim_v = 64;
  Mask mask = Mask::none();
  std::optional<float> scale{};  // none: the default 1 / sqrt(dim_qk)
  float softcap = 0.0f;
  Alibi alibi = Alibi::none;
  bool sinks = false;
  std::vector<std::int32_t> varlen_q{};  // per-sequence lengths; empty: dense layout (batch taken from its size)
  std::vector<std::int32_t> varlen_k{};
  Layout layout = Layout::contiguous;
  bool deterministic = false;  // AttentionParams::deterministic: a different dQ (and GQA dK/dV) reduction path
  bool backward = true;

  bool is_varlen() const { return !varlen_q.empty(); }
  std::int64_t group() const { return heads_q / heads_kv; }
  // e.g. "bf16_d128_113x203_causal_br_gqa2": dtype, head dims, lengths, mask, then the features present.
  std::string name() const;
};

// GoogleTest prints parameters with this: the name, not the bytes.
inline void PrintTo(const Case& c, std::ostream* os) { *os << c.name(); }

// The table, in a fixed order. Names are unique (checked by a test).
const std::vector<Case>& attention_cases();

// Whether comma-separated `list` (a build switch such as IOATTN_CUDA_HEAD_DIMS, passed to the GPU tests as a string)
// holds `item`: what lets a cut-down build's tests skip what it did not compile.
bool listed(const std::string& list, const std::string& item);

// The shapes a GPU kernel's own tests run, beyond the table, from a base case (dtype, head dims, forward or
// backward): each mask kind on a GQA problem of several ragged tiles (333 queries x 1029 keys), whole tiles under a
// causal mask (512 x 512), padded strides with MQA under a top-left causal mask, and two varlen batches with empty
// sequences (a sliding window with sinks; causal with one long sequence among short ones).
std::vector<Case> kernel_shape_cases(const Case& base);

// The score-mod shapes the GPU kernels' own tests add, from a base case (dtype, head dims, forward or backward):
// softcap (one cap small enough that a wrong derivative shows) under a causal mask with GQA, ALiBi [h] and [b, h]
// (with softcap, top-left causal, MQA), varlen with empty sequences and sinks, and a sliding window.
std::vector<Case> score_mod_cases(const Case& base);

}  // namespace ioattn::test
