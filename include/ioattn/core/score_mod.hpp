// ioattn core: the transforms between the raw product q.k and the masked logit, and their derivatives.
//   s = scale * q.k;  s = softcap * tanh(s / softcap) (softcap > 0);  s -= alibi_slope * |j - diag(i)|
#pragma once

#include <cmath>
#include <cstdint>

#include "ioattn/core/config.hpp"

namespace ioattn::core {

// softcap * tanh(s / softcap); identity when softcap <= 0.
template <class T>
IOATTN_HD T apply_softcap(T s, T softcap) {
  return softcap > T(0) ? softcap * std::tanh(s / softcap) : s;
}

// d(capped)/d(s) expressed through the capped value c = softcap * tanh(s / softcap): 1 - (c / softcap)^2.
// The backward only has the capped score at hand, and this form needs no second tanh.
template <class T>
IOATTN_HD T softcap_grad_from_capped(T capped, T softcap) {
  if (softcap <= T(0)) return T(1);
  const T t = capped / softcap;
  return T(1) - t * t;
}

// The ALiBi bias of key j for the query whose diagonal key is diag: -slope * |j - diag|.
template <class T>
IOATTN_HD T alibi_bias(T slope, std::int64_t j, std::int64_t diag) {
  const std::int64_t dist = j > diag ? j - diag : diag - j;
  return -slope * static_cast<T>(dist);
}

}  // namespace ioattn::core
