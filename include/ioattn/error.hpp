// ioattn: the one exception type the C++ API throws.
#pragma once

#include <stdexcept>
#include <string>

namespace ioattn {

enum class ErrorCode : int {
  invalid_argument = 1,  // a bad shape, dtype, stride, pointer or parameter; names the argument
  unsupported = 2,       // valid input that the chosen backend cannot run (e.g. head dim 320 on sm80)
  out_of_memory = 3,     // a host or device allocation failed
  backend_failure = 4,   // a CUDA or other runtime call failed
};

// Thrown for every rejected call. what() names the argument, what was expected and what came.
// When thrown by argument checking, no output has been written.
class Error : public std::runtime_error {
 public:
  Error(ErrorCode code, const std::string& message) : std::runtime_error(message), code_(code) {}
  ErrorCode code() const noexcept { return code_; }

 private:
  ErrorCode code_;
};

}  // namespace ioattn
