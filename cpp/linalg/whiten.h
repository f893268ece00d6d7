// Data-aware truncation (SVD-LLM, Wang et al. 2024): a layer's input
// statistics, the whitening they define, and the output error of a factor
// pair on those inputs. With Sigma the inputs' covariance and
// Sigma + lambda I = R^T R, the rank-k pair B A minimising
// ||(W - B A)(X - mean)||_F is the truncated SVD of W R^T mapped back by
// R^{-T}; each dropped singular value of W R^T is then exactly the output
// energy it costs, and the bias absorbs (W - B A) mean.
#pragma once

#include <cstdint>
#include <vector>

#include "linalg/svd.h"

namespace svd {

// First and second moments of a stream of dim-vectors, in double. Summed
// about a shift (the first rows' mean), so the covariance is never the small
// difference of two large sums when the inputs' mean is far from zero.
class MomentAccumulator {
 public:
  explicit MomentAccumulator(int64_t dim);
  // Adds `rows` vectors (row-major, `stride` floats apart).
  void add(const float* x, int64_t rows, int64_t stride);
  int64_t dim() const { return dim_; }
  int64_t count() const { return count_; }
  std::vector<double> mean() const;
  MatD covariance() const;  // the population covariance (divided by count), full

 private:
  int64_t dim_;
  int64_t count_ = 0;
  std::vector<double> shift_, sum_;  // sum_ = sum of (x - shift)
  MatD moment_;                      // upper triangle of sum of (x - shift)(x - shift)^T
  MatD block_;                       // scratch: a block of shifted rows in double
};

// Relative ridge: lambda = kWhiteningRidge x trace(Sigma) / dim. Dead or
// constant inputs and fewer frames than dims make Sigma singular; the ridge
// keeps R invertible and charges an error in such a direction at lambda
// rather than nothing (inputs that never varied here may vary elsewhere).
// Chosen by held-out output error (README, "Calibrated compression").
constexpr double kWhiteningRidge = 1e-3;

struct Whitening {
  MatD r;           // dim x dim, upper triangular: Sigma + ridge I = R^T R
  double ridge = 0;  // lambda, absolute
};

// Throws Error if the covariance is not finite or not square. An input
// without any variation (trace 0) gives R = I: the plain SVD.
Whitening whitening(const MatD& covariance, double relative_ridge = kWhiteningRidge);

// W R^T (out x in) in float: its singular values are the whitened spectrum
// (output energies); `energy` receives ||W R^T||_F^2, accumulated in double.
MatF whiten_weight(const float* w, int64_t out, int64_t in, const Whitening& wh, double* energy);

// Maps right singular vectors of W R^T (k x in, in place) to W's input space: V^T R^{-T}.
void unwhiten_rows(MatF& vt, const Whitening& wh);

// E ||(W - B A) x - c||^2 over the calibration inputs, in double, for
// B (out x k), A (k x in): with `mean` null the bias absorbs the mean error
// (c = (W - B A) mean, the whitened pair's correction); otherwise the plain
// pair's, whose bias is unchanged (c = 0, the mean error counts).
// `sigma`: the covariance. k may be 0 (the error of dropping W).
double output_error_energy(const float* w, const float* b, const float* a, int64_t out, int64_t k, int64_t in,
                           const MatD& sigma, const std::vector<double>* mean);

}  // namespace svd
