#include "linalg/blas.h"

#include <cblas.h>
#include <lapacke.h>

#include <cmath>

#include "nnet1/errors.h"
#include "util/threads.h"

namespace svd {
namespace blas {
namespace {

void check_dims(int64_t v) {
  if (v > 0x7fffffff) throw Error("matrix dimension exceeds the 32-bit BLAS interface");
}

}  // namespace

void set_threads(int n) { scipy_openblas_set_num_threads(n > 0 ? n : num_threads()); }

ThreadsForWork::ThreadsForWork(double flops) : narrowed_(flops < 1e8 && num_threads() > 1) {
  if (narrowed_) set_threads(1);
}

ThreadsForWork::~ThreadsForWork() {
  if (narrowed_) set_threads(0);
}

std::string core_name() {
  const char* c = scipy_openblas_get_corename();
  return c ? c : "unknown";
}

std::string config() {
  const char* c = scipy_openblas_get_config();
  return c ? c : "unknown";
}

int threads_in_use() { return scipy_openblas_get_num_threads(); }

const char* threading() {
  switch (scipy_openblas_get_parallel()) {
    case 0: return "sequential";
    case 1: return "pthreads";
    case 2: return "openmp";
    default: return "unknown";
  }
}

void sgemm(bool trans_a, bool trans_b, int64_t m, int64_t n, int64_t k, float alpha, const float* a,
           int64_t lda, const float* b, int64_t ldb, float beta, float* c, int64_t ldc) {
  for (int64_t v : {m, n, k, lda, ldb, ldc}) check_dims(v);
  if (m == 0 || n == 0) return;
  scipy_cblas_sgemm(CblasRowMajor, trans_a ? CblasTrans : CblasNoTrans, trans_b ? CblasTrans : CblasNoTrans,
                    static_cast<blasint>(m), static_cast<blasint>(n), static_cast<blasint>(k), alpha, a,
                    static_cast<blasint>(lda), b, static_cast<blasint>(ldb), beta, c,
                    static_cast<blasint>(ldc));
}

void dgemm(bool trans_a, bool trans_b, int64_t m, int64_t n, int64_t k, const double* a, int64_t lda,
           const double* b, int64_t ldb, double* c, int64_t ldc) {
  for (int64_t v : {m, n, k, lda, ldb, ldc}) check_dims(v);
  if (m == 0 || n == 0) return;
  scipy_cblas_dgemm(CblasRowMajor, trans_a ? CblasTrans : CblasNoTrans, trans_b ? CblasTrans : CblasNoTrans,
                    static_cast<blasint>(m), static_cast<blasint>(n), static_cast<blasint>(k), 1.0, a,
                    static_cast<blasint>(lda), b, static_cast<blasint>(ldb), 0.0, c, static_cast<blasint>(ldc));
}

void gram_float_upper(const float* a, int64_t m, int64_t n, bool rows, float* g) {
  check_dims(m);
  check_dims(n);
  const int64_t d = rows ? m : n;
  scipy_cblas_ssyrk(CblasRowMajor, CblasUpper, rows ? CblasNoTrans : CblasTrans, static_cast<blasint>(d),
                    static_cast<blasint>(rows ? n : m), 1.f, a, static_cast<blasint>(n), 0.f, g,
                    static_cast<blasint>(d));
}

void symm_upper(const float* g, int64_t d, const float* b, int64_t l, float* c) {
  check_dims(d);
  check_dims(l);
  scipy_cblas_ssymm(CblasRowMajor, CblasLeft, CblasUpper, static_cast<blasint>(d), static_cast<blasint>(l), 1.f,
                    g, static_cast<blasint>(d), b, static_cast<blasint>(l), 0.f, c, static_cast<blasint>(l));
}

void gram_double_acc(const double* a, int64_t m, int64_t n, double* g) {
  check_dims(m);
  check_dims(n);
  scipy_cblas_dsyrk(CblasRowMajor, CblasUpper, CblasTrans, static_cast<blasint>(n),
                    static_cast<blasint>(m), 1.0, a, static_cast<blasint>(n), 1.0, g,
                    static_cast<blasint>(n));
}

bool cholesky_upper(double* g, int64_t n) {
  ThreadsForWork one(0);  // small LAPACK calls run faster on one thread here
  return scipy_LAPACKE_dpotrf(LAPACK_ROW_MAJOR, 'U', static_cast<lapack_int>(n), g,
                              static_cast<lapack_int>(n)) == 0;
}

void solve_upper_right(float* y, int64_t m, int64_t n, const float* r) {
  scipy_cblas_strsm(CblasRowMajor, CblasRight, CblasUpper, CblasNoTrans, CblasNonUnit,
                    static_cast<blasint>(m), static_cast<blasint>(n), 1.f, r, static_cast<blasint>(n), y,
                    static_cast<blasint>(n));
}

void householder_q(float* y, int64_t m, int64_t n) {
  check_dims(m);
  std::vector<float> tau(static_cast<size_t>(n));
  ThreadsForWork one(0);  // small LAPACK calls run faster on one thread here
  lapack_int info = scipy_LAPACKE_sgeqrf(LAPACK_ROW_MAJOR, static_cast<lapack_int>(m),
                                         static_cast<lapack_int>(n), y, static_cast<lapack_int>(n), tau.data());
  if (info == 0)
    info = scipy_LAPACKE_sorgqr(LAPACK_ROW_MAJOR, static_cast<lapack_int>(m), static_cast<lapack_int>(n),
                                static_cast<lapack_int>(n), y, static_cast<lapack_int>(n), tau.data());
  if (info != 0) throw Error("QR factorisation failed (LAPACK info " + std::to_string(info) + ")");
}

void dgesdd_thin(double* a, int64_t m, int64_t n, double* u, double* s, double* vt) {
  check_dims(m);
  check_dims(n);
  ThreadsForWork one(0);  // small LAPACK calls run faster on one thread here
  const int64_t r = std::min(m, n);
  lapack_int info = scipy_LAPACKE_dgesdd(LAPACK_ROW_MAJOR, 'S', static_cast<lapack_int>(m),
                                         static_cast<lapack_int>(n), a, static_cast<lapack_int>(n), s, u,
                                         static_cast<lapack_int>(r), vt, static_cast<lapack_int>(n));
  if (info != 0) throw Error("SVD did not converge (LAPACK dgesdd info " + std::to_string(info) + ")");
}

void dsyevd_values(double* a, int64_t n, double* w) {
  check_dims(n);
  lapack_int info = scipy_LAPACKE_dsyevd(LAPACK_ROW_MAJOR, 'N', 'U', static_cast<lapack_int>(n), a,
                                         static_cast<lapack_int>(n), w);
  if (info != 0) throw Error("eigenvalue solver failed (LAPACK dsyevd info " + std::to_string(info) + ")");
}

bool dsyevd_vectors(double* a, int64_t n, double* w) {
  check_dims(n);
  ThreadsForWork threads(10.0 * n * n * n);  // both cores pay from n of about 400 on
  return scipy_LAPACKE_dsyevd(LAPACK_ROW_MAJOR, 'V', 'U', static_cast<lapack_int>(n), a,
                              static_cast<lapack_int>(n), w) == 0;
}

}  // namespace blas
}  // namespace svd
