// ioattn internal: the checks of public arguments shared by the dense and the paged entry points (see validate.hpp
// for the form of every message).
#include "api/checks.hpp"

#include <cmath>
#include <cstdint>
#include <sstream>
#include <string>
#include <utility>
#include <vector>

#include "ioattn/error.hpp"

namespace ioattn::detail {

[[noreturn]] void fail(const std::string& argument, const std::string& expected, const std::string& got) {
  throw Error(ErrorCode::invalid_argument, argument + ": expected " + expected + ", got " + got);
}

std::string shape_text(const std::vector<std::int64_t>& shape) {
  std::ostringstream os;
  os << "[";
  for (std::size_t i = 0; i < shape.size(); ++i) os << (i ? ", " : "") << shape[i];
  os << "]";
  return os.str();
}

std::string number_text(double x) {
  std::ostringstream os;
  os << x;
  return os.str();
}

std::int64_t extent(const TensorView& t, int dim) { return t.shape[static_cast<std::size_t>(dim)]; }
std::int64_t stride_of(const TensorView& t, int dim) { return t.stride[static_cast<std::size_t>(dim)]; }

// Whether no two index tuples of `t` reach the same element, by the usual sufficient rule: taking the dimensions of
// extent above 1 from the smallest stride up, each stride is at least the span the smaller ones cover. Every
// layout of distinct elements met in practice (row-major, slices, permutations, padding) passes. Overlapping output
// elements would be written by several threads at once, with an unspecified result.
bool elements_distinct(const TensorView& t) {
  std::int64_t strides[kMaxRank], extents[kMaxRank];
  int n = 0;
  for (int d = 0; d < t.rank; ++d) {
    if (extent(t, d) > 1) {
      strides[n] = stride_of(t, d);
      extents[n] = extent(t, d);
      ++n;
    }
  }
  for (int i = 1; i < n; ++i) {  // insertion sort by stride: at most four entries
    for (int j = i; j > 0 && strides[j] < strides[j - 1]; --j) {
      std::swap(strides[j], strides[j - 1]);
      std::swap(extents[j], extents[j - 1]);
    }
  }
  std::int64_t span = 1;  // elements covered by the dimensions taken so far
  for (int i = 0; i < n; ++i) {
    if (strides[i] < span) return false;
    // Saturating: an overflowing span means the next stride cannot clear it (and check_view rejects such sizes).
    std::int64_t reach = 0;
    if (__builtin_mul_overflow(extents[i] - 1, strides[i], &reach) || __builtin_add_overflow(span, reach, &span)) {
      span = INT64_MAX;
    }
  }
  return true;
}

// What every view must satisfy, whatever its role: a rank we know, non-negative extents and strides, a contiguous
// last dimension, data when it has elements, and element (and byte) offsets that fit in int64. Outputs additionally
// may not repeat an element (a zero stride over an extent above 1), since concurrent writes to it would race.
void check_view(const TensorView& t, const std::string& name, bool is_output) {
  if (t.rank < 1 || t.rank > kMaxRank) fail(name, "a tensor of rank 1 to " + std::to_string(kMaxRank), t.describe());
  if (t.device != Device::cpu && t.device != Device::cuda) fail(name, "device cpu or cuda", t.describe());
  if (t.device == Device::cuda && t.device_index < 0) {
    fail(name, "a CUDA device ordinal >= 0", "ordinal " + std::to_string(t.device_index));
  }
  for (int d = 0; d < t.rank; ++d) {
    if (extent(t, d) < 0) fail(name, "non-negative sizes", t.describe());
    if (stride_of(t, d) < 0) fail(name, "non-negative strides", t.describe());
  }
  if (is_output && !elements_distinct(t)) {
    fail(name, "an output whose elements do not overlap (each stride past the span of the smaller ones)",
         t.describe());
  }
  const int last = t.rank - 1;
  if (extent(t, last) > 1 && stride_of(t, last) != 1) {
    fail(name, "a contiguous last dimension (stride 1)", t.describe());
  }
  std::int64_t count = 1;
  std::int64_t max_offset = 0;
  bool has_elements = true;
  for (int d = 0; d < t.rank; ++d) {
    if (extent(t, d) == 0) has_elements = false;
  }
  if (has_elements) {
    for (int d = 0; d < t.rank; ++d) {
      std::int64_t term = 0;
      if (__builtin_mul_overflow(count, extent(t, d), &count) ||
          __builtin_mul_overflow(extent(t, d) - 1, stride_of(t, d), &term) ||
          __builtin_add_overflow(max_offset, term, &max_offset)) {
        fail(name, "sizes and strides whose element offsets fit in int64", t.describe());
      }
    }
    std::int64_t end_byte = 0;
    if (__builtin_add_overflow(max_offset, std::int64_t{1}, &end_byte) ||
        __builtin_mul_overflow(end_byte, static_cast<std::int64_t>(dtype_size(t.dtype)), &end_byte)) {
      fail(name, "sizes and strides whose byte offsets fit in int64", t.describe());
    }
    if (t.data == nullptr) fail(name, "non-null data for a tensor with elements", t.describe());
  }
}

void check_float_dtype(const TensorView& t, const std::string& name) {
  if (t.dtype != DType::f32 && t.dtype != DType::f16 && t.dtype != DType::bf16) {
    fail(name, "dtype fp32, fp16 or bf16", t.describe());
  }
}

void check_dtype(const TensorView& t, const std::string& name, DType want, const std::string& why) {
  if (t.dtype != want) fail(name, std::string("dtype ") + to_string(want) + why, t.describe());
}

void check_device(const TensorView& t, const std::string& name, const TensorView& q) {
  const bool same = t.device == q.device && (q.device == Device::cpu || t.device_index == q.device_index);
  if (!same) {
    std::string where = to_string(q.device);
    if (q.device == Device::cuda) where.append(":").append(std::to_string(q.device_index));
    fail(name, "a tensor on " + where + " (where q is)", t.describe());
  }
}

void check_shape(const TensorView& t, const std::string& name, const std::vector<std::int64_t>& want,
                 const std::string& meaning) {
  bool same = t.rank == static_cast<int>(want.size());
  for (int d = 0; same && d < t.rank; ++d) same = extent(t, d) == want[static_cast<std::size_t>(d)];
  if (!same) fail(name, "shape " + shape_text(want) + " " + meaning, t.describe());
}

// An operand of the attention layouts: same dtype as q, on q's device, a valid view.
void check_operand(const TensorView& t, const std::string& name, const TensorView& q, bool is_output) {
  check_view(t, name, is_output);
  if (t.dtype != q.dtype) fail(name, std::string("dtype ") + to_string(q.dtype) + " (the dtype of q)", t.describe());
  check_device(t, name, q);
}

std::int64_t check_offsets(const TensorView& cu, const std::string& name, const TensorView& q, std::int64_t rows,
                           const std::string& rows_name, std::int64_t max_seqlen, const std::string& max_name) {
  check_view(cu, name, false);
  check_dtype(cu, name, DType::i32, " (cumulative sequence offsets)");
  if (cu.rank != 1 || extent(cu, 0) < 1) fail(name, "int32 [batch + 1] (rank 1, at least one element)", cu.describe());
  check_device(cu, name, q);
  if (max_seqlen < 0) {
    fail(max_name, "0 (read off the offsets) or a positive maximum length", std::to_string(max_seqlen));
  }
  if (cu.device != Device::cpu) {
    // Device-resident offsets: their contents are the backend's to check (see validate.hpp).
    return max_seqlen > 0 ? max_seqlen : rows;
  }
  const auto* offsets = static_cast<const std::int32_t*>(cu.data);
  const std::int64_t n = extent(cu, 0);
  if (offsets[0] != 0) fail(name, "offsets starting at 0", std::to_string(offsets[0]) + " at index 0");
  std::int64_t longest = 0;
  for (std::int64_t i = 1; i < n; ++i) {
    const std::int64_t len = static_cast<std::int64_t>(offsets[i]) - offsets[i - 1];
    if (len < 0) {
      fail(name, "non-decreasing offsets", std::to_string(offsets[i - 1]) + " at index " + std::to_string(i - 1) +
                                               " then " + std::to_string(offsets[i]) + " at index " +
                                               std::to_string(i));
    }
    if (len > longest) longest = len;
  }
  if (offsets[n - 1] > rows) {
    fail(name, "a last offset <= " + std::to_string(rows) + " (" + rows_name + ", the packed rows)",
         std::to_string(offsets[n - 1]));
  }
  if (max_seqlen > 0 && max_seqlen < longest) {
    fail(max_name, "0 or at least the longest sequence, " + std::to_string(longest), std::to_string(max_seqlen));
  }
  return max_seqlen > 0 ? max_seqlen : longest;
}

void check_window(std::int64_t w, const char* name) {
  if (w < -1) fail(name, "-1 (unbounded) or a window size >= 0", std::to_string(w));
}

// The parameters, and the fields of the problem they fill.
void apply_params(const AttentionParams& params, const TensorView& q, std::int64_t heads_q, std::int64_t dim_qk,
                  Problem& p) {
  if (params.softmax_scale.has_value()) {
    if (!std::isfinite(*params.softmax_scale)) {
      fail("params.softmax_scale", "a finite number", number_text(*params.softmax_scale));
    }
    p.scale = *params.softmax_scale;
  } else {
    p.scale = static_cast<float>(1.0 / std::sqrt(static_cast<double>(dim_qk)));
  }
  if (!(params.softcap >= 0.0f) || !std::isfinite(params.softcap)) {
    fail("params.softcap", "0 (off) or a finite cap > 0", number_text(params.softcap));
  }
  p.softcap = params.softcap;
  check_window(params.mask.window_left, "params.mask.window_left");
  check_window(params.mask.window_right, "params.mask.window_right");
  if (params.mask.alignment != Alignment::bottom_right && params.mask.alignment != Alignment::top_left) {
    fail("params.mask.alignment", "bottom_right or top_left",
         std::to_string(static_cast<int>(params.mask.alignment)));
  }
  p.mask = params.mask;

  const TensorView& alibi = params.alibi_slopes;
  if (!alibi.empty()) {
    check_view(alibi, "params.alibi_slopes", false);
    check_dtype(alibi, "params.alibi_slopes", DType::f32, "");
    check_device(alibi, "params.alibi_slopes", q);
    const bool per_head = alibi.rank == 1 && extent(alibi, 0) == heads_q;
    const bool per_batch = alibi.rank == 2 && extent(alibi, 0) == p.batch && extent(alibi, 1) == heads_q;
    if (!per_head && !per_batch) {
      fail("params.alibi_slopes",
           "fp32 [heads_q] = [" + std::to_string(heads_q) + "] or [batch, heads_q] = [" +
               std::to_string(p.batch) + ", " + std::to_string(heads_q) + "]",
           alibi.describe());
    }
    p.alibi_slopes = static_cast<const float*>(alibi.data);
    p.alibi_batch_stride = per_batch ? alibi.stride[0] : 0;
  }
  const TensorView& sinks = params.sinks;
  if (!sinks.empty()) {
    check_view(sinks, "params.sinks", false);
    check_dtype(sinks, "params.sinks", DType::f32, "");
    check_device(sinks, "params.sinks", q);
    check_shape(sinks, "params.sinks", {heads_q}, "[heads_q], one logit per query head");
    p.sinks = static_cast<const float*>(sinks.data);
  }
  if (params.num_threads < 0) {
    fail("params.num_threads", "0 (the OpenMP default) or a positive count", std::to_string(params.num_threads));
  }
  p.deterministic = params.deterministic;
  p.stream = params.stream;
  p.workspace = params.workspace;
  p.num_threads = params.num_threads;
}

}  // namespace ioattn::detail
