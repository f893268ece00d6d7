#include "util/block_alloc.h"

#include <atomic>
#include <cstdint>
#include <cstdlib>
#include <mutex>
#include <string>
#include <utility>

#if defined(__linux__)
#include <pthread.h>
#include <sys/mman.h>
#endif

namespace svd {

#if defined(__linux__) && defined(MADV_HUGEPAGE)
namespace {
constexpr size_t kHugePage = size_t{2} << 20;
size_t huge_round(size_t bytes) { return (bytes + kHugePage - 1) / kHugePage * kHugePage; }

// The most recently freed large block, kept for the next large allocation:
// a streaming reader frees layer i while it reads layer i + 1, and reusing the
// block saves the kernel clearing every page again (measured: clearing fresh
// pages cost more than the copy itself in a binary read). At most one block
// is kept; release_cached_block() returns it to the system.
struct IdleBlock {
  std::mutex mutex;
  void* p = nullptr;
  size_t len = 0;
};
// Never destroyed: blocks may be freed at exit. A child process starts with a
// fresh slot, so a fork while another thread held the mutex cannot deadlock it
// (the parent's idle block, if any, stays mapped in the child, unused).
IdleBlock* g_idle = [] {
  ::pthread_atfork(nullptr, nullptr, [] { g_idle = new IdleBlock; });
  return new IdleBlock;
}();

IdleBlock& idle_block() { return *g_idle; }

std::atomic<int> g_reuse_scopes{0};  // BlockReuseScopes alive

// Puts (*p, *len) in the idle slot and hands back what was there.
void swap_idle(void** p, size_t* len) {
  IdleBlock& idle = idle_block();
  std::lock_guard<std::mutex> lock(idle.mutex);
  std::swap(*p, idle.p);
  std::swap(*len, idle.len);
}

// SVDISTILL_HUGEPAGES=0 turns the huge-page advice off (for a machine where
// the kernel's synchronous compaction of huge pages stalls).
bool huge_pages_wanted() {
  static const bool wanted = [] {
    const char* v = std::getenv("SVDISTILL_HUGEPAGES");
    return !(v && std::string(v) == "0");
  }();
  return wanted;
}

void* map_block(size_t len) {
  // Map one huge page more than needed and trim, so the block starts on a
  // 2 MB boundary (the kernel can only back aligned 2 MB ranges with a huge page).
  void* raw = ::mmap(nullptr, len + kHugePage, PROT_READ | PROT_WRITE,
                     MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (raw == MAP_FAILED) throw std::bad_alloc();
  const uintptr_t start = reinterpret_cast<uintptr_t>(raw);
  const uintptr_t aligned = (start + kHugePage - 1) / kHugePage * kHugePage;
  if (aligned > start) ::munmap(raw, aligned - start);
  const uintptr_t tail = aligned + len;
  const uintptr_t end = start + len + kHugePage;
  if (end > tail) ::munmap(reinterpret_cast<void*>(tail), end - tail);
  void* p = reinterpret_cast<void*>(aligned);
  if (huge_pages_wanted()) ::madvise(p, len, MADV_HUGEPAGE);  // advice: else 4 KB pages
  return p;
}
}  // namespace

void* allocate_block(size_t bytes) {
  if (bytes < kHugeBlockBytes) return ::operator new(bytes);
  const size_t len = huge_round(bytes);
  if (len < bytes || len + kHugePage < len) throw std::bad_alloc();
  void* p = nullptr;
  size_t have = 0;
  swap_idle(&p, &have);
  if (p && have >= len) {
    if (have > len) ::munmap(static_cast<char*>(p) + len, have - len);
    return p;
  }
  if (p) ::munmap(p, have);  // too small: keep nothing idle
  return map_block(len);
}

void deallocate_block(void* p, size_t bytes) noexcept {
  if (!p) return;
  if (bytes < kHugeBlockBytes) {
    ::operator delete(p);
    return;
  }
  void* old = p;
  size_t old_len = huge_round(bytes);
  // Only while a reader is alive is a freed block kept (a model the user
  // drops outside any reader goes back to the system at once).
  if (g_reuse_scopes.load(std::memory_order_relaxed) > 0) swap_idle(&old, &old_len);
  if (old) ::munmap(old, old_len);
}

BlockReuseScope::BlockReuseScope() noexcept { g_reuse_scopes.fetch_add(1, std::memory_order_relaxed); }
BlockReuseScope::~BlockReuseScope() {
  if (g_reuse_scopes.fetch_sub(1, std::memory_order_acq_rel) == 1) release_cached_block();
}

void release_cached_block() noexcept {
  void* p = nullptr;
  size_t len = 0;
  swap_idle(&p, &len);
  if (p) ::munmap(p, len);
}
#else
void* allocate_block(size_t bytes) { return ::operator new(bytes); }
void deallocate_block(void* p, size_t) noexcept { ::operator delete(p); }
void release_cached_block() noexcept {}
BlockReuseScope::BlockReuseScope() noexcept {}
BlockReuseScope::~BlockReuseScope() {}
#endif

}  // namespace svd
