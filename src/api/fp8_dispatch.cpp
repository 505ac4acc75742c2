// ioattn: the FP8 entry points (include/ioattn/fp8.hpp). Two backends behind the same validation: the fp64
// reference on the CPU ("reference") and the Hopper kernel on the GPU ("cuda_sm90"); "auto" takes the one for the
// tensors' device.
#include <string>

#include "api/fp8_problem.hpp"
#include "cpu/fp8.hpp"
#include "ioattn/error.hpp"
#include "ioattn/fp8.hpp"
#if IOATTN_HAVE_CUDA
#include "cuda/sm90/fp8_forward.hpp"
#endif

namespace ioattn {
namespace {

// Head dims beyond this are refused by every backend (the dense API's promise; see the reference backend).
constexpr std::int64_t kMaxHeadDim = 512;

// The backend for the tensors' device: "reference" on the CPU, "cuda_sm90" on a GPU.
void check_supported(const detail::Fp8Problem& fp, const std::string& impl) {
  if (impl != "auto" && impl != "reference" && impl != "cuda_sm90") {
    throw Error(ErrorCode::invalid_argument,
                "params.impl: expected 'auto', 'reference' (CPU) or 'cuda_sm90' (GPU) for the FP8 forward, got '" +
                    impl + "'");
  }
  const Device wanted = impl == "reference" ? Device::cpu : impl == "cuda_sm90" ? Device::cuda : fp.attn.device;
  if (fp.attn.device != wanted) {
    throw Error(ErrorCode::invalid_argument, "params.impl: '" + impl + "' runs on " + to_string(wanted) +
                                                 " tensors; these are on " + to_string(fp.attn.device));
  }
  if (fp.attn.device == Device::cuda) {
#if IOATTN_HAVE_CUDA
    if (std::string why = detail::sm90::fp8_forward_unsupported(fp); !why.empty()) {
      throw Error(ErrorCode::unsupported, "attention_forward_fp8: " + why);
    }
    return;
#else
    throw Error(ErrorCode::unsupported, "attention_forward_fp8: this build has no CUDA backend (IOATTN_CUDA=OFF)");
#endif
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
#if IOATTN_HAVE_CUDA
  if (fp.attn.device == Device::cuda) return detail::sm90::run_forward_fp8(fp);
#endif
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
