// Fuzzes the safetensors reader (src/tensor/safetensors.h) with whole files.
//
// An accepted file is checked against the input itself: the header is parsed again here,
// and every tensor's view must be exactly its data_offsets range of the input's data section
// (memcmp against the fuzzer's buffer, whose bounds ASan knows exactly: the file's own
// memory map is not instrumented, so a view past the end of the file would otherwise go
// unnoticed up to the end of its page).
#include <cstring>
#include <nlohmann/json.hpp>
#include <string>

#include "core/check.h"
#include "fuzz_common.h"
#include "tensor/safetensors.h"

namespace {

uint64_t as_u64(const nlohmann::json& j) {
  FUZZ_CHECK(j.is_number_unsigned() || (j.is_number_integer() && j.get<int64_t>() >= 0),
             "an accepted data offset is a non-negative integer: " + j.dump());
  return j.is_number_unsigned() ? j.get<uint64_t>() : static_cast<uint64_t>(j.get<int64_t>());
}

void check_accepted(const fp8lm::SafetensorsFile& f, const uint8_t* data, size_t size) {
  FUZZ_CHECK(size >= 8);
  uint64_t header_len = 0;
  for (int i = 7; i >= 0; --i) header_len = header_len << 8 | data[i];
  FUZZ_CHECK(f.data_offset() == 8 + header_len && f.data_offset() <= size);
  const size_t data_bytes = size - f.data_offset();
  const uint8_t* section = data + f.data_offset();

  const nlohmann::json header =
      nlohmann::json::parse(data + 8, data + f.data_offset(), nullptr, /*allow_exceptions=*/false);
  FUZZ_CHECK(header.is_object(), "an accepted header is a JSON object");
  const bool has_metadata = header.contains("__metadata__");
  FUZZ_CHECK(f.tensors().size() + (has_metadata ? 1 : 0) == header.size());

  // Metadata: the same keys and values as the header's.
  if (has_metadata) {
    const nlohmann::json& m = header.at("__metadata__");
    FUZZ_CHECK(m.is_object() && m.size() == f.metadata().size());
    for (const auto& [key, value] : f.metadata()) {
      FUZZ_CHECK(m.contains(key) && m.at(key).is_string() && m.at(key).get<std::string>() == value);
    }
  } else {
    FUZZ_CHECK(f.metadata().empty());
  }

  const uint8_t* base = nullptr;  // where the views say the data section starts
  uint64_t last_begin = 0, furthest_end = 0;
  uint64_t sum = 0;
  for (const fp8lm::SafetensorsEntry& e : f.tensors()) {
    FUZZ_CHECK(!e.name.empty() && e.name != "__metadata__");
    FUZZ_CHECK(f.find(e.name) == &e, "find() returns the entry of its own name");
    FUZZ_CHECK(header.contains(e.name));
    const nlohmann::json& entry = header.at(e.name);
    const nlohmann::json& offsets = entry.at("data_offsets");
    const uint64_t begin = as_u64(offsets.at(0)), end = as_u64(offsets.at(1));

    // Shape, dtype and byte count agree with the header.
    const nlohmann::json& shape = entry.at("shape");
    FUZZ_CHECK(static_cast<size_t>(e.view.shape.rank()) == shape.size());
    for (int i = 0; i < e.view.shape.rank(); ++i)
      FUZZ_CHECK(static_cast<uint64_t>(e.view.shape[i]) == as_u64(shape.at(static_cast<size_t>(i))));
    FUZZ_CHECK(fp8lm::info(e.view.dtype).safetensors == entry.at("dtype").get<std::string>());
    const size_t bytes = e.view.bytes();
    FUZZ_CHECK(end >= begin && end - begin == bytes, "span matches dtype x shape for " + e.name);
    FUZZ_CHECK(end <= data_bytes, "tensor " + e.name + " ends inside the file");

    // File order; non-empty ranges do not overlap.
    FUZZ_CHECK(begin >= last_begin, "tensors() is sorted by data offset");
    last_begin = begin;
    if (bytes > 0) {
      FUZZ_CHECK(begin >= furthest_end, "tensor " + e.name + " overlaps an earlier one");
      furthest_end = end;
    }

    // The view points at its own bytes: one base for all views, the same bytes as the input.
    const auto* p = static_cast<const uint8_t*>(e.view.data);
    if (base == nullptr) base = p - begin;
    FUZZ_CHECK(p == base + begin, "views share one data-section base");
    FUZZ_CHECK(std::memcmp(p, section + begin, bytes) == 0, "view bytes of " + e.name);
    for (size_t i = 0; i < bytes; ++i) sum += p[i];
    fuzz::consume(e.view.shape.str().size());
  }
  fuzz::consume(sum);
  FUZZ_CHECK(f.find("") == nullptr && f.find("__metadata__") == nullptr);
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static const std::string path = fuzz::scratch_dir() + "/input.safetensors";
  fuzz::write_bytes(path, data, size);
  try {
    const fp8lm::SafetensorsFile f(path);
    check_accepted(f, data, size);
  } catch (const fp8lm::Error& e) {
    fuzz::consume(std::strlen(e.what()));
  }
  return 0;
}
