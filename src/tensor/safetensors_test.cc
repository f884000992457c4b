#include "tensor/safetensors.h"

#include <gtest/gtest.h>
#include <unistd.h>

#include <cstdint>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <string>
#include <vector>

namespace fp8lm {
namespace {

namespace fs = std::filesystem;

std::string read_all(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
}

void write_all(const std::string& path, const std::string& bytes) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
  ASSERT_TRUE(out.good()) << path;
}

std::string le64(uint64_t n) {
  std::string s(8, '\0');
  for (int i = 0; i < 8; ++i) s[static_cast<size_t>(i)] = static_cast<char>(n >> (8 * i));
  return s;
}

uint64_t read_le64(const std::string& bytes) {
  uint64_t n = 0;
  for (int i = 7; i >= 0; --i) n = (n << 8) | static_cast<uint8_t>(bytes[static_cast<size_t>(i)]);
  return n;
}

// Deterministic bytes for a tensor.
std::vector<uint8_t> pattern(size_t bytes, unsigned seed) {
  std::vector<uint8_t> v(bytes);
  for (size_t i = 0; i < bytes; ++i) v[i] = static_cast<uint8_t>(i * 37 + seed * 11 + 1);
  return v;
}

class SafetensorsTest : public ::testing::Test {
 protected:
  void SetUp() override {
    const auto* test = ::testing::UnitTest::GetInstance()->current_test_info();
    dir_ = fs::path(::testing::TempDir()) /
           ("fp8lm_safetensors_" + std::string(test->name()) + "_" + std::to_string(::getpid()));
    fs::remove_all(dir_);
    fs::create_directories(dir_);
  }
  void TearDown() override {
    std::error_code ec;
    fs::remove_all(dir_, ec);
  }

  std::string path(const std::string& name) const { return (dir_ / name).string(); }

  // A file whose length field is `header.size()`.
  std::string write_file(const std::string& header, const std::string& data = "") {
    return write_bytes(le64(header.size()) + header + data);
  }
  std::string write_bytes(const std::string& bytes) {
    const std::string p = path("bad.safetensors");
    write_all(p, bytes);
    return p;
  }

  // Opening `p` must throw one Error line naming the file and containing `keyword`.
  static void expect_error(const std::string& p, const std::string& keyword) {
    try {
      SafetensorsFile f(p);
      ADD_FAILURE() << "no error for " << p << ", expected one containing: " << keyword;
    } catch (const Error& e) {
      const std::string msg = e.what();
      EXPECT_NE(msg.find(p), std::string::npos) << msg;
      EXPECT_NE(msg.find(keyword), std::string::npos) << "'" << keyword << "' not in: " << msg;
      EXPECT_EQ(msg.find('\n'), std::string::npos) << msg;
    }
  }
  void expect_header_error(const std::string& header, const std::string& keyword,
                           const std::string& data = "") {
    SCOPED_TRACE(header);
    expect_error(write_file(header, data), keyword);
  }

  std::vector<std::string> temp_leftovers() const {
    std::vector<std::string> out;
    for (const auto& e : fs::directory_iterator(dir_))
      if (e.path().filename().string().find(".tmp.") != std::string::npos)
        out.push_back(e.path().string());
    return out;
  }

  fs::path dir_;
};

// ---- Round trips -------------------------------------------------------------------------

TEST_F(SafetensorsTest, RoundTripEveryDTypeRankZeroZeroSizeAndMetadata) {
  struct Item {
    std::string name;
    DType dtype;
    Shape shape;
    std::vector<uint8_t> bytes;
  };
  std::vector<Item> items;
  for (int i = 0; i < kNumDTypes; ++i) {
    const auto dt = static_cast<DType>(i);
    const std::string base(dtype_name(dt));
    const Shape shapes[] = {Shape{2, 3}, Shape{}, Shape{0, 4}, Shape{1, 2, 1, 3}};
    const char* suffixes[] = {".matrix", ".scalar", ".empty", ".rank4"};
    for (int s = 0; s < 4; ++s) {
      const size_t bytes = static_cast<size_t>(shapes[s].numel()) * dtype_size(dt);
      items.push_back(
          {base + suffixes[s], dt, shapes[s], pattern(bytes, static_cast<unsigned>(i * 4 + s))});
    }
  }
  std::vector<std::pair<std::string, ConstTensorView>> tensors;
  for (const Item& it : items)
    tensors.push_back({it.name, ConstTensorView{it.bytes.data(), it.dtype, it.shape}});
  const std::map<std::string, std::string> metadata = {
      {"format", "pt"}, {"note", "line1\nline2 \"quoted\" ü"}, {"", ""}};

  const std::string p = path("model.safetensors");
  write_safetensors(p, tensors, metadata);

  SafetensorsFile f(p);
  EXPECT_EQ(f.path(), p);
  EXPECT_EQ(f.metadata(), metadata);
  ASSERT_EQ(f.tensors().size(), items.size());
  // Written in the given order and contiguously, so file order is the given order except
  // that zero-size tensors share an offset with their neighbour; compare by name.
  for (const Item& it : items) {
    SCOPED_TRACE(it.name);
    const SafetensorsEntry* e = f.find(it.name);
    ASSERT_NE(e, nullptr);
    EXPECT_EQ(e->name, it.name);
    EXPECT_EQ(e->view.dtype, it.dtype);
    EXPECT_EQ(e->view.shape, it.shape);
    ASSERT_EQ(e->view.bytes(), it.bytes.size());
    if (!it.bytes.empty()) {
      EXPECT_EQ(std::memcmp(e->view.data, it.bytes.data(), it.bytes.size()), 0);
    }
  }
  EXPECT_EQ(f.find("missing"), nullptr);
  EXPECT_EQ(f.find(""), nullptr);

  // tensors() is in file order: data pointers never decrease, and the non-empty tensors
  // appear in the order they were written.
  std::vector<std::string> nonempty_written, nonempty_read;
  for (const Item& it : items)
    if (!it.bytes.empty()) nonempty_written.push_back(it.name);
  const uint8_t* prev = nullptr;
  for (const SafetensorsEntry& e : f.tensors()) {
    const auto* d = static_cast<const uint8_t*>(e.view.data);
    if (prev != nullptr) {
      EXPECT_LE(prev, d);
    }
    prev = d;
    if (e.view.bytes() > 0) nonempty_read.push_back(e.name);
  }
  EXPECT_EQ(nonempty_read, nonempty_written);
}

TEST_F(SafetensorsTest, RoundTripTypedValues) {
  const float f32[] = {1.5f, -2.25f, 3.0e38f, 0.0f};
  const int64_t i64[] = {INT64_MIN, -1, 0, INT64_MAX};
  const std::string p = path("typed.safetensors");
  write_safetensors(p, {{"w", ConstTensorView{f32, DType::kF32, Shape{2, 2}}},
                        {"idx", ConstTensorView{i64, DType::kI64, Shape{4}}}});
  SafetensorsFile f(p);
  ASSERT_EQ(f.tensors().size(), 2u);
  EXPECT_EQ(f.tensors()[0].name, "w");
  EXPECT_EQ(f.tensors()[1].name, "idx");
  EXPECT_TRUE(f.metadata().empty());
  for (int i = 0; i < 4; ++i) {
    float x;
    int64_t y;
    std::memcpy(&x, static_cast<const uint8_t*>(f.tensors()[0].view.data) + 4 * i, 4);
    std::memcpy(&y, static_cast<const uint8_t*>(f.tensors()[1].view.data) + 8 * i, 8);
    EXPECT_EQ(x, f32[i]);
    EXPECT_EQ(y, i64[i]);
  }
}

// Produced tensors: the file reads back the produced bytes; a source that writes the wrong
// count is an error and leaves an existing file untouched.
TEST_F(SafetensorsTest, StreamedSourcesRoundTripAndWrongCountsFail) {
  const std::string p = path("streamed.safetensors");
  auto counting = [](size_t n) {
    return [n](const WriteFn& w) {
      for (size_t i = 0; i < n; ++i) {
        const float v = static_cast<float>(i) * 0.5f;
        w(&v, sizeof v);
      }
    };
  };
  write_safetensors_streamed(p, {{"a", DType::kF32, Shape{2, 3}, counting(6)},
                                 {"b", DType::kF32, Shape{4}, counting(4)}});
  {
    SafetensorsFile f(p);
    ASSERT_EQ(f.tensors().size(), 2u);
    const float* b = f.find("b")->view.as<float>();
    EXPECT_EQ(b[3], 1.5f);
  }
  const std::string before = read_all(p);
  EXPECT_THROW(write_safetensors_streamed(p, {{"a", DType::kF32, Shape{2, 3}, counting(5)}}),
               Error);
  EXPECT_THROW(write_safetensors_streamed(p, {{"a", DType::kF32, Shape{2, 3}, counting(7)}}),
               Error);
  EXPECT_EQ(read_all(p), before);
}

TEST_F(SafetensorsTest, NoTensorsNoMetadata) {
  const std::string p = path("empty.safetensors");
  write_safetensors(p, {});
  SafetensorsFile f(p);
  EXPECT_TRUE(f.tensors().empty());
  EXPECT_TRUE(f.metadata().empty());
  EXPECT_EQ(read_all(p).size(), 64u);
}

TEST_F(SafetensorsTest, UnicodeAndOddNamesRoundTrip) {
  const uint8_t b[3] = {1, 2, 3};
  const std::vector<std::string> names = {"层.权重", "a\"b\\c", "tab\there", "new\nline", " "};
  std::vector<std::pair<std::string, ConstTensorView>> tensors;
  for (const auto& n : names) tensors.push_back({n, ConstTensorView{b, DType::kU8, Shape{3}}});
  const std::string p = path("names.safetensors");
  write_safetensors(p, tensors);
  SafetensorsFile f(p);
  ASSERT_EQ(f.tensors().size(), names.size());
  for (size_t i = 0; i < names.size(); ++i) EXPECT_EQ(f.tensors()[i].name, names[i]);
}

TEST_F(SafetensorsTest, DataSectionIs64ByteAlignedAndHeaderPaddedWithSpaces) {
  const uint8_t b[7] = {};
  // Name lengths spread over the residues mod 64 (each write fsyncs, so not all 64).
  for (size_t len : {1, 2, 7, 13, 24, 31, 40, 47, 55, 64, 65}) {
    SCOPED_TRACE(len);
    const std::string p = path("aligned.safetensors");
    write_safetensors(p, {{std::string(len, 'n'), ConstTensorView{b, DType::kU8, Shape{7}}},
                          {"second", ConstTensorView{b, DType::kU8, Shape{7}}}});
    const std::string bytes = read_all(p);
    ASSERT_GE(bytes.size(), 8u);
    const uint64_t n = read_le64(bytes);
    EXPECT_EQ((8 + n) % 64, 0u);
    EXPECT_EQ(bytes.size(), 8 + n + 14);
    const std::string header = bytes.substr(8, n);
    const size_t close = header.find_last_of('}');
    ASSERT_NE(close, std::string::npos);
    EXPECT_EQ(header.find_first_not_of(' ', close + 1), std::string::npos);
    SafetensorsFile f(p);
    EXPECT_EQ(f.data_offset(), 8 + n);
    // Contiguous: the second tensor starts right after the first.
    ASSERT_EQ(f.tensors().size(), 2u);
    EXPECT_EQ(static_cast<const uint8_t*>(f.tensors()[1].view.data),
              static_cast<const uint8_t*>(f.tensors()[0].view.data) + 7);
  }
}

TEST_F(SafetensorsTest, ReadsForeignFileWithUnsortedKeys) {
  // Keys in the JSON are not in offset order, a zero-size tensor sits inside another's
  // range, and the header has no padding.
  const std::string header = R"({"z":{"dtype":"U8","shape":[2],"data_offsets":[0,2]},)"
                             R"("a":{"dtype":"U16","shape":[1],"data_offsets":[2,4]},)"
                             R"("e":{"dtype":"F32","shape":[0],"data_offsets":[1,1]},)"
                             R"("__metadata__":{"k":"v"}})";
  const std::string p = write_file(header, std::string("\x01\x02\x03\x04", 4));
  SafetensorsFile f(p);
  ASSERT_EQ(f.tensors().size(), 3u);
  EXPECT_EQ(f.tensors()[0].name, "z");
  EXPECT_EQ(f.tensors()[1].name, "e");
  EXPECT_EQ(f.tensors()[2].name, "a");
  EXPECT_EQ(f.tensors()[2].view.as<uint8_t>()[0], 3);
  EXPECT_EQ(f.tensors()[2].view.as<uint8_t>()[1], 4);
  EXPECT_EQ(f.metadata().at("k"), "v");
}

TEST_F(SafetensorsTest, TensorsMustTileTheDataSection) {
  // A gap between tensors, bytes after the last one, or no tensor over the first bytes:
  // the header and the data disagree.
  expect_header_error(R"({"z":{"dtype":"U8","shape":[2],"data_offsets":[0,2]},)"
                      R"("a":{"dtype":"U16","shape":[1],"data_offsets":[6,8]}})",
                      "bytes 2..6 of the data section belong to no tensor", std::string(8, 'x'));
  expect_header_error(R"({"z":{"dtype":"U8","shape":[2],"data_offsets":[0,2]}})",
                      "cover 2 bytes but the data section has 3", "xxx");
  expect_header_error(R"({"z":{"dtype":"U8","shape":[2],"data_offsets":[1,3]}})",
                      "bytes 0..1", "xxx");
}

TEST_F(SafetensorsTest, ShortenedHeaderLengthIsRefused) {
  // Lowering the length field into the header's padding would shift every tensor by the
  // difference; the tiling check refuses each such file.
  const float v[3] = {1.0f, 2.0f, 3.0f};
  const std::string p = path("pad.safetensors");
  write_safetensors(p, {{"v", ConstTensorView{v, DType::kF32, Shape{3}}}});
  const std::string good = read_all(p);
  uint64_t n = 0;
  std::memcpy(&n, good.data(), 8);
  for (uint64_t d = 1; d < 64 && d < n; ++d) {
    SCOPED_TRACE(d);
    std::string bad = good;
    const uint64_t m = n - d;
    std::memcpy(bad.data(), &m, 8);
    expect_error(write_bytes(bad), "");
  }
}

TEST_F(SafetensorsTest, HeaderOfManyTensorsParsesInLinearTime) {
  // 40,000 entries (a 2.8 MB header): quadratic parsing took over a minute; linear takes
  // well under a second, far inside the test's time limit.
  std::string header = "{";
  const int n = 40000;
  for (int i = 0; i < n; ++i) {
    if (i > 0) header += ',';
    header.append("\"t").append(std::to_string(i));
    header.append("\":{\"dtype\":\"U8\",\"shape\":[1],\"data_offsets\":[");
    header.append(std::to_string(i)).append(",").append(std::to_string(i + 1)).append("]}");
  }
  header += "}";
  SafetensorsFile f(write_file(header, std::string(n, 'x')));
  EXPECT_EQ(f.tensors().size(), static_cast<size_t>(n));
}

TEST_F(SafetensorsTest, ZeroSizeTensorAtEndOfFile) {
  const std::string p = write_file(R"({"e":{"dtype":"F32","shape":[3,0],"data_offsets":[0,0]}})");
  SafetensorsFile f(p);
  ASSERT_NE(f.find("e"), nullptr);
  EXPECT_EQ(f.find("e")->view.bytes(), 0u);
  EXPECT_EQ(f.find("e")->view.shape, (Shape{3, 0}));
}

TEST_F(SafetensorsTest, FileStaysValidAfterMove) {
  const uint8_t b[2] = {9, 8};
  const std::string p = path("move.safetensors");
  write_safetensors(p, {{"t", ConstTensorView{b, DType::kU8, Shape{2}}}});
  SafetensorsFile a(p);
  SafetensorsFile moved(std::move(a));
  ASSERT_NE(moved.find("t"), nullptr);
  EXPECT_EQ(moved.find("t")->view.as<uint8_t>()[1], 8);
}

// ---- Writing: atomicity and rejected inputs ----------------------------------------------

TEST_F(SafetensorsTest, WriteLeavesNoTemporaryFilesAndOverwrites) {
  const uint8_t b[4] = {1, 2, 3, 4};
  const std::string p = path("out.safetensors");
  write_safetensors(p, {{"a", ConstTensorView{b, DType::kU8, Shape{4}}}});
  write_safetensors(p, {{"b", ConstTensorView{b, DType::kU16, Shape{2}}}});
  EXPECT_TRUE(temp_leftovers().empty());
  SafetensorsFile f(p);
  ASSERT_EQ(f.tensors().size(), 1u);
  EXPECT_EQ(f.tensors()[0].name, "b");
  size_t files = 0;
  for ([[maybe_unused]] const auto& e : fs::directory_iterator(dir_)) ++files;
  EXPECT_EQ(files, 1u);
}

TEST_F(SafetensorsTest, FailedWriteLeavesExistingFileUnchanged) {
  const uint8_t b[4] = {1, 2, 3, 4};
  const ConstTensorView v{b, DType::kU8, Shape{4}};
  const std::string p = path("keep.safetensors");
  write_safetensors(p, {{"original", v}});
  const std::string before = read_all(p);

  struct Case {
    std::vector<std::pair<std::string, ConstTensorView>> tensors;
    std::map<std::string, std::string> metadata;
    std::string keyword;
  };
  const Case cases[] = {
      {{{"a", v}, {"b", v}, {"a", v}}, {}, "duplicate"},
      {{{"a", v}, {"", v}}, {}, "empty name"},
      {{{"__metadata__", v}}, {}, "__metadata__"},
      {{{"bad\xff", v}}, {}, "UTF-8"},
      {{{"a", v}}, {{"k", "\xc3"}}, "UTF-8"},
  };
  for (const Case& c : cases) {
    SCOPED_TRACE(c.keyword);
    try {
      write_safetensors(p, c.tensors, c.metadata);
      ADD_FAILURE() << "write succeeded";
    } catch (const Error& e) {
      const std::string msg = e.what();
      EXPECT_NE(msg.find(p), std::string::npos) << msg;
      EXPECT_NE(msg.find(c.keyword), std::string::npos) << msg;
    }
    EXPECT_EQ(read_all(p), before);
    EXPECT_TRUE(temp_leftovers().empty());
  }
  SafetensorsFile f(p);
  EXPECT_NE(f.find("original"), nullptr);
}

TEST_F(SafetensorsTest, WriteIntoMissingDirectoryFails) {
  const std::string p = path("no/such/dir/x.safetensors");
  try {
    write_safetensors(p, {});
    ADD_FAILURE() << "write succeeded";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find(p), std::string::npos) << e.what();
  }
}

// ---- Malformed files ---------------------------------------------------------------------

TEST_F(SafetensorsTest, MissingFile) { expect_error(path("absent.safetensors"), "cannot open"); }

TEST_F(SafetensorsTest, FileShorterThanLengthField) {
  expect_error(write_bytes(""), "too short");
  expect_error(write_bytes(std::string(7, '\0')), "too short");
}

TEST_F(SafetensorsTest, HeaderLengthZero) {
  expect_error(write_bytes(le64(0) + "{}"), "header length is 0");
}

TEST_F(SafetensorsTest, HeaderLengthOverLimit) {
  expect_error(write_bytes(le64(100'000'001) + "{}"), "exceeds the limit");
  expect_error(write_bytes(le64(UINT64_MAX) + "{}"), "exceeds the limit");
}

TEST_F(SafetensorsTest, HeaderLengthBeyondFile) {
  expect_error(write_bytes(le64(3) + "{}"), "exceeds the file size");
  expect_error(write_bytes(le64(100'000'000) + "{}"), "exceeds the file size");
}

TEST_F(SafetensorsTest, MalformedJson) {
  expect_header_error("{", "not valid JSON");
  expect_header_error(R"({"a":1,})", "not valid JSON");
  expect_header_error("{} trailing", "not valid JSON");
  expect_header_error(std::string("{}\0", 3), "NUL byte");
  expect_header_error(std::string("{}\0garbage", 10), "NUL byte");
  expect_header_error("{\"\xff\":{}}", "not valid JSON");  // invalid UTF-8
  expect_header_error("{/* c */}", "not valid JSON");
}

TEST_F(SafetensorsTest, DuplicateKeys) {
  const std::string e = R"({"dtype":"U8","shape":[1],"data_offsets":[0,1]})";
  expect_header_error(R"({"a":)" + e + R"(,"a":)" + e + "}", "duplicate key \"a\"", "xx");
  expect_header_error(R"({"__metadata__":{},"__metadata__":{}})", "duplicate key");
  expect_header_error(R"({"a":{"dtype":"U8","dtype":"U8","shape":[1],"data_offsets":[0,1]}})",
                      "duplicate key \"dtype\"", "x");
}

TEST_F(SafetensorsTest, DeepNesting) {
  expect_header_error(std::string(5000, '[') + std::string(5000, ']'), "nested");
  std::string deep = R"({"__metadata__":)";
  for (int i = 0; i < 100; ++i) deep += R"({"k":)";
  expect_header_error(deep + "1" + std::string(101, '}'), "nested");
}

TEST_F(SafetensorsTest, HeaderNotAnObject) {
  expect_header_error("[]", "not a JSON object");
  expect_header_error("\"str\"", "not a JSON object");
  expect_header_error("42", "not a JSON object");
  expect_header_error("null", "not a JSON object");
}

TEST_F(SafetensorsTest, EntryNotAnObject) {
  expect_header_error(R"({"w":[1,2]})", "tensor \"w\": entry is not a JSON object");
  expect_header_error(R"({"w":"F32"})", "entry is not a JSON object");
}

TEST_F(SafetensorsTest, MissingField) {
  expect_header_error(R"({"w":{"shape":[1],"data_offsets":[0,1]}})", "missing field \"dtype\"",
                      "x");
  expect_header_error(R"({"w":{"dtype":"U8","data_offsets":[0,1]}})", "missing field \"shape\"",
                      "x");
  expect_header_error(R"({"w":{"dtype":"U8","shape":[1]}})", "missing field \"data_offsets\"", "x");
  expect_header_error(R"({"w":{}})", "missing field");
}

TEST_F(SafetensorsTest, ExtraField) {
  expect_header_error(R"({"w":{"dtype":"U8","shape":[1],"data_offsets":[0,1],"x":0}})",
                      "unexpected field \"x\"", "x");
}

TEST_F(SafetensorsTest, WrongFieldTypes) {
  expect_header_error(R"({"w":{"dtype":4,"shape":[1],"data_offsets":[0,1]}})",
                      "dtype is not a string", "x");
  expect_header_error(R"({"w":{"dtype":"U8","shape":1,"data_offsets":[0,1]}})",
                      "shape is not an array", "x");
  expect_header_error(R"({"w":{"dtype":"U8","shape":{"0":1},"data_offsets":[0,1]}})",
                      "shape is not an array", "x");
  expect_header_error(R"({"w":{"dtype":"U8","shape":[1],"data_offsets":"0,1"}})",
                      "data_offsets is not an array of two integers", "x");
}

TEST_F(SafetensorsTest, UnknownDType) {
  expect_header_error(R"({"w":{"dtype":"F64","shape":[1],"data_offsets":[0,8]}})",
                      "unknown dtype \"F64\"", "xxxxxxxx");
  expect_header_error(R"({"w":{"dtype":"f32","shape":[1],"data_offsets":[0,4]}})", "unknown dtype",
                      "xxxx");
}

TEST_F(SafetensorsTest, ShapeEntryNegative) {
  expect_header_error(R"({"w":{"dtype":"U8","shape":[2,-1],"data_offsets":[0,0]}})",
                      "shape[1] is negative");
  expect_header_error(R"({"w":{"dtype":"U8","shape":[-9223372036854775808],"data_offsets":[0,0]}})",
                      "shape[0] is negative");
}

TEST_F(SafetensorsTest, ShapeEntryNotInteger) {
  expect_header_error(R"({"w":{"dtype":"U8","shape":[1.5],"data_offsets":[0,1]}})",
                      "shape[0] is not an integer", "x");
  expect_header_error(R"({"w":{"dtype":"U8","shape":[2.0],"data_offsets":[0,2]}})",
                      "shape[0] is not an integer", "xx");
  expect_header_error(R"({"w":{"dtype":"U8","shape":["2"],"data_offsets":[0,2]}})",
                      "shape[0] is not an integer", "xx");
  expect_header_error(R"({"w":{"dtype":"U8","shape":[null],"data_offsets":[0,0]}})",
                      "shape[0] is not an integer");
  // Beyond uint64: nlohmann stores it as a float.
  expect_header_error(R"({"w":{"dtype":"U8","shape":[99999999999999999999],"data_offsets":[0,0]}})",
                      "shape[0] is not an integer");
}

TEST_F(SafetensorsTest, ShapeEntryTooLarge) {
  // Above INT64_MAX, stored by nlohmann as an unsigned number.
  expect_header_error(R"({"w":{"dtype":"U8","shape":[18446744073709551615],"data_offsets":[0,0]}})",
                      "too large");
  expect_header_error(R"({"w":{"dtype":"U8","shape":[9223372036854775808],"data_offsets":[0,0]}})",
                      "too large");
}

TEST_F(SafetensorsTest, ShapeProductOverflows) {
  expect_header_error(
      R"({"w":{"dtype":"U8","shape":[4294967296,4294967296],"data_offsets":[0,0]}})", "overflows");
  // The element count fits in int64 but the byte count does not.
  expect_header_error(R"({"w":{"dtype":"I64","shape":[2305843009213693952],"data_offsets":[0,0]}})",
                      "overflows");
  expect_header_error(R"({"w":{"dtype":"F32","shape":[9223372036854775807],"data_offsets":[0,0]}})",
                      "overflows");
}

TEST_F(SafetensorsTest, RankTooLarge) {
  expect_header_error(R"({"w":{"dtype":"U8","shape":[1,1,1,1,1,1,1,1,1],"data_offsets":[0,1]}})",
                      "rank 9", "x");
  // The maximum rank is fine.
  SafetensorsFile f(
      write_file(R"({"w":{"dtype":"U8","shape":[1,1,1,1,1,1,1,1],"data_offsets":[0,1]}})", "x"));
  EXPECT_EQ(f.find("w")->view.shape.rank(), 8);
}

TEST_F(SafetensorsTest, DataOffsetsNotTwoIntegers) {
  expect_header_error(R"({"w":{"dtype":"U8","shape":[1],"data_offsets":[0]}})",
                      "data_offsets is not an array of two integers", "x");
  expect_header_error(R"({"w":{"dtype":"U8","shape":[1],"data_offsets":[0,1,2]}})",
                      "data_offsets is not an array of two integers", "xx");
  expect_header_error(R"({"w":{"dtype":"U8","shape":[1],"data_offsets":[]}})",
                      "data_offsets is not an array of two integers", "x");
  expect_header_error(R"({"w":{"dtype":"U8","shape":[1],"data_offsets":[0,1.0]}})",
                      "data_offsets[1] is not an integer", "x");
  expect_header_error(R"({"w":{"dtype":"U8","shape":[1],"data_offsets":["0",1]}})",
                      "data_offsets[0] is not an integer", "x");
  expect_header_error(R"({"w":{"dtype":"U8","shape":[1],"data_offsets":[0,1e30]}})",
                      "data_offsets[1] is not an integer", "x");
}

TEST_F(SafetensorsTest, DataOffsetsNegative) {
  expect_header_error(R"({"w":{"dtype":"U8","shape":[1],"data_offsets":[-1,0]}})",
                      "data_offsets[0] is negative", "x");
  expect_header_error(R"({"w":{"dtype":"U8","shape":[0],"data_offsets":[0,-1]}})",
                      "data_offsets[1] is negative", "x");
}

TEST_F(SafetensorsTest, DataOffsetsEndBeforeBegin) {
  expect_header_error(R"({"w":{"dtype":"U8","shape":[1],"data_offsets":[2,1]}})", "is before begin",
                      "xxx");
}

TEST_F(SafetensorsTest, DataOffsetsSizeMismatch) {
  expect_header_error(R"({"w":{"dtype":"F32","shape":[2],"data_offsets":[0,4]}})",
                      "span 4 bytes, but F32 shape [2] needs 8", std::string(8, 'x'));
  expect_header_error(R"({"w":{"dtype":"F32","shape":[],"data_offsets":[0,0]}})", "needs 4",
                      "xxxx");
  // Huge unsigned offsets: the span is computed without overflow.
  expect_header_error(R"({"w":{"dtype":"U8","shape":[1],"data_offsets":[0,18446744073709551615]}})",
                      "span 18446744073709551615 bytes", "x");
}

TEST_F(SafetensorsTest, DataOffsetsBeyondDataSection) {
  expect_header_error(R"({"w":{"dtype":"U16","shape":[2],"data_offsets":[0,4]}})",
                      "beyond the data section (3 bytes)", "xxx");
  expect_header_error(
      R"({"w":{"dtype":"F32","shape":[],"data_offsets":[18446744073709551611,18446744073709551615]}})",
      "beyond the data section", "xxxx");
  expect_header_error(R"({"w":{"dtype":"U8","shape":[0],"data_offsets":[5,5]}})",
                      "beyond the data section", "xxxx");
}

TEST_F(SafetensorsTest, OverlappingTensors) {
  expect_header_error(R"({"a":{"dtype":"U8","shape":[4],"data_offsets":[0,4]},)"
                      R"("b":{"dtype":"U8","shape":[2],"data_offsets":[3,5]}})",
                      "overlap", "xxxxx");
  // Same range twice.
  expect_header_error(R"({"a":{"dtype":"U8","shape":[4],"data_offsets":[0,4]},)"
                      R"("b":{"dtype":"U8","shape":[4],"data_offsets":[0,4]}})",
                      "overlap", "xxxx");
  // A zero-length range between two overlapping ones must not hide the overlap.
  expect_header_error(R"({"a":{"dtype":"U8","shape":[4],"data_offsets":[0,4]},)"
                      R"("z":{"dtype":"U8","shape":[0],"data_offsets":[2,2]},)"
                      R"("b":{"dtype":"U8","shape":[2],"data_offsets":[3,5]}})",
                      "tensors \"a\" (bytes 0..4) and \"b\" (bytes 3..5) overlap", "xxxxx");
  // Touching ranges and a zero-length range inside another are fine.
  SafetensorsFile f(write_file(R"({"a":{"dtype":"U8","shape":[2],"data_offsets":[0,2]},)"
                               R"("b":{"dtype":"U8","shape":[2],"data_offsets":[2,4]},)"
                               R"("c":{"dtype":"U8","shape":[0],"data_offsets":[1,1]}})",
                               "xxxx"));
  EXPECT_EQ(f.tensors().size(), 3u);
}

TEST_F(SafetensorsTest, MetadataNotObjectOfStrings) {
  expect_header_error(R"({"__metadata__":[]})", "__metadata__ is not a JSON object");
  expect_header_error(R"({"__metadata__":"x"})", "__metadata__ is not a JSON object");
  expect_header_error(R"({"__metadata__":{"k":1}})",
                      "__metadata__ value for key \"k\" is not a string");
  expect_header_error(R"({"__metadata__":{"k":{"n":"v"}}})", "is not a string");
  expect_header_error(R"({"__metadata__":{"k":null}})", "is not a string");
}

TEST_F(SafetensorsTest, EmptyTensorName) {
  expect_header_error(R"({"":{"dtype":"U8","shape":[1],"data_offsets":[0,1]}})", "empty name", "x");
}

TEST_F(SafetensorsTest, NameWithNewlineStaysOnOneLine) {
  expect_header_error(R"({"a\nb":{"dtype":"F64","shape":[1],"data_offsets":[0,8]}})",
                      "tensor \"a\\nb\": unknown dtype", std::string(8, 'x'));
}

}  // namespace
}  // namespace fp8lm
