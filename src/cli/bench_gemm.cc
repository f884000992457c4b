// fp8lm bench gemm: fp8lm's GEMM with FP8 operands against OpenBLAS sgemm on FP32 copies of
// the same values, per GPT-2 124M shape, interleaved in one run; plus the measured FMA peak.
// --memory: peak RSS while multiplying one shape with FP8 operands (no FP32 copies).
// --scaling block|mxfp8: also the same products with fine-grained scales (1×128 tiles and
// 128×128 weight blocks, or MX 1×32 with e8m0 scales), timed beside the per-tensor ones.
#include <sys/resource.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <memory>
#include <nlohmann/json.hpp>
#include <string>
#include <thread>
#include <vector>

#include "cli/bench_util.h"
#include "cli/commands.h"
#include "cli/openblas.h"
#include "core/check.h"
#include "core/memory.h"
#include "core/parallel.h"
#include "kernels/cast.h"
#include "kernels/gemm.h"
#include "kernels/peak.h"
#include "kernels/simd.h"
#include "tensor/tensor.h"

namespace fp8lm::cli {
namespace {

struct Shape3 {
  size_t m, n, k;
  bool a_trans, b_trans;
  const char* what;
};

// GPT-2 124M's Linear products at T tokens (a batch's rows: T = 2048 is 8 sequences of 256,
// a 4×256 training step has 1024). Weights use the Hugging Face Conv1D layout [in, out].
std::vector<Shape3> gpt2_shapes(size_t T) {
  return {{T, 2304, 768, false, false, "attn.c_attn forward"},
          {T, 768, 768, false, false, "attn.c_proj forward"},
          {T, 3072, 768, false, false, "mlp.c_fc forward"},
          {T, 768, 3072, false, false, "mlp.c_proj forward"},
          {768, 3072, T, true, false, "mlp.c_fc wgrad (x^T dy)"},
          {3072, 768, T, true, false, "mlp.c_proj wgrad (h^T dy)"},
          {T, 768, 2304, false, true, "attn.c_attn dgrad (dy W^T)"},
          {T, 768, 768, false, true, "attn.c_proj dgrad (dy W^T)"},
          {T, 768, 3072, false, true, "mlp.c_fc dgrad (dy W^T)"},
          {T, 3072, 768, false, true, "mlp.c_proj dgrad (dy W^T)"},
          {T, 50304, 768, false, true, "LM head (x wte^T)"}};
}

struct Kernel {
  DType a, b, c;
};
// Training's operand pairs: forward x·W (e4m3 × e4m3, output f32 or e4m3), input gradient
// dy·Wᵀ (e5m2 × e4m3), weight gradient xᵀ·dy (e4m3 × e5m2).
const Kernel kKernels[] = {{DType::kE4M3, DType::kE4M3, DType::kF32},
                           {DType::kE5M2, DType::kE4M3, DType::kF32},
                           {DType::kE4M3, DType::kE5M2, DType::kF32},
                           {DType::kE4M3, DType::kE4M3, DType::kE4M3}};

struct BenchGemmOptions {
  bool json = false;
  bool memory = false;
  int reps = 5;
  int tokens = 2048;  // the shapes' token dimension
  std::string shape;  // MxNxK filter
  std::string openblas_core;  // empty: the CPU's (openblas_core_for_cpu)
  std::string scaling = "tensor";  // tensor | block | mxfp8
};

// Seconds per call of fn. A pause comes first: OpenBLAS's and OpenMP's worker threads spin
// for a while after each call, and on 2 cores a spinning thread of one library would slow
// the other's run. Then one untimed call wakes the threads, and enough back-to-back calls
// are timed to fill about 0.2 s, so short products are not dominated by wake-up noise.
template <typename Fn>
double seconds_per_call(Fn&& fn) {
  using clock = std::chrono::steady_clock;
  std::this_thread::sleep_for(std::chrono::milliseconds(150));
  auto t0 = clock::now();
  fn();
  const double once = std::chrono::duration<double>(clock::now() - t0).count();
  const int calls = static_cast<int>(std::clamp(0.2 / once, 1.0, 1000.0));
  t0 = clock::now();
  for (int i = 0; i < calls; ++i) fn();
  return std::chrono::duration<double>(clock::now() - t0).count() / calls;
}

// Deterministic N(0, 1)-ish values, fast enough for 40M elements.
void fill_random(float* x, size_t n, uint64_t seed) {
  uint64_t s = seed * 0x9E3779B97F4A7C15ull + 1;
  for (size_t i = 0; i < n; ++i) {
    s ^= s << 13;
    s ^= s >> 7;
    s ^= s << 17;
    const float u1 = static_cast<float>((s >> 40) + 1) * 0x1p-24f;
    const float u2 = static_cast<float>(s & 0xFFFFFF) * 0x1p-24f;
    x[i] = std::sqrt(-2.0f * std::log(u1)) * std::cos(6.2831853f * u2);
  }
}

// An FP8 operand quantized with a per-tensor scale, and (optionally) FP32 copies of the
// very values it holds, for the reference.
struct Operand {
  Tensor q;
  float scale_inv = 1.0f;
};

// Generated and quantized in chunks, so no full-size FP32 staging copy raises the peak RSS.
Operand make_operand(DType t, size_t n, uint64_t seed, Tensor* f32_copy) {
  Operand o{Tensor(t, {static_cast<int64_t>(n)}, MemCategory::kWorkspace), 1.0f};
  const float scale = t == DType::kE4M3 ? 64.0f : 4096.0f;  // N(0,1) fits either range
  o.scale_inv = 1.0f / scale;
  if (f32_copy != nullptr)
    *f32_copy = Tensor(DType::kF32, {static_cast<int64_t>(n)}, MemCategory::kWorkspace);
  constexpr size_t kChunk = size_t{1} << 20;
  std::vector<float> x(kChunk);
  for (size_t i = 0; i < n; i += kChunk) {
    const size_t len = std::min(kChunk, n - i);
    fill_random(x.data(), len, seed * 1000003 + i / kChunk);
    uint8_t* q = static_cast<uint8_t*>(o.q.data()) + i * dtype_size(t);
    kernels::quantize(q, t, x.data(), len, scale);
    if (f32_copy != nullptr)
      kernels::dequantize(f32_copy->as<float>() + i, q, t, len, o.scale_inv);
  }
  return o;
}

// An FP8 operand with block scales over its stored rows × cols.
struct BlockOperand {
  Tensor q, scales;
  BlockShape shape;
};

BlockOperand make_block_operand(DType t, size_t rows, size_t cols, BlockShape shape,
                                uint64_t seed) {
  const auto n = static_cast<int64_t>(rows * cols);
  const auto grid = static_cast<int64_t>(grid_extent(rows, shape.rows) * grid_extent(cols, shape.cols));
  BlockOperand o{Tensor(t, {n}, MemCategory::kWorkspace),
                 Tensor(shape.scale_dtype, {grid}, MemCategory::kWorkspace), shape};
  Tensor x(DType::kF32, {n}, MemCategory::kWorkspace);
  fill_random(x.as<float>(), rows * cols, seed);
  kernels::quantize_blocks(o.q.data(), t, x.as<float>(), rows, cols, shape, o.scales.data());
  return o;
}

// The recipe's block shape of an operand, in stored coordinates: tiles (or MX blocks) along
// K for activations and gradients, 128×128 blocks for weights.
BlockShape recipe_shape(const std::string& scaling, bool weight, bool k_along_stored_cols) {
  BlockShape s = block_shape(scaling == "mxfp8" ? ScalingMode::kMx32
                             : weight           ? ScalingMode::kBlock128
                                                : ScalingMode::kRows1x128);
  if (!k_along_stored_cols) std::swap(s.rows, s.cols);
  return s;
}

std::string shape_name(const Shape3& s) {
  return std::to_string(s.m) + "x" + std::to_string(s.n) + "x" + std::to_string(s.k);
}

// The products to time: all, or those named by --shape (an error if none is).
std::vector<Shape3> chosen_shapes(const BenchGemmOptions& o, const std::string& want) {
  std::vector<Shape3> out;
  for (const Shape3& s : gpt2_shapes(static_cast<size_t>(o.tokens)))
    if (want.empty() || shape_name(s) == want) out.push_back(s);
  if (out.empty())
    fail("--shape ", want, ": not one of the benchmark shapes at ", o.tokens, " tokens");
  return out;
}

long peak_rss_kib() {
  rusage ru{};
  getrusage(RUSAGE_SELF, &ru);
  return ru.ru_maxrss;
}

void run_memory(const BenchGemmOptions& o) {
  const std::vector<Shape3> shapes = chosen_shapes(o, o.shape);
  const Shape3* s = o.shape.empty() ? &shapes.back() : &shapes.front();  // default: LM head
  const long rss_before = peak_rss_kib();
  Operand a = make_operand(DType::kE4M3, s->m * s->k, 1, nullptr);
  Operand b = make_operand(DType::kE4M3, s->k * s->n, 2, nullptr);
  Tensor c(DType::kF32, {static_cast<int64_t>(s->m * s->n)}, MemCategory::kWorkspace);
  std::memset(c.data(), 0, c.bytes());
  mem_reset_peaks();
  const int64_t before_gemm = mem_stats(MemCategory::kWorkspace).current;
  kernels::gemm(s->m, s->n, s->k, 1.0f, {a.q.data(), DType::kE4M3, s->a_trans, 0, a.scale_inv},
                {b.q.data(), DType::kE4M3, s->b_trans, 0, b.scale_inv}, 0.0f,
                {c.data(), DType::kF32});
  const int64_t workspace = mem_stats(MemCategory::kWorkspace).peak - before_gemm;
  const size_t operands = a.q.bytes() + b.q.bytes();
  const long rss = peak_rss_kib();  // the whole run's peak: operands are made in chunks
  const double expected_kib =
      static_cast<double>(operands + c.bytes() + static_cast<size_t>(workspace)) / 1024.0 +
      static_cast<double>(rss_before);
  const nlohmann::json j = {{"m", s->m},
                            {"n", s->n},
                            {"k", s->k},
                            {"operand_bytes", operands},
                            {"output_bytes", c.bytes()},
                            {"workspace_bytes", workspace},
                            {"workspace_bound_per_thread", kernels::gemm_workspace_bytes_per_thread()},
                            {"threads", num_threads()},
                            {"rss_before_kib", rss_before},
                            {"peak_rss_kib", rss},
                            {"expected_kib", expected_kib},
                            {"ratio", static_cast<double>(rss) / expected_kib}};
  std::printf("%s\n", j.dump(2).c_str());
}

void run_bench_gemm(const BenchGemmOptions& o) {
  apply_global_options();
  if (o.memory) return run_memory(o);
  const std::vector<Shape3> shapes = chosen_shapes(o, o.shape);
  const int threads = num_threads();
  const OpenBlas blas = OpenBlas::load(threads, o.openblas_core);
  const double peak = kernels::measure_fma_peak_gflops(threads);
  const double dot_peak = kernels::measure_bf16_dot_peak_gflops(threads);
  nlohmann::json rows = nlohmann::json::array();
  if (!o.json) {
    std::printf(
        "bench gemm: %d threads, simd %s (packed A block %zu KiB), OpenBLAS core %s%s, "
        "FMA peak %.1f GFLOP/s",
        threads, simd::active_target().c_str(), kernels::gemm_a_block_bytes() >> 10,
        blas.core.c_str(),
        blas.full_width ? "" : " (narrower kernels than this CPU runs: ratios flatter fp8lm)",
        peak);
    if (dot_peak > 0) std::printf(", BF16 dot peak %.1f (FP8 products' bound)", dot_peak);
    std::printf("\n");
    std::printf("%-16s %-30s %-16s %9s %9s %6s %6s", "MxNxK", "layer", "a x b -> c", "GFLOP/s",
                "sgemm", "ratio", "%peak");
    if (o.scaling != "tensor") std::printf(" %9s %6s", o.scaling.c_str(), "/tensor");
    std::printf("\n");
  }
  for (const Shape3& s : shapes) {
    Tensor a32, b32, a32b, c(DType::kF32, {static_cast<int64_t>(s.m * s.n)}, MemCategory::kWorkspace);
    Tensor c8(DType::kE4M3, {static_cast<int64_t>(s.m * s.n)}, MemCategory::kWorkspace);
    std::memset(c.data(), 0, c.bytes());
    std::memset(c8.data(), 0, c8.bytes());
    const Operand a4 = make_operand(DType::kE4M3, s.m * s.k, 1, &a32);
    const Operand a5 = make_operand(DType::kE5M2, s.m * s.k, 3, nullptr);
    const Operand b4 = make_operand(DType::kE4M3, s.k * s.n, 2, &b32);
    const Operand b5 = make_operand(DType::kE5M2, s.k * s.n, 4, nullptr);
    // Fine-grained variants: A is an activation or gradient (tiles along K); B is a weight,
    // except in the weight-gradient shapes (a_trans), where both are activations/gradients.
    const bool scaled = o.scaling != "tensor";
    BlockOperand ab4, ab5, bb4, bb5;
    if (scaled) {
      const size_t a_rows = s.a_trans ? s.k : s.m, a_cols = s.a_trans ? s.m : s.k;
      const size_t b_rows = s.b_trans ? s.n : s.k, b_cols = s.b_trans ? s.k : s.n;
      const BlockShape as = recipe_shape(o.scaling, false, !s.a_trans);
      const BlockShape bs = recipe_shape(o.scaling, !s.a_trans, s.b_trans);
      ab4 = make_block_operand(DType::kE4M3, a_rows, a_cols, as, 1);
      ab5 = make_block_operand(DType::kE5M2, a_rows, a_cols, as, 3);
      bb4 = make_block_operand(DType::kE4M3, b_rows, b_cols, bs, 2);
      bb5 = make_block_operand(DType::kE5M2, b_rows, b_cols, bs, 4);
    }
    const int lda = static_cast<int>(s.a_trans ? s.m : s.k);
    const int ldb = static_cast<int>(s.b_trans ? s.k : s.n);
    auto sgemm = [&] {
      blas.sgemm(101, s.a_trans ? 112 : 111, s.b_trans ? 112 : 111, static_cast<int>(s.m),
                 static_cast<int>(s.n), static_cast<int>(s.k), 1.0f, a32.as<float>(), lda,
                 b32.as<float>(), ldb, 0.0f, c.as<float>(), static_cast<int>(s.n));
    };
    auto ours = [&](const Kernel& kern, bool blocks) {
      const Operand& a = kern.a == DType::kE4M3 ? a4 : a5;
      const Operand& b = kern.b == DType::kE4M3 ? b4 : b5;
      float amax = 0;
      kernels::GemmOutput out{kern.c == DType::kF32 ? c.data() : c8.data(), kern.c};
      if (kern.c != DType::kF32) {
        out.scale = 1.0f / 64;
        out.amax = &amax;
      }
      kernels::GemmOperand ga{a.q.data(), kern.a, s.a_trans, 0, a.scale_inv};
      kernels::GemmOperand gb{b.q.data(), kern.b, s.b_trans, 0, b.scale_inv};
      if (blocks) {
        const BlockOperand& ab = kern.a == DType::kE4M3 ? ab4 : ab5;
        ga = {ab.q.data(), kern.a, s.a_trans};
        ga.blocks = {ab.scales.data(), ab.shape, 0};
        const BlockOperand& bb = kern.b == DType::kE4M3 ? bb4 : bb5;
        gb = {bb.q.data(), kern.b, s.b_trans};
        gb.blocks = {bb.scales.data(), bb.shape, 0};
      }
      kernels::gemm(s.m, s.n, s.k, 1.0f, ga, gb, 0.0f, out);
    };
    std::vector<double> t_ref;
    std::vector<std::vector<double>> t_ours(std::size(kKernels)), t_blocks(std::size(kKernels));
    // sgemm is timed before every repetition and once after the last, so each of ours has a
    // reference on either side of it: the ratio is the median over repetitions of ours
    // against the geometric mean of the two. A shared VM's speed drifts by 10-15% within
    // minutes; the ratio of two medians taken seconds apart would carry that drift.
    for (int r = 0; r < o.reps; ++r) {
      t_ref.push_back(seconds_per_call(sgemm));
      for (size_t i = 0; i < std::size(kKernels); ++i) {
        t_ours[i].push_back(seconds_per_call([&] { ours(kKernels[i], false); }));
        if (scaled) t_blocks[i].push_back(seconds_per_call([&] { ours(kKernels[i], true); }));
      }
    }
    t_ref.push_back(seconds_per_call(sgemm));
    auto paired_ratio = [&](const std::vector<double>& t) {
      std::vector<double> r;
      for (size_t i = 0; i < t.size(); ++i) r.push_back(std::sqrt(t_ref[i] * t_ref[i + 1]) / t[i]);
      return median(r);
    };
    const double gflop = 2.0 * static_cast<double>(s.m) * static_cast<double>(s.n) *
                         static_cast<double>(s.k) / 1e9;
    const double ref = gflop / median(t_ref);
    for (size_t i = 0; i < std::size(kKernels); ++i) {
      const Kernel& k = kKernels[i];
      const double g = gflop / median(t_ours[i]), ratio = paired_ratio(t_ours[i]);
      const double gb = scaled ? gflop / median(t_blocks[i]) : 0.0;
      nlohmann::json row = {{"m", s.m},
                                  {"n", s.n},
                                  {"k", s.k},
                                  {"a", std::string(dtype_name(k.a))},
                                  {"b", std::string(dtype_name(k.b))},
                                  {"c", std::string(dtype_name(k.c))},
                                  {"layer", s.what},
                                  {"gflops", g},
                                  {"sgemm_gflops", ref},
                                  {"ratio", ratio},
                                  {"seconds", t_ours[i]},
                                  {"sgemm_seconds", t_ref},
                                  {"peak_fraction", g / peak}};
      if (scaled) {
        row["scaled_gflops"] = gb;
        row["scaled_vs_tensor"] = gb / g;
      }
      rows.push_back(row);
      if (!o.json) {
        const std::string kname = std::string(dtype_name(k.a)) + "x" +
                                  std::string(dtype_name(k.b)) + "->" +
                                  std::string(dtype_name(k.c));
        std::printf("%-16s %-30s %-16s %9.1f %9.1f %6.2f %5.0f%%", shape_name(s).c_str(), s.what,
                    kname.c_str(), g, ref, ratio, 100 * g / peak);
        if (scaled) std::printf(" %9.1f %6.2f", gb, gb / g);
        std::printf("\n");
        std::fflush(stdout);
      }
    }
  }
  if (o.json) {
    const nlohmann::json j = {{"threads", threads},
                              {"simd", simd::active_target()},
                              {"a_block_bytes", kernels::gemm_a_block_bytes()},
                              {"openblas_core", blas.core},
                              {"openblas_core_full_width", blas.full_width},
                              {"fma_peak_gflops", peak},
                              {"bf16_dot_peak_gflops", dot_peak},
                              {"reps", o.reps},
                              {"tokens", o.tokens},
                              {"scaling", o.scaling},
                              {"results", rows}};
    std::printf("%s\n", j.dump(2).c_str());
  }
}

}  // namespace

void register_bench_gemm(CLI::App& bench) {
  auto o = std::make_shared<BenchGemmOptions>();
  CLI::App* sub = bench.add_subcommand(
      "gemm", "FP8 GEMM vs OpenBLAS sgemm on GPT-2 124M shapes (GFLOP/s, ratio, % of FMA peak)");
  sub->add_flag("--json", o->json, "Print JSON");
  sub->add_option("--reps", o->reps, "Repetitions per kernel (median reported)")
      ->check(CLI::Range(1, 1000))
      ->capture_default_str();
  sub->add_option("--tokens", o->tokens,
                  "Tokens per product (the rows of a batch: 4x256 sequences are 1024)")
      ->check(CLI::Range(1, 1 << 20))
      ->capture_default_str();
  sub->add_option("--shape", o->shape, "Only this shape, as MxNxK (e.g. 2048x768x768)");
  sub->add_option("--openblas-core", o->openblas_core,
                  "OPENBLAS_CORETYPE for the reference (default: as wide as fp8lm's SIMD target: "
                  "SkylakeX for avx512, Zen or Haswell for avx2)");
  sub->add_option("--scaling", o->scaling,
                  "Also time fine-grained scaling beside per-tensor: block (1x128 tiles, 128x128 "
                  "weight blocks) or mxfp8 (1x32, e8m0 scales)")
      ->check(CLI::IsMember({"tensor", "block", "mxfp8"}))
      ->capture_default_str();
  sub->add_flag("--memory", o->memory,
                "Report peak RSS for one FP8 product (default shape: the LM head) instead");
  sub->callback([o] { run_bench_gemm(*o); });
}

}  // namespace fp8lm::cli
