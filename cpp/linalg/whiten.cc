#include "linalg/whiten.h"

#include <algorithm>
#include <cmath>
#include <string>

#include <Eigen/Cholesky>

#include "linalg/blas.h"
#include "nnet1/errors.h"

namespace svd {

MomentAccumulator::MomentAccumulator(int64_t dim)
    : dim_(dim), sum_(static_cast<size_t>(dim), 0.0), moment_(MatD::Zero(dim, dim)) {
  if (dim <= 0) throw Error("input statistics need a positive dimension, got " + std::to_string(dim));
}

void MomentAccumulator::add(const float* x, int64_t rows, int64_t stride) {
  if (rows <= 0) return;
  if (shift_.empty()) {  // the first rows' mean: close to the final mean, cheap to know
    shift_.assign(static_cast<size_t>(dim_), 0.0);
    for (int64_t i = 0; i < rows; ++i)
      for (int64_t j = 0; j < dim_; ++j) shift_[j] += x[i * stride + j];
    for (double& s : shift_) s /= static_cast<double>(rows);
  }
  // Blocks of about 8 MB of doubles: the products run as one dsyrk each.
  const int64_t block = std::max<int64_t>(1, (1 << 20) / dim_);
  for (int64_t r0 = 0; r0 < rows; r0 += block) {
    const int64_t n = std::min(block, rows - r0);
    block_.resize(n, dim_);
    for (int64_t i = 0; i < n; ++i) {
      const float* row = x + (r0 + i) * stride;
      double* out = block_.data() + i * dim_;
      for (int64_t j = 0; j < dim_; ++j) {
        out[j] = static_cast<double>(row[j]) - shift_[j];
        sum_[j] += out[j];
      }
    }
    blas::gram_double_acc(block_.data(), n, dim_, moment_.data());
  }
  count_ += rows;
}

std::vector<double> MomentAccumulator::mean() const {
  std::vector<double> m(static_cast<size_t>(dim_), 0.0);
  if (count_ == 0) return m;
  for (int64_t j = 0; j < dim_; ++j) m[j] = shift_[j] + sum_[j] / static_cast<double>(count_);
  return m;
}

MatD MomentAccumulator::covariance() const {
  MatD c = MatD::Zero(dim_, dim_);
  if (count_ == 0) return c;
  const double n = static_cast<double>(count_);
  for (int64_t i = 0; i < dim_; ++i) {
    const double di = sum_[i] / n;
    for (int64_t j = i; j < dim_; ++j) {
      const double v = moment_(i, j) / n - di * (sum_[j] / n);
      c(i, j) = v;
      c(j, i) = v;
    }
  }
  return c;
}

Whitening whitening(const MatD& sigma, double relative_ridge) {
  const int64_t d = sigma.rows();
  if (sigma.cols() != d || d == 0)
    throw Error("a covariance must be a non-empty square matrix, got " + std::to_string(sigma.rows()) + "x" +
                std::to_string(sigma.cols()));
  if (!sigma.allFinite()) throw Error("the input covariance has nan/inf entries");
  if (!(relative_ridge > 0) || !std::isfinite(relative_ridge))
    throw Error("the whitening ridge must be a positive number, got " + std::to_string(relative_ridge));
  double trace = 0;
  for (int64_t i = 0; i < d; ++i) trace += std::max(sigma(i, i), 0.0);
  Whitening wh;
  if (!(trace > 0)) {  // no variation at all: every direction alike, the plain SVD
    wh.r = MatD::Identity(d, d);
    wh.ridge = 0;
    return wh;
  }
  wh.ridge = relative_ridge * trace / static_cast<double>(d);
  // Rounding can leave a singular covariance slightly indefinite beyond the
  // ridge; each retry doubles it (a handful at most).
  for (int attempt = 0; attempt < 60; ++attempt) {
    MatD g = sigma;
    g.diagonal().array() += wh.ridge;
    if (blas::cholesky_upper(g.data(), d)) {
      g.triangularView<Eigen::StrictlyLower>().setZero();
      wh.r = std::move(g);
      return wh;
    }
    wh.ridge *= 2;
  }
  throw Error("the input covariance is not positive semi-definite (Cholesky failed with any ridge)");
}

MatF whiten_weight(const float* w, int64_t out, int64_t in, const Whitening& wh, double* energy) {
  if (wh.r.rows() != in) throw Error("whitening of dimension " + std::to_string(wh.r.rows()) +
                                     " for a weight matrix with " + std::to_string(in) + " inputs");
  MatD wd = Eigen::Map<const MatF>(w, out, in).cast<double>();
  MatD m(out, in);
  if (out > 0 && in > 0)  // W R^T
    blas::dgemm(false, true, out, in, in, wd.data(), in, wh.r.data(), in, m.data(), in);
  if (energy) *energy = m.squaredNorm();
  return m.cast<float>();
}

void unwhiten_rows(MatF& vt, const Whitening& wh) {
  if (vt.cols() != wh.r.rows()) throw Error("unwhiten: dimension mismatch");
  // A R^T = V^T  <=>  R A^T = V.
  MatD at = vt.transpose().cast<double>();
  wh.r.triangularView<Eigen::Upper>().solveInPlace(at);
  vt = at.transpose().cast<float>();
}

double output_error_energy(const float* w, const float* b, const float* a, int64_t out, int64_t k, int64_t in,
                           const MatD& sigma, const std::vector<double>* mean) {
  if (sigma.rows() != in || sigma.cols() != in)
    throw Error("output error: a covariance of " + std::to_string(sigma.rows()) + " dims for " +
                std::to_string(in) + " inputs");
  if (mean && static_cast<int64_t>(mean->size()) != in) throw Error("output error: mean of the wrong size");
  // D = W - B A in double; tr(D Sigma D^T) = sum((D Sigma) .* D). out x in^2
  // flops: as much as whitening the layer, and exact for any pair.
  MatD d = Eigen::Map<const MatF>(w, out, in).cast<double>();
  if (k > 0) {
    MatD bd = Eigen::Map<const MatF>(b, out, k).cast<double>();
    MatD ad = Eigen::Map<const MatF>(a, k, in).cast<double>();
    MatD ba(out, in);
    blas::dgemm(false, false, out, in, k, bd.data(), k, ad.data(), in, ba.data(), in);
    d -= ba;
  }
  MatD ds(out, in);
  if (out > 0 && in > 0) blas::dgemm(false, false, out, in, in, d.data(), in, sigma.data(), in, ds.data(), in);
  double e = (ds.array() * d.array()).sum();
  if (mean) {
    Eigen::Map<const Eigen::VectorXd> mu(mean->data(), in);
    e += (d * mu).squaredNorm();
  }
  return std::max(e, 0.0);
}

}  // namespace svd
