#include "nn/stats.h"

#include <algorithm>
#include <cmath>
#include <string>

#include "nnet1/errors.h"
#include "util/threads.h"

namespace svd {

void FidelityStats::add(const FidelityStats& o) {
  frames += o.frames;
  blocks += o.blocks;
  agree += o.agree;
  kl += o.kl;
  cross_entropy += o.cross_entropy;
  teacher_entropy += o.teacher_entropy;
  max_abs_diff = std::max(max_abs_diff, o.max_abs_diff);
}

namespace {

int64_t argmax(const float* x, int64_t w) { return std::max_element(x, x + w) - x; }

// log-sum-exp of z (double), and z's maximum.
double log_sum_exp(const float* z, int64_t w, double* zmax) {
  const double m = *std::max_element(z, z + w);
  double s = 0;
  for (int64_t j = 0; j < w; ++j) s += std::exp(static_cast<double>(z[j]) - m);
  *zmax = m;
  return m + std::log(s);
}

// KL and the rest from the teacher's log-probabilities lq (w of them).
void add_from_log(const double* lq, const float* z, int64_t w, int64_t teacher_argmax, FidelityStats& st) {
  double m;
  const double lse = log_sum_exp(z, w, &m);
  double ce = 0, ent = 0, diff = 0;
  for (int64_t j = 0; j < w; ++j) {
    const double q = std::exp(lq[j]);
    const double lp = static_cast<double>(z[j]) - lse;
    if (q > 0) {
      ce -= q * lp;
      ent -= q * lq[j];
    }
    diff = std::max(diff, std::fabs(q - std::exp(lp)));
  }
  st.cross_entropy += ce;
  st.teacher_entropy += ent;
  st.kl += std::max(ce - ent, 0.0);
  st.max_abs_diff = std::max(st.max_abs_diff, diff);
  st.agree += teacher_argmax == argmax(z, w);
  ++st.blocks;
}

}  // namespace

void add_block(const float* q, const float* z, int64_t w, FidelityStats& st) {
  std::vector<double> lq(static_cast<size_t>(w));
  for (int64_t j = 0; j < w; ++j) lq[j] = q[j] > 0 ? std::log(static_cast<double>(q[j])) : -INFINITY;
  add_from_log(lq.data(), z, w, argmax(q, w), st);
}

FidelityStats compare_logits(const float* zt, const float* zs, int64_t T, int64_t D,
                             const std::vector<int32_t>& blocks) {
  int64_t sum = 0;
  for (int32_t w : blocks) {
    if (w <= 0) throw Error("softmax blocks must be positive, got " + std::to_string(w));
    sum += w;
  }
  if (sum != D) throw Error("softmax blocks sum to " + std::to_string(sum) + ", the outputs have " +
                            std::to_string(D) + " dims");
  const int64_t chunks = std::max<int64_t>(1, std::min<int64_t>(num_threads(), (T * D) >> 15));
  std::vector<FidelityStats> part(static_cast<size_t>(chunks));
  parallel_for(chunks, [&](int64_t ch) {
    FidelityStats& st = part[static_cast<size_t>(ch)];
    std::vector<double> lq(static_cast<size_t>(D));
    for (int64_t r = T * ch / chunks; r < T * (ch + 1) / chunks; ++r) {
      int64_t c0 = 0;
      for (int32_t w : blocks) {
        const float* t = zt + r * D + c0;
        double m;
        const double lse = log_sum_exp(t, w, &m);
        for (int64_t j = 0; j < w; ++j) lq[j] = static_cast<double>(t[j]) - lse;
        add_from_log(lq.data(), zs + r * D + c0, w, argmax(t, w), st);
        c0 += w;
      }
    }
  });
  FidelityStats total;
  for (const auto& p : part) total.add(p);
  total.frames = T;
  return total;
}

}  // namespace svd
