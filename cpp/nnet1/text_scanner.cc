#include "nnet1/text_scanner.h"
#include "nnet1/reader_detail.h"

#include <algorithm>
#include <cstring>

#include <sys/mman.h>

namespace svd {
namespace {
constexpr size_t kChunk = 1 << 20;
constexpr size_t kFirst = 1 << 16;  // first window for inputs of unknown size

inline bool is_space(unsigned char c) {
  return c == ' ' || c == '\n' || c == '\t' || c == '\r' || c == '\v' || c == '\f';
}
}  // namespace

Scanner::Scanner(std::unique_ptr<ByteSource> source) : source_(std::move(source)) {
  size_t size = 0;
  if (source_->map(&base_, &size)) {
    mapped_ = true;
    end_ = size;
    eof_ = true;
  } else {
    const int64_t hint = source_->size_hint();
    buf_.resize(hint >= 0 ? std::min<size_t>(kChunk, static_cast<size_t>(hint) + 64) : kFirst, 0);
    base_ = buf_.data();
  }
}

int64_t Scanner::remaining_hint() const {
  int64_t total = source_->size_hint();
  return total < 0 ? -1 : std::max<int64_t>(0, total - offset());
}

void Scanner::shift() {
  if (pos_ == 0 || mapped_) return;
  const char* b = base_;
  lines_before_ += reader_detail::count_newlines(b, b + pos_);
  const void* nl = memrchr(b, '\n', pos_);
  if (nl) last_nl_before_ = base_offset_ + (static_cast<const char*>(nl) - b);
  std::memmove(buf_.data(), b + pos_, end_ - pos_);
  base_ = buf_.data();
  base_offset_ += static_cast<int64_t>(pos_);
  end_ -= pos_;
  pos_ = 0;
}

bool Scanner::fill_more(size_t want_total) {
  // want_total: bytes wanted from pos_ onwards.
  if (mapped_) return end_ - pos_ >= want_total;
  // Never allocate past what a source of known size can still deliver.
  size_t alloc_want = want_total;
  const int64_t total = source_->size_hint();
  if (total >= 0)
    alloc_want = std::min<size_t>(want_total, static_cast<size_t>(std::max<int64_t>(0, total - offset())) + 1);
  if (pos_ + alloc_want > buf_.size()) {
    shift();
    if (alloc_want > buf_.size()) buf_.resize(std::max(alloc_want, buf_.size() * 2), end_);
    base_ = buf_.data();
  }
  while (end_ - pos_ < want_total && !eof_) {
    if (end_ == buf_.size()) {
      shift();
      if (end_ == buf_.size()) buf_.resize(buf_.size() * 2, end_);
      base_ = buf_.data();
    }
    size_t got = source_->read(buf_.data() + end_, buf_.size() - end_);
    if (got == 0) eof_ = true;
    end_ += got;
  }
  return end_ - pos_ >= want_total;
}

bool Scanner::ensure(size_t n) {
  if (end_ - pos_ >= n) return true;
  return fill_more(n);
}

int Scanner::peek() {
  if (pos_ == end_ && !ensure(1)) return -1;
  return static_cast<unsigned char>(base_[pos_]);
}

void Scanner::line_col(const char* p, int64_t* line, int64_t* col) const {
  const char* b = base_;
  size_t upto = static_cast<size_t>(std::clamp<std::ptrdiff_t>(p - b, 0, end_));
  *line = lines_before_ + reader_detail::count_newlines(b, b + upto) + 1;
  const void* nl = memrchr(b, '\n', upto);
  int64_t line_start = nl ? base_offset_ + (static_cast<const char*>(nl) - b) + 1
                          : last_nl_before_ + 1;
  *col = base_offset_ + static_cast<int64_t>(upto) - line_start + 1;
}

void Scanner::skip_ws() {
  for (;;) {
    while (pos_ < end_ && is_space(static_cast<unsigned char>(base_[pos_]))) ++pos_;
    if (pos_ < end_ || !ensure(1)) return;
  }
}

std::string Scanner::read_token() {
  skip_ws();
  std::string tok;
  for (;;) {
    size_t start = pos_;
    while (pos_ < end_ && !is_space(static_cast<unsigned char>(base_[pos_]))) ++pos_;
    if (tok.size() < 4096) tok.append(base_ + start, std::min<size_t>(pos_ - start, 4096));
    if (pos_ < end_ || !ensure(1)) return tok;
  }
}

size_t Scanner::line_length() {
  size_t scanned = 0;
  for (;;) {
    const void* nl = std::memchr(base_ + pos_ + scanned, '\n', end_ - pos_ - scanned);
    if (nl) return static_cast<size_t>(static_cast<const char*>(nl) - (base_ + pos_));
    scanned = end_ - pos_;
    if (!fill_more(scanned + std::max(kFirst, scanned)) && end_ - pos_ == scanned) return scanned;
  }
}

void Scanner::prefault(size_t n) {
#ifdef MADV_POPULATE_READ
  if (!mapped_ || n < (1 << 22)) return;
  const uintptr_t page = 4096;
  const char* p = cur();
  n = std::min(n, end_ - pos_);
  uintptr_t a = reinterpret_cast<uintptr_t>(p) & ~(page - 1);
  uintptr_t e = reinterpret_cast<uintptr_t>(p + n);
  ::madvise(reinterpret_cast<void*>(a), e - a, MADV_POPULATE_READ);  // best effort
#else
  (void)n;
#endif
}

void Scanner::populate_for_write(char* p, size_t n) {
#ifdef MADV_POPULATE_WRITE
  const uintptr_t page = 4096;
  uintptr_t a = (reinterpret_cast<uintptr_t>(p) + page - 1) & ~(page - 1);
  uintptr_t e = (reinterpret_cast<uintptr_t>(p) + n) & ~(page - 1);
  if (e > a) ::madvise(reinterpret_cast<void*>(a), e - a, MADV_POPULATE_WRITE);
#else
  (void)p;
  (void)n;
#endif
}

bool Scanner::skip(size_t n) {
  while (n > 0) {
    if (pos_ == end_ && !ensure(1)) return false;
    size_t k = std::min(n, end_ - pos_);
    pos_ += k;
    n -= k;
  }
  return true;
}

bool Scanner::read_exact(char* dst, size_t n) {
  size_t have = std::min(n, end_ - pos_);
  std::memcpy(dst, base_ + pos_, have);
  pos_ += have;
  size_t done = have;
  if (mapped_) return done == n;
  // Large blocks bypass the buffer: the data go straight to their destination.
  while (done < n) {
    if (n - done >= kChunk) {
      size_t got = source_->read(dst + done, n - done);
      if (got == 0) {
        eof_ = true;
        return false;
      }
      done += got;
      base_offset_ += static_cast<int64_t>(got);
    } else {
      if (!ensure(n - done)) {
        size_t k = end_ - pos_;
        std::memcpy(dst + done, base_ + pos_, k);
        pos_ += k;
        return false;
      }
      std::memcpy(dst + done, base_ + pos_, n - done);
      pos_ += n - done;
      done = n;
    }
  }
  return true;
}

}  // namespace svd
