#include "nnet1/byte_source.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <vector>

#include "nnet1/errors.h"

#ifdef SVD_HAVE_ZLIB
#include <zlib.h>
#endif

namespace svd {
namespace {

std::string errno_text(int e) { return std::strerror(e); }

// A file descriptor, with a few bytes of look-ahead so the gzip magic can be
// checked on pipes without losing data.
class FdSource : public ByteSource {
 public:
  FdSource(std::string name, int fd, bool owned, int64_t size)
      : ByteSource(std::move(name)), fd_(fd), owned_(owned), size_(size) {}
  ~FdSource() override {
    if (map_) ::munmap(map_, map_size_);
    if (owned_) ::close(fd_);
  }

  bool map(const char** data, size_t* size) override {
    if (size_ <= 0 || pos_ != 0 || consumed_) return false;
    void* p = ::mmap(nullptr, static_cast<size_t>(size_), PROT_READ, MAP_PRIVATE, fd_, 0);
    if (p == MAP_FAILED) return false;
    ::madvise(p, static_cast<size_t>(size_), MADV_SEQUENTIAL);
    map_ = p;
    map_size_ = static_cast<size_t>(size_);
    *data = static_cast<const char*>(p);
    *size = map_size_;
    return true;
  }

  // Drops pages already parsed, so a mapped multi-GB model does not stay resident.
  void release_before(size_t offset) override {
    if (!map_) return;
    const size_t page = 1 << 20;
    size_t upto = offset / page * page;
    if (upto > released_) {
      ::madvise(static_cast<char*>(map_) + released_, upto - released_, MADV_DONTNEED);
      released_ = upto;
    }
  }

  bool read_at(char* dst, size_t n, int64_t offset) override {
    if (!map_) return false;
    while (n > 0) {
      ssize_t got = ::pread(fd_, dst, n, static_cast<off_t>(offset));
      if (got < 0 && errno == EINTR) continue;
      if (got < 0) throw Error(name() + ": read failed: " + errno_text(errno));
      if (got == 0) throw Error(name() + ": the file shrank while it was read");
      dst += got;
      n -= static_cast<size_t>(got);
      offset += got;
    }
    return true;
  }

  size_t read(char* dst, size_t n) override {
    if (pos_ < pending_.size()) {
      size_t k = std::min(n, pending_.size() - pos_);
      std::memcpy(dst, pending_.data() + pos_, k);
      pos_ += k;
      return k;
    }
    consumed_ = true;
    return raw_read(dst, n);
  }
  int64_t size_hint() const override { return size_; }

  // Reads up to n bytes ahead without consuming them.
  std::string peek(size_t n) {
    while (pending_.size() - pos_ < n) {
      char buf[16];
      size_t got = raw_read(buf, std::min(sizeof buf, n - (pending_.size() - pos_)));
      if (got == 0) break;
      pending_.append(buf, got);
    }
    return pending_.substr(pos_, n);
  }

 private:
  size_t raw_read(char* dst, size_t n) {
    for (;;) {
      ssize_t got = ::read(fd_, dst, n);
      if (got >= 0) return static_cast<size_t>(got);
      if (errno == EINTR) continue;
      throw Error(name() + ": read failed: " + errno_text(errno));
    }
  }

  int fd_;
  bool owned_;
  int64_t size_;
  std::string pending_;
  size_t pos_ = 0;
  bool consumed_ = false;
  void* map_ = nullptr;
  size_t map_size_ = 0;
  size_t released_ = 0;
};

// Replays bytes already taken from a source, then reads on.
class PrefixSource : public ByteSource {
 public:
  PrefixSource(std::string prefix, std::unique_ptr<ByteSource> inner)
      : ByteSource(inner->name()), prefix_(std::move(prefix)), inner_(std::move(inner)) {}
  size_t read(char* dst, size_t n) override {
    if (pos_ < prefix_.size()) {
      size_t k = std::min(n, prefix_.size() - pos_);
      std::memcpy(dst, prefix_.data() + pos_, k);
      pos_ += k;
      return k;
    }
    return inner_->read(dst, n);
  }
  int64_t size_hint() const override { return inner_->size_hint(); }

 private:
  std::string prefix_;
  size_t pos_ = 0;
  std::unique_ptr<ByteSource> inner_;
};

#ifdef SVD_HAVE_ZLIB
class GzipSource : public ByteSource {
 public:
  explicit GzipSource(std::unique_ptr<ByteSource> inner)
      : ByteSource(inner->name()), inner_(std::move(inner)), in_(1 << 18) {
    std::memset(&zs_, 0, sizeof zs_);
    // 16 + MAX_WBITS: gzip wrapper only.
    if (inflateInit2(&zs_, 16 + MAX_WBITS) != Z_OK)
      throw Error(name() + ": cannot initialise gzip decoder");
  }
  ~GzipSource() override { inflateEnd(&zs_); }

  size_t read(char* dst, size_t n) override {
    if (done_ || n == 0) return 0;
    zs_.next_out = reinterpret_cast<Bytef*>(dst);
    zs_.avail_out = static_cast<uInt>(std::min<size_t>(n, 1u << 30));
    while (zs_.avail_out == static_cast<uInt>(std::min<size_t>(n, 1u << 30))) {
      if (zs_.avail_in == 0) {
        size_t got = inner_->read(in_.data(), in_.size());
        if (got == 0) {
          if (member_started_)
            throw Error(name() + ": gzip stream is truncated (compressed data ends early)");
          done_ = true;
          break;
        }
        zs_.next_in = reinterpret_cast<Bytef*>(in_.data());
        zs_.avail_in = static_cast<uInt>(got);
      }
      member_started_ = true;
      int rc = inflate(&zs_, Z_NO_FLUSH);
      if (rc == Z_STREAM_END) {
        // Concatenated gzip members are one stream, as gzip(1) reads them.
        member_started_ = false;
        if (inflateReset(&zs_) != Z_OK) throw Error(name() + ": gzip reset failed");
      } else if (rc != Z_OK && rc != Z_BUF_ERROR) {
        throw Error(name() + ": corrupt gzip data (" + (zs_.msg ? zs_.msg : "inflate error") + ")");
      }
    }
    return static_cast<size_t>(reinterpret_cast<char*>(zs_.next_out) - dst);
  }

 private:
  std::unique_ptr<ByteSource> inner_;
  std::vector<char> in_;
  z_stream zs_;
  bool member_started_ = false;
  bool done_ = false;
};
#endif

}  // namespace

bool have_zlib() {
#ifdef SVD_HAVE_ZLIB
  return true;
#else
  return false;
#endif
}

std::unique_ptr<ByteSource> gzip_source(std::unique_ptr<ByteSource> inner) {
#ifdef SVD_HAVE_ZLIB
  return std::make_unique<GzipSource>(std::move(inner));
#else
  throw Error(inner->name() + ": gzip input needs zlib, which this build lacks");
#endif
}

std::unique_ptr<ByteSource> auto_gunzip(std::unique_ptr<ByteSource> inner) {
  std::string head;
  char buf[2];
  while (head.size() < 2) {
    size_t got = inner->read(buf, 2 - head.size());
    if (got == 0) break;
    head.append(buf, got);
  }
  const bool gz = head.size() == 2 && static_cast<unsigned char>(head[0]) == 0x1f &&
                  static_cast<unsigned char>(head[1]) == 0x8b;
  std::unique_ptr<ByteSource> src = std::make_unique<PrefixSource>(std::move(head), std::move(inner));
  return gz ? gzip_source(std::move(src)) : std::move(src);
}

std::unique_ptr<ByteSource> open_source(const std::string& path) {
  std::unique_ptr<FdSource> src;
  if (path == "-") {
    src = std::make_unique<FdSource>("<stdin>", 0, false, -1);
  } else {
    int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
    if (fd < 0) throw Error(path + ": cannot open: " + errno_text(errno));
    struct stat st;
    if (::fstat(fd, &st) != 0) {
      int e = errno;
      ::close(fd);
      throw Error(path + ": cannot stat: " + errno_text(e));
    }
    if (S_ISDIR(st.st_mode)) {
      ::close(fd);
      throw Error(path + ": is a directory, not a model file");
    }
    int64_t size = S_ISREG(st.st_mode) ? static_cast<int64_t>(st.st_size) : -1;
    src = std::make_unique<FdSource>(path, fd, true, size);
  }
  std::string magic = src->peek(2);
  if (magic.size() == 2 && static_cast<unsigned char>(magic[0]) == 0x1f &&
      static_cast<unsigned char>(magic[1]) == 0x8b)
    return gzip_source(std::move(src));
  return src;
}

}  // namespace svd
