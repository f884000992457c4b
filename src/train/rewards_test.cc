// GRPO's rewards: exact match, regular expressions, an external command (and its failures).
#include "train/rewards.h"

#include <gtest/gtest.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <functional>

#include "core/check.h"

namespace fp8lm {
namespace {

std::string error_of(const std::function<void()>& f) {
  try {
    f();
  } catch (const Error& e) {
    return e.what();
  }
  return "(no error)";
}

std::vector<PromptLine> lines_of(const std::string& text) {
  const std::string p = ::testing::TempDir() + "/fp8lm_rewards_" + std::to_string(::getpid()) + ".jsonl";
  std::ofstream(p) << text;
  std::vector<PromptLine> l = read_prompts_jsonl(p);
  std::filesystem::remove(p);
  return l;
}

TEST(Rewards, ExactMatchAndPatterns) {
  const std::vector<PromptLine> l = lines_of(
      R"({"prompt": "a", "answer": " news"})" "\n" R"({"prompt": "b", "pattern": "^ [0-9]+$"})" "\n");
  const Rewards r(l, "");
  EXPECT_EQ(r.score({0, 0, 0, 1, 1, 1}, {" news", "news", " news ", " 42", " 4x", "42"}),
            (std::vector<double>{1, 0, 0, 1, 0, 0}));
}

TEST(Rewards, AnExternalCommandScoresEachCompletion) {
  const std::vector<PromptLine> l =
      lines_of(R"({"prompt": "a", "level": 3})" "\n" R"({"prompt": "b"})" "\n");
  // The command sees each line's object with "completion" added: score its length.
  const Rewards r(l, "python3 -c 'import sys, json\nfor s in sys.stdin: print(len(json.loads(s)[\"completion\"]))'");
  EXPECT_EQ(r.score({0, 1, 0}, {"abc", "", "hello"}), (std::vector<double>{3, 0, 5}));
  const Rewards sees(l, "python3 -c 'import sys, json\nfor s in sys.stdin: print(json.loads(s).get(\"level\", -1))'");
  EXPECT_EQ(sees.score({0, 1}, {"x", "y"}), (std::vector<double>{3, -1}));
  EXPECT_NE(error_of([&] { Rewards(l, "exit 2").score({0}, {"x"}); }).find("failed (status"),
            std::string::npos);
  EXPECT_NE(error_of([&] { Rewards(l, "echo 1; echo 2").score({0}, {"x"}); })
                .find("printed 2 scores for 1 completions"),
            std::string::npos);
  EXPECT_NE(error_of([&] { Rewards(l, "echo high").score({0}, {"x"}); })
                .find("score 1 \"high\" is not a finite number"),
            std::string::npos);
}

TEST(Rewards, LinesWithoutARuleAndBadPatternsAreNamed) {
  const std::vector<PromptLine> none = lines_of(R"({"prompt": "a", "answer": "x"})" "\n" R"({"prompt": "b"})" "\n");
  EXPECT_NE(error_of([&] { Rewards(none, ""); }).find(".jsonl:2: no \"answer\" or \"pattern\""),
            std::string::npos);
  const std::vector<PromptLine> bad = lines_of(R"({"prompt": "a", "pattern": "(("})" "\n");
  EXPECT_NE(error_of([&] { Rewards(bad, ""); }).find(".jsonl:1: \"pattern\" is not a valid regular expression"),
            std::string::npos);
}

}  // namespace
}  // namespace fp8lm
