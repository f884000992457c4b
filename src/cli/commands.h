// Subcommands of the fp8lm tool. Each register_* adds its CLI11 subcommand and the
// callback that runs it; errors are thrown as fp8lm::Error and printed by main.
#pragma once

#include <CLI/CLI.hpp>

namespace fp8lm::cli {

// Options shared by every subcommand (given before or after the subcommand name).
struct GlobalOptions {
  int threads = 0;  // 0: OpenMP's default
};
GlobalOptions& global_options();
// Applies the global options; every subcommand calls this first.
void apply_global_options();

void register_convert(CLI::App& app);
void register_inspect(CLI::App& app);
void register_prepare(CLI::App& app);
void register_train(CLI::App& app);  // train, eval, sample
void register_experiment(CLI::App& app);  // experiment zero-placement, ...
void register_grad_experiments(CLI::App& experiment);  // grad-scaling, formats
void register_decoupling_experiment(CLI::App& experiment);  // precision-decoupling
void register_report(CLI::App& app);  // report RUN_DIR...
void register_bench_cast(CLI::App& bench);
void register_bench_gemm(CLI::App& bench);
void register_bench_step(CLI::App& bench);
void register_bench_comm(CLI::App& bench);

}  // namespace fp8lm::cli
