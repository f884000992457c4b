// A tiny GPT on byte tokens, for end-to-end training tests: scratch folders, a repetitive
// English-like corpus and the run configuration the tests vary.
#pragma once

#include <gtest/gtest.h>
#include <unistd.h>

#include <filesystem>
#include <string>
#include <vector>

#include "data/token_file.h"
#include "train/config.h"

namespace fp8lm::test {

inline std::string tmpdir(const std::string& name) {
  const std::string d = ::testing::TempDir() + "/fp8lm_train_" + name + "_" + std::to_string(::getpid());
  std::filesystem::remove_all(d);
  std::filesystem::create_directories(d);
  return d;
}

// Byte tokens of a repetitive English-like text, so the tiny model has something to learn.
inline void write_data(const std::string& dir) {
  std::string text;
  for (int i = 0; text.size() < 40000; ++i)
    text += "the cat sat on the mat " + std::to_string(i % 17) + ". a dog ran. ";
  std::vector<uint16_t> t(text.begin(), text.end());
  const size_t val = t.size() / 10;
  write_token_file(dir + "/train.bin", t.size() - val, [&](const auto& s) { s(t.data(), t.size() - val); });
  write_token_file(dir + "/val.bin", val, [&](const auto& s) { s(t.data() + t.size() - val, val); });
}

inline TrainConfig tiny(const std::string& data, const std::string& out, const std::string& level) {
  TrainConfig c;
  c.preset = "tiny";
  c.seq_len = 32;
  c.train_path = data + "/train.bin";
  c.val_path = data + "/val.bin";
  c.tokenizer = "byte";
  c.batch_size = 4;
  c.grad_accum = 2;
  c.steps = 8;
  c.warmup_steps = 2;
  c.eval_every = 4;
  c.eval_batches = 2;
  c.checkpoint_every = 4;
  c.out_dir = out;
  c.level = level;
  return c;
}

}  // namespace fp8lm::test
