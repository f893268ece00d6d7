// Rank selection from singular values. Pure functions of spectra and shapes;
// no matrices, no I/O. Python's compress() and the tests call exactly these.
#pragma once

#include <cstdint>
#include <vector>

namespace svd {

// Smallest k whose top-k sum of s_i^2 reaches `fraction` of `total_energy`
// (pass the squared Frobenius norm; if <= 0, the sum of all s_i^2 is used).
int64_t energy_rank(const std::vector<double>& s, double fraction, double total_energy = -1);

// Smallest k whose top-k sum of s_i reaches `fraction` of the sum of all s_i.
int64_t nuclear_rank(const std::vector<double>& s, double fraction);

// Parameters of a rank-k factorisation replacing an out x in weight matrix
// (the layer's bias not counted): the two factors, plus `per_rank` more for
// each unit of rank where the output dialect adds them (PDNN's first factor
// is an <affinetransform> with a zero bias of length k).
inline int64_t factored_params(int64_t k, int64_t out, int64_t in, int64_t per_rank = 0) {
  return k * (out + in + per_rank);
}

// True if factoring at rank k keeps at most (1 - min_gain) of the weights.
// (A relative slack of 1e-12 keeps exact boundaries such as 70% of 2880 exact.)
inline bool worth_factoring(int64_t k, int64_t out, int64_t in, double min_gain, int64_t per_rank = 0) {
  const double full = static_cast<double>(out * in);
  const int64_t factored = factored_params(k, out, in, per_rank);
  return static_cast<double>(factored) <= (1.0 - min_gain) * full * (1 + 1e-12) && factored < out * in;
}

// The largest rank that still saves parameters (worth_factoring at min_gain 0):
// k (out + in + per_rank) < out x in; 0 if none does.
inline int64_t break_even_rank(int64_t out, int64_t in, int64_t per_rank = 0) {
  return out * in > 0 ? (out * in - 1) / (out + in + per_rank) : 0;
}

// Rounds k up to a multiple of m, capped at min(out, in).
int64_t round_rank(int64_t k, int64_t m, int64_t out, int64_t in);

struct LayerSpectrum {
  int64_t out = 0, in = 0;
  std::vector<double> s;        // singular values, descending (all of them)
  double total_energy = -1;     // squared Frobenius norm if known
};

// Ranks minimising the total squared Frobenius error over all layers subject to
// sum of weight parameters <= budget_params; a layer may also stay whole (its
// full matrix, error 0). Each layer's options (ranks on the round_to grid that
// save parameters, and "whole") are reduced to their lower convex hull in
// (parameters, error); hull segments are taken in order of error removed per
// parameter while they fit, which is optimal for this separable problem at the
// hull vertices, and the remaining budget then buys the best affordable
// non-vertex step. Every layer gets at least its cheapest option; the caller
// checks that this minimum fits. `per_rank` as in factored_params. Returns,
// per layer, the rank, or -1 for "whole".
std::vector<int64_t> budget_ranks(const std::vector<LayerSpectrum>& layers, double budget_params,
                                  double min_gain, int64_t round_to, int64_t per_rank = 0);

}  // namespace svd
