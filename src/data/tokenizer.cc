#include "data/tokenizer.h"

#include <climits>
#include <filesystem>
#include <sstream>
#include <nlohmann/json.hpp>

#include "core/check.h"
#include "core/file.h"
#include "data/unicode.h"

namespace fp8lm {
namespace {

using unicode::is_letter;
using unicode::is_number;
using unicode::is_space;

// Code point at i without advancing (and its end), or 0 at the end of text.
char32_t peek(std::string_view s, size_t i, size_t* end) {
  if (i >= s.size()) {
    *end = i;
    return 0;
  }
  size_t j = i;
  const char32_t cp = unicode::next_code_point(s, j);
  *end = j;
  return cp;
}

// Length of the longest run from i of code points satisfying pred.
template <typename Pred>
size_t run(std::string_view s, size_t i, Pred pred) {
  size_t j = i, next;
  while (j < s.size() && pred(peek(s, j, &next))) j = next;
  return j - i;
}

bool is_other(char32_t c) { return !is_space(c) && !is_letter(c) && !is_number(c); }

// Length of the piece starting at i (> 0 for i < size).
size_t piece_length(std::string_view s, size_t i) {
  // 's 't 're 've 'm 'll 'd
  if (s[i] == '\'') {
    for (std::string_view c : {"'s", "'t", "'re", "'ve", "'m", "'ll", "'d"})
      if (s.substr(i, c.size()) == c) return c.size();
  }
  // " ?\p{L}+", " ?\p{N}+", " ?[^\s\p{L}\p{N}]+": the optional space is tried first.
  const size_t after_space = s[i] == ' ' ? i + 1 : i;
  for (auto pred : {is_letter, is_number, is_other}) {
    for (size_t start : {after_space, i}) {
      const size_t n = run(s, start, pred);
      if (n > 0) return start - i + n;
      if (start == i) break;
    }
  }
  // "\s+(?!\S)": the whitespace run, minus its last code point when a non-space follows.
  const size_t ws = run(s, i, is_space);
  if (ws > 0) {
    if (i + ws == s.size()) return ws;
    size_t last = i, next = i;
    while (next < i + ws) {  // start of the run's last code point
      last = next;
      peek(s, next, &next);
    }
    if (last > i) return last - i;
    return ws;  // "\s+" (a single space before a non-space)
  }
  size_t next;
  peek(s, i, &next);  // unreachable for valid classes; always progress
  return next - i;
}

std::string read_file(const std::string& path) {
  if (!std::filesystem::exists(path))
    fail(path, ": cannot open (scripts/setup.sh fetches the GPT-2 tokenizer files)");
  return read_text_file(path);
}

}  // namespace

std::vector<std::string_view> gpt2_pretokenize(std::string_view text) {
  std::vector<std::string_view> out;
  for (size_t i = 0; i < text.size();) {
    const size_t n = piece_length(text, i);
    out.push_back(text.substr(i, n));
    i += n;
  }
  return out;
}

Gpt2Tokenizer::Gpt2Tokenizer(const std::string& encoder_json, const std::string& vocab_bpe) {
  // GPT-2's byte-to-unicode map: printable bytes map to themselves, the rest to 256 + k.
  int k = 0;
  for (int b = 0; b < 256; ++b) {
    const bool printable = (b >= '!' && b <= '~') || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE);
    const char32_t cp = printable ? static_cast<char32_t>(b) : static_cast<char32_t>(256 + k++);
    unicode::append_utf8(byte_symbol_[b], cp);
    symbol_byte_[cp] = static_cast<uint8_t>(b);
  }
  nlohmann::json enc;
  try {
    enc = nlohmann::json::parse(read_file(encoder_json));
  } catch (const nlohmann::json::exception& e) {
    fail(encoder_json, ": not valid JSON: ", e.what());
  }
  if (!enc.is_object() || enc.size() < 256) fail(encoder_json, ": not a GPT-2 encoder table");
  decoder_.resize(enc.size());
  for (const auto& [sym, id] : enc.items()) {
    if (!id.is_number_integer() || id.get<int64_t>() < 0 ||
        id.get<int64_t>() >= static_cast<int64_t>(enc.size()))
      fail(encoder_json, ": bad id for symbol ", nlohmann::json(sym).dump());
    encoder_[sym] = id.get<int32_t>();
    decoder_[static_cast<size_t>(id.get<int32_t>())] = sym;
  }
  std::istringstream merges(read_file(vocab_bpe));
  std::string line;
  int32_t rank = 0;
  while (std::getline(merges, line)) {
    if (line.empty() || line.starts_with("#version")) continue;
    if (line.find(' ') == std::string::npos) fail(vocab_bpe, ": bad merge line '", line, "'");
    ranks_.emplace(line, rank++);
  }
  if (rank == 0) fail(vocab_bpe, ": no merges");
}

void Gpt2Tokenizer::bpe(std::string_view piece, std::vector<int32_t>& out) const {
  const std::string key(piece);
  if (const auto it = cache_.find(key); it != cache_.end()) {
    out.insert(out.end(), it->second.begin(), it->second.end());
    return;
  }
  std::vector<std::string> word;
  for (unsigned char c : piece) word.push_back(byte_symbol_[c]);
  while (word.size() > 1) {
    // The adjacent pair with the lowest merge rank; merge every occurrence of it.
    int32_t best = INT32_MAX;
    size_t at = 0;
    for (size_t j = 0; j + 1 < word.size(); ++j) {
      const auto it = ranks_.find(word[j] + " " + word[j + 1]);
      if (it != ranks_.end() && it->second < best) {
        best = it->second;
        at = j;
      }
    }
    if (best == INT32_MAX) break;
    const std::string left = word[at], right = word[at + 1];
    std::vector<std::string> merged;
    for (size_t j = 0; j < word.size();) {
      if (j + 1 < word.size() && word[j] == left && word[j + 1] == right) {
        merged.push_back(left + right);
        j += 2;
      } else {
        merged.push_back(word[j++]);
      }
    }
    word.swap(merged);
  }
  std::vector<int32_t> ids;
  for (const std::string& sym : word) {
    const auto it = encoder_.find(sym);
    FP8LM_CHECK(it != encoder_.end(), "GPT-2 vocabulary lacks symbol ", sym);
    ids.push_back(it->second);
  }
  out.insert(out.end(), ids.begin(), ids.end());
  if (cache_.size() < (1u << 20)) cache_.emplace(key, std::move(ids));
}

std::vector<int32_t> Gpt2Tokenizer::encode(std::string_view text) const {
  std::vector<int32_t> out;
  for (std::string_view piece : gpt2_pretokenize(text)) bpe(piece, out);
  return out;
}

std::string Gpt2Tokenizer::decode(const std::vector<int32_t>& ids) const {
  std::string out;
  for (int32_t id : ids) {
    FP8LM_CHECK(id >= 0 && static_cast<size_t>(id) < decoder_.size(), "token id ", id,
                " outside the GPT-2 vocabulary");
    const std::string& sym = decoder_[static_cast<size_t>(id)];
    for (size_t i = 0; i < sym.size();) {
      const auto it = symbol_byte_.find(unicode::next_code_point(sym, i));
      if (it != symbol_byte_.end()) out += static_cast<char>(it->second);
    }
  }
  return out;
}

std::vector<int32_t> ByteTokenizer::encode(std::string_view text) const {
  std::vector<int32_t> out(text.size());
  for (size_t i = 0; i < text.size(); ++i) out[i] = static_cast<unsigned char>(text[i]);
  return out;
}

std::string ByteTokenizer::decode(const std::vector<int32_t>& ids) const {
  std::string out;
  for (int32_t id : ids)
    if (id >= 0 && id < 256) out += static_cast<char>(id);
  return out;
}

std::unique_ptr<Tokenizer> make_tokenizer(const std::string& name, const std::string& dir) {
  if (name == "byte") return std::make_unique<ByteTokenizer>();
  if (name == "gpt2")
    return std::make_unique<Gpt2Tokenizer>(dir + "/encoder.json", dir + "/vocab.bpe");
  fail("unknown tokenizer '", name, "' (known: gpt2, byte)");
}

}  // namespace fp8lm
