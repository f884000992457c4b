// Token files (format, validation of untrusted files) and the batch loader.
#include "data/loader.h"

#include <gtest/gtest.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstring>
#include <filesystem>
#include <fstream>
#include <vector>

#include "core/check.h"
#include "core/file.h"
#include "data/token_file.h"

namespace fp8lm {
namespace {

std::string dir() {
  const std::string d = ::testing::TempDir() + "/fp8lm_loader_" + std::to_string(::getpid());
  std::filesystem::create_directories(d);
  return d;
}

std::string write_tokens(const std::string& name, const std::vector<uint16_t>& t) {
  const std::string p = dir() + "/" + name;
  write_token_file(p, t.size(), [&](const auto& sink) { sink(t.data(), t.size()); });
  return p;
}

void expect_error(const std::string& path, int32_t vocab, const std::string& words) {
  try {
    TokenFile f(path, vocab);
    FAIL() << "accepted " << path;
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find(path), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find(words), std::string::npos) << e.what();
  }
}

TEST(TokenFile, RoundTripAndLlmcHeader) {
  std::vector<uint16_t> t(1000);
  for (size_t i = 0; i < t.size(); ++i) t[i] = static_cast<uint16_t>(i * 37 % 50257);
  const std::string p = write_tokens("ok.bin", t);
  const TokenFile f(p, 50257);
  ASSERT_EQ(f.size(), 1000u);
  std::vector<uint16_t> back(1000);
  f.read(0, 1000, back.data());
  EXPECT_EQ(back, t);
  std::ifstream raw(p, std::ios::binary);
  int32_t header[3];
  raw.read(reinterpret_cast<char*>(header), sizeof header);
  EXPECT_EQ(header[0], 20240520);
  EXPECT_EQ(header[1], 1);
  EXPECT_EQ(header[2], 1000);
  EXPECT_EQ(std::filesystem::file_size(p), 1024u + 2000u);
}

TEST(TokenFile, RejectsMalformedFiles) {
  const std::string good = write_tokens("good.bin", {1, 2, 3, 60000});
  expect_error(good, 50257, "token 60000 at position 3");
  auto patched = [&](const std::string& name, size_t offset, int32_t value, size_t trunc = 0) {
    const std::string p = dir() + "/" + name;
    std::filesystem::copy_file(good, p, std::filesystem::copy_options::overwrite_existing);
    std::fstream f(p, std::ios::binary | std::ios::in | std::ios::out);
    f.seekp(static_cast<std::streamoff>(offset));
    f.write(reinterpret_cast<const char*>(&value), 4);
    f.close();
    if (trunc) std::filesystem::resize_file(p, trunc);
    return p;
  };
  expect_error(patched("magic.bin", 0, 12345), 0, "bad magic");
  expect_error(patched("version.bin", 4, 7), 0, "unsupported version 7");
  expect_error(patched("count.bin", 8, 5), 0, "header says 5 tokens");
  expect_error(patched("neg.bin", 8, -1), 0, "negative token count");
  expect_error(patched("short.bin", 0, 20240520, 100), 0, "too short");
}

// Files that are not regular files are refused at once: a FIFO would block forever.
TEST(TokenFile, FifoFolderAndDeviceAreRefusedWithoutBlocking) {
  const std::string fifo = dir() + "/fifo.bin";
  std::filesystem::remove(fifo);
  ASSERT_EQ(::mkfifo(fifo.c_str(), 0644), 0);
  expect_error(fifo, 0, "not a regular file");
  expect_error(dir(), 0, "is a folder");
  expect_error("/dev/zero", 0, "not a regular file");
  EXPECT_THROW(read_text_file(fifo), Error);
  EXPECT_THROW(read_text_file(dir()), Error);
}

// A file truncated while in use gives an Error (a memory map gave SIGBUS), and tokens
// rewritten outside the vocabulary are caught when read.
TEST(TokenFile, TruncatedOrRewrittenWhileInUse) {
  std::vector<uint16_t> t(4000, 7);
  const std::string p = write_tokens("shrinks.bin", t);
  const TokenFile f(p, 512);
  DataLoader d(f, 2, 16, 1);
  std::vector<int32_t> in(32), tg(32);
  d.train_batch(0, in.data(), tg.data());
  {
    std::fstream w(p, std::ios::binary | std::ios::in | std::ios::out);
    w.seekp(static_cast<std::streamoff>(kTokenFileHeaderBytes));
    const std::vector<uint16_t> big(4000, 9999);
    w.write(reinterpret_cast<const char*>(big.data()), 8000);
  }
  EXPECT_THROW(d.eval_batch(0, in.data(), tg.data()), Error);
  std::filesystem::resize_file(p, kTokenFileHeaderBytes + 10);
  try {
    d.eval_batch(0, in.data(), tg.data());
    FAIL() << "read past a truncated file";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("shrank"), std::string::npos) << e.what();
  }
}

TEST(DataLoader, TrainWindowsAreAFunctionOfSeedStepAndRank) {
  std::vector<uint16_t> t(5000);
  for (size_t i = 0; i < t.size(); ++i) t[i] = static_cast<uint16_t>(i % 4000);
  const TokenFile f(write_tokens("train.bin", t));
  const size_t B = 3, T = 16;
  DataLoader a(f, B, T, 7), b(f, B, T, 7), other_seed(f, B, T, 8), rank1(f, B, T, 7, 1);
  std::vector<int32_t> in1(B * T), tg1(B * T), in2(B * T), tg2(B * T);
  a.train_batch(41, in1.data(), tg1.data());
  b.train_batch(41, in2.data(), tg2.data());
  EXPECT_EQ(in1, in2);
  EXPECT_EQ(tg1, tg2);
  for (size_t r = 0; r < B; ++r)
    for (size_t k = 0; k + 1 < T; ++k) EXPECT_EQ(tg1[r * T + k], in1[r * T + k + 1]);
  a.train_batch(42, in2.data(), tg2.data());
  EXPECT_NE(in1, in2);
  other_seed.train_batch(41, in2.data(), tg2.data());
  EXPECT_NE(in1, in2);
  rank1.train_batch(41, in2.data(), tg2.data());
  EXPECT_NE(in1, in2);
}

TEST(DataLoader, EvalBatchesAreContiguousSpans) {
  std::vector<uint16_t> t(100);
  for (size_t i = 0; i < t.size(); ++i) t[i] = static_cast<uint16_t>(i);
  const TokenFile f(write_tokens("val.bin", t));
  DataLoader d(f, 2, 8, 1);
  EXPECT_EQ(d.eval_batches(), 6u);  // (100 − 1) / 16
  std::vector<int32_t> in(16), tg(16);
  d.eval_batch(2, in.data(), tg.data());
  for (int i = 0; i < 16; ++i) {
    EXPECT_EQ(in[static_cast<size_t>(i)], 32 + i);
    EXPECT_EQ(tg[static_cast<size_t>(i)], 33 + i);
  }
  EXPECT_THROW(d.eval_batch(6, in.data(), tg.data()), Error);
  const TokenFile tiny(write_tokens("tiny.bin", {1, 2, 3}));
  EXPECT_THROW(DataLoader(tiny, 1, 8, 1), Error);
}

}  // namespace
}  // namespace fp8lm
