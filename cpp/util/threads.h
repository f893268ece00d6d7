// How many threads the core uses, and a parallel-for over tasks run by a pool
// of threads that live from the first call to the end of the process.
// Default: all cores; SVDISTILL_NUM_THREADS or set_num_threads() override.
#pragma once

#include <algorithm>
#include <cstdint>
#include <type_traits>

namespace svd {

int num_threads();
void set_num_threads(int n);  // n <= 0 restores the default

namespace threads_detail {
using TaskFn = void (*)(void* ctx, int64_t i);
// Runs fn(ctx, i) for i in [0, n) on `workers` threads, the caller's included.
void run(int64_t n, int64_t workers, TaskFn fn, void* ctx);
}  // namespace threads_detail

// Runs f(i) for i in [0, n) with at most num_threads() threads (the caller's
// thread included). Tasks are handed out in order as threads become free, so
// a thread slowed down (by another process, say) takes fewer of them. The
// first exception thrown by a task is rethrown once every task has stopped.
template <class F>
void parallel_for(int64_t n, F&& f) {
  const int64_t workers = std::min<int64_t>(n, num_threads());
  if (workers <= 1) {
    for (int64_t i = 0; i < n; ++i) f(i);
    return;
  }
  using Fn = std::remove_reference_t<F>;
  threads_detail::run(n, workers, [](void* ctx, int64_t i) { (*static_cast<Fn*>(ctx))(i); },
                      const_cast<void*>(static_cast<const void*>(&f)));
}

}  // namespace svd
