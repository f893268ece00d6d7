#include "util/threads.h"

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdlib>
#include <exception>
#include <mutex>
#include <system_error>
#include <thread>
#include <vector>

#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#define SVD_PAUSE() _mm_pause()
#else
#define SVD_PAUSE() std::this_thread::yield()
#endif

#if defined(__unix__) || defined(__APPLE__)
#include <pthread.h>
#include <signal.h>
#define SVD_POSIX_THREADS 1
#endif

namespace svd {
namespace {
std::atomic<int> g_threads{0};

int default_threads() {
  if (const char* env = std::getenv("SVDISTILL_NUM_THREADS")) {
    int n = std::atoi(env);
    if (n > 0) return n;
  }
  unsigned hw = std::thread::hardware_concurrency();
  return hw ? static_cast<int>(hw) : 1;
}

// How long a waiting thread polls before it sleeps: longer than the serial
// work between the parallel steps of a reader or a forward pass, much shorter
// than a time slice another process would want.
constexpr auto kPoll = std::chrono::microseconds(50);

// Polls ready() for up to kPoll; true if it came true.
template <class Ready>
bool poll(Ready ready) {
  const auto until = std::chrono::steady_clock::now() + kPoll;
  for (;;) {
    for (int i = 0; i < 64; ++i) {
      if (ready()) return true;
      SVD_PAUSE();
    }
    if (std::chrono::steady_clock::now() >= until) return ready();
  }
}

// True on a thread while it runs tasks of a pool job.
thread_local bool t_in_job = false;

// Worker threads started once and kept, asleep between jobs: starting a
// thread per call cost ~65 us here, and a thread's exit hands its stack back
// to the kernel, which stops the other threads of the process for a TLB
// flush. One job at a time: a call that finds the pool busy (another Python
// thread's job) starts threads of its own; a task's own parallel_for runs on
// the task's thread.
class Pool {
 public:
  // False when the pool is busy: the caller runs the job some other way.
  bool try_run(int64_t n, int64_t workers, threads_detail::TaskFn fn, void* ctx) {
    std::unique_lock<std::mutex> job_lock(job_mutex_, std::try_to_lock);
    if (!job_lock.owns_lock()) return false;
    int helpers = static_cast<int>(workers - 1);
    {
      std::lock_guard<std::mutex> lock(mutex_);
      if (static_cast<int>(threads_) < helpers) start_threads(helpers);
      helpers = std::min(helpers, static_cast<int>(threads_));  // as many as could be started
      fn_ = fn;
      ctx_ = ctx;
      n_ = n;
      next_.store(0, std::memory_order_relaxed);
      busy_.store(helpers, std::memory_order_relaxed);
      error_ = nullptr;
      // A new job number, and with it how many workers help: a worker reads
      // both in one load, so it can never take one job's count for another's.
      const uint64_t number = (job_.load(std::memory_order_relaxed) >> 32) + 1;
      job_.store(number << 32 | static_cast<uint32_t>(helpers), std::memory_order_release);
    }
    wake_.notify_all();
    run_tasks();
    // Wait for the helpers: poll a little, then sleep.
    const auto finished = [&] { return busy_.load(std::memory_order_acquire) == 0; };
    if (!poll(finished)) {
      std::unique_lock<std::mutex> lock(mutex_);
      done_.wait(lock, finished);
    }
    fn_ = nullptr;
    ctx_ = nullptr;
    std::exception_ptr error = error_;
    error_ = nullptr;
    job_lock.unlock();
    if (error) std::rethrow_exception(error);
    return true;
  }

 private:
  // Starts workers up to `wanted` (mutex_ held). They block the signals a
  // process receives (the caller's thread, Python's say, handles those) but
  // not the ones a fault raises on the faulting thread. A thread the system
  // refuses (or memory for it) leaves the pool as it is.
  void start_threads(int wanted) {
#ifdef SVD_POSIX_THREADS
    sigset_t blocked, old;
    sigfillset(&blocked);
    for (int sig : {SIGSEGV, SIGBUS, SIGFPE, SIGILL, SIGTRAP, SIGSYS}) sigdelset(&blocked, sig);
    pthread_sigmask(SIG_SETMASK, &blocked, &old);
#endif
    try {
      while (static_cast<int>(threads_) < wanted) {
        std::thread(&Pool::work, this, static_cast<uint32_t>(threads_)).detach();
        ++threads_;
      }
    } catch (...) {
    }
#ifdef SVD_POSIX_THREADS
    pthread_sigmask(SIG_SETMASK, &old, nullptr);
#endif
  }

  void run_tasks() {
    t_in_job = true;
    struct Leave {
      ~Leave() { t_in_job = false; }
    } leave;
    try {
      for (int64_t i = next_.fetch_add(1, std::memory_order_relaxed); i < n_;
           i = next_.fetch_add(1, std::memory_order_relaxed))
        fn_(ctx_, i);
    } catch (...) {
      next_.store(n_, std::memory_order_relaxed);  // the others stop at their next task
      std::lock_guard<std::mutex> lock(mutex_);
      if (!error_) error_ = std::current_exception();
    }
  }

  [[noreturn]] void work(uint32_t index) {
    uint64_t seen = job_.load(std::memory_order_acquire);  // started for the job being set up
    seen &= ~uint64_t{0xffffffff};  // ... which it has not seen yet
    bool helped = false;
    for (;;) {
      // Right after a job the next one is likely soon: poll for it first.
      const auto posted = [&] { return job_.load(std::memory_order_acquire) != seen; };
      if (!(helped && poll(posted))) {
        std::unique_lock<std::mutex> lock(mutex_);
        wake_.wait(lock, posted);
      }
      seen = job_.load(std::memory_order_acquire);
      helped = index < static_cast<uint32_t>(seen);
      if (!helped) continue;  // not needed for this job
      run_tasks();
      if (busy_.fetch_sub(1, std::memory_order_acq_rel) == 1) {
        std::lock_guard<std::mutex> lock(mutex_);  // the caller may be between its check and its wait
        done_.notify_one();
      }
    }
  }

  std::mutex job_mutex_;  // held by the caller for the whole job
  std::mutex mutex_;      // guards threads_, error_ and the sleeps
  std::condition_variable wake_, done_;
  size_t threads_ = 0;
  std::atomic<uint64_t> job_{0};  // job number << 32 | helpers wanted
  std::atomic<int> busy_{0};      // helpers not yet done with the job
  // The job, written by the caller before job_ moves on.
  threads_detail::TaskFn fn_ = nullptr;
  void* ctx_ = nullptr;
  int64_t n_ = 0;
  std::atomic<int64_t> next_{0};
  std::exception_ptr error_;
};

// Never destroyed: its threads sleep on it until the process ends. A forked
// child has none of them, and starts with a pool of its own.
Pool* g_pool = [] {
#ifdef SVD_POSIX_THREADS
  ::pthread_atfork(nullptr, nullptr, [] { g_pool = new Pool; });
#endif
  return new Pool;
}();

// For a job the pool cannot take (another caller has it): a thread per
// helper, as many as the system gives.
void run_with_new_threads(int64_t n, int64_t workers, threads_detail::TaskFn fn, void* ctx) {
  std::vector<std::exception_ptr> errors(static_cast<size_t>(workers));
  std::atomic<int64_t> next{0};
  auto run = [&](int64_t w) {
    try {
      for (int64_t i = next++; i < n; i = next++) fn(ctx, i);
    } catch (...) {
      next.store(n);
      errors[static_cast<size_t>(w)] = std::current_exception();
    }
  };
  std::vector<std::thread> pool;
  try {
    pool.reserve(static_cast<size_t>(workers - 1));
    for (int64_t w = 1; w < workers; ++w) pool.emplace_back(run, w);
  } catch (...) {  // refused: the threads there are (and this one) do all the tasks
  }
  run(0);
  for (std::thread& t : pool) t.join();
  for (const std::exception_ptr& e : errors)
    if (e) std::rethrow_exception(e);
}
}  // namespace

int num_threads() {
  int n = g_threads.load(std::memory_order_relaxed);
  if (n <= 0) {
    n = default_threads();
    g_threads.store(n, std::memory_order_relaxed);
  }
  return n;
}

void set_num_threads(int n) { g_threads.store(n > 0 ? n : default_threads(), std::memory_order_relaxed); }

namespace threads_detail {
void run(int64_t n, int64_t workers, TaskFn fn, void* ctx) {
  // A task's own parallel_for runs on the task's thread: the task is one share
  // of a job that already has the cores (and job_mutex_ may be this thread's).
  if (t_in_job) {
    for (int64_t i = 0; i < n; ++i) fn(ctx, i);
    return;
  }
  if (!g_pool->try_run(n, workers, fn, ctx)) run_with_new_threads(n, workers, fn, ctx);
}
}  // namespace threads_detail

}  // namespace svd
