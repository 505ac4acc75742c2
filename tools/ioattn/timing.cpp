#include "timing.hpp"

#include <algorithm>
#include <chrono>
#include <fstream>
#include <string>

#include "device_memory.hpp"

namespace ioattn::cli {
namespace {

// A "Name:   1234 kB" line of /proc/self/status, in bytes; -1 when absent (not Linux).
std::int64_t proc_status_bytes(const char* name) {
  std::ifstream status("/proc/self/status");
  std::string key;
  while (status >> key) {
    if (key == name) {
      std::int64_t kib = 0;
      status >> kib;
      return kib * 1024;
    }
    status.ignore(1 << 20, '\n');
  }
  return -1;
}

bool reset_peak_rss() {
  // Writing 5 resets VmHWM to the current RSS (Linux >= 4.0).
  std::ofstream clear_refs("/proc/self/clear_refs");
  clear_refs << "5";
  clear_refs.flush();
  return static_cast<bool>(clear_refs);
}

}  // namespace

const char* MemoryProbe::method(Device device) {
  return device == Device::cuda ? "cudaMemGetInfo drop" : "VmHWM growth";
}

void MemoryProbe::start() {
  if (device_ == Device::cuda) {
    baseline_ = static_cast<std::int64_t>(gpu::free_bytes());
    lowest_free_ = baseline_;
    return;
  }
  // Without a reset the old peak stands and only growth beyond it shows: an underestimate, never an overestimate.
  const bool reset = reset_peak_rss();
  baseline_ = proc_status_bytes(reset ? "VmRSS:" : "VmHWM:");
}

void MemoryProbe::sample() {
  if (device_ == Device::cuda) lowest_free_ = std::min(lowest_free_, static_cast<std::int64_t>(gpu::free_bytes()));
}

std::int64_t MemoryProbe::stop() {
  if (device_ == Device::cuda) {
    sample();
    return std::max<std::int64_t>(0, baseline_ - lowest_free_);
  }
  const std::int64_t peak = proc_status_bytes("VmHWM:");
  if (peak < 0 || baseline_ < 0) return 0;
  return std::max<std::int64_t>(0, peak - baseline_);
}

double median(std::vector<double> values) {
  if (values.empty()) return 0.0;
  std::sort(values.begin(), values.end());
  const std::size_t mid = values.size() / 2;
  return values.size() % 2 == 1 ? values[mid] : 0.5 * (values[mid - 1] + values[mid]);
}

TimedRuns time_runs(Device device, void* stream, int warmup, int repeat, const std::function<void()>& prepare,
                    const std::function<void()>& work) {
  TimedRuns result;
  MemoryProbe probe(device);
  // The first timed run is watched: by then one-off costs (CUDA's lazy module loading, the OpenMP thread pool)
  // are paid by the warmup, when there is one, and what remains is what every call takes.
  const int probed = warmup;
  for (int run = 0; run < warmup + repeat; ++run) {
    prepare();
    if (device == Device::cuda) gpu::synchronize(stream);  // the poison fill is not part of the timed run
    if (run == probed) probe.start();
    double ms = 0.0;
    if (device == Device::cuda) {
      ms = gpu::time_on_stream_ms(stream, [&] {
        work();
        if (run == probed) probe.sample();  // before the drain: catches stream-ordered allocations still held
      });
    } else {
      const auto begin = std::chrono::steady_clock::now();
      work();
      const auto end = std::chrono::steady_clock::now();
      ms = std::chrono::duration<double, std::milli>(end - begin).count();
    }
    if (run == probed) result.extra_bytes = probe.stop();
    if (run >= warmup) result.ms.push_back(ms);
  }
  result.median_ms = median(result.ms);
  return result;
}

}  // namespace ioattn::cli
