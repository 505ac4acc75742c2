// ioattn CLI: timing (median over repeats after warmup) and the peak extra memory of a run.
#pragma once

#include <cstdint>
#include <functional>
#include <vector>

#include "ioattn/tensor.hpp"

namespace ioattn::cli {

// Peak memory a run takes beyond what was allocated before it started.
//   cpu:  growth of the process's peak resident set (VmHWM), the peak first reset through /proc/self/clear_refs so
//         that earlier, freed allocations do not hide it. Pages must be touched to count: callers touch their
//         own buffers (poisoning does) before start().
//   cuda: drop of cudaMemGetInfo's free bytes, sampled when the call returns and after the stream drains. Memory a
//         backend allocates and frees within the call is missed; the tool passes a workspace so there is none.
class MemoryProbe {
 public:
  explicit MemoryProbe(Device device) : device_(device) {}
  void start();
  void sample();  // between start() and stop(): one more observation (cuda)
  std::int64_t stop();
  static const char* method(Device device);  // how it measures, for the printout

 private:
  Device device_;
  std::int64_t baseline_ = 0;
  std::int64_t lowest_free_ = 0;
};

struct TimedRuns {
  std::vector<double> ms;  // the timed runs, in order
  double median_ms = 0.0;
  std::int64_t extra_bytes = 0;  // MemoryProbe over the first timed run (after the warmup)
};

// Runs prepare() then work(), warmup + repeat times; only work() is timed. cpu: std::chrono::steady_clock around
// work(). cuda: events on `stream` around work(), which must only enqueue on that stream.
TimedRuns time_runs(Device device, void* stream, int warmup, int repeat, const std::function<void()>& prepare,
                    const std::function<void()>& work);

double median(std::vector<double> values);

}  // namespace ioattn::cli
