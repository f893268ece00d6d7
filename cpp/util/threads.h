// How many threads the core uses, and a minimal parallel-for over tasks.
// Default: all cores; SVDISTILL_NUM_THREADS or set_num_threads() override.
#pragma once

#include <atomic>
#include <cstdint>
#include <exception>
#include <thread>
#include <vector>

namespace svd {

int num_threads();
void set_num_threads(int n);  // n <= 0 restores the default

// Runs f(i) for i in [0, n) with at most num_threads() threads (the caller's
// thread included). The first exception thrown by a task is rethrown.
template <class F>
void parallel_for(int64_t n, F&& f) {
  const int64_t workers = std::min<int64_t>(n, num_threads());
  if (workers <= 1) {
    for (int64_t i = 0; i < n; ++i) f(i);
    return;
  }
  std::vector<std::exception_ptr> errors(static_cast<size_t>(workers));
  // Tasks are handed out in order as threads become free, so a thread slowed
  // down (by another process, say) takes fewer of them.
  std::atomic<int64_t> next{0};
  auto run = [&](int64_t w) {
    try {
      for (int64_t i = next++; i < n; i = next++) f(i);
    } catch (...) {
      errors[static_cast<size_t>(w)] = std::current_exception();
    }
  };
  std::vector<std::thread> pool;
  pool.reserve(static_cast<size_t>(workers - 1));
  for (int64_t w = 1; w < workers; ++w) pool.emplace_back(run, w);
  run(0);
  for (std::thread& t : pool) t.join();
  for (const std::exception_ptr& e : errors)
    if (e) std::rethrow_exception(e);
}

}  // namespace svd
