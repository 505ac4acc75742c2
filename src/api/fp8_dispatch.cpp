// ioattn: the FP8 entry points (include/ioattn/fp8.hpp). One backend for now, the fp64 reference on the CPU; the
// Hopper FP8 kernel will join it here, behind the same validation.
#include <string>

#include "api/fp8_problem.hpp"
#include "cpu/fp8.hpp"
#include "ioattn/error.hpp"
#include "ioattn/fp8.hpp"

namespace ioattn {
namespace {

// Head dims beyond this are refused by every backend (the dense API's promise; see the reference backend).
constexpr std::int64_t kMaxHeadDim = 512;

void check_supported(const detail::Fp8Problem& fp, const std::string& impl) {
  if (impl != "auto" && impl != "reference") {
    throw Error(ErrorCode::invalid_argument,
                "params.impl: expected 'auto' or 'reference' (the FP8 forward's only backend), got '" + impl + "'");
  }
  if (fp.attn.device != Device::cpu) {
    throw Error(ErrorCode::unsupported,
                std::string("attention_forward_fp8: the FP8 forward runs on the CPU (fp64 reference) only; the "
                            "Hopper FP8 kernel is not built yet, and the tensors are on ") +
                    to_string(fp.attn.device));
  }
  if (fp.attn.dim_qk > kMaxHeadDim || fp.attn.dim_v > kMaxHeadDim) {
    throw Error(ErrorCode::unsupported, "attention_forward_fp8: head dims up to " + std::to_string(kMaxHeadDim) +
                                            ", got head_dim_qk " + std::to_string(fp.attn.dim_qk) +
                                            " and head_dim_v " + std::to_string(fp.attn.dim_v));
  }
}

}  // namespace

void attention_forward_fp8(const Fp8ForwardArgs& args, const AttentionParams& params) {
  const detail::Fp8Problem fp = detail::make_fp8_forward_problem(args, params);
  check_supported(fp, params.impl);
  if (fp.attn.batch * fp.attn.seqlen_q == 0) return;
  cpu::fp8::reference_forward(fp);
}

void quantize_fp8(const TensorView& input, const TensorView& output, const TensorView& descale,
                  std::int64_t block_rows, bool rotate) {
  const detail::Fp8QuantizeProblem qp = detail::make_fp8_quantize_problem(input, output, descale, block_rows, rotate);
  if (input.device != Device::cpu) {
    throw Error(ErrorCode::unsupported,
                std::string("quantize_fp8: runs on the CPU only for now; the tensors are on ") +
                    to_string(input.device));
  }
  cpu::fp8::quantize(qp);
}

}  // namespace ioattn
