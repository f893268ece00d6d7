// The truncated SVDs (linalg/svd.h) on matrices built with a known spectrum,
// A = U diag(s) V^T with random orthonormal U and V: singular values,
// orthonormal factors, the reconstruction error against Eckart-Young's
// optimum, both sketch routes of the randomized SVD, and the adaptive SVD's
// energy guarantee. Matrices are float32, so values agree to ~1e-6 of the
// largest singular value, not to double precision.
#include <Eigen/Dense>
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <random>
#include <string>
#include <vector>

#include "linalg/rank_policy.h"
#include "linalg/svd.h"
#include "nnet1/errors.h"
#include "unit.h"

namespace {

using svd::MatF;
using Eigen::MatrixXd;

MatrixXd random_orthonormal(int64_t rows, int64_t cols, std::mt19937& rng) {
  std::normal_distribution<double> g(0, 1);
  MatrixXd x(rows, cols);
  for (int64_t i = 0; i < rows; ++i)
    for (int64_t j = 0; j < cols; ++j) x(i, j) = g(rng);
  Eigen::HouseholderQR<MatrixXd> qr(x);
  return qr.householderQ() * MatrixXd::Identity(rows, cols);
}

// m x n float matrix with singular values s (at most min(m, n) of them).
MatF with_spectrum(int64_t m, int64_t n, const std::vector<double>& s, uint32_t seed) {
  std::mt19937 rng(seed);
  const int64_t r = static_cast<int64_t>(s.size());
  const MatrixXd u = random_orthonormal(m, r, rng), v = random_orthonormal(n, r, rng);
  Eigen::VectorXd sv(r);
  for (int64_t i = 0; i < r; ++i) sv(i) = s[static_cast<size_t>(i)];
  return (u * sv.asDiagonal() * v.transpose()).cast<float>();
}

std::vector<double> geometric(int64_t r, double first, double ratio) {
  std::vector<double> s(static_cast<size_t>(r));
  for (int64_t i = 0; i < r; ++i) s[static_cast<size_t>(i)] = first * std::pow(ratio, static_cast<double>(i));
  return s;
}

// The energy of s[from:].
double sum_sq(const std::vector<double>& s, int64_t from = 0) {
  double t = 0;
  for (size_t i = static_cast<size_t>(from); i < s.size(); ++i) t += s[i] * s[i];
  return t;
}

// Largest |X^T X - I| entry: columns' departure from orthonormality.
double orthonormality_error(const MatrixXd& x) {
  return (x.transpose() * x - MatrixXd::Identity(x.cols(), x.cols())).cwiseAbs().maxCoeff();
}

// ||A - U diag(s) Vt||_F^2 in double.
double residual_sq(const MatF& a, const svd::SvdResult& r) {
  const int64_t k = static_cast<int64_t>(r.s.size());
  Eigen::VectorXd s(k);
  for (int64_t i = 0; i < k; ++i) s(i) = r.s[static_cast<size_t>(i)];
  const MatrixXd approx = r.u.cast<double>() * s.asDiagonal() * r.vt.cast<double>();
  return (a.cast<double>() - approx).squaredNorm();
}

void check_factors(const MatF& a, const svd::SvdResult& r, int64_t k, double tol) {
  CHECK_EQ(static_cast<int64_t>(r.s.size()), k);
  CHECK_EQ(static_cast<int64_t>(r.u.rows()), static_cast<int64_t>(a.rows()));
  CHECK_EQ(static_cast<int64_t>(r.u.cols()), k);
  CHECK_EQ(static_cast<int64_t>(r.vt.rows()), k);
  CHECK_EQ(static_cast<int64_t>(r.vt.cols()), static_cast<int64_t>(a.cols()));
  CHECK(std::is_sorted(r.s.rbegin(), r.s.rend()));
  if (k == 0) return;
  CHECK_MSG(orthonormality_error(r.u.cast<double>()) <= tol, "U^T U - I: " << orthonormality_error(r.u.cast<double>()));
  CHECK_MSG(orthonormality_error(r.vt.transpose().cast<double>()) <= tol,
            "Vt Vt^T - I: " << orthonormality_error(r.vt.transpose().cast<double>()));
}

}  // namespace

// Largest entry of Y's columns outside span(Q), over the largest |Y| entry
// (Q need not be orthonormal: its span's basis comes from a float64 QR).
double outside_span(const MatrixXd& y, const MatrixXd& q) {
  const MatrixXd b = Eigen::HouseholderQR<MatrixXd>(q).householderQ() * MatrixXd::Identity(q.rows(), q.cols());
  return (y - b * (b.transpose() * y)).cwiseAbs().maxCoeff() / y.cwiseAbs().maxCoeff();
}

// Kahan's upper triangular matrix: diagonal s^i, above it -c s^i (s^2 + c^2 = 1).
// Its diagonal hides its condition (ratio s^(n-1); the condition grows like
// (1 + c)^n): Cholesky QR's refusal test cannot see it.
MatrixXd kahan(int64_t n, double theta) {
  const double s = std::sin(theta), c = std::cos(theta);
  MatrixXd r = MatrixXd::Zero(n, n);
  for (int64_t i = 0; i < n; ++i) {
    r(i, i) = std::pow(s, static_cast<double>(i));
    for (int64_t j = i + 1; j < n; ++j) r(i, j) = -c * std::pow(s, static_cast<double>(i));
  }
  return r;
}

TEST_CASE(orthonormalize_takes_the_path_the_condition_allows) {
  const int64_t m = 500, l = 40;
  std::mt19937 rng(11);
  const MatrixXd q0 = random_orthonormal(m, l, rng), w = random_orthonormal(l, l, rng);
  struct Case {
    double cond;
    bool full, squared;
    svd::OrthPath path;
  };
  const Case cases[] = {
      {10, false, false, svd::OrthPath::OnePass},
      {10, true, false, svd::OrthPath::TwoPasses},
      {1e4, true, false, svd::OrthPath::TwoPasses},  // the float Gram refuses, the double one takes it
      {1e4, false, true, svd::OrthPath::OnePass},
      {1e4, true, true, svd::OrthPath::TwoPasses},
      {1e7, true, true, svd::OrthPath::Householder},
      {1e7, true, false, svd::OrthPath::Householder},
  };
  for (const Case& c : cases) {
    Eigen::VectorXd sv(l);
    for (int64_t i = 0; i < l; ++i) sv(i) = std::pow(c.cond, -static_cast<double>(i) / (l - 1));
    const MatF y = (q0 * sv.asDiagonal() * w.transpose()).cast<float>();
    MatF q = y;
    const svd::OrthPath path = svd::orthonormalize(q.data(), m, l, c.full, c.squared);
    CHECK_MSG(path == c.path, "cond " << c.cond << " full " << c.full << " squared " << c.squared << ": path "
                                      << static_cast<int>(path));
    const MatrixXd qd = q.cast<double>(), yd = y.cast<double>();
    CHECK_MSG(outside_span(yd, qd) <= 1e-5, "cond " << c.cond << ": outside the span " << outside_span(yd, qd));
    if (c.full) CHECK_MSG(orthonormality_error(qd) <= 1e-5, "cond " << c.cond << ": " << orthonormality_error(qd));
  }
  // A squared iterate whose R diagonal looks tame (ratio 1e4, accepted) but
  // whose condition is far larger: the first pass leaves it far from
  // orthonormal; the second pass, or Householder where that pass is refused,
  // still ends with an orthonormal basis of Y's span.
  const double theta = std::asin(std::pow(1e-4, 1.0 / (l - 1)));
  const MatF y = (q0 * kahan(l, theta)).cast<float>();
  MatF q = y;
  svd::orthonormalize(q.data(), m, l, true, true);
  CHECK_MSG(orthonormality_error(q.cast<double>()) <= 1e-5, "Kahan: " << orthonormality_error(q.cast<double>()));
  CHECK_MSG(outside_span(y.cast<double>(), q.cast<double>()) <= 1e-5, "Kahan: outside the span");
}

TEST_CASE(randomized_svd_routes_agree_on_tall_and_wide) {
  // The Gram route factors A^T's projection for tall A and A's for wide A;
  // both routes give orthonormal factors, the same values and the same error.
  std::vector<double> s(120);
  for (size_t i = 0; i < s.size(); ++i) s[i] = 3.0 / (1.0 + 0.1 * static_cast<double>(i));
  for (auto shape : {std::pair<int64_t, int64_t>{400, 150}, {150, 400}}) {
    const MatF a = with_spectrum(shape.first, shape.second, s, 8);
    const int64_t k = 30;
    svd::SvdResult r[2];
    int i = 0;
    for (svd::SketchRoute route : {svd::SketchRoute::Direct, svd::SketchRoute::Gram}) {
      svd::RandomizedOptions opt;
      opt.route = route;
      opt.seed = 5;
      r[i] = svd::randomized_svd(a.data(), a.rows(), a.cols(), k, opt);
      check_factors(a, r[i], k, 1e-5);
      CHECK_MSG(residual_sq(a, r[i]) <= sum_sq(s, k) * 1.01, "route " << r[i].route);
      ++i;
    }
    for (int64_t j = 0; j < k; ++j)
      CHECK_NEAR(r[0].s[static_cast<size_t>(j)], r[1].s[static_cast<size_t>(j)], 1e-3 * s[0]);
  }
}

TEST_CASE(exact_svd_recovers_a_known_spectrum) {
  const std::vector<double> s{10, 7, 5, 3, 2, 1, 0.5, 0.25, 0.1, 0.01};
  for (auto shape : {std::pair<int64_t, int64_t>{60, 40}, {25, 70}}) {
    const MatF a = with_spectrum(shape.first, shape.second, s, 1);
    for (int64_t k : {int64_t{0}, int64_t{1}, int64_t{4}, int64_t{10}, std::min(shape.first, shape.second)}) {
      const svd::SvdResult r = svd::exact_svd(a.data(), a.rows(), a.cols(), k);
      check_factors(a, r, k, 1e-5);
      for (int64_t i = 0; i < k; ++i)
        CHECK_NEAR(r.s[static_cast<size_t>(i)], i < 10 ? s[static_cast<size_t>(i)] : 0.0, 1e-5 * s[0]);
      CHECK_NEAR(r.total_energy, sum_sq(s), 1e-6 * sum_sq(s));
      // Eckart-Young: the error is the energy of the values left out.
      CHECK_NEAR(residual_sq(a, r), sum_sq(s, k), 1e-5 * sum_sq(s));
    }
  }
  std::vector<float> none;
  bool threw = false;
  try {
    svd::exact_svd(none.data(), 3, 0, 1);
  } catch (const svd::Error&) {
    threw = true;
  }
  CHECK(threw);  // rank 1 of a 3 x 0 matrix
}

TEST_CASE(singular_values_of_a_known_spectrum) {
  // Rank 12 in 50 x 30 and 30 x 50: the rest are zeros.
  const std::vector<double> s = geometric(12, 4.0, 0.6);
  for (auto shape : {std::pair<int64_t, int64_t>{50, 30}, {30, 50}}) {
    const MatF a = with_spectrum(shape.first, shape.second, s, 2);
    const std::vector<double> got = svd::singular_values(a.data(), a.rows(), a.cols());
    CHECK_EQ(got.size(), size_t{30});
    for (size_t i = 0; i < got.size(); ++i) CHECK_NEAR(got[i], i < s.size() ? s[i] : 0.0, 1e-5 * s[0]);
  }
  CHECK(svd::singular_values(nullptr, 4, 0) == std::vector<double>{});
}

TEST_CASE(randomized_svd_fast_decay_is_exact) {
  // Decay 0.7 per value: the oversampled sketch holds the top k to float precision.
  const std::vector<double> s = geometric(100, 5.0, 0.7);
  const MatF a = with_spectrum(300, 200, s, 3);
  for (svd::SketchRoute route : {svd::SketchRoute::Direct, svd::SketchRoute::Gram}) {
    svd::RandomizedOptions opt;
    opt.route = route;
    opt.seed = 7;
    const int64_t k = 12;
    const svd::SvdResult r = svd::randomized_svd(a.data(), a.rows(), a.cols(), k, opt);
    CHECK_EQ(std::string(r.route), route == svd::SketchRoute::Gram ? "gram" : "direct");
    CHECK_EQ(r.sketch, k + svd::default_oversamples(k));
    check_factors(a, r, k, 1e-5);
    for (int64_t i = 0; i < k; ++i) CHECK_NEAR(r.s[static_cast<size_t>(i)], s[static_cast<size_t>(i)], 1e-5 * s[0]);
    CHECK_NEAR(residual_sq(a, r), sum_sq(s, k), 1e-5 * sum_sq(s));
  }
}

TEST_CASE(randomized_svd_slow_decay_near_optimal) {
  // s_i = (i + 1)^-1/2: a flat spectrum, the hard case. The defaults (2 power
  // iterations, oversampling max(32, k/4)) keep the error within 1% of optimal
  // (measured: 1.00005x at k = 10, 1.0023x at k = 40).
  std::vector<double> s(200);
  for (size_t i = 0; i < s.size(); ++i) s[i] = 1.0 / std::sqrt(1.0 + static_cast<double>(i));
  const MatF a = with_spectrum(400, 300, s, 4);
  for (int64_t k : {int64_t{10}, int64_t{40}}) {
    svd::RandomizedOptions opt;
    opt.seed = 1;
    const svd::SvdResult r = svd::randomized_svd(a.data(), a.rows(), a.cols(), k, opt);
    check_factors(a, r, k, 1e-5);
    const double optimum = sum_sq(s, k);
    const double err = residual_sq(a, r);
    CHECK_MSG(err >= optimum * (1 - 1e-5), "error " << err << " below the optimum " << optimum);
    CHECK_MSG(err <= optimum * 1.01, "error " << err << " vs optimum " << optimum);
    // Each value is at most the true one (a projection cannot add energy).
    for (int64_t i = 0; i < k; ++i) CHECK(r.s[static_cast<size_t>(i)] <= s[static_cast<size_t>(i)] * (1 + 1e-5));
  }
}

TEST_CASE(randomized_svd_seed_decides_the_result) {
  const MatF a = with_spectrum(80, 60, geometric(40, 1.0, 0.9), 5);
  svd::RandomizedOptions opt;
  opt.seed = 3;
  const svd::SvdResult r1 = svd::randomized_svd(a.data(), a.rows(), a.cols(), 8, opt);
  const svd::SvdResult r2 = svd::randomized_svd(a.data(), a.rows(), a.cols(), 8, opt);
  CHECK(r1.s == r2.s && r1.u == r2.u && r1.vt == r2.vt);
  opt.seed = 4;
  const svd::SvdResult r3 = svd::randomized_svd(a.data(), a.rows(), a.cols(), 8, opt);
  CHECK(r1.u != r3.u);
  const svd::SvdResult r0 = svd::randomized_svd(a.data(), a.rows(), a.cols(), 0, opt);
  check_factors(a, r0, 0, 0);
}

TEST_CASE(adaptive_energy_svd_meets_its_target) {
  const std::vector<double> s = geometric(150, 3.0, 0.95);
  const MatF a = with_spectrum(260, 180, s, 6);
  const MatrixXd ad = a.cast<double>();
  // The float matrix's own spectrum: the smallest rank that can reach a target.
  const svd::SvdResult exact = svd::exact_svd(a.data(), a.rows(), a.cols(), 180);
  for (double energy : {0.3, 0.5, 0.9, 0.99, 0.999}) {
    svd::RandomizedOptions opt;
    opt.seed = 2;
    const svd::SvdResult r = svd::adaptive_energy_svd(a.data(), a.rows(), a.cols(), energy, opt);
    const int64_t k = static_cast<int64_t>(r.s.size());
    check_factors(a, r, k, 1e-5);
    // The guarantee: the factors' projection keeps at least `energy`, measured
    // here from U and A alone.
    const double kept = (r.u.cast<double>().transpose() * ad).squaredNorm();
    CHECK_MSG(kept >= energy * r.total_energy * (1 - 1e-6), "energy " << energy << ": kept " << kept / r.total_energy);
    CHECK_NEAR(sum_sq(r.s), kept, 1e-5 * r.total_energy);
    // No rank-k projection keeps more than the top k values (Eckart-Young), so
    // k is at least the optimal rank; on this spectrum it is at most one more.
    const int64_t best = svd::energy_rank(exact.s, energy, exact.total_energy);
    CHECK_MSG(k >= best && k <= best + 1, "energy " << energy << ": rank " << k << ", optimal " << best);
  }
  svd::RandomizedOptions opt;
  CHECK_EQ(svd::adaptive_energy_svd(a.data(), a.rows(), a.cols(), 0.0, opt).s.size(), size_t{0});
  bool threw = false;
  try {
    svd::adaptive_energy_svd(a.data(), a.rows(), a.cols(), 1.5, opt);
  } catch (const svd::Error&) {
    threw = true;
  }
  CHECK(threw);
}

TEST_CASE(adaptive_energy_svd_full_energy_of_a_low_rank_matrix) {
  // Rank 20: all the energy needs exactly 20 values, not every column.
  const std::vector<double> s = geometric(20, 2.0, 0.8);
  const MatF a = with_spectrum(120, 90, s, 7);
  svd::RandomizedOptions opt;
  const svd::SvdResult r = svd::adaptive_energy_svd(a.data(), a.rows(), a.cols(), 1.0, opt);
  CHECK_EQ(static_cast<int64_t>(r.s.size()), 20);
  check_factors(a, r, 20, 1e-5);
  CHECK_NEAR(residual_sq(a, r), 0.0, 1e-5 * sum_sq(s));
}
