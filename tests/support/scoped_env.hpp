// Sets an environment variable for a scope, restoring what was there: for tests that force a kernel's choice
// through the variables the launchers read at every call (IOATTN_SM90_PACK_GQA and the like).
#pragma once

#include <cstdlib>
#include <optional>
#include <string>

namespace ioattn::test {

class ScopedEnv {
 public:
  ScopedEnv(const char* name, const char* value) : name_(name) {
    if (const char* old = std::getenv(name)) old_ = old;
    ::setenv(name, value, 1);
  }
  ~ScopedEnv() { old_ ? ::setenv(name_, old_->c_str(), 1) : ::unsetenv(name_); }
  ScopedEnv(const ScopedEnv&) = delete;
  ScopedEnv& operator=(const ScopedEnv&) = delete;

 private:
  const char* name_;
  std::optional<std::string> old_;
};

}  // namespace ioattn::test
