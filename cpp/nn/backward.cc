// The backward pass: from the gradient with respect to the logits down the
// student, each component's parameter gradients (its kind's param_grad, in
// nn/kind_ops.cc) into its slots' targets (slot_target) and, when training,
// its update (update_slot) once the gradient with respect to its input, which
// needs the weights before the update, is computed (its kind's input_grad).
// A hint's gradient (nn/loss.cc) joins where the pass reaches the output of
// the student's activation it matches.
#include "nn/kernels.h"
#include "nn/kind_ops.h"
#include "nn/train.h"

namespace svd {

void Trainer::backward(const float* x, int64_t T, Mode mode, const OptimizerOptions& opt, MatF* input_grad) {
  MatF* d = &g_;
  const size_t n = comps_.size();
  dins_.resize(n);
  const size_t stop = input_grad ? 0 : lowest_trainable_;
  const bool update = mode == Mode::Update;
  for (size_t i = n - 1; i-- > stop;) {
    Component& c = *comps_[i];
    const KindOps& ops = kind_ops(c.kind);
    const BackwardArgs args{c, i == 0 ? x : outs_[i - 1].data(), outs_[i].data(), T};
    const bool need_dx = i > stop || input_grad != nullptr;
    if (hint_grad_ && hint_of_[i] >= 0) {
      const MatF& h = hint_grads_[static_cast<size_t>(hint_of_[i])];
      float* dd = d->data();
      const float* hh = h.data();
      for_rows(T, h.cols(), [&](int64_t a, int64_t e) {
        for (int64_t k = a * h.cols(); k < e * h.cols(); ++k) dd[k] += hh[k];
      });
    }
    float* dy = d->data();
    const int s0 = slot_range_[i].first, s1 = slot_range_[i].second;  // this component's slots
    for (int k = s0; k < s1; ++k) {
      Slot& s = slots_[k];
      float beta;
      float* tgt = slot_target(s, mode, opt, &beta);
      ops.param_grad(args, s.param, dy, beta, tgt);
    }
    if (need_dx && ops.input_grad && ops.input_grad(args, dy, &dins_[i])) d = &dins_[i];
    if (update)
      for (int k = s0; k < s1; ++k) update_slot(slots_[k], T, opt, max_norm_of(c, slots_[k].param));
  }
  if (input_grad) *input_grad = *d;
}

}  // namespace svd
