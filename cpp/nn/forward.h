// Inference as Kaldi's nnet-forward computes it, on a block of frames of one
// utterance (Splice pads at the utterance edges by repeating the first/last
// frame). Components are held by shared pointer: weights are never copied.
#pragma once

#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "linalg/svd.h"
#include "nnet1/component.h"

namespace svd {

// The component kinds forward() can run.
bool can_forward(Kind kind);

class Network {
 public:
  // Throws Error naming the first component that cannot be run (LSTM, ...),
  // or dims that do not chain.
  // The first `transform_count` components are a feature transform (named so
  // in errors; the model's components are numbered from 1 after it).
  explicit Network(std::vector<std::shared_ptr<Component>> components, size_t transform_count = 0);

  int64_t input_dim() const { return input_dim_; }
  int64_t output_dim() const { return output_dim_; }
  size_t size() const { return comps_.size(); }
  const Component& component(size_t i) const { return *comps_[i]; }

  // frames x input_dim (row-major) -> frames x output_dim. `upto` limits the
  // components run (e.g. size() - 1 drops a final softmax).
  MatF forward(const float* in, int64_t frames, size_t upto) const;
  MatF forward(const float* in, int64_t frames) const { return forward(in, frames, comps_.size()); }
  // The same into a caller's matrix (no allocation when its size is unchanged).
  void forward_into(const float* in, int64_t frames, size_t upto, MatF& out) const;

  // y (T x out) = c(x (T x in)); y must not overlap x. Throws for kinds forward cannot run.
  static void run(const Component& c, const float* x, int64_t T, float* y);
  // Weight-matrix entries: half the GEMM work per frame.
  double weights() const { return weights_; }

 private:
  mutable std::mutex ws_mutex_;
  mutable FloatVector ws_a_, ws_b_;

  std::string label(size_t i) const;

  std::vector<std::shared_ptr<Component>> comps_;
  size_t transform_count_ = 0;
  int64_t input_dim_ = 0, output_dim_ = 0, max_dim_ = 0;
  double weights_ = 0;
};

// Elementwise kernels, exposed for the training code (y may equal x).
void apply_sigmoid(const float* x, float* y, int64_t n);
void apply_tanh(const float* x, float* y, int64_t n);
// Row-wise softmax over columns [c0, c0 + width) of a rows x cols matrix.
void softmax_rows(const float* x, float* y, int64_t rows, int64_t cols, int64_t c0, int64_t width);

}  // namespace svd
