#include "train/completion.h"

#include <algorithm>
#include <cmath>
#include <nlohmann/json.hpp>
#include <random>

#include "core/check.h"
#include "core/file.h"
#include "data/sft_jsonl.h"
#include "model/decoder.h"
#include "train/checkpoint.h"
#include "train/inference.h"
#include "train/model_values.h"

namespace fp8lm {

namespace {

// The next token of a row of V logits: the argmax, or a draw from softmax(logits / temperature).
int32_t pick(const float* row, size_t V, const CompletionOptions& o, std::mt19937_64& rng) {
  if (o.temperature <= 0) return static_cast<int32_t>(std::max_element(row, row + V) - row);
  const float m = *std::max_element(row, row + V);
  std::vector<double> p(V);
  for (size_t v = 0; v < V; ++v) p[v] = std::exp((row[v] - m) / o.temperature);
  return static_cast<int32_t>(std::discrete_distribution<size_t>(p.begin(), p.end())(rng));
}

// Prompts [first, first + rows): their streams, checked non-empty.
std::vector<std::mt19937_64> streams(const std::vector<std::vector<int32_t>>& prompts, size_t first,
                                     size_t rows, const CompletionOptions& o) {
  std::vector<std::mt19937_64> rng;
  for (size_t r = 0; r < rows; ++r) {
    FP8LM_CHECK(!prompts[first + r].empty(), "prompt ", first + r, " has no tokens");
    rng.emplace_back(o.seed * 0x9E3779B97F4A7C15ull + first + r);
  }
  return rng;
}

}  // namespace

std::vector<std::vector<int32_t>> complete(Gpt& model, const std::vector<std::vector<int32_t>>& prompts,
                                           int32_t stop, const CompletionOptions& o) {
  const size_t B = model.batch(), T = model.seq();
  const size_t V = static_cast<size_t>(model.config().vocab_size);
  std::vector<std::vector<int32_t>> out(prompts.size());
  std::vector<int32_t> window(B * T);
  std::vector<float> logits(B * V);
  std::vector<size_t> last(B);  // each row's last position in the window
  for (size_t first = 0; first < prompts.size(); first += B) {
    const size_t rows = std::min(B, prompts.size() - first);
    std::vector<std::vector<int32_t>> ctx(prompts.begin() + static_cast<long>(first),
                                          prompts.begin() + static_cast<long>(first + rows));
    std::vector<std::mt19937_64> rng = streams(prompts, first, rows, o);
    std::vector<bool> done(rows, false);
    for (int n = 0; n < o.max_new_tokens; ++n) {
      // Each row: its last T tokens; the positions after them are padding a causal model
      // never lets the earlier ones see. Rows past the prompts repeat the first.
      for (size_t r = 0; r < B; ++r) {
        const std::vector<int32_t>& c = ctx[std::min(r, rows - 1)];
        const size_t len = std::min(c.size(), T);
        std::fill(window.begin() + static_cast<long>(r * T), window.begin() + static_cast<long>((r + 1) * T), stop);
        std::copy(c.end() - static_cast<long>(len), c.end(), window.begin() + static_cast<long>(r * T));
      }
      for (size_t r = 0; r < rows; ++r) last[r] = r * T + std::min(ctx[r].size(), T) - 1;
      model.logits_at(window.data(), last.data(), rows, logits.data());
      bool any = false;
      for (size_t r = 0; r < rows; ++r) {
        if (done[r]) continue;
        const int32_t next = pick(logits.data() + r * V, V, o, rng[r]);
        if (next == stop) {
          done[r] = true;
          continue;
        }
        ctx[r].push_back(next);
        out[first + r].push_back(next);
        any = true;
      }
      if (!any) break;
    }
  }
  return out;
}

std::vector<std::vector<int32_t>> complete(const GptParams& params,
                                           const std::vector<std::vector<int32_t>>& prompts,
                                           int32_t stop, const CompletionOptions& o, size_t batch) {
  const size_t B = std::max<size_t>(1, std::min(batch, prompts.size()));
  const size_t T = static_cast<size_t>(params.config().seq_len);
  const size_t V = static_cast<size_t>(params.config().vocab_size);
  // Positions to cache: the longest window and its new tokens (a row can slide only when
  // that reaches T). All but the last new token are fed back.
  size_t longest = 0;
  for (const auto& p : prompts) longest = std::max(longest, std::min(p.size(), T));
  GptDecoder dec(params, B,
                 std::min(T, longest + static_cast<size_t>(std::max(o.max_new_tokens, 1))));
  std::vector<std::vector<int32_t>> out(prompts.size());
  std::vector<float> logits(B * V);
  // Row r's last T tokens from position 0: the prompt, or a context that outgrew the window.
  auto window = [T](const std::vector<int32_t>& c) {
    return std::vector<int32_t>(c.end() - static_cast<long>(std::min(c.size(), T)), c.end());
  };
  for (size_t first = 0; first < prompts.size(); first += B) {
    const size_t rows = std::min(B, prompts.size() - first);
    std::vector<std::vector<int32_t>> ctx(prompts.begin() + static_cast<long>(first),
                                          prompts.begin() + static_cast<long>(first + rows));
    std::vector<std::mt19937_64> rng = streams(prompts, first, rows, o);
    std::vector<std::vector<int32_t>> feed(rows);
    for (size_t r = 0; r < rows; ++r) {
      dec.reset(r);
      feed[r] = window(ctx[r]);
    }
    for (int n = 0; n < o.max_new_tokens; ++n) {
      dec.append(feed, logits.data());
      bool any = false;
      for (size_t r = 0; r < rows; ++r) {
        if (feed[r].empty()) continue;  // done
        const int32_t next = pick(logits.data() + r * V, V, o, rng[r]);
        feed[r].clear();
        if (next == stop) continue;
        ctx[r].push_back(next);
        out[first + r].push_back(next);
        any = true;
        if (dec.length(r) < dec.capacity()) {
          feed[r] = {next};
        } else {  // the window slides: every position changes, so the row starts over
          dec.reset(r);
          feed[r] = window(ctx[r]);
        }
      }
      if (!any) break;
    }
  }
  return out;
}

TaskScore complete_checkpoint(const std::string& checkpoint, const std::string& prompts,
                              const std::string& out, const CompletionOptions& o, int batch) {
  const std::string dir = resolve_checkpoint(checkpoint);
  const TrainerState t = read_trainer_state(dir);
  const auto tok = checkpoint_tokenizer(dir, t);
  const std::vector<PromptLine> lines = read_prompts_jsonl(prompts);
  std::vector<std::vector<int32_t>> ids;
  for (const PromptLine& p : lines) ids.push_back(prompt_tokens(*tok, p.prompt));
  const GptParams params = load_model_values(dir, t);
  const std::vector<std::vector<int32_t>> done =
      complete(params, ids, tok->eot(), o, static_cast<size_t>(std::max(1, batch)));
  TaskScore score;
  std::string text;
  for (size_t i = 0; i < lines.size(); ++i) {
    const std::string completion = tok->decode(done[i]);
    nlohmann::json j{{"prompt", lines[i].prompt}, {"completion", completion}};
    ++score.prompts;
    if (lines[i].has_reference) {
      const bool match = completion == lines[i].reference;
      j["reference"] = lines[i].reference;
      j["match"] = match;
      ++score.with_reference;
      score.exact += match;
    }
    text += j.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace) + "\n";
  }
  if (!out.empty()) write_text_atomic(out, text);
  return score;
}

}  // namespace fp8lm
