// Minibatch training of an nnet1 network with Kaldi's nnet-train-frmshuff
// semantics or Adam (nn/optimizer.h), against a distillation loss
// (nn/loss.h). One minibatch is forward, loss, backward, update; the Trainer's
// members are defined by concept: construction and the minibatch steps in
// nn/train.cc, the loss in nn/loss.cc, the backward passes in nn/backward.cc,
// the update rules and their state in nn/optimizer.cc.
//
// The student's components are updated in place. Its last component must be a
// Softmax or BlockSoftmax: the loss works on the logits feeding it (as Kaldi's
// Xent does: the softmax's own backward is the identity for cross-entropy).
#pragma once

#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "nn/forward.h"
#include "nn/loss.h"
#include "nn/optimizer.h"
#include "nnet1/component.h"

namespace svd {

// The kinds a student may contain (besides its final softmax).
bool can_train(Kind kind);

class Trainer {
 public:
  // Throws Error naming a component the trainer cannot handle, dims that do
  // not chain, or teachers whose output does not match the student's.
  Trainer(std::vector<std::shared_ptr<Component>> student, std::vector<std::shared_ptr<Network>> teachers);

  int64_t input_dim() const { return input_dim_; }
  int64_t output_dim() const { return output_dim_; }
  size_t num_teachers() const { return teachers_.size(); }

  // One minibatch: forward, loss, backward, update. labels: one pdf id per
  // frame (-1: none) or nullptr.
  BatchStats train(const float* x, int64_t frames, const int32_t* labels, const OptimizerOptions& opt,
                   const LossOptions& loss);
  // Loss and statistics without an update (cross-validation).
  BatchStats evaluate(const float* x, int64_t frames, const int32_t* labels, const LossOptions& loss);
  // Gradients of the summed objective w.r.t. every trainable parameter block
  // (in component order) and w.r.t. the input, without an update (tests).
  BatchStats gradients(const float* x, int64_t frames, const int32_t* labels, const LossOptions& loss,
                       std::vector<std::vector<float>>* param_grads, MatF* input_grad);
  // Forgets momentum / Adam moments.
  void reset_optimizer();

  // What the update rules train, one entry per trainable float block, in the
  // order of gradients(): the rules of this class, for other engines to follow.
  struct SlotInfo {
    size_t component;  // index into the student
    int param;         // index into its params
    float coef;        // learn-rate coefficient (> 0)
    bool momentum;     // SGD momentum applies
    bool decay;        // L2 / weight decay applies
    float max_norm;    // Kaldi's MaxNorm on the rows after each update (0: none)
  };
  std::vector<SlotInfo> slot_info() const;

  // The optimizer's state, for checkpoints: per slot (slot_info() order) the
  // momentum or Adam first moment and Adam's second moment, each empty until
  // the slot's first update, and Adam's step count.
  struct OptimizerState {
    std::vector<std::vector<float>> first, second;
    int64_t step = 0;
  };
  OptimizerState optimizer_state() const;
  // Throws Error when the state does not fit this trainer's slots.
  void set_optimizer_state(const OptimizerState& state);

 private:
  struct Slot {             // one trainable float block
    Component* comp;
    int param;              // index into comp->params
    float coef;             // learn-rate coefficient
    bool momentum;          // Kaldi applies momentum to it
    bool decay;             // L2 applies to it (weights, not biases)
    FloatVector acc, v;     // momentum / Adam first moment; Adam second moment
    FloatVector grad;       // scratch gradient (Adam, gradients())
  };
  enum class Mode { Update, Gradients };

  // nn/train.cc
  void forward(const float* x, int64_t frames);
  void teacher_logits(const float* x, int64_t frames);
  std::string label(size_t i) const;
  // nn/loss.cc
  void soft_targets(float temperature, bool average_logits, MatF& q);
  BatchStats loss(int64_t frames, const int32_t* labels, const LossOptions& lo, bool want_grad, bool want_kl1);
  // nn/backward.cc
  void backward(const float* x, int64_t frames, Mode mode, const OptimizerOptions& opt, MatF* input_grad);
  // nn/optimizer.cc
  static float max_norm_of(const Component& c, int param);
  void update_slot(Slot& s, int64_t frames, const OptimizerOptions& opt, float max_norm);
  float* slot_target(Slot& s, Mode mode, const OptimizerOptions& opt, float* beta);

  std::vector<std::shared_ptr<Component>> comps_;  // the student, softmax last
  std::vector<std::shared_ptr<Network>> teachers_;
  std::vector<int32_t> blocks_;  // softmax block widths
  std::vector<Slot> slots_;
  std::vector<std::pair<int, int>> slot_range_;  // per component: its slots [first, second)
  size_t lowest_trainable_ = 0;  // components below it need no input gradient
  int64_t input_dim_ = 0, output_dim_ = 0;
  int64_t adam_step_ = 0;
  double student_weights_ = 0, teacher_weights_ = 0;  // weight entries: GEMM work per frame, halved

  std::vector<MatF> outs_;        // outputs of components 0 .. n-2 (the last is the logits)
  std::vector<MatF> tlogits_;     // per teacher
  MatF q_, q1_, tmp_;             // soft targets at T and at 1; scratch
  MatF g_;                        // gradient w.r.t. the logits
  std::vector<MatF> dins_;        // per component: gradient w.r.t. its input (affine/linear)
};

}  // namespace svd
