#include "numerics/error_bound.hpp"

#include <algorithm>
#include <cmath>
#include <sstream>
#include <stdexcept>

namespace ioattn::numerics {

double dtype_eps(DType dtype) {
  switch (dtype) {
    case DType::f32: return std::ldexp(1.0, -23);
    case DType::f16: return std::ldexp(1.0, -10);
    case DType::bf16: return std::ldexp(1.0, -7);
    case DType::f8e4m3: return std::ldexp(1.0, -3);
    case DType::i32: break;
  }
  throw std::logic_error("dtype_eps: not a floating dtype");
}

Comparison compare(const std::string& what, const std::vector<double>& actual, const std::vector<double>& ref,
                   const std::vector<double>& naive, double eps, const std::vector<double>* stored) {
  if (actual.size() != ref.size() || naive.size() != ref.size() || (stored && stored->size() != ref.size())) {
    throw std::logic_error("compare(" + what + "): arrays of different lengths");
  }
  Comparison c;
  c.what = what;
  c.count = static_cast<std::int64_t>(ref.size());
  for (std::size_t e = 0; e < ref.size(); ++e) {
    const auto idx = static_cast<std::int64_t>(e);
    const double r = ref[e], a = actual[e];
    if (std::isinf(r) && r < 0) {
      // A row that sees nothing: exactly -inf is the only right answer (naive is -inf there by construction).
      if (!(std::isinf(a) && a < 0)) {
        ++c.inf_mismatch;
        if (c.first_bad < 0) c.first_bad = idx;
      }
      continue;
    }
    if (!std::isfinite(a)) {
      ++c.non_finite;
      if (c.first_bad < 0) c.first_bad = idx;
      continue;
    }
    c.ref_max = std::max(c.ref_max, std::fabs(r));
    c.naive_err = std::max(c.naive_err, std::fabs(naive[e] - r));
    if (stored) c.stored_err = std::max(c.stored_err, std::fabs((*stored)[e] - r));
    const double err = std::fabs(a - r);
    if (err > c.err || c.worst < 0) {
      c.err = std::max(c.err, err);
      c.worst = idx;
      c.worst_actual = a;
      c.worst_ref = r;
    }
  }
  const double ulps = eps <= dtype_eps(DType::f32) ? kAllowanceUlpsFp32 : kAllowanceUlps;
  c.allowance = ulps * eps * std::max(c.ref_max, kMagnitudeFloor);
  c.bound = kNaiveFactor * std::max(c.naive_err, c.stored_err) + c.allowance;
  return c;
}

std::string Comparison::describe() const {
  std::ostringstream os;
  os.precision(4);
  os << what << ": err " << err << " vs bound " << bound << " (= " << kNaiveFactor << " * naive " << naive_err;
  if (stored_err > 0) os << " [stored " << stored_err << "]";
  os << " + allowance " << allowance << ", max|ref| " << ref_max << ")";
  if (worst >= 0) {
    os.precision(9);
    os << "; worst at [" << worst << "] got " << worst_actual << " want " << worst_ref;
  }
  if (non_finite > 0) os << "; " << non_finite << " NaN/inf where a value is expected";
  if (inf_mismatch > 0) os << "; " << inf_mismatch << " not -inf where the row sees nothing";
  if (first_bad >= 0) os << " (first at [" << first_bad << "])";
  os << "; " << count << " elements";
  return os.str();
}

}  // namespace ioattn::numerics
