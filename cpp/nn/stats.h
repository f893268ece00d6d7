// How close a student's outputs are to a teacher's, per softmax block: the
// one computation behind `svdistill compare`, distill's CV columns and the
// calibrated budget's measured loss. In double, from exact log-softmaxes.
#pragma once

#include <cstdint>
#include <vector>

namespace svd {

struct FidelityStats {
  int64_t frames = 0;
  int64_t blocks = 0;           // (frame, softmax block) pairs compared
  int64_t agree = 0;            // of those, where the arg-maxes agree
  double kl = 0;                // sum of KL(q || p), nats
  double cross_entropy = 0;     // sum of -sum q log p
  double teacher_entropy = 0;   // sum of -sum q log q
  double max_abs_diff = 0;      // max |q - p|
  void add(const FidelityStats& o);
};

// One block of one frame: q the teacher's distribution (w probabilities, summing
// to 1), z the student's logits. KL(q || softmax(z)) and the rest into `st`
// (blocks and agree counted; frames not). Ties in an arg-max go to the first.
void add_block(const float* q, const float* z, int64_t w, FidelityStats& st);

// T frames of teacher and student logits (T x D, row-major), D split into
// `blocks` (their sum must be D): the teacher's distributions are the exact
// softmax of its logits per block.
FidelityStats compare_logits(const float* zt, const float* zs, int64_t T, int64_t D,
                             const std::vector<int32_t>& blocks);

}  // namespace svd
