#include "problem.hpp"

#include <cmath>
#include <cstdio>
#include <cstring>
#include <numbers>

#include "device_memory.hpp"
#include "ioattn/core/convert.hpp"
#include "ioattn/core/mask.hpp"
#include "ioattn/error.hpp"

namespace ioattn::cli {

std::vector<FlagSpec> problem_flag_specs(const ProblemSpec& d) {
  const auto n = [](std::int64_t v) { return std::to_string(v); };
  return {
      {"batch", FlagKind::integer, "N", "sequences in the batch", n(d.batch)},
      {"heads", FlagKind::integer, "N", "query heads", n(d.heads_q)},
      {"kv-heads", FlagKind::integer, "N", "key/value heads (GQA/MQA: heads must be a multiple)", n(d.heads_kv)},
      {"seqlen", FlagKind::integer, "N", "sets both --seqlen-q and --seqlen-k", ""},
      {"seqlen-q", FlagKind::integer, "N", "query sequence length", n(d.seqlen_q)},
      {"seqlen-k", FlagKind::integer, "N", "key sequence length", n(d.seqlen_k)},
      {"head-dim", FlagKind::integer, "N", "head dim of q and k (and of v unless --head-dim-v)", n(d.dim_qk)},
      {"head-dim-v", FlagKind::integer, "N", "head dim of v and out", "--head-dim"},
      {"dtype", FlagKind::text, "fp32|fp16|bf16", "element type of q, k, v, out and the gradients",
       dtype_name(d.dtype)},
      {"causal", FlagKind::boolean, "", "causal mask, aligned bottom-right (FlashAttention's convention)",
       d.mask.is_causal() ? "on" : "off"},
      {"no-mask", FlagKind::boolean, "", "no mask: every query sees every key", ""},
      {"window", FlagKind::text, "L,R", "sliding window: keys diag-L .. diag+R visible, -1 = unbounded side", ""},
      {"top-left", FlagKind::boolean, "", "align the causal/window diagonal top-left (PyTorch's is_causal)", ""},
      {"softcap", FlagKind::number, "X", "logit softcap X * tanh(s / X); 0 = off", "0"},
      {"seed", FlagKind::integer, "N", "seed of the random normal inputs", n(static_cast<std::int64_t>(d.seed))},
  };
}

std::vector<FlagSpec> run_flag_specs(const std::string& warmup_defaults, const std::string& repeat_defaults) {
  return {
      {"impl", FlagKind::text, "NAME", "backend by name (see 'ioattn --version'), or auto", "auto"},
      {"device", FlagKind::text, "auto|cpu|cuda", "where to run; auto = cuda when a GPU is present and built",
       "auto"},
      {"warmup", FlagKind::integer, "N", "untimed runs first", warmup_defaults},
      {"repeat", FlagKind::integer, "N", "timed runs; the median is reported", repeat_defaults},
      {"threads", FlagKind::integer, "N", "CPU threads for the CPU backends, 0 = OpenMP's default", "0"},
  };
}

DType parse_dtype(const std::string& text) {
  if (text == "fp32") return DType::f32;
  if (text == "fp16") return DType::f16;
  if (text == "bf16") return DType::bf16;
  throw UsageError("--dtype expects fp32, fp16 or bf16, got '" + text + "'");
}

const char* dtype_name(DType dtype) {
  switch (dtype) {
    case DType::f32: return "fp32";
    case DType::f16: return "fp16";
    case DType::bf16: return "bf16";
    case DType::i32: return "int32";
    case DType::f8e4m3: return "fp8_e4m3";
  }
  return "?";
}

namespace {

Mask parse_window(const std::string& text) {
  const auto comma = text.find(',');
  if (comma == std::string::npos) {
    throw UsageError("--window expects L,R (two integers, -1 = unbounded), got '" + text + "'");
  }
  return Mask::window(parse_integer("window", text.substr(0, comma)), parse_integer("window", text.substr(comma + 1)));
}

}  // namespace

ProblemSpec problem_from_flags(const ParsedFlags& flags, ProblemSpec spec) {
  // Sizes may be 0 or odd here on purpose: the API judges the problem and names the argument.
  spec.batch = flags.integer("batch", spec.batch, 0);
  spec.heads_q = flags.integer("heads", spec.heads_q, 0);
  spec.heads_kv = flags.integer("kv-heads", spec.heads_kv, 0);
  const std::int64_t seqlen = flags.integer("seqlen", -1, 0);
  if (seqlen >= 0) spec.seqlen_q = spec.seqlen_k = seqlen;
  spec.seqlen_q = flags.integer("seqlen-q", spec.seqlen_q, 0);
  spec.seqlen_k = flags.integer("seqlen-k", spec.seqlen_k, 0);
  const bool dim_v_follows = !flags.has("head-dim-v");
  spec.dim_qk = flags.integer("head-dim", spec.dim_qk, 0);
  spec.dim_v = dim_v_follows && flags.has("head-dim") ? spec.dim_qk : flags.integer("head-dim-v", spec.dim_v, 0);
  spec.dtype = parse_dtype(flags.text("dtype", dtype_name(spec.dtype)));

  const int mask_flags = int(flags.has("causal")) + int(flags.has("no-mask")) + int(flags.has("window"));
  if (mask_flags > 1) throw UsageError("--causal, --no-mask and --window exclude each other; give one");
  if (flags.has("causal")) spec.mask = Mask::causal();
  if (flags.has("no-mask")) spec.mask = Mask::none();
  if (flags.has("window")) spec.mask = parse_window(flags.text("window", ""));
  if (flags.has("top-left")) {
    if (spec.mask.is_none()) throw UsageError("--top-left only applies to a --causal or --window mask");
    spec.mask.alignment = Alignment::top_left;
  }
  spec.softcap = static_cast<float>(flags.number("softcap", spec.softcap));
  spec.seed = static_cast<std::uint64_t>(flags.integer("seed", static_cast<std::int64_t>(spec.seed), 0));
  return spec;
}

RunOptions run_options_from_flags(const ParsedFlags& flags, int cpu_warmup, int cpu_repeat, int cuda_warmup,
                                  int cuda_repeat) {
  RunOptions options;
  options.impl = flags.text("impl", "auto");
  const std::string device = flags.text("device", "auto");
  if (device == "auto") {
    options.device = cuda_device_count() > 0 ? Device::cuda : Device::cpu;
  } else if (device == "cpu") {
    options.device = Device::cpu;
  } else if (device == "cuda") {
    if (!gpu::built_with_cuda()) {
      throw Error(ErrorCode::unsupported,
                  "--device cuda: this build of ioattn has no CUDA support (configured with IOATTN_CUDA=OFF)");
    }
    if (cuda_device_count() == 0) {
      throw Error(ErrorCode::unsupported, "--device cuda: no usable CUDA device (ioattn::cuda_device_count() is 0)");
    }
    options.device = Device::cuda;
  } else {
    throw UsageError("--device expects auto, cpu or cuda, got '" + device + "'");
  }
  const bool cuda = options.device == Device::cuda;
  options.warmup = static_cast<int>(flags.integer("warmup", cuda ? cuda_warmup : cpu_warmup, 0));
  options.repeat = static_cast<int>(flags.integer("repeat", cuda ? cuda_repeat : cpu_repeat, 1));
  options.threads = static_cast<int>(flags.integer("threads", 0, 0));
  return options;
}

std::string describe_mask(const Mask& mask) {
  if (mask.is_none()) return "no mask";
  const char* align = mask.alignment == Alignment::top_left ? "top-left" : "bottom-right";
  if (mask.is_causal()) return std::string("causal (") + align + ")";
  return "window (" + std::to_string(mask.window_left) + ", " + std::to_string(mask.window_right) + ", " + align +
         ")";
}

namespace {

std::string fmt_softcap(float softcap) {
  char text[32];
  std::snprintf(text, sizeof text, "%g", static_cast<double>(softcap));
  return text;
}

}  // namespace

std::string describe_problem(const ProblemSpec& s) {
  std::string text = "batch " + std::to_string(s.batch) + ", heads " + std::to_string(s.heads_q) + " (kv " +
                     std::to_string(s.heads_kv) + "), seqlen " + std::to_string(s.seqlen_q) + " x " +
                     std::to_string(s.seqlen_k) + ", head dim " + std::to_string(s.dim_qk);
  // append() rather than "/" + ...: GCC 12 warns falsely (-Wrestrict) on that operator+ form.
  if (s.dim_v != s.dim_qk) text.append("/").append(std::to_string(s.dim_v));
  text.append(", ").append(dtype_name(s.dtype)).append(", ").append(describe_mask(s.mask));
  if (s.softcap > 0.0f) text.append(", softcap ").append(fmt_softcap(s.softcap));
  return text;
}

double visible_pairs(const ProblemSpec& s) {
  const core::MaskRule rule = core::MaskRule::make(s.mask.window_left, s.mask.window_right,
                                                   s.mask.alignment == Alignment::top_left, s.seqlen_q, s.seqlen_k);
  double pairs = 0.0;
  for (std::int64_t i = 0; i < s.seqlen_q; ++i) {
    const std::int64_t seen = rule.key_end(i) - rule.key_begin(i);
    if (seen > 0) pairs += static_cast<double>(seen);
  }
  return pairs * static_cast<double>(s.batch) * static_cast<double>(s.heads_q);
}

double forward_flops(const ProblemSpec& s) {
  return 2.0 * visible_pairs(s) * static_cast<double>(s.dim_qk + s.dim_v);
}

double backward_flops(const ProblemSpec& s) { return 2.5 * forward_flops(s); }

HostTensor::HostTensor(DType dtype_, std::vector<std::int64_t> shape_) : dtype(dtype_), shape(std::move(shape_)) {
  bytes.resize(static_cast<std::size_t>(numel()) * dtype_size(dtype));
}

std::int64_t HostTensor::numel() const {
  if (shape.empty()) return 0;
  std::int64_t n = 1;
  for (const std::int64_t d : shape) n *= d;
  return n;
}

float HostTensor::at(std::int64_t index) const {
  const std::byte* p = bytes.data() + static_cast<std::size_t>(index) * dtype_size(dtype);
  if (dtype == DType::f32) {
    float f;
    std::memcpy(&f, p, sizeof f);
    return f;
  }
  std::uint16_t h;
  std::memcpy(&h, p, sizeof h);
  return dtype == DType::bf16 ? core::bf16_to_float(h) : core::fp16_to_float(h);
}

void HostTensor::set(std::int64_t index, float value) {
  std::byte* p = bytes.data() + static_cast<std::size_t>(index) * dtype_size(dtype);
  if (dtype == DType::f32) {
    std::memcpy(p, &value, sizeof value);
    return;
  }
  const std::uint16_t h = dtype == DType::bf16 ? core::float_to_bf16(value) : core::float_to_fp16(value);
  std::memcpy(p, &h, sizeof h);
}

namespace {

std::uint64_t mix64(std::uint64_t x) {  // splitmix64's finalizer: a bijection with good avalanche
  x ^= x >> 30;
  x *= 0xbf58476d1ce4e5b9ull;
  x ^= x >> 27;
  x *= 0x94d049bb133111ebull;
  x ^= x >> 31;
  return x;
}

}  // namespace

void fill_normal(HostTensor& tensor, std::uint64_t seed, std::uint64_t stream) {
  const std::int64_t n = tensor.numel();
  const std::int64_t pairs = (n + 1) / 2;
  const std::uint64_t key = mix64(seed * 0x9e3779b97f4a7c15ull + stream + 1);
#pragma omp parallel for schedule(static)
  for (std::int64_t p = 0; p < pairs; ++p) {
    const std::uint64_t bits = mix64(key ^ mix64(static_cast<std::uint64_t>(p)));
    // Box-Muller on two 24-bit uniforms; u1 in (0, 1] keeps log() finite.
    const double u1 = (static_cast<double>(bits >> 40) + 1.0) * 0x1p-24;
    const double u2 = static_cast<double>((bits >> 8) & 0xffffffull) * 0x1p-24;
    const double radius = std::sqrt(-2.0 * std::log(u1));
    const double angle = 2.0 * std::numbers::pi * u2;
    tensor.set(2 * p, static_cast<float>(radius * std::cos(angle)));
    if (2 * p + 1 < n) tensor.set(2 * p + 1, static_cast<float>(radius * std::sin(angle)));
  }
}

HostInputs make_inputs(const ProblemSpec& s, bool with_backward) {
  HostInputs in;
  in.q = HostTensor(s.dtype, {s.batch, s.seqlen_q, s.heads_q, s.dim_qk});
  in.k = HostTensor(s.dtype, {s.batch, s.seqlen_k, s.heads_kv, s.dim_qk});
  in.v = HostTensor(s.dtype, {s.batch, s.seqlen_k, s.heads_kv, s.dim_v});
  fill_normal(in.q, s.seed, 1);
  fill_normal(in.k, s.seed, 2);
  fill_normal(in.v, s.seed, 3);
  if (with_backward) {
    in.dout = HostTensor(s.dtype, {s.batch, s.seqlen_q, s.heads_q, s.dim_v});
    fill_normal(in.dout, s.seed, 4);
  }
  return in;
}

std::string format_bytes(double bytes) {
  const char* units[] = {"B", "KiB", "MiB", "GiB", "TiB"};
  int unit = 0;
  while (bytes >= 1024.0 && unit < 4) {
    bytes /= 1024.0;
    ++unit;
  }
  char text[32];
  std::snprintf(text, sizeof text, unit == 0 ? "%.0f %s" : "%.2f %s", bytes, units[unit]);
  return text;
}

}  // namespace ioattn::cli
