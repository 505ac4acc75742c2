// ioattn sm90: the switch that turns the varlen isolation of the Hopper kernels off, for tests only.
//
// A tensor map bounds only the packed tensor, so a varlen sequence's partial last tile reads the next sequence's
// rows; the forward (zero_v_rows) and the backward (zero_rows_past) zero those rows in shared memory before their
// products read them. IOATTN_SM90_UNSAFE_VARLEN_OVERHANG=1 (read once) skips that, so that the isolation tests can
// show they fail without it; never for use.
#pragma once

#include <cstdlib>

namespace ioattn::detail::sm90 {

inline bool unsafe_varlen_overhang_from_env() {
  static const bool unsafe = [] {
    const char* env = std::getenv("IOATTN_SM90_UNSAFE_VARLEN_OVERHANG");
    return env != nullptr && env[0] == '1';
  }();
  return unsafe;
}

}  // namespace ioattn::detail::sm90
