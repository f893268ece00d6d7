// One streaming forward pass that collects the input statistics of chosen
// components (data-aware compression). Runs the components up to the last
// chosen one, utterance by utterance, as nnet-forward does (Splice sees the
// whole utterance); only the first frames up to a limit are counted.
#pragma once

#include <memory>
#include <vector>

#include "linalg/whiten.h"
#include "nn/forward.h"

namespace svd {

class Calibration {
 public:
  // `components`: a feature transform's (the first `transform_count`) then
  // the model's; `positions`: indices into `components` (ascending, unique)
  // whose inputs are collected. Throws Error if a component up to the last
  // position cannot be run or the dims do not chain.
  Calibration(std::vector<std::shared_ptr<Component>> components, size_t transform_count,
              std::vector<int64_t> positions);

  int64_t input_dim() const { return input_dim_; }
  // Runs one utterance (frames x input_dim, row-major) and counts its first
  // `use` frames (0 <= use <= frames) at every position.
  void add(const float* feats, int64_t frames, int64_t use);
  int64_t frames() const { return frames_; }
  size_t size() const { return stats_.size(); }
  const MomentAccumulator& stats(size_t i) const { return stats_.at(i); }

 private:
  std::vector<std::shared_ptr<Component>> comps_;  // up to the last position
  std::unique_ptr<Network> net_;                   // validates kinds and dims
  std::vector<int64_t> positions_;
  std::vector<MomentAccumulator> stats_;
  int64_t input_dim_ = 0;
  int64_t frames_ = 0;
  MatF a_, b_;
};

}  // namespace svd
