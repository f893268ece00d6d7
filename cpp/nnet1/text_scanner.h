// A buffered, forward-only view of a ByteSource with absolute byte offsets and
// (for text) line:column positions. The buffer holds a window of the input,
// never the whole file; it grows only when a single line or token needs it.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include <algorithm>
#include <cstring>

#include "nnet1/byte_source.h"
#include "util/threads.h"

namespace svd {

class Scanner {
 public:
  explicit Scanner(std::unique_ptr<ByteSource> source);

  const std::string& name() const { return source_->name(); }
  int64_t size_hint() const { return source_->size_hint(); }
  // Bytes left in the input when its size is known, else -1.
  int64_t remaining_hint() const;

  // Current read pointer and the end of the buffered bytes.
  const char* cur() const { return base_ + pos_; }
  const char* end() const { return base_ + end_; }
  size_t available() const { return end_ - pos_; }
  // Makes at least n bytes available; false if the input ends first.
  bool ensure(size_t n);
  void advance(size_t n) { pos_ += n; }
  void set_cur(const char* p) { pos_ = static_cast<size_t>(p - base_); }
  // Lets a memory-mapped input drop the pages before cur() (call between components).
  void release_consumed() { release_before(offset()); }
  // Lets a mapped input's pages before an absolute offset leave memory.
  void release_before(int64_t abs) { source_->release_before(static_cast<size_t>(abs)); }

  int peek();  // next byte or -1 at end of input
  bool at_eof() { return peek() < 0; }

  // Absolute byte offset of cur().
  int64_t offset() const { return base_offset_ + static_cast<int64_t>(pos_); }
  // Pointer to an absolute offset if it is still buffered, else nullptr.
  const char* ptr_at(int64_t abs) const {
    return abs >= base_offset_ && abs <= base_offset_ + static_cast<int64_t>(end_)
               ? base_ + (abs - base_offset_) : nullptr;
  }
  // 1-based line and column of a pointer into the current buffer.
  void line_col(const char* p, int64_t* line, int64_t* col) const;

  // --- text helpers (Kaldi's tokenizer: whitespace separates tokens) ---
  void skip_ws();  // spaces, tabs, newlines, \r, \v, \f
  // Reads a maximal run of non-whitespace bytes (capped for error messages).
  std::string read_token();
  // Length of the current line (up to, not including, '\n' or the end of input);
  // the whole line is buffered on return.
  size_t line_length();

  // Asks a memory-mapped input to map the next n bytes at once (best effort).
  void prefault(size_t n);
  // Discards n bytes; false if the input ends first.
  bool skip(size_t n);

  // --- binary helpers ---
  // Copies exactly n bytes into dst; false if the input ends first (dst then
  // holds what was there).
  bool read_exact(char* dst, size_t n);
  // read_exact for large blocks: a mapped regular file is read with pread in
  // chunks spread over the core's threads (other sources in one read, with the
  // destination's pages mapped first); on_chunk(first, bytes) runs on each
  // chunk (in the thread that read it, while it is in cache) and its results
  // are OR-ed. Returns -1 if the input ends first, else the OR.
  template <class F>
  int read_exact_chunks(char* dst, size_t n, F&& on_chunk);
  // Maps the pages of a destination about to be written, in one call rather
  // than a fault per page (best effort; a no-op where the kernel lacks it).
  static void populate_for_write(char* p, size_t n);

 private:
  void shift();  // drop consumed bytes from the front of the buffer
  bool fill_more(size_t want_total);

  std::unique_ptr<ByteSource> source_;
  // The window, unless memory-mapped: a plain array, grown by copying (no
  // per-byte construction; only the bytes read are ever touched).
  struct Window {
    std::unique_ptr<char[]> p;
    size_t n = 0;
    char* data() { return p.get(); }
    const char* data() const { return p.get(); }
    size_t size() const { return n; }
    void resize(size_t m, size_t keep) {
      std::unique_ptr<char[]> q(new char[m]);
      if (keep) std::memcpy(q.get(), p.get(), keep);
      p = std::move(q);
      n = m;
    }
  } buf_;
  const char* base_ = nullptr;  // buf_.data() or the mapping
  bool mapped_ = false;
  size_t pos_ = 0, end_ = 0;
  int64_t base_offset_ = 0;     // absolute offset of buf_[0]
  int64_t lines_before_ = 0;    // '\n' count in bytes before buf_[0]
  int64_t last_nl_before_ = -1; // absolute offset of the last '\n' before buf_[0]
  bool eof_ = false;
};

template <class F>
int Scanner::read_exact_chunks(char* dst, size_t n, F&& on_chunk) {
  constexpr size_t kPiece = size_t{2} << 20;
  if (mapped_ && n >= 2 * kPiece && end_ - pos_ >= n) {
    const int64_t at = offset();
    const int64_t pieces = static_cast<int64_t>((n + kPiece - 1) / kPiece);
    std::vector<int> flags(static_cast<size_t>(pieces), 0);
    const bool direct = source_->read_at(nullptr, 0, at);  // can it pread?
    parallel_for(pieces, [&](int64_t i) {
      const size_t a = static_cast<size_t>(i) * kPiece, len = std::min(kPiece, n - a);
      populate_for_write(dst + a, len);
      if (!direct || !source_->read_at(dst + a, len, at + static_cast<int64_t>(a)))
        std::memcpy(dst + a, base_ + pos_ + a, len);
      flags[static_cast<size_t>(i)] = on_chunk(dst + a, len);
    });
    pos_ += n;
    int any = 0;
    for (int f : flags) any |= f;
    return any;
  }
  if (n >= 2 * kPiece) {  // one serial read: map the destination's and the source's pages first
    populate_for_write(dst, n);
    prefault(n);
  }
  if (!read_exact(dst, n)) return -1;
  return on_chunk(dst, n);
}

}  // namespace svd
