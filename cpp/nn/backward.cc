// The backward passes: from the gradient with respect to the logits down the
// student, each component's parameter gradients into its slots' targets
// (slot_target) and, when training, its update (update_slot) once the
// gradient with respect to its input, which needs the weights before the
// update, is computed.
#include <algorithm>

#include "linalg/blas.h"
#include "nn/kernels.h"
#include "nn/train.h"

namespace svd {
namespace {

// out[j] = beta * out[j] + sum_r f(r, j) for a T x n row-major source.
template <class F>
void column_sums(int64_t rows, int64_t n, float beta, float* out, F&& f) {
  for_rows(n, rows, [&](int64_t a, int64_t e) {
    for (int64_t j = a; j < e; ++j) out[j] = beta == 0.f ? 0.f : beta * out[j];
    for (int64_t r = 0; r < rows; ++r)
      for (int64_t j = a; j < e; ++j) out[j] += f(r, j);
  });
}

}  // namespace

void Trainer::backward(const float* x, int64_t T, Mode mode, const OptimizerOptions& opt, MatF* input_grad) {
  MatF* d = &g_;
  const size_t n = comps_.size();
  dins_.resize(n);
  const size_t stop = input_grad ? 0 : lowest_trainable_;
  const bool update = mode == Mode::Update;
  for (size_t i = n - 1; i-- > stop;) {
    Component& c = *comps_[i];
    const float* X = i == 0 ? x : outs_[i - 1].data();
    const float* Y = outs_[i].data();
    const int64_t in = c.input_dim, out = c.output_dim;
    const bool need_dx = i > stop || input_grad != nullptr;
    float* dy = d->data();
    const int s0 = slot_range_[i].first, s1 = slot_range_[i].second;  // this component's slots
    switch (c.kind) {
      case Kind::AffineTransform:
      case Kind::LinearTransform: {
        const float* W = c.params[0].data.data();
        MatF* dx = &dins_[i];
        if (need_dx) {
          dx->resize(T, in);
          blas::sgemm(false, false, T, in, out, 1.f, dy, out, W, in, 0.f, dx->data(), in);
        }
        for (int k = s0; k < s1; ++k) {
          Slot& s = slots_[k];
          float beta;
          float* tgt = slot_target(s, mode, opt, &beta);
          if (s.param == 0)
            blas::sgemm(true, false, out, in, T, 1.f, dy, out, X, in, beta, tgt, in);
          else
            column_sums(T, out, beta, tgt, [&](int64_t r, int64_t j) { return dy[r * out + j]; });
        }
        if (update)
          for (int k = s0; k < s1; ++k)
            update_slot(slots_[k], T, opt, max_norm_of(c, slots_[k].param));
        if (need_dx) d = dx;
        break;
      }
      case Kind::ParametricRelu: {
        const float* al = c.params[0].data.data();
        const float* be = c.params[1].data.data();
        for (int k = s0; k < s1; ++k) {
          Slot& s = slots_[k];
          float beta;
          float* tgt = slot_target(s, mode, opt, &beta);
          if (s.param == 0)
            column_sums(T, out, beta, tgt, [&](int64_t r, int64_t j) { return std::max(X[r * out + j], 0.f) * dy[r * out + j]; });
          else
            column_sums(T, out, beta, tgt, [&](int64_t r, int64_t j) { return std::min(X[r * out + j], 0.f) * dy[r * out + j]; });
        }
        if (need_dx)
          for_rows(T, out, [&](int64_t a, int64_t e) {
            for (int64_t r = a; r < e; ++r)
              for (int64_t j = 0; j < out; ++j) dy[r * out + j] *= X[r * out + j] > 0.f ? al[j] : be[j];
          });
        if (update)
          for (int k = s0; k < s1; ++k)
            update_slot(slots_[k], T, opt, 0.f);
        break;
      }
      case Kind::AddShift:
      case Kind::Rescale: {
        const bool add = c.kind == Kind::AddShift;
        const float* v = c.params[0].data.data();
        if (s0 < s1) {
          Slot& s = slots_[s0];
          float beta;
          float* tgt = slot_target(s, mode, opt, &beta);
          if (add)
            column_sums(T, out, beta, tgt, [&](int64_t r, int64_t j) { return dy[r * out + j]; });
          else
            column_sums(T, out, beta, tgt, [&](int64_t r, int64_t j) { return X[r * out + j] * dy[r * out + j]; });
        }
        if (need_dx && !add)
          for_rows(T, out, [&](int64_t a, int64_t e) {
            for (int64_t r = a; r < e; ++r)
              for (int64_t j = 0; j < out; ++j) dy[r * out + j] *= v[j];
          });
        if (update && s0 < s1) update_slot(slots_[s0], T, opt, 0.f);
        break;
      }
      case Kind::Sigmoid:
      case Kind::Tanh:
      case Kind::Relu:
        if (need_dx) {
          auto span = c.kind == Kind::Sigmoid ? sigmoid_grad_span : c.kind == Kind::Tanh ? tanh_grad_span : relu_grad_span;
          for_rows(T, out, [&](int64_t a, int64_t e) { span(Y + a * out, dy + a * out, (e - a) * out); });
        }
        break;
      default:  // Dropout, <linear>: identity
        break;
    }
  }
  if (input_grad) *input_grad = *d;
}

}  // namespace svd
