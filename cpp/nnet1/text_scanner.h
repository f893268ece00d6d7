// A buffered, forward-only view of a ByteSource with absolute byte offsets and
// (for text) line:column positions. The buffer holds a window of the input,
// never the whole file; it grows only when a single line or token needs it.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "nnet1/byte_source.h"
#include <cstring>

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
  void release_consumed() { source_->release_before(static_cast<size_t>(offset())); }

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

}  // namespace svd
