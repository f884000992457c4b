#include "tensor/safetensors.h"

#include <algorithm>
#include <cstdint>
#include <limits>
#include <nlohmann/json.hpp>
#include <optional>
#include <set>
#include <unordered_set>

#include "core/check.h"

namespace fp8lm {

namespace {

using nlohmann::json;

constexpr uint64_t kMaxHeaderBytes = 100'000'000;
constexpr size_t kDataAlignment = 64;
// A valid header nests three deep (object -> entry -> shape); anything much deeper is junk,
// and refusing it early bounds the parser's work.
constexpr int kMaxJsonDepth = 16;
constexpr std::string_view kMetadataKey = "__metadata__";

// A JSON-quoted, escaped string: keeps names with control characters on one line.
std::string quote(std::string_view s) {
  return json(std::string(s)).dump(-1, ' ', false, json::error_handler_t::replace);
}

enum class IntStatus { kOk, kNotInteger, kNegative };

// A non-negative JSON integer (signed or unsigned storage) as uint64.
IntStatus read_uint(const json& j, uint64_t* out) {
  if (j.is_number_unsigned()) {
    *out = j.get<uint64_t>();
    return IntStatus::kOk;
  }
  if (j.is_number_integer()) {
    const int64_t v = j.get<int64_t>();
    if (v < 0) return IntStatus::kNegative;
    *out = static_cast<uint64_t>(v);
    return IntStatus::kOk;
  }
  return IntStatus::kNotInteger;
}

// A first, linear pass over the header (SAX events, no document) that finds what the
// document parser would hide or make slow: duplicate keys at any level (nlohmann keeps the
// last silently) and deep nesting. nlohmann's own callback parser rescans each object as it
// closes, which made headers of many tensors quadratic.
class HeaderChecker {
 public:
  std::string problem;

  bool null() { return true; }
  bool boolean(bool) { return true; }
  bool number_integer(json::number_integer_t) { return true; }
  bool number_unsigned(json::number_unsigned_t) { return true; }
  bool number_float(json::number_float_t, const std::string&) { return true; }
  bool string(std::string&) { return true; }
  bool binary(json::binary_t&) { return true; }
  bool start_object(std::size_t) {
    keys_.emplace_back();
    return enter();
  }
  bool key(std::string& k) {
    if (keys_.back().insert(k).second) return true;
    problem = "header has duplicate key " + quote(k);
    return false;
  }
  bool end_object() {
    keys_.pop_back();
    --depth_;
    return true;
  }
  bool start_array(std::size_t) { return enter(); }
  bool end_array() {
    --depth_;
    return true;
  }
  bool parse_error(std::size_t, const std::string&, const json::exception& e) {
    // Drop nlohmann's "[json.exception.parse_error.101] " prefix.
    std::string_view msg = e.what();
    if (const size_t pos = msg.find("] "); !msg.empty() && msg[0] == '[' && pos != msg.npos)
      msg.remove_prefix(pos + 2);
    problem = "header is not valid JSON: " + std::string(msg);
    return false;
  }

 private:
  bool enter() {
    if (++depth_ <= kMaxJsonDepth) return true;
    problem = "header is nested more than " + std::to_string(kMaxJsonDepth) + " levels deep";
    return false;
  }
  std::vector<std::unordered_set<std::string>> keys_;  // one set per open object
  int depth_ = 0;
};

json parse_header(std::string_view text, const std::string& path) {
  HeaderChecker check;
  if (!json::sax_parse(text.begin(), text.end(), &check)) fail(path, ": ", check.problem);
  try {
    return json::parse(text.begin(), text.end());
  } catch (const json::exception& e) {
    fail(path, ": header is not valid JSON: ", e.what());
  }
}

struct RawEntry {
  std::string name;
  DType dtype;
  Shape shape;
  uint64_t begin;
  uint64_t end;
};

RawEntry parse_entry(const std::string& path, const std::string& name, const json& entry,
                     uint64_t data_bytes) {
  const std::string where = path + ": tensor " + quote(name) + ": ";
  if (!entry.is_object()) fail(where, "entry is not a JSON object");
  for (const auto& [key, value] : entry.items()) {
    (void)value;
    if (key != "dtype" && key != "shape" && key != "data_offsets")
      fail(where, "unexpected field ", quote(key));
  }
  for (const char* field : {"dtype", "shape", "data_offsets"})
    if (!entry.contains(field)) fail(where, "missing field \"", field, "\"");

  RawEntry r;
  r.name = name;

  const json& dtype = entry.at("dtype");
  if (!dtype.is_string()) fail(where, "dtype is not a string");
  const auto& dtype_str = dtype.get_ref<const std::string&>();
  const std::optional<DType> dt = dtype_from_safetensors(dtype_str);
  if (!dt) fail(where, "unknown dtype ", quote(dtype_str));
  r.dtype = *dt;

  const json& shape = entry.at("shape");
  if (!shape.is_array()) fail(where, "shape is not an array");
  if (shape.size() > static_cast<size_t>(Shape::kMaxRank))
    fail(where, "shape has rank ", shape.size(), ", more than the maximum of ", Shape::kMaxRank);
  int64_t numel = 1;
  for (size_t i = 0; i < shape.size(); ++i) {
    uint64_t d = 0;
    switch (read_uint(shape[i], &d)) {
      case IntStatus::kNotInteger:
        fail(where, "shape[", i, "] is not an integer");
      case IntStatus::kNegative:
        fail(where, "shape[", i, "] is negative");
      case IntStatus::kOk:
        break;
    }
    if (d > static_cast<uint64_t>(std::numeric_limits<int64_t>::max()))
      fail(where, "shape[", i, "] = ", d, " is too large");
    if (__builtin_mul_overflow(numel, static_cast<int64_t>(d), &numel))
      fail(where, "element count of shape ", shape.dump(), " overflows");
    r.shape.push_back(static_cast<int64_t>(d));
  }
  int64_t bytes = 0;
  if (__builtin_mul_overflow(numel, static_cast<int64_t>(dtype_size(r.dtype)), &bytes))
    fail(where, "byte size of ", dtype_str, " shape ", shape.dump(), " overflows");

  const json& offsets = entry.at("data_offsets");
  if (!offsets.is_array() || offsets.size() != 2)
    fail(where, "data_offsets is not an array of two integers");
  uint64_t bounds[2] = {0, 0};
  for (size_t i = 0; i < 2; ++i) {
    switch (read_uint(offsets[i], &bounds[i])) {
      case IntStatus::kNotInteger:
        fail(where, "data_offsets[", i, "] is not an integer");
      case IntStatus::kNegative:
        fail(where, "data_offsets[", i, "] is negative");
      case IntStatus::kOk:
        break;
    }
  }
  r.begin = bounds[0];
  r.end = bounds[1];
  if (r.end < r.begin) fail(where, "data_offsets end ", r.end, " is before begin ", r.begin);
  if (r.end - r.begin != static_cast<uint64_t>(bytes))
    fail(where, "data_offsets span ", r.end - r.begin, " bytes, but ", dtype_str, " shape ",
         r.shape.str(), " needs ", bytes);
  if (r.end > data_bytes)
    fail(where, "data_offsets end ", r.end, " is beyond the data section (", data_bytes, " bytes)");
  return r;
}

}  // namespace

SafetensorsFile::SafetensorsFile(const std::string& path) : map_(path) {
  const size_t size = map_.size();
  if (size < 8)
    fail(path, ": file too short for a safetensors header (", size, " bytes, need at least 8)");
  uint64_t header_len = 0;
  for (int i = 7; i >= 0; --i) header_len = (header_len << 8) | map_.data()[i];
  if (header_len == 0) fail(path, ": header length is 0");
  if (header_len > kMaxHeaderBytes)
    fail(path, ": header length ", header_len, " exceeds the limit of ", kMaxHeaderBytes, " bytes");
  if (header_len > size - 8)
    fail(path, ": header length ", header_len, " exceeds the file size (", size - 8,
         " bytes after the length field)");
  data_offset_ = 8 + static_cast<size_t>(header_len);
  const uint64_t data_bytes = size - data_offset_;

  const std::string_view text(reinterpret_cast<const char*>(map_.data()) + 8, header_len);
  // nlohmann treats a NUL byte as the end of input and would ignore whatever follows it.
  if (const size_t nul = text.find('\0'); nul != text.npos)
    fail(path, ": header is not valid JSON: NUL byte at header offset ", nul);
  const json header = parse_header(text, path);
  if (!header.is_object()) fail(path, ": header is not a JSON object");

  std::vector<RawEntry> raw;
  raw.reserve(header.size());
  for (const auto& [name, value] : header.items()) {
    if (name == kMetadataKey) {
      if (!value.is_object()) fail(path, ": __metadata__ is not a JSON object");
      for (const auto& [key, v] : value.items()) {
        if (!v.is_string())
          fail(path, ": __metadata__ value for key ", quote(key), " is not a string");
        metadata_.emplace(key, v.get<std::string>());
      }
      continue;
    }
    if (name.empty()) fail(path, ": header has a tensor with an empty name");
    raw.push_back(parse_entry(path, name, value, data_bytes));
  }

  // File order; ties (only possible between zero-size tensors, or a zero-size tensor and
  // the start of another) keep the header's sorted-by-name order.
  std::stable_sort(raw.begin(), raw.end(),
                   [](const RawEntry& a, const RawEntry& b) { return a.begin < b.begin; });
  // The tensors must tile the data section exactly, as safetensors requires: a gap, an
  // overlap or trailing bytes mean the header and the data disagree (a header length
  // lowered into its padding shifts every tensor and is caught here).
  const RawEntry* prev = nullptr;
  uint64_t covered = 0;
  for (const RawEntry& r : raw) {
    if (r.begin == r.end) continue;
    if (r.begin < covered)
      fail(path, ": tensors ", quote(prev->name), " (bytes ", prev->begin, "..", prev->end,
           ") and ", quote(r.name), " (bytes ", r.begin, "..", r.end,
           ") overlap in the data section");
    if (r.begin > covered)
      fail(path, ": bytes ", covered, "..", r.begin, " of the data section belong to no tensor",
           " (header and data disagree)");
    covered = r.end;
    prev = &r;
  }
  if (covered != data_bytes)
    fail(path, ": the tensors cover ", covered, " bytes but the data section has ", data_bytes,
         " (header and data disagree)");

  const uint8_t* data = map_.data() + data_offset_;
  entries_.reserve(raw.size());
  for (RawEntry& r : raw) {
    index_.emplace(r.name, entries_.size());
    entries_.push_back({std::move(r.name), ConstTensorView{data + r.begin, r.dtype, r.shape}});
  }
}

const SafetensorsEntry* SafetensorsFile::find(std::string_view name) const {
  const auto it = index_.find(name);
  return it == index_.end() ? nullptr : &entries_[it->second];
}

void write_safetensors_streamed(const std::string& path,
                                const std::vector<SafetensorsSource>& tensors,
                                const std::map<std::string, std::string>& metadata) {
  // Everything is validated and the header built before the file is touched.
  nlohmann::ordered_json header = nlohmann::ordered_json::object();
  if (!metadata.empty()) {
    auto& meta = header[std::string(kMetadataKey)];
    meta = nlohmann::ordered_json::object();
    for (const auto& [key, value] : metadata) meta[key] = value;
  }
  std::set<std::string_view> seen;
  uint64_t offset = 0;
  for (const SafetensorsSource& t : tensors) {
    if (t.name.empty()) fail(path, ": cannot write a tensor with an empty name");
    if (t.name == kMetadataKey) fail(path, ": cannot write a tensor named \"__metadata__\"");
    if (!seen.insert(t.name).second) fail(path, ": duplicate tensor name ", quote(t.name));
    const size_t bytes = static_cast<size_t>(t.shape.numel()) * dtype_size(t.dtype);
    nlohmann::ordered_json shape = nlohmann::ordered_json::array();
    for (int64_t d : t.shape) shape.push_back(d);
    auto& entry = header[t.name];
    entry["dtype"] = std::string(info(t.dtype).safetensors);
    entry["shape"] = std::move(shape);
    entry["data_offsets"] = nlohmann::ordered_json::array({offset, offset + bytes});
    offset += bytes;
  }

  std::string text;
  try {
    text = header.dump();
  } catch (const nlohmann::ordered_json::exception&) {
    fail(path, ": a tensor name or metadata string is not valid UTF-8");
  }
  const size_t unpadded = 8 + text.size();
  const size_t padded = (unpadded + kDataAlignment - 1) / kDataAlignment * kDataAlignment;
  text.append(padded - unpadded, ' ');

  uint8_t len[8];
  const uint64_t n = text.size();
  for (int i = 0; i < 8; ++i) len[i] = static_cast<uint8_t>(n >> (8 * i));

  write_file_atomic(path, [&](const WriteFn& write) {
    write(len, sizeof(len));
    write(text.data(), text.size());
    for (const SafetensorsSource& t : tensors) {
      size_t written = 0;
      t.write([&](const void* data, size_t bytes) {
        written += bytes;
        write(data, bytes);
      });
      const size_t want = static_cast<size_t>(t.shape.numel()) * dtype_size(t.dtype);
      FP8LM_CHECK(written == want, path, ": tensor ", quote(t.name), " produced ", written,
                  " bytes, its header says ", want);
    }
  });
}

void write_safetensors(const std::string& path,
                       const std::vector<std::pair<std::string, ConstTensorView>>& tensors,
                       const std::map<std::string, std::string>& metadata) {
  std::vector<SafetensorsSource> sources;
  for (const auto& [name, view] : tensors) {
    FP8LM_CHECK(view.bytes() == 0 || view.data != nullptr, "tensor ", quote(name), " has no data");
    sources.push_back({name, view.dtype, view.shape, [v = view](const WriteFn& w) {
                         if (v.bytes() > 0) w(v.data, v.bytes());
                       }});
  }
  write_safetensors_streamed(path, sources, metadata);
}

}  // namespace fp8lm
