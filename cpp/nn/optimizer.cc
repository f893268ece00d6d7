// The update rules (SGD with Kaldi's momentum, L2 and MaxNorm; Adam with
// decoupled weight decay) and the optimizer state they keep per slot.
#include "nn/optimizer.h"

#include <cmath>
#include <string>

#include "nn/kernels.h"
#include "nn/train.h"
#include "nnet1/errors.h"

namespace svd {

// Kaldi's MaxNorm caps the rows of an AffineTransform's weight matrix after each update.
float Trainer::max_norm_of(const Component& c, int param) {
  return param == 0 && c.kind == Kind::AffineTransform ? c.coef("<MaxNorm>", 0.f) : 0.f;
}

Trainer::OptimizerState Trainer::optimizer_state() const {
  OptimizerState st;
  for (const Slot& s : slots_) {
    st.first.emplace_back(s.acc.begin(), s.acc.end());
    st.second.emplace_back(s.v.begin(), s.v.end());
  }
  st.step = adam_step_;
  return st;
}

void Trainer::set_optimizer_state(const OptimizerState& st) {
  if (st.first.size() != slots_.size() || st.second.size() != slots_.size())
    throw Error("optimizer state has " + std::to_string(st.first.size()) + " blocks, the student trains " +
                std::to_string(slots_.size()));
  for (size_t k = 0; k < slots_.size(); ++k) {
    const size_t n = slots_[k].comp->params[slots_[k].param].data.size();
    for (const auto* v : {&st.first[k], &st.second[k]})
      if (!v->empty() && v->size() != n)
        throw Error("optimizer state block " + std::to_string(k + 1) + " has " + std::to_string(v->size()) +
                    " values, the parameter " + std::to_string(n));
  }
  for (size_t k = 0; k < slots_.size(); ++k) {
    slots_[k].acc.assign(st.first[k].begin(), st.first[k].end());
    slots_[k].v.assign(st.second[k].begin(), st.second[k].end());
  }
  adam_step_ = st.step;
}

void Trainer::reset_optimizer() {
  for (Slot& s : slots_) {
    s.acc.clear();
    s.v.clear();
  }
  adam_step_ = 0;
}

float* Trainer::slot_target(Slot& s, Mode mode, const OptimizerOptions& opt, float* beta) {
  const size_t n = s.comp->params[s.param].data.size();
  if (mode == Mode::Update && !opt.adam) {
    const bool fresh = s.acc.size() != n;
    if (fresh) s.acc.assign(n, 0.f);
    *beta = (s.momentum && !fresh) ? opt.momentum : 0.f;
    return s.acc.data();
  }
  if (s.grad.size() != n) s.grad.resize(n);
  *beta = 0.f;
  return s.grad.data();
}

void Trainer::update_slot(Slot& s, int64_t frames, const OptimizerOptions& opt, float max_norm) {
  FloatBlock& blk = s.comp->params[s.param];
  float* w = blk.data.data();
  const int64_t rows = blk.is_matrix() ? blk.rows : 1;
  const int64_t cols = blk.is_matrix() ? blk.cols : blk.size();
  const float lr = opt.learn_rate * s.coef;
  if (!opt.adam) {
    const float keep = (s.decay && opt.l2 != 0.f) ? 1.f - lr * opt.l2 * static_cast<float>(frames) : 1.f;
    const float* c = s.acc.data();
    for_rows(rows, cols, [&](int64_t a, int64_t e) {
      for (int64_t k = a * cols; k < e * cols; ++k) w[k] = w[k] * keep - lr * c[k];
    });
  } else {
    const size_t n = blk.data.size();
    if (s.acc.size() != n) s.acc.assign(n, 0.f);
    if (s.v.size() != n) s.v.assign(n, 0.f);
    const float b1 = opt.beta1, b2 = opt.beta2;
    const double t = static_cast<double>(adam_step_);
    const float c1 = static_cast<float>(1.0 / (1.0 - std::pow(static_cast<double>(b1), t)));
    const float c2 = static_cast<float>(1.0 / (1.0 - std::pow(static_cast<double>(b2), t)));
    const float inv_frames = 1.f / static_cast<float>(frames);
    const float keep = (s.decay && opt.l2 != 0.f) ? 1.f - lr * opt.l2 : 1.f;
    const float eps = opt.epsilon;
    float* m1 = s.acc.data();
    float* m2 = s.v.data();
    const float* g = s.grad.data();
    for_rows(rows, cols, [&](int64_t a, int64_t e) {
      for (int64_t k = a * cols; k < e * cols; ++k) {
        const float gk = g[k] * inv_frames;
        m1[k] = b1 * m1[k] + (1.f - b1) * gk;
        m2[k] = b2 * m2[k] + (1.f - b2) * gk * gk;
        w[k] = w[k] * keep - lr * (m1[k] * c1) / (std::sqrt(m2[k] * c2) + eps);
      }
    });
  }
  if (max_norm > 0.f && blk.is_matrix()) {
    // Kaldi's MaxNorm: shrink each output neuron's weight row onto the sphere of radius max_norm.
    for_rows(rows, cols, [&](int64_t a, int64_t e) {
      for (int64_t r = a; r < e; ++r) {
        float* row = w + r * cols;
        double ss = 0;
        for (int64_t j = 0; j < cols; ++j) ss += static_cast<double>(row[j]) * row[j];
        const double norm = std::sqrt(ss);
        if (norm > max_norm) {
          const float scale = static_cast<float>(max_norm / norm);
          for (int64_t j = 0; j < cols; ++j) row[j] *= scale;
        }
      }
    });
  }
}

}  // namespace svd
