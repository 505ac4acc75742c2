// ioattn CLI: one attention problem set up on a device, run forward and backward through the public API, timed.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

#include "problem.hpp"

namespace ioattn::cli {

// Memory on the run's device (host memory for cpu), freed on destruction.
class DeviceBuffer {
 public:
  DeviceBuffer() = default;
  DeviceBuffer(Device device, std::size_t bytes);
  ~DeviceBuffer();
  DeviceBuffer(DeviceBuffer&& other) noexcept;
  DeviceBuffer& operator=(DeviceBuffer&& other) noexcept;
  DeviceBuffer(const DeviceBuffer&) = delete;
  DeviceBuffer& operator=(const DeviceBuffer&) = delete;

  void* data() const { return data_; }
  std::size_t bytes() const { return bytes_; }
  void upload(const void* host);
  void download(void* host) const;
  // Every byte 0xFF: a NaN in fp32, fp16 and bf16 alike, so an element a kernel forgot to write cannot pass.
  void poison(void* stream);

 private:
  void reset() noexcept;
  Device device_ = Device::cpu;
  void* data_ = nullptr;
  std::size_t bytes_ = 0;
};

struct PhaseResult {
  std::vector<double> ms;
  double median_ms = 0.0;
  double flops = 0.0;
  double tflops = 0.0;                // flops / median time
  std::size_t workspace_bytes = 0;    // what the backend asked for; the tool allocates and passes it
  std::int64_t measured_bytes = 0;    // MemoryProbe over the first timed run, beyond tensors and workspace
  std::int64_t peak_extra_bytes() const { return static_cast<std::int64_t>(workspace_bytes) + measured_bytes; }
};

struct HostOutputs {
  HostTensor out, lse, dq, dk, dv;  // the gradients are empty when no backward ran
};

class AttentionRun {
 public:
  // Generates the inputs (random normal, on the host), allocates every tensor on options.device and uploads.
  AttentionRun(const ProblemSpec& spec, const RunOptions& options, bool with_backward);
  ~AttentionRun();
  AttentionRun(const AttentionRun&) = delete;
  AttentionRun& operator=(const AttentionRun&) = delete;

  // The first call into the API: a bad problem throws its ioattn::Error here, before anything runs.
  PhaseResult forward();
  PhaseResult backward();  // after forward(): it consumes that run's out and lse
  HostOutputs download() const;

  const HostInputs& inputs() const { return inputs_; }
  std::string backend() const;               // the backend that ran ("tiled", ...), resolving "auto"
  std::size_t tensor_bytes() const;          // inputs and outputs on the device
  std::string device_text() const;           // "cpu (2 threads)" or the GPU's name

 private:
  ForwardArgs forward_args() const;
  BackwardArgs backward_args() const;
  AttentionParams params(const DeviceBuffer& workspace) const;

  ProblemSpec spec_;
  RunOptions options_;
  bool with_backward_;
  HostInputs inputs_;
  void* stream_ = nullptr;
  DeviceBuffer q_, k_, v_, out_, lse_, dout_, dq_, dk_, dv_;
  DeviceBuffer fwd_workspace_, bwd_workspace_;
};

}  // namespace ioattn::cli
