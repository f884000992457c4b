// fp8lm prepare: tokenizes text files into train.bin / val.bin (llm.c's token-file format).
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
  std::vector<std::string> inputs;
};

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
  sub->add_option("INPUT", o->inputs, "Text files (each one document)")->required();
  sub->callback([o] { run_prepare(*o); });
}

}  // namespace fp8lm::cli
