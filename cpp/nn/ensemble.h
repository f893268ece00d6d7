// The combination of a generalist and its specialists (Hinton, Vinyals & Dean
// 2015, section 5.3): per frame, the specialists whose classes include any of
// the generalist's top-n classes are active, and the combined distribution q
// minimises
//   KL(p_g || q) + sum over active m of KL(p_m || q_m),
// where p_m is specialist m's distribution over its classes plus a dustbin
// class and q_m is q seen by it: q on its classes, 1 - (their sum) on the dustbin.
#pragma once

#include <cstdint>
#include <vector>

namespace svd {

struct CombineOptions {
  int top_n = 1;           // generalist classes that select the active specialists
  // Stop when the estimated distance of q to the minimiser (max over entries; from the last
  // step and the contraction rate of the last two) and the last step are both at most this.
  double tolerance = 1e-6;
  int max_iterations = 1000;
};

struct CombineResult {
  std::vector<float> posteriors;     // frames x classes, row-major
  std::vector<int32_t> iterations;   // per frame; 0 when no specialist is active (q = p_g)
  std::vector<int32_t> active;       // per frame: how many specialists were active
  int64_t unconverged = 0;           // frames that hit max_iterations with a step above tolerance
};

// generalist: frames x classes posteriors (rows summing to 1); specialists[m]:
// frames x (classes[m].size() + 1), the last column the dustbin; classes[m]:
// distinct class ids in [0, classes), fewer than all of them. Frames are
// independent and run in parallel. Throws svd::Error on bad shapes or options.
CombineResult combine_specialists(const float* generalist, int64_t frames, int64_t classes,
                                  const std::vector<const float*>& specialists,
                                  const std::vector<std::vector<int32_t>>& specialist_classes,
                                  const CombineOptions& opt);

}  // namespace svd
