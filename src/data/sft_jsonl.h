// Fine-tuning data as JSONL, one example per line, rendered into tokens and a loss mask
// (docs/post_training.md has the template):
//   {"prompt": "...", "response": "..."}
//     <|endoftext|> prompt response <|endoftext|>; the loss on the response and the final
//     <|endoftext|> (the model learns to stop).
//   {"messages": [{"role": "system" | "user" | "assistant", "content": "..."}, ...]}
//     <|endoftext|> then each message as "Role: content", messages separated by a blank line
//     ("\n\n"), each assistant content followed by <|endoftext|>; the loss on the assistant
//     contents and their <|endoftext|>.
#pragma once

#include <cstddef>
#include <string>
#include <vector>

#include "data/example_file.h"
#include "data/tokenizer.h"

namespace fp8lm {

// Every example of the JSONL file `path`, at most `max_tokens` tokens each. Errors name the
// file and line: not JSON, missing or non-string keys, an empty response or assistant
// message, an unknown role, no assistant message, an example longer than max_tokens.
std::vector<Example> read_sft_jsonl(const std::string& path, const Tokenizer& tok,
                                    size_t max_tokens);

// DPO pairs {"prompt", "chosen", "rejected"}: two examples per line, the prompt with the
// chosen response then with the rejected one (each as a {"prompt", "response"} example).
// Errors name the file and line: missing keys, an empty or identical chosen and rejected
// response, an example longer than max_tokens.
std::vector<Example> read_pairs_jsonl(const std::string& path, const Tokenizer& tok,
                                      size_t max_tokens);
// Whether the first line of the JSONL file `path` is a DPO pair (has "chosen").
bool is_pairs_jsonl(const std::string& path);

// A prompt to complete and, when the line has one, the completion it should get.
struct PromptLine {
  std::string prompt;
  std::string reference;  // "response" or "answer"; empty when absent
  bool has_reference = false;
  std::string pattern;    // "pattern": a regular expression the completion should contain
  bool has_pattern = false;
  std::string where;      // "file:line"
  std::string line;       // the line's JSON object (for an external reward command)
};

// The prompts of a JSONL file ({"prompt": ...} with an optional "response" or "answer", an
// optional "pattern"; other keys are kept in `line`). Errors name the file and line.
std::vector<PromptLine> read_prompts_jsonl(const std::string& path);

// The tokens a prompt is completed from: as in training's template, <|endoftext|> then the
// prompt.
std::vector<int32_t> prompt_tokens(const Tokenizer& tok, const std::string& prompt);

}  // namespace fp8lm
