// ioattn CLI: number formatting shared by the readable and JSON outputs.
#pragma once

#include <cmath>
#include <cstdio>
#include <string>

namespace ioattn::cli {

// printf-style formatting of one number, e.g. fmt("%.3f", x).
inline std::string fmt(const char* format, double value) {
  char text[64];
  std::snprintf(text, sizeof text, format, value);
  return text;
}

// A JSON number; non-finite values have no JSON spelling and become null.
inline std::string json_number(double value) { return std::isfinite(value) ? fmt("%.6g", value) : "null"; }

}  // namespace ioattn::cli
