#include "support/random.hpp"

#include <chrono>
#include <cstdlib>
#include <stdexcept>

namespace ioattn::test {
namespace {

std::uint64_t read_seed() {
  if (const char* env = std::getenv("IOATTN_TEST_SEED"); env != nullptr && *env != '\0') {
    char* end = nullptr;
    const unsigned long long value = std::strtoull(env, &end, 10);
    if (end == env || *end != '\0') {
      throw std::invalid_argument(std::string("IOATTN_TEST_SEED: expected a decimal integer, got '") + env + "'");
    }
    return value;
  }
  const auto now = std::chrono::high_resolution_clock::now().time_since_epoch();
  return static_cast<std::uint64_t>(std::chrono::duration_cast<std::chrono::nanoseconds>(now).count()) % 1000000007ull;
}

// FNV-1a: a stable hash (std::hash may differ between standard libraries, which would break replay elsewhere).
std::uint64_t stable_hash(const std::string& text) {
  std::uint64_t h = 1469598103934665603ull;
  for (unsigned char c : text) {
    h ^= c;
    h *= 1099511628211ull;
  }
  return h;
}

}  // namespace

std::uint64_t test_seed() {
  static const std::uint64_t seed = read_seed();
  return seed;
}

std::string seed_text() { return "IOATTN_TEST_SEED=" + std::to_string(test_seed()); }

Rng::Rng(const std::string& stream_name) {
  std::seed_seq seq{static_cast<std::uint32_t>(test_seed()), static_cast<std::uint32_t>(test_seed() >> 32),
                    static_cast<std::uint32_t>(stable_hash(stream_name)),
                    static_cast<std::uint32_t>(stable_hash(stream_name) >> 32)};
  gen_.seed(seq);
}

}  // namespace ioattn::test
