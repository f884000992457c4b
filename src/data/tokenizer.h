// Tokenizers: GPT-2's byte-level BPE (identical to GPT-2's: its pre-tokenization pattern
// with Unicode letter/number classes, the byte-to-unicode map, merges by rank), read from
// encoder.json and vocab.bpe; and a plain byte tokenizer (256 bytes + end-of-text).
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

namespace fp8lm {

class Tokenizer {
 public:
  virtual ~Tokenizer() = default;
  virtual std::vector<int32_t> encode(std::string_view text) const = 0;
  virtual std::string decode(const std::vector<int32_t>& ids) const = 0;
  virtual int32_t eot() const = 0;         // <|endoftext|>
  virtual int32_t vocab_size() const = 0;  // ids are < vocab_size
};

// GPT-2's pre-tokenization: 's|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|
// \s+(?!\S)|\s+ — the pieces of `text` in order (they concatenate back to text).
std::vector<std::string_view> gpt2_pretokenize(std::string_view text);

class Gpt2Tokenizer : public Tokenizer {
 public:
  // Throws Error naming the file when either is missing or malformed.
  Gpt2Tokenizer(const std::string& encoder_json, const std::string& vocab_bpe);
  std::vector<int32_t> encode(std::string_view text) const override;
  std::string decode(const std::vector<int32_t>& ids) const override;
  int32_t eot() const override { return 50256; }
  int32_t vocab_size() const override { return static_cast<int32_t>(decoder_.size()); }

 private:
  void bpe(std::string_view piece, std::vector<int32_t>& out) const;

  std::unordered_map<std::string, int32_t> encoder_;  // symbol string → id
  std::vector<std::string> decoder_;                  // id → symbol string
  std::unordered_map<std::string, int32_t> ranks_;    // "left right" → merge rank
  std::string byte_symbol_[256];                      // byte → its unicode symbol (UTF-8)
  std::unordered_map<char32_t, uint8_t> symbol_byte_;
  mutable std::unordered_map<std::string, std::vector<int32_t>> cache_;
};

class ByteTokenizer : public Tokenizer {
 public:
  std::vector<int32_t> encode(std::string_view text) const override;
  std::string decode(const std::vector<int32_t>& ids) const override;
  int32_t eot() const override { return 256; }
  int32_t vocab_size() const override { return 257; }
};

// "gpt2" (files from `dir`: encoder.json, vocab.bpe) or "byte".
std::unique_ptr<Tokenizer> make_tokenizer(const std::string& name, const std::string& dir);

}  // namespace fp8lm
