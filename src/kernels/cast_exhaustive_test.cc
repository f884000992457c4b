// Every one of the 2^32 float32 inputs, through every compiled SIMD target's cast kernel,
// against the scalar reference: E4M3, E5M2, F16 and BF16, saturating and not.
// Blocks of 2^16 inputs run in parallel; each target's kernel is called directly
// (kernels::detail), so all targets are checked on the same reference codes.
#include <gtest/gtest.h>
#include <omp.h>

#include <atomic>
#include <bit>
#include <cstring>
#include <vector>

#include "kernels/cast.h"
#include "kernels/simd.h"
#include "numerics/cast_ref.h"

namespace fp8lm {
namespace {

constexpr size_t kBlock = size_t{1} << 16;

void check_all_inputs(DType t, bool saturate) {
  const FloatFormat& f = float_format(t);
  const size_t es = dtype_size(t);
  const auto targets = simd::available_targets();
  std::vector<kernels::detail::QuantizeChunkFn> fns;
  for (const auto& tg : targets) fns.push_back(kernels::detail::quantize_chunk_for(tg.bits));
  std::atomic<int64_t> mismatches{0};
  std::atomic<uint32_t> first_bad{0};

#pragma omp parallel
  {
    std::vector<float> x(kBlock);
    std::vector<uint8_t> want(kBlock * 2), got(kBlock * 2);
#pragma omp for schedule(dynamic, 16)
    for (int64_t block = 0; block < (int64_t{1} << 16); ++block) {
      const uint32_t base = static_cast<uint32_t>(block) << 16;
      for (size_t i = 0; i < kBlock; ++i) {
        x[i] = std::bit_cast<float>(base | static_cast<uint32_t>(i));
        const uint32_t code = encode_ref(x[i], f, saturate);
        std::memcpy(&want[i * es], &code, es);
      }
      for (const auto fn : fns) {
        std::memset(got.data(), 0xA5, got.size());
        fn(got.data(), static_cast<int>(t), x.data(), kBlock, 1.0f, saturate);
        if (std::memcmp(got.data(), want.data(), kBlock * es) != 0) {
          for (size_t i = 0; i < kBlock; ++i) {
            if (std::memcmp(&got[i * es], &want[i * es], es) != 0) {
              if (mismatches++ == 0) first_bad = base | static_cast<uint32_t>(i);
            }
          }
        }
      }
    }
  }
  EXPECT_EQ(mismatches.load(), 0) << dtype_name(t) << " saturate=" << saturate
                                  << ": first mismatching input bits 0x" << std::hex
                                  << first_bad.load() << " over " << std::dec << targets.size()
                                  << " targets";
}

TEST(CastExhaustive, E4M3Saturating) { check_all_inputs(DType::kE4M3, true); }
TEST(CastExhaustive, E4M3NonSaturating) { check_all_inputs(DType::kE4M3, false); }
TEST(CastExhaustive, E5M2Saturating) { check_all_inputs(DType::kE5M2, true); }
TEST(CastExhaustive, E5M2NonSaturating) { check_all_inputs(DType::kE5M2, false); }
TEST(CastExhaustive, F16Saturating) { check_all_inputs(DType::kF16, true); }
TEST(CastExhaustive, F16NonSaturating) { check_all_inputs(DType::kF16, false); }
TEST(CastExhaustive, BF16Saturating) { check_all_inputs(DType::kBF16, true); }
TEST(CastExhaustive, BF16NonSaturating) { check_all_inputs(DType::kBF16, false); }

// The targets under test are the ones this CPU runs; on an AVX-512 machine that is
// avx512, avx2 and scalar.
TEST(CastExhaustive, TargetsCovered) {
  std::string names;
  for (const auto& t : simd::available_targets()) names += t.name + " ";
  std::printf("exhaustive cast tests ran on targets: %s\n", names.c_str());
  EXPECT_GE(simd::available_targets().size(), 2u);
}

}  // namespace
}  // namespace fp8lm
