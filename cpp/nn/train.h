// Minibatch training of an nnet1 network with Kaldi's nnet-train-frmshuff
// semantics (gradients summed over the frames of a minibatch; per-component
// learn-rate coefficients; momentum, L2 and MaxNorm as Kaldi applies them),
// or Adam; and a distillation loss (Hinton, Vinyals, Dean 2015): the
// student's softmax at temperature T against the teachers' soft targets at T,
// scaled by T^2, mixed with cross-entropy against labels.
//
// The student's components are updated in place. Its last component must be a
// Softmax or BlockSoftmax: the loss works on the logits feeding it (as Kaldi's
// Xent does: the softmax's own backward is the identity for cross-entropy).
#pragma once

#include <memory>
#include <utility>
#include <vector>

#include "nn/forward.h"
#include "nnet1/component.h"

namespace svd {

// The kinds a student may contain (besides its final softmax).
bool can_train(Kind kind);

struct OptimizerOptions {
  bool adam = false;
  float learn_rate = 0.008f;
  float momentum = 0.f;  // SGD only
  float l2 = 0.f;        // SGD: Kaldi's l2-penalty; Adam: decoupled weight decay
  float beta1 = 0.9f, beta2 = 0.999f, epsilon = 1e-8f;  // Adam only
};

struct LossOptions {
  float temperature = 1.f;
  float hard_weight = 0.f;      // a: the weight of cross-entropy against labels
  bool average_logits = false;  // several teachers: average their logits, not their soft targets
};

// Sums over the frames of one or more minibatches.
struct BatchStats {
  int64_t frames = 0;
  double objective = 0;  // (1 - a) T^2 KL(q_T || p_T) + a CE(labels)
  double kl_t = 0;       // KL(q_T || p_T): teacher vs student at temperature T
  double kl = 0;         // KL(q_1 || p_1) at temperature 1 (evaluate() only)
  double hard_ce = 0;    // -log p_1(label) over labelled frames
  int64_t agree = 0;     // (frame, softmax block) pairs where the arg-maxes agree
  int64_t blocks = 0;    // (frame, softmax block) pairs compared with a teacher
  int64_t correct = 0;   // labelled frames where the student's arg-max is the label
  int64_t labelled = 0;
  void add(const BatchStats& o);
};

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

  void forward(const float* x, int64_t frames);
  void teacher_logits(const float* x, int64_t frames);
  void soft_targets(float temperature, bool average_logits, MatF& q);
  BatchStats loss(int64_t frames, const int32_t* labels, const LossOptions& lo, bool want_grad, bool want_kl1);
  void backward(const float* x, int64_t frames, Mode mode, const OptimizerOptions& opt, MatF* input_grad);
  void update_slot(Slot& s, int64_t frames, const OptimizerOptions& opt, float max_norm);
  float* slot_target(Slot& s, Mode mode, const OptimizerOptions& opt, float* beta);
  std::string label(size_t i) const;

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
