// The private compiled module svdistill._core: the Bind*() calls, and the
// build facts (`svdistill --version`).
#include <pybind11/stl.h>

#include <string>
#include <vector>

#include "bindings/bindings.h"
#include "linalg/blas.h"
#include "nnet1/byte_source.h"
#include "util/cpu.h"
#include "util/threads.h"

#ifdef SVD_HAVE_ZLIB
#include <zlib.h>
#endif

namespace {

namespace py = pybind11;

std::string compiler() {
#if defined(__clang__)
  std::string v = __clang_version__;  // "17.0.6 (...)": the version and the vendor's build
  while (!v.empty() && v.back() == ' ') v.pop_back();
  return "Clang " + v;
#elif defined(__GNUC__)
  return std::string("GCC ") + __VERSION__;
#elif defined(_MSC_VER)
  return "MSVC " + std::to_string(_MSC_FULL_VER);
#else
  return "unknown";
#endif
}

std::string cxx_standard() {
  const long v = __cplusplus;  // 201703L, 202002L, ...
  const long year = v / 100 % 100;
  return v > 202002L && v < 202302L ? "C++23 (draft)" : "C++" + std::to_string(year);
}

py::dict build_info() {
  py::dict d;
  d["compiler"] = compiler();
  d["cxx_standard"] = cxx_standard();
#ifdef SVD_BUILD_TYPE
  d["build_type"] = std::string(SVD_BUILD_TYPE).empty() ? "none" : SVD_BUILD_TYPE;
#else
  d["build_type"] = "unknown";
#endif
  d["threads"] = svd::num_threads();
  d["blas"] = "OpenBLAS (scipy-openblas32)";
  d["blas_config"] = svd::blas::config();
  d["blas_corename"] = svd::blas::core_name();
  d["blas_threads"] = svd::blas::threads_in_use();
  d["blas_threading"] = svd::blas::threading();
  d["zlib"] = svd::have_zlib();
#ifdef SVD_HAVE_ZLIB
  d["zlib_version"] = std::string(zlibVersion());
#else
  d["zlib_version"] = py::none();
#endif
#if defined(__x86_64__) || defined(_M_X64)
  d["arch"] = "x86_64";
#elif defined(__aarch64__) || defined(_M_ARM64)
  d["arch"] = "aarch64";
#else
  d["arch"] = "other";
#endif
  const svd::SimdFacts f = svd::simd_facts();
  std::vector<std::string> built{svd::simd_level_name(svd::SimdLevel::Baseline)};
  if (f.compiled_v3) built.push_back(svd::simd_level_name(svd::SimdLevel::X86_64_V3));
  d["simd"] = svd::simd_level_name(f.level);  // the paths every dispatch site takes
  d["simd_built"] = built;
  d["simd_forced_portable"] = f.forced_portable;  // by SVDISTILL_PORTABLE
  d["cpu_x86_64_v3"] = f.cpu_v3;
  d["cpu_avx512f"] = f.cpu_avx512f;  // no path of the core uses AVX-512
  return d;
}

}  // namespace

PYBIND11_MODULE(_core, m) {
  m.doc() = "svdistill's C++ core (private: use the svdistill package)";
  svd_py::BindErrors(m);
  svd_py::BindComponent(m);
  svd_py::BindIo(m);
  svd_py::BindLinalg(m);
  svd_py::BindNetwork(m);
  svd_py::BindTrainer(m);
  svd_py::BindCalibration(m);
  svd_py::BindCompress(m);
  svd_py::BindStats(m);
  svd_py::BindEnsemble(m);
  m.attr("have_zlib") = svd::have_zlib();
  // The SIMD paths are decided here, at import, not at the first parse or
  // forward pass: SVDISTILL_PORTABLE set later in the process has no effect.
  svd::simd_level();
  m.def("build_info", &build_info,
        "The core's build facts: compiler, C++ standard, build type, BLAS (its build, the kernel "
        "it picked, its threads), the core's threads, zlib, and the SIMD paths in use.");
}
