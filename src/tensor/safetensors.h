// safetensors I/O. Reading maps the file and validates the whole header up front (files are
// untrusted: every problem is an Error naming the file); the tensor views then point
// straight into the map. Writing is atomic and aligns the data section to 64 bytes.
//
// Format: u64 little-endian N, then N bytes of UTF-8 JSON
//   {"<name>": {"dtype": "F32", "shape": [2, 3], "data_offsets": [begin, end]}, ...,
//    "__metadata__": {"<key>": "<value>", ...}}
// then the data section; offsets are relative to its start.
#pragma once

#include <cstddef>
#include <functional>
#include <map>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "core/file.h"
#include "tensor/tensor.h"

namespace fp8lm {

struct SafetensorsEntry {
  std::string name;
  ConstTensorView view;  // points into the file's memory map
};

class SafetensorsFile {
 public:
  // Maps `path` and validates it completely; throws Error on any problem.
  explicit SafetensorsFile(const std::string& path);

  const std::string& path() const { return map_.path(); }
  // The map's evict() for a tensor's bytes (read, not needed again soon).
  void evict(const SafetensorsEntry& e) const { map_.evict(e.view.data, e.view.bytes()); }
  // Sorted by data offset (file order); ties (zero-size tensors) by name.
  const std::vector<SafetensorsEntry>& tensors() const { return entries_; }
  // nullptr when absent.
  const SafetensorsEntry* find(std::string_view name) const;
  // The "__metadata__" object (empty when absent).
  const std::map<std::string, std::string>& metadata() const { return metadata_; }
  // Byte offset of the data section in the file (8 + header length).
  size_t data_offset() const { return data_offset_; }

 private:
  MappedFile map_;
  size_t data_offset_ = 0;
  std::vector<SafetensorsEntry> entries_;
  std::map<std::string, size_t, std::less<>> index_;  // name -> position in entries_
  std::map<std::string, std::string> metadata_;
};

// Writes atomically (write_file_atomic). Tensors are laid out in the given order,
// contiguously. The header JSON is padded with spaces so the data section starts at a
// multiple of 64 bytes. Throws Error for duplicate names, empty names, the name
// "__metadata__" and names or metadata that are not valid UTF-8; nothing is written then.
void write_safetensors(const std::string& path,
                       const std::vector<std::pair<std::string, ConstTensorView>>& tensors,
                       const std::map<std::string, std::string>& metadata = {});

// A tensor whose bytes are produced while the file is written (e.g. converted chunk by
// chunk, so no full-size copy exists): `write` must emit exactly numel · dtype size bytes.
struct SafetensorsSource {
  std::string name;
  DType dtype;
  Shape shape;
  std::function<void(const WriteFn&)> write;
};
// The same as above for produced tensors; a source that writes the wrong byte count is an
// Error and leaves `path` untouched.
void write_safetensors_streamed(const std::string& path,
                                const std::vector<SafetensorsSource>& tensors,
                                const std::map<std::string, std::string>& metadata = {});

}  // namespace fp8lm
