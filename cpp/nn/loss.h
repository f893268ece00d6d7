// The distillation loss (Hinton, Vinyals, Dean 2015): the student's softmax at
// temperature T against the teachers' soft targets at T, scaled by T^2, mixed
// with cross-entropy against labels; and the statistics reported with it.
// With hints (FitNets), B x the hint term is added (Trainer::hint_term).
// Trainer::loss and Trainer::soft_targets (nn/loss.cc) compute them.
#pragma once

#include <cstdint>

namespace svd {

// The defaults are the only ones (see OptimizerOptions).
struct LossOptions {
  float temperature = 2.f;      // T of the soft targets (1: the teachers' own posteriors)
  float hard_weight = 0.f;      // a: the weight of cross-entropy against labels
  bool average_logits = false;  // several teachers: average their logits, not their soft targets
  float hint_weight = 0.f;      // B: the weight of the hint term (a trainer made with hints)
};

// Sums over the frames of one or more minibatches.
struct BatchStats {
  int64_t frames = 0;
  double objective = 0;  // (1 - a) T^2 KL(q_T || p_T) + a CE(labels) + B hint
  double kl_t = 0;       // KL(q_T || p_T): teacher vs student at temperature T
  double kl = 0;         // KL(q_1 || p_1) at temperature 1 (evaluate() only)
  double hard_ce = 0;    // -log p_1(label) over labelled frames
  int64_t agree = 0;     // (frame, softmax block) pairs where the arg-maxes agree
  int64_t blocks = 0;    // (frame, softmax block) pairs compared with a teacher
  int64_t correct = 0;   // labelled frames where the student's arg-max is the label
  int64_t labelled = 0;
  double hint = 0;       // the hint term (unweighted; 0 without hints)
  void add(const BatchStats& o);
};

}  // namespace svd
