// A small unit-test helper for the C++ tests under CTest (CMakeLists.txt,
// SVD_BUILD_TESTS): TEST_CASE registers a function, the CHECK macros record a
// failure with its file, line and values and let the case go on, and main
// (tests/cpp/unit_main.cc) runs every case, or those named on the command
// line, and exits 1 if any check failed.
#pragma once

#include <cmath>
#include <cstdio>
#include <sstream>
#include <string>
#include <vector>

namespace unit {

struct Case {
  const char* name;
  void (*run)();
};

inline std::vector<Case>& registry() {
  static std::vector<Case> cases;
  return cases;
}

inline int& failures() {
  static int n = 0;
  return n;
}

struct Register {
  Register(const char* name, void (*run)()) { registry().push_back({name, run}); }
};

inline void fail(const char* file, int line, const std::string& what) {
  ++failures();
  std::printf("  %s:%d: FAILED %s\n", file, line, what.c_str());
}

template <class A, class B>
std::string show_pair(const char* a_expr, const char* b_expr, const A& a, const B& b) {
  std::ostringstream os;
  os.precision(17);
  os << a_expr << " == " << b_expr << "  (" << a << " vs " << b << ")";
  return os.str();
}

}  // namespace unit

#define UNIT_CAT2(a, b) a##b
#define UNIT_CAT(a, b) UNIT_CAT2(a, b)

#define TEST_CASE(name)                                               \
  static void name();                                                 \
  static const ::unit::Register UNIT_CAT(unit_register_, name)(#name, name); \
  static void name()

#define CHECK(cond)                                        \
  do {                                                     \
    if (!(cond)) ::unit::fail(__FILE__, __LINE__, #cond); \
  } while (0)

// Also prints both values (they need operator<<).
#define CHECK_EQ(a, b)                                                                 \
  do {                                                                                 \
    const auto& unit_a_ = (a);                                                         \
    const auto& unit_b_ = (b);                                                         \
    if (!(unit_a_ == unit_b_)) ::unit::fail(__FILE__, __LINE__, ::unit::show_pair(#a, #b, unit_a_, unit_b_)); \
  } while (0)

// |a - b| <= tol, both printed on failure.
#define CHECK_NEAR(a, b, tol)                                                              \
  do {                                                                                     \
    const double unit_a_ = static_cast<double>(a);                                         \
    const double unit_b_ = static_cast<double>(b);                                         \
    if (!(std::fabs(unit_a_ - unit_b_) <= static_cast<double>(tol)))                       \
      ::unit::fail(__FILE__, __LINE__, ::unit::show_pair(#a, #b, unit_a_, unit_b_) + " within " #tol); \
  } while (0)

// A check with a message built from streamed values: CHECK_MSG(x > 0, "x = " << x).
#define CHECK_MSG(cond, msg)                                  \
  do {                                                        \
    if (!(cond)) {                                            \
      std::ostringstream unit_os_;                            \
      unit_os_.precision(17);                                 \
      unit_os_ << #cond << "  (" << msg << ")";               \
      ::unit::fail(__FILE__, __LINE__, unit_os_.str());       \
    }                                                         \
  } while (0)
