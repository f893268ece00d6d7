#include "nnet1/byte_sink.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <vector>

#include "nnet1/errors.h"

namespace svd {
namespace {

void write_all(int fd, const char* data, size_t n, const std::string& name) {
  while (n > 0) {
    ssize_t w = ::write(fd, data, n);
    if (w < 0) {
      if (errno == EINTR) continue;
      throw Error(name + ": write failed: " + std::strerror(errno));
    }
    data += w;
    n -= static_cast<size_t>(w);
  }
}

class StdoutSink : public ByteSink {
 public:
  StdoutSink() : ByteSink("<stdout>") {}
  void write(const char* data, size_t n) override { write_all(1, data, n, name()); }
  void commit() override {}
  void abort() noexcept override {}
};

class AtomicFileSink : public ByteSink {
 public:
  explicit AtomicFileSink(const std::string& path) : ByteSink(path) {
    struct stat st;
    if (::stat(path.c_str(), &st) == 0 && S_ISDIR(st.st_mode))
      throw Error(path + ": is a directory; give a file name for the output");
    std::string dir = ".", base = path;
    size_t slash = path.rfind('/');
    if (slash != std::string::npos) {
      dir = slash == 0 ? "/" : path.substr(0, slash);
      base = path.substr(slash + 1);
    }
    std::string tmpl = (dir == "/" ? "" : dir) + "/." + base + ".svdistill-XXXXXX";
    std::vector<char> buf(tmpl.begin(), tmpl.end());
    buf.push_back('\0');
    fd_ = ::mkstemp(buf.data());
    if (fd_ < 0)
      throw Error(path + ": cannot create a temporary file in " + dir + ": " + std::strerror(errno));
    tmp_ = buf.data();
    // A new file gets the usual 0666 & ~umask; an existing target keeps its mode.
    mode_t mode;
    if (::stat(path.c_str(), &st) == 0) {
      mode = st.st_mode & 07777;
    } else {
      mode_t mask = ::umask(0);
      ::umask(mask);
      mode = 0666 & ~mask;
    }
    ::fchmod(fd_, mode);
  }
  ~AtomicFileSink() override { abort(); }

  void write(const char* data, size_t n) override {
    try {
      write_all(fd_, data, n, name());
    } catch (...) {
      abort();
      throw;
    }
  }
  void commit() override {
    if (fd_ < 0) throw Error(name() + ": output already closed");
    // The rename alone makes the output atomic for every process crash; an
    // fsync first also survives power loss, at the price of waiting for the disk.
    static const bool durable = [] {
      const char* e = std::getenv("SVDISTILL_FSYNC");
      return e && *e && std::string(e) != "0";
    }();
    if (durable && ::fsync(fd_) != 0 && errno != EINVAL) {
      std::string e = std::strerror(errno);
      abort();
      throw Error(name() + ": cannot flush to disk: " + e);
    }
    if (::close(fd_) != 0) {
      std::string e = std::strerror(errno);
      fd_ = -1;
      abort();
      throw Error(name() + ": close failed: " + e);
    }
    fd_ = -1;
    if (::rename(tmp_.c_str(), name().c_str()) != 0) {
      std::string e = std::strerror(errno);
      abort();
      throw Error(name() + ": cannot rename the finished output into place: " + e);
    }
    tmp_.clear();
  }
  void abort() noexcept override {
    if (fd_ >= 0) ::close(fd_);
    fd_ = -1;
    if (!tmp_.empty()) ::unlink(tmp_.c_str());
    tmp_.clear();
  }

 private:
  int fd_ = -1;
  std::string tmp_;
};

}  // namespace

std::unique_ptr<ByteSink> open_sink(const std::string& path) {
  if (path == "-") return std::make_unique<StdoutSink>();
  return std::make_unique<AtomicFileSink>(path);
}

}  // namespace svd
