// Fuzzes the token-file reader (src/data/token_file.h) with whole files, at the vocabulary
// sizes the project uses (GPT-2's 50257, the byte tokenizer's 257) and unchecked (0), and
// the DataLoader (src/data/loader.h) over every file that opens: training windows must be
// consecutive tokens of the file, evaluation batches exactly the documented spans.
#include <algorithm>
#include <cstdint>
#include <cstring>
#include <string>
#include <utility>
#include <vector>

#include "core/check.h"
#include "data/loader.h"
#include "data/token_file.h"
#include "fuzz_common.h"

namespace {

void check_loader(const fp8lm::TokenFile& f, const std::vector<uint16_t>& tokens, size_t B,
                  size_t T, uint64_t seed, int rank) {
  try {
    const fp8lm::DataLoader loader(f, B, T, seed, rank);
    FUZZ_CHECK(tokens.size() >= T + 1, "the loader refuses files shorter than one window");
    std::vector<int32_t> in(B * T), tgt(B * T);
    for (int64_t step : {int64_t{0}, int64_t{1}, int64_t{-1}, int64_t{1} << 40}) {
      loader.train_batch(step, in.data(), tgt.data());
      for (size_t b = 0; b < B; ++b) {
        // Row b is the window tokens[s .. s + T] for some start s: find s from its first
        // token's neighbours and check the whole row.
        const int32_t* x = in.data() + b * T;
        const int32_t* y = tgt.data() + b * T;
        bool found = false;
        for (size_t s = 0; s + T < tokens.size() && !found; ++s) {
          bool same = true;
          for (size_t t = 0; t < T && same; ++t)
            same = x[t] == tokens[s + t] && y[t] == tokens[s + t + 1];
          found = same;
        }
        FUZZ_CHECK(found, "a training row is a window of the file");
      }
    }
    const size_t batches = loader.eval_batches();
    FUZZ_CHECK(batches == (tokens.size() < B * T + 1 ? 0 : (tokens.size() - 1) / (B * T)));
    for (size_t j = 0; j < std::min<size_t>(batches, 3); ++j) {
      loader.eval_batch(j, in.data(), tgt.data());
      for (size_t k = 0; k < B * T; ++k)
        FUZZ_CHECK(in[k] == tokens[j * B * T + k] && tgt[k] == tokens[j * B * T + k + 1],
                   "evaluation batch " + std::to_string(j) + " is its documented span");
    }
    bool refused = false;
    try {
      loader.eval_batch(batches, in.data(), tgt.data());
    } catch (const fp8lm::Error&) {
      refused = true;
    }
    FUZZ_CHECK(refused, "eval_batch past the end throws Error");
  } catch (const fp8lm::Error&) {
    FUZZ_CHECK(tokens.size() < T + 1, "the loader accepts files of at least one window");
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static const std::string path = fuzz::scratch_dir() + "/input.bin";
  fuzz::write_bytes(path, data, size);
  for (const int32_t vocab : {0, 50257, 257}) {
    try {
      const fp8lm::TokenFile f(path, vocab);
      // Accepted: the header is right and the size matches the count.
      int32_t header[3];
      FUZZ_CHECK(size >= fp8lm::kTokenFileHeaderBytes);
      std::memcpy(header, data, sizeof header);
      FUZZ_CHECK(header[0] == fp8lm::kTokenFileMagic && header[1] == fp8lm::kTokenFileVersion);
      FUZZ_CHECK(header[2] >= 0 && f.size() == static_cast<size_t>(header[2]));
      FUZZ_CHECK(size == fp8lm::kTokenFileHeaderBytes + 2 * f.size());
      // Every token is the input's, and inside the vocabulary; so is every sub-range.
      std::vector<uint16_t> tokens(f.size());
      f.read(0, tokens.size(), tokens.data());
      FUZZ_CHECK(tokens.empty() ||
                 std::memcmp(tokens.data(), data + fp8lm::kTokenFileHeaderBytes,
                             2 * tokens.size()) == 0);
      if (!tokens.empty()) {
        const size_t first = data[size - 1] % tokens.size();
        const size_t n = std::min<size_t>(tokens.size() - first, data[size - 2]);
        std::vector<uint16_t> part(n + 1, 0xABCD);
        f.read(first, n, part.data());
        FUZZ_CHECK(std::equal(part.begin(), part.begin() + static_cast<std::ptrdiff_t>(n),
                              tokens.begin() + static_cast<std::ptrdiff_t>(first)) &&
                   part[n] == 0xABCD, "read(first, n) is exactly those tokens");
      }
      // Past the end is an Error, whatever the sizes (no overflow in first + n).
      for (const auto& [first, n] : {std::pair<size_t, size_t>{f.size(), 1},
                                     {0, f.size() + 1},
                                     {1, SIZE_MAX},
                                     {SIZE_MAX, 2}}) {
        bool refused = false;
        uint16_t sink[2];
        try {
          f.read(first, n, sink);
        } catch (const fp8lm::Error&) {
          refused = true;
        }
        FUZZ_CHECK(refused, "read past the end throws Error");
      }
      uint64_t sum = 0;
      for (uint16_t t : tokens) {
        FUZZ_CHECK(vocab == 0 || t < vocab, "an accepted token is inside the vocabulary");
        sum += t;
      }
      fuzz::consume(sum);
      if (vocab != 50257) continue;  // the loader does not depend on the vocabulary
      // A few shapes, with a seed and rank taken from the input's last bytes.
      const uint64_t seed = size >= 8 ? data[size - 1] * 0x100000001ull + data[size - 2] : 7;
      const int rank = size >= 8 ? data[size - 3] % 4 : 0;
      const size_t Ts[] = {1, 3, 16}, Bs[] = {1, 2};
      for (size_t T : Ts)
        for (size_t B : Bs) check_loader(f, tokens, B, T, seed, rank);
    } catch (const fp8lm::Error& e) {
      fuzz::consume(std::strlen(e.what()));
    }
  }
  return 0;
}
