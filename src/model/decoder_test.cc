// The key/value-cache decoder against the FP64 reference model (the logits of the whole
// sequence's forward at its last position), and against itself: how tokens are grouped into
// calls and rows changes no bit; rows without new tokens are not written; bad input throws.
#include "model/decoder.h"

#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <limits>
#include <vector>

#include "core/check.h"
#include "model/ref_model.h"

namespace fp8lm {
namespace {

GptConfig small_config() {
  GptConfig c;
  c.n_layer = 2;
  c.n_head = 4;
  c.n_embd = 64;
  c.seq_len = 24;
  c.vocab_size = 100;  // padded to 128 rows in wte
  return c;
}

std::vector<int32_t> sequence(size_t n, int32_t salt) {
  std::vector<int32_t> s(n);
  for (size_t i = 0; i < n; ++i) s[i] = static_cast<int32_t>((salt * 31 + 7 * i + i * i) % 100);
  return s;
}

// The FP64 model's logits after the whole sequence (one row of T = its length).
std::vector<double> ref_last_logits(const ref::RefModel& ref, const std::vector<int32_t>& seq) {
  const ref::Vec all = ref.logits(seq, 1, seq.size());
  const size_t V = static_cast<size_t>(ref.cfg.vocab_size);
  return {all.end() - static_cast<long>(V), all.end()};
}

void expect_close(const float* got, const std::vector<double>& want, const char* what) {
  double scale = 0, worst = 0;
  for (size_t v = 0; v < want.size(); ++v) {
    scale = std::max(scale, std::fabs(want[v]));
    worst = std::max(worst, std::fabs(static_cast<double>(got[v]) - want[v]));
  }
  EXPECT_GT(scale, 0.01) << what;  // the logits are not trivially zero
  EXPECT_LE(worst, 2e-5 * scale + 1e-6) << what;
}

TEST(GptDecoder, PrefillAndDecodeMatchTheReferenceForward) {
  GptParams params(small_config());
  params.init_gpt2(11);
  const ref::RefModel ref(params);
  const size_t V = 100;
  // Three rows with prompts of different lengths, prefilled in one call.
  std::vector<std::vector<int32_t>> seqs = {sequence(5, 1), sequence(1, 2), sequence(13, 3)};
  GptDecoder dec(params, 3);
  std::vector<float> logits(3 * V, std::numeric_limits<float>::quiet_NaN());
  dec.append(seqs, logits.data());
  for (size_t r = 0; r < 3; ++r) {
    EXPECT_EQ(dec.length(r), seqs[r].size());
    expect_close(logits.data() + r * V, ref_last_logits(ref, seqs[r]), "prefill");
  }
  // Decoding: one token into rows 0 and 2, none into row 1 (its logits stay as they were),
  // up to the full window of row 2.
  for (int step = 0; step < 11; ++step) {
    std::vector<std::vector<int32_t>> next(3);
    for (size_t r : {size_t{0}, size_t{2}}) {
      next[r] = {static_cast<int32_t>((13 * step + 5 * r) % 100)};
      seqs[r].push_back(next[r][0]);
    }
    std::vector<float> before(logits.begin() + V, logits.begin() + 2 * V);
    dec.append(next, logits.data());
    EXPECT_EQ(0, std::memcmp(before.data(), logits.data() + V, V * sizeof(float)));
    for (size_t r : {size_t{0}, size_t{2}})
      expect_close(logits.data() + r * V, ref_last_logits(ref, seqs[r]), "decode");
  }
  EXPECT_EQ(dec.length(2), dec.capacity());
  EXPECT_THROW(dec.append({{}, {}, {1}}, logits.data()), Error);  // the window is full
}

TEST(GptDecoder, GroupingOfTokensChangesNoBit) {
  GptParams params(small_config());
  params.init_gpt2(12);
  const size_t V = 100;
  const std::vector<int32_t> seq = sequence(17, 4);
  // All at once in row 0, against one token per call in row 1 (beside other rows' tokens).
  GptDecoder dec(params, 3);
  std::vector<float> at_once(3 * V), one_by_one(3 * V);
  dec.append({seq}, at_once.data());
  for (size_t i = 0; i < seq.size(); ++i)
    dec.append(
        {{}, {seq[i]}, i % 3 ? std::vector<int32_t>{} : sequence(2, static_cast<int32_t>(i))},
        one_by_one.data());
  EXPECT_EQ(0, std::memcmp(at_once.data(), one_by_one.data() + V, V * sizeof(float)));
  // A reset row starts over at position 0: the same tokens give the same bits.
  dec.reset(0);
  EXPECT_EQ(dec.length(0), 0u);
  std::vector<float> again(3 * V);
  dec.append({seq}, again.data());
  EXPECT_EQ(0, std::memcmp(at_once.data(), again.data(), V * sizeof(float)));
}

TEST(GptDecoder, BadInputThrows) {
  GptParams params(small_config());
  params.init_gpt2(13);
  GptDecoder dec(params, 2);
  std::vector<float> logits(2 * 100);
  EXPECT_THROW(dec.append({{100}}, logits.data()), Error);  // outside the vocabulary
  EXPECT_THROW(dec.append({{-1}}, logits.data()), Error);
  EXPECT_THROW(dec.append({{1}, {2}, {3}}, logits.data()), Error);    // three rows of two
  EXPECT_THROW(dec.append({sequence(25, 1)}, logits.data()), Error);  // longer than seq_len
  EXPECT_EQ(dec.length(0), 0u);  // nothing was appended by a refused call
}

}  // namespace
}  // namespace fp8lm
