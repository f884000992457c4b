// Fuzzes the tokenizers (src/data/tokenizer.h) with arbitrary bytes, not only UTF-8:
//  - gpt2_pretokenize: non-empty pieces that are consecutive views of the input;
//  - Gpt2Tokenizer (GPT-2's own tables, read once): ids inside the vocabulary, and
//    decode(encode(x)) == x, since byte-level BPE is lossless;
//  - ByteTokenizer: the same round trip, end-of-text skipped by decode;
//  - decode of arbitrary ids (the input read as int32): an Error or a string, nothing else.
// The tables come from $FP8LM_DATA_DIR/gpt2, else from the source tree's data/gpt2
// (scripts/setup.sh fetches them).
#include <cstddef>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "core/check.h"
#include "data/tokenizer.h"
#include "fuzz_common.h"

#ifndef FP8LM_FUZZ_DATA_DIR
#define FP8LM_FUZZ_DATA_DIR "data"
#endif

namespace {

std::unique_ptr<fp8lm::Gpt2Tokenizer>& gpt2() {
  static std::unique_ptr<fp8lm::Gpt2Tokenizer> tok;
  return tok;
}

std::string show(std::string_view s) {
  std::string out;
  for (unsigned char c : s) {
    char buf[8];
    std::snprintf(buf, sizeof buf, "%02x", c);
    out += buf;
  }
  return out;
}

}  // namespace

extern "C" int LLVMFuzzerInitialize(int*, char***) {
  const char* env = std::getenv("FP8LM_DATA_DIR");
  const std::string dir = std::string(env != nullptr && *env != '\0' ? env : FP8LM_FUZZ_DATA_DIR) +
                          "/gpt2";
  try {
    gpt2() = std::make_unique<fp8lm::Gpt2Tokenizer>(dir + "/encoder.json", dir + "/vocab.bpe");
  } catch (const fp8lm::Error& e) {
    std::fprintf(stderr, "fuzz_tokenizer: cannot load the GPT-2 tables from %s: %s\n"
                 "(run scripts/setup.sh, or point FP8LM_DATA_DIR at a folder with gpt2/)\n",
                 dir.c_str(), e.what());
    std::exit(2);
  }
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string_view text(reinterpret_cast<const char*>(data), size);

  // Pre-tokenization: pieces tile the input.
  size_t pos = 0;
  for (std::string_view piece : fp8lm::gpt2_pretokenize(text)) {
    FUZZ_CHECK(!piece.empty(), "pieces are non-empty");
    FUZZ_CHECK(piece.data() == text.data() + pos, "pieces are consecutive views of the input");
    pos += piece.size();
    FUZZ_CHECK(pos <= text.size());
  }
  FUZZ_CHECK(pos == text.size(), "pieces cover the input");

  // GPT-2 BPE round trip.
  const fp8lm::Gpt2Tokenizer& tok = *gpt2();
  const std::vector<int32_t> ids = tok.encode(text);
  FUZZ_CHECK(ids.size() <= text.size(), "at most one token per byte");
  for (int32_t id : ids) FUZZ_CHECK(id >= 0 && id < tok.vocab_size() && id != tok.eot());
  const std::string back = tok.decode(ids);
  FUZZ_CHECK(back == text, "GPT-2 decode(encode(x)) == x for x = " + show(text));

  // Byte tokenizer round trip; end-of-text decodes to nothing.
  const fp8lm::ByteTokenizer bytes;
  std::vector<int32_t> b = bytes.encode(text);
  FUZZ_CHECK(b.size() == text.size());
  for (int32_t id : b) FUZZ_CHECK(id >= 0 && id < 256);
  b.insert(b.begin() + static_cast<std::ptrdiff_t>(b.size() / 2), bytes.eot());
  FUZZ_CHECK(bytes.decode(b) == text, "byte decode(encode(x)) == x");

  // Arbitrary ids: GPT-2 decode accepts exactly the ids inside its vocabulary.
  std::vector<int32_t> raw(size / sizeof(int32_t));
  if (!raw.empty()) std::memcpy(raw.data(), data, raw.size() * sizeof(int32_t));
  bool inside = true;
  for (int32_t id : raw) inside = inside && id >= 0 && id < tok.vocab_size();
  try {
    const std::string s = tok.decode(raw);
    FUZZ_CHECK(inside, "decode accepted an id outside the vocabulary");
    fuzz::consume(s.size());
    fuzz::consume(bytes.decode(raw).size());
  } catch (const fp8lm::Error&) {
    FUZZ_CHECK(!inside, "decode refused ids inside the vocabulary");
  }
  return 0;
}
