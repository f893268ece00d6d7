// Truncated SVD of a float32 matrix: exact (LAPACK, float64), randomized
// (Halko, Martinsson & Tropp 2011) and adaptive randomized (sketch grows until
// an energy target is provably met). Data float32; the small SVD in float64.
#pragma once

#include <Eigen/Core>
#include <cstdint>
#include <vector>

namespace svd {

using MatF = Eigen::Matrix<float, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;
using MatD = Eigen::Matrix<double, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;

struct SvdResult {
  MatF u;                 // m x k, orthonormal columns
  std::vector<double> s;  // k singular values, descending
  MatF vt;                // k x n, orthonormal rows
  double total_energy = 0;  // squared Frobenius norm of the input
  int64_t sketch = 0;       // columns of the final sketch (randomized methods)
  const char* route = "exact";  // randomized: "direct" (iterates of A) or "gram" (of A^T A or A A^T)
};

// Defaults chosen by measurement on realistic DNN weight spectra (k = 128, 256,
// 512 of 2048x2048, 4096x4096, 8000x2048): 1.002-1.0045x the optimal Frobenius
// error, below torch.svd_lowrank's 1.005-1.007 at niter=4, for the least time
// among the (iterations, oversampling) pairs tried (benchmarks/bench_svd.py).
constexpr int kDefaultIter = 2;
inline int64_t default_oversamples(int64_t k) { return k / 4 > 32 ? k / 4 : 32; }

// How power iterations run (see Sketcher in svd.cc); Auto picks by flop count.
enum class SketchRoute { Auto, Direct, Gram };

struct RandomizedOptions {
  int64_t oversamples = -1;  // -1: default_oversamples(k)
  int n_iter = -1;           // power iterations; -1: kDefaultIter
  uint64_t seed = 0;
  SketchRoute route = SketchRoute::Auto;
};

// How orthonormalize built its basis (for tests).
enum class OrthPath {
  OnePass,      // one Cholesky-QR pass (not `full`): well-conditioned, not orthonormal
  TwoPasses,    // Cholesky-QR2: the first pass's Gram matrix in float, or in double
  Householder,  // Cholesky QR refused: Y too ill-conditioned
};

// Basis of the columns of Y (m x l, m >= l, row-major), in place, spanning
// Y's columns. `full`: orthonormal to working precision (a second Cholesky-QR
// pass, which always sees a well-conditioned Y); otherwise one pass, enough to
// keep power iterates well-conditioned. `squared`: Y is an iterate of a Gram
// matrix (its condition squared), so the first pass forms its Gram matrix in
// double at once. Householder whenever Cholesky QR is unsafe.
OrthPath orthonormalize(float* y, int64_t m, int64_t l, bool full, bool squared = false);

// Squared Frobenius norm, accumulated in double.
double frobenius_sq(const float* a, int64_t n);

// Top-k SVD by LAPACK's divide and conquer in float64.
SvdResult exact_svd(const float* a, int64_t m, int64_t n, int64_t k);

// Top-k SVD from a randomized range finder with power iterations.
SvdResult randomized_svd(const float* a, int64_t m, int64_t n, int64_t k, const RandomizedOptions& opt);

// Smallest-rank factorisation found by randomized sketches that provably
// retains at least `energy` of the squared Frobenius norm: the retained
// energy of the returned factors is computed exactly (they are an orthogonal
// projection of the input), and the sketch doubles until the target is met.
SvdResult adaptive_energy_svd(const float* a, int64_t m, int64_t n, double energy,
                              const RandomizedOptions& opt);

// All min(m, n) singular values, descending (float64 Gram matrix + eigenvalues).
std::vector<double> singular_values(const float* a, int64_t m, int64_t n);

}  // namespace svd
