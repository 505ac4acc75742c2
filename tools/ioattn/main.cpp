// `ioattn`: the command line. A table of subcommands; each parses its own flags and prints its own --help.
#include <cstdio>
#include <exception>
#include <new>
#include <span>
#include <string>
#include <string_view>

#include "args.hpp"
#include "commands.hpp"
#include "ioattn/attention.hpp"
#include "ioattn/error.hpp"

namespace ioattn::cli {
namespace {

struct Subcommand {
  const char* name;
  const char* summary;
  int (*run)(int argc, char** argv);  // gets the arguments after the subcommand's name
  std::string (*help)();
};

// The one list of subcommands. `ioattn check` (the numerics audit: error against fp64 by precision, tile size and
// length) plugs in here as {"check", "...", run_check, check_help}, declared in commands.hpp.
constexpr Subcommand kSubcommands[] = {
    {"demo", "run the embedded problem forward and backward: times, TFLOP/s, memory, error", run_demo, demo_help},
    {"bench", "time one problem given by flags; a table or JSON lines", run_bench, bench_help},
    {"decode", "time a decoding step over a paged KV cache: K+V read bandwidth", run_decode, decode_help},
    {"check", "numerics audit: error against fp64 vs a naive same-precision program", run_check, check_help},
};

std::string overview() {
  std::string text =
      "usage: ioattn <command> [flags]\n"
      "       ioattn <command> --help\n"
      "       ioattn --version\n"
      "\n"
      "IO-aware exact attention (FlashAttention-style) on the GPU, and on the CPU with the same API.\n"
      "\n"
      "Commands:\n";
  for (const Subcommand& c : kSubcommands) {
    std::string name = std::string("  ") + c.name;
    text += name + std::string(name.size() < 10 ? 10 - name.size() : 1, ' ') + c.summary + "\n";
  }
  text +=
      "\n"
      "Flags:\n"
      "  --help    this text\n"
      "  --version the library version, its backends and the CUDA devices it sees\n"
      "\n"
      "Example:\n"
      "  ioattn demo             # the main job: GPU when present, else CPU\n"
      "  ioattn bench --help\n";
  return text;
}

std::string version_text() {
  return std::string("ioattn ") + ioattn::version() + "\nbackends: " + ioattn::backends() +
         "\ncuda devices: " + std::to_string(ioattn::cuda_device_count()) + "\n";
}

const Subcommand* find_subcommand(std::string_view name) {
  for (const Subcommand& c : kSubcommands) {
    if (name == c.name) return &c;
  }
  return nullptr;
}

int dispatch(int argc, char** argv) {
  if (argc < 2) {
    std::fputs(overview().c_str(), stderr);
    return kExitUsage;
  }
  const std::string_view first = argv[1];
  if (first == "--help" || first == "-h" || first == "help") {
    if (first == "help" && argc > 2) {
      if (const Subcommand* c = find_subcommand(argv[2])) {
        std::fputs(c->help().c_str(), stdout);
        return kExitOk;
      }
    }
    std::fputs(overview().c_str(), stdout);
    return kExitOk;
  }
  if (first == "--version") {
    std::fputs(version_text().c_str(), stdout);
    return kExitOk;
  }
  const Subcommand* command = find_subcommand(first);
  if (command == nullptr) {
    std::fprintf(stderr, "ioattn: unknown command '%s' (see 'ioattn --help')\n", argv[1]);
    return kExitUsage;
  }
  const std::string prefix = std::string("ioattn ") + command->name;
  try {
    return command->run(argc - 2, argv + 2);
  } catch (const UsageError& e) {
    std::fprintf(stderr, "%s: %s\n", prefix.c_str(), e.what());
    return kExitUsage;
  } catch (const ioattn::Error& e) {
    std::fflush(stdout);
    std::fprintf(stderr, "%s: error: %s\n", prefix.c_str(), e.what());
    return kExitError;
  } catch (const std::bad_alloc&) {
    std::fflush(stdout);
    std::fprintf(stderr, "%s: error: out of host memory (try a smaller problem)\n", prefix.c_str());
    return kExitError;
  } catch (const std::exception& e) {
    std::fflush(stdout);
    std::fprintf(stderr, "%s: error: %s\n", prefix.c_str(), e.what());
    return kExitError;
  }
}

}  // namespace
}  // namespace ioattn::cli

int main(int argc, char** argv) { return ioattn::cli::dispatch(argc, argv); }
