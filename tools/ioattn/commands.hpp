// ioattn CLI: the subcommands. main.cpp lists them in its table; each lives in its own file.
#pragma once

#include <string>

namespace ioattn::cli {

// Exit statuses shared by every subcommand.
inline constexpr int kExitOk = 0;
inline constexpr int kExitError = 1;        // the API or the runtime refused (ioattn::Error), or out of memory
inline constexpr int kExitUsage = 2;        // a bad flag or flag value
inline constexpr int kExitCheckFailed = 3;  // ran, but the outputs failed the check against the reference

int run_demo(int argc, char** argv);  // argv holds the arguments after "demo"
std::string demo_help();

int run_bench(int argc, char** argv);
std::string bench_help();

int run_decode(int argc, char** argv);  // a decoding step over a paged KV cache: K+V read bandwidth
std::string decode_help();

int run_check(int argc, char** argv);  // the numerics audit (audit.hpp)
std::string check_help();

}  // namespace ioattn::cli
