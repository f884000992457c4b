// The GPT-2 tokenizer against ids produced by the reference encoder (npm gpt-3-encoder's
// own encode(), run once to make this table), decode round trips, and the byte tokenizer.
// The tables come from data/gpt2 (scripts/setup.sh fetches them).
#include "data/tokenizer.h"

#include <gtest/gtest.h>

#include <cstdlib>
#include <random>
#include <string>
#include <vector>

#include "core/check.h"
#include "data/unicode.h"

namespace fp8lm {
namespace {

std::string gpt2_dir() {
  const char* env = std::getenv("FP8LM_GPT2_DIR");
  return env ? env : std::string(FP8LM_SOURCE_DIR) + "/data/gpt2";
}

const Gpt2Tokenizer& tok() {
  static const Gpt2Tokenizer t(gpt2_dir() + "/encoder.json", gpt2_dir() + "/vocab.bpe");
  return t;
}

struct Known {
  const char* text;
  std::vector<int32_t> ids;
};

const Known kKnown[] = {
    {"Hello world", {15496, 995}},
    {"The quick brown fox jumps over the lazy dog.",
     {464, 2068, 7586, 21831, 18045, 625, 262, 16931, 3290, 13}},
    {"I'm here, you're there; they'll go and we've been. It's John's, he'd say.",
     {40, 1101, 994, 11, 345, 821, 612, 26, 484, 1183, 467, 290, 356, 1053, 587, 13, 632, 338,
      1757, 338, 11, 339, 1549, 910, 13}},
    {"café naïve résumé Über", {66, 1878, 2634, 41492, 40560, 16345, 2634, 49363, 527}},
    {"日本語のテキスト 中文",
     {33768, 98, 17312, 105, 45739, 252, 5641, 24336, 25084, 43302, 220, 40792, 23877, 229}},
    {"emoji 🎉🚀 done", {368, 31370, 12520, 236, 231, 8582, 248, 222, 1760}},
    {"tabs\tand  double   spaces\n\nnew lines  \n end",
     {8658, 82, 197, 392, 220, 4274, 220, 220, 9029, 198, 198, 3605, 3951, 220, 220, 198, 886}},
    {"numbers 12345 and 3.14159, x2", {77, 17024, 17031, 2231, 290, 513, 13, 1415, 19707, 11, 2124, 17}},
    {"<|endoftext|>", {27, 91, 437, 1659, 5239, 91, 29}},
    {"  leading and trailing  ", {220, 3756, 290, 25462, 220, 220}},
};

TEST(Gpt2Tokenizer, MatchesTheReferenceEncoder) {
  EXPECT_EQ(tok().vocab_size(), 50257);
  for (const Known& k : kKnown) {
    EXPECT_EQ(tok().encode(k.text), k.ids) << k.text;
    EXPECT_EQ(tok().decode(k.ids), k.text);
  }
}

TEST(Gpt2Tokenizer, PretokenizerPieces) {
  const auto p = gpt2_pretokenize("it's  a test\n");
  const std::vector<std::string_view> want = {"it", "'s", " ", " a", " test", "\n"};
  EXPECT_EQ(p, want);
  EXPECT_TRUE(gpt2_pretokenize("").empty());
}

TEST(Gpt2Tokenizer, RoundTripsArbitraryBytes) {
  // Byte-level BPE: any byte string, even invalid UTF-8, survives encode → decode.
  std::mt19937 rng(5);
  std::uniform_int_distribution<int> byte(0, 255);
  for (int trial = 0; trial < 200; ++trial) {
    std::string s(static_cast<size_t>(byte(rng) % 40), '\0');
    for (char& c : s) c = static_cast<char>(byte(rng));
    const auto ids = tok().encode(s);
    for (int32_t id : ids) ASSERT_LT(id, 50257);
    ASSERT_EQ(tok().decode(ids), s);
  }
}

TEST(Gpt2Tokenizer, MissingFilesAreAClearError) {
  try {
    Gpt2Tokenizer t("/nonexistent/encoder.json", "/nonexistent/vocab.bpe");
    FAIL();
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("/nonexistent/encoder.json"), std::string::npos);
  }
}

TEST(ByteTokenizer, EncodesBytes) {
  ByteTokenizer b;
  EXPECT_EQ(b.encode("Az\xff"), (std::vector<int32_t>{65, 122, 255}));
  EXPECT_EQ(b.decode({65, 256, 122}), "Az");
  EXPECT_EQ(b.eot(), 256);
}

TEST(Unicode, Classes) {
  EXPECT_TRUE(unicode::is_letter(U'é'));
  EXPECT_TRUE(unicode::is_letter(U'中'));
  EXPECT_FALSE(unicode::is_letter(U'7'));
  EXPECT_TRUE(unicode::is_number(U'٣'));  // Arabic-Indic three
  EXPECT_TRUE(unicode::is_space(0x3000));
  EXPECT_FALSE(unicode::is_space(U'x'));
  std::string s;
  unicode::append_utf8(s, 0x1F389);
  size_t i = 0;
  EXPECT_EQ(unicode::next_code_point(s, i), 0x1F389u);
  EXPECT_EQ(i, 4u);
}

}  // namespace
}  // namespace fp8lm
