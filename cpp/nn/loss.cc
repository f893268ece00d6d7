// The distillation loss and its statistics, and its gradient with respect
// to the student's logits (the start of the backward pass); the hint term and
// its gradients with respect to the matched activations.
#include "nn/loss.h"

#include <algorithm>
#include <cmath>
#include <vector>

#include "nn/kernels.h"
#include "nn/stats.h"
#include "nn/train.h"

namespace svd {

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
  hint += o.hint;
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
  const bool soft = num_teachers() > 0;
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
    std::vector<float> e(static_cast<size_t>(D));
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
          ++st.blocks;
          if (want_kl1) {
            // Evaluation: KL at T = 1 and agreement as `svdistill compare` computes them (nn/stats).
            FidelityStats f;
            add_block(Q1.data() + r * D + c0, zb, w, f);
            st.kl += f.kl;
            st.agree += f.agree;
          } else {
            st.agree += argmax_span(qb, w) == zmax;
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
  if (!hints_.empty()) hint_term(T, lo, want_grad, total);
  return total;
}

// A teacher layer whose activations hardly vary over the minibatch (a dead
// ReLU layer, saturated units, a minibatch of one frame) has a variance of 0
// or nearly: dividing by it would make the term infinite or let it swamp the
// others. Floored here (a standard deviation of 0.01, small against activations
// of order 0.1 to 1), such a layer weighs at most 1e4 x its mean squared
// difference.
constexpr double kHintVarianceFloor = 1e-4;

// The hint term, summed over frames: per frame, over the hints l, the mean over
// units of (s_l - t_l)^2 / v_l, v_l the mean over units of the teacher's
// per-unit variance over this minibatch's frames (a constant for the gradient).
// Into st.hint (unweighted) and B x it into st.objective; with want_grad and
// B > 0, its gradient 2 B (s_l - t_l) / (units v_l) into hint_grads_, which the
// backward pass adds where it reaches the student's activation.
void Trainer::hint_term(int64_t T, const LossOptions& lo, bool want_grad, BatchStats& st) {
  const float B = lo.hint_weight;
  hint_grad_ = want_grad && B > 0.f;
  if (hint_grad_) hint_grads_.resize(hints_.size());
  double total = 0;
  for (size_t k = 0; k < hints_.size(); ++k) {
    const MatF& S = outs_[hints_[k].student];
    const size_t ti = hints_[k].teacher;  // the teacher's last component before its softmax gives its logits
    const MatF& Tt = ti + 2 == teachers_[0]->size() ? tlogits_[0] : touts_[ti];
    const int64_t U = S.cols();
    // The teacher's per-unit variance over the frames (two passes, in double), averaged over units.
    std::vector<double> mean(static_cast<size_t>(U), 0.0), var(static_cast<size_t>(U), 0.0);
    for (int64_t r = 0; r < T; ++r)
      for (int64_t j = 0; j < U; ++j) mean[j] += Tt.data()[r * U + j];
    for (double& m : mean) m /= static_cast<double>(T);
    for (int64_t r = 0; r < T; ++r)
      for (int64_t j = 0; j < U; ++j) {
        const double d = Tt.data()[r * U + j] - mean[j];
        var[j] += d * d;
      }
    double v = 0;
    for (double x : var) v += x;
    v = std::max(v / (static_cast<double>(T) * static_cast<double>(U)), kHintVarianceFloor);
    const double inv = 1.0 / (static_cast<double>(U) * v);
    if (hint_grad_) hint_grads_[k].resize(T, U);
    const float gscale = static_cast<float>(2.0 * B * inv);
    std::vector<double> rows(static_cast<size_t>(T));
    for_rows(T, U, [&](int64_t a, int64_t e) {
      for (int64_t r = a; r < e; ++r) {
        const float* s = S.data() + r * U;
        const float* t = Tt.data() + r * U;
        double sum = 0;
        for (int64_t j = 0; j < U; ++j) {
          const double d = static_cast<double>(s[j]) - t[j];
          sum += d * d;
        }
        rows[r] = sum * inv;
        if (hint_grad_) {
          float* g = hint_grads_[k].data() + r * U;
          for (int64_t j = 0; j < U; ++j) g[j] = gscale * (s[j] - t[j]);
        }
      }
    });
    for (double x : rows) total += x;  // in frame order: the same sum at any thread count
  }
  st.hint += total;
  if (B > 0.f) st.objective += static_cast<double>(B) * total;
}

}  // namespace svd
