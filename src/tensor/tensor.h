// Dense tensors: contiguous, row-major, 64-byte aligned owning storage (Tensor) and
// non-owning views (TensorView, ConstTensorView) that kernels and I/O take.
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>
#include <initializer_list>
#include <string>

#include "core/check.h"
#include "numerics/dtype.h"
#include "core/memory.h"

namespace fp8lm {

class Shape {
 public:
  static constexpr int kMaxRank = 8;

  Shape() = default;
  Shape(std::initializer_list<int64_t> dims);
  template <typename It>
  Shape(It begin, It end) {
    for (; begin != end; ++begin) push_back(static_cast<int64_t>(*begin));
  }

  void push_back(int64_t d);
  int rank() const { return rank_; }
  int64_t operator[](int i) const { return dims_[static_cast<size_t>(i)]; }
  const int64_t* begin() const { return dims_.data(); }
  const int64_t* end() const { return dims_.data() + rank_; }
  // Product of the dimensions (1 for rank 0).
  int64_t numel() const;
  std::string str() const;  // "[2, 3]"
  bool operator==(const Shape& o) const;

 private:
  std::array<int64_t, kMaxRank> dims_{};
  int rank_ = 0;
};

struct ConstTensorView {
  const void* data = nullptr;
  DType dtype = DType::kF32;
  Shape shape;

  size_t numel() const { return static_cast<size_t>(shape.numel()); }
  size_t bytes() const { return numel() * dtype_size(dtype); }
  template <typename T>
  const T* as() const {
    return static_cast<const T*>(data);
  }
};

struct TensorView {
  void* data = nullptr;
  DType dtype = DType::kF32;
  Shape shape;

  size_t numel() const { return static_cast<size_t>(shape.numel()); }
  size_t bytes() const { return numel() * dtype_size(dtype); }
  template <typename T>
  T* as() const {
    return static_cast<T*>(data);
  }
  operator ConstTensorView() const { return {data, dtype, shape}; }  // NOLINT: implicit
};

class Tensor {
 public:
  Tensor() = default;
  Tensor(DType dtype, Shape shape, MemCategory category);

  void* data() const { return buf_.data(); }
  template <typename T>
  T* as() const {
    return static_cast<T*>(buf_.data());
  }
  DType dtype() const { return dtype_; }
  const Shape& shape() const { return shape_; }
  size_t numel() const { return static_cast<size_t>(shape_.numel()); }
  size_t bytes() const { return numel() * dtype_size(dtype_); }
  MemCategory category() const { return buf_.category(); }

  TensorView view() const { return {buf_.data(), dtype_, shape_}; }
  operator TensorView() const { return view(); }       // NOLINT: implicit
  operator ConstTensorView() const { return view(); }  // NOLINT: implicit

 private:
  Buffer buf_;
  DType dtype_ = DType::kF32;
  Shape shape_;
};

}  // namespace fp8lm
