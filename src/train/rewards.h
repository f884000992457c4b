// Verifiable rewards of GRPO (docs/post_training.md): per prompt line, 1 when the completion
// equals its "answer" (or "response"), 1 when it contains a match of its "pattern" (a
// regular expression, ECMAScript syntax), else 0; or, with an external command, whatever
// the command scores.
#pragma once

#include <string>
#include <vector>

#include "data/sft_jsonl.h"

namespace fp8lm {

class Rewards {
 public:
  // `command` (finetune.reward_command; empty: the built-in rewards) is run by /bin/sh with
  // a JSONL file on its standard input, one line per completion: the prompt line's object
  // with "completion" added; it must print one number per line, in order. Without a
  // command every line must have an answer or a pattern (errors name file and line; a
  // pattern that is not a valid regular expression too).
  Rewards(const std::vector<PromptLine>& lines, std::string command);
  // The rewards of completions[i] of prompt line lines[i] (indexes into the lines given).
  std::vector<double> score(const std::vector<size_t>& lines,
                            const std::vector<std::string>& completions) const;

 private:
  const std::vector<PromptLine>& lines_;
  std::string command_;
};

}  // namespace fp8lm
