// The few BLAS/LAPACK calls the core needs, on row-major float/double data,
// through the scipy-openblas32 library (the same OpenBLAS numpy ships: runtime
// CPU dispatch, so a portable build still gets AVX2/AVX-512 kernels).
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace svd {
namespace blas {

// C = alpha * op(A) * op(B) + beta * C, row-major; op(A) is m x k, op(B) k x n.
void sgemm(bool trans_a, bool trans_b, int64_t m, int64_t n, int64_t k, float alpha, const float* a,
           int64_t lda, const float* b, int64_t ldb, float beta, float* c, int64_t ldc);

// The upper triangle of A^T A (n x n; `rows`: of A A^T, m x m), in float.
void gram_float_upper(const float* a, int64_t m, int64_t n, bool rows, float* g);
// C = G B for a symmetric G (d x d, upper triangle read) and row-major B (d x l).
void symm_upper(const float* g, int64_t d, const float* b, int64_t l, float* c);
// C = op(A) op(B) in double, row-major (as sgemm).
void dgemm(bool trans_a, bool trans_b, int64_t m, int64_t n, int64_t k, const double* a, int64_t lda,
           const double* b, int64_t ldb, double* c, int64_t ldc);
// G += A^T A in double for a row-major double block (m x n).
void gram_double_acc(const double* a, int64_t m, int64_t n, double* g);

// Cholesky of a symmetric positive definite double matrix (upper, in place).
bool cholesky_upper(double* g, int64_t n);
// Y <- Y R^{-1} for row-major Y (m x n) and upper triangular float R (n x n).
void solve_upper_right(float* y, int64_t m, int64_t n, const float* r);

// Thin QR by Householder: Y (m x n, m >= n, row-major) <- Q.
void householder_q(float* y, int64_t m, int64_t n);

// Thin SVD of a row-major double matrix (m x n): a is destroyed. u: m x r,
// s: r, vt: r x n with r = min(m, n).
void dgesdd_thin(double* a, int64_t m, int64_t n, double* u, double* s, double* vt);
// Eigenvalues (ascending) of a symmetric double matrix (destroyed).
void dsyevd_values(double* a, int64_t n, double* w);
// Eigenvalues (ascending) and eigenvectors (the columns of a, in place).
bool dsyevd_vectors(double* a, int64_t n, double* w);

// Threads OpenBLAS may use for the next calls (0 = the core's setting).
void set_threads(int n);

// Small jobs (under 1e8 flops in all) run BLAS on one thread while this lives:
// the hand-offs between threads cost more than they save.
class ThreadsForWork {
 public:
  explicit ThreadsForWork(double flops);
  ~ThreadsForWork();
  ThreadsForWork(const ThreadsForWork&) = delete;
  ThreadsForWork& operator=(const ThreadsForWork&) = delete;

 private:
  bool narrowed_;
};
std::string core_name();  // the kernel OpenBLAS picked, e.g. "Haswell"
// OpenBLAS's version, build options and the kernel in use, e.g.
// "OpenBLAS 0.3.34.481.3 DYNAMIC_ARCH NO_AFFINITY SkylakeX MAX_THREADS=64".
std::string config();
int threads_in_use();      // threads OpenBLAS runs the next call on
const char* threading();  // "pthreads", "openmp" or "sequential"

}  // namespace blas
}  // namespace svd
