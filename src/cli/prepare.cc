// fp8lm prepare: tokenizes text files into train.bin / val.bin (llm.c's token-file format),
// or JSONL fine-tuning examples into example files that keep the loss mask (data/sft_jsonl.h).
// Each input is one document, preceded by <|endoftext|>; inputs are read in chunks cut at
// safe points (a single space between two visible ASCII characters, where GPT-2's
// pre-tokenizer always starts a new piece), so nothing is held whole in memory. The
// validation split is the last `--val-fraction` of the token stream.
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <memory>
#include <string>
#include <vector>

#include "cli/commands.h"
#include "core/check.h"
#include "data/example_file.h"
#include "data/sft_jsonl.h"
#include "data/token_file.h"
#include "data/tokenizer.h"
#include "train/config.h"

namespace fp8lm::cli {
namespace {

struct PrepareOptions {
  std::string tokenizer = "gpt2";
  std::string tokenizer_dir = default_tokenizer_dir();
  std::string out;
  double val_fraction = 0.1;
  std::string val;          // JSONL: the validation examples (else the last val_fraction)
  size_t max_tokens = 1025;  // JSONL: tokens per example (model.seq_len + 1)
  std::vector<std::string> inputs;
};

void prepare_examples(const PrepareOptions& o, const Tokenizer& tok) {
  // DPO pairs (every input and --val alike) or supervised examples.
  const bool pairs = is_pairs_jsonl(o.inputs.front());
  auto read = [&](const std::string& path) {
    if (is_pairs_jsonl(path) != pairs)
      fail(path, pairs ? ": not DPO pairs (\"chosen\", \"rejected\") while " : ": DPO pairs while ",
           o.inputs.front(), pairs ? " is" : " is not", ": prepare them separately");
    return pairs ? read_pairs_jsonl(path, tok, o.max_tokens) : read_sft_jsonl(path, tok, o.max_tokens);
  };
  std::vector<Example> train, val;
  for (const std::string& in : o.inputs) {
    std::vector<Example> e = read(in);
    train.insert(train.end(), std::make_move_iterator(e.begin()), std::make_move_iterator(e.end()));
  }
  if (!o.val.empty()) {
    val = read(o.val);
  } else {
    size_t n = static_cast<size_t>(o.val_fraction * static_cast<double>(train.size()));
    if (pairs) n -= n % 2;
    val.assign(std::make_move_iterator(train.end() - static_cast<long>(n)),
               std::make_move_iterator(train.end()));
    train.resize(train.size() - n);
  }
  if (train.empty()) fail("--val-fraction ", o.val_fraction, " leaves no training examples");
  if (val.empty())
    fail("no validation examples: give --val FILE.jsonl or a larger --val-fraction");
  std::filesystem::create_directories(o.out);
  const int32_t kind = pairs ? kPreferencePairs : kSupervisedExamples;
  write_example_file(o.out + "/train.bin", train, kind);
  write_example_file(o.out + "/val.bin", val, kind);
  size_t targets = 0, tokens = 0;
  for (const auto* set : {&train, &val})
    for (const Example& e : *set) {
      tokens += e.tokens.size();
      for (const uint8_t m : e.mask) targets += m;
    }
  std::printf("prepare: %zu %s (%s), %zu tokens of which %zu response targets: "
              "train.bin %zu, val.bin %zu examples in %s\n",
              pairs ? (train.size() + val.size()) / 2 : train.size() + val.size(),
              pairs ? "preference pairs" : "examples", o.tokenizer.c_str(), tokens, targets, train.size(),
              val.size(), o.out.c_str());
}

bool visible(char c) { return c > ' ' && c < 0x7F; }

// Position in buf[0, n) after which the text can be cut without changing its tokens, or 0.
size_t safe_cut(const std::string& buf) {
  for (size_t i = buf.size() - 1; i >= 2; --i)
    if (buf[i - 1] == ' ' && visible(buf[i]) && visible(buf[i - 2])) return i - 1;
  return 0;
}

void run_prepare(const PrepareOptions& o) {
  apply_global_options();
  const auto tok = make_tokenizer(o.tokenizer, o.tokenizer_dir);
  // Inputs are documents: regular files (a FIFO or /dev/zero would never end).
  for (const std::string& in : o.inputs) {
    if (!std::filesystem::exists(in)) fail(in, ": cannot open (no such file)");
    if (!std::filesystem::is_regular_file(in)) fail(in, ": not a regular file");
  }
  if (std::filesystem::exists(o.out) && !std::filesystem::is_directory(o.out))
    fail("--out ", o.out, ": a file is in the way of the output folder");
  size_t jsonl = 0;
  for (const std::string& in : o.inputs) jsonl += in.ends_with(".jsonl");
  if (jsonl > 0 && jsonl < o.inputs.size())
    fail("inputs mix .jsonl examples and text documents: prepare them separately");
  if (!o.val.empty() && jsonl == 0) fail("--val ", o.val, ": only for .jsonl inputs");
  if (jsonl > 0) return prepare_examples(o, *tok);
  std::filesystem::create_directories(o.out);
  // Tokens stream to a scratch file, then split into the two outputs.
  const std::string scratch = o.out + "/.tokens.tmp";
  size_t total = 0;
  {
    std::ofstream tmp(scratch, std::ios::binary | std::ios::trunc);
    if (!tmp) fail(scratch, ": cannot create");
    std::vector<uint16_t> ids16;
    auto emit = [&](const std::vector<int32_t>& ids) {
      ids16.assign(ids.begin(), ids.end());
      tmp.write(reinterpret_cast<const char*>(ids16.data()),
                static_cast<std::streamsize>(ids16.size() * 2));
      total += ids.size();
    };
    constexpr size_t kChunk = size_t{1} << 20;
    for (const std::string& in : o.inputs) {
      std::ifstream f(in, std::ios::binary);
      if (!f) fail(in, ": cannot open");
      emit({tok->eot()});
      std::string buf;
      std::vector<char> block(kChunk);
      while (f) {
        f.read(block.data(), static_cast<std::streamsize>(block.size()));
        buf.append(block.data(), static_cast<size_t>(f.gcount()));
        const size_t cut = buf.size() > 2 ? safe_cut(buf) : 0;
        if (cut > 0 && f) {  // keep the tail: it may continue in the next block
          emit(tok->encode(std::string_view(buf).substr(0, cut)));
          buf.erase(0, cut);
        }
      }
      if (f.bad()) fail(in, ": read error");
      emit(tok->encode(buf));
    }
    if (!tmp.flush()) fail(scratch, ": write failed");
  }
  const size_t val = static_cast<size_t>(o.val_fraction * static_cast<double>(total));
  const size_t train = total - val;
  if (train == 0) fail("--val-fraction ", o.val_fraction, " leaves no training tokens");
  std::ifstream tmp(scratch, std::ios::binary);
  auto copy = [&](size_t n) {
    return [&tmp, n](const std::function<void(const uint16_t*, size_t)>& sink) {
      std::vector<uint16_t> b(1 << 16);
      for (size_t left = n; left > 0;) {
        const size_t k = std::min(left, b.size());
        tmp.read(reinterpret_cast<char*>(b.data()), static_cast<std::streamsize>(k * 2));
        sink(b.data(), k);
        left -= k;
      }
    };
  };
  write_token_file(o.out + "/train.bin", train, copy(train));
  write_token_file(o.out + "/val.bin", val, copy(val));
  tmp.close();
  std::filesystem::remove(scratch);
  std::printf("prepare: %zu files, %zu tokens (%s): train.bin %zu, val.bin %zu in %s\n",
              o.inputs.size(), total, o.tokenizer.c_str(), train, val, o.out.c_str());
}

}  // namespace

void register_prepare(CLI::App& app) {
  auto o = std::make_shared<PrepareOptions>();
  CLI::App* sub = app.add_subcommand(
      "prepare", "Tokenize text files into train.bin and val.bin (llm.c token files)");
  sub->add_option("--tokenizer", o->tokenizer, "gpt2 or byte")
      ->check(CLI::IsMember({"gpt2", "byte"}))
      ->capture_default_str();
  sub->add_option("--tokenizer-dir", o->tokenizer_dir,
                  "Folder with GPT-2's encoder.json and vocab.bpe")
      ->capture_default_str();
  sub->add_option("--out", o->out, "Output folder")->required();
  sub->add_option("--val-fraction", o->val_fraction,
                  "Last fraction of the token stream that becomes val.bin")
      ->check(CLI::Range(0.0, 0.5))
      ->capture_default_str();
  sub->add_option("--val", o->val,
                  "JSONL inputs: the validation examples (default: the last --val-fraction)");
  sub->add_option("--max-tokens", o->max_tokens,
                  "JSONL inputs: the most tokens an example may have (model.seq_len + 1)")
      ->check(CLI::Range(2, 65537))
      ->capture_default_str();
  sub->add_option("INPUT", o->inputs,
                  "Text files (each one document), or .jsonl fine-tuning examples")
      ->required();
  sub->callback([o] { run_prepare(*o); });
}

}  // namespace fp8lm::cli
