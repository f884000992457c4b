// fp8lm: command-line entry point. Every failure is one line on stderr and a non-zero exit.
#include <cstdio>
#include <exception>
#include <filesystem>
#include <string>

#include "cli/commands.h"
#include "core/check.h"
#include "core/parallel.h"
#include "distributed/world.h"
#include "kernels/gemm.h"
#include "kernels/simd.h"

namespace fp8lm::cli {

GlobalOptions& global_options() {
  static GlobalOptions options;
  return options;
}

void apply_global_options() {
  if (global_options().threads > 0) set_num_threads(global_options().threads);
  simd::apply_isa_env();
  kernels::apply_gemm_env();
}

}  // namespace fp8lm::cli

int main(int argc, char** argv) {
  CLI::App app{"fp8lm: train GPT-style language models in FP8 mixed precision", "fp8lm"};
  app.require_subcommand(1);
  app.set_help_all_flag("--help-all", "Show help for every subcommand");
  app.fallthrough();
  app.add_option("--threads", fp8lm::cli::global_options().threads,
                 "Threads for the kernels (default: all cores)")
      ->check(CLI::Range(1, fp8lm::kMaxThreads));

  fp8lm::cli::register_convert(app);
  fp8lm::cli::register_inspect(app);
  fp8lm::cli::register_train(app);
  fp8lm::cli::register_prepare(app);
  fp8lm::cli::register_experiment(app);
  fp8lm::cli::register_report(app);
  CLI::App* bench = app.add_subcommand("bench", "Benchmarks, side by side with references");
  bench->require_subcommand(1);
  fp8lm::cli::register_bench_cast(*bench);
  fp8lm::cli::register_bench_gemm(*bench);
  fp8lm::cli::register_bench_step(*bench);
  fp8lm::cli::register_bench_comm(*bench);

  try {
    app.parse(argc, argv);
  } catch (const CLI::CallForHelp&) {
    std::fputs(app.help().c_str(), stdout);
    return 0;
  } catch (const CLI::CallForAllHelp&) {
    std::fputs(app.help("", CLI::AppFormatMode::All).c_str(), stdout);
    return 0;
  } catch (const CLI::ParseError& e) {
    // Help requested on a subcommand arrives as CallForHelp above; everything else is misuse.
    std::fprintf(stderr, "fp8lm: error: %s (see fp8lm --help)\n", e.what());
    return 2;
  } catch (const std::filesystem::filesystem_error& e) {
    // The environment (a file in the way, a full disk), not a bug: reported as bad input.
    if (fp8lm::dist::size() > 1) fp8lm::dist::abort(1, std::string("error: ") + e.what());
    std::fprintf(stderr, "fp8lm: error: %s\n", e.what());
    return 1;
  } catch (const fp8lm::Error& e) {
    // With other ranks, end the whole job: they would wait in a collective forever.
    if (fp8lm::dist::size() > 1) fp8lm::dist::abort(1, std::string("error: ") + e.what());
    std::fprintf(stderr, "fp8lm: error: %s\n", e.what());
    return 1;
  } catch (const std::exception& e) {
    if (fp8lm::dist::size() > 1) fp8lm::dist::abort(1, std::string("internal error: ") + e.what());
    std::fprintf(stderr, "fp8lm: internal error: %s\n", e.what());
    return 1;
  }
  // Output that could not be written (stdout on a full disk) is a failure, not success.
  if (std::fflush(stdout) != 0 || std::ferror(stdout)) {
    std::fprintf(stderr, "fp8lm: error: cannot write to standard output\n");
    return 1;
  }
  return 0;
}
