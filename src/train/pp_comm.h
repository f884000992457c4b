// The model's pipeline messages (model/pipeline.h) over MPI: the grid's pp group, activations
// and gradients as f32, bf16 or e4m3 (with its per-message scale) on the wire, counted as
// "pp.send_KIND"; the tied wte's gradient summed over the first and last stage.
#pragma once

#include "distributed/grid.h"
#include "model/pipeline.h"
#include "numerics/dtype.h"

namespace fp8lm {

class GroupPpComm final : public PpComm {
 public:
  GroupPpComm(const dist::Grid& g, DType wire);
  PpStage stage() const override { return stage_; }
  void send_forward(const float* x, size_t n) override { send(x, n, stage_.rank + 1, kForward); }
  void recv_forward(float* x, size_t n) override { recv(x, n, stage_.rank - 1, kForward); }
  void send_backward(const float* dx, size_t n) override {
    send(dx, n, stage_.rank - 1, kBackward);
  }
  void recv_backward(float* dx, size_t n) override { recv(dx, n, stage_.rank + 1, kBackward); }
  void tied_sum(float* x, size_t n) override;
  double share_loss(double loss) override;

  // Seconds this rank waited for its neighbours (receives, and the sends still in flight
  // at wait()) since the last call; wait() completes every send.
  double take_waited();
  void wait();

 private:
  static constexpr int kForward = 1, kBackward = 2;
  void send(const float* x, size_t n, int dest, int tag);
  void recv(float* x, size_t n, int src, int tag);
  dist::Group group_, tied_;
  PpStage stage_;
  DType wire_;
  dist::AsyncSends sends_;
  std::vector<uint8_t> staging_;
  double waited_ = 0;
};

}  // namespace fp8lm
