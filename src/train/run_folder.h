// A run folder (train.out_dir) as one writer owns it: an exclusive lock for the life of
// the run, the rule for what a fresh run may start in, and metrics.jsonl written so that
// every failure (a full disk) surfaces as an Error naming the file.
#pragma once

#include <cstdint>
#include <nlohmann/json.hpp>
#include <string>

namespace fp8lm {

class RunFolder {
 public:
  // Creates `dir` if needed and locks it (dir/.lock, released when the process ends, even
  // by kill -9); a folder another process holds is an Error naming its pid. A fresh run
  // (`resume_checkpoint` empty) and a run resumed from another folder's checkpoint both
  // need a folder that holds no run (no metrics.jsonl, summary.json, config.toml or
  // checkpoints/), unless `overwrite`: then begin() deletes those.
  RunFolder(const std::string& dir, const std::string& resume_checkpoint, bool overwrite);
  // Called once every input has been checked: deletes the replaced run's files (with
  // `overwrite`) and the temporary checkpoint folders of killed runs.
  void begin();
  ~RunFolder();
  RunFolder(const RunFolder&) = delete;
  RunFolder& operator=(const RunFolder&) = delete;

  const std::string& dir() const { return dir_; }
  // Keeps the metrics and telemetry lines of steps up to `step` (a resumed run redoes the
  // later ones).
  void truncate_metrics(int64_t step);
  // Appends one line to metrics.jsonl (telemetry.jsonl); a failed write is an Error.
  void append_metrics(const nlohmann::json& line) { append(kMetrics, line); }
  void append_telemetry(const nlohmann::json& line) { append(kTelemetry, line); }

 private:
  enum Log { kMetrics, kTelemetry, kNumLogs };
  void append(Log log, const nlohmann::json& line);
  // With the lock held: the pid into the lock file, the one-run rule, stale temporaries.
  void claim(const std::string& resume_checkpoint, bool overwrite);
  std::string dir_;
  bool replace_ = false;
  int lock_fd_ = -1;
  int log_fd_[kNumLogs] = {-1, -1};
};

}  // namespace fp8lm
