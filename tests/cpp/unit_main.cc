// Runs the TEST_CASEs of one test program (tests/cpp/unit.h): all of them,
// or those named as arguments. Exits 1 if a check failed or a case threw,
// 2 if a named case does not exist.
#include <cstdio>
#include <cstring>
#include <exception>

#include "unit.h"

int main(int argc, char** argv) {
  int ran = 0;
  for (int a = 1; a < argc; ++a) {
    bool found = false;
    for (const unit::Case& c : unit::registry()) found = found || std::strcmp(c.name, argv[a]) == 0;
    if (!found) {
      std::printf("no test case named %s\n", argv[a]);
      return 2;
    }
  }
  for (const unit::Case& c : unit::registry()) {
    bool wanted = argc == 1;
    for (int a = 1; a < argc; ++a) wanted = wanted || std::strcmp(c.name, argv[a]) == 0;
    if (!wanted) continue;
    const int before = unit::failures();
    try {
      c.run();
    } catch (const std::exception& e) {
      unit::fail(c.name, 0, std::string("threw: ") + e.what());
    }
    std::printf("%s %s\n", unit::failures() == before ? "ok  " : "FAIL", c.name);
    ++ran;
  }
  std::printf("%d cases, %d failed checks\n", ran, unit::failures());
  return unit::failures() ? 1 : 0;
}
