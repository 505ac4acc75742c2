// ioattn CLI: the attention problem a run is about, the flags that set it, and its random inputs.
// Tensors are dense and contiguous: q [batch, seqlen_q, heads_q, dim_qk], k [batch, seqlen_k, heads_kv, dim_qk],
// v [batch, seqlen_k, heads_kv, dim_v], out and dout like q with dim_v, lse fp32 [batch, heads_q, seqlen_q].
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

#include "args.hpp"
#include "ioattn/attention.hpp"

namespace ioattn::cli {

struct ProblemSpec {
  std::int64_t batch = 2;
  std::int64_t heads_q = 16;
  std::int64_t heads_kv = 4;
  std::int64_t seqlen_q = 4096;
  std::int64_t seqlen_k = 4096;
  std::int64_t dim_qk = 128;
  std::int64_t dim_v = 128;
  DType dtype = DType::bf16;
  Mask mask = Mask::causal();
  float softcap = 0.0f;
  std::uint64_t seed = 0;
};

struct RunOptions {
  std::string impl = "auto";
  Device device = Device::cpu;
  int warmup = 0;
  int repeat = 1;
  int threads = 0;  // CPU backends: 0 = the OpenMP default
};

// The problem flags shared by demo and bench (--batch ... --seed), with `defaults` written into the help text.
std::vector<FlagSpec> problem_flag_specs(const ProblemSpec& defaults);
// --impl --device --warmup --repeat --threads. Defaults for warmup/repeat are per device, given as text.
std::vector<FlagSpec> run_flag_specs(const std::string& warmup_defaults, const std::string& repeat_defaults);

// Applies the problem flags over `defaults`. Only flag syntax is checked here: whether the problem is valid is the
// API's call, so that its ioattn::Error (naming the argument) is what the user sees.
ProblemSpec problem_from_flags(const ParsedFlags& flags, ProblemSpec defaults);
// Resolves --device (auto: cuda when ioattn::cuda_device_count() > 0, else cpu; cuda without a GPU is an error)
// and the per-device warmup/repeat defaults.
RunOptions run_options_from_flags(const ParsedFlags& flags, int cpu_warmup, int cpu_repeat, int cuda_warmup,
                                  int cuda_repeat);

DType parse_dtype(const std::string& text);
const char* dtype_name(DType dtype);  // "fp32", "fp16", "bf16": the spelling the flags use
std::string describe_mask(const Mask& mask);
std::string describe_problem(const ProblemSpec& spec);

// Exactly counted (query, key) pairs the mask leaves visible, over the whole problem (batch x heads_q included).
double visible_pairs(const ProblemSpec& spec);
// Forward: two matmuls per visible pair, 2*dim_qk + 2*dim_v FLOPs (4*B*H*Sq*Sk*D unmasked, about half for causal).
double forward_flops(const ProblemSpec& spec);
// Backward: 2.5x the forward, the usual convention (five matmuls against the forward's two).
double backward_flops(const ProblemSpec& spec);

// A host tensor holding elements of `dtype`, row-major over `shape`.
struct HostTensor {
  DType dtype = DType::f32;
  std::vector<std::int64_t> shape;
  std::vector<std::byte> bytes;

  HostTensor() = default;
  HostTensor(DType dtype, std::vector<std::int64_t> shape);
  std::int64_t numel() const;
  void* data() { return bytes.data(); }
  const void* data() const { return bytes.data(); }
  float at(std::int64_t index) const;  // element as fp32 (exact for fp16 and bf16)
  void set(std::int64_t index, float value);
};

// Standard normal values, rounded to the tensor's dtype. Deterministic in (seed, stream, index), whatever the
// thread count: each pair of elements is a function of its own counter.
void fill_normal(HostTensor& tensor, std::uint64_t seed, std::uint64_t stream);

struct HostInputs {
  HostTensor q, k, v, dout;  // dout is empty unless the backward is wanted
};
HostInputs make_inputs(const ProblemSpec& spec, bool with_backward);

std::string format_bytes(double bytes);  // "1.50 GiB"

}  // namespace ioattn::cli
