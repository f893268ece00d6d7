#include "linalg/svd.h"

#include <algorithm>
#include <cmath>

#include "linalg/blas.h"
#include "nnet1/errors.h"
#include "util/threads.h"

namespace svd {
namespace {

// Makes each singular pair's sign deterministic (the largest |entry| of each
// column of U is positive), as sklearn's svd_flip: runs that differ only by
// rounding (e.g. another thread count) then agree up to rounding.
void fix_signs(MatF& u, MatF& vt) {
  const int64_t m = u.rows(), k = u.cols();
  std::vector<float> best(static_cast<size_t>(k), -1.f);
  std::vector<char> flip(static_cast<size_t>(k), 0);
  for (int64_t i = 0; i < m; ++i) {  // row by row: U is row-major
    const float* row = u.data() + i * k;
    for (int64_t j = 0; j < k; ++j) {
      const float a = std::fabs(row[j]);
      if (a > best[j]) {
        best[j] = a;
        flip[j] = row[j] < 0;
      }
    }
  }
  for (int64_t i = 0; i < m; ++i) {
    float* row = u.data() + i * k;
    for (int64_t j = 0; j < k; ++j)
      if (flip[j]) row[j] = -row[j];
  }
  for (int64_t j = 0; j < k; ++j)
    if (flip[j]) vt.row(j) *= -1.f;
}

// One Cholesky-QR pass: Y <- Y R^{-1} with R from the Gram matrix Y^T Y.
// BLAS-3 only, so much faster than Householder on tall-skinny blocks. The
// Gram matrix is formed in float (cheap; fine up to a condition number of
// about 1e3) or in double from Y's exact values (fine up to about 1e5, as for
// iterates of A^T A, whose condition is squared); refused beyond that.
bool cholqr_pass(float* y, int64_t m, int64_t l, bool in_double) {
  std::vector<double> g(static_cast<size_t>(l * l), 0.0);  // upper triangle used
  if (in_double) {
    MatD yd = Eigen::Map<const MatF>(y, m, l).cast<double>();
    blas::gram_double_acc(yd.data(), m, l, g.data());
  } else {
    std::vector<float> gf(static_cast<size_t>(l * l));
    blas::gram_float_upper(y, m, l, /*rows=*/false, gf.data());
    std::copy(gf.begin(), gf.end(), g.begin());
  }
  if (!blas::cholesky_upper(g.data(), l)) return false;
  double dmax = 0, dmin = INFINITY;
  for (int64_t i = 0; i < l; ++i) {
    dmax = std::max(dmax, std::fabs(g[i * l + i]));
    dmin = std::min(dmin, std::fabs(g[i * l + i]));
  }
  if (!(dmin > (in_double ? 1e-5 : 1e-3) * dmax)) return false;
  std::vector<float> r(static_cast<size_t>(l * l), 0.f);
  for (int64_t i = 0; i < l; ++i)
    for (int64_t j = i; j < l; ++j) r[i * l + j] = static_cast<float>(g[i * l + j]);
  blas::solve_upper_right(y, m, l, r.data());
  return true;
}

}  // namespace

OrthPath orthonormalize(float* y, int64_t m, int64_t l, bool full, bool squared) {
  const bool first = (!squared && cholqr_pass(y, m, l, false)) || cholqr_pass(y, m, l, true);
  if (first && !full) return OrthPath::OnePass;
  if (first && cholqr_pass(y, m, l, false)) return OrthPath::TwoPasses;
  blas::householder_q(y, m, l);
  return OrthPath::Householder;
}

namespace {

uint64_t splitmix64(uint64_t& x) {
  uint64_t z = (x += 0x9E3779B97F4A7C15ULL);
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL;
  return z ^ (z >> 31);
}

// Standard normal entries (Box-Muller). Each row has its own stream derived
// from (seed, row), so the sketch is the same whatever the thread count.
MatF gaussian(int64_t rows, int64_t cols, uint64_t seed) {
  MatF g(rows, cols);
  const int64_t blocks = std::max<int64_t>(1, std::min<int64_t>(num_threads(), rows / 64));
  parallel_for(blocks, [&](int64_t bi) {
    for (int64_t i = rows * bi / blocks; i < rows * (bi + 1) / blocks; ++i) {
      uint64_t state = seed * 0x9E3779B97F4A7C15ULL ^ (static_cast<uint64_t>(i) + 1) * 0xD1B54A32D192ED03ULL;
      float* row = g.data() + i * cols;
      for (int64_t j = 0; j < cols; j += 2) {
        uint64_t r = splitmix64(state);
        float u1 = (static_cast<float>(r >> 40) + 0.5f) * (1.0f / 16777216.0f);  // (0, 1)
        float u2 = static_cast<float>((r >> 16) & 0xFFFFFF) * (1.0f / 16777216.0f);
        float rad = std::sqrt(-2.f * std::log(u1));
        float ang = 6.2831853071795864f * u2;
        row[j] = rad * std::cos(ang);
        if (j + 1 < cols) row[j + 1] = rad * std::sin(ang);
      }
    }
  });
  return g;
}

// SVD of the l x c block B = Q^T X in float64, given as B^T (c x l,
// row-major: the projection's GEMM writes it so, and its row blocks are then
// contiguous), with X = A or, `transposed`, X = A^T; returns factors of A.
// Fast path: eigenvectors of B B^T (l x l). In float64 the right singular
// vectors v_i = B^T u_i / s_i are accurate to ~1e-16 (s_1/s_i)^2, far below
// float32 resolution while s_keep >= 1e-4 s_1; otherwise LAPACK's gesdd.
// B^T goes to double a block of rows (a few MB) at a time: for tall or wide
// matrices a double copy of B, and of V, would be the largest buffers of
// all. With `transposed`, A = (B^T U_B S^-1) S (Q U_B)^T: both factors are
// written in A's orientation, no transposed copies. Signs are left to the caller.
SvdResult svd_of_projection(const MatF& q, const MatF& bt, int64_t keep, double total, bool transposed) {
  const int64_t l = bt.cols(), c = bt.rows(), d = q.rows();
  const int64_t r = std::min(l, c);
  keep = std::min(keep, r);
  const int64_t cb = std::max<int64_t>(64, (4 << 20) / (8 * std::max<int64_t>(l, 1)));
  auto rows = [&](int64_t c0, int64_t w) -> MatD {  // B^T's rows c0..c0+w in double
    return bt.middleRows(c0, w).cast<double>();
  };
  SvdResult res;
  res.total_energy = total;
  res.sketch = l;
  MatF& far = transposed ? res.u : res.vt;  // the factor on X's side: from B
  MatD ub;                                  // l x keep: U_B
  if (l <= c && keep > 0) {
    MatD g = MatD::Zero(l, l);  // upper triangle of B B^T
    for (int64_t c0 = 0; c0 < c; c0 += cb) {
      const int64_t w = std::min(cb, c - c0);
      MatD blk = rows(c0, w);
      blas::gram_double_acc(blk.data(), w, l, g.data());
    }
    std::vector<double> ev(static_cast<size_t>(l));
    if (blas::dsyevd_vectors(g.data(), l, ev.data())) {
      // Ascending eigenpairs: the last `keep` columns, reversed.
      const double top = std::sqrt(std::max(ev[l - 1], 0.0));
      const double low = std::sqrt(std::max(ev[l - keep], 0.0));
      if (top > 0 && low >= 1e-4 * top) {
        ub.resize(l, keep);
        res.s.resize(static_cast<size_t>(keep));
        for (int64_t j = 0; j < keep; ++j) {
          res.s[j] = std::sqrt(std::max(ev[l - 1 - j], 0.0));
          ub.col(j) = g.col(l - 1 - j);
        }
        if (transposed) far.resize(c, keep);
        else far.resize(keep, c);
        std::vector<double> inv(static_cast<size_t>(keep));
        for (int64_t j = 0; j < keep; ++j) inv[j] = 1.0 / res.s[j];
        std::vector<double> part(static_cast<size_t>(keep * std::min(cb, c)));
        for (int64_t c0 = 0; c0 < c; c0 += cb) {
          const int64_t w = std::min(cb, c - c0);
          MatD blk = rows(c0, w);
          if (transposed) {  // rows c0.. of B^T U_B S^-1
            blas::dgemm(false, false, w, keep, l, blk.data(), l, ub.data(), keep, part.data(), keep);
            for (int64_t i = 0; i < w; ++i) {
              const double* pr = part.data() + i * keep;
              float* fr = far.data() + (c0 + i) * keep;
              for (int64_t j = 0; j < keep; ++j) fr[j] = static_cast<float>(pr[j] * inv[j]);
            }
          } else {  // columns c0.. of S^-1 U_B^T B
            blas::dgemm(true, true, keep, w, l, ub.data(), keep, blk.data(), l, part.data(), w);
            for (int64_t j = 0; j < keep; ++j) {
              const double* pr = part.data() + j * w;
              float* fr = far.data() + j * c + c0;
              for (int64_t i = 0; i < w; ++i) fr[i] = static_cast<float>(pr[i] * inv[j]);
            }
          }
        }
      }
    }
  }
  if (ub.size() == 0 && keep > 0) {
    MatD bd = bt.transpose().cast<double>();
    MatD u(l, r), vt(r, c);
    res.s.assign(static_cast<size_t>(r), 0.0);
    blas::dgesdd_thin(bd.data(), l, c, u.data(), res.s.data(), vt.data());
    ub = u.leftCols(keep);
    if (transposed) far = vt.topRows(keep).transpose().cast<float>();
    else far = vt.topRows(keep).cast<float>();
    res.s.resize(static_cast<size_t>(keep));
  }
  if (keep == 0) {
    ub.resize(l, 0);
    if (transposed) far.resize(c, 0);
    else far.resize(0, c);
  }
  MatF ubk = ub.cast<float>();
  if (transposed) {  // (Q U_B)^T = U_B^T Q^T
    res.vt.resize(keep, d);
    blas::sgemm(true, true, keep, d, l, 1.f, ubk.data(), keep, q.data(), l, 0.f, res.vt.data(), d);
  } else {
    res.u.resize(d, keep);
    blas::sgemm(false, false, d, keep, l, 1.f, q.data(), l, ubk.data(), keep, 0.f, res.u.data(), keep);
  }
  return res;
}

// Randomized factorisations of one matrix with sketches of any width l. Two
// ways to run q power iterations, picked by their flop count:
//  - on A itself (Halko et al.'s subspace iteration): Y = A Omega, then q
//    times Y = A orth(A^T orth(Y)), and the projection Q^T A with Q = orth(Y):
//    2q + 2 products with A;
//  - on the Gram matrix of the smaller side (G = A A^T or A^T A, d x d, one
//    syrk): Z = orth(G Z) q + 1 times, then the projection of A on Z: the
//    products cost d/m (or d/n) of those with A, so tall or wide matrices
//    and wide sketches gain. One more iteration than asked keeps its error at
//    or below the first way's (float32 G loses nothing measurable: the
//    subspace matched float64's to five digits on realistic spectra).
// G is computed once and kept for further sketches (the adaptive policy).
class Sketcher {
 public:
  Sketcher(const float* a, int64_t m, int64_t n, int n_iter, uint64_t seed, SketchRoute route, double total)
      : a_(a), m_(m), n_(n), d_(std::min(m, n)), q_(n_iter), seed_(seed), route_(route), total_(total) {}

  SvdResult run(int64_t l, int64_t keep) {
    l = std::min(l, d_);
    const bool gram = use_gram(l, std::min(keep, l));
    SvdResult res = gram ? via_gram(l, keep) : via_a(l, keep);
    res.route = gram ? "gram" : "direct";
    fix_signs(res.u, res.vt);
    return res;
  }

 private:
  // Flops of each way, counted as float GEMM flops (double costs twice): the
  // products with A or G, the Cholesky-QR passes (Gram matrix and triangular
  // solve; the Gram route's in double), and the small SVD of the l x c
  // projection (double Gram matrix and right factor), whose c is A's column
  // count on A and A's longer side on G. A's syrk runs at the GEMM rate.
  bool use_gram(int64_t l, int64_t keep) const {
    if (route_ != SketchRoute::Auto) return route_ == SketchRoute::Gram;
    const double m = static_cast<double>(m_), n = static_cast<double>(n_), d = static_cast<double>(d_);
    const double ll = static_cast<double>(l) * l, q = q_;
    auto small = [&](double c) { return 2 * (ll * c + 2.0 * keep * c * l); };
    const double on_a = (2 * q + 2) * 2 * m * n * l + (q + 1) * 2 * (m + n) * ll + small(n);
    const double on_g = (g_.empty() ? m * n * d : 0.0) + (q + 1) * 2 * d * d * l + 2 * m * n * l +
                        (q + 2) * 3 * d * ll + small(std::max(m, n));
    return on_g < on_a;
  }

  SvdResult via_a(int64_t l, int64_t keep) const {
    const int64_t m = m_, n = n_;
    MatF omega = gaussian(n, l, seed_);
    MatF y(m, l), z(n, l);
    blas::sgemm(false, false, m, l, n, 1.f, a_, n, omega.data(), l, 0.f, y.data(), l);
    // Intermediate iterates only need to stay well-conditioned: one Cholesky-QR
    // pass. The basis the projection uses gets a full orthonormalization.
    for (int it = 0; it < q_; ++it) {
      orthonormalize(y.data(), m, l, /*full=*/false);
      blas::sgemm(true, false, n, l, m, 1.f, a_, n, y.data(), l, 0.f, z.data(), l);
      orthonormalize(z.data(), n, l, /*full=*/false);
      blas::sgemm(false, false, m, l, n, 1.f, a_, n, z.data(), l, 0.f, y.data(), l);
    }
    orthonormalize(y.data(), m, l, /*full=*/true);
    MatF bt(n, l);  // (Y^T A)^T
    blas::sgemm(true, false, n, l, m, 1.f, a_, n, y.data(), l, 0.f, bt.data(), l);
    return svd_of_projection(y, bt, keep, total_, /*transposed=*/false);
  }

  SvdResult via_gram(int64_t l, int64_t keep) {
    const bool rows = m_ <= n_;  // G = A A^T (basis of the column space), else A^T A
    const int64_t d = d_;
    if (g_.empty()) {
      g_.resize(static_cast<size_t>(d * d));
      blas::gram_float_upper(a_, m_, n_, rows, g_.data());
    }
    MatF z = gaussian(d, l, seed_);
    MatF t(d, l);
    for (int it = 0; it <= q_; ++it) {
      blas::symm_upper(g_.data(), d, z.data(), l, t.data());
      z.swap(t);
      orthonormalize(z.data(), d, l, /*full=*/it == q_, /*squared=*/true);
    }
    if (rows) {  // A = Z (Z^T A)
      MatF bt(n_, l);  // (Z^T A)^T
      blas::sgemm(true, false, n_, l, m_, 1.f, a_, n_, z.data(), l, 0.f, bt.data(), l);
      return svd_of_projection(z, bt, keep, total_, /*transposed=*/false);
    }
    // A^T = Z (Z^T A^T), and (Z^T A^T)^T = A Z.
    MatF bt(m_, l);
    blas::sgemm(false, false, m_, l, n_, 1.f, a_, n_, z.data(), l, 0.f, bt.data(), l);
    return svd_of_projection(z, bt, keep, total_, /*transposed=*/true);
  }

  const float* a_;
  int64_t m_, n_, d_;
  int q_;
  uint64_t seed_;
  SketchRoute route_;
  double total_;
  std::vector<float> g_;  // upper triangle of the Gram matrix, once computed
};

void check_rank(int64_t k, int64_t m, int64_t n) {
  if (k < 0 || k > std::min(m, n))
    throw Error("rank " + std::to_string(k) + " is outside 0.." + std::to_string(std::min(m, n)) +
                " for a " + std::to_string(m) + "x" + std::to_string(n) + " matrix");
}

}  // namespace

double frobenius_sq(const float* a, int64_t n) {
  const int64_t chunks = std::max<int64_t>(1, std::min<int64_t>(num_threads(), n >> 16));
  std::vector<double> part(static_cast<size_t>(chunks), 0.0);
  parallel_for(chunks, [&](int64_t c) {
    const int64_t lo = n * c / chunks, hi = n * (c + 1) / chunks;
    // Eight independent sums: one would wait on each add's latency, and
    // without -ffast-math the compiler may not split it into vector lanes itself.
    double acc[8] = {0, 0, 0, 0, 0, 0, 0, 0};
    int64_t i = lo;
    for (; i + 8 <= hi; i += 8)
      for (int j = 0; j < 8; ++j) acc[j] += static_cast<double>(a[i + j]) * a[i + j];
    for (; i < hi; ++i) acc[0] += static_cast<double>(a[i]) * a[i];
    part[c] = ((acc[0] + acc[1]) + (acc[2] + acc[3])) + ((acc[4] + acc[5]) + (acc[6] + acc[7]));
  });
  double t = 0;
  for (double p : part) t += p;
  return t;
}

SvdResult exact_svd(const float* a, int64_t m, int64_t n, int64_t k) {
  check_rank(k, m, n);
  blas::ThreadsForWork threads(4.0 * m * n * std::min(m, n));
  const int64_t r = std::min(m, n);
  MatD ad = Eigen::Map<const MatF>(a, m, n).cast<double>();
  MatD u(m, r), vt(r, n);
  std::vector<double> s(static_cast<size_t>(r));
  if (r > 0) blas::dgesdd_thin(ad.data(), m, n, u.data(), s.data(), vt.data());
  SvdResult res;
  res.u = u.leftCols(k).cast<float>();
  res.vt = vt.topRows(k).cast<float>();
  fix_signs(res.u, res.vt);
  res.s.assign(s.begin(), s.begin() + k);
  res.total_energy = frobenius_sq(a, m * n);
  return res;
}

SvdResult randomized_svd(const float* a, int64_t m, int64_t n, int64_t k, const RandomizedOptions& opt) {
  check_rank(k, m, n);
  const double total = frobenius_sq(a, m * n);
  if (k == 0) {
    SvdResult res;
    res.u.resize(m, 0);
    res.vt.resize(0, n);
    res.total_energy = total;
    return res;
  }
  const int64_t p = opt.oversamples >= 0 ? opt.oversamples : default_oversamples(k);
  const int q = opt.n_iter >= 0 ? opt.n_iter : kDefaultIter;
  blas::ThreadsForWork threads(2.0 * m * n * (k + p) * (2 * q + 2));
  return Sketcher(a, m, n, q, opt.seed, opt.route, total).run(k + p, k);
}

SvdResult adaptive_energy_svd(const float* a, int64_t m, int64_t n, double energy,
                              const RandomizedOptions& opt) {
  if (!(energy >= 0 && energy <= 1)) throw Error("energy target must lie in [0, 1]");
  const double total = frobenius_sq(a, m * n);
  const int64_t r = std::min(m, n);
  const int q = opt.n_iter >= 0 ? opt.n_iter : kDefaultIter;
  int64_t l = std::min<int64_t>(r, 128);
  blas::ThreadsForWork threads(2.0 * m * n * l * (2 * q + 2));
  Sketcher sketcher(a, m, n, q, opt.seed, opt.route, total);
  for (;;) {
    const int64_t guard = opt.oversamples >= 0 ? opt.oversamples : std::max<int64_t>(16, l / 8);
    SvdResult full = sketcher.run(l, l);
    const std::vector<double>& s = full.s;
    double acc = 0;
    int64_t k = -1;
    for (size_t i = 0; i < s.size(); ++i) {
      acc += s[i] * s[i];
      if (acc >= energy * total * (1 - 1e-12)) {
        k = static_cast<int64_t>(i) + 1;
        break;
      }
    }
    if (energy == 0) k = 0;
    if ((k >= 0 && k + guard <= l) || l >= r) {
      if (k < 0) {
        // The whole spectrum and still short of E: float32 rounding of the
        // sketch (~1e-7 of the energy), as at E = 1 on a rank-deficient layer.
        // Take the rank that reaches E within that rounding, not every column.
        k = static_cast<int64_t>(s.size());
        double kept = 0;
        for (size_t i = 0; i < s.size(); ++i) {
          kept += s[i] * s[i];
          if (kept >= energy * total * (1 - 1e-6)) {
            k = static_cast<int64_t>(i) + 1;
            break;
          }
        }
      }
      full.u.conservativeResize(m, k);
      full.vt.conservativeResize(k, n);
      full.s.resize(static_cast<size_t>(k));
      return full;
    }
    l = std::min(r, 2 * l);
  }
}

std::vector<double> singular_values(const float* a, int64_t m, int64_t n) {
  // Gram matrix of the smaller side, in double, built from row blocks so the
  // double copy of the input never exists at once.
  const bool rows_side = m < n;  // then use A A^T (m x m)
  const int64_t d = rows_side ? m : n;
  if (m == 0 || n == 0) return std::vector<double>(static_cast<size_t>(d), 0.0);  // BLAS refuses ld = 0
  MatD g = MatD::Zero(d, d);
  if (!rows_side) {
    const int64_t block = std::max<int64_t>(1, (8 << 20) / std::max<int64_t>(n, 1));
    for (int64_t r0 = 0; r0 < m; r0 += block) {
      const int64_t rows = std::min(block, m - r0);
      MatD blk = Eigen::Map<const MatF>(a + r0 * n, rows, n).cast<double>();
      blas::gram_double_acc(blk.data(), rows, n, g.data());
    }
  } else {
    const int64_t block = std::max<int64_t>(1, (8 << 20) / std::max<int64_t>(m, 1));
    Eigen::Map<const MatF> am(a, m, n);
    for (int64_t c0 = 0; c0 < n; c0 += block) {
      const int64_t cols = std::min(block, n - c0);
      MatD blk = am.middleCols(c0, cols).transpose().cast<double>();
      blas::gram_double_acc(blk.data(), cols, m, g.data());
    }
  }
  for (int64_t i = 0; i < d; ++i)
    for (int64_t j = 0; j < i; ++j) g(i, j) = g(j, i);
  std::vector<double> w(static_cast<size_t>(d));
  if (d > 0) blas::dsyevd_values(g.data(), d, w.data());
  std::vector<double> s(w.rbegin(), w.rend());
  for (double& x : s) x = std::sqrt(std::max(x, 0.0));
  return s;
}

}  // namespace svd
