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

namespace {

struct Option {
  double cost, err;
  int64_t rank;  // -1: the layer stays whole
};

// Lower convex hull of (cost, error) options sorted by cost: the options a
// cost-effectiveness greedy can stop at.
std::vector<Option> lower_hull(const std::vector<Option>& pts) {
  std::vector<Option> h;
  for (const Option& p : pts) {
    while (h.size() >= 2) {
      const Option& o = h[h.size() - 2];
      const Option& a = h.back();
      double cross = (a.cost - o.cost) * (p.err - o.err) - (a.err - o.err) * (p.cost - o.cost);
      if (cross > 0) break;
      h.pop_back();
    }
    h.push_back(p);
  }
  return h;
}

}  // namespace

std::vector<int64_t> budget_ranks(const std::vector<LayerSpectrum>& layers, double budget_params,
                                  double min_gain, int64_t round_to, int64_t per_rank) {
  const int64_t step = std::max<int64_t>(1, round_to);
  const size_t n = layers.size();
  // Every option of every layer: ranks on the rounding grid that save
  // parameters, and the whole matrix.
  std::vector<std::vector<Option>> options(n), hull(n);
  for (size_t l = 0; l < n; ++l) {
    const LayerSpectrum& L = layers[l];
    const int64_t cap = std::min(L.out, L.in);
    std::vector<double> tail(L.s.size() + 1, 0.0);
    for (size_t i = L.s.size(); i-- > 0;) tail[i] = tail[i + 1] + L.s[i] * L.s[i];
    auto err_at = [&](int64_t k) { return tail[static_cast<size_t>(std::min<int64_t>(k, L.s.size()))]; };
    for (int64_t k = std::min(step, cap);; k = std::min(cap, k + step)) {
      if (!worth_factoring(k, L.out, L.in, min_gain, per_rank)) break;
      options[l].push_back({static_cast<double>(factored_params(k, L.out, L.in, per_rank)), err_at(k), k});
      if (k == cap) break;
    }
    options[l].push_back({static_cast<double>(L.out * L.in), 0.0, -1});
    hull[l] = lower_hull(options[l]);
  }
  // Start from each layer's cheapest option, then take hull segments in order
  // of error removed per parameter while they fit: optimal for the separable
  // problem at every hull vertex reached.
  std::vector<size_t> at(n, 0);
  double used = 0;
  for (size_t l = 0; l < n; ++l) used += hull[l][0].cost;
  struct Seg {
    double ratio;
    size_t layer;
    bool operator<(const Seg& o) const { return ratio < o.ratio; }
  };
  auto seg = [&](size_t l, Seg* s) {
    if (at[l] + 1 >= hull[l].size()) return false;
    const Option& a = hull[l][at[l]];
    const Option& b = hull[l][at[l] + 1];
    *s = {(a.err - b.err) / std::max(b.cost - a.cost, 1e-300), l};
    return true;
  };
  std::priority_queue<Seg> heap;
  Seg s;
  for (size_t l = 0; l < n; ++l)
    if (seg(l, &s)) heap.push(s);
  std::vector<bool> blocked(n, false);
  while (!heap.empty()) {
    Seg top = heap.top();
    heap.pop();
    const size_t l = top.layer;
    const double extra = hull[l][at[l] + 1].cost - hull[l][at[l]].cost;
    if (used + extra > budget_params) {
      blocked[l] = true;  // later segments of this layer need this one first
      continue;
    }
    used += extra;
    ++at[l];
    if (seg(l, &s)) heap.push(s);
  }
  // What budget is left may still buy a step that is not a hull vertex:
  // repeatedly take the affordable move that removes the most error.
  std::vector<Option> cur(n);
  for (size_t l = 0; l < n; ++l) cur[l] = hull[l][at[l]];
  for (;;) {
    double best_gain = 0;
    size_t best_l = n;
    Option best{};
    for (size_t l = 0; l < n; ++l)
      for (const Option& o : options[l])
        if (o.cost > cur[l].cost && o.err < cur[l].err && used + o.cost - cur[l].cost <= budget_params &&
            cur[l].err - o.err > best_gain) {
          best_gain = cur[l].err - o.err;
          best_l = l;
          best = o;
        }
    if (best_l == n) break;
    used += best.cost - cur[best_l].cost;
    cur[best_l] = best;
  }
  // Integer leftovers: exchanges between two layers (one gives parameters back,
  // the other takes them) near the current choice, while one lowers the error.
  constexpr int64_t kWindow = 16;
  auto index_of = [&](size_t l) {
    for (size_t i = 0; i < options[l].size(); ++i)
      if (options[l][i].rank == cur[l].rank) return static_cast<int64_t>(i);
    return int64_t{0};
  };
  for (int round = 0; round < 10000; ++round) {
    double best_gain = 1e-15;
    size_t ba = n, bb = n;
    Option oa_best{}, ob_best{};
    for (size_t a = 0; a < n; ++a) {
      const int64_t ia = index_of(a), na = static_cast<int64_t>(options[a].size());
      for (size_t b = 0; b < n; ++b) {
        if (a == b) continue;
        const int64_t ib = index_of(b), nb = static_cast<int64_t>(options[b].size());
        for (int64_t x = std::max<int64_t>(0, ia - kWindow); x < std::min(na, ia + kWindow + 1); ++x)
          for (int64_t y = std::max<int64_t>(0, ib - kWindow); y < std::min(nb, ib + kWindow + 1); ++y) {
            const Option& oa = options[a][x];
            const Option& ob = options[b][y];
            const double cost = used - cur[a].cost - cur[b].cost + oa.cost + ob.cost;
            const double gain = cur[a].err + cur[b].err - oa.err - ob.err;
            if (cost <= budget_params && gain > best_gain) {
              best_gain = gain;
              ba = a;
              bb = b;
              oa_best = oa;
              ob_best = ob;
            }
          }
      }
    }
    if (ba == n) break;
    used += oa_best.cost + ob_best.cost - cur[ba].cost - cur[bb].cost;
    cur[ba] = oa_best;
    cur[bb] = ob_best;
  }
  std::vector<int64_t> rank(n);
  for (size_t l = 0; l < n; ++l) rank[l] = cur[l].rank;
  return rank;
}

}  // namespace svd
