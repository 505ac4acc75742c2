// ioattn numerics: when is a backend's result right? The bound the test suite and `ioattn check` both judge by.
//
// THE BOUND (after FlashAttention's test_flash_attn.py). For every output X (out, lse, dq, dk, dv, dsinks):
//   err(X)   = max over elements |X_backend - X_ref|           X_ref: the fp64 reference on the same inputs
//   naive(X) = max over elements |X_naive   - X_ref|           X_naive: the same-precision naive program
//                                                              (src/cpu/naive.hpp)
//   stored(X) = max over elements |X_stored - X_ref|          gradients only; X_stored: the FlashAttention
//                                                              formulation of the backward in fp32 arithmetic, from
//                                                              out and lse as stored (dtype, fp32): naive::
//                                                              backward_from_stored in src/cpu/naive.hpp
//   pass  iff  err(X) <= 2 * max(naive(X), stored(X)) + allowance(X),
//   allowance(X) = ulps * eps * max(max |X_ref|, kMagnitudeFloor),  ulps = 2 (fp16, bf16) or 16 (fp32)
// eps is the machine epsilon of the inputs' dtype (2^-23 fp32, 2^-10 fp16, 2^-7 bf16), except for lse, which is
// fp32 math on exactly representable inputs whatever their dtype, so fp32's. (dsinks is stored in fp32 too, but it
// sums D_i = dout_i . out_i over the dtype-rounded out, so its accuracy is the dtype's.) The factor 2 lets a backend round differently from the naive program (other
// summation orders, fp32 P in place of dtype P); the allowance covers the last rounding of the result to its
// dtype and outputs whose naive error happens to be near zero. stored(X) is the error the API's formulation itself
// carries: a backward must start from the stored out and lse, and D_i = dout_i . out_i cancels against dP_ij where a
// row's softmax is nearly one-hot (a sink or one dominant key), amplifying the fp32 rounding of both dot products.
// It matters in fp32, where the PyTorch-style program, which takes D from its own P, shows no such error: measured
// on fp32 rows with a sink and one key, the tiled backend's dq came out at up to 20x that program's error and at
// the level of stored(X), whose dot products are plain sequential fp32 sums. In fp16/bf16 naive(X) dominates.
// Why 16 ulps at fp32's eps: an fp32 gradient of a row with one visible key and a sink is a handful of products
// whose naive error can be near zero by chance, while a backend that starts from its own stored out and lse (the
// cancellation of D_i = dout_i . out_i against dP above) lands several ulps off. Measured 2026-11-21 on the case
// table's fp32 sink cases (tiled backward, fresh seeds): with 2 ulps 18 of 301 draws of the 239x1 causal case failed
// (up to 3.0x the bound), with 8 ulps 2 of 301, with 16 ulps 1 of 401 draws of every fp32 sink case (1.02x the
// bound), none an error of the method. 16 ulps is 2e-6 relative: far below what a wrong index, mask or missing term
// produces (tests/attention/test_compare.cpp shows the bound tripping).
// The floor (FlashAttention's atol is the rounding error
// of ref + 0.3) matters only where the reference is (nearly) all zero: dq and dk of rows with a single visible key
// are exactly 0 in exact arithmetic and in the naive program, but a backend computing D_i = dout_i . out_i from the
// rounded out legitimately leaves a residue of rounding size there.
// Exact requirements on top: where X_ref = -inf (lse of a row that sees nothing) X_backend must be -inf, and no
// element expected to hold a value may be NaN or infinite (outputs are poisoned with NaN before each run).
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "ioattn/tensor.hpp"

namespace ioattn::numerics {

inline constexpr double kNaiveFactor = 2.0;
inline constexpr double kAllowanceUlps = 2.0;      // fp16 and bf16 results
inline constexpr double kAllowanceUlpsFp32 = 16.0;  // results judged at fp32's eps (fp32 inputs, and every lse)
inline constexpr double kMagnitudeFloor = 0.3;

// Machine epsilon (the gap between 1 and the next value) of a floating dtype.
double dtype_eps(DType dtype);

struct Comparison {
  std::string what;          // "out", "dq", ...
  std::int64_t count = 0;    // elements compared
  double err = 0;            // max |actual - ref|
  double naive_err = 0;      // max |naive - ref|
  double stored_err = 0;     // max |stored - ref| (0 when no stored yardstick is given)
  double ref_max = 0;        // max |ref| over finite elements
  double allowance = 0;
  double bound = 0;          // kNaiveFactor * max(naive_err, stored_err) + allowance
  std::int64_t worst = -1;   // canonical index of the largest error
  double worst_actual = 0, worst_ref = 0;
  std::int64_t non_finite = 0;      // NaN or inf where the reference is finite
  std::int64_t inf_mismatch = 0;    // reference -inf but actual not -inf
  std::int64_t first_bad = -1;      // index of the first non-finite or mismatching element

  bool ok() const { return non_finite == 0 && inf_mismatch == 0 && err <= bound; }
  std::string describe() const;  // one line with every number above, for the failure message
};

// Compares canonical arrays of equal length (see src/cpu/reference.hpp for the layout). `eps`: see above.
// `stored`: the second yardstick for gradients, or null.
Comparison compare(const std::string& what, const std::vector<double>& actual, const std::vector<double>& ref,
                   const std::vector<double>& naive, double eps, const std::vector<double>* stored = nullptr);

}  // namespace ioattn::numerics
