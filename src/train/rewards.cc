#include "train/rewards.h"

#include <unistd.h>

#include <cstdio>
#include <cmath>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <regex>
#include <sstream>

#include "core/check.h"
#include "core/file.h"

namespace fp8lm {

namespace {

std::regex compile(const PromptLine& p) {
  try {
    return std::regex(p.pattern, std::regex::ECMAScript);
  } catch (const std::regex_error& e) {
    fail(p.where, ": \"pattern\" is not a valid regular expression (", e.what(), ")");
  }
}

}  // namespace

Rewards::Rewards(const std::vector<PromptLine>& lines, std::string command)
    : lines_(lines), command_(std::move(command)) {
  if (!command_.empty()) return;
  for (const PromptLine& p : lines) {
    if (!p.has_reference && !p.has_pattern)
      fail(p.where, ": no \"answer\" or \"pattern\" to reward (or set finetune.reward_command)");
    if (p.has_pattern) compile(p);
  }
}

std::vector<double> Rewards::score(const std::vector<size_t>& lines,
                                   const std::vector<std::string>& completions) const {
  FP8LM_CHECK(lines.size() == completions.size(), "rewards: ", lines.size(), " lines for ",
              completions.size(), " completions");
  std::vector<double> r(lines.size(), 0.0);
  if (command_.empty()) {
    for (size_t i = 0; i < lines.size(); ++i) {
      const PromptLine& p = lines_[lines[i]];
      const bool hit = p.has_reference ? completions[i] == p.reference
                                       : std::regex_search(completions[i], compile(p));
      r[i] = hit ? 1.0 : 0.0;
    }
    return r;
  }
  // The command reads a temporary JSONL file and writes its scores to another.
  const std::string base = (std::filesystem::temp_directory_path() /
                            ("fp8lm_reward_" + std::to_string(::getpid()))).string();
  const std::string in = base + ".jsonl", out = base + ".scores";
  {
    std::string text;
    for (size_t i = 0; i < lines.size(); ++i) {
      nlohmann::json j = nlohmann::json::parse(lines_[lines[i]].line);
      j["completion"] = completions[i];
      text += j.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace) + "\n";
    }
    write_text_atomic(in, text);
  }
  const std::string cmd = "(" + command_ + ") < '" + in + "' > '" + out + "'";
  const int status = std::system(cmd.c_str());
  std::ifstream scores(out);
  std::vector<std::string> got;
  for (std::string line; std::getline(scores, line);)
    if (line.find_first_not_of(" \t\r") != std::string::npos) got.push_back(line);
  std::filesystem::remove(in);
  std::filesystem::remove(out);
  if (status != 0)
    fail("finetune.reward_command \"", command_, "\" failed (status ", status, ")");
  if (got.size() != lines.size())
    fail("finetune.reward_command \"", command_, "\" printed ", got.size(), " scores for ",
         lines.size(), " completions (one number per line)");
  for (size_t i = 0; i < got.size(); ++i) {
    char* end = nullptr;
    r[i] = std::strtod(got[i].c_str(), &end);
    if (end == got[i].c_str() || !std::isfinite(r[i]) ||
        std::string(end).find_first_not_of(" \t\r") != std::string::npos)
      fail("finetune.reward_command \"", command_, "\": score ", i + 1, " \"", got[i],
           "\" is not a finite number");
  }
  return r;
}

}  // namespace fp8lm
