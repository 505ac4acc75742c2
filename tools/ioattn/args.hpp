// ioattn CLI: declarative flags. Each subcommand lists its flags once; parsing, --help text and error messages
// all come from that list, so the help can never drift from what is accepted.
#pragma once

#include <cstdint>
#include <map>
#include <span>
#include <stdexcept>
#include <string>
#include <string_view>

namespace ioattn::cli {

// A mistake on the command line (unknown flag, bad value). main() prints it and exits with status 2.
class UsageError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

enum class FlagKind { boolean, integer, number, text };

struct FlagSpec {
  const char* name;          // without the leading "--"
  FlagKind kind;
  const char* value_hint;    // e.g. "N", "L,R", "cpu|cuda"; ignored for boolean flags
  const char* help;
  std::string default_text;  // shown in --help; empty when there is nothing to say
};

class ParsedFlags {
 public:
  bool help_requested = false;

  bool has(std::string_view name) const;
  // Values were checked for syntax by parse_flags(); these only convert and range-check, naming the flag.
  std::int64_t integer(std::string_view name, std::int64_t fallback, std::int64_t min_value) const;
  double number(std::string_view name, double fallback) const;
  std::string text(std::string_view name, std::string_view fallback) const;

  void set(std::string name, std::string value) { values_[std::move(name)] = std::move(value); }

 private:
  std::map<std::string, std::string, std::less<>> values_;
};

// Parses "--name value", "--name=value" and boolean "--name". `command` ("ioattn bench") goes into messages.
// Throws UsageError for unknown flags, missing or malformed values, and flags given twice.
ParsedFlags parse_flags(std::string_view command, std::span<const FlagSpec> specs, int argc, char** argv);

// The "Flags:" block of a --help text.
std::string format_flags_help(std::span<const FlagSpec> specs);

// Strict conversions: the whole text must be the number, else UsageError naming `flag`.
std::int64_t parse_integer(std::string_view flag, std::string_view text);
double parse_number(std::string_view flag, std::string_view text);

}  // namespace ioattn::cli
