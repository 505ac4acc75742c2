// Test support: the random source of every test. Each run draws fresh inputs (seed from the clock); a failure prints
// the seed, and IOATTN_TEST_SEED=<seed> replays it.
#pragma once

#include <cstdint>
#include <random>
#include <string>

namespace ioattn::test {

// The process-wide seed: IOATTN_TEST_SEED if set, else drawn from the clock once per process.
std::uint64_t test_seed();

// "IOATTN_TEST_SEED=1234567": what to paste in front of the command to reproduce a failure.
std::string seed_text();

// A generator for one test: the process seed mixed with a name (e.g. the case name), so that each case sees its own
// stream and replaying one case alone (--gtest_filter) draws the same inputs as the full run did.
class Rng {
 public:
  explicit Rng(const std::string& stream_name);
  double normal(double mean = 0.0, double stddev = 1.0) { return std::normal_distribution<double>(mean, stddev)(gen_); }
  double uniform(double lo, double hi) { return std::uniform_real_distribution<double>(lo, hi)(gen_); }
  std::int64_t uniform_int(std::int64_t lo, std::int64_t hi) {  // inclusive
    return std::uniform_int_distribution<std::int64_t>(lo, hi)(gen_);
  }

 private:
  std::mt19937_64 gen_;
};

}  // namespace ioattn::test
