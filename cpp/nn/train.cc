#include "nn/train.h"

#include <algorithm>
#include <cstring>
#include <string>

#include "linalg/blas.h"
#include "nn/kind_ops.h"
#include "nnet1/errors.h"

namespace svd {
namespace {

bool is_softmax(Kind k) { return kind_ops(k).posteriors; }

std::string softmax_kinds() {
  return kind_list([](const KindOps& k) { return k.posteriors; }, true, " or ");
}

std::vector<int32_t> softmax_blocks(const Component& c) {
  if (c.kind == Kind::BlockSoftmax) return c.ints;
  return {c.output_dim};
}

}  // namespace

bool can_train(Kind kind) { return kind_ops(kind).train; }

std::vector<size_t> nonlinearities(const std::vector<const Component*>& comps) {
  std::vector<size_t> out;
  for (size_t i = 0; i + 1 < comps.size(); ++i)
    if (kind_info(comps[i]->kind).layout == Layout::None) out.push_back(i);
  return out;
}

std::string Trainer::label(size_t i) const {
  return "student component " + std::to_string(i + 1) + " " + comps_[i]->marker;
}

Trainer::Trainer(std::vector<std::shared_ptr<Component>> student,
                 std::vector<std::shared_ptr<Network>> teachers, bool external_targets, std::vector<HintPair> hints)
    : comps_(std::move(student)), teachers_(std::move(teachers)), external_(external_targets),
      hints_(std::move(hints)) {
  if (external_ && !teachers_.empty())
    throw Error("the soft targets come either from teacher networks or from the caller, not both");
  const size_t n = comps_.size();
  if (n < 2 || !is_softmax(comps_.back()->kind))
    throw Error("the student must end in a " + softmax_kinds() + " with something to train before it" +
                std::string(n ? ", its last component is " + comps_.back()->marker : ", it is empty"));
  for (size_t i = 0; i < n; ++i) {
    const Component& c = *comps_[i];
    if (i + 1 < n && !can_train(c.kind))
      throw Error(label(i) + ": svdistill cannot train through " + kind_info(c.kind).name +
                  kind_ops(c.kind).no_train_why + "; it trains " +
                  kind_list([](const KindOps& k) { return k.train; }));
    if (i > 0 && comps_[i - 1]->output_dim != c.input_dim)
      throw Error(label(i) + ": input dim " + std::to_string(c.input_dim) +
                  " does not match the previous output dim " + std::to_string(comps_[i - 1]->output_dim));
    std::string problem = c.check();
    if (!problem.empty()) throw Error(label(i) + ": " + problem);
  }
  input_dim_ = comps_.front()->input_dim;
  output_dim_ = comps_.back()->output_dim;
  blocks_ = softmax_blocks(*comps_.back());

  for (size_t t = 0; t < teachers_.size(); ++t) {
    const Network& net = *teachers_[t];
    const std::string who = "teacher " + std::to_string(t + 1);
    if (net.size() < 2 || !is_softmax(net.component(net.size() - 1).kind))
      throw Error(who + " must end in a " + softmax_kinds() + ": its logits give the soft targets");
    if (net.input_dim() != input_dim_ || net.output_dim() != output_dim_)
      throw Error(who + " maps " + std::to_string(net.input_dim()) + " -> " + std::to_string(net.output_dim()) +
                  " dims, the student " + std::to_string(input_dim_) + " -> " + std::to_string(output_dim_));
    if (softmax_blocks(net.component(net.size() - 1)) != blocks_)
      throw Error(who + ": its softmax blocks differ from the student's");
    for (size_t i = 0; i < net.size(); ++i)
      if (net.component(i).kind == Kind::Splice)
        throw Error(who + " component " + std::to_string(i + 1) +
                    " <Splice>: frames are shuffled, so splicing belongs in the feature transform");
  }

  if (!hints_.empty()) {
    if (teachers_.size() != 1)
      throw Error("hints match the student's activations to one teacher network's, and " +
                  (external_ ? std::string("the soft targets come from the caller")
                             : std::to_string(teachers_.size()) + " teacher networks were given"));
    const Network& t = *teachers_[0];
    std::vector<const Component*> sc, tc;
    for (const auto& c : comps_) sc.push_back(c.get());
    for (size_t i = 0; i < t.size(); ++i) tc.push_back(&t.component(i));
    const std::vector<size_t> sn = nonlinearities(sc), tn = nonlinearities(tc);
    hint_of_.assign(n, -1);
    for (size_t k = 0; k < hints_.size(); ++k) {
      const HintPair& h = hints_[k];
      const std::string which = "hint " + std::to_string(k + 1);
      if (std::find(sn.begin(), sn.end(), h.student) == sn.end())
        throw Error(which + ": student component " + std::to_string(h.student + 1) + " is not a nonlinearity");
      if (std::find(tn.begin(), tn.end(), h.teacher) == tn.end())
        throw Error(which + ": teacher component " + std::to_string(h.teacher + 1) + " is not a nonlinearity");
      if (comps_[h.student]->output_dim != t.component(h.teacher).output_dim)
        throw Error(which + ": the student's activation has " + std::to_string(comps_[h.student]->output_dim) +
                    " dims, the teacher's " + std::to_string(t.component(h.teacher).output_dim));
      if (hint_of_[h.student] >= 0) throw Error(which + ": student component " +
                                                std::to_string(h.student + 1) + " is matched twice");
      hint_of_[h.student] = static_cast<int>(k);
    }
  }

  for (const auto& c : comps_)
    if (c->kind == Kind::AffineTransform || c->kind == Kind::LinearTransform)
      student_weights_ += static_cast<double>(c->input_dim) * c->output_dim;
  for (const auto& t : teachers_) teacher_weights_ += t->weights();

  slot_range_.assign(n, {0, 0});
  lowest_trainable_ = n - 1;
  for (size_t i = 0; i + 1 < n; ++i) {
    Component& c = *comps_[i];
    for (const TrainSlot& t : kind_ops(c.kind).slots) {
      float fallback = 0.f;  // the kind's default for the coefficient
      for (const auto& cf : kind_info(c.kind).coefs)
        if (std::strcmp(cf.first, t.coef) == 0) fallback = cf.second;
      const float coef = c.coef(t.coef, fallback);
      if (coef == 0.f) continue;  // frozen
      if (slot_range_[i].first == slot_range_[i].second) slot_range_[i].first = static_cast<int>(slots_.size());
      Slot s{&c, t.param, coef, t.momentum, t.decay, {}, {}, {}};
      slots_.push_back(std::move(s));
      slot_range_[i].second = static_cast<int>(slots_.size());
      lowest_trainable_ = std::min(lowest_trainable_, i);
    }
  }
  outs_.resize(n - 1);
}

std::vector<Trainer::SlotInfo> Trainer::slot_info() const {
  std::vector<SlotInfo> out;
  for (size_t i = 0; i < comps_.size(); ++i)
    for (int k = slot_range_[i].first; k < slot_range_[i].second; ++k) {
      const Slot& s = slots_[static_cast<size_t>(k)];
      out.push_back({i, s.param, s.coef, s.momentum, s.decay, max_norm_of(*comps_[i], s.param)});
    }
  return out;
}

void Trainer::forward(const float* x, int64_t T) {
  for (size_t i = 0; i + 1 < comps_.size(); ++i) {
    outs_[i].resize(T, comps_[i]->output_dim);
    Network::run(*comps_[i], i == 0 ? x : outs_[i - 1].data(), T, outs_[i].data());
  }
}

void Trainer::teacher_logits(const float* x, int64_t T, const float* given) {
  if (external_ != (given != nullptr))
    throw Error(external_ ? "this trainer takes the teacher's logits from the caller, and none were given"
                          : "this trainer's teachers are networks: teacher logits cannot be given too");
  if (external_) {
    tlogits_.resize(1);
    tlogits_[0].resize(T, output_dim_);
    std::memcpy(tlogits_[0].data(), given, static_cast<size_t>(T * output_dim_) * sizeof(float));
    return;
  }
  tlogits_.resize(teachers_.size());
  if (hints_.empty()) {
    for (size_t t = 0; t < teachers_.size(); ++t)
      teachers_[t]->forward_into(x, T, teachers_[t]->size() - 1, tlogits_[t]);
    return;
  }
  // Hints: the one teacher run component by component, as forward_into runs it
  // (same kernels, same thread count), keeping the outputs the hints read.
  const Network& net = *teachers_[0];
  const size_t m = net.size() - 1;  // components up to the logits
  blas::ThreadsForWork threads(2.0 * static_cast<double>(T) * net.weights());
  touts_.resize(m);
  for (size_t i = 0; i < m; ++i) {
    MatF& y = i + 1 == m ? tlogits_[0] : touts_[i];
    y.resize(T, net.component(i).output_dim);
    Network::run(net.component(i), i == 0 ? x : touts_[i - 1].data(), T, y.data());
  }
}

BatchStats Trainer::train(const float* x, int64_t T, const int32_t* labels, const OptimizerOptions& opt,
                          const LossOptions& lo, const float* given) {
  if (T <= 0) return {};
  blas::ThreadsForWork threads(2.0 * static_cast<double>(T) * (3 * student_weights_ + teacher_weights_));
  forward(x, T);
  if (num_teachers() > 0) teacher_logits(x, T, given);
  BatchStats st = loss(T, labels, lo, !slots_.empty(), false);
  if (!slots_.empty()) {
    if (opt.adam) ++adam_step_;
    backward(x, T, Mode::Update, opt, nullptr);
  }
  return st;
}

BatchStats Trainer::evaluate(const float* x, int64_t T, const int32_t* labels, const LossOptions& lo,
                             const float* given) {
  if (T <= 0) return {};
  blas::ThreadsForWork threads(2.0 * static_cast<double>(T) * (student_weights_ + teacher_weights_));
  forward(x, T);
  if (num_teachers() > 0) teacher_logits(x, T, given);
  return loss(T, labels, lo, false, true);
}

BatchStats Trainer::gradients(const float* x, int64_t T, const int32_t* labels, const LossOptions& lo,
                              std::vector<std::vector<float>>* param_grads, MatF* input_grad,
                              const float* given) {
  forward(x, T);
  if (num_teachers() > 0) teacher_logits(x, T, given);
  BatchStats st = loss(T, labels, lo, true, false);
  backward(x, T, Mode::Gradients, OptimizerOptions{}, input_grad);
  param_grads->clear();
  for (Slot& s : slots_) param_grads->emplace_back(s.grad.begin(), s.grad.end());
  return st;
}

}  // namespace svd
