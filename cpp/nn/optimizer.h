// The update rules of training: Kaldi's nnet-train-frmshuff SGD (gradients
// summed over the frames of a minibatch; per-component learn-rate
// coefficients; momentum, L2 and MaxNorm as Kaldi applies them), or Adam.
// Trainer's update_slot and optimizer state (nn/optimizer.cc) apply them.
#pragma once

namespace svd {

struct OptimizerOptions {
  bool adam = false;
  float learn_rate = 0.008f;
  float momentum = 0.f;  // SGD only
  float l2 = 0.f;        // SGD: Kaldi's l2-penalty; Adam: decoupled weight decay
  float beta1 = 0.9f, beta2 = 0.999f, epsilon = 1e-8f;  // Adam only
};

}  // namespace svd
