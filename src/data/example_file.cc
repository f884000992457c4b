#include "data/example_file.h"

#include <sys/stat.h>

#include <cstring>
#include <fstream>

#include "core/check.h"
#include "core/file.h"

namespace fp8lm {
namespace {

constexpr size_t kHeaderInts = 256;

struct Header {
  int32_t magic, version, kind;
  uint64_t examples, tokens;
  uint32_t max_len;
};

Header parse_header(const int32_t* h) {
  Header r{h[0], h[1], h[2], 0, 0, 0};
  std::memcpy(&r.examples, h + 3, 8);
  std::memcpy(&r.tokens, h + 5, 8);
  std::memcpy(&r.max_len, h + 7, 4);
  return r;
}

}  // namespace

bool is_example_file(const std::string& path) {
  // Only a regular file is opened (a FIFO would block here); the token-file reader refuses
  // the rest with its own message.
  struct stat st {};
  if (::stat(path.c_str(), &st) != 0 || !S_ISREG(st.st_mode)) return false;
  std::ifstream in(path, std::ios::binary);
  int32_t magic = 0;
  return in.read(reinterpret_cast<char*>(&magic), sizeof magic) && magic == kExampleFileMagic;
}

ExampleFile::ExampleFile(const std::string& path, int32_t vocab_size) : path_(path) {
  struct stat st {};
  if (::stat(path.c_str(), &st) != 0) fail(path, ": cannot open (no such file)");
  if (!S_ISREG(st.st_mode)) fail(path, ": not a regular file");
  const size_t bytes = static_cast<size_t>(st.st_size);
  std::ifstream in(path, std::ios::binary);
  if (!in) fail(path, ": cannot open");
  std::vector<int32_t> raw(kHeaderInts);
  if (bytes < kHeaderInts * 4 || !in.read(reinterpret_cast<char*>(raw.data()), kHeaderInts * 4))
    fail(path, ": too short for an example file header (", bytes, " bytes)");
  const Header h = parse_header(raw.data());
  if (h.magic != kExampleFileMagic)
    fail(path, ": bad magic ", h.magic, " (an example file starts with ", kExampleFileMagic, ")");
  if (h.version != kExampleFileVersion)
    fail(path, ": unsupported version ", h.version, " (expected ", kExampleFileVersion, ")");
  if (h.kind != kSupervisedExamples && h.kind != kPreferencePairs)
    fail(path, ": unknown kind ", h.kind, " (1: supervised examples, 2: preference pairs)");
  kind_ = h.kind;
  // Sizes against the file's, without overflow: each count is bounded by the bytes first.
  if (h.examples == 0 || h.examples > bytes / 8 || h.tokens > bytes / 3)
    fail(path, ": header says ", h.examples, " examples of ", h.tokens,
         " tokens, impossible in a file of ", bytes, " bytes");
  const size_t want = kHeaderInts * 4 + (h.examples + 1) * 8 + h.tokens * 3;
  if (bytes != want)
    fail(path, ": header says ", h.examples, " examples of ", h.tokens, " tokens (", want,
         " bytes) but the file has ", bytes, " bytes");
  offsets_.resize(h.examples + 1);
  tokens_.resize(h.tokens);
  mask_.resize(h.tokens);
  if (!in.read(reinterpret_cast<char*>(offsets_.data()), static_cast<std::streamsize>(offsets_.size() * 8)) ||
      !in.read(reinterpret_cast<char*>(tokens_.data()), static_cast<std::streamsize>(h.tokens * 2)) ||
      !in.read(reinterpret_cast<char*>(mask_.data()), static_cast<std::streamsize>(h.tokens)))
    fail(path, ": shorter than its header says (changed while read?)");
  if (offsets_.front() != 0 || offsets_.back() != h.tokens)
    fail(path, ": offsets run from ", offsets_.front(), " to ", offsets_.back(), ", not 0 to ",
         h.tokens);
  for (size_t i = 0; i < size(); ++i) {
    if (offsets_[i + 1] < offsets_[i] + 2 || offsets_[i + 1] > h.tokens)
      fail(path, ": example ", i, " has a bad extent [", offsets_[i], ", ", offsets_[i + 1],
           ") (at least 2 tokens each)");
    const auto t = tokens(i);
    const auto m = mask(i);
    bool target = false;
    for (size_t k = 0; k < t.size(); ++k) {
      if (vocab_size > 0 && t[k] >= vocab_size)
        fail(path, ": example ", i, " token ", k, " is ", t[k], ", outside the vocabulary of ",
             vocab_size);
      if (m[k] > 1) fail(path, ": example ", i, " mask ", k, " is ", int{m[k]}, " (0 or 1)");
      target = target || (k > 0 && m[k] == 1);
    }
    if (!target) fail(path, ": example ", i, " has no response token to learn");
    max_len_ = std::max(max_len_, t.size());
  }
  if (kind_ == kPreferencePairs && size() % 2 != 0)
    fail(path, ": ", size(), " examples in a file of preference pairs (chosen, rejected)");
  if (max_len_ != h.max_len)
    fail(path, ": header says the longest example has ", h.max_len, " tokens, it has ", max_len_);
}

void write_example_file(const std::string& path, const std::vector<Example>& examples,
                        int32_t kind) {
  FP8LM_CHECK(!examples.empty(), "no examples for ", path);
  FP8LM_CHECK(kind != kPreferencePairs || examples.size() % 2 == 0, path, ": unpaired example");
  std::vector<uint64_t> offsets{0};
  uint32_t max_len = 0;
  for (const Example& e : examples) {
    FP8LM_CHECK(e.tokens.size() == e.mask.size() && e.tokens.size() >= 2, path);
    offsets.push_back(offsets.back() + e.tokens.size());
    max_len = std::max<uint32_t>(max_len, static_cast<uint32_t>(e.tokens.size()));
  }
  std::vector<int32_t> header(kHeaderInts, 0);
  header[0] = kExampleFileMagic;
  header[1] = kExampleFileVersion;
  header[2] = kind;
  const uint64_t n = examples.size(), total = offsets.back();
  std::memcpy(&header[3], &n, 8);
  std::memcpy(&header[5], &total, 8);
  std::memcpy(&header[7], &max_len, 4);
  write_file_atomic(path, [&](const WriteFn& write) {
    write(header.data(), header.size() * 4);
    write(offsets.data(), offsets.size() * 8);
    for (const Example& e : examples) write(e.tokens.data(), e.tokens.size() * 2);
    for (const Example& e : examples) write(e.mask.data(), e.mask.size());
  });
}

}  // namespace fp8lm
