#include "nnet1/byte_sink.h"

#include <dirent.h>
#include <fcntl.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <climits>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
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

// "a/b/c" -> ("a/b", "c"); "c" -> (".", "c"); "/c" -> ("/", "c").
void split_path(const std::string& path, std::string* dir, std::string* base) {
  size_t slash = path.rfind('/');
  if (slash == std::string::npos) {
    *dir = ".";
    *base = path;
  } else {
    *dir = slash == 0 ? "/" : path.substr(0, slash);
    *base = path.substr(slash + 1);
  }
}

bool durable_outputs() {
  // The rename alone makes an output atomic for every process crash; an fsync
  // first also survives power loss, at the price of waiting for the disk.
  static const bool durable = [] {
    const char* e = std::getenv("SVDISTILL_FSYNC");
    return e && *e && std::string(e) != "0";
  }();
  return durable;
}

// The process's umask without changing it: umask() can only be read by
// setting it, which races with files other threads create meanwhile.
mode_t current_umask() {
  std::ifstream status("/proc/self/status");
  std::string line;
  while (std::getline(status, line)) {
    if (line.compare(0, 6, "Umask:") == 0) return static_cast<mode_t>(std::strtoul(line.c_str() + 6, nullptr, 8));
  }
  mode_t mask = ::umask(0);
  ::umask(mask);
  return mask;
}

// This host's name as it goes into temporary names: a shared (NFS) folder may
// hold another host's temporaries, whose writers this host cannot see.
const std::string& host_tag() {
  static const std::string tag = [] {
    char buf[256] = {0};
    if (::gethostname(buf, sizeof buf - 1) != 0 || !buf[0]) return std::string("host");
    std::string t;
    for (const char* p = buf; *p && t.size() < 32; ++p) {
      const char c = *p;
      const bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '-' || c == '_';
      t += ok ? c : '_';
    }
    return t;
  }();
  return tag;
}

constexpr char kTag[] = ".svdistill-";
constexpr size_t kRandom = 6;  // mkstemp's XXXXXX

// ".<base>.svdistill-": every temporary for `base` starts so. A base too long
// for a file name with the rest appended is shortened (the same way each time).
std::string temp_prefix(const std::string& base) {
  const size_t rest = std::strlen(kTag) + host_tag().size() + 1 + 10 + 1 + kRandom;
  const size_t room = NAME_MAX > rest + 1 ? NAME_MAX - rest - 1 : 1;
  return "." + base.substr(0, std::min(base.size(), room)) + kTag;
}

// Whether `n` is "<start>...<kTag><host>.<pid>-XXXXXX": a temporary of ours, made on this host.
// (Another host's writers hold their locks on their own host: with NFS's local locking this
// host could not see them, so only this host's temporaries are judged here.)
bool is_our_temp(const std::string& n, const std::string& start) {
  const std::string& host = host_tag();
  if (n.size() < start.size() + kRandom + 2 || n.compare(0, start.size(), start) != 0) return false;
  const size_t dash = n.size() - kRandom - 1;
  if (n[dash] != '-') return false;
  size_t dot = dash;
  while (dot > 0 && n[dot - 1] >= '0' && n[dot - 1] <= '9') --dot;
  if (dot == dash || dash - dot > 10 || dot == 0 || n[dot - 1] != '.') return false;
  const std::string tail = std::string(kTag) + host + ".";
  const size_t at = dot - tail.size();
  return dot >= tail.size() && n.compare(at, tail.size(), tail) == 0 && at + std::strlen(kTag) >= start.size();
}

// Removes the temporaries of ours in `dir` whose names start with `start` and that no process
// is writing: each writer holds an flock on its temporary until the rename, so one that can be
// locked was left by a process that died (SIGKILL, power loss). Locks, not pids: a pid says
// nothing across PID namespaces (containers sharing a hostname and a volume).
void remove_stale_temps_in(const std::string& dir, const std::string& start) {
  DIR* d = ::opendir(dir.c_str());
  if (!d) return;
  while (struct dirent* e = ::readdir(d)) {
    const std::string n = e->d_name;
    if (!is_our_temp(n, start)) continue;
    const int fd = ::openat(::dirfd(d), n.c_str(), O_RDONLY | O_CLOEXEC | O_NOFOLLOW | O_NONBLOCK);
    if (fd < 0) continue;
    struct stat by_fd, by_name;
    // Locked by its writer (or the lock cannot be taken here, e.g. ENOLCK): not ours to remove.
    if (::flock(fd, LOCK_EX | LOCK_NB) == 0 && ::fstat(fd, &by_fd) == 0 &&
        ::fstatat(::dirfd(d), n.c_str(), &by_name, AT_SYMLINK_NOFOLLOW) == 0 &&
        by_fd.st_dev == by_name.st_dev && by_fd.st_ino == by_name.st_ino && S_ISREG(by_name.st_mode))
      ::unlinkat(::dirfd(d), n.c_str(), 0);
    ::close(fd);
  }
  ::closedir(d);
}

class StdoutSink : public ByteSink {
 public:
  StdoutSink() : ByteSink("<stdout>") {}
  void write(const char* data, size_t n) override { write_all(1, data, n, name()); }
  void commit() override {}
  void abort() noexcept override {}
};

// A device, FIFO or socket: written in place (renaming a file over /dev/null
// would replace the device).
class SpecialFileSink : public ByteSink {
 public:
  SpecialFileSink(const std::string& target, const std::string& name) : ByteSink(name) {
    do fd_ = ::open(target.c_str(), O_WRONLY | O_CLOEXEC);
    while (fd_ < 0 && errno == EINTR);
    if (fd_ < 0) throw Error(name + ": cannot open for writing: " + std::strerror(errno));
  }
  ~SpecialFileSink() override { abort(); }
  void write(const char* data, size_t n) override { write_all(fd_, data, n, name()); }
  void commit() override {
    if (fd_ < 0) throw Error(name() + ": output already closed");
    const int fd = fd_;
    fd_ = -1;
    if (::close(fd) != 0 && errno != EINTR) throw Error(name() + ": close failed: " + std::strerror(errno));
  }
  void abort() noexcept override {
    if (fd_ >= 0) ::close(fd_);
    fd_ = -1;
  }

 private:
  int fd_ = -1;
};

class AtomicFileSink : public ByteSink {
 public:
  AtomicFileSink(const std::string& target, const std::string& name) : ByteSink(name), target_(target) {
    fd_ = create_temp_beside(target_, name, &tmp_);
  }
  ~AtomicFileSink() override { abort(); }

  void write(const char* data, size_t n) override {
    if (fd_ < 0) throw Error(name() + ": output already closed");
    try {
      write_all(fd_, data, n, name());
    } catch (...) {
      abort();
      throw;
    }
  }
  void commit() override {
    if (fd_ < 0) throw Error(name() + ": output already closed");
    const int fd = fd_;
    const std::string tmp = tmp_;
    fd_ = -1;
    tmp_.clear();
    commit_temp(fd, tmp, target_, name());  // removes tmp itself on failure
  }
  void abort() noexcept override {
    if (fd_ >= 0) ::close(fd_);
    fd_ = -1;
    if (!tmp_.empty()) ::unlink(tmp_.c_str());
    tmp_.clear();
  }

 private:
  std::string target_;
  int fd_ = -1;
  std::string tmp_;
};

}  // namespace

std::string output_target(const std::string& path) {
  if (path.empty()) throw Error("the output path is empty");
  std::string p = path;
  for (int hops = 0; hops <= 40; ++hops) {
    if (p.back() == '/') throw Error(path + ": is a directory name; give a file name for the output");
    struct stat st;
    if (::lstat(p.c_str(), &st) != 0) {
      const int err = errno;
      const std::string via = p == path ? path : path + " (a symbolic link to " + p + ")";
      if (err != ENOENT) throw Error(via + ": " + std::strerror(err));
      std::string dir, base;
      split_path(p, &dir, &base);
      struct stat ds;
      if (::stat(dir.c_str(), &ds) != 0 || !S_ISDIR(ds.st_mode))
        throw Error(via + ": the folder " + dir + " does not exist");
      return p;  // a new file (through a dangling link, the file it names)
    }
    if (S_ISLNK(st.st_mode)) {
      std::vector<char> buf(static_cast<size_t>(st.st_size > 0 ? st.st_size : PATH_MAX) + 1);
      const ssize_t len = ::readlink(p.c_str(), buf.data(), buf.size());
      if (len < 0) throw Error(path + ": cannot read the symbolic link " + p + ": " + std::strerror(errno));
      std::string link(buf.data(), static_cast<size_t>(len));
      if (link.empty()) throw Error(path + ": the symbolic link " + p + " is empty");
      if (link[0] != '/') {
        std::string dir, base;
        split_path(p, &dir, &base);
        link = (dir == "/" ? "" : dir) + "/" + link;
      }
      p = link;
      continue;
    }
    if (S_ISDIR(st.st_mode))
      throw Error((p == path ? path : path + " (a symbolic link to " + p + ")") +
                  ": is a directory; give a file name for the output");
    return p;
  }
  throw Error(path + ": too many levels of symbolic links (a loop?)");
}

bool is_special_file(const std::string& target) {
  struct stat st;
  return ::stat(target.c_str(), &st) == 0 && !S_ISREG(st.st_mode);
}

void remove_stale_temps(const std::string& dir, const std::string& start) { remove_stale_temps_in(dir, start); }

int create_temp_beside(const std::string& target, const std::string& name, std::string* tmp) {
  std::string dir, base;
  split_path(target, &dir, &base);
  const std::string prefix = temp_prefix(base);
  remove_stale_temps_in(dir, prefix);
  const std::string tmpl = (dir == "/" ? "" : dir) + "/" + prefix + host_tag() + "." +
                           std::to_string(::getpid()) + "-" + std::string(kRandom, 'X');
  for (int attempt = 0;; ++attempt) {
    std::vector<char> buf(tmpl.begin(), tmpl.end());
    buf.push_back('\0');
    const int fd = ::mkostemp(buf.data(), O_CLOEXEC);
    if (fd < 0) throw Error(name + ": cannot create a temporary file in " + dir + ": " + std::strerror(errno));
    // Held until the rename: another process's cleanup removes only temporaries it can lock.
    // Where the file system has no locks (ENOLCK, EOPNOTSUPP) cleanup cannot lock it either.
    int rc;
    do rc = ::flock(fd, LOCK_EX);
    while (rc != 0 && errno == EINTR);
    // Between mkostemp and flock another cleanup may have locked and removed the new file:
    // then the name is gone (or another file's), and a new temporary is made.
    struct stat by_fd, by_name;
    if (::fstat(fd, &by_fd) == 0 && ::lstat(buf.data(), &by_name) == 0 && by_fd.st_dev == by_name.st_dev &&
        by_fd.st_ino == by_name.st_ino) {
      // The output gets the mode any new file gets (0666 & ~umask), or an existing
      // target's: mkstemp's 0600 would hide a model from the group that reads it.
      struct stat st;
      const mode_t mode = ::stat(target.c_str(), &st) == 0 ? (st.st_mode & 07777) : (0666 & ~current_umask());
      ::fchmod(fd, mode);
      *tmp = buf.data();
      return fd;
    }
    ::close(fd);
    if (attempt >= 10) throw Error(name + ": cannot create a temporary file in " + dir + ": it keeps disappearing");
  }
}

void commit_temp(int fd, const std::string& tmp, const std::string& target, const std::string& name, bool durable) {
  auto fail = [&](const std::string& what) {
    const std::string e = std::strerror(errno);
    ::unlink(tmp.c_str());
    if (fd >= 0) ::close(fd);
    throw Error(name + ": " + what + ": " + e);
  };
  durable = durable || durable_outputs();
  if (durable) {
    if (fd < 0) {
      fd = ::open(tmp.c_str(), O_RDONLY | O_CLOEXEC);
      if (fd < 0) fail("cannot flush to disk");
    }
    if (::fsync(fd) != 0 && errno != EINVAL) fail("cannot flush to disk");
  }
  if (fd >= 0) {
    // close() reports late write errors (NFS); a duplicate is closed so that the
    // descriptor, and with it the lock, is kept until the rename.
    const int d = ::dup(fd);
    if (d >= 0 && ::close(d) != 0 && errno != EINTR) fail("close failed");
  }
  if (::rename(tmp.c_str(), target.c_str()) != 0) fail("cannot rename the finished output into place");
  if (durable) {
    // The rename itself is on disk only once the folder is.
    std::string dir, base;
    split_path(target, &dir, &base);
    const int dfd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (dfd >= 0) {
      ::fsync(dfd);
      ::close(dfd);
    }
  }
  if (fd >= 0) ::close(fd);
}

std::unique_ptr<ByteSink> open_sink(const std::string& path) {
  if (path == "-") return std::make_unique<StdoutSink>();
  const std::string target = output_target(path);
  if (is_special_file(target)) return std::make_unique<SpecialFileSink>(target, path);
  return std::make_unique<AtomicFileSink>(target, path);
}

}  // namespace svd
