// The minimiser is found by the EM iteration for this objective. Seen as a
// likelihood, each specialist observes q only through the partition (its
// classes, the rest): its dustbin mass is split over the classes outside it in
// proportion to the current q, and q becomes the average of the generalist's
// distribution and the specialists' completed ones:
//   q_j <- (p_g,j + sum_m [j in S_m] p_m,j + [j not in S_m] p_m,dust q_j / q(not S_m)) / (1 + active)
// Its fixed points are exactly the KKT points of the (convex) objective on the
// simplex, each step decreases the objective, and q stays a distribution
// without a step size or a projection. The rate is linear, faster the more of
// q the specialists observe directly; the generalist observes every class, so
// the contraction factor is below active / (1 + active).
#include "nn/ensemble.h"

#include <algorithm>
#include <cmath>
#include <numeric>
#include <string>

#include "nnet1/errors.h"
#include "util/threads.h"

namespace svd {

CombineResult combine_specialists(const float* generalist, int64_t frames, int64_t C,
                                  const std::vector<const float*>& specialists,
                                  const std::vector<std::vector<int32_t>>& specialist_classes,
                                  const CombineOptions& opt) {
  if (C < 2) throw Error("the generalist must have at least 2 classes, got " + std::to_string(C));
  if (specialists.size() != specialist_classes.size())
    throw Error("got " + std::to_string(specialists.size()) + " specialist outputs for " +
                std::to_string(specialist_classes.size()) + " class lists");
  if (opt.top_n < 1 || opt.top_n > C)
    throw Error("top_n must lie in [1, " + std::to_string(C) + "], got " + std::to_string(opt.top_n));
  if (!(opt.tolerance > 0)) throw Error("tolerance must be > 0");
  if (opt.max_iterations < 1) throw Error("max_iterations must be >= 1");
  const size_t K = specialists.size();
  // For each class, the specialists that hold it; each specialist's membership mask.
  std::vector<std::vector<int32_t>> holders(C);
  std::vector<std::vector<char>> member(K, std::vector<char>(C, 0));
  for (size_t m = 0; m < K; ++m) {
    const auto& s = specialist_classes[m];
    if (s.empty() || static_cast<int64_t>(s.size()) >= C)
      throw Error("specialist " + std::to_string(m) + " has " + std::to_string(s.size()) + " classes; it needs " +
                  "between 1 and " + std::to_string(C - 1) + " (the rest are its dustbin)");
    for (int32_t c : s) {
      if (c < 0 || c >= C)
        throw Error("specialist " + std::to_string(m) + ": class " + std::to_string(c) + " is out of range [0, " +
                    std::to_string(C) + ")");
      if (member[m][c]) throw Error("specialist " + std::to_string(m) + ": class " + std::to_string(c) + " is listed twice");
      member[m][c] = 1;
      holders[c].push_back(static_cast<int32_t>(m));
    }
  }

  CombineResult r;
  r.posteriors.assign(static_cast<size_t>(frames * C), 0.0f);
  r.iterations.assign(static_cast<size_t>(frames), 0);
  r.active.assign(static_cast<size_t>(frames), 0);
  std::vector<char> unconverged(static_cast<size_t>(frames), 0);

  parallel_for(frames, [&](int64_t t) {
    const float* pg = generalist + t * C;
    float* out = r.posteriors.data() + t * C;
    // The active specialists: those holding any of the generalist's top-n classes.
    std::vector<int32_t> order(C);
    std::iota(order.begin(), order.end(), 0);
    std::partial_sort(order.begin(), order.begin() + opt.top_n, order.end(),
                      [&](int32_t a, int32_t b) { return pg[a] > pg[b] || (pg[a] == pg[b] && a < b); });
    std::vector<char> on(K, 0);
    std::vector<int32_t> act;
    for (int i = 0; i < opt.top_n; ++i)
      for (int32_t m : holders[order[i]])
        if (!on[m]) on[m] = 1, act.push_back(m);
    std::sort(act.begin(), act.end());  // the same summation order whatever the top-n order
    r.active[t] = static_cast<int32_t>(act.size());

    std::vector<double> q(C), next(C);
    double total = 0;
    for (int64_t j = 0; j < C; ++j) total += q[j] = std::max(0.0, static_cast<double>(pg[j]));
    if (!(total > 0) || !std::isfinite(total)) throw Error("frame " + std::to_string(t) + ": the generalist's posteriors are not a distribution");
    for (double& v : q) v /= total;
    if (act.empty()) {
      for (int64_t j = 0; j < C; ++j) out[j] = static_cast<float>(q[j]);
      return;
    }
    // What each active specialist puts on its classes is fixed; only its dustbin share moves with q.
    std::vector<double> fixed(C), dust(act.size());
    for (int64_t j = 0; j < C; ++j) fixed[j] = q[j];
    for (size_t a = 0; a < act.size(); ++a) {
      const int32_t m = act[a];
      const auto& s = specialist_classes[m];
      const float* pm = specialists[m] + t * static_cast<int64_t>(s.size() + 1);
      double sum = 0;
      for (size_t i = 0; i <= s.size(); ++i) sum += std::max(0.0f, pm[i]);
      if (!(sum > 0) || !std::isfinite(sum))
        throw Error("frame " + std::to_string(t) + ": specialist " + std::to_string(m) + "'s posteriors are not a distribution");
      for (size_t i = 0; i < s.size(); ++i) fixed[s[i]] += std::max(0.0f, pm[i]) / sum;
      dust[a] = std::max(0.0f, pm[s.size()]) / sum;
    }
    int it = 0;
    bool done = false;
    double prev = 0;  // the last step, for the contraction estimate
    while (!done && it < opt.max_iterations) {
      ++it;
      next = fixed;
      for (size_t a = 0; a < act.size(); ++a) {
        const auto& mask = member[act[a]];
        double rest = 0;  // q outside the specialist's classes, summed directly (not 1 - inside)
        for (int64_t j = 0; j < C; ++j) rest += mask[j] ? 0.0 : q[j];
        if (rest > 0) {
          const double f = dust[a] / rest;
          for (int64_t j = 0; j < C; ++j) if (!mask[j]) next[j] += f * q[j];
        } else {  // q has no mass outside: the dustbin's mass goes to those classes evenly
          const double f = dust[a] / static_cast<double>(C - static_cast<int64_t>(specialist_classes[act[a]].size()));
          for (int64_t j = 0; j < C; ++j) if (!mask[j]) next[j] += f;
        }
      }
      double s = 0;
      for (double v : next) s += v;
      double step = 0;
      for (int64_t j = 0; j < C; ++j) {
        next[j] /= s;
        step = std::max(step, std::abs(next[j] - q[j]));
      }
      q.swap(next);
      // A small step is not a small error when the iteration contracts slowly: with the ratio
      // r of the last two steps, the distance to the fixed point is about step * r / (1 - r).
      const double r = prev > 0 ? step / prev : 1.0;
      done = step == 0 || (step <= opt.tolerance && r < 1 && step * r / (1 - r) <= opt.tolerance);
      prev = step;
    }
    r.iterations[t] = it;
    unconverged[t] = !done;
    for (int64_t j = 0; j < C; ++j) out[j] = static_cast<float>(q[j]);
  });
  r.unconverged = std::count(unconverged.begin(), unconverged.end(), 1);
  return r;
}

}  // namespace svd
