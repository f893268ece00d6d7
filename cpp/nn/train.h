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
//
// The soft targets come from teacher Networks run on each minibatch, or from
// the caller (a Trainer made with external_targets: one teacher whose logits
// each call passes, e.g. an ensemble no Network computes). Hints (FitNets)
// match the student's activations after chosen nonlinearities to one teacher
// Network's (nn/loss.cc).
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
// The components whose outputs hints may match: the activations of the kind
// table (nnet1 Layout::None) before the last component (the final softmax).
std::vector<size_t> nonlinearities(const std::vector<const Component*>& comps);

// A hint: the student's component `student` and the teacher's component
// `teacher` (indices; both nonlinearities, same output dim) are matched.
struct HintPair {
  size_t student = 0, teacher = 0;
};

class Trainer {
 public:
  // Throws Error naming a component the trainer cannot handle, dims that do
  // not chain, or teachers whose output does not match the student's.
  // external_targets: no teacher Networks; each call passes one teacher's
  // logits (frames x output_dim), which act exactly as a teacher Network
  // giving those logits. hints: pairs of nonlinearities to match, which need
  // exactly one teacher Network.
  Trainer(std::vector<std::shared_ptr<Component>> student, std::vector<std::shared_ptr<Network>> teachers,
          bool external_targets = false, std::vector<HintPair> hints = {});

  int64_t input_dim() const { return input_dim_; }
  int64_t output_dim() const { return output_dim_; }
  size_t num_teachers() const { return teachers_.size() + (external_ ? 1 : 0); }
  bool external_targets() const { return external_; }
  const std::vector<HintPair>& hints() const { return hints_; }

  // One minibatch: forward, loss, backward, update. labels: one pdf id per
  // frame (-1: none) or nullptr. teacher_logits: frames x output_dim, given
  // exactly when the trainer was made with external_targets (else Error).
  BatchStats train(const float* x, int64_t frames, const int32_t* labels, const OptimizerOptions& opt,
                   const LossOptions& loss, const float* teacher_logits = nullptr);
  // Loss and statistics without an update (cross-validation).
  BatchStats evaluate(const float* x, int64_t frames, const int32_t* labels, const LossOptions& loss,
                      const float* teacher_logits = nullptr);
  // Gradients of the summed objective w.r.t. every trainable parameter block
  // (in component order) and w.r.t. the input, without an update (tests).
  BatchStats gradients(const float* x, int64_t frames, const int32_t* labels, const LossOptions& loss,
                       std::vector<std::vector<float>>* param_grads, MatF* input_grad,
                       const float* teacher_logits = nullptr);
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
  void teacher_logits(const float* x, int64_t frames, const float* given);
  std::string label(size_t i) const;
  // nn/loss.cc
  void soft_targets(float temperature, bool average_logits, MatF& q);
  BatchStats loss(int64_t frames, const int32_t* labels, const LossOptions& lo, bool want_grad, bool want_kl1);
  void hint_term(int64_t frames, const LossOptions& lo, bool want_grad, BatchStats& st);
  // nn/backward.cc
  void backward(const float* x, int64_t frames, Mode mode, const OptimizerOptions& opt, MatF* input_grad);
  // nn/optimizer.cc
  static float max_norm_of(const Component& c, int param);
  void update_slot(Slot& s, int64_t frames, const OptimizerOptions& opt, float max_norm);
  float* slot_target(Slot& s, Mode mode, const OptimizerOptions& opt, float* beta);

  std::vector<std::shared_ptr<Component>> comps_;  // the student, softmax last
  std::vector<std::shared_ptr<Network>> teachers_;
  bool external_ = false;          // the caller gives the one teacher's logits
  std::vector<HintPair> hints_;
  std::vector<int> hint_of_;       // per student component: its index into hints_, or -1
  std::vector<int32_t> blocks_;  // softmax block widths
  std::vector<Slot> slots_;
  std::vector<std::pair<int, int>> slot_range_;  // per component: its slots [first, second)
  size_t lowest_trainable_ = 0;  // components below it need no input gradient
  int64_t input_dim_ = 0, output_dim_ = 0;
  int64_t adam_step_ = 0;
  double student_weights_ = 0, teacher_weights_ = 0;  // weight entries: GEMM work per frame, halved

  std::vector<MatF> outs_;        // outputs of components 0 .. n-2 (the last is the logits)
  std::vector<MatF> tlogits_;     // per teacher
  std::vector<MatF> touts_;       // with hints: the teacher's outputs of components 0 .. n-3
  std::vector<MatF> hint_grads_;  // per hint: its gradient w.r.t. the student's activation
  bool hint_grad_ = false;        // hint_grads_ hold this minibatch's gradients
  MatF q_, q1_, tmp_;             // soft targets at T and at 1; scratch
  MatF g_;                        // gradient w.r.t. the logits
  std::vector<MatF> dins_;        // per component: gradient w.r.t. its input (affine/linear)
};

}  // namespace svd
