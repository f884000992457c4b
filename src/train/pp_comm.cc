#include "train/pp_comm.h"

#include <chrono>
#include <cstring>

#include "core/check.h"
#include "distributed/collectives.h"
#include "kernels/cast.h"
#include "tensor/scaling.h"

namespace fp8lm {

namespace {

double now_s() {
  return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch())
      .count();
}

const char* send_kind(DType wire) {
  return wire == DType::kF32 ? "send_f32" : wire == DType::kBF16 ? "send_bf16" : "send_e4m3";
}

// E4M3 messages lead with the scale_inv that decodes them.
size_t message_bytes(size_t n, DType wire) {
  return n * dtype_size(wire) + (wire == DType::kE4M3 ? sizeof(float) : 0);
}

}  // namespace

GroupPpComm::GroupPpComm(const dist::Grid& g, DType wire)
    : group_(g.pp_group), tied_(g.tied_group), stage_{g.pp_rank, g.pp}, wire_(wire),
      sends_(g.pp_group) {
  FP8LM_CHECK(wire == DType::kF32 || wire == DType::kBF16 || wire == DType::kE4M3,
              "pipeline wire ", dtype_name(wire), ": f32, bf16 or e4m3");
}

void GroupPpComm::send(const float* x, size_t n, int dest, int tag) {
  auto* buf = static_cast<uint8_t*>(sends_.buffer(message_bytes(n, wire_)));
  if (wire_ == DType::kF32) {
    std::memcpy(buf, x, n * sizeof(float));
  } else if (wire_ == DType::kBF16) {
    kernels::quantize(buf, DType::kBF16, x, n, 1.0f, /*saturate=*/false);
  } else {
    // Just in time: the message's own amax (a non-finite one keeps scale 1 and the cast
    // saturates, so the receiver sees the overflow as ±448, then the loss shows it).
    const float scale =
        compute_scale(kernels::amax(x, n), format_max(DType::kE4M3), 0, true).value_or(1.0f);
    const float scale_inv = 1.0f / scale;
    std::memcpy(buf, &scale_inv, sizeof scale_inv);
    kernels::quantize(buf + sizeof(float), DType::kE4M3, x, n, scale);
  }
  sends_.post(dest, tag, send_kind(wire_));
}

void GroupPpComm::recv(float* x, size_t n, int src, int tag) {
  const size_t bytes = message_bytes(n, wire_);
  if (wire_ != DType::kF32) staging_.resize(bytes);
  void* into = wire_ == DType::kF32 ? static_cast<void*>(x) : staging_.data();
  const double t0 = now_s();  // the wait for the neighbour: the pipeline's idle time
  dist::recv_message(src, tag, into, bytes, "recv", group_);
  waited_ += now_s() - t0;
  if (wire_ != DType::kF32) {
    float scale_inv = 1.0f;
    const uint8_t* payload = staging_.data();
    if (wire_ == DType::kE4M3) {
      std::memcpy(&scale_inv, payload, sizeof scale_inv);
      payload += sizeof(float);
    }
    kernels::dequantize(x, payload, wire_, n, scale_inv);
  }
}

void GroupPpComm::tied_sum(float* x, size_t n) {
  if (stage_.first() || stage_.last()) dist::allreduce_sum(x, n, tied_, "tied_f32");
}

double GroupPpComm::share_loss(double loss) {
  double v = stage_.last() ? loss : 0.0;
  dist::allreduce_scalars(&v, 1, dist::ScalarOp::kSum, group_);
  return v;
}

void GroupPpComm::wait() {
  const double t0 = now_s();
  sends_.wait();
  waited_ += now_s() - t0;
}

double GroupPpComm::take_waited() {
  const double w = waited_;
  waited_ = 0;
  return w;
}

}  // namespace fp8lm
