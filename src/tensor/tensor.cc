#include "tensor/tensor.h"

#include <limits>

namespace fp8lm {

Shape::Shape(std::initializer_list<int64_t> dims) {
  for (int64_t d : dims) push_back(d);
}

void Shape::push_back(int64_t d) {
  FP8LM_CHECK(rank_ < kMaxRank, "shape rank exceeds ", kMaxRank);
  FP8LM_CHECK(d >= 0, "negative dimension ", d);
  dims_[static_cast<size_t>(rank_++)] = d;
}

int64_t Shape::numel() const {
  int64_t n = 1;
  for (int i = 0; i < rank_; ++i) {
    FP8LM_CHECK(dims_[i] == 0 || n <= std::numeric_limits<int64_t>::max() / dims_[i],
                "shape ", str(), " overflows int64");
    n *= dims_[static_cast<size_t>(i)];
  }
  return n;
}

std::string Shape::str() const {
  std::string s = "[";
  for (int i = 0; i < rank_; ++i) {
    if (i) s += ", ";
    s += std::to_string(dims_[static_cast<size_t>(i)]);
  }
  return s + "]";
}

bool Shape::operator==(const Shape& o) const {
  if (rank_ != o.rank_) return false;
  for (int i = 0; i < rank_; ++i)
    if (dims_[static_cast<size_t>(i)] != o.dims_[static_cast<size_t>(i)]) return false;
  return true;
}

Tensor::Tensor(DType dtype, Shape shape, MemCategory category)
    : buf_(static_cast<size_t>(shape.numel()) * dtype_size(dtype), category),
      dtype_(dtype),
      shape_(shape) {}

}  // namespace fp8lm
