#include "linalg/rank_policy.h"

#include <algorithm>
#include <cmath>
#include <queue>

namespace svd {

int64_t energy_rank(const std::vector<double>& s, double fraction, double total_energy) {
  double total = 0;
  for (double x : s) total += x * x;
  if (total_energy > 0) total = std::max(total, total_energy);
  if (total <= 0) return 0;
  const double target = fraction * total;
  double acc = 0;
  for (size_t k = 0; k < s.size(); ++k) {
    acc += s[k] * s[k];
    // A relative slack of a few ulps keeps fraction=1 reachable despite rounding.
    if (acc >= target * (1 - 1e-12)) return static_cast<int64_t>(k + 1);
  }
  return static_cast<int64_t>(s.size());
}

int64_t nuclear_rank(const std::vector<double>& s, double fraction) {
  double total = 0;
  for (double x : s) total += x;
  if (total <= 0) return 0;
  const double target = fraction * total;
  double acc = 0;
  for (size_t k = 0; k < s.size(); ++k) {
    acc += s[k];
    if (acc >= target * (1 - 1e-12)) return static_cast<int64_t>(k + 1);
  }
  return static_cast<int64_t>(s.size());
}

int64_t round_rank(int64_t k, int64_t m, int64_t out, int64_t in) {
  const int64_t cap = std::min(out, in);
  if (m > 1) k = (k + m - 1) / m * m;
  return std::min(k, cap);
}

std::vector<int64_t> budget_ranks(const std::vector<LayerSpectrum>& layers, double budget_params,
                                  double min_gain, int64_t round_to) {
  const int64_t step_rank = std::max<int64_t>(1, round_to);
  const size_t n = layers.size();
  std::vector<int64_t> rank(n, 0);
  std::vector<bool> full(n, false);
  std::vector<double> remaining(n, 0);  // error still left in each layer
  double used = 0;
  for (size_t l = 0; l < n; ++l)
    for (double x : layers[l].s) remaining[l] += x * x;

  // One candidate move per layer: the next rank step, or going unfactored once
  // more rank would not pay for itself.
  struct Move {
    double ratio;
    size_t layer;
    int64_t new_rank;  // -1: unfactored
    double cost, gain;
    bool operator<(const Move& o) const { return ratio < o.ratio; }
  };
  auto next_move = [&](size_t l, Move* mv) -> bool {
    if (full[l]) return false;
    const LayerSpectrum& L = layers[l];
    const int64_t cap = std::min(L.out, L.in);
    int64_t k = rank[l];
    int64_t k2 = std::min(cap, (k / step_rank + 1) * step_rank);
    double gain = 0;
    for (int64_t i = k; i < k2 && i < static_cast<int64_t>(L.s.size()); ++i) gain += L.s[i] * L.s[i];
    if (k2 > k && worth_factoring(k2, L.out, L.in, min_gain)) {
      double cost = static_cast<double>(factored_params(k2 - k, L.out, L.in));
      *mv = {gain / cost, l, k2, cost, gain};
      return true;
    }
    // Next step is not worth factoring: the only move left is the full matrix.
    double cost = static_cast<double>(L.out * L.in - factored_params(k, L.out, L.in));
    *mv = {cost > 0 ? remaining[l] / cost : INFINITY, l, -1, std::max(cost, 0.0), remaining[l]};
    return true;
  };

  // Every layer starts at its smallest rank (a rank-0 layer is no layer).
  for (size_t l = 0; l < n; ++l) {
    const LayerSpectrum& L = layers[l];
    const int64_t k0 = std::min(std::min(L.out, L.in), step_rank);
    if (worth_factoring(k0, L.out, L.in, min_gain)) {
      rank[l] = k0;
      used += static_cast<double>(factored_params(k0, L.out, L.in));
      for (int64_t i = 0; i < k0 && i < static_cast<int64_t>(L.s.size()); ++i) remaining[l] -= L.s[i] * L.s[i];
    } else {
      full[l] = true;
      used += static_cast<double>(L.out * L.in);
      remaining[l] = 0;
    }
  }
  std::priority_queue<Move> heap;
  Move mv;
  for (size_t l = 0; l < n; ++l)
    if (next_move(l, &mv)) heap.push(mv);
  while (!heap.empty()) {
    Move m = heap.top();
    heap.pop();
    if (used + m.cost > budget_params) continue;  // does not fit; smaller moves still may
    used += m.cost;
    remaining[m.layer] -= m.gain;
    if (m.new_rank < 0) {
      full[m.layer] = true;
    } else {
      rank[m.layer] = m.new_rank;
      if (next_move(m.layer, &mv)) heap.push(mv);
    }
  }
  for (size_t l = 0; l < n; ++l)
    if (full[l]) rank[l] = -1;
  return rank;
}

}  // namespace svd
