#include "run.hpp"

#include <omp.h>

#include <cstring>
#include <new>
#include <utility>

#include "device_memory.hpp"
#include "ioattn/error.hpp"
#include "timing.hpp"

namespace ioattn::cli {

DeviceBuffer::DeviceBuffer(Device device, std::size_t bytes) : device_(device), bytes_(bytes) {
  if (bytes == 0) return;
  if (device == Device::cuda) {
    data_ = gpu::allocate(bytes);
    return;
  }
  data_ = ::operator new(bytes, std::align_val_t{64}, std::nothrow);
  if (data_ == nullptr) {
    bytes_ = 0;
    throw Error(ErrorCode::out_of_memory, "could not allocate " + format_bytes(static_cast<double>(bytes)) +
                                              " of host memory for a tensor");
  }
}

DeviceBuffer::~DeviceBuffer() { reset(); }

DeviceBuffer::DeviceBuffer(DeviceBuffer&& other) noexcept
    : device_(other.device_), data_(std::exchange(other.data_, nullptr)), bytes_(std::exchange(other.bytes_, 0)) {}

DeviceBuffer& DeviceBuffer::operator=(DeviceBuffer&& other) noexcept {
  if (this != &other) {
    reset();
    device_ = other.device_;
    data_ = std::exchange(other.data_, nullptr);
    bytes_ = std::exchange(other.bytes_, 0);
  }
  return *this;
}

void DeviceBuffer::reset() noexcept {
  if (data_ == nullptr) return;
  if (device_ == Device::cuda) {
    gpu::release(data_);
  } else {
    ::operator delete(data_, std::align_val_t{64});
  }
  data_ = nullptr;
  bytes_ = 0;
}

void DeviceBuffer::upload(const void* host) {
  if (device_ == Device::cuda) {
    gpu::copy_to_device(data_, host, bytes_);
  } else if (bytes_ != 0) {
    std::memcpy(data_, host, bytes_);
  }
}

void DeviceBuffer::download(void* host) const {
  if (device_ == Device::cuda) {
    gpu::copy_to_host(host, data_, bytes_);
  } else if (bytes_ != 0) {
    std::memcpy(host, data_, bytes_);
  }
}

void DeviceBuffer::poison(void* stream) {
  if (device_ == Device::cuda) {
    gpu::fill_async(data_, 0xFF, bytes_, stream);
  } else if (bytes_ != 0) {
    std::memset(data_, 0xFF, bytes_);
  }
}

namespace {

std::size_t tensor_bytes_of(const HostTensor& t) { return t.bytes.size(); }

std::size_t count_bytes(DType dtype, std::initializer_list<std::int64_t> shape) {
  std::size_t n = dtype_size(dtype);
  for (const std::int64_t d : shape) n *= static_cast<std::size_t>(d);
  return n;
}

}  // namespace

AttentionRun::AttentionRun(const ProblemSpec& spec, const RunOptions& options, bool with_backward)
    : spec_(spec), options_(options), with_backward_(with_backward), inputs_(make_inputs(spec, with_backward)) {
  const Device dev = options.device;
  const ProblemSpec& s = spec_;
  if (dev == Device::cuda) stream_ = gpu::create_stream();
  q_ = DeviceBuffer(dev, tensor_bytes_of(inputs_.q));
  k_ = DeviceBuffer(dev, tensor_bytes_of(inputs_.k));
  v_ = DeviceBuffer(dev, tensor_bytes_of(inputs_.v));
  out_ = DeviceBuffer(dev, count_bytes(s.dtype, {s.batch, s.seqlen_q, s.heads_q, s.dim_v}));
  lse_ = DeviceBuffer(dev, count_bytes(DType::f32, {s.batch, s.heads_q, s.seqlen_q}));
  q_.upload(inputs_.q.data());
  k_.upload(inputs_.k.data());
  v_.upload(inputs_.v.data());
  if (with_backward) {
    dout_ = DeviceBuffer(dev, tensor_bytes_of(inputs_.dout));
    dq_ = DeviceBuffer(dev, tensor_bytes_of(inputs_.q));
    dk_ = DeviceBuffer(dev, tensor_bytes_of(inputs_.k));
    dv_ = DeviceBuffer(dev, tensor_bytes_of(inputs_.v));
    dout_.upload(inputs_.dout.data());
  }
  if (dev == Device::cuda) gpu::synchronize_device();
}

AttentionRun::~AttentionRun() {
  // Buffers go before the stream they were last used on.
  q_ = {}, k_ = {}, v_ = {}, out_ = {}, lse_ = {}, dout_ = {}, dq_ = {}, dk_ = {}, dv_ = {};
  fwd_workspace_ = {}, bwd_workspace_ = {};
  gpu::destroy_stream(stream_);
}

ForwardArgs AttentionRun::forward_args() const {
  const ProblemSpec& s = spec_;
  const Device dev = options_.device;
  ForwardArgs a;
  a.q = TensorView::contiguous(q_.data(), s.dtype, {s.batch, s.seqlen_q, s.heads_q, s.dim_qk}, dev);
  a.k = TensorView::contiguous(k_.data(), s.dtype, {s.batch, s.seqlen_k, s.heads_kv, s.dim_qk}, dev);
  a.v = TensorView::contiguous(v_.data(), s.dtype, {s.batch, s.seqlen_k, s.heads_kv, s.dim_v}, dev);
  a.out = TensorView::contiguous(out_.data(), s.dtype, {s.batch, s.seqlen_q, s.heads_q, s.dim_v}, dev);
  a.lse = TensorView::contiguous(lse_.data(), DType::f32, {s.batch, s.heads_q, s.seqlen_q}, dev);
  return a;
}

BackwardArgs AttentionRun::backward_args() const {
  const ProblemSpec& s = spec_;
  const Device dev = options_.device;
  const ForwardArgs f = forward_args();
  BackwardArgs a;
  a.q = f.q;
  a.k = f.k;
  a.v = f.v;
  a.out = f.out;
  a.lse = f.lse;
  a.dout = TensorView::contiguous(dout_.data(), s.dtype, {s.batch, s.seqlen_q, s.heads_q, s.dim_v}, dev);
  a.dq = TensorView::contiguous(dq_.data(), s.dtype, {s.batch, s.seqlen_q, s.heads_q, s.dim_qk}, dev);
  a.dk = TensorView::contiguous(dk_.data(), s.dtype, {s.batch, s.seqlen_k, s.heads_kv, s.dim_qk}, dev);
  a.dv = TensorView::contiguous(dv_.data(), s.dtype, {s.batch, s.seqlen_k, s.heads_kv, s.dim_v}, dev);
  return a;
}

AttentionParams AttentionRun::params(const DeviceBuffer& workspace) const {
  AttentionParams p;
  p.mask = spec_.mask;
  p.softcap = spec_.softcap;
  p.impl = options_.impl;
  p.stream = stream_;
  p.workspace = {workspace.data(), workspace.bytes()};
  p.num_threads = options_.threads;
  return p;
}

PhaseResult AttentionRun::forward() {
  const ForwardArgs args = forward_args();
  PhaseResult result;
  result.workspace_bytes = forward_workspace_bytes(args, params(DeviceBuffer{}));
  fwd_workspace_ = DeviceBuffer(options_.device, result.workspace_bytes);
  fwd_workspace_.poison(stream_);  // also makes its pages resident before the memory probe starts
  const AttentionParams p = params(fwd_workspace_);
  const TimedRuns timed = time_runs(
      options_.device, stream_, options_.warmup, options_.repeat,
      [&] {
        out_.poison(stream_);
        lse_.poison(stream_);
      },
      [&] { attention_forward(args, p); });
  if (options_.device == Device::cuda) gpu::synchronize(stream_);
  result.ms = timed.ms;
  result.median_ms = timed.median_ms;
  result.measured_bytes = timed.extra_bytes;
  result.flops = forward_flops(spec_);
  result.tflops = result.median_ms > 0.0 ? result.flops / (result.median_ms * 1e-3) / 1e12 : 0.0;
  return result;
}

PhaseResult AttentionRun::backward() {
  if (!with_backward_) throw Error(ErrorCode::invalid_argument, "internal: backward() on a forward-only run");
  const BackwardArgs args = backward_args();
  PhaseResult result;
  result.workspace_bytes = backward_workspace_bytes(args, params(DeviceBuffer{}));
  bwd_workspace_ = DeviceBuffer(options_.device, result.workspace_bytes);
  bwd_workspace_.poison(stream_);
  const AttentionParams p = params(bwd_workspace_);
  const TimedRuns timed = time_runs(
      options_.device, stream_, options_.warmup, options_.repeat,
      [&] {
        dq_.poison(stream_);
        dk_.poison(stream_);
        dv_.poison(stream_);
      },
      [&] { attention_backward(args, p); });
  if (options_.device == Device::cuda) gpu::synchronize(stream_);
  result.ms = timed.ms;
  result.median_ms = timed.median_ms;
  result.measured_bytes = timed.extra_bytes;
  result.flops = backward_flops(spec_);
  result.tflops = result.median_ms > 0.0 ? result.flops / (result.median_ms * 1e-3) / 1e12 : 0.0;
  return result;
}

HostOutputs AttentionRun::download() const {
  const ProblemSpec& s = spec_;
  HostOutputs o;
  o.out = HostTensor(s.dtype, {s.batch, s.seqlen_q, s.heads_q, s.dim_v});
  o.lse = HostTensor(DType::f32, {s.batch, s.heads_q, s.seqlen_q});
  out_.download(o.out.data());
  lse_.download(o.lse.data());
  if (with_backward_) {
    o.dq = HostTensor(s.dtype, inputs_.q.shape);
    o.dk = HostTensor(s.dtype, inputs_.k.shape);
    o.dv = HostTensor(s.dtype, inputs_.v.shape);
    dq_.download(o.dq.data());
    dk_.download(o.dk.data());
    dv_.download(o.dv.data());
  }
  return o;
}

std::string AttentionRun::backend() const {
  return options_.impl == "auto" ? default_backend(options_.device) : options_.impl;
}

std::size_t AttentionRun::tensor_bytes() const {
  std::size_t total = 0;
  for (const DeviceBuffer* b : {&q_, &k_, &v_, &out_, &lse_, &dout_, &dq_, &dk_, &dv_}) total += b->bytes();
  return total;
}

std::string AttentionRun::device_text() const {
  if (options_.device == Device::cuda) return std::string("cuda: ") + gpu::device_name();
  const int threads = options_.threads > 0 ? options_.threads : omp_get_max_threads();
  return "cpu (" + std::to_string(threads) + " threads)";
}

}  // namespace ioattn::cli
