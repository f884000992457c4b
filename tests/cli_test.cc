// End-to-end tests of the fp8lm command line: convert, inspect, bench cast, and the
// handling of bad files and flags (one line on stderr, non-zero exit, outputs untouched).
#include <gtest/gtest.h>
#include <unistd.h>
#include <sys/stat.h>
#include <sys/wait.h>

#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <map>
#include <nlohmann/json.hpp>
#include <random>
#include <sstream>
#include <string>
#include <vector>

#include "data/token_file.h"
#include "data/tokenizer.h"
#include "numerics/cast_ref.h"
#include "tensor/safetensors.h"

namespace fp8lm {
namespace {

namespace fs = std::filesystem;

struct Result {
  int rc;
  std::string out, err;
};

std::string slurp(const fs::path& p) {
  std::ifstream f(p, std::ios::binary);
  std::stringstream ss;
  ss << f.rdbuf();
  return ss.str();
}

std::vector<uint16_t> all_tokens(const TokenFile& f) {
  std::vector<uint16_t> t(f.size());
  f.read(0, t.size(), t.data());
  return t;
}

class Cli : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = fs::path(::testing::TempDir()) /
           ("fp8lm_cli_" + std::string(::testing::UnitTest::GetInstance()->current_test_info()->name()) +
            "_" + std::to_string(::getpid()));
    fs::remove_all(dir_);
    fs::create_directories(dir_);
  }
  void TearDown() override { fs::remove_all(dir_); }

  Result run(const std::string& args) { return run_in(".", args); }
  // The same with `cwd` as the working folder.
  Result run_in(const std::string& cwd, const std::string& args) {
    const fs::path out = dir_ / "stdout.txt", err = dir_ / "stderr.txt";
    const std::string cmd = "cd " + cwd + " && " + std::string(FP8LM_BINARY) + " " + args +
                            " >" + out.string() + " 2>" + err.string();
    const int status = std::system(cmd.c_str());
    return {WIFEXITED(status) ? WEXITSTATUS(status) : 128, slurp(out), slurp(err)};
  }
  std::string path(const std::string& name) const { return (dir_ / name).string(); }

  fs::path dir_;
};

// A model-like file: f32 tensors spanning many binades, an integer tensor, metadata.
std::string write_sample(const std::string& p, std::vector<float>* wide = nullptr) {
  std::mt19937 rng(42);
  std::uniform_real_distribution<float> lg(-16.0f, 3.0f), sign(-1.0f, 1.0f);
  std::vector<float> w(64 * 48), b(48);
  for (float& v : w) v = std::copysign(std::exp2(lg(rng)), sign(rng));
  for (float& v : b) v = 1000.0f * sign(rng);  // beyond e4m3's range without scaling
  std::vector<int32_t> ids(10);
  for (int i = 0; i < 10; ++i) ids[static_cast<size_t>(i)] = i * 7 - 3;
  write_safetensors(p,
                    {{"h.0.mlp.c_fc.weight", {w.data(), DType::kF32, Shape{64, 48}}},
                     {"h.0.mlp.c_fc.bias", {b.data(), DType::kF32, Shape{48}}},
                     {"ids", {ids.data(), DType::kI32, Shape{10}}}},
                    {{"format", "pt"}});
  if (wide != nullptr) *wide = w;
  return p;
}

std::vector<float> read_f32(const SafetensorsFile& f, const std::string& name) {
  const SafetensorsEntry* e = f.find(name);
  EXPECT_NE(e, nullptr) << name;
  if (e == nullptr) return {};
  EXPECT_EQ(e->view.dtype, DType::kF32);
  std::vector<float> v(e->view.numel());
  std::memcpy(v.data(), e->view.data, v.size() * sizeof(float));
  return v;
}

TEST_F(Cli, TensorScaledE4M3RoundTripIsWithinHalfUlp) {
  std::vector<float> w;
  write_sample(path("in.safetensors"), &w);
  Result r = run("convert " + path("in.safetensors") + " " + path("q.safetensors") +
                 " --to e4m3 --scaling tensor");
  ASSERT_EQ(r.rc, 0) << r.err;
  {
    const SafetensorsFile q(path("q.safetensors"));
    ASSERT_NE(q.find("h.0.mlp.c_fc.weight"), nullptr);
    EXPECT_EQ(q.find("h.0.mlp.c_fc.weight")->view.dtype, DType::kE4M3);
    EXPECT_EQ(q.find("h.0.mlp.c_fc.weight")->view.shape, (Shape{64, 48}));
    EXPECT_EQ(q.find("ids")->view.dtype, DType::kI32);
    EXPECT_EQ(q.find("h.0.mlp.c_fc.weight_scale_inv")->view.shape, Shape{});
    EXPECT_EQ(q.metadata().at("format"), "pt");
  }
  r = run("convert " + path("q.safetensors") + " " + path("back.safetensors") + " --to f32");
  ASSERT_EQ(r.rc, 0) << r.err;
  const SafetensorsFile back(path("back.safetensors"));
  EXPECT_EQ(back.find("h.0.mlp.c_fc.weight_scale_inv"), nullptr);  // consumed
  const std::vector<float> got = read_f32(back, "h.0.mlp.c_fc.weight");
  ASSERT_EQ(got.size(), w.size());
  float amax = 0;
  for (float v : w) amax = std::max(amax, std::fabs(v));
  const float scale = std::ldexp(1.0f, static_cast<int>(std::floor(std::log2(448.0 / amax))));
  int checked = 0;
  for (size_t i = 0; i < w.size(); ++i) {
    const double scaled = std::fabs(static_cast<double>(w[i]) * scale);
    if (scaled < std::ldexp(1.0, -6) || scaled > 448) continue;  // outside e4m3's normals
    EXPECT_LE(std::fabs(got[i] - w[i]) / std::fabs(w[i]), 1.0 / 16) << i;
    ++checked;
  }
  EXPECT_GT(checked, 1000);
  const SafetensorsEntry* ids = back.find("ids");
  ASSERT_NE(ids, nullptr);
  EXPECT_EQ(static_cast<const int32_t*>(ids->view.data)[9], 60);
}

TEST_F(Cli, ScalingNoneCastsValuesAsTheyAre) {
  std::vector<float> w;
  write_sample(path("in.safetensors"), &w);
  for (const char* to : {"e5m2", "bf16", "f16", "e4m3"}) {
    const Result r = run("convert " + path("in.safetensors") + " " + path("o.safetensors") +
                         " --to " + to);
    ASSERT_EQ(r.rc, 0) << r.err;
    const SafetensorsFile o(path("o.safetensors"));
    const SafetensorsEntry* e = o.find("h.0.mlp.c_fc.weight");
    ASSERT_NE(e, nullptr);
    const DType t = *dtype_from_name(to);
    EXPECT_EQ(e->view.dtype, t);
    EXPECT_EQ(o.find("h.0.mlp.c_fc.weight_scale_inv"), nullptr);
    for (size_t i = 0; i < w.size(); ++i) {
      uint32_t code = 0;
      std::memcpy(&code, static_cast<const uint8_t*>(e->view.data) + i * dtype_size(t),
                  dtype_size(t));
      ASSERT_EQ(code, encode_ref(w[i], float_format(t), true)) << to << " " << i;
    }
  }
}

TEST_F(Cli, NoSaturateTurnsE4M3OverflowIntoNaN) {
  write_sample(path("in.safetensors"));
  const SafetensorsFile in(path("in.safetensors"));
  const std::vector<float> b = read_f32(in, "h.0.mlp.c_fc.bias");
  for (const bool sat : {true, false}) {
    const Result r = run("convert " + path("in.safetensors") + " " + path("o.safetensors") +
                         " --to e4m3" + (sat ? "" : " --no-saturate"));
    ASSERT_EQ(r.rc, 0) << r.err;
    const SafetensorsFile o(path("o.safetensors"));
    const auto* q = static_cast<const uint8_t*>(o.find("h.0.mlp.c_fc.bias")->view.data);
    int nans = 0;
    for (size_t i = 0; i < b.size(); ++i) {
      nans += (q[i] & 0x7F) == 0x7F;
      EXPECT_EQ(q[i], to_e4m3_ref(b[i], sat));
      EXPECT_EQ((q[i] & 0x7F) == 0x7F, !sat && std::fabs(b[i]) > 464.0f);
    }
    EXPECT_EQ(nans > 0, !sat);  // |b| up to 1000: many exceed 464
  }
}

TEST_F(Cli, InspectReportsAmaxAndScalingFractions) {
  std::vector<float> w;
  write_sample(path("in.safetensors"), &w);
  Result r = run("inspect " + path("in.safetensors"));
  ASSERT_EQ(r.rc, 0) << r.err;
  EXPECT_NE(r.out.find("h.0.mlp.c_fc.weight  f32  [64, 48]  12288 B  scaling=none  amax="),
            std::string::npos)
      << r.out;
  EXPECT_NE(r.out.find("ids  i32  [10]  40 B"), std::string::npos) << r.out;
  r = run("inspect --json --format e4m3 " + path("in.safetensors"));
  ASSERT_EQ(r.rc, 0) << r.err;
  const auto rows = nlohmann::json::parse(r.out);
  ASSERT_EQ(rows.size(), 3u);
  float amax = 0;
  for (float v : w) amax = std::max(amax, std::fabs(v));
  const float scale = std::ldexp(1.0f, static_cast<int>(std::floor(std::log2(448.0 / amax))));
  size_t under = 0;
  for (float v : w) under += (to_e4m3_ref(v * scale) & 0x7F) == 0;
  for (const auto& row : rows) {
    if (row["name"] != "h.0.mlp.c_fc.weight") continue;
    EXPECT_EQ(row["amax"].get<float>(), amax);
    EXPECT_DOUBLE_EQ(row["underflow"].get<double>(), static_cast<double>(under) / w.size());
    EXPECT_GT(under, 0u);  // 2^-16 · scale is below half of e4m3's smallest subnormal
    EXPECT_EQ(row["saturate"].get<double>(), 0.0);
  }
}

// Block scaling in files: --scaling block writes DeepSeek-V3's layout (E4M3 NAME + F32
// NAME_scale_inv [ceil(r/128), ceil(c/128)]), mxfp8 writes F8_E8M0 scales [r, ceil(c/32)]; each
// block's scale is the least power of two that keeps its max in range, inspect names the
// layout, and --to f32 gives back exactly decode(q) · s.
TEST_F(Cli, BlockAndMxScaledFilesRoundTrip) {
  std::mt19937 rng(5);
  std::uniform_real_distribution<float> lg(-12.0f, 6.0f), sign(-1.0f, 1.0f);
  const size_t R = 200, C = 300;  // ragged for both 128 and 32
  std::vector<float> w(R * C), b(45);
  for (size_t i = 0; i < w.size(); ++i)
    w[i] = std::copysign(std::exp2(lg(rng) + static_cast<float>(i / C % 7)), sign(rng));
  for (float& v : b) v = sign(rng);
  write_safetensors(path("in.safetensors"), {{"w", {w.data(), DType::kF32, Shape{R, C}}},
                                             {"b", {b.data(), DType::kF32, Shape{45}}}});
  struct Mode {
    const char* flag;
    const char* name;
    size_t br, bc;
    DType scale_type;
  };
  for (const Mode& m : {Mode{"block", "128x128", 128, 128, DType::kF32},
                        Mode{"mxfp8", "mx32", 1, 32, DType::kE8M0}}) {
    SCOPED_TRACE(m.flag);
    Result r = run("convert " + path("in.safetensors") + " " + path("q.safetensors") +
                   " --to e4m3 --scaling " + m.flag);
    ASSERT_EQ(r.rc, 0) << r.err;
    const SafetensorsFile q(path("q.safetensors"));
    const SafetensorsEntry* qw = q.find("w");
    const SafetensorsEntry* sw = q.find("w_scale_inv");
    ASSERT_TRUE(qw && sw && q.find("b_scale_inv"));
    EXPECT_EQ(qw->view.dtype, DType::kE4M3);
    EXPECT_EQ(sw->view.dtype, m.scale_type);
    const size_t gr = (R + m.br - 1) / m.br, gc = (C + m.bc - 1) / m.bc;
    ASSERT_EQ(sw->view.shape, (Shape{static_cast<int64_t>(gr), static_cast<int64_t>(gc)}));
    EXPECT_EQ(q.find("b_scale_inv")->view.shape, (Shape{1, static_cast<int64_t>((45 + m.bc - 1) / m.bc)}));
    const auto* codes = static_cast<const uint8_t*>(qw->view.data);
    auto scale_at = [&](size_t g, size_t h) {
      const size_t i = g * gc + h;
      if (m.scale_type == DType::kF32) {  // the file's tensors are packed: maybe unaligned
        float f;
        std::memcpy(&f, static_cast<const uint8_t*>(sw->view.data) + i * sizeof f, sizeof f);
        return static_cast<double>(f);
      }
      return std::ldexp(1.0, static_cast<int>(sw->view.as<uint8_t>()[i]) - 127);
    };
    for (size_t g = 0; g < gr; ++g)
      for (size_t h = 0; h < gc; ++h) {
        double amax = 0;
        for (size_t i = g * m.br; i < std::min(R, (g + 1) * m.br); ++i)
          for (size_t j = h * m.bc; j < std::min(C, (h + 1) * m.bc); ++j)
            amax = std::max(amax, std::fabs(static_cast<double>(w[i * C + j])));
        const double s = scale_at(g, h);
        ASSERT_LE(amax / s, 448.0);  // nothing overflows
        ASSERT_GT(amax / s, 224.0);  // and the scale is the least such power of two
        for (size_t i = g * m.br; i < std::min(R, (g + 1) * m.br); ++i)
          for (size_t j = h * m.bc; j < std::min(C, (h + 1) * m.bc); ++j)
            ASSERT_EQ(codes[i * C + j], to_e4m3_ref(static_cast<float>(w[i * C + j] / s)));
      }
    r = run("inspect --json " + path("q.safetensors"));
    ASSERT_EQ(r.rc, 0) << r.err;
    for (const auto& row : nlohmann::json::parse(r.out))
      if (row["name"] == "w") {
        EXPECT_EQ(row["scaling"], m.name);
      }
    r = run("convert " + path("q.safetensors") + " " + path("back.safetensors") + " --to f32");
    ASSERT_EQ(r.rc, 0) << r.err;
    const SafetensorsFile back(path("back.safetensors"));
    EXPECT_EQ(back.find("w_scale_inv"), nullptr);
    const std::vector<float> got = read_f32(back, "w");
    ASSERT_EQ(got.size(), w.size());
    for (size_t i = 0; i < R; ++i)
      for (size_t j = 0; j < C; ++j)
        ASSERT_EQ(got[i * C + j], from_e4m3_ref(codes[i * C + j]) * scale_at(i / m.br, j / m.bc));
  }
}

// Files written by other tools: 1x128 tiles, U8 MX scales, and a scale grid that fits no
// layout (one line naming the tensor).
TEST_F(Cli, ForeignBlockScaledFilesAreReadOrRefused) {
  std::vector<uint8_t> q(4 * 256);
  for (size_t i = 0; i < q.size(); ++i) q[i] = static_cast<uint8_t>(i % 0x7E);
  std::vector<float> tiles(4 * 2);
  for (size_t i = 0; i < tiles.size(); ++i) tiles[i] = std::ldexp(1.0f, static_cast<int>(i) - 3);
  std::vector<uint8_t> mx(4 * 8);
  for (size_t i = 0; i < mx.size(); ++i) mx[i] = static_cast<uint8_t>(120 + i % 10);
  write_safetensors(path("tiles.safetensors"),
                    {{"x", {q.data(), DType::kE4M3, Shape{4, 256}}},
                     {"x_scale_inv", {tiles.data(), DType::kF32, Shape{4, 2}}},
                     {"y", {q.data(), DType::kE4M3, Shape{4, 256}}},
                     {"y_scale_inv", {mx.data(), DType::kU8, Shape{4, 8}}}});
  Result r = run("convert " + path("tiles.safetensors") + " " + path("f.safetensors") + " --to f32");
  ASSERT_EQ(r.rc, 0) << r.err;
  const SafetensorsFile f(path("f.safetensors"));
  const std::vector<float> x = read_f32(f, "x"), y = read_f32(f, "y");
  for (size_t i = 0; i < 4; ++i)
    for (size_t j = 0; j < 256; ++j) {
      ASSERT_EQ(x[i * 256 + j], from_e4m3_ref(q[i * 256 + j]) * tiles[i * 2 + j / 128]);
      ASSERT_EQ(y[i * 256 + j],
                from_e4m3_ref(q[i * 256 + j]) * std::ldexp(1.0f, mx[i * 8 + j / 32] - 127));
    }
  r = run("inspect " + path("tiles.safetensors"));
  EXPECT_NE(r.out.find("x  e4m3  [4, 256]  1024 B  scaling=1x128"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("y  e4m3  [4, 256]  1024 B  scaling=mx32"), std::string::npos) << r.out;
  write_safetensors(path("bad.safetensors"),
                    {{"x", {q.data(), DType::kE4M3, Shape{4, 256}}},
                     {"x_scale_inv", {tiles.data(), DType::kF32, Shape{2, 4}}}});
  for (const std::string& cmd : {"inspect " + path("bad.safetensors"),
                                 "convert " + path("bad.safetensors") + " " + path("o.safetensors") + " --to f32"}) {
    r = run(cmd);
    EXPECT_EQ(r.rc, 1) << cmd;
    EXPECT_EQ(std::count(r.err.begin(), r.err.end(), '\n'), 1) << r.err;
    EXPECT_NE(r.err.find("x_scale_inv"), std::string::npos) << r.err;
    EXPECT_NE(r.err.find("fit no block layout"), std::string::npos) << r.err;
  }
}

// Each malformed file: one line naming the file, non-zero exit, and an existing output
// file is left as it was.
TEST_F(Cli, MalformedFilesAreRejectedWithOneLine) {
  auto raw = [&](const std::string& name, const std::string& header, size_t data_bytes) {
    std::ofstream f(path(name), std::ios::binary);
    const uint64_t n = header.size();
    f.write(reinterpret_cast<const char*>(&n), 8);
    f << header << std::string(data_bytes, '\0');
    return path(name);
  };
  const std::vector<std::pair<std::string, std::string>> cases = {
      {raw("json.safetensors", "{\"a\": {\"dtype\": ", 0), "JSON"},
      {raw("dtype.safetensors",
           R"({"a": {"dtype": "F9", "shape": [1], "data_offsets": [0, 4]}})", 4),
       "dtype"},
      {raw("shape.safetensors",
           R"({"a": {"dtype": "F32", "shape": [-1], "data_offsets": [0, 4]}})", 4),
       "shape"},
      {raw("len.safetensors",
           R"({"a": {"dtype": "F32", "shape": [2], "data_offsets": [0, 4]}})", 4),
       "a"},
      {raw("range.safetensors",
           R"({"a": {"dtype": "F32", "shape": [1], "data_offsets": [8, 12]}})", 4),
       "a"},
      {raw("overlap.safetensors",
           R"({"a": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]}, "b": {"dtype": "F32", "shape": [2], "data_offsets": [4, 12]}})",
           12),
       "overlap"},
  };
  std::ofstream(path("short.safetensors")) << "abc";
  std::vector<std::pair<std::string, std::string>> all = cases;
  all.emplace_back(path("short.safetensors"), "short");
  write_sample(path("existing.safetensors"));
  const std::string before = slurp(path("existing.safetensors"));
  for (const auto& [file, keyword] : all) {
    for (const std::string& cmd :
         {"inspect " + file, "convert " + file + " " + path("existing.safetensors") + " --to e4m3"}) {
      const Result r = run(cmd);
      EXPECT_NE(r.rc, 0) << cmd;
      EXPECT_LT(r.rc, 128) << "crashed: " << cmd;
      EXPECT_EQ(std::count(r.err.begin(), r.err.end(), '\n'), 1) << r.err;
      EXPECT_NE(r.err.find(file), std::string::npos) << r.err;
      EXPECT_NE(r.err.find(keyword), std::string::npos) << keyword << " in: " << r.err;
    }
  }
  EXPECT_EQ(slurp(path("existing.safetensors")), before);
}

TEST_F(Cli, BadFlagsGiveOneLineAndNonZeroExit) {
  write_sample(path("in.safetensors"));
  const std::string in = path("in.safetensors");
  for (const std::string& args :
       {std::string("convert ") + in + " o.st --to e3m4", "convert " + in + " o.st",
        "convert " + in + " o.st --to e4m3 --scaling row", "inspect " + in + " --format f16",
        "inspect " + in + " --frobnicate", "convert " + in + " o.st --to bf16 --scaling tensor",
        std::string("--threads 0 inspect ") + in, std::string("nosuch"), std::string("")}) {
    const Result r = run(args);
    EXPECT_NE(r.rc, 0) << args;
    EXPECT_EQ(std::count(r.err.begin(), r.err.end(), '\n'), 1) << args << ": " << r.err;
  }
  // Output that cannot be written (stdout on a full disk) is a failure, not exit 0.
  if (fs::exists("/dev/full")) {
    const int status =
        std::system((std::string(FP8LM_BINARY) + " inspect " + in + " >/dev/full 2>/dev/null").c_str());
    EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 1) << status;
  }
  for (const char* args : {"--help", "convert --help", "inspect --help",
                                   "bench --help", "bench cast --help"}) {
    const Result r = run(args);
    EXPECT_EQ(r.rc, 0) << args;
    EXPECT_NE(r.out.find("Usage"), std::string::npos) << args;
  }
}

TEST_F(Cli, IsaOverrideIsValidated) {
  write_sample(path("in.safetensors"));
  // The CPU's own choice, whatever FP8LM_ISA the suite runs under (restored at the end).
  const char* outer = std::getenv("FP8LM_ISA");
  const std::string outer_isa = outer ? outer : "";
  ::unsetenv("FP8LM_ISA");
  const Result ok = run("bench cast --json --mib 1 --reps 1");
  ASSERT_EQ(ok.rc, 0) << ok.err;
  ::setenv("FP8LM_ISA", "scalar", 1);
  const Result pinned = run("bench cast --json --mib 1 --reps 1");
  ::setenv("FP8LM_ISA", "mmx", 1);
  const Result bad = run("inspect " + path("in.safetensors"));
  ::unsetenv("FP8LM_ISA");
  ASSERT_EQ(pinned.rc, 0) << pinned.err;
  EXPECT_EQ(nlohmann::json::parse(pinned.out)["simd"], "scalar");
  EXPECT_NE(bad.rc, 0);
  EXPECT_NE(bad.err.find("FP8LM_ISA"), std::string::npos);
  // avx512bf16 (the GEMM's BF16 dot products) where the CPU has AVX512-BF16, refused with the
  // list of what it has elsewhere; avx512 pins the FMA kernel.
  const bool dot = ok.out.find("\"avx512bf16\"") != std::string::npos;
  ::setenv("FP8LM_ISA", "avx512bf16", 1);
  const Result bf16 = run("bench cast --json --mib 1 --reps 1");
  ::unsetenv("FP8LM_ISA");
  if (dot) {
    ASSERT_EQ(bf16.rc, 0) << bf16.err;
    EXPECT_EQ(nlohmann::json::parse(bf16.out)["simd"], "avx512bf16");
    ::setenv("FP8LM_ISA", "avx512", 1);
    const Result fma = run("bench cast --json --mib 1 --reps 1");
    ::unsetenv("FP8LM_ISA");
    ASSERT_EQ(fma.rc, 0) << fma.err;
    EXPECT_EQ(nlohmann::json::parse(fma.out)["simd"], "avx512");
  } else {
    EXPECT_NE(bf16.rc, 0);
    EXPECT_NE(bf16.err.find("FP8LM_ISA=avx512bf16: not available"), std::string::npos) << bf16.err;
  }
  if (!outer_isa.empty()) ::setenv("FP8LM_ISA", outer_isa.c_str(), 1);
}

TEST_F(Cli, GemmBlockOverrideIsValidated) {
  ::setenv("FP8LM_GEMM_A_KIB", "64", 1);
  const Result set = run("bench gemm --json --reps 1 --shape 2048x768x768");
  ::setenv("FP8LM_GEMM_A_KIB", "4096", 1);
  const Result bad = run("bench gemm --json --reps 1 --shape 2048x768x768");
  ::unsetenv("FP8LM_GEMM_A_KIB");
  ASSERT_EQ(set.rc, 0) << set.err;
  EXPECT_EQ(nlohmann::json::parse(set.out)["a_block_bytes"], 64 * 1024);
  EXPECT_NE(bad.rc, 0);
  EXPECT_NE(bad.err.find("FP8LM_GEMM_A_KIB=4096"), std::string::npos) << bad.err;
}

TEST_F(Cli, BenchCastReportsRatio) {
  const Result r = run("--threads 2 bench cast --json --mib 8 --reps 3");
  ASSERT_EQ(r.rc, 0) << r.err;
  const auto j = nlohmann::json::parse(r.out);
  EXPECT_EQ(j["threads"], 2);
  EXPECT_EQ(j["bytes"], 8u << 20);
  EXPECT_GT(j["memcpy_gbps"].get<double>(), 0.0);
  EXPECT_GT(j["cast_gbps"].get<double>(), 0.0);
  EXPECT_DOUBLE_EQ(j["ratio"].get<double>(),
                   j["cast_gbps"].get<double>() / j["memcpy_gbps"].get<double>());
}

}  // namespace
}  // namespace fp8lm

namespace fp8lm {
namespace {

// Pinned to AVX2 on a CPU that runs AVX-512, the reference runs OpenBLAS's AVX2 kernels too:
// otherwise the ratio would compare two instruction sets.
TEST_F(Cli, BenchGemmReferenceIsAsWideAsThePinnedTarget) {
  ::setenv("FP8LM_ISA", "avx2", 1);
  const Result r = run("--threads 1 bench gemm --json --reps 1 --shape 2048x768x768");
  ::unsetenv("FP8LM_ISA");
  if (r.rc != 0 && r.err.find("not available") != std::string::npos)
    GTEST_SKIP() << "no AVX2 on this CPU";
  ASSERT_EQ(r.rc, 0) << r.err;
  const auto j = nlohmann::json::parse(r.out);
  EXPECT_EQ(j["simd"], "avx2");
  EXPECT_TRUE(j["openblas_core"] == "Zen" || j["openblas_core"] == "Haswell") << j["openblas_core"];
  EXPECT_TRUE(j["openblas_core_full_width"].get<bool>());
}

TEST_F(Cli, BenchGemmComparesWithOpenBlasOnOneShape) {
  const Result r = run("--threads 2 bench gemm --json --reps 1 --shape 2048x768x768");
  ASSERT_EQ(r.rc, 0) << r.err;
  const auto j = nlohmann::json::parse(r.out);
  EXPECT_GT(j["fma_peak_gflops"].get<double>(), 0.0);
  // The BF16 dot-product peak is measured where the GEMM uses them, and only there.
  EXPECT_EQ(j["bf16_dot_peak_gflops"].get<double>() > 0.0, j["simd"] == "avx512bf16") << j["simd"];
  EXPECT_FALSE(j["openblas_core"].get<std::string>().empty());
  // The reference runs the kernel set chosen from this CPU's features (an AVX2-only CPU
  // gets Zen or Haswell, never SkylakeX, which would die with "Illegal instruction").
  EXPECT_TRUE(j["openblas_core_full_width"].get<bool>()) << j["openblas_core"];
  if (j["simd"] == "avx2") {
    EXPECT_NE(j["openblas_core"], "SkylakeX");
  }
  // Two products have this shape (c_proj forward, and its input gradient with Wᵀ), each with
  // e4m3×e4m3→f32, e5m2×e4m3→f32, e4m3×e5m2→f32 and e4m3×e4m3→e4m3.
  ASSERT_EQ(j["results"].size(), 8u);
  for (const auto& row : j["results"]) {
    EXPECT_EQ(row["m"], 2048);
    EXPECT_EQ(row["n"], 768);
    EXPECT_EQ(row["k"], 768);
    EXPECT_GT(row["gflops"].get<double>(), 0.0);
    // The ratio pairs each timing with the sgemm timings on either side of it.
    const auto t = row["seconds"].get<std::vector<double>>();
    const auto ref = row["sgemm_seconds"].get<std::vector<double>>();
    ASSERT_EQ(t.size(), 1u);
    ASSERT_EQ(ref.size(), 2u);
    EXPECT_DOUBLE_EQ(row["ratio"].get<double>(), std::sqrt(ref[0] * ref[1]) / t[0]);
    EXPECT_DOUBLE_EQ(row["gflops"].get<double>(), 2.0 * 2048 * 768 * 768 / 1e9 / t[0]);
  }
  EXPECT_EQ(j["results"][1]["a"], "e5m2");
  EXPECT_EQ(j["results"][2]["b"], "e5m2");
  EXPECT_EQ(j["results"][3]["c"], "e4m3");
  EXPECT_EQ(j["results"][0]["layer"], "attn.c_proj forward");
  EXPECT_EQ(j["results"][4]["layer"], "attn.c_proj dgrad (dy W^T)");
}

// The placement experiment: every model at every rank count, the greedy placement never
// below the element split, balanced at 2 ranks, bounded by the largest tensor.
TEST_F(Cli, ZeroPlacementExperimentCoversEveryModelAndRankCount) {
  const Result r = run("experiment zero-placement --json --ranks 2 8 128 --out " + path("zp"));
  ASSERT_EQ(r.rc, 0) << r.err;
  const auto j = nlohmann::json::parse(r.out);
  EXPECT_EQ(nlohmann::json::parse(slurp(path("zp") + "/experiment.json")), j);  // the report's input
  EXPECT_EQ(j["bytes_per_param"], 5);  // O3: f16 master, e4m3 m1, f16 m2
  ASSERT_EQ(j["rows"].size(), 7u * 3);
  for (const auto& row : j["rows"]) {
    const double split = row["split_bytes"].get<double>();
    const double hi = row["greedy_max_bytes"].get<double>(), lo = row["greedy_min_bytes"].get<double>();
    EXPECT_GE(hi, split) << row;
    EXPECT_LE(lo, split) << row;
    EXPECT_DOUBLE_EQ(row["max_over_split"].get<double>(), hi / split) << row;
    if (row["ranks"] == 2) {
      EXPECT_LT(hi / split, 1.01) << row;
    }
  }
  EXPECT_EQ(j["rows"][20]["model"], "175B");
  EXPECT_EQ(run("experiment zero-placement --ranks 0").rc, 2);
  EXPECT_NE(run("experiment").rc, 0);
}

// --tokens scales the token dimension: a 4x256 step's weight gradient has K = 1024.
TEST_F(Cli, BenchGemmShapesFollowTheTokenCount) {
  const Result r = run("--threads 1 bench gemm --json --reps 1 --tokens 1024 --shape 768x3072x1024");
  ASSERT_EQ(r.rc, 0) << r.err;
  const auto j = nlohmann::json::parse(r.out);
  EXPECT_EQ(j["tokens"], 1024);
  ASSERT_EQ(j["results"].size(), 4u);
  EXPECT_EQ(j["results"][0]["layer"], "mlp.c_fc wgrad (x^T dy)");
  EXPECT_EQ(j["results"][0]["k"], 1024);
  const Result mem = run("bench gemm --memory --tokens 512");  // default shape: the LM head
  ASSERT_EQ(mem.rc, 0) << mem.err;
  EXPECT_EQ(nlohmann::json::parse(mem.out)["m"], 512);
  EXPECT_NE(run("bench gemm --tokens 0").rc, 0);
  EXPECT_NE(run("bench gemm --tokens 1024 --shape 768x3072x2048").rc, 0);  // not at 1024 tokens
}

TEST_F(Cli, BenchGemmMemoryModeAndBadShape) {
  const Result r = run("bench gemm --memory --shape 2048x768x768");
  ASSERT_EQ(r.rc, 0) << r.err;
  const auto j = nlohmann::json::parse(r.out);
  EXPECT_EQ(j["operand_bytes"], 2048 * 768 + 768 * 768);  // one byte per FP8 element
  EXPECT_EQ(j["output_bytes"], 4 * 2048 * 768);
  EXPECT_GT(j["peak_rss_kib"].get<double>(), 0.0);
  const Result bad = run("bench gemm --shape 3x3x3");
  EXPECT_NE(bad.rc, 0);
  EXPECT_EQ(std::count(bad.err.begin(), bad.err.end(), '\n'), 1) << bad.err;
}

}  // namespace
}  // namespace fp8lm

namespace fp8lm {
namespace {

TEST_F(Cli, BenchStepReportsEveryModeAndPyTorch) {
  const Result r = run("bench step --json --preset tiny --batch 2 --seq 32 --reps 1 --pytorch");
  ASSERT_EQ(r.rc, 0) << r.err;
  const auto j = nlohmann::json::parse(r.out);
  ASSERT_EQ(j["results"].size(), 3u);
  const char* modes[] = {"fp32", "bf16", "fp8"};
  for (size_t i = 0; i < 3; ++i) {
    const auto& row = j["results"][i];
    EXPECT_EQ(row["mode"], modes[i]);
    EXPECT_GT(row["tokens_per_s"].get<double>(), 0.0);
    EXPECT_NEAR(row["tokens_per_s"].get<double>() * row["step_s"].get<double>(), 64.0, 1e-6);
    EXPECT_GT(row["activation_bytes"].get<double>(), 0.0);
    // Model FLOPs over the step's time: 64 tokens of the tiny preset (2 layers × 64, vocabulary
    // 512, T = 32): 6·(12·2·64² + 512·64) + 6·2·32·64 = 811,008 per token.
    EXPECT_NEAR(row["model_gflops"].get<double>() * 1e9 * row["step_s"].get<double>(),
                64.0 * 811008.0, 1.0);
    EXPECT_NEAR(row["peak_fraction"].get<double>(),
                row["model_gflops"].get<double>() / j["fma_peak_gflops"].get<double>(), 1e-12);
  }
  EXPECT_EQ(j["flops_per_token"].get<double>(), 811008.0);
  // Saved activations shrink with the precision (fp8 keeps E4M3 Linear inputs).
  EXPECT_LT(j["results"][2]["activation_bytes"].get<double>(),
            0.6 * j["results"][0]["activation_bytes"].get<double>());
  // PyTorch ran before and after fp8lm's steps: its speed is the geometric mean of both runs,
  // the speedup fp8's against it.
  const auto& pt = j["pytorch_fp32"];
  const double before = pt["tokens_per_s_before"], after = pt["tokens_per_s_after"];
  EXPECT_GT(before, 0.0);
  EXPECT_GT(after, 0.0);
  EXPECT_DOUBLE_EQ(pt["tokens_per_s"].get<double>(), std::sqrt(before * after));
  EXPECT_DOUBLE_EQ(pt["speedup"].get<double>(),
                   j["results"][2]["tokens_per_s"].get<double>() / std::sqrt(before * after));
  // PyTorch's model FLOPs/s and fraction of the FMA peak, from the same FLOP count.
  EXPECT_DOUBLE_EQ(pt["model_gflops"].get<double>(),
                   811008.0 * pt["tokens_per_s"].get<double>() / 1e9);
  EXPECT_DOUBLE_EQ(pt["peak_fraction"].get<double>(),
                   pt["model_gflops"].get<double>() / j["fma_peak_gflops"].get<double>());
  EXPECT_FALSE(j["pytorch_fp32"]["openblas_coretype"].get<std::string>().empty());
  // ATen's kernels as wide as fp8lm's target (torch reports AVX512, AVX2 or DEFAULT).
  const std::string simd = j["simd"], aten = j["pytorch_fp32"]["aten_capability"];
  if (simd.starts_with("avx512")) {
    EXPECT_EQ(aten, "AVX512");
  } else if (simd == "avx2") {
    EXPECT_EQ(aten, "AVX2");
  }
  const Result bad = run("bench step --preset gpt5");
  EXPECT_NE(bad.rc, 0);
  EXPECT_NE(bad.err.find("unknown model preset"), std::string::npos) << bad.err;
}

// --lm-head times each level once per LM head format, the rows named LEVEL/FORMAT; the BF16
// head's loss is close to the FP32 head's. A format other than f32 or bf16 is an error.
TEST_F(Cli, BenchStepTimesEachLmHeadFormat) {
  const Result r = run("bench step --json --preset tiny --batch 2 --seq 32 --reps 1 --train "
                       "--levels fp32 O2 --lm-head f32 bf16");
  ASSERT_EQ(r.rc, 0) << r.err;
  const auto j = nlohmann::json::parse(r.out);
  ASSERT_EQ(j["results"].size(), 4u);
  const char* names[] = {"fp32/f32", "fp32/bf16", "O2/f32", "O2/bf16"};
  for (size_t i = 0; i < 4; ++i) EXPECT_EQ(j["results"][i]["level"], names[i]);
  for (size_t i : {size_t{0}, size_t{2}}) {
    const double f32 = j["results"][i]["loss"], bf16 = j["results"][i + 1]["loss"];
    EXPECT_NEAR(bf16, f32, 0.01 * f32) << names[i];
    // The BF16 head's products took the dot kernel where the run had it (the FP32 head has
    // no BF16 products).
    EXPECT_FALSE(j["results"][i].contains("bf16_products_on_dot"));
    if (j["simd"] == "avx512bf16") EXPECT_EQ(j["results"][i + 1]["bf16_products_on_dot"], 1.0);
  }
  const Result bad = run("bench step --preset tiny --seq 32 --lm-head e4m3");
  EXPECT_NE(bad.rc, 0);
  EXPECT_NE(bad.err.find("--lm-head e4m3"), std::string::npos) << bad.err;
}

}  // namespace
}  // namespace fp8lm

namespace fp8lm {
namespace {

TEST_F(Cli, PrepareWritesTrainAndValTokenFiles) {
  std::ofstream(path("a.txt")) << "Hello world. It's a test, isn't it?";
  std::ofstream(path("b.txt")) << "Second file \xe2\x80\x94 caf\xc3\xa9!";
  const Result r = run("prepare --out " + path("tok") + " --val-fraction 0.25 " + path("a.txt") +
                       " " + path("b.txt"));
  ASSERT_EQ(r.rc, 0) << r.err;
  const TokenFile train(path("tok/train.bin"), 50257), val(path("tok/val.bin"), 50257);
  const Gpt2Tokenizer tok(std::string(FP8LM_SOURCE_DIR) + "/data/gpt2/encoder.json",
                          std::string(FP8LM_SOURCE_DIR) + "/data/gpt2/vocab.bpe");
  std::vector<int32_t> want = {50256};
  for (int32_t t : tok.encode("Hello world. It's a test, isn't it?")) want.push_back(t);
  want.push_back(50256);
  for (int32_t t : tok.encode("Second file \xe2\x80\x94 caf\xc3\xa9!")) want.push_back(t);
  const size_t val_n = want.size() / 4;  // the last quarter of the stream
  ASSERT_EQ(train.size() + val.size(), want.size());
  ASSERT_EQ(val.size(), val_n);
  const std::vector<uint16_t> tr = all_tokens(train), va = all_tokens(val);
  for (size_t i = 0; i < want.size(); ++i) {
    const uint16_t got = i < train.size() ? tr[i] : va[i - train.size()];
    EXPECT_EQ(got, want[i]) << i;
  }
  EXPECT_FALSE(std::filesystem::exists(path("tok/.tokens.tmp")));
}

TEST_F(Cli, PrepareStreamsLargeInputsLikeOneString) {
  // Over 1 MiB so the file is read in several blocks: tokens must equal one-shot encoding.
  std::string text;
  for (int i = 0; text.size() < (3u << 19); ++i)
    text += "Paragraph " + std::to_string(i) + " says: it's   fine\n\n";
  std::ofstream(path("big.txt")) << text;
  ASSERT_EQ(run("prepare --out " + path("big") + " --val-fraction 0 " + path("big.txt")).rc, 0);
  const Gpt2Tokenizer tok(std::string(FP8LM_SOURCE_DIR) + "/data/gpt2/encoder.json",
                          std::string(FP8LM_SOURCE_DIR) + "/data/gpt2/vocab.bpe");
  const std::vector<int32_t> want = tok.encode(text);
  const TokenFile f(path("big/train.bin"));
  ASSERT_EQ(f.size(), want.size() + 1);
  const std::vector<uint16_t> got = all_tokens(f);
  for (size_t i = 0; i < want.size(); ++i) ASSERT_EQ(got[i + 1], want[i]) << i;
}

TEST_F(Cli, PrepareByteTokenizerAndErrors) {
  std::ofstream(path("a.txt")) << "abc";
  ASSERT_EQ(run("prepare --tokenizer byte --val-fraction 0 --out " + path("b") + " " + path("a.txt")).rc, 0);
  const TokenFile f(path("b/train.bin"), 257);
  ASSERT_EQ(f.size(), 4u);
  EXPECT_EQ(all_tokens(f)[0], 256);
  EXPECT_EQ(all_tokens(f)[3], 'c');
  for (const std::string& args :
       {"prepare --out " + path("c") + " " + path("missing.txt"),
        "prepare --out " + path("c") + " --val-fraction 0.9 " + path("a.txt"),
        "prepare --out " + path("c") + " --tokenizer wordpiece " + path("a.txt"),
        "prepare --out " + path("c") + " /dev/zero",
        "prepare --out " + path("a.txt") + " " + path("a.txt"),
        "prepare --out " + path("c") + " --tokenizer-dir " + path("nowhere") + " " + path("a.txt")}) {
    const Result r = run(args);
    EXPECT_NE(r.rc, 0) << args;
    EXPECT_EQ(std::count(r.err.begin(), r.err.end(), '\n'), 1) << args << ": " << r.err;
  }
}

}  // namespace
}  // namespace fp8lm

namespace fp8lm {
namespace {

// Tiny byte-level training data and the flags for a run on it.
std::string tiny_train_flags(const std::string& dir, const std::string& out) {
  std::string text;
  for (int i = 0; text.size() < 20000; ++i) text += "the cat sat on the mat " + std::to_string(i % 7) + ". ";
  std::vector<uint16_t> t(text.begin(), text.end());
  write_token_file(dir + "/train.bin", t.size() - 2000, [&](const auto& s) { s(t.data(), t.size() - 2000); });
  write_token_file(dir + "/val.bin", 2000, [&](const auto& s) { s(t.data() + t.size() - 2000, 2000); });
  return "--set model.preset=tiny --set model.seq_len=32 --set data.tokenizer=byte"
         " --set data.train=" + dir + "/train.bin --set data.val=" + dir + "/val.bin" +
         " --set train.batch_size=4 --set train.eval_every=0 --set train.eval_batches=2"
         " --set train.checkpoint_every=4 --set train.warmup_steps=1 --set train.out_dir=" + out;
}

TEST_F(Cli, KilledDuringCheckpointLeavesTheLastOneLoadable) {
  const std::string run_dir = path("run");
  const std::string flags = tiny_train_flags(dir_.string(), run_dir);
  Result r = run("train " + flags + " --set train.steps=4");
  ASSERT_EQ(r.rc, 0) << r.err;
  EXPECT_TRUE(std::filesystem::exists(run_dir + "/summary.json"));
  EXPECT_NE(r.out.find("done: train loss"), std::string::npos) << r.out;
  ::setenv("FP8LM_TEST_CRASH_IN_CHECKPOINT", "1", 1);
  r = run("train " + flags + " --set train.steps=8 --resume " + run_dir);
  ::unsetenv("FP8LM_TEST_CRASH_IN_CHECKPOINT");
  EXPECT_NE(r.rc, 0);  // aborted while writing step-8
  EXPECT_FALSE(std::filesystem::exists(run_dir + "/checkpoints/step-8"));
  // The step-4 checkpoint is still complete and loadable.
  r = run("eval --checkpoint " + run_dir + " --data " + path("val.bin") + " --batches 2");
  ASSERT_EQ(r.rc, 0) << r.err;
  EXPECT_GT(nlohmann::json::parse(r.out)["loss"].get<double>(), 0.0);
  r = run("train " + flags + " --set train.steps=8 --resume " + run_dir);
  ASSERT_EQ(r.rc, 0) << r.err;
  EXPECT_NE(r.out.find("resumed from"), std::string::npos);
  EXPECT_TRUE(std::filesystem::exists(run_dir + "/checkpoints/step-8/trainer.json"));
  r = run("sample --checkpoint " + run_dir + " --prompt the --tokens 8 --temperature 0");
  ASSERT_EQ(r.rc, 0) << r.err;
  EXPECT_EQ(r.out.rfind("the", 0), 0u) << r.out;
}

// From another working folder a run trains and samples, and progress shows no "val nan"
// before the first evaluation. (The default GPT-2 tokenizer's location is absolute:
// Train.DefaultTokenizerIsFoundFromAnyFolder.)
TEST_F(Cli, TrainFromAnotherFolder) {
  const std::string flags = tiny_train_flags(dir_.string(), path("run"));
  const Result r = run_in("/", "train " + flags + " --set train.steps=2");
  ASSERT_EQ(r.rc, 0) << r.err;
  EXPECT_NE(r.out.find("sample: The"), std::string::npos) << r.out;
  EXPECT_EQ(r.out.find("val nan"), std::string::npos) << r.out;
  // A tokenizer whose ids do not fit the model's vocabulary is refused before step 1.
  const Result big = run("train " + flags + " --set data.tokenizer=gpt2 --overwrite");
  EXPECT_EQ(big.rc, 1);
  EXPECT_NE(big.err.find("model.vocab_size"), std::string::npos) << big.err;
}

TEST_F(Cli, TrainRejectsBadConfigAndData) {
  const std::string flags = tiny_train_flags(dir_.string(), path("run"));
  const std::vector<std::pair<std::string, std::string>> cases = {
      {"train " + flags + " --set train.bogus=1", "train.bogus"},
      {"train " + flags + " --set train.lr=zero", "train.lr"},
      {"train --config " + path("missing.toml"), "missing.toml"},
      {"train " + flags + " --set data.train=" + path("nope.bin"), "nope.bin"},
      {"train " + flags + " --set data.val=" + path("a.txt"), "a.txt"},
      // Not regular files: a folder was an empty config, a FIFO blocked forever.
      {"train --config " + dir_.string(), "is a folder"},
      {"train --config " + path("fifo"), "not a regular file"},
      {"train " + flags + " --set data.train=" + path("fifo"), "not a regular file"},
      {"train " + flags + " --set train.threads=100000", "train.threads"},
      {"train " + flags + " --set train.lr=inf", "train.lr"},
      {"train " + flags + " --set train.weight_decay=1e308", "train.weight_decay"},
      {"train " + flags + " --set precision.master=e5m2", "precision.master"},
      {"train " + flags + " --set precision.m2=e4m3 --set precision.level=O3", "O3"},
      {"train " + flags + " --set precision.m1=bf16", "not a supported combination"},
      {"train " + flags + " --set precision.lm_head=f16", "precision.lm_head"},
      {"experiment precision-decoupling --rows 9", "unknown row '9'"},
      {"experiment grad-scaling --data " + path("nope.bin"), "nope.bin"},
      {"report " + path("a.txt"), "neither a run folder"},
      {"report " + dir_.string(), "neither a run folder"},
  };
  std::ofstream(path("a.txt")) << "this is not a token file, it is much too short";
  ASSERT_EQ(::mkfifo(path("fifo").c_str(), 0644), 0);
  for (const auto& [args, words] : cases) {
    const Result r = run(args);
    EXPECT_NE(r.rc, 0) << args;
    EXPECT_LT(r.rc, 128) << "crashed: " << args;
    EXPECT_EQ(std::count(r.err.begin(), r.err.end(), '\n'), 1) << args << ": " << r.err;
    EXPECT_NE(r.err.find(words), std::string::npos) << r.err;
  }
}

// grad-scaling and formats at toy sizes: one point per step, rank count, mode and format;
// N = 1 is the per-rank cast alone (every mode alike, multiplier 1); the fixed modes use
// their multipliers; the statistics are finite and the summary covers the second half.
TEST_F(Cli, GradExperimentsRecordEveryPoint) {
  tiny_train_flags(dir_.string(), path("run"));
  const std::string common = " --layers 1 --width 16 --seq 16 --data " + path("train.bin");
  Result r = run("experiment grad-scaling --steps 2 --ranks 1,2,4 --out " + path("gs") + common);
  ASSERT_EQ(r.rc, 0) << r.err;
  auto j = nlohmann::json::parse(slurp(path("gs") + "/experiment.json"));
  EXPECT_EQ(j["experiment"], "grad-scaling");
  ASSERT_EQ(j["points"].size(), 2u * 3 * 4);
  ASSERT_EQ(j["summary"].size(), 3u * 4);
  EXPECT_EQ(j["summary_from_step"], 1);
  std::map<int, nlohmann::json> n1;  // step → the N = 1 stats of the first mode
  for (const auto& p : j["points"]) {
    const int n = p["ranks"], step = p["step"];
    const std::string mode = p["mode"];
    const auto& st = p["stats"];
    ASSERT_TRUE(st["snr_db"].is_number()) << p;
    EXPECT_GT(st["snr_db"].get<double>(), 0.0) << p;
    EXPECT_GT(st["nonzero"].get<double>(), 0.0) << p;
    const double m = p["multiplier"];
    if (n == 1) {
      EXPECT_EQ(m, 1.0) << p;
      if (!n1.count(step)) n1[step] = st;
      EXPECT_EQ(st, n1[step]) << "N = 1 must not depend on the mode: " << p;
    } else if (mode == "pre") {
      EXPECT_EQ(m, 1.0 / n) << p;
    } else if (mode == "post") {
      EXPECT_EQ(m, 1.0) << p;
    } else if (mode == "sqrt") {
      EXPECT_FLOAT_EQ(m, 1.0 / std::sqrt(n)) << p;
    } else {
      EXPECT_EQ(mode, "auto");
    }
  }
  r = run("experiment formats --steps 1 --ranks 2 --out " + path("fm") + common);
  ASSERT_EQ(r.rc, 0) << r.err;
  j = nlohmann::json::parse(slurp(path("fm") + "/experiment.json"));
  ASSERT_EQ(j["points"].size(), 2u);
  EXPECT_EQ(j["points"][0]["format"], "e4m3");
  EXPECT_EQ(j["points"][1]["format"], "e5m2");
}

// precision-decoupling: each row a run folder whose config differs only in the state
// formats, with the bytes per parameter those formats give.
TEST_F(Cli, PrecisionDecouplingRowsDifferInStateFormats) {
  const std::string flags = tiny_train_flags(dir_.string(), path("unused"));
  const Result r = run("experiment precision-decoupling --rows 2a,3,4 " + flags +
                       " --set train.steps=2 --out " + path("pd"));
  ASSERT_EQ(r.rc, 0) << r.err;
  const auto j = nlohmann::json::parse(slurp(path("pd") + "/experiment.json"));
  ASSERT_EQ(j["rows"].size(), 3u);
  const double want_bytes[] = {6, 5, 5};  // O2; E4M3 master (1 + 1 + 2); E4M3 m2 (2 + 1 + 1) + grad 1
  for (size_t i = 0; i < 3; ++i) {
    const auto& row = j["rows"][i];
    EXPECT_EQ(row["bytes_per_param"]["model_states"].get<double>(), want_bytes[i]) << row["id"];
    EXPECT_EQ(row["metrics"].size(), 3u) << row["id"];  // 2 steps + the final validation
    EXPECT_TRUE(std::isfinite(row["final_val_loss"].get<double>()));
  }
  EXPECT_NE(slurp(path("pd") + "/3/config.toml").find("master = 'e4m3'"), std::string::npos);
  EXPECT_NE(slurp(path("pd") + "/4/config.toml").find("m2 = 'e4m3'"), std::string::npos);
  EXPECT_NE(slurp(path("pd") + "/2a/config.toml").find("master = 'level'"), std::string::npos);
}

}  // namespace
}  // namespace fp8lm
