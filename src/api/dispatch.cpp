// ioattn: the one place that picks a backend. Public entry points validate, pick, then call the backend.
#include <string>
#include <vector>

#include "api/backend.hpp"
#include "api/call_backend.hpp"
#include "api/validate.hpp"
#include "ioattn/attention.hpp"
#include "ioattn/error.hpp"

#ifndef IOATTN_VERSION
#define IOATTN_VERSION "0.0.0"
#endif

namespace ioattn {
namespace detail {
namespace {

// Every backend compiled in. Order is only the order backends() lists them in; "auto" goes by priority.
const std::vector<const Backend*>& all_backends() {
  static const std::vector<const Backend*> list = {
      &kReferenceBackend,
      &kTiledBackend,
#if IOATTN_HAVE_CUDA
      &kCudaSm80Backend,
      &kCudaSm90Backend,
      &kCudaDecodeBackend,
#endif
  };
  return list;
}

std::string device_text(Device device, int index) {
  std::string s = to_string(device);
  if (device == Device::cuda) s.append(":").append(std::to_string(index));
  return s;
}

std::string known_impls() {
  std::string names = "auto";
  for (const Backend* b : all_backends()) names += std::string(", ") + b->name;
  return names;
}

// impl "auto": the highest-priority backend for the problem's device that can run it; a named impl: that backend,
// provided it lives on the tensors' device and can run the problem.
const Backend& select(const Problem& problem, const std::string& impl, bool backward) {
  if (impl == "auto") {
    const Backend* best = nullptr;
    std::string reasons;
    bool any_for_device = false;
    for (const Backend* b : all_backends()) {
      if (b->device != problem.device) continue;
      any_for_device = true;
      if (b->auto_prefers != nullptr && !b->auto_prefers(problem)) continue;  // a specialist, not for this shape
      const std::string why = b->unsupported(problem, backward);
      if (!why.empty()) {
        reasons += std::string(reasons.empty() ? "" : "; ") + b->name + ": " + why;
        continue;
      }
      if (best == nullptr || b->priority > best->priority) best = b;
    }
    if (best != nullptr) return *best;
    if (!any_for_device) {
      throw Error(ErrorCode::unsupported, std::string("impl 'auto': this build has no backend for tensors on ") +
                                              to_string(problem.device) + " (backends: " + known_impls() + ")");
    }
    throw Error(ErrorCode::unsupported,
                std::string("impl 'auto': no backend on ") + to_string(problem.device) + " can run this " +
                    (backward ? "backward" : "forward") + " problem (" + reasons + ")");
  }
  for (const Backend* b : all_backends()) {
    if (impl != b->name) continue;
    if (b->device != problem.device) {
      const std::string where = device_text(problem.device, problem.device_index);
      throw Error(ErrorCode::invalid_argument, "params.impl: expected a backend for tensors on " + where +
                                                   " (where q is), got '" + impl + "', which runs on " +
                                                   to_string(b->device));
    }
    const std::string why = b->unsupported(problem, backward);
    if (!why.empty()) {
      throw Error(ErrorCode::unsupported, "impl '" + impl + "' cannot run this " +
                                              (backward ? std::string("backward") : std::string("forward")) +
                                              " problem: " + why);
    }
    return *b;
  }
  throw Error(ErrorCode::invalid_argument,
              "params.impl: expected one of " + known_impls() + " (the backends in this build), got '" + impl + "'");
}

}  // namespace
}  // namespace detail

void attention_forward(const ForwardArgs& args, const AttentionParams& params) {
  const detail::Problem problem = detail::make_forward_problem(args, params);
  const detail::Backend& backend = detail::select(problem, params.impl, false);
  if (detail::nothing_to_do(problem)) return;
  detail::call_backend(backend.name, "forward", [&] {
    detail::check_workspace(problem.workspace, backend.forward_workspace_bytes(problem));
    backend.forward(problem);
  });
}

void attention_backward(const BackwardArgs& args, const AttentionParams& params) {
  const detail::BackwardProblem problem = detail::make_backward_problem(args, params);
  const detail::Backend& backend = detail::select(problem, params.impl, true);
  if (detail::nothing_to_do(problem)) return;
  detail::call_backend(backend.name, "backward", [&] {
    detail::check_workspace(problem.workspace, backend.backward_workspace_bytes(problem));
    backend.backward(problem);
  });
}

std::size_t forward_workspace_bytes(const ForwardArgs& args, const AttentionParams& params) {
  const detail::Problem problem = detail::make_forward_problem(args, params);
  const detail::Backend& backend = detail::select(problem, params.impl, false);
  if (detail::nothing_to_do(problem)) return 0;
  return detail::call_backend(backend.name, "forward_workspace_bytes",
                              [&] { return backend.forward_workspace_bytes(problem); });
}

std::size_t backward_workspace_bytes(const BackwardArgs& args, const AttentionParams& params) {
  const detail::BackwardProblem problem = detail::make_backward_problem(args, params);
  const detail::Backend& backend = detail::select(problem, params.impl, true);
  if (detail::nothing_to_do(problem)) return 0;
  return detail::call_backend(backend.name, "backward_workspace_bytes",
                              [&] { return backend.backward_workspace_bytes(problem); });
}

std::string backends() {
  std::string names;
  for (const detail::Backend* b : detail::all_backends()) {
    if (!names.empty()) names += ' ';
    names += b->name;
  }
  return names;
}

std::string default_backend(Device device) {
  const detail::Backend* best = nullptr;
  for (const detail::Backend* b : detail::all_backends()) {
    const bool general = b->auto_prefers == nullptr;
    if (b->device == device && general && (best == nullptr || b->priority > best->priority)) best = b;
  }
  return best != nullptr ? best->name : "";
}

int cuda_device_count() {
#if IOATTN_HAVE_CUDA
  return detail::cuda_device_count();
#else
  return 0;
#endif
}

const char* version() { return IOATTN_VERSION; }

}  // namespace ioattn
