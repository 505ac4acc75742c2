// ioattn internal: what every entry point does around a backend call (dense in dispatch.cpp, paged in
// paged_dispatch.cpp).
#pragma once

#include <cstddef>
#include <exception>
#include <new>
#include <string>

#include "ioattn/attention.hpp"
#include "ioattn/error.hpp"

namespace ioattn::detail {

// The C++ API throws ioattn::Error and nothing else: a backend's allocation failure or stray standard exception is
// translated here, once, rather than in every backend.
template <class Fn>
auto call_backend(const char* backend, const char* what, Fn&& fn) -> decltype(fn()) {
  try {
    return fn();
  } catch (const Error&) {
    throw;
  } catch (const std::bad_alloc&) {
    throw Error(ErrorCode::out_of_memory, std::string("impl '") + backend + "' " + what + ": out of host memory");
  } catch (const std::exception& e) {
    throw Error(ErrorCode::backend_failure, std::string("impl '") + backend + "' " + what + ": " + e.what());
  }
}

inline void check_workspace(const Workspace& workspace, std::size_t needed) {
  if (workspace.data != nullptr && workspace.bytes < needed) {
    throw Error(ErrorCode::invalid_argument, "params.workspace: expected at least " + std::to_string(needed) +
                                                 " bytes (see *_workspace_bytes()), got " +
                                                 std::to_string(workspace.bytes));
  }
}

}  // namespace ioattn::detail
