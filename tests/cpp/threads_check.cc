// Checks svd::parallel_for and its worker pool (cpp/util/threads.cc): every
// task runs once for any task and thread count, nested calls, exceptions,
// several callers at once, the workers' signal mask, and fork. Built and run
// by tests/test_threads.py (also under ThreadSanitizer where the compiler has
// it). Prints "failures N" last.
//   threads_check [fork]
#include <pthread.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <random>
#include <stdexcept>
#include <thread>
#include <vector>

#include "util/threads.h"

using svd::parallel_for;
using svd::set_num_threads;

namespace {
int failures = 0;

void fail(int line, const char* what) {
  ++failures;
  std::printf("FAIL line %d: %s\n", line, what);
}
#define CHECK(cond)                   \
  do {                                \
    if (!(cond)) fail(__LINE__, #cond); \
  } while (0)

void every_task_once() {
  std::mt19937 rng(1);
  for (int round = 0; round < 2000; ++round) {
    set_num_threads(1 + static_cast<int>(rng() % 4));
    const int64_t n = rng() % 100;
    std::vector<std::atomic<int>> hits(static_cast<size_t>(n));
    for (auto& h : hits) h.store(0);
    parallel_for(n, [&](int64_t i) { hits[static_cast<size_t>(i)].fetch_add(1); });
    for (auto& h : hits) CHECK(h.load() == 1);
  }
}

void nested_calls() {
  set_num_threads(2);
  for (int round = 0; round < 200; ++round) {
    std::atomic<int64_t> sum{0};
    parallel_for(8, [&](int64_t i) { parallel_for(8, [&](int64_t j) { sum += i * 8 + j; }); });
    CHECK(sum.load() == 63 * 64 / 2);
  }
}

void exceptions() {
  set_num_threads(2);
  for (int round = 0; round < 200; ++round) {
    bool caught = false;
    try {
      parallel_for(50, [&](int64_t i) {
        if (i == round % 50) throw std::runtime_error("task");
      });
    } catch (const std::runtime_error&) {
      caught = true;
    }
    CHECK(caught);
    std::atomic<int> count{0};
    parallel_for(50, [&](int64_t) { ++count; });
    CHECK(count.load() == 50);
  }
}

void concurrent_callers() {
  set_num_threads(2);
  std::atomic<int> bad{0};
  std::vector<std::thread> callers;
  for (int t = 0; t < 3; ++t)
    callers.emplace_back([&] {
      for (int round = 0; round < 300; ++round) {
        std::atomic<int64_t> sum{0};
        parallel_for(100, [&](int64_t i) { sum += i; });
        if (sum.load() != 4950) ++bad;
      }
    });
  for (auto& c : callers) c.join();
  CHECK(bad.load() == 0);
}

// A task on the caller's thread waits until a task has run on a worker (the
// other task, so one does), which reads that worker's signal mask.
void signal_masks() {
  sigset_t before, after;
  pthread_sigmask(SIG_SETMASK, nullptr, &before);
  set_num_threads(2);
  const std::thread::id caller = std::this_thread::get_id();
  std::atomic<bool> seen{false};
  std::atomic<int> int_blocked{-1}, segv_blocked{-1};
  parallel_for(2, [&](int64_t) {
    if (std::this_thread::get_id() != caller) {
      sigset_t mask;
      pthread_sigmask(SIG_SETMASK, nullptr, &mask);
      int_blocked = sigismember(&mask, SIGINT);
      segv_blocked = sigismember(&mask, SIGSEGV);
      seen.store(true);
      return;
    }
    const auto until = std::chrono::steady_clock::now() + std::chrono::seconds(10);
    while (!seen.load() && std::chrono::steady_clock::now() < until) std::this_thread::yield();
  });
  CHECK(seen.load());
  CHECK(int_blocked == 1);   // process signals go to the caller's threads
  CHECK(segv_blocked == 0);  // a fault on a worker still reaches its handler
  pthread_sigmask(SIG_SETMASK, nullptr, &after);
  for (int sig = 1; sig < 32; ++sig) CHECK(sigismember(&before, sig) == sigismember(&after, sig));
}

// A forked child has none of the parent's workers: its jobs must not wait for them.
void fork_child() {
  set_num_threads(2);
  std::atomic<int> warm{0};
  parallel_for(4, [&](int64_t) { ++warm; });
  for (int round = 0; round < 20; ++round) {
    const pid_t pid = fork();
    if (pid == 0) {
      std::atomic<int> count{0};
      for (int k = 0; k < 10; ++k) parallel_for(100, [&](int64_t) { ++count; });
      _exit(count.load() == 1000 ? 0 : 3);
    }
    int status = 0;
    CHECK(pid > 0 && waitpid(pid, &status, 0) == pid);
    CHECK(WIFEXITED(status) && WEXITSTATUS(status) == 0);
  }
}
}  // namespace

int main(int argc, char** argv) {
  every_task_once();
  nested_calls();
  exceptions();
  concurrent_callers();
  signal_masks();
  if (argc > 1 && std::strcmp(argv[1], "fork") == 0) fork_child();
  std::printf("failures %d\n", failures);
  return failures ? 1 : 0;
}
