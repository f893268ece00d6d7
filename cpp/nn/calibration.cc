#include "nn/calibration.h"

#include <string>

#include "nnet1/errors.h"

namespace svd {

Calibration::Calibration(std::vector<std::shared_ptr<Component>> components, size_t transform_count,
                         std::vector<int64_t> positions)
    : positions_(std::move(positions)) {
  if (positions_.empty()) throw Error("calibration needs at least one component to collect inputs for");
  for (size_t i = 0; i < positions_.size(); ++i) {
    const int64_t p = positions_[i];
    if (p < 0 || p >= static_cast<int64_t>(components.size()) || (i > 0 && p <= positions_[i - 1]))
      throw Error("calibration positions must be ascending indices of components, got " + std::to_string(p));
  }
  const size_t last = static_cast<size_t>(positions_.back());
  // The components feeding the last position; Network checks that they run and chain.
  comps_.assign(components.begin(), components.begin() + static_cast<std::ptrdiff_t>(last));
  if (!comps_.empty()) {
    net_ = std::make_unique<Network>(comps_, std::min(transform_count, comps_.size()));
    input_dim_ = net_->input_dim();
    if (net_->output_dim() != components[last]->input_dim)
      throw Error("component outputs " + std::to_string(net_->output_dim()) + " dims but the next expects " +
                  std::to_string(components[last]->input_dim));
  } else {
    input_dim_ = components[last]->input_dim;
  }
  for (int64_t p : positions_) stats_.emplace_back(components[static_cast<size_t>(p)]->input_dim);
}

void Calibration::add(const float* feats, int64_t frames, int64_t use) {
  if (use < 0 || use > frames) throw Error("calibration: frames to use must lie in [0, frames]");
  if (use == 0) return;
  const float* cur = feats;
  int64_t dim = input_dim_;
  size_t next = 0;  // the next position to collect
  for (size_t i = 0; next < positions_.size(); ++i) {
    if (static_cast<int64_t>(i) == positions_[next]) {
      stats_[next].add(cur, use, dim);
      ++next;
      if (next == positions_.size()) break;
    }
    const Component& c = *comps_[i];
    MatF& y = (cur == a_.data()) ? b_ : a_;
    y.resize(frames, c.output_dim);
    Network::run(c, cur, frames, y.data());
    cur = y.data();
    dim = c.output_dim;
  }
  frames_ += use;
}

}  // namespace svd
