// Fine-tuning data: JSONL rendered by the documented template, example files round-tripped
// and validated, and the batches the trainer sees (targets only on response tokens, every
// example once per epoch).
#include "data/example_file.h"

#include <gtest/gtest.h>
#include <unistd.h>

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <functional>
#include <set>
#include <string>
#include <vector>

#include "core/check.h"
#include "data/loader.h"
#include "data/sft_jsonl.h"
#include "data/tokenizer.h"

namespace fp8lm {
namespace {

std::string temp(const std::string& name) {
  return ::testing::TempDir() + "/fp8lm_examples_" + std::to_string(::getpid()) + "_" + name;
}

std::string write_text(const std::string& name, const std::string& text) {
  const std::string p = temp(name);
  std::ofstream(p, std::ios::binary) << text;
  return p;
}

std::string error_of(const std::function<void()>& f) {
  try {
    f();
  } catch (const Error& e) {
    return e.what();
  }
  return "(no error)";
}

// Byte tokens: each character is its own token, <|endoftext|> is 256.
std::vector<uint16_t> bytes(const std::string& s) { return {s.begin(), s.end()}; }

TEST(SftJsonl, PromptResponseAndChatFollowTheTemplate) {
  const ByteTokenizer tok;
  const std::string path = write_text(
      "ok.jsonl",
      "{\"prompt\": \"Q? \", \"response\": \"A.\"}\n\n"
      "{\"messages\": [{\"role\": \"system\", \"content\": \"s\"}, {\"role\": \"user\", \"content\": \"u\"},"
      " {\"role\": \"assistant\", \"content\": \"a\"}]}\n");
  const std::vector<Example> e = read_sft_jsonl(path, tok, 100);
  ASSERT_EQ(e.size(), 2u);  // the blank line is skipped
  std::vector<uint16_t> want{256};
  for (uint16_t t : bytes("Q? A.")) want.push_back(t);
  want.push_back(256);
  EXPECT_EQ(e[0].tokens, want);
  EXPECT_EQ(e[0].mask, (std::vector<uint8_t>{0, 0, 0, 0, 1, 1, 1}));
  want = {256};
  for (uint16_t t : bytes("System: s\n\nUser: u\n\nAssistant: a")) want.push_back(t);
  want.push_back(256);
  EXPECT_EQ(e[1].tokens, want);
  std::vector<uint8_t> mask(want.size(), 0);
  mask[mask.size() - 3] = 1;  // " a" and its <|endoftext|>
  mask[mask.size() - 2] = 1;
  mask[mask.size() - 1] = 1;
  EXPECT_EQ(e[1].mask, mask);
  std::filesystem::remove(path);
}

TEST(SftJsonl, BadLinesAreNamedByFileAndLine) {
  const ByteTokenizer tok;
  for (const auto& [line, want] : {
           std::pair{"{\"prompt\": \"p\"}", ":2: missing key \"response\""},
           std::pair{"{\"prompt\": \"p\", \"response\": \"\"}", ":2: empty response"},
           std::pair{"{\"prompt\": 3, \"response\": \"r\"}", ":2: \"prompt\" is not a string"},
           std::pair{"{\"text\": \"t\"}", ":2: neither \"prompt\"/\"response\" nor \"messages\""},
           std::pair{"[1, 2]", ":2: not a JSON object"},
           std::pair{"{\"prompt\": \"p\", ", ":2: not valid JSON"},
           std::pair{"{\"messages\": []}", ":2: \"messages\" is not a non-empty array"},
           std::pair{"{\"messages\": [{\"role\": \"user\", \"content\": \"u\"}]}",
                     ":2: no assistant message"},
           std::pair{"{\"messages\": [{\"role\": \"bot\", \"content\": \"u\"}]}",
                     ":2: messages[0]: role \"bot\""},
           std::pair{"{\"prompt\": \"a very long prompt indeed\", \"response\": \"r\"}",
                     ":2: 28 tokens, more than --max-tokens 20"}}) {
    const std::string path =
        write_text("bad.jsonl", std::string("{\"prompt\": \"p\", \"response\": \"r\"}\n") + line + "\n");
    const std::string e = error_of([&] { read_sft_jsonl(path, tok, 20); });
    EXPECT_NE(e.find(path + want), std::string::npos) << line << " -> " << e;
    std::filesystem::remove(path);
  }
  const std::string empty = write_text("empty.jsonl", "\n");
  EXPECT_NE(error_of([&] { read_sft_jsonl(empty, tok, 20); }).find("no examples"), std::string::npos);
  std::filesystem::remove(empty);
}

std::vector<Example> some_examples() {
  std::vector<Example> ex;
  for (int i = 0; i < 7; ++i) {
    Example e;
    for (int k = 0; k < 3 + i; ++k) {
      e.tokens.push_back(static_cast<uint16_t>(10 * i + k));
      e.mask.push_back(k >= 2 ? 1 : 0);  // two prompt tokens, then the response
    }
    ex.push_back(e);
  }
  return ex;
}

TEST(ExampleFile, RoundTripsAndRefusesDamage) {
  const std::string path = temp("ex.bin");
  const std::vector<Example> ex = some_examples();
  write_example_file(path, ex);
  ASSERT_TRUE(is_example_file(path));
  const ExampleFile f(path, 100);
  ASSERT_EQ(f.size(), ex.size());
  EXPECT_EQ(f.max_length(), 9u);
  for (size_t i = 0; i < ex.size(); ++i) {
    EXPECT_TRUE(std::ranges::equal(f.tokens(i), ex[i].tokens));
    EXPECT_TRUE(std::ranges::equal(f.mask(i), ex[i].mask));
  }
  EXPECT_NE(error_of([&] { ExampleFile(path, 50); }).find("outside the vocabulary of 50"),
            std::string::npos);
  // Damage: truncated, a mask value that is not 0/1, an offset out of order.
  std::string raw;
  {
    std::ifstream in(path, std::ios::binary);
    raw.assign(std::istreambuf_iterator<char>(in), {});
  }
  auto damaged = [&](const std::function<void(std::string&)>& edit) {
    std::string r = raw;
    edit(r);
    std::ofstream(path, std::ios::binary | std::ios::trunc) << r;
    return error_of([&] { ExampleFile(path, 100); });
  };
  EXPECT_NE(damaged([](std::string& r) { r.pop_back(); }).find("bytes"), std::string::npos);
  EXPECT_NE(damaged([](std::string& r) { r.back() = 7; }).find("example 6 mask 8 is 7"),
            std::string::npos);
  EXPECT_NE(damaged([](std::string& r) { r[1024 + 8] = 100; }).find("example 0 has a bad extent"),
            std::string::npos);
  EXPECT_NE(damaged([](std::string& r) { r[0] = 1; }).find("bad magic"), std::string::npos);
  std::filesystem::remove(path);
}

TEST(ExampleLoader, RowsTargetOnlyResponsesAndEpochsVisitEveryExample) {
  const std::string path = temp("rows.bin");
  write_example_file(path, some_examples());
  const ExampleFile f(path);
  const size_t B = 2, T = 9;
  const ExampleLoader loader(f, B, T, 42);
  EXPECT_NE(error_of([&] { ExampleLoader(f, B, 7, 1); }).find("example 6 has 9 tokens, more than model.seq_len + 1 = 8"),
            std::string::npos);
  std::vector<int32_t> in(B * T), tgt(B * T);
  // Evaluation: examples in order, the last batch padded with rows without targets.
  ASSERT_EQ(loader.eval_batches(), 4u);
  loader.eval_batch(0, in.data(), tgt.data());
  // Example 0 = tokens 0 1 2, mask 0 0 1: inputs 0 1, one target (2) at position 1.
  EXPECT_EQ(in[0], 0);
  EXPECT_EQ(in[1], 1);
  EXPECT_EQ(tgt[0], -1);
  EXPECT_EQ(tgt[1], 2);
  for (size_t t = 2; t < T; ++t) EXPECT_EQ(tgt[t], -1);
  loader.eval_batch(3, in.data(), tgt.data());
  EXPECT_EQ(in[0], 60);                   // example 6
  EXPECT_EQ(tgt[T + 0], -1);              // the padding row
  EXPECT_TRUE(std::all_of(tgt.begin() + T, tgt.end(), [](int32_t t) { return t == -1; }));
  // Training: 7 rows per epoch, each example once; a new order the next epoch; the same
  // batch for the same index.
  std::multiset<int32_t> first_epoch;
  std::vector<int32_t> order0, order1;
  for (int64_t index = 0; index < 7; ++index) {  // 14 rows: two epochs
    loader.train_batch(index, in.data(), tgt.data());
    for (size_t b = 0; b < B; ++b) (index * 2 + static_cast<int64_t>(b) < 7 ? order0 : order1).push_back(in[b * T] / 10);
  }
  EXPECT_EQ(std::set<int32_t>(order0.begin(), order0.end()).size(), 7u);
  EXPECT_EQ(std::set<int32_t>(order1.begin(), order1.end()).size(), 7u);
  EXPECT_NE(order0, order1);
  std::vector<int32_t> again_in(B * T), again_tgt(B * T);
  loader.train_batch(3, in.data(), tgt.data());
  const ExampleLoader other(f, B, T, 42);
  other.train_batch(3, again_in.data(), again_tgt.data());
  EXPECT_EQ(in, again_in);
  EXPECT_EQ(tgt, again_tgt);
  std::filesystem::remove(path);
}

}  // namespace
}  // namespace fp8lm

namespace fp8lm {
namespace {

TEST(PairsJsonl, EachLineIsTwoExamplesOfOnePromptAndBadLinesAreNamed) {
  const ByteTokenizer tok;
  const std::string path = write_text(
      "pairs.jsonl", "{\"prompt\": \"p:\", \"chosen\": \" yes\", \"rejected\": \" no\"}\n");
  ASSERT_TRUE(is_pairs_jsonl(path));
  const std::vector<Example> ex = read_pairs_jsonl(path, tok, 20);
  ASSERT_EQ(ex.size(), 2u);
  const std::vector<uint16_t> eot{256};
  auto cat = [](std::vector<uint16_t> a, const std::vector<uint16_t>& b) {
    a.insert(a.end(), b.begin(), b.end());
    return a;
  };
  EXPECT_EQ(ex[0].tokens, cat(cat(cat(eot, bytes("p:")), bytes(" yes")), eot));
  EXPECT_EQ(ex[1].tokens, cat(cat(cat(eot, bytes("p:")), bytes(" no")), eot));
  EXPECT_EQ(ex[1].mask, (std::vector<uint8_t>{0, 0, 0, 1, 1, 1, 1}));
  std::filesystem::remove(path);
  for (const auto& [line, want] : {
           std::pair{"{\"prompt\": \"p\", \"chosen\": \"a\"}", ":2: missing key \"rejected\""},
           std::pair{"{\"chosen\": \"a\", \"rejected\": \"b\"}", ":2: missing key \"prompt\""},
           std::pair{"{\"prompt\": \"p\", \"chosen\": \"\", \"rejected\": \"b\"}",
                     ":2: empty \"chosen\" response"},
           std::pair{"{\"prompt\": \"p\", \"chosen\": \"a\", \"rejected\": \"a\"}",
                     ":2: \"chosen\" and \"rejected\" are the same response"},
           std::pair{"{\"prompt\": \"a very long prompt indeed\", \"chosen\": \"a\", \"rejected\": \"b\"}",
                     ":2: 28 tokens, more than --max-tokens 20"}}) {
    const std::string p = write_text(
        "bad_pairs.jsonl", std::string("{\"prompt\": \"p\", \"chosen\": \"a\", \"rejected\": \"b\"}\n") +
                               line + "\n");
    const std::string e = error_of([&] { read_pairs_jsonl(p, tok, 20); });
    EXPECT_NE(e.find(p + want), std::string::npos) << line << " -> " << e;
    std::filesystem::remove(p);
  }
}

// Pair files keep their kind; the loader shuffles pairs as units, so rows 2i and 2i + 1 of
// every batch are one pair, and every pair comes once per epoch; an odd batch is refused.
TEST(ExampleLoader, PreferencePairsStayTogether) {
  std::vector<Example> ex = some_examples();
  ex.pop_back();  // 6 examples: 3 pairs
  const std::string path = temp("pairs.bin");
  write_example_file(path, ex, kPreferencePairs);
  const ExampleFile f(path);
  EXPECT_EQ(f.kind(), kPreferencePairs);
  const size_t B = 2, T = 12;
  EXPECT_NE(error_of([&] { ExampleLoader(f, 3, T, 1); }).find("even train.batch_size"),
            std::string::npos);
  const ExampleLoader loader(f, B, T, 9);
  EXPECT_TRUE(loader.pairs());
  std::vector<int32_t> in(B * T), tgt(B * T);
  for (int epoch = 0; epoch < 2; ++epoch) {
    std::set<int32_t> firsts;
    for (int64_t i = 0; i < 3; ++i) {
      loader.train_batch(epoch * 3 + i, in.data(), tgt.data());
      EXPECT_EQ(in[0] / 10 % 2, 0) << "a chosen example first";
      EXPECT_EQ(in[T] / 10, in[0] / 10 + 1) << "its rejected example next";
      firsts.insert(in[0]);
    }
    EXPECT_EQ(firsts.size(), 3u) << "every pair once in epoch " << epoch;
  }
  std::vector<Example> odd = some_examples();
  EXPECT_NE(error_of([&] {
              const std::string p = temp("odd.bin");
              write_example_file(p, odd, kSupervisedExamples);
              // Relabel as pairs: 7 examples cannot be pairs.
              std::fstream io(p, std::ios::in | std::ios::out | std::ios::binary);
              const int32_t kind = kPreferencePairs;
              io.seekp(8);
              io.write(reinterpret_cast<const char*>(&kind), 4);
              io.close();
              ExampleFile bad(p);
            }).find("7 examples in a file of preference pairs"),
            std::string::npos);
  std::filesystem::remove(path);
  std::filesystem::remove(temp("odd.bin"));
}

}  // namespace
}  // namespace fp8lm
