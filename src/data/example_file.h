// Example files: tokenized prompt/response examples that keep their loss mask, written by
// `fp8lm prepare` from JSONL (docs/post_training.md). Layout, little-endian:
//   header: 256 int32 — magic 20261206, version 1, kind (1: supervised examples; 2:
//     preference pairs, examples 2i chosen and 2i + 1 rejected, of one prompt), then
//     examples and tokens as uint64 (int32 slots 3–6), the longest example's length (slot 7),
//     zeros;
//   offsets: uint64 × (examples + 1), the first token of each example (0 … tokens);
//   tokens: uint16 × tokens;
//   mask: uint8 × tokens — 1 where the token is a target of the loss (a response token).
// The whole file is read and checked when opened (examples are small next to a pre-training
// corpus): errors name the file and the example.
#pragma once

#include <cstddef>
#include <cstdint>
#include <span>
#include <string>
#include <vector>

namespace fp8lm {

inline constexpr int32_t kExampleFileMagic = 20261206;
inline constexpr int32_t kExampleFileVersion = 1;
inline constexpr int32_t kSupervisedExamples = 1;
inline constexpr int32_t kPreferencePairs = 2;

// One example: tokens and, per token, whether the loss predicts it.
struct Example {
  std::vector<uint16_t> tokens;
  std::vector<uint8_t> mask;
};

class ExampleFile {
 public:
  // Reads and validates `path`: magic, version, kind, sizes against the file's, offsets
  // increasing, every example at least 2 tokens with a masked token after its first, every
  // token < vocab_size (when > 0); pairs: an even number of examples.
  explicit ExampleFile(const std::string& path, int32_t vocab_size = 0);
  const std::string& path() const { return path_; }
  int32_t kind() const { return kind_; }
  size_t size() const { return offsets_.size() - 1; }
  size_t max_length() const { return max_len_; }
  size_t total_tokens() const { return tokens_.size(); }
  std::span<const uint16_t> tokens(size_t i) const {
    return {tokens_.data() + offsets_[i], offsets_[i + 1] - offsets_[i]};
  }
  std::span<const uint8_t> mask(size_t i) const {
    return {mask_.data() + offsets_[i], offsets_[i + 1] - offsets_[i]};
  }

 private:
  std::string path_;
  std::vector<uint64_t> offsets_;
  std::vector<uint16_t> tokens_;
  std::vector<uint8_t> mask_;
  size_t max_len_ = 0;
  int32_t kind_ = kSupervisedExamples;
};

// Writes `examples` to `path` atomically (each must satisfy what ExampleFile checks).
void write_example_file(const std::string& path, const std::vector<Example>& examples,
                        int32_t kind = kSupervisedExamples);

// Whether `path` starts with the example-file magic (else it is read as a token file).
bool is_example_file(const std::string& path);

}  // namespace fp8lm
