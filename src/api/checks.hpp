// ioattn internal: checks of public arguments that the dense (validate.cpp) and paged (paged_validate.cpp) entry
// points share. Each throws ioattn::Error(ErrorCode::invalid_argument) with the message
//   "<argument>: expected <what>, got <what came>"
// and none writes to any tensor.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "api/problem.hpp"
#include "ioattn/attention.hpp"

namespace ioattn::detail {

[[noreturn]] void fail(const std::string& argument, const std::string& expected, const std::string& got);
std::string shape_text(const std::vector<std::int64_t>& shape);
std::string number_text(double x);
std::int64_t extent(const TensorView& t, int dim);
std::int64_t stride_of(const TensorView& t, int dim);

// What every view must satisfy whatever its role (rank, sizes, strides, contiguous last dim, int64 offsets, data);
// outputs also may not repeat an element.
void check_view(const TensorView& t, const std::string& name, bool is_output);
void check_float_dtype(const TensorView& t, const std::string& name);
void check_dtype(const TensorView& t, const std::string& name, DType want, const std::string& why);
void check_device(const TensorView& t, const std::string& name, const TensorView& q);  // on q's device
void check_shape(const TensorView& t, const std::string& name, const std::vector<std::int64_t>& want,
                 const std::string& meaning);
// An operand of the attention layouts: a valid view with q's dtype, on q's device.
void check_operand(const TensorView& t, const std::string& name, const TensorView& q, bool is_output);

// Cumulative offsets int32 [batch + 1] on q's device (contents checked on the CPU); returns the longest length, or
// max_seqlen when given (or `rows` for device-resident offsets without max_seqlen).
std::int64_t check_offsets(const TensorView& cu, const std::string& name, const TensorView& q, std::int64_t rows,
                           const std::string& rows_name, std::int64_t max_seqlen, const std::string& max_name);

// AttentionParams: fills scale, softcap, mask, ALiBi (needs p.batch set), sinks, flags, stream, workspace, threads.
void apply_params(const AttentionParams& params, const TensorView& q, std::int64_t heads_q, std::int64_t dim_qk,
                  Problem& p);

}  // namespace ioattn::detail
