#include "nnet1/number_format.h"

// Checks svd::format_float(Digits::Shortest) (the writer's shortest float32
// text) against std::to_chars(float), byte for byte: the same digits (the
// shortest that read back exactly, the closest on a tie) laid out the same way
// (fixed or scientific, whichever is shorter).
//   format_float_check N      every float32 bit pattern i * stride for a
//                             stride near 2^32 / N, plus edge cases
//   format_float_check all    all 2^32 bit patterns, on all cores (minutes)
// Built and run by tests/test_number_parser.py; by hand:
//   g++ -O2 -std=c++17 -pthread -Icpp fuzz/format_float_check.cc cpp/nnet1/number_format.cc -o /tmp/ffc && /tmp/ffc all
#include <atomic>
#include <charconv>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <thread>
#include <vector>

namespace {

std::atomic<uint64_t> g_bad{0};

bool check(uint32_t bits) {
  float v;
  std::memcpy(&v, &bits, 4);
  if (!std::isfinite(v)) return true;
  char ours[64], ref[64];
  const size_t n = svd::format_float(ours, v, svd::Digits::Shortest);
  const size_t m = static_cast<size_t>(std::to_chars(ref, ref + sizeof ref, v).ptr - ref);
  if (n == m && std::memcmp(ours, ref, n) == 0) return true;
  if (g_bad.fetch_add(1) < 20)
    std::printf("mismatch 0x%08x: ours '%.*s' to_chars '%.*s'\n", bits, static_cast<int>(n), ours,
                static_cast<int>(m), ref);
  return false;
}

}  // namespace

int main(int argc, char** argv) {
  const std::string arg = argc > 1 ? argv[1] : "1000000";
  uint64_t checked = 0;
  if (arg == "all") {
    const unsigned threads = std::max(1u, std::thread::hardware_concurrency());
    std::vector<std::thread> pool;
    std::vector<uint64_t> counts(threads, 0);
    for (unsigned t = 0; t < threads; ++t)
      pool.emplace_back([&, t] {
        for (uint64_t b = t; b < (uint64_t{1} << 32); b += threads) {
          check(static_cast<uint32_t>(b));
          ++counts[t];
        }
      });
    for (auto& th : pool) th.join();
    for (uint64_t c : counts) checked += c;
  } else {
    const uint64_t n = std::strtoull(arg.c_str(), nullptr, 10);
    const uint64_t stride = n ? std::max<uint64_t>(1, (uint64_t{1} << 32) / n) | 1 : 1;
    for (uint64_t b = 0; b < (uint64_t{1} << 32); b += stride, ++checked) check(static_cast<uint32_t>(b));
    // Edge cases: powers of two (the asymmetric interval), their neighbours,
    // integers, powers of ten and their neighbours, around 2^24 (where the
    // fast path ends) and the fixed/scientific switch at 1e-4 and 1e7.
    for (int e = 0; e < 255; ++e)
      for (uint32_t sign : {0u, 1u})
        for (int d = -2; d <= 2; ++d, ++checked)
          check((sign << 31) | ((static_cast<uint32_t>(e) << 23) + static_cast<uint32_t>(d)));
    for (int i = -100000; i <= 100000; ++i, ++checked) {
      float f = static_cast<float>(i);
      uint32_t b;
      std::memcpy(&b, &f, 4);
      check(b);
    }
    for (int p = -45; p <= 38; ++p) {
      const float f = std::strtof(("1e" + std::to_string(p)).c_str(), nullptr);
      uint32_t b;
      std::memcpy(&b, &f, 4);
      for (int d = -3; d <= 3; ++d, checked += 2) {
        check(b + static_cast<uint32_t>(d));
        check((b + static_cast<uint32_t>(d)) ^ 0x80000000u);
      }
    }
  }
  const uint64_t bad = g_bad.load();
  std::printf("checked %llu bad %llu\n", static_cast<unsigned long long>(checked),
              static_cast<unsigned long long>(bad));
  return bad == 0 ? 0 : 1;
}
