// Memory for large parameter blocks. Blocks of kHugeBlockBytes or more come
// from their own anonymous mapping, aligned to 2 MB and advised for
// transparent huge pages (Linux): the kernel then maps one 2 MB page per fault
// instead of 512 small ones, and the page alignment lets the kernel's copy of
// a read() run at full speed (it ran ~4x slower into a buffer 16 bytes past a
// page boundary, where malloc puts large blocks). While a BlockReuseScope is
// alive (every model reader holds one), the last freed large block is kept
// for the next large allocation, which then finds its pages already mapped;
// release_cached_block() returns it, and so does the end of the last scope.
// Smaller blocks use operator new.
#pragma once

#include <cstddef>
#include <memory>
#include <new>
#include <utility>

namespace svd {

constexpr size_t kHugeBlockBytes = size_t{2} << 20;
void* allocate_block(size_t bytes);
void deallocate_block(void* p, size_t bytes) noexcept;
void release_cached_block() noexcept;

class BlockReuseScope {
 public:
  BlockReuseScope() noexcept;
  ~BlockReuseScope();
  BlockReuseScope(const BlockReuseScope&) = delete;
  BlockReuseScope& operator=(const BlockReuseScope&) = delete;
};

// Leaves new elements uninitialised: parsers fill every element they allocate,
// and zeroing gigabytes first would only cost time.
template <class T>
struct DefaultInitAllocator : std::allocator<T> {
  template <class U>
  struct rebind {
    using other = DefaultInitAllocator<U>;
  };
  using std::allocator<T>::allocator;
  T* allocate(size_t n) {
    if (n > static_cast<size_t>(-1) / sizeof(T)) throw std::bad_array_new_length();
    return static_cast<T*>(allocate_block(n * sizeof(T)));
  }
  void deallocate(T* p, size_t n) noexcept { deallocate_block(p, n * sizeof(T)); }
  template <class U>
  void construct(U* p) noexcept {
    ::new (static_cast<void*>(p)) U;
  }
  template <class U, class... Args>
  void construct(U* p, Args&&... args) {
    ::new (static_cast<void*>(p)) U(std::forward<Args>(args)...);
  }
};

}  // namespace svd
