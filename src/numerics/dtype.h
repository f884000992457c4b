// Element types fp8lm stores, with one constexpr table of their facts.
#pragma once

#include <cstddef>
#include <cstdint>
#include <optional>
#include <string_view>

namespace fp8lm {

// kE8M0 holds only block scales (OCP MX): 2^(code − 127), code 255 = NaN; not a value type.
enum class DType : uint8_t { kF32, kF16, kBF16, kE4M3, kE5M2, kI32, kI64, kU8, kU16, kE8M0 };
inline constexpr int kNumDTypes = 10;

struct DTypeInfo {
  std::string_view name;         // our name, as on the command line ("e4m3")
  std::string_view safetensors;  // safetensors dtype string ("F8_E4M3")
  size_t bytes;
  bool is_float;
  double max_finite;  // largest finite value of a floating type; 0 for integers
};

inline constexpr DTypeInfo kDTypeInfo[kNumDTypes] = {
    {"f32", "F32", 4, true, 3.4028234663852886e38},
    {"f16", "F16", 2, true, 65504.0},
    {"bf16", "BF16", 2, true, 3.3895313892515355e38},
    {"e4m3", "F8_E4M3", 1, true, 448.0},
    {"e5m2", "F8_E5M2", 1, true, 57344.0},
    {"i32", "I32", 4, false, 0.0},
    {"i64", "I64", 8, false, 0.0},
    {"u8", "U8", 1, false, 0.0},
    {"u16", "U16", 2, false, 0.0},
    {"e8m0", "F8_E8M0", 1, false, 1.7014118346046923e38},
};

constexpr const DTypeInfo& info(DType t) { return kDTypeInfo[static_cast<int>(t)]; }
constexpr size_t dtype_size(DType t) { return info(t).bytes; }
constexpr std::string_view dtype_name(DType t) { return info(t).name; }
constexpr bool is_float(DType t) { return info(t).is_float; }

// Parse our names ("e4m3") or safetensors names ("F8_E4M3"); nullopt when unknown.
std::optional<DType> dtype_from_name(std::string_view name);
std::optional<DType> dtype_from_safetensors(std::string_view name);

}  // namespace fp8lm
