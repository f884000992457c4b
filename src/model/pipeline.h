// Pipeline parallelism inside the model (docs/parallelism.md): a Gpt built for stage
// PpStage of a pipeline holds that stage's layers (param_layout) and exchanges the residual
// stream at the stage boundaries through these calls. model/ knows no MPI: the trainer
// supplies them over its pipeline process group, and chooses the wire format.
#pragma once

#include <cstddef>

#include "model/params.h"

namespace fp8lm {

class PpComm {
 public:
  virtual ~PpComm() = default;
  virtual PpStage stage() const = 0;
  // The residual stream after this stage's last block (n floats: this rank's rows) to the
  // next stage, which receives it as the input of its first block. A send returns at once.
  virtual void send_forward(const float* x, size_t n) = 0;
  virtual void recv_forward(float* x, size_t n) = 0;
  // The gradient of the loss with respect to this stage's input, to the previous stage,
  // which receives it as the gradient of its output.
  virtual void send_backward(const float* dx, size_t n) = 0;
  virtual void recv_backward(float* dx, size_t n) = 0;
  // x ← the sum over the first and last stage (wte's gradient: the embedding's part and the
  // LM head's part of the tied weight).
  virtual void tied_sum(float* x, size_t n) = 0;
  // The loss the last stage computed, on every stage (the others pass 0).
  virtual double share_loss(double loss) = 0;
};

}  // namespace fp8lm
