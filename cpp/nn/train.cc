#include "nn/train.h"

#include <algorithm>
#include <cmath>
#include <cstring>

#include "linalg/blas.h"
#include "nn/kernels.h"
#include "nnet1/errors.h"

namespace svd {
namespace {

bool is_softmax(Kind k) { return k == Kind::Softmax || k == Kind::BlockSoftmax; }

std::vector<int32_t> softmax_blocks(const Component& c) {
  if (c.kind == Kind::BlockSoftmax) return c.ints;
  return {c.output_dim};
}

// out[j] = beta * out[j] + sum_r f(r, j) for a T x n row-major source.
template <class F>
void column_sums(int64_t rows, int64_t n, float beta, float* out, F&& f) {
  for_rows(n, rows, [&](int64_t a, int64_t e) {
    for (int64_t j = a; j < e; ++j) out[j] = beta == 0.f ? 0.f : beta * out[j];
    for (int64_t r = 0; r < rows; ++r)
      for (int64_t j = a; j < e; ++j) out[j] += f(r, j);
  });
}

// Kaldi's MaxNorm caps the rows of an AffineTransform's weight matrix after each update.
float max_norm_of(const Component& c, int param) {
  return param == 0 && c.kind == Kind::AffineTransform ? c.coef("<MaxNorm>", 0.f) : 0.f;
}

}  // namespace

bool can_train(Kind kind) {
  switch (kind) {
    case Kind::AffineTransform:
    case Kind::LinearTransform:
    case Kind::Sigmoid:
    case Kind::Tanh:
    case Kind::Relu:
    case Kind::ParametricRelu:
    case Kind::Dropout:
    case Kind::Linear:
    case Kind::AddShift:
    case Kind::Rescale:
      return true;
    default:
      return false;
  }
}

void BatchStats::add(const BatchStats& o) {
  frames += o.frames;
  objective += o.objective;
  kl_t += o.kl_t;
  kl += o.kl;
  hard_ce += o.hard_ce;
  agree += o.agree;
  blocks += o.blocks;
  correct += o.correct;
  labelled += o.labelled;
}

std::string Trainer::label(size_t i) const {
  return "student component " + std::to_string(i + 1) + " " + comps_[i]->marker;
}

Trainer::Trainer(std::vector<std::shared_ptr<Component>> student,
                 std::vector<std::shared_ptr<Network>> teachers)
    : comps_(std::move(student)), teachers_(std::move(teachers)) {
  const size_t n = comps_.size();
  if (n < 2 || !is_softmax(comps_.back()->kind))
    throw Error("the student must end in a <Softmax> or <BlockSoftmax> with something to train before it" +
                std::string(n ? ", its last component is " + comps_.back()->marker : ", it is empty"));
  for (size_t i = 0; i < n; ++i) {
    const Component& c = *comps_[i];
    if (i + 1 < n && !can_train(c.kind)) {
      std::string why = (c.kind == Kind::Splice || c.kind == Kind::Copy || c.kind == Kind::LengthNormComponent)
                            ? " (frames are shuffled: splicing and normalisation belong in the feature transform)"
                            : "";
      throw Error(label(i) + ": svdistill cannot train through " + kind_info(c.kind).name + why +
                  "; it trains AffineTransform, LinearTransform, Sigmoid, Tanh, ParametricRelu, PDNN "
                  "<relu>/<linear>, Dropout (as the identity), AddShift and Rescale");
    }
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
      throw Error(who + " must end in a <Softmax> or <BlockSoftmax>: its logits give the soft targets");
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

  for (const auto& c : comps_)
    if (c->kind == Kind::AffineTransform || c->kind == Kind::LinearTransform)
      student_weights_ += static_cast<double>(c->input_dim) * c->output_dim;
  for (const auto& t : teachers_) teacher_weights_ += t->weights();

  slot_range_.assign(n, {0, 0});
  lowest_trainable_ = n - 1;
  auto add = [&](size_t i, int param, const char* coef_token, float fallback, bool momentum, bool decay) {
    Component& c = *comps_[i];
    const float coef = c.coef(coef_token, fallback);
    if (coef == 0.f) return;  // frozen
    if (slot_range_[i].first == slot_range_[i].second) slot_range_[i].first = static_cast<int>(slots_.size());
    Slot s{&c, param, coef, momentum, decay, {}, {}, {}};
    slots_.push_back(std::move(s));
    slot_range_[i].second = static_cast<int>(slots_.size());
    lowest_trainable_ = std::min(lowest_trainable_, i);
  };
  for (size_t i = 0; i + 1 < n; ++i) {
    switch (comps_[i]->kind) {
      case Kind::AffineTransform:
        add(i, 0, "<LearnRateCoef>", 1.f, true, true);
        add(i, 1, "<BiasLearnRateCoef>", 1.f, true, false);
        break;
      case Kind::LinearTransform:
        add(i, 0, "<LearnRateCoef>", 1.f, true, true);
        break;
      case Kind::ParametricRelu:
        add(i, 0, "<AlphaLearnRateCoef>", 0.f, true, false);
        add(i, 1, "<BetaLearnRateCoef>", 0.f, true, false);
        break;
      case Kind::AddShift:
      case Kind::Rescale:  // Kaldi updates these without momentum
        add(i, 0, "<LearnRateCoef>", 1.f, false, false);
        break;
      default:
        break;
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

void Trainer::forward(const float* x, int64_t T) {
  for (size_t i = 0; i + 1 < comps_.size(); ++i) {
    outs_[i].resize(T, comps_[i]->output_dim);
    Network::run(*comps_[i], i == 0 ? x : outs_[i - 1].data(), T, outs_[i].data());
  }
}

void Trainer::teacher_logits(const float* x, int64_t T) {
  tlogits_.resize(teachers_.size());
  for (size_t t = 0; t < teachers_.size(); ++t) teachers_[t]->forward_into(x, T, teachers_[t]->size() - 1, tlogits_[t]);
}

// The teachers' soft targets at `temperature`: softmax(logits / T) per block,
// averaged over teachers (or the softmax of their averaged logits).
void Trainer::soft_targets(float temperature, bool average_logits, MatF& q) {
  const int64_t T = tlogits_[0].rows(), D = output_dim_;
  const float inv_t = 1.f / temperature;
  const float inv_n = 1.f / static_cast<float>(tlogits_.size());
  const size_t nt = tlogits_.size();
  const bool mix_logits = nt > 1 && average_logits;
  if (mix_logits) {
    tmp_ = tlogits_[0];
    for (size_t t = 1; t < nt; ++t) tmp_ += tlogits_[t];
    tmp_ *= inv_n;
  }
  q.resize(T, D);
  for_rows(T, D, [&](int64_t a, int64_t e) {
    std::vector<float> row(static_cast<size_t>(D));
    for (int64_t r = a; r < e; ++r) {
      float* qr = q.data() + r * D;
      int64_t c0 = 0;
      for (int32_t w : blocks_) {
        // Softmax of each teacher's (or the mixed) logits / T, averaged over teachers.
        const size_t sources = mix_logits ? 1 : nt;
        for (size_t t = 0; t < sources; ++t) {
          const float* z = (mix_logits ? tmp_ : tlogits_[t]).data() + r * D + c0;
          float* dst = t == 0 ? qr + c0 : row.data();
          const float s = exp_sum_span(z, z[argmax_span(z, w)], inv_t, dst, w);
          const float scale = 1.f / (s * static_cast<float>(sources));
          if (t == 0)
            for (int64_t j = 0; j < w; ++j) dst[j] *= scale;
          else
            for (int64_t j = 0; j < w; ++j) qr[c0 + j] += dst[j] * scale;
        }
        c0 += w;
      }
    }
  });
}

// Loss statistics and (want_grad) the gradient of the summed objective with
// respect to the logits, into g_:
//   (1 - a) T (p_T - q_T) + a (p_1 - onehot(label))   (only a (p_1 - y) without teachers).
BatchStats Trainer::loss(int64_t T, const int32_t* labels, const LossOptions& lo, bool want_grad, bool want_kl1) {
  const MatF& Z = outs_.back();
  const int64_t D = output_dim_;
  const bool soft = !teachers_.empty();
  const float temp = lo.temperature;
  const float a = soft ? lo.hard_weight : 1.f;
  const bool hard = labels != nullptr && a > 0.f;
  const float inv_t = 1.f / temp;
  const float soft_scale = (1.f - a) * temp;  // d/dz of (1 - a) T^2 CE(q, softmax(z / T))
  if (soft) {
    soft_targets(temp, lo.average_logits, q_);
    if (want_kl1 && temp != 1.f) soft_targets(1.f, lo.average_logits, q1_);
  }
  const MatF& Q1 = (want_kl1 && temp != 1.f) ? q1_ : q_;
  if (want_grad) g_.resize(T, D);

  const int64_t chunks = std::max<int64_t>(1, std::min<int64_t>(num_threads(), (T * D) >> 17));
  std::vector<BatchStats> part(static_cast<size_t>(chunks));
  parallel_for(chunks, [&](int64_t ch) {
    BatchStats& st = part[static_cast<size_t>(ch)];
    std::vector<float> e(static_cast<size_t>(D)), tmp(static_cast<size_t>(D));
    for (int64_t r = T * ch / chunks; r < T * (ch + 1) / chunks; ++r) {
      const float* z = Z.data() + r * D;
      float* g = want_grad ? g_.data() + r * D : nullptr;
      const int32_t lab = labels ? labels[r] : -1;
      if (lab >= 0) ++st.labelled;
      int64_t c0 = 0;
      for (int32_t w : blocks_) {
        const float* zb = z + c0;
        float* gb = g ? g + c0 : nullptr;
        float* eb = e.data() + c0;
        const int64_t zmax = argmax_span(zb, w);
        const float m = zb[zmax];
        if (gb) std::fill(gb, gb + w, 0.f);
        if (soft) {
          // Student at temperature T: p_j = exp((z_j - m) / T) / S.
          const float* qb = q_.data() + r * D + c0;
          const float s = exp_sum_span(zb, m, inv_t, eb, w);
          const float log_s = std::log(s), inv_s = 1.f / s;
          // KL(q || p) = sum q (log q - log p), log p_j = (z_j - m) / T - log S.
          const float kl = kl_span(qb, zb, m, inv_t, log_s, w);
          st.kl_t += std::max(kl, 0.f);
          st.objective += (1.0 - a) * temp * temp * std::max(kl, 0.f);
          if (gb) soft_grad_span(eb, inv_s, qb, soft_scale, gb, w);
          st.agree += argmax_span(qb, w) == zmax;
          ++st.blocks;
          if (want_kl1) {
            const float* q1b = Q1.data() + r * D + c0;
            const float log_s1 = std::log(exp_sum_span(zb, m, 1.f, tmp.data(), w));
            st.kl += std::max(kl_span(q1b, zb, m, 1.f, log_s1, w), 0.f);
          }
        }
        if (lab >= c0 && lab < c0 + w) {
          const int64_t l = lab - c0;
          st.correct += zmax == l;
          // -log p_1(label) with p_1 = softmax(z).
          const float s1 = exp_sum_span(zb, m, 1.f, eb, w);
          const double ce = -(static_cast<double>(zb[l]) - m - std::log(static_cast<double>(s1)));
          st.hard_ce += ce;
          if (hard) {
            st.objective += a * ce;
            if (gb) {
              const float inv = a / s1;
              for (int64_t j = 0; j < w; ++j) gb[j] += eb[j] * inv;
              gb[l] -= a;
            }
          }
        }
        c0 += w;
      }
    }
  });
  BatchStats total;
  for (const BatchStats& p : part) total.add(p);
  total.frames = T;
  return total;
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

BatchStats Trainer::train(const float* x, int64_t T, const int32_t* labels, const OptimizerOptions& opt,
                          const LossOptions& lo) {
  if (T <= 0) return {};
  blas::ThreadsForWork threads(2.0 * static_cast<double>(T) * (3 * student_weights_ + teacher_weights_));
  forward(x, T);
  if (!teachers_.empty()) teacher_logits(x, T);
  BatchStats st = loss(T, labels, lo, !slots_.empty(), false);
  if (!slots_.empty()) {
    if (opt.adam) ++adam_step_;
    backward(x, T, Mode::Update, opt, nullptr);
  }
  return st;
}

BatchStats Trainer::evaluate(const float* x, int64_t T, const int32_t* labels, const LossOptions& lo) {
  if (T <= 0) return {};
  blas::ThreadsForWork threads(2.0 * static_cast<double>(T) * (student_weights_ + teacher_weights_));
  forward(x, T);
  if (!teachers_.empty()) teacher_logits(x, T);
  return loss(T, labels, lo, false, true);
}

BatchStats Trainer::gradients(const float* x, int64_t T, const int32_t* labels, const LossOptions& lo,
                              std::vector<std::vector<float>>* param_grads, MatF* input_grad) {
  forward(x, T);
  if (!teachers_.empty()) teacher_logits(x, T);
  BatchStats st = loss(T, labels, lo, true, false);
  backward(x, T, Mode::Gradients, OptimizerOptions{}, input_grad);
  param_grads->clear();
  for (Slot& s : slots_) param_grads->emplace_back(s.grad.begin(), s.grad.end());
  return st;
}

}  // namespace svd
