#include "args.hpp"

#include <charconv>
#include <cmath>
#include <cstdlib>
#include <sstream>

namespace ioattn::cli {
namespace {

const FlagSpec* find_spec(std::span<const FlagSpec> specs, std::string_view name) {
  for (const FlagSpec& spec : specs) {
    if (name == spec.name) return &spec;
  }
  return nullptr;
}

const char* kind_expectation(FlagKind kind) {
  switch (kind) {
    case FlagKind::integer: return "an integer";
    case FlagKind::number: return "a number";
    default: return "a value";
  }
}

}  // namespace

std::int64_t parse_integer(std::string_view flag, std::string_view text) {
  std::int64_t value = 0;
  const char* first = text.data();
  const char* last = text.data() + text.size();
  const auto [end, error] = std::from_chars(first, last, value);
  if (text.empty() || error != std::errc() || end != last) {
    throw UsageError("--" + std::string(flag) + " expects an integer, got '" + std::string(text) + "'");
  }
  return value;
}

double parse_number(std::string_view flag, std::string_view text) {
  // strtod rather than from_chars<double>: the latter is missing from older standard libraries.
  const std::string copy(text);
  char* end = nullptr;
  const double value = copy.empty() ? 0.0 : std::strtod(copy.c_str(), &end);
  if (copy.empty() || end != copy.c_str() + copy.size() || !std::isfinite(value)) {
    throw UsageError("--" + std::string(flag) + " expects a finite number, got '" + copy + "'");
  }
  return value;
}

bool ParsedFlags::has(std::string_view name) const { return values_.find(name) != values_.end(); }

std::int64_t ParsedFlags::integer(std::string_view name, std::int64_t fallback, std::int64_t min_value) const {
  const auto it = values_.find(name);
  if (it == values_.end()) return fallback;
  const std::int64_t value = parse_integer(name, it->second);
  if (value < min_value) {
    throw UsageError("--" + std::string(name) + " expects an integer >= " + std::to_string(min_value) + ", got " +
                     std::to_string(value));
  }
  return value;
}

double ParsedFlags::number(std::string_view name, double fallback) const {
  const auto it = values_.find(name);
  return it == values_.end() ? fallback : parse_number(name, it->second);
}

std::string ParsedFlags::text(std::string_view name, std::string_view fallback) const {
  const auto it = values_.find(name);
  return it == values_.end() ? std::string(fallback) : it->second;
}

ParsedFlags parse_flags(std::string_view command, std::span<const FlagSpec> specs, int argc, char** argv) {
  ParsedFlags parsed;
  const std::string see_help = " (see '" + std::string(command) + " --help')";
  for (int i = 0; i < argc; ++i) {
    const std::string_view arg = argv[i];
    if (arg == "--help" || arg == "-h") {
      parsed.help_requested = true;
      continue;
    }
    if (arg.size() < 3 || arg.substr(0, 2) != "--") {
      throw UsageError("unexpected argument '" + std::string(arg) + "'" + see_help);
    }
    std::string_view name = arg.substr(2);
    std::string value;
    bool inline_value = false;
    if (const auto eq = name.find('='); eq != std::string_view::npos) {
      value = std::string(name.substr(eq + 1));
      name = name.substr(0, eq);
      inline_value = true;
    }
    const FlagSpec* spec = find_spec(specs, name);
    if (spec == nullptr) {
      throw UsageError("unknown flag '--" + std::string(name) + "'" + see_help);
    }
    if (parsed.has(name)) {
      throw UsageError("--" + std::string(name) + " given twice");
    }
    if (spec->kind == FlagKind::boolean) {
      if (inline_value) {
        throw UsageError("--" + std::string(name) + " takes no value, got '" + value + "'");
      }
      parsed.set(std::string(name), "1");
      continue;
    }
    if (!inline_value) {
      // A following "--flag" is never taken as a value; negative numbers ("-1,0") still are.
      if (i + 1 >= argc || std::string_view(argv[i + 1]).substr(0, 2) == "--") {
        throw UsageError("--" + std::string(name) + " expects " + kind_expectation(spec->kind) + " (" +
                         spec->value_hint + ") after it");
      }
      value = argv[++i];
    }
    if (spec->kind == FlagKind::integer) parse_integer(name, value);
    if (spec->kind == FlagKind::number) parse_number(name, value);
    parsed.set(std::string(name), value);
  }
  return parsed;
}

std::string format_flags_help(std::span<const FlagSpec> specs) {
  std::ostringstream out;
  for (const FlagSpec& spec : specs) {
    std::string left = std::string("  --") + spec.name;
    if (spec.kind != FlagKind::boolean) left += std::string(" ") + spec.value_hint;
    out << left;
    const std::size_t column = 26;
    if (left.size() + 2 > column) {
      out << '\n' << std::string(column, ' ');
    } else {
      out << std::string(column - left.size(), ' ');
    }
    out << spec.help;
    if (!spec.default_text.empty()) out << " [default: " << spec.default_text << "]";
    out << '\n';
  }
  return out.str();
}

}  // namespace ioattn::cli
