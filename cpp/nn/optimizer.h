// The update rules of training: Kaldi's nnet-train-frmshuff SGD (gradients
// summed over the frames of a minibatch; per-component learn-rate
// coefficients; momentum, L2 and MaxNorm as Kaldi applies them), or Adam.
// Trainer's update_slot and optimizer state (nn/optimizer.cc) apply them.
//
// These defaults are the only ones: the binding (bindings/train.cc) exposes
// the struct, and svdistill.distill() and the command line take theirs from it.
#pragma once

namespace svd {

struct OptimizerOptions {
  bool adam = false;
  float learn_rate = 0.008f;  // SGD: Kaldi's per-frame rate (gradients are summed over the minibatch)
  float momentum = 0.f;       // SGD only
  float l2 = 0.f;             // SGD: Kaldi's l2-penalty; Adam: decoupled weight decay
  float beta1 = 0.9f, beta2 = 0.999f, epsilon = 1e-8f;  // Adam only
  // Adam's default learn rate (Kingma & Ba): it multiplies mean gradients, so
  // SGD's learn_rate above would be far too small for it.
  static constexpr float kAdamLearnRate = 0.001f;
};

}  // namespace svd
