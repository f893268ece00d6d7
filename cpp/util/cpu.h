// Which of the core's own SIMD code paths run. Hot kernels (nn/kernels.cc)
// and the row parser (nnet1/number_parse.cc) are compiled twice on x86-64:
// for the baseline (SSE2, what the build targets) and for x86-64-v3 (AVX2,
// FMA, BMI1/2...). simd_level() is the one decision every dispatch site asks:
// x86-64-v3 when the CPU (and the OS, for the YMM state) supports all of it,
// unless SVDISTILL_PORTABLE is set (to anything but "" or "0"), which forces
// the baseline everywhere: for bisecting a numerical difference, or getting
// the results of a machine without AVX2. Read once, at the first call.
// OpenBLAS has its own dispatch (OPENBLAS_CORETYPE), not affected by it.
//
// No AVX-512 path exists in the core: x86-64-v3 is the widest it uses.
// SVD_NO_MULTIVERSION, and any target but x86-64, build the baseline only.
//
// Header-only, so that a file with a dispatch site still builds alone (the
// number parser's checks in fuzz/ and tests/ compile number_parse.cc by
// itself); the inline functions' statics are one per program all the same.
#pragma once

#include <cstdlib>
#include <cstring>

#if (defined(__GNUC__) || defined(__clang__)) && defined(__x86_64__) && !defined(SVD_NO_MULTIVERSION)
#define SVD_HAVE_X86_64_V3 1
// Marks a function compiled for x86-64-v3; call it only when
// simd_level() == SimdLevel::X86_64_V3.
#define SVD_TARGET_X86_64_V3 __attribute__((target("arch=x86-64-v3")))
#else
#define SVD_HAVE_X86_64_V3 0
#endif

namespace svd {

enum class SimdLevel { Baseline, X86_64_V3 };

// What goes into the decision (build_info reports it).
struct SimdFacts {
  bool compiled_v3;      // the x86-64-v3 variants exist in this build
  bool cpu_v3;           // the CPU and OS support x86-64-v3
  bool cpu_avx512f;      // reported only: no path uses AVX-512
  bool forced_portable;  // SVDISTILL_PORTABLE forced the baseline
  SimdLevel level;       // what simd_level() returns
};

namespace cpu_detail {

inline bool env_forces_portable() {
  const char* v = std::getenv("SVDISTILL_PORTABLE");
  return v && *v && std::strcmp(v, "0") != 0;
}

inline SimdFacts detect() {
  SimdFacts f{};
#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
  __builtin_cpu_init();
#if defined(__GNUC__) && !defined(__clang__) && __GNUC__ >= 12
  f.cpu_v3 = __builtin_cpu_supports("x86-64-v3");  // the test GCC's own target_clones resolvers use
#else
  // The level's features that code compiled for it uses in practice (every
  // CPU with these has the rest: LZCNT, MOVBE, F16C); "avx" includes the
  // check that the OS saves the YMM registers.
  f.cpu_v3 = __builtin_cpu_supports("avx") && __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") &&
             __builtin_cpu_supports("bmi") && __builtin_cpu_supports("bmi2");
#endif
  f.cpu_avx512f = __builtin_cpu_supports("avx512f");
#endif
  f.compiled_v3 = SVD_HAVE_X86_64_V3 != 0;
  f.forced_portable = env_forces_portable();
  f.level = f.compiled_v3 && f.cpu_v3 && !f.forced_portable ? SimdLevel::X86_64_V3 : SimdLevel::Baseline;
  return f;
}

}  // namespace cpu_detail

inline const SimdFacts& simd_facts() {
  static const SimdFacts f = cpu_detail::detect();
  return f;
}

// The level every dispatch site uses (decided once).
inline SimdLevel simd_level() { return simd_facts().level; }

inline const char* simd_level_name(SimdLevel level) {
  return level == SimdLevel::X86_64_V3 ? "x86-64-v3" : "baseline";
}

}  // namespace svd
